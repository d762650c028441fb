"""to_sparse, batch-norm folding, and SavedModels that run the sparse op, reloaded in a fresh process."""

import json
import os
import subprocess

import keras
import numpy as np
import pytest

import support
from tf_sparse_winograd.models.batch_norm_stats import randomize_batch_norms
from tf_sparse_winograd import export
from tf_sparse_winograd import layers
from tf_sparse_winograd.layers.sparse_winograd_conv2d import SparseWinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D

OP_NAME = "SparseWinograd>Conv2D"
INPUT_SHAPE = (32, 32, 3)


def _run_python(code, **env):
    """Runs `code` in a fresh interpreter; returns its stdout."""
    return support.run_python(code, env=env).stdout


def _serve_in_fresh_process(path, x, tmp_path):
    """The SavedModel's serving_default output for `x`, computed in a fresh interpreter that
    imports the package (which registers the ops) and loads it with plain tf.saved_model.load."""
    np.save(tmp_path / "x.npy", x)
    _run_python(f"""
        import numpy as np
        import tensorflow as tf
        import tf_sparse_winograd  # registers the ops
        serve = tf.saved_model.load({path!r}).signatures["serving_default"]
        (y,) = serve(tf.constant(np.load({str(tmp_path / "x.npy")!r}))).values()
        np.save({str(tmp_path / "y.npy")!r}, y.numpy())
    """)
    return np.load(tmp_path / "y.npy")


def _load_error_without_op_library(path, tmp_path):
    """What `load_saved_model` prints in a fresh interpreter whose op library is missing."""
    return _run_python(f"""
        import tensorflow as tf
        from tf_sparse_winograd.export import load_saved_model
        try:
            load_saved_model({path!r})
        except tf.errors.NotFoundError as error:
            print("NotFoundError:", error)
    """, TFSW_OP_LIBRARY=str(tmp_path / "missing.so"))


def _prune_winograd_kernels(model, density):
    """Keeps the `density` largest |U| of every Winograd kernel but the first (as the paper)."""
    layers = [l for l in model.layers if isinstance(l, WinogradConv2D)]
    for layer in layers[1:]:
        kernel = layer.winograd_kernel.numpy()
        keep = max(1, int(round(density * kernel.size)))
        threshold = np.sort(np.abs(kernel), axis=None)[-keep]
        layer.winograd_kernel.assign(np.where(np.abs(kernel) >= threshold, kernel, 0.0))


def _vgg(conv_type, tile_size, density, seed=0, **kwargs):
    """VGG-nagadomi; below density 1 pruned one-shot (Winograd and FC kernels, not the first conv)."""
    from tf_sparse_winograd import models  # pylint: disable=import-outside-toplevel
    from tf_sparse_winograd import pruning  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(seed)
    model = models.vgg_nagadomi.build(INPUT_SHAPE, 10, conv_type=conv_type, tile_size=tile_size,
                                      **kwargs)
    randomize_batch_norms(model, np.random.default_rng(seed))
    if density < 1.0:
        model = pruning.prune_to_density(model, density)
    return model


