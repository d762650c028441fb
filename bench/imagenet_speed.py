"""ImageNet-size speed: VGG-16 and ResNet-18 as users have them, against their sparse Winograd exports.

    python bench/imagenet_speed.py [--models vgg16,resnet18] [--densities 1.0,0.4,0.3,0.1]
                                   [--batch_sizes 1,8] [--tile_size auto|2|4|6] [--rounds 5]
                                   [--workdir DIR] [--nolayer_ratios]
    python bench/imagenet_speed.py --serve DIR/vgg16_d0.3 --batch 1 --calls 20   # for farm-bench

Random weights (nothing can be downloaded here) with batch-norm statistics away from the
identity; the densities are those the pruning sets, exactly. For each model:

  * dense Keras: `keras.applications.VGG16(weights=None)` / `models.imagenet_resnet18.build()`,
    called through tf.function (the weights are variables, as users run them);
  * dense SavedModel: the same model exported as it is (`export_saved_model(convert=False)`);
  * sparse d=...: `to_winograd` (tile size per layer, see below), `prune_to_density` on every
    Winograd convolution but the first (and, for VGG-16, the FC layers, which then run on the
    sparse FC op), `export_saved_model` (batch norm folded, ReLU and 2x2 max pools fused),
    reloaded and run through its serving signature. d=1.0 is converted but not pruned.

All variants of a model are timed interleaved, round after round, with the same intra-op
threads; the best round is kept. First, the per-layer table: our op against tf.nn.conv2d on
VGG-16's 13 convolutions at batch 1 (random unstructured pruning, both in one graph per layer,
as bench/op_speed.py does). With `--tile_size auto` (the default) each model's tile sizes are
chosen per layer and density by `tf_sparse_winograd.tile_choice.fastest_tile_sizes` (the op
timed on the layer's shape at batch 1 and that density) and printed.
"""

import os
import resource
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tf_sparse_winograd as tfsw
from tf_sparse_winograd.models import imagenet_resnet18
from tf_sparse_winograd.models.batch_norm_stats import randomize_batch_norms
from interleaved import cpu_model
from interleaved import first_output
from interleaved import measure
from interleaved import time_variants
from interleaved import serving_function
import op_speed

