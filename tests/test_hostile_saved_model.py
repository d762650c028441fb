"""Hostile SavedModels: every packed-kernel tensor of every sparse layer rewritten, loaded and run.

A small sparse model (convolutions at tiles 2, 4 and 6 and a pruned FC layer) is exported; each
variant rewrites one of its packed-kernel variables in the SavedModel (values in the checkpoint,
shape in the object graph, so that the variable loads with its new shape): out-of-range and
negative indices, non-monotone row pointers, lengths that do not match the other arrays, sizes
near the int32 limits, NaN/Inf weights. A few more variants tamper the op nodes' attributes, the
variable records or the checkpoint files. Each variant must end in a clean Python exception whose
message names the tampered field, or, for NaN/Inf weights (and an empty bias, which means no
bias), compute a result (NaN/Inf weights are not rejected: docs/export.md) - never a signal, an
abort, a hang, or a sanitizer report (.ci/sanitizers.sh runs this file against the ASan build).

The variants run in worker subprocesses, one variant after the other, each recorded in a JSON
lines file before and after it runs: a worker that dies (signal, abort) or stops making progress
(faulthandler's watchdog ends it) marks its current variant as a crash, and a new worker carries
on with the next.
"""

import concurrent.futures
import json
import os
import re
import subprocess

import keras
import numpy as np
import pytest

import support

MIN_VARIANTS = 200  # 150 in the sanitizer run, with one convolution of the three
VARIANT_SECONDS = 120  # a variant running longer counts as a hang
WORKER_VARIANTS = 80  # variants per worker process
LANES = 2  # workers running at once (the machines this runs on have 2 cores)