def _assert_close(actual, expected, rtol=1e-5):
    """Elementwise rtol, with an absolute floor of rtol times the output's scale."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * float(np.abs(expected).max()))


def _sparse_layers(model):
    return [l for l in model.layers if isinstance(l, SparseWinogradConv2D)]


# --------------------------------------------------------------------------------------------
# SavedModel round trip on VGG-nagadomi, in a fresh process.

CASES = [(1.0, 2, "winograd"), (1.0, 4, "winograd_relu"), (0.3, 2, "winograd_relu"),
         (0.3, 4, "winograd")]


@pytest.fixture(scope="module")
def exported_vgg(tmp_path_factory):
    """{case: (SavedModel path, inputs by batch, sparse Keras outputs, original Keras outputs)}."""
    root = tmp_path_factory.mktemp("vgg_saved_models")
    rng = np.random.default_rng(7)
    inputs = {batch: rng.normal(size=(batch,) + INPUT_SHAPE).astype(np.float32)
              for batch in (1, 7)}
    results = {}
    for density, tile_size, conv_type in CASES:
        model = _vgg(conv_type, tile_size, density)
        path = str(root / f"vgg_d{density}_t{tile_size}")
        sparse = export.export_saved_model(model, path)
        results[(density, tile_size, conv_type)] = (
            path, inputs,
            {b: sparse(x, training=False).numpy() for b, x in inputs.items()},
            {b: model(x, training=False).numpy() for b, x in inputs.items()})
    return results


@pytest.mark.slow
def test_saved_model_outputs_equal_keras_outputs_in_a_fresh_process(exported_vgg, tmp_path):
    jobs = []
    for case, (path, inputs, _, _) in exported_vgg.items():
        for batch, x in inputs.items():
            np.save(tmp_path / f"x_{len(jobs)}.npy", x)
            jobs.append({"path": path, "x": str(tmp_path / f"x_{len(jobs)}.npy"),
                         "y": str(tmp_path / f"y_{len(jobs)}.npy")})
    _run_python(f"""
        import json
        import numpy as np
        import tensorflow as tf
        import tf_sparse_winograd  # registers the op
        from tf_sparse_winograd.export import load_saved_model
        for job in json.loads({json.dumps(json.dumps(jobs))}):
            serve = load_saved_model(job["path"]).signatures["serving_default"]
            (y,) = serve(tf.constant(np.load(job["x"]))).values()
            np.save(job["y"], y.numpy())
    """)
    index = 0
    for case, (_, inputs, sparse_outputs, original_outputs) in exported_vgg.items():
        for batch in inputs:
            reloaded = np.load(tmp_path / f"y_{index}.npy")
            index += 1
            assert reloaded.shape == (batch, 10)
            # The exported graph is the sparse Keras model's: same op, same folded weights.
            _assert_close(reloaded, sparse_outputs[batch])
            # And the original (dense Winograd path, batch norm unfolded) agrees too.
            _assert_close(reloaded, original_outputs[batch])


@pytest.mark.slow
def test_plain_tf_saved_model_load_works_after_importing_the_package(exported_vgg):
    path, inputs, sparse_outputs, _ = exported_vgg[CASES[-1]]
    script = f"""
        import json
        import numpy as np
        import tensorflow as tf
        import tf_sparse_winograd
        try:
            loaded = tf.saved_model.load({path!r})
        except (tf.errors.NotFoundError, RuntimeError) as error:
            print("NOT REGISTERED:", error)
        else:
            x = tf.constant(np.asarray({inputs[1].tolist()!r}, np.float32))
            print(json.dumps(loaded.signatures["serving_default"](x)["output_0"].numpy().tolist()))
    """
    out = _run_python(script)
    if "NOT REGISTERED" in out:
        import tf_sparse_winograd  # pylint: disable=import-outside-toplevel
        with open(tf_sparse_winograd.__file__, encoding="utf-8") as f:
            if "load_op_library" not in f.read():
                pytest.skip("tf_sparse_winograd/__init__.py does not load the op library yet")
        pytest.fail(out)
    _assert_close(np.asarray(json.loads(out.strip().splitlines()[-1])), sparse_outputs[1])


@pytest.mark.slow
def test_saved_model_graph_runs_the_sparse_op_and_cli_lists_the_signature(exported_vgg):
    for density, tile_size, conv_type in CASES:
        path = exported_vgg[(density, tile_size, conv_type)][0]
        assert OP_NAME in export.graph_op_types(path)
        assert "Conv2D" not in export.graph_op_types(path)  # no dense conv left anywhere
    path = exported_vgg[CASES[0]][0]
    cli = subprocess.run(["saved_model_cli", "show", "--all", "--dir", path], capture_output=True,
                         text=True, timeout=300, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert "signature_def['serving_default']" in cli.stdout
    assert "shape: (-1, 32, 32, 3)" in cli.stdout
    assert "shape: (-1, 10)" in cli.stdout


@pytest.mark.slow
def test_saved_model_fails_to_load_without_the_op_and_names_the_fix(exported_vgg, tmp_path):
    path = exported_vgg[CASES[0]][0]
    # Plain TensorFlow, package not imported: TF's own error names the op.
    out = _run_python(f"""
        import tensorflow as tf
        try:
            tf.saved_model.load({path!r})
        except (tf.errors.NotFoundError, RuntimeError) as error:  # RuntimeError in TF 2.21
            print("Error:", error)
    """)
    assert "Op type not registered" in out and OP_NAME in out
    # The package's loader, with the op library unavailable: the error names the op and the fix.
    out = _load_error_without_op_library(path, tmp_path)
    assert "NotFoundError" in out and OP_NAME in out
    assert "pip install" in out and "import tf_sparse_winograd" in out


def _function_op_types(path):
    """{function name: set of op types} of a SavedModel's function library."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return {function.signature.name: {node.op for node in function.node_def}
            for function in saved_model.meta_graphs[0].graph_def.library.function}