_MODELS = flags.DEFINE_list("models", ["vgg16", "resnet18"], "vgg16 and/or resnet18.")
_DENSITIES = flags.DEFINE_list("densities", ["1.0", "0.4", "0.3", "0.1"], "Kernel densities.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
_TILE_SIZE = flags.DEFINE_string("tile_size", "auto",
                                 "2, 4 or 6 for every layer, or 'auto': per layer, the fastest "
                                 "in the per-layer measurement.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds (best is kept).")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Minimum time per variant per round.")
_THREADS = flags.DEFINE_integer("threads", 2, "intra-op threads (inter-op is 1).")
_LAYER_RATIOS = flags.DEFINE_bool("layer_ratios", True,
                                  "Measure VGG-16's convolutions one by one first.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the SavedModels go (default: a temp dir).")
_SERVE = flags.DEFINE_string("serve", None, "Only load this SavedModel and serve `--calls` "
                             "batches (for measuring a serving process's peak memory).")
_BATCH = flags.DEFINE_integer("batch", 1, "Batch size of --serve.")
_CALLS = flags.DEFINE_integer("calls", 20, "Calls of --serve.")
_SEED = 0
_SHAPE = (224, 224, 3)

# VGG-16's convolutions at 224 x 224: (name, H = W, in_channels, filters).
VGG16_LAYERS = [
    ("block1_conv1", 224, 3, 64), ("block1_conv2", 224, 64, 64),
    ("block2_conv1", 112, 64, 128), ("block2_conv2", 112, 128, 128),
    ("block3_conv1", 56, 128, 256), ("block3_conv2", 56, 256, 256), ("block3_conv3", 56, 256, 256),
    ("block4_conv1", 28, 256, 512), ("block4_conv2", 28, 512, 512), ("block4_conv3", 28, 512, 512),
    ("block5_conv1", 14, 512, 512), ("block5_conv2", 14, 512, 512), ("block5_conv3", 14, 512, 512)]


def _build(name):
    keras.utils.set_random_seed(_SEED)
    if name == "vgg16":
        model = keras.applications.VGG16(weights=None, classifier_activation=None)
    elif name == "resnet18":
        model = imagenet_resnet18.build()
    else:
        raise app.UsageError(f"--models: unknown model {name!r}")
    randomize_batch_norms(model, np.random.default_rng(_SEED))
    return model


def layer_ratios(densities, tile_sizes=(2, 4, 6)):
    """Prints our op against tf.nn.conv2d on each VGG-16 convolution at batch 1."""
    rng = np.random.default_rng(_SEED)
    print("\n### VGG-16 convolutions at batch 1: tf.nn.conv2d time / op time\n")
    print("| layer | HxW, in -> out | density | TF conv2d ms | "
          + " | ".join(f"op F({m}x{m}) ms | ratio" for m in tile_sizes) + " |")
    print("| --- | --- | ---: | ---: |" + " ---: | ---: |" * len(tile_sizes))
    totals = {}
    for name, size, cin, cout in VGG16_LAYERS:
        calls = op_speed.calls_per_run(1) // 8  # Big layers: a few calls per graph run.
        x = [tf.constant(rng.normal(size=(1, size, size, cin)).astype(np.float32))
             for _ in range(max(1, calls))]
        g = (rng.normal(size=(3, 3, cin, cout)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
        for density in densities:
            functions = [op_speed.tf_conv(g)]
            for m in tile_sizes:
                u = tfsw.transforms.kernel_to_winograd(g, m).astype(np.float32)
                u[op_speed.pruned_positions(rng, u.shape, density, 1)] = 0.0
                packed = tuple(t.numpy() for t in tfsw.ops.pack_kernel(u))
                functions.append(op_speed.our_conv(packed, m, False))
            samplers = [op_speed.time_fn(fn, x, min_seconds=0.1) for fn in functions]
            best = [b for b, _ in measure(samplers, _ROUNDS.value)]
            ratios = [best[0] / t for t in best[1:]]
            for key, t in zip(["tf"] + list(tile_sizes), best):
                totals[(density, key)] = totals.get((density, key), 0.0) + t
            print(f"| {name} | {size}x{size}, {cin} -> {cout} | {density:g} | {best[0] * 1e3:.2f} | "
                  + " | ".join(f"{t * 1e3:.2f} | {r:.2f}x" for t, r in zip(best[1:], ratios))
                  + " |")
    for density in densities:
        tf_total = totals[(density, "tf")]
        print(f"| total | | {density:g} | {tf_total * 1e3:.1f} | " + " | ".join(
            f"{totals[(density, m)] * 1e3:.1f} | {tf_total / totals[(density, m)]:.2f}x"
            for m in tile_sizes) + " |")


def _sparse_export(model, density, tile_size, prune_fc, path):
    """Converts, prunes (every Winograd conv but the first; FC layers too if `prune_fc`) and
    exports `model`; returns the conversion report."""
    converted, report = tfsw.to_winograd(model, tile_size=tile_size, return_report=True)
    if density < 1.0:
        def density_of(layer):
            inner = tfsw.pruning.unwrap(layer)
            if isinstance(inner, tfsw.layers.WinogradConv2D) or (
                    prune_fc and isinstance(inner, keras.layers.Dense)):
                return density
            return None
        converted = tfsw.pruning.prune_to_density(converted, density_of, skip_first_conv=True)
    tfsw.export.export_saved_model(converted, path)
    return report


def _serve_only(path, batch, calls):
    serve = serving_function(path)
    x = tf.constant(np.random.default_rng(_SEED).normal(size=(batch,) + _SHAPE)
                    .astype(np.float32))
    for _ in range(calls):
        first_output(serve(x))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"served {calls} batches of {batch} from {path}: peak RSS {peak_mb:.0f} MB")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if _SERVE.value:
        _serve_only(_SERVE.value, _BATCH.value, _CALLS.value)
        return
    densities = [float(d) for d in _DENSITIES.value]
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
    workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="tfsw_imagenet_speed_")
    print(f"# {cpu_model()}; TensorFlow {tf.__version__}; {_THREADS.value} intra-op threads, "
          f"1 inter-op thread; {os.cpu_count()} CPUs; random weights (no pretrained ones here)")

    if _LAYER_RATIOS.value:
        layer_ratios(sorted(set(densities) | {1.0}))

    for model_name in _MODELS.value:
        model = _build(model_name)
        keras_fn = tf.function(lambda x, _model=model: _model(x, training=False))
        variants = {"dense Keras": keras_fn}
        dense_path = os.path.join(workdir, f"{model_name}_dense")
        tfsw.export.export_saved_model(model, dense_path, convert=False)
        variants["dense SavedModel"] = serving_function(dense_path)
        sizes = {"dense SavedModel": tfsw.export.saved_model_size(dense_path)}
        for density in densities:
            if _TILE_SIZE.value == "auto":
                print(f"\n{model_name} d={density:g}: tile sizes by "
                      f"tile_choice.fastest_tile_sizes (batch 1)")
                tile_size = tfsw.tile_choice.fastest_tile_sizes(model, density, batch_size=1,
                                                                print_fn=print)
            else:
                tile_size = int(_TILE_SIZE.value)
            label = f"sparse d={density:g}"
            path = os.path.join(workdir, f"{model_name}_d{density:g}")
            report = _sparse_export(model, density, tile_size, model_name == "vgg16", path)
            variants[label] = serving_function(path)
            sizes[label] = tfsw.export.saved_model_size(path)
            print(f"\n## {model_name} d={density:g}: "
                  + ", ".join(f"{row.layer} F({row.tile_size})" for row in report if row.converted)
                  + f"; {len(report.converted)} of {len(report)} convolutions converted")

        rng = np.random.default_rng(_SEED)
        for batch in batch_sizes:
            x = tf.constant(rng.normal(size=(batch,) + _SHAPE).astype(np.float32))
            best, median = time_variants(variants, x, _ROUNDS.value, _MIN_SECONDS.value,
                                         agree=("dense SavedModel", "sparse d=1"))
            print(f"\n### {model_name}, batch {batch}\n")
            print("| variant | best ms | median ms | images/s | vs dense Keras | "
                  "vs dense SavedModel |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for name in variants:
                print(f"| {name} | {best[name] * 1e3:.1f} | {median[name] * 1e3:.1f} | "
                      f"{batch / best[name]:.1f} | {best['dense Keras'] / best[name]:.2f}x | "
                      f"{best['dense SavedModel'] / best[name]:.2f}x |")
        dense_size = sum(sizes["dense SavedModel"].values())
        print(f"\n### {model_name}: SavedModel size (variables + constants)\n")
        for name, size in sizes.items():
            total = sum(size.values())
            print(f"| {name} | {total / 1e6:.1f} MB | {total / dense_size:.1%} of dense |")
    print(f"\nSavedModels in {workdir} (serve one with --serve to measure its peak memory)")


if __name__ == "__main__":
    app.run(main)