_WORKER = r'''
import faulthandler, json, os, shutil, sys
import numpy as np
import tensorflow as tf
import tf_sparse_winograd  # registers the ops
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.core.protobuf import trackable_object_graph_pb2

base, work, results_path = sys.argv[1], sys.argv[2], sys.argv[3]
first, end = int(sys.argv[4]), int(sys.argv[5])
I32_MAX, I32_MIN = 2 ** 31 - 1, -2 ** 31
reader = tf.train.load_checkpoint(os.path.join(base, "variables", "variables"))
graph = trackable_object_graph_pb2.TrackableObjectGraph()
graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
saved_model = saved_model_pb2.SavedModel()
with open(os.path.join(base, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
# Variable name ("<layer>/<field>") -> (object graph node, checkpoint key, value).
variables = {}
for node_id, node in enumerate(saved_model.meta_graphs[0].object_graph_def.nodes):
    if node.WhichOneof("kind") == "variable":
        (key,) = [a.checkpoint_key for a in graph.nodes[node_id].attributes]
        variables[node.variable.name] = (node_id, key, reader.get_tensor(key))
x = np.load(os.path.join(base, "x.npy"))
clean = np.load(os.path.join(base, "y.npy"))


def set_at(array, index, value):
    array = array.copy()
    array[index] = value
    return array


def conv_variants(layer):
    """(label, field, new value, expected) for a SparseWinogradConv2D; expected: a regex the
    error must match, or 'computed'."""
    shape = variables[f"{layer}/packed_shape"][2]
    rp = variables[f"{layer}/packed_row_ptr"][2]
    ci = variables[f"{layer}/packed_col_idx"][2]
    vals = variables[f"{layer}/packed_values"][2]
    bias = variables[f"{layer}/bias"][2]
    a, channels, filters = (int(v) for v in shape)
    nnz = ci.size
    out = []
    add = lambda label, field, value, expected: out.append((label, f"{layer}/{field}", value, expected))
    for v in (a - 1, a + 2, 0, -1, 3, I32_MAX, I32_MIN):
        add(f"kernel_shape[0]={v}", "packed_shape", set_at(shape, 0, v), r"kernel_shape\[0\]")
    for v in (channels + 1, channels - 1, 0, I32_MAX, 65536 + channels):
        add(f"kernel_shape[1]={v}", "packed_shape", set_at(shape, 1, v), r"kernel_shape\[1\]")
    for v in (-1, I32_MIN):
        add(f"kernel_shape[1]={v}", "packed_shape", set_at(shape, 1, v),
            r"kernel_shape must be non-negative")
    for v in (filters + 1, filters - 1, 0, 2 * filters, I32_MAX, I32_MAX // (a * a) + 1):
        add(f"kernel_shape[2]={v}", "packed_shape", set_at(shape, 2, v),
            r"row_ptr must have .* for kernel_shape")
    for v in (-1, I32_MIN):
        add(f"kernel_shape[2]={v}", "packed_shape", set_at(shape, 2, v),
            r"kernel_shape must be non-negative")
    for label, v in (("length 2", shape[:2]), ("length 4", np.append(shape, 1)),
                     ("empty", shape[:0]), ("rank 2", shape[None])):
        add(f"kernel_shape {label}", "packed_shape", v.astype(np.int32), r"kernel_shape must be")
    middle = rp.size // 2
    for v in (1, -1, I32_MAX, I32_MIN):
        add(f"row_ptr[0]={v}", "packed_row_ptr", set_at(rp, 0, v), r"row_ptr")
    for v in (nnz + 1, nnz - 1, I32_MAX, I32_MIN, 0):
        add(f"row_ptr[-1]={v}", "packed_row_ptr", set_at(rp, -1, v), r"row_ptr")
    for i in (1, middle, rp.size - 2):
        add(f"row_ptr[{i}] > row_ptr[{i + 1}]", "packed_row_ptr", set_at(rp, i, rp[i + 1] + 1),
            r"row_ptr must be non-decreasing")
        add(f"row_ptr[{i}] < row_ptr[{i - 1}]", "packed_row_ptr", set_at(rp, i, rp[i - 1] - 1),
            r"row_ptr must be non-decreasing")
        for v in (I32_MAX, I32_MIN, -1):
            add(f"row_ptr[{i}]={v}", "packed_row_ptr", set_at(rp, i, v), r"row_ptr")
    add("row_ptr reversed", "packed_row_ptr", rp[::-1].copy(), r"row_ptr")
    add("row_ptr all 0", "packed_row_ptr", np.zeros_like(rp), r"row_ptr\[-1\]")
    add("row_ptr all nnz", "packed_row_ptr", np.full_like(rp, nnz), r"row_ptr\[0\]")
    add("row_ptr shifted", "packed_row_ptr", rp + 1, r"row_ptr\[0\]")
    for label, v in (("one short", rp[:-1]), ("one long", np.append(rp, nnz)),
                     ("empty", rp[:0]), ("single", rp[:1]), ("rank 2", rp[None])):
        add(f"row_ptr {label}", "packed_row_ptr", v.astype(np.int32), r"row_ptr")
    for i in (0, nnz // 2, nnz - 1):
        for v in (-1, channels, channels + 65536, 65536, I32_MAX, I32_MIN):
            add(f"col_idx[{i}]={v}", "packed_col_idx", set_at(ci, i, v), r"col_idx")
    add("col_idx all -1", "packed_col_idx", np.full_like(ci, -1), r"col_idx")
    for label, v in (("one short", ci[:-1]), ("one long", np.append(ci, 0)),
                     ("empty", ci[:0]), ("rank 2", ci[None])):
        add(f"col_idx {label}", "packed_col_idx", v.astype(np.int32), r"col_idx")
    for i in (0, nnz // 2, nnz - 1):
        for v in (np.nan, np.inf, -np.inf):
            add(f"values[{i}]={v}", "packed_values", set_at(vals, i, v), "non-finite")
    add("values all NaN", "packed_values", np.full_like(vals, np.nan), "non-finite")
    add("values 3e38", "packed_values", np.full_like(vals, 3e38), "computed")
    for label, v in (("one short", vals[:-1]), ("one long", np.append(vals, 1.0)),
                     ("empty", vals[:0]), ("rank 2", vals[None])):
        add(f"values {label}", "packed_values", v.astype(np.float32), r"values")
    for label, v in (("one long", np.append(bias, 1.0)), ("one short", bias[:-1]),
                     ("rank 2", bias[None])):
        add(f"bias {label}", "bias", v.astype(np.float32), r"bias")
    add("bias NaN", "bias", set_at(bias, 0, np.nan), "non-finite")
    add("bias empty (no bias)", "bias", bias[:0], "computed")
    return out


def dense_variants(layer):
    rp = variables[f"{layer}/row_ptr"][2]
    ci = variables[f"{layer}/col_idx"][2]
    vals = variables[f"{layer}/values"][2]
    bias = variables[f"{layer}/bias"][2]
    nnz, units = ci.size, bias.size
    out = []
    add = lambda label, field, value, expected: out.append((label, f"{layer}/{field}", value, expected))
    for v in (1, -1, I32_MAX, I32_MIN):
        add(f"row_ptr[0]={v}", "row_ptr", set_at(rp, 0, v), r"row_ptr")
    for v in (nnz + 1, nnz - 1, I32_MAX, I32_MIN):
        add(f"row_ptr[-1]={v}", "row_ptr", set_at(rp, -1, v), r"row_ptr")
    for i in (1, rp.size // 2, rp.size - 2):
        add(f"row_ptr[{i}] > row_ptr[{i + 1}]", "row_ptr", set_at(rp, i, rp[i + 1] + 1),
            r"row_ptr must be non-decreasing")
        for v in (I32_MAX, I32_MIN):
            add(f"row_ptr[{i}]={v}", "row_ptr", set_at(rp, i, v), r"row_ptr")
    for label, v in (("one short", rp[:-1]), ("one long", np.append(rp, nnz)),
                     ("empty", rp[:0]), ("rank 2", rp[None])):
        add(f"row_ptr {label}", "row_ptr", v.astype(np.int32), r"row_ptr")
    if ci.dtype == np.uint8:  # the 'unit_groups' layout: a single block of 8 features here
        nnz -= 16
        in_features = 8
        for i in (0, nnz // 2, nnz - 1):
            for v in (in_features, 255):
                add(f"col_idx[{i}]={v}", "col_idx", set_at(ci, i, v),
                    r"col_idx of the last feature block")
        add("col_idx padding 255", "col_idx", set_at(ci, slice(nnz, None), 255), "computed")
        add("a nonzero in the row of a unit past the last", "row_ptr",
            set_at(rp, units, nnz - 1),
            r"Rows past the last unit must be empty")
    else:
        for i in (0, nnz // 2, nnz - 1):
            for v in (-1, units, 32767, -32768):
                add(f"col_idx[{i}]={v}", "col_idx", set_at(ci, i, v), r"col_idx")
    for label, v in (("one short", ci[:-1]), ("one long", np.append(ci, 0)),
                     ("empty", ci[:0]), ("rank 2", ci[None])):
        add(f"col_idx {label}", "col_idx", v.astype(ci.dtype), r"col_idx")
    for i in (0, nnz - 1):
        for v in (np.nan, np.inf, -np.inf):
            add(f"values[{i}]={v}", "values", set_at(vals, i, v), "non-finite")
    for label, v in (("one short", vals[:-1]), ("one long", np.append(vals, 1.0)),
                     ("rank 2", vals[None])):
        add(f"values {label}", "values", v.astype(np.float32), r"values")
    for label, v in (("one long", np.append(bias, 1.0)), ("one short", bias[:-1])):
        add(f"bias {label}", "bias", v.astype(np.float32), r"bias")
    return out


def variable_variants():
    """A few tamperings of the variable records and the checkpoint itself."""
    name = next(n for n in variables if n.endswith("packed_row_ptr"))
    rp = variables[name][2]
    return [
        # A variable whose recorded shape is not the checkpoint's: refused when restored.
        ("record says one more element", name, ("record_only", list(rp.shape)[0] + 1),
         r"incompatible tensor with shape|packed_row_ptr"),
        # A variable of another dtype than its op input: refused when restored.
        ("row_ptr as int64", name, rp.astype(np.int64), r"dtype|int64"),
        # TensorFlow's RestoreV2 reports these (a truncated file without naming it).
        ("checkpoint data truncated", name, ("truncate_data", 0.5),
         r"variables|Read less bytes"),
        ("checkpoint data bytes flipped", name, ("flip_data", None), r"variables|checksum|crc"),
    ]


def attr_variants():
    """Tampered attributes of the op nodes in the graph (the tuning attributes included)."""
    out = []
    for op, attr, value, expected in [
            ("SparseWinograd>Conv2D", "tile_size", 5, r"tile_size"),
            ("SparseWinograd>Conv2D", "tile_size", 0, r"tile_size"),
            ("SparseWinograd>Conv2D", "tile_size", 2 ** 40, r"tile_size"),
            ("SparseWinograd>Conv2D", "tile_vectors", 3, r"tile_vectors"),
            ("SparseWinograd>Conv2D", "tile_vectors", -1, r"tile_vectors"),
            ("SparseWinograd>Conv2D", "filter_block", -1, r"filter_block"),
            ("SparseWinograd>Conv2D", "filter_block", 2 ** 40, r"filter_block"),
            ("SparseWinograd>Conv2D", "units_per_thread", -1, r"units_per_thread"),
            ("SparseWinograd>Conv2D", "units_per_thread", 2 ** 62, r"units_per_thread"),
            ("SparseWinograd>Conv2D", "padding", b"FULL", r"padding"),
            ("SparseWinograd>Conv2D", "activation", b"tanh", r"activation"),
            ("SparseWinograd>SparseDense", "units", -1, r"units"),
            ("SparseWinograd>SparseDense", "units", 2 ** 40, r"units"),
            ("SparseWinograd>SparseDense", "units", 2 ** 62, r"units"),
            # TensorFlow's graph import compares the node's recorded output shape first.
            ("SparseWinograd>SparseDense", "units", 5, r"bias|units|Dimension 1 in both shapes"),
            ("SparseWinograd>SparseDense", "activation", b"tanh", r"activation")]:
        for which in (0, -1):
            out.append((f"{op} node {which} {attr}={value!r}", ("attr", op, which, attr), value,
                        expected))
    return out


def all_variants():
    convs = sorted({n.split("/")[0] for n in variables if n.endswith("/packed_shape")})
    if os.environ.get("TFSW_TEST_OP_LIBRARY_ONLY") == "1":
        # .ci/sanitizers.sh: the variants of one convolution (the others' are the same kinds,
        # checked by the same code): loading a SavedModel is slow under AddressSanitizer.
        convs = convs[1:2]
    denses = sorted({n.split("/")[0] for n in variables if n.endswith("/row_ptr")
                     and not n.endswith("packed_row_ptr")})
    out = []
    for layer in convs:
        out += conv_variants(layer)
    for layer in denses:
        out += dense_variants(layer)
    return out + variable_variants() + attr_variants()


def write_variant(directory, target, value):
    """A copy of the base SavedModel with `target` (a variable name, or an attr tuple) set."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.join(directory, "variables"))
    model = saved_model_pb2.SavedModel()
    model.CopyFrom(saved_model)
    prefix = os.path.join(directory, "variables", "variables")
    if isinstance(target, tuple):  # an attribute of the op nodes of one type
        _, op, which, attr = target
        nodes = [node for function in model.meta_graphs[0].graph_def.library.function
                 for node in function.node_def if node.op == op]
        node = nodes[which]
        if isinstance(value, bytes):
            node.attr[attr].s = value
        else:
            node.attr[attr].i = value
        for name in os.listdir(os.path.join(base, "variables")):
            shutil.copy(os.path.join(base, "variables", name), os.path.join(directory, "variables"))
    else:
        node_id, key, _ = variables[target]
        record = model.meta_graphs[0].object_graph_def.nodes[node_id].variable
        checkpoint_value = value
        if isinstance(value, tuple) and value[0] == "record_only":
            checkpoint_value = variables[target][2]
            shape = [value[1]]
        elif isinstance(value, tuple):
            checkpoint_value = variables[target][2]
            shape = list(np.shape(checkpoint_value))
        else:
            shape = list(np.shape(value))
        del record.shape.dim[:]
        for d in shape:
            record.shape.dim.add().size = d
        names = sorted(reader.get_variable_to_shape_map())
        tensors = [tf.constant(checkpoint_value) if n == key else tf.constant(reader.get_tensor(n))
                   for n in names]
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=tensors)
        if isinstance(value, tuple) and value[0] in ("truncate_data", "flip_data"):
            (data,) = [os.path.join(directory, "variables", n)
                       for n in os.listdir(os.path.join(directory, "variables")) if ".data-" in n]
            with open(data, "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                if value[0] == "truncate_data":
                    f.truncate(int(size * value[1]))
                else:
                    f.seek(size // 3)
                    chunk = f.read(64)
                    f.seek(size // 3)
                    f.write(bytes(b ^ 0x5A for b in chunk))
    with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
        f.write(model.SerializeToString())


def record(entry):
    with open(results_path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


variants = all_variants()
record({"total": len(variants)})
for index in range(first, min(end, len(variants))):
    label, target, value, expected = variants[index]
    record({"index": index, "event": "start", "label": label})
    faulthandler.dump_traceback_later(''' + str(VARIANT_SECONDS) + r''', exit=True)
    directory = os.path.join(work, str(index))
    write_variant(directory, target, value)
    entry = {"index": index, "event": "done", "label": label, "expected": expected}
    try:
        serve = tf.saved_model.load(directory).signatures["serving_default"]
        (y,) = serve(tf.constant(x)).values()
        y = y.numpy()
        entry.update(outcome="computed", shape=list(y.shape), finite=bool(np.isfinite(y).all()),
                     same=bool(np.array_equal(y, clean)))
    except Exception as error:  # what it is is checked by the test
        entry.update(outcome="error", type=type(error).__name__, message=str(error)[-3000:])
    faulthandler.cancel_dump_traceback_later()
    shutil.rmtree(directory, ignore_errors=True)
    record(entry)
'''