@pytest.mark.slow
def test_saved_model_from_before_the_max_pool_attr_still_loads(tmp_path):
    # A SavedModel written before the op had `max_pool_2x2` has no such attr in its nodes; TF
    # fills in the registered default (false) when it loads the graph.
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    model = _pooled_functional(tile_size=2)
    path = str(tmp_path / "old_style")
    sparse = export.export_saved_model(model, path, fuse_max_pool=False)
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    graph = saved_model.meta_graphs[0].graph_def
    stripped = 0
    for nodes in [graph.node] + [function.node_def for function in graph.library.function]:
        for node in nodes:
            if node.op == OP_NAME:
                assert node.attr["max_pool_2x2"].b is False
                del node.attr["max_pool_2x2"]
                stripped += 1
    assert stripped >= 3
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())
    x = np.random.default_rng(8).normal(size=(2, 13, 11, 3)).astype(np.float32)
    _assert_close(_serve_in_fresh_process(path, x, tmp_path), sparse(x))


@pytest.mark.slow
def test_sparse_saved_model_is_small_at_density_0_1(tmp_path):
    for tile_size in (2, 4):
        dense_model = _vgg("winograd", tile_size, 1.0)
        export.export_saved_model(dense_model, str(tmp_path / "dense"), convert=False)
        assert OP_NAME not in export.graph_op_types(str(tmp_path / "dense"))
        sparse_model = export.export_saved_model(_vgg("winograd", tile_size, 0.1),
                                                 str(tmp_path / "sparse"))
        assert {type(l).__name__ for l in sparse_model.layers} >= {"SparseWinogradConv2D",
                                                                    "SparseDense"}
        # The pruned FC layers run on the sparse FC op, never as a dense matmul.
        all_op_types = set().union(*_function_op_types(str(tmp_path / "sparse")).values())
        assert "SparseWinograd>SparseDense" in all_op_types
        assert not {"MatMul", "ScatterNd", "_MklMatMul"} & all_op_types, all_op_types
        dense = export.saved_model_size(str(tmp_path / "dense"))
        sparse = export.saved_model_size(str(tmp_path / "sparse"))
        ratio = ((sparse["variables"] + sparse["constants"])
                 / (dense["variables"] + dense["constants"]))
        print(f"F({tile_size}x{tile_size}): SavedModel variables + constants at density 0.1: "
              f"{ratio:.3f} of the dense Winograd model's")
        assert ratio <= 0.30


@pytest.mark.slow
def test_fc_only_saved_model_reloads_in_a_fresh_process_and_names_its_op(tmp_path):
    """A model whose only sparse layer is a pruned Dense: exported on the FC op, reloaded in a
    fresh process with the same outputs; without the op library the error names that op."""
    rng = np.random.default_rng(11)
    kernel = rng.normal(size=(300, 40)).astype(np.float32)
    kernel[rng.random(kernel.shape) < 0.7] = 0.0
    dense = keras.layers.Dense(40, activation="relu")
    model = keras.Sequential([keras.Input((300,)), dense, keras.layers.Dense(3)])
    dense.set_weights([kernel, rng.normal(size=40).astype(np.float32)])
    path = str(tmp_path / "fc_only")
    sparse = export.export_saved_model(model, path)
    assert [type(l).__name__ for l in sparse.layers] == ["SparseDense", "Dense"]
    assert "SparseWinograd>SparseDense" in export.graph_op_types(path)
    x = rng.normal(size=(7, 300)).astype(np.float32)
    _assert_close(_serve_in_fresh_process(path, x, tmp_path), model(x))
    out = _load_error_without_op_library(path, tmp_path)
    assert "NotFoundError" in out and "'SparseWinograd>SparseDense'" in out
    assert "SparseWinograd>Conv2D" not in out.split("Original error")[0]


