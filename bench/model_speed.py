"""End-to-end inference throughput of exported sparse VGG-nagadomi against the dense spatial model.

In one run, on random 32x32x3 images:

  * baselines: the dense spatial VGG-nagadomi (Conv2D + batch norm) as a Keras model (called in a
    tf.function), as its SavedModel, and as a frozen graph (weights turned into constants, so
    grappler folds batch norm into the convolutions and oneDNN caches its reordered filters: the
    fastest way to run it in plain TensorFlow);
  * the sparse models: VGG-nagadomi with Winograd-domain kernels, pruned by magnitude to each
    density with `pruning.prune_to_density` (Winograd and FC kernels; the first convolution left
    dense, as in the paper), converted with `to_sparse` (batch norm and ReLU folded into the
    sparse op; the pruned FC layers as `SparseDense` on the sparse FC op) and exported with
    `export_saved_model`, then reloaded and run through their `serving_default` signature.

All variants are timed interleaved, round after round, so that the load of a shared machine hits
them alike; the best round is reported (and the median, for scale). Usage:

  python bench/model_speed.py [--densities 0.4,0.1] [--tile_sizes 2,4] [--batch_sizes 1,32]
                              [--conv_types winograd,winograd_relu] [--filter_blocks 1,4]
                              [--unfused_pools] [--dense_fc] [--products auto,csr]

--products times each sparse export once per products path of its convolutions (the op's
`products` attribute, 'auto' as exported; the others written into a copy of the SavedModel).
"""

import itertools
import os
import shutil
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from tf_sparse_winograd import models
from tf_sparse_winograd.models.batch_norm_stats import randomize_batch_norms
from tf_sparse_winograd import export
from tf_sparse_winograd import pruning
from interleaved import cpu_model
from interleaved import time_variants
from interleaved import serving_function

_DENSITIES = flags.DEFINE_list("densities", ["0.4", "0.1"], "Winograd kernel densities.")
_TILE_SIZES = flags.DEFINE_list("tile_sizes", ["2", "4"], "Winograd tile sizes.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes.")
_FILTER_BLOCKS = flags.DEFINE_list("filter_blocks", ["1"],
                                   "Prune in blocks of this many filters (block_size (1, N)); 4 "
                                   "runs the op's group micro-kernel.")
_CONV_TYPES = flags.DEFINE_list("conv_types", ["winograd"],
                                "Sparse model architectures: winograd and/or winograd_relu.")
_UNFUSED_POOLS = flags.DEFINE_bool(
    "unfused_pools", False, "Also time each sparse variant exported with its max pools left as "
    "separate layers (to_sparse(fuse_max_pool=False)), to measure the fused pools.")
_DENSE_FC = flags.DEFINE_bool(
    "dense_fc", False, "Also time each sparse variant exported with its pruned FC layers kept as "
    "Dense layers (sparse_dense_max_density=None), to measure the sparse FC op.")
_PRODUCTS = flags.DEFINE_list("products", ["auto"],
                              "Products paths of the sparse convolutions to time (auto, csr, jit).")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds (best is kept).")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 0.3, "Minimum time per variant per round.")
_THREADS = flags.DEFINE_integer("threads", 2, "intra-op threads (inter-op is 1).")
_SEED = 0


def _prune(model, density, filter_block=1):
    """The paper's one-shot magnitude pruning: every Winograd and Dense kernel but the first conv
    (in blocks of `filter_block` filters or units)."""
    return pruning.prune_to_density(model, density, skip_first_conv=True,
                                    block_size=(1, filter_block))


def _build(conv_type, tile_size=2):
    keras.utils.set_random_seed(_SEED)
    model = models.vgg_nagadomi.build((32, 32, 3), 10, conv_type=conv_type, tile_size=tile_size)
    randomize_batch_norms(model, np.random.default_rng(_SEED))
    return model


def _frozen(model):
    """The model's inference function with its variables turned into constants."""
    from tensorflow.python.framework import convert_to_constants  # pylint: disable=import-outside-toplevel
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((None, 32, 32, 3), tf.float32))
    return convert_to_constants.convert_variables_to_constants_v2(concrete)