def _sparse_model():
    """Convolutions at tiles 2, 4 and 6 (no activations, so that a NaN weight reaches the output),
    pruned to density 0.4, and a pruned FC layer in which every feature has a stored weight."""
    from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    y = WinogradConv2D(8, tile_size=2)(inputs)
    y = WinogradConv2D(8, tile_size=4)(y)
    y = WinogradConv2D(8, tile_size=6, padding="valid")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(6)(y)
    model = keras.Model(inputs, y)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, WinogradConv2D):
            kernel = layer.winograd_kernel.numpy()
            layer.winograd_kernel.assign(kernel * (rng.random(kernel.shape) < 0.4))
        if isinstance(layer, keras.layers.Dense):
            kernel = layer.kernel.numpy()
            keep = rng.random(kernel.shape) < 0.4
            keep[np.arange(kernel.shape[0]), rng.integers(0, kernel.shape[1], kernel.shape[0])] = True
            layer.kernel.assign(kernel * keep)
    return model


@pytest.fixture(scope="module")
def base_saved_model(tmp_path_factory):
    from tf_sparse_winograd import export  # pylint: disable=import-outside-toplevel
    base = tmp_path_factory.mktemp("hostile") / "base"
    model = _sparse_model()
    exported = export.export_saved_model(model, str(base))
    assert {type(l).__name__ for l in exported.layers} >= {"SparseWinogradConv2D", "SparseDense"}
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 3)).astype(np.float32)
    np.save(base / "x.npy", x)
    np.save(base / "y.npy", keras.ops.convert_to_numpy(exported(x)))
    return base