def test_sparse_dense_keras_file_round_trip(tmp_path):
    kernel = np.random.default_rng(4).normal(size=(12, 7)).astype(np.float32)
    kernel[np.abs(kernel) < 1.0] = 0.0
    layer = layers.SparseDense.from_kernel(kernel, np.arange(7, dtype=np.float32), "relu")
    assert layer.nnz == np.count_nonzero(kernel) and layer.kernel_layout == "unit_groups"
    assert layer.col_idx.dtype == "uint8" and layer.col_idx.shape == (layer.nnz + 16,)
    model = keras.Sequential([keras.Input((12,)), layer])
    model.save(str(tmp_path / "m.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "m.keras"))
    x = np.random.default_rng(5).normal(size=(3, 12)).astype(np.float32)
    expected = np.maximum(x @ kernel + np.arange(7), 0.0)
    _assert_close(model(x), expected)
    np.testing.assert_array_equal(reloaded(x), model(x))


def test_sparse_dense_config_without_a_layout_is_the_feature_rows_layout_of_older_files():
    """Layers saved before `kernel_layout` existed hold rows by input feature, int16 indices."""
    kernel = np.random.default_rng(6).normal(size=(300, 70)).astype(np.float32)
    kernel[np.abs(kernel) < 1.0] = 0.0
    old = layers.SparseDense.from_kernel(kernel, None, kernel_layout="feature_rows")
    assert old.col_idx.dtype == "int16" and old.row_ptr.shape == (301,)
    config = old.get_config()
    del config["kernel_layout"]
    reloaded = layers.SparseDense.from_config(config)
    reloaded.build((None, 300))
    reloaded.set_weights(old.get_weights())
    x = np.random.default_rng(7).normal(size=(2, 300)).astype(np.float32)
    _assert_close(reloaded(x), x @ kernel)
    with pytest.raises(ValueError, match="`kernel_layout` must be one of"):
        layers.SparseDense(70, 300, 10, kernel_layout="csr")


# --------------------------------------------------------------------------------------------
# to_sparse and batch-norm folding, in process, on small models.

def _small_functional(conv_kwargs=None, branch=False, relu_first=False):
    conv_kwargs = conv_kwargs or {}
    inputs = keras.Input((10, 10, 3))
    x = WinogradConv2D(8, tile_size=2, use_bias=True, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    y = WinogradConv2D(8, name="conv2", activation="relu" if relu_first else None,
                       **conv_kwargs)(x)
    z = keras.layers.BatchNormalization(name="bn2")(y)
    if branch:
        z = keras.layers.Add(name="add")([z, y])
    outputs = keras.layers.GlobalAveragePooling2D(name="gap")(z)
    model = keras.Model(inputs, outputs)
    randomize_batch_norms(model, np.random.default_rng(3))
    _prune_winograd_kernels(model, 0.5)
    return model


def _layer_types(model):
    return {l.name: type(l).__name__ for l in model.layers}


@pytest.mark.parametrize("tile_size,winograd_relu", [(2, False), (4, True)])
def test_batch_norm_folding_is_exact_and_keeps_pruned_zeros(tile_size, winograd_relu):
    model = _small_functional({"tile_size": tile_size, "winograd_relu": winograd_relu})
    sparse = export.to_sparse(model)
    assert sorted(_layer_types(sparse).values()) == [
        "GlobalAveragePooling2D", "InputLayer", "SparseWinogradConv2D", "SparseWinogradConv2D"]
    x = np.random.default_rng(0).normal(size=(4, 10, 10, 3)).astype(np.float32)
    _assert_close(sparse(x), model(x, training=False))
    for layer in _sparse_layers(sparse):
        original = model.get_layer(layer.name)
        assert layer.nnz() == np.count_nonzero(original.winograd_kernel.numpy())
    assert sparse.get_layer("conv1").get_config()["activation"] == "relu"  # ReLU fused


def test_no_folding_where_it_is_unsafe():
    # conv2's output also feeds the Add, and a conv with its own ReLU cannot take a later BN.
    for model in (_small_functional(branch=True), _small_functional(relu_first=True)):
        sparse = export.to_sparse(model)
        assert "bn2" in _layer_types(sparse) and "bn1" not in _layer_types(sparse)
        x = np.random.default_rng(1).normal(size=(2, 10, 10, 3)).astype(np.float32)
        _assert_close(sparse(x), model(x, training=False))


def _pooled_functional(tile_size):
    """conv-BN-ReLU-pool, conv-BN-pool (no ReLU), conv-pool('same'), on odd-sized 13 x 11 inputs."""
    inputs = keras.Input((13, 11, 3))
    x = WinogradConv2D(8, tile_size=tile_size, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)                    # 6 x 5
    x = WinogradConv2D(9, tile_size=tile_size, use_bias=True, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)                    # 3 x 2
    x = WinogradConv2D(7, tile_size=tile_size, winograd_relu=True, name="conv3")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool3")(x)    # not fusable
    outputs = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, outputs)
    randomize_batch_norms(model, np.random.default_rng(4))
    _prune_winograd_kernels(model, 0.5)
    return model


@pytest.mark.parametrize("tile_size", [2, 4])
def test_max_pools_after_convolutions_are_fused_into_the_op(tile_size, tmp_path):
    model = _pooled_functional(tile_size)
    sparse = export.to_sparse(model)
    assert sorted(kv for kv in _layer_types(sparse).items() if kv[1] != "InputLayer") == [
        ("conv1", "SparseWinogradConv2D"), ("conv2", "SparseWinogradConv2D"),
        ("conv3", "SparseWinogradConv2D"), ("flatten", "Flatten"), ("pool3", "MaxPooling2D")]
    pooled = {l.name: l.max_pool_2x2 for l in _sparse_layers(sparse)}
    assert pooled == {"conv1": True, "conv2": True, "conv3": False}
    x = np.random.default_rng(5).normal(size=(3, 13, 11, 3)).astype(np.float32)
    expected = model(x, training=False)
    _assert_close(sparse(x), expected)
    unfused = export.to_sparse(model, fuse_max_pool=False)
    assert {"pool1", "pool2", "pool3"} <= set(_layer_types(unfused))
    _assert_close(unfused(x), expected)
    sparse.save(str(tmp_path / "pooled.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "pooled.keras"))
    np.testing.assert_array_equal(reloaded(x), sparse(x))
    assert reloaded.get_layer("conv1").max_pool_2x2


def test_max_pool_is_not_fused_when_its_input_is_used_elsewhere_or_the_activation_is_not_relu():
    inputs = keras.Input((8, 8, 3))
    y = WinogradConv2D(4, name="conv1")(inputs)
    pooled = keras.layers.MaxPooling2D(2, name="pool1")(y)
    z = WinogradConv2D(4, activation="tanh", name="conv2")(pooled)
    z = keras.layers.MaxPooling2D(2, name="pool2")(z)
    model = keras.Model(inputs, [y, z])  # conv1's output is also a model output
    sparse = export.to_sparse(model)
    assert {"pool1", "pool2"} <= set(_layer_types(sparse))
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype(np.float32)
    for got, want in zip(sparse(x), model(x, training=False)):
        _assert_close(got, want)
    kernel = np.ones((4, 4, 3, 2), np.float32)
    with pytest.raises(ValueError, match="max_pool_2x2"):
        SparseWinogradConv2D.from_kernel(kernel, activation="tanh", max_pool_2x2=True)
    with pytest.raises(ValueError, match="max_pool_2x2"):
        SparseWinogradConv2D.from_kernel(kernel, max_pool_2x2="yes")


def test_to_sparse_sequential_with_pruning_wrappers_leaves_the_original_alone(tmp_path):
    pruning = pytest.importorskip("tf_sparse_winograd.pruning")
    model = keras.Sequential([
        keras.Input((8, 8, 3)), WinogradConv2D(6, name="c1"),
        keras.layers.BatchNormalization(name="b1"), keras.layers.Activation("relu", name="r1"),
        WinogradConv2D(5, tile_size=4, name="c2"), keras.layers.Flatten(name="f"),
        keras.layers.Dense(4, name="d")])
    randomize_batch_norms(model, np.random.default_rng(5))
    pruned = pruning.prune_to_density(model, 0.3)  # wraps c2 and d (c1 is the first conv)
    before = [w.numpy().copy() for w in pruned.weights]
    sparse = export.to_sparse(pruned)
    assert [type(l).__name__ for l in sparse.layers] == [
        "SparseWinogradConv2D", "SparseWinogradConv2D", "Flatten", "SparseDense"]
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype(np.float32)
    _assert_close(sparse(x), pruned(x, training=False))
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, pruned.weights))
    sparse.save(str(tmp_path / "sparse.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "sparse.keras"))
    np.testing.assert_array_equal(reloaded(x), sparse(x))
    c2 = pruned.layers[3]
    mask = next(m for _, m, _ in c2.pruning_vars).numpy()
    assert sparse.get_layer("c2").nnz() == int(mask.sum())
