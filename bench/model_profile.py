"""Where an exported model's inference time goes: per-layer, per-op times of its SavedModel.

Exports VGG-nagadomi (spatial, or pruned in the Winograd domain to --density and converted as
`bench/model_speed.py` does), loads the SavedModel into a TF1-style session, runs the
`serving_default` graph with full tracing on random images and prints the mean time of each
(layer, op type) over the traced runs, largest first, and the time by op type. Node times
overlap a little with each other (intra-op threads), so the table is for proportions.

  python bench/model_profile.py --conv_type winograd --tile_size 4 --density 0.4 --batch_size 32
  python bench/model_profile.py --saved_model DIR --batch_size 1   # any exported SavedModel
"""

import collections
import os
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

_CONV_TYPE = flags.DEFINE_enum("conv_type", "winograd", ["spatial", "winograd", "winograd_relu"],
                               "Architecture; spatial is exported dense, as the baseline.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 4, "Winograd tile size (2 or 4).")
_DENSITY = flags.DEFINE_float("density", 0.4, "Winograd and FC kernel density after pruning.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per run.")
_RUNS = flags.DEFINE_integer("runs", 10, "Traced runs averaged (after 5 untraced warm-up runs).")
_THREADS = flags.DEFINE_integer("threads", 2, "intra-op threads (inter-op is 1).")
_TOP = flags.DEFINE_integer("top", 20, "Rows of the per-layer table.")
_SAVED_MODEL = flags.DEFINE_string("saved_model", None,
                                   "Profile this SavedModel (e.g. one of bench/imagenet_speed.py's "
                                   "--workdir) instead of exporting VGG-nagadomi.")


def _export(path):
    keras.utils.set_random_seed(0)
    model = models.vgg_nagadomi.build((32, 32, 3), 10, conv_type=_CONV_TYPE.value,
                                      tile_size=_TILE_SIZE.value)
    randomize_batch_norms(model, np.random.default_rng(0))
    if _CONV_TYPE.value == "spatial":
        export.export_saved_model(model, path, convert=False)
    else:
        model = pruning.prune_to_density(model, _DENSITY.value, skip_first_conv=True)
        export.export_saved_model(model, path)


def _layer_of(node_name):
    """The Keras layer a node belongs to: the path component after the model's name (the first
    component that is not a function call)."""
    parts = [p for p in node_name.split("/") if not p.startswith("StatefulPartitionedCall")]
    if not parts:
        return node_name
    return parts[1] if len(parts) > 2 else parts[-1]


def _traced_node_times(path, images):
    """Mean microseconds per (layer, op type) over the traced runs of the serving graph."""
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=_THREADS.value,
                                      inter_op_parallelism_threads=1)
    totals = collections.Counter()
    with tf.Graph().as_default(), tf.compat.v1.Session(config=config) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta_graph.signature_def["serving_default"]
        feed_info = next(iter(signature.inputs.values()))
        feed = feed_info.name
        if images is None:  # the signature's image shape, at --batch_size
            dims = [d.size for d in feed_info.tensor_shape.dim][1:]
            images = np.random.default_rng(0).normal(size=[_BATCH_SIZE.value] + dims).astype(
                np.float32)
        fetch = next(iter(signature.outputs.values())).name
        for _ in range(5):
            session.run(fetch, {feed: images})
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for _ in range(_RUNS.value):
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetch, {feed: images}, options=options, run_metadata=metadata)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    op_type = node.timeline_label.split(" = ")[-1].split("(")[0]
                    totals[(_layer_of(node.node_name), op_type)] += node.all_end_rel_micros
    return {key: micros / _RUNS.value for key, micros in totals.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _SAVED_MODEL.value:
        path, images, what = _SAVED_MODEL.value, None, _SAVED_MODEL.value
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="tfsw_model_profile_"), "model")
        _export(path)
        images = np.random.default_rng(0).normal(size=(_BATCH_SIZE.value, 32, 32, 3)).astype(
            np.float32)
        what = f"VGG-nagadomi {_CONV_TYPE.value}" + (
            "" if _CONV_TYPE.value == "spatial"
            else f", F({_TILE_SIZE.value}x{_TILE_SIZE.value}), density {_DENSITY.value}")
    times = _traced_node_times(path, images)
    total = sum(times.values())
    print(f"{what}, batch {_BATCH_SIZE.value}, {_THREADS.value} threads: {total / 1e3:.2f} ms of "
          f"node time per run\n")
    print("| layer | op | ms | share |\n| --- | --- | ---: | ---: |")
    for (layer, op_type), micros in sorted(times.items(), key=lambda kv: -kv[1])[:_TOP.value]:
        print(f"| {layer} | {op_type} | {micros / 1e3:.3f} | {micros / total:.1%} |")
    by_type = collections.Counter()
    for (_, op_type), micros in times.items():
        by_type[op_type] += micros
    print("\n| op | ms | share |\n| --- | ---: | ---: |")
    for op_type, micros in by_type.most_common(8):
        print(f"| {op_type} | {micros / 1e3:.3f} | {micros / total:.1%} |")


if __name__ == "__main__":
    app.run(main)