def _with_products(path, products):
    """A copy of the SavedModel at `path` whose SparseWinograd>Conv2D nodes have the `products`
    attribute `products` (a benchmark-only rewrite of saved_model.pb)."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    copy = f"{path}_products_{products}"
    shutil.copytree(path, copy)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(copy, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    rewritten = 0
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes.extend(function.node_def)
        for node in nodes:
            if node.op == "SparseWinograd>Conv2D":
                node.attr["products"].s = products.encode()
                rewritten += 1
    assert rewritten, f"no SparseWinograd>Conv2D node in {path}"
    with open(os.path.join(copy, "saved_model.pb"), "wb") as f:
        f.write(proto.SerializeToString())
    return copy


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    densities = [float(d) for d in _DENSITIES.value]
    tile_sizes = [int(t) for t in _TILE_SIZES.value]
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
    workdir = tempfile.mkdtemp(prefix="tfsw_model_speed_")

    variants = {}
    spatial = _build("spatial")
    keras_fn = tf.function(lambda x: spatial(x, training=False))
    variants["spatial Keras"] = keras_fn
    export.export_saved_model(spatial, os.path.join(workdir, "spatial"), convert=False)
    variants["spatial SavedModel"] = serving_function(os.path.join(workdir, "spatial"))
    variants["spatial frozen"] = _frozen(spatial)
    sizes = {"spatial SavedModel": export.saved_model_size(os.path.join(workdir, "spatial"))}
    for conv_type, tile_size, density, block in itertools.product(
            _CONV_TYPES.value, tile_sizes, densities, [int(b) for b in _FILTER_BLOCKS.value]):
        model = _prune(_build(conv_type, tile_size), density, block)
        name = (f"sparse F({tile_size}x{tile_size}) d={density}"
                + (" winograd_relu" if conv_type == "winograd_relu" else "")
                + (f" blocks of {block}" if block > 1 else ""))
        exports = [("", {})]
        if _UNFUSED_POOLS.value:
            exports.append((" pools unfused", {"fuse_max_pool": False}))
        if _DENSE_FC.value:
            exports.append((" FC dense", {"sparse_dense_max_density": None}))
        for suffix, options in exports:
            label = name + suffix
            path = os.path.join(workdir, f"sparse_{conv_type}_t{tile_size}_d{density}_b{block}"
                                + suffix.replace(" ", "_"))
            export.export_saved_model(model, path, **options)
            sizes[label] = export.saved_model_size(path)
            for products in _PRODUCTS.value:
                if products == "auto":
                    variants[label + (" products=auto" if len(_PRODUCTS.value) > 1 else "")] = (
                        serving_function(path))
                else:
                    variants[f"{label} products={products}"] = serving_function(
                        _with_products(path, products))

    rng = np.random.default_rng(_SEED)
    print(f"{cpu_model()}, TensorFlow {tf.__version__}, {_THREADS.value} intra-op threads, "
          f"{_ROUNDS.value} interleaved rounds of >= {_MIN_SECONDS.value} s per variant")
    for batch in batch_sizes:
        x = tf.constant(rng.normal(size=(batch, 32, 32, 3)).astype(np.float32))
        best, median = time_variants(
            variants, x, _ROUNDS.value, _MIN_SECONDS.value,
            agree=[name for name in variants if name.startswith("spatial")])
        print(f"\n### batch {batch}\n")
        print("| variant | best ms | median ms | images/s | speedup vs spatial Keras | "
              "vs spatial SavedModel | vs spatial frozen |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in variants:
            print(f"| {name} | {best[name] * 1e3:.2f} | {median[name] * 1e3:.2f} | "
                  f"{batch / best[name]:.0f} | {best['spatial Keras'] / best[name]:.2f}x | "
                  f"{best['spatial SavedModel'] / best[name]:.2f}x | "
                  f"{best['spatial frozen'] / best[name]:.2f}x |")
    print("\n### SavedModel size (variables + constants, MB)\n")
    for name, size in sizes.items():
        print(f"| {name} | {(size['variables'] + size['constants']) / 1e6:.2f} |")


if __name__ == "__main__":
    app.run(main)