def _read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run_lane(base, work, results_path, first, end):
    """Runs variants [first, end) (clipped to the number of variants) in successive workers:
    a fresh worker every WORKER_VARIANTS variants (loading hundreds of SavedModels in one process
    only grows its memory), and after a worker that died inside a variant. Returns (number of
    variants, {index: crash report})."""
    crashes, total = {}, None
    while total is None or first < min(end, total):
        stop = min(end, first + WORKER_VARIANTS)
        try:
            proc = support.run_python(_WORKER, base, work, results_path, first, stop,
                                      check=False, timeout=VARIANT_SECONDS * WORKER_VARIANTS)
            ended, stderr = f"exit code {proc.returncode}", proc.stderr
        except subprocess.TimeoutExpired as timeout:
            proc, ended, stderr = None, "timeout (killed)", str(timeout.stderr or "")
        records = _read_records(results_path)
        totals = [r["total"] for r in records if "total" in r]
        assert totals, f"the worker failed before its first variant ({ended}):\n{stderr[-4000:]}"
        total = totals[0]
        done = {r["index"] for r in records if r.get("event") == "done"}
        unfinished = [r for r in records if r.get("event") == "start" and r["index"] not in done]
        if unfinished:  # the worker died, or its watchdog ended it, inside this variant
            crashed = unfinished[-1]
            crashes[crashed["index"]] = f"{crashed['label']}: {ended}\n{stderr[-3000:]}"
            first = crashed["index"] + 1
            continue
        assert proc is not None and proc.returncode == 0, (
            f"the worker failed outside a variant ({ended}):\n{stderr[-4000:]}")
        first = stop
    return total, crashes


def _run_all_variants(base, tmp_path):
    """(number of variants, {index: result record}, {index: crash report}): the variants split
    between LANES workers running at once, each lane with its own results file."""
    work = tmp_path / "work"
    work.mkdir()
    paths = [tmp_path / f"results{lane}.jsonl" for lane in range(LANES)]
    # The number of variants, from a first worker that runs none of them.
    total, _ = _run_lane(base, work, paths[0], 0, 0)
    bounds = [total * lane // LANES for lane in range(LANES + 1)]
    with concurrent.futures.ThreadPoolExecutor(LANES) as pool:
        lanes = list(pool.map(lambda lane: _run_lane(base, work, paths[lane], bounds[lane],
                                                     bounds[lane + 1]), range(LANES)))
    crashes = {index: report for _, lane_crashes in lanes for index, report in
               lane_crashes.items()}
    results = {r["index"]: r for path in paths for r in _read_records(path)
               if r.get("event") == "done"}
    return total, results, crashes


@pytest.mark.slow
def test_tampered_packed_kernels_raise_clean_errors_or_compute(base_saved_model, tmp_path):
    total, results, crashes = _run_all_variants(base_saved_model, tmp_path)
    assert total >= (150 if os.environ.get("TFSW_TEST_OP_LIBRARY_ONLY") == "1" else MIN_VARIANTS)
    assert not crashes, "\n\n".join(crashes.values())
    assert sorted(results) == list(range(total))
    wrong = []
    for index, r in sorted(results.items()):
        expected = r["expected"]
        if expected in ("computed", "non-finite"):
            if r["outcome"] != "computed":
                wrong.append(f"{r['label']}: expected a result, got {r['type']}: "
                             f"{r['message'][-500:]}")
            elif expected == "non-finite" and r["finite"]:
                wrong.append(f"{r['label']}: NaN/Inf weight gave an all-finite output")
            elif r["shape"] != [2, 6]:
                wrong.append(f"{r['label']}: output shape {r['shape']}")
        elif r["outcome"] != "error":
            wrong.append(f"{r['label']}: accepted (same output: {r['same']})")
        elif r["type"] not in ("InvalidArgumentError", "ValueError", "DataLossError",
                               "NotFoundError", "OutOfRangeError"):
            wrong.append(f"{r['label']}: {r['type']}: {r['message'][-500:]}")
        elif not re.search(expected, r["message"]):
            wrong.append(f"{r['label']}: message does not match {expected!r}: "
                         f"{r['message'][-700:]}")
    assert not wrong, f"{len(wrong)} of {total} variants:\n" + "\n".join(wrong)
