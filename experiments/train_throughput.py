"""Time train.py's training loop: the input pipeline, compiled steps, batch size, per conv type.

Every variant is a model built and compiled exactly as `tf_sparse_winograd.training` does it
(`phases.build_model`, `phases.make_optimizer`, the same loss and metrics) and trained with
`model.fit` on the full Fashion-MNIST training split, as train.py does. All variants are built in
one process and timed in the same run, round-robin (the order rotates every round), so that their
ratios mean something on a shared machine. Reported per variant: the median and the best over the
rounds of wall and process-CPU milliseconds per training step and per 1000 images.

  python experiments/train_throughput.py                        # the default comparison
  python experiments/train_throughput.py --conv_types=winograd --variants=batched --rounds=12

A variant is `<pipeline>[+kerasbn][+jit][+spe<N>][@<batch>]`:
  pipeline  'per_image': the input pipeline train.py had before (one map call per image: cache,
            shuffle buffer 10000, normalize, pad, random_crop, random_flip, batch), kept here
            verbatim for comparison; 'batched': today's `data.load_dataset` (in-memory split,
            a batch gathered, normalized and augmented at once).
  +kerasbn  keras.layers.BatchNormalization instead of the models' FusedBatchNormalization (what
            the models used before);
  +jit      model.compile(jit_compile=True) (XLA);  +spe<N>  steps_per_execution=N;
  @<batch>  batch size (default --batch_size).
Print the CPU model with the numbers (the script does).
"""

import os
import statistics
import time

from absl import app
from absl import flags

_CONV_TYPES = flags.DEFINE_list("conv_types", ["spatial", "winograd", "winograd_relu"],
                                "Conv types to time.")
_VARIANTS = flags.DEFINE_list("variants", ["per_image+kerasbn", "batched+kerasbn", "batched",
                                           "batched+spe8", "batched+spe8@128"],
                              "Variants to time (see above).")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 2, "Winograd tile size.")
_WIDTH = flags.DEFINE_float("width", 0.25, "VGG-nagadomi width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Default batch size.")
_STEPS = flags.DEFINE_integer("steps", 64, "Training steps per timed fit call.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds (each times every variant once).")
_DATA_DIR = flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                                "Fashion-MNIST IDX files.")


def per_image_pipeline(spec, images, labels, batch_size, seed=0):
    """The training pipeline of data.load_dataset before batched augmentation, for comparison."""
    import tensorflow as tf
    from tf_sparse_winograd import data

    def augment(image):
        h, w, c = spec.image_shape
        p = spec.crop_padding
        image = tf.pad(image, [[p, p], [p, p], [0, 0]])
        image = tf.image.random_crop(image, [h, w, c], seed=seed)
        return tf.image.random_flip_left_right(image, seed=seed)

    ds = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    ds = ds.shuffle(min(10000, len(images)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (augment(data.normalize(x, spec)), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def parse_variant(text, default_batch):
    parts = text.split("@")
    batch = int(parts[1]) if len(parts) > 1 else default_batch
    pieces = parts[0].split("+")
    pipeline, options = pieces[0], pieces[1:]
    if pipeline not in ("per_image", "batched"):
        raise ValueError(f"A variant starts with 'per_image' or 'batched'. Received: {text!r}")
    jit, spe, keras_bn = False, 1, False
    for option in options:
        if option == "kerasbn":
            keras_bn = True
        elif option == "jit":
            jit = True
        elif option.startswith("spe") and option[3:].isdigit():
            spe = int(option[3:])
        else:
            raise ValueError(f"Unknown variant option {option!r} in {text!r} "
                             "(kerasbn, jit, spe<N>)")
    return pipeline, jit, spe, batch, keras_bn


def build_variant(conv_type, variant, arrays):
    import keras
    from tf_sparse_winograd import data
    from tf_sparse_winograd.training import config as config_lib
    from tf_sparse_winograd.training import phases
    from tf_sparse_winograd.models import conv_block
    pipeline, jit, spe, batch, keras_bn = parse_variant(variant, _BATCH_SIZE.value)
    config = config_lib.TrainConfig(conv_type=conv_type, tile_size=_TILE_SIZE.value,
                                    width=_WIDTH.value, batch_size=batch, jit_compile=jit,
                                    steps_per_execution=spe, max_train_examples=None)
    spec = data.get_spec("fashion_mnist")
    images, labels = arrays
    if pipeline == "batched":
        ds = data.training_pipeline(images, labels, spec, batch)
    else:
        ds = per_image_pipeline(spec, images, labels, batch)
    keras.utils.set_random_seed(0)
    fused_batch_norm = conv_block.batch_norm
    if keras_bn:  # The builders look conv_block.batch_norm up at call time.
        conv_block.batch_norm = lambda name: keras.layers.BatchNormalization(
            momentum=conv_block.BN_MOMENTUM, name=name)
    try:
        model = phases.build_model(config, {"image_shape": spec.image_shape,
                                            "num_classes": spec.num_classes})
    finally:
        conv_block.batch_norm = fused_batch_norm
    optimizer = phases.make_optimizer(config, 10 ** 6)
    phases._compile(model, optimizer, config)
    return model, ds.repeat(), batch


def time_fit(model, ds, steps):
    """(wall s, CPU s) of one fit call of `steps` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tf_sparse_winograd import data
    from tf_sparse_winograd.ops import cpu_model
    tf.get_logger().setLevel("ERROR")
    images, labels = data.load_idx_split(_DATA_DIR.value, "train")
    arrays = (images, labels.astype("int32"))
    keys = [(c, v) for c in _CONV_TYPES.value for v in _VARIANTS.value]
    runs = {}
    for key in keys:
        model, ds, batch = build_variant(*key, arrays)
        steps = max(_STEPS.value, 1)
        spe = parse_variant(key[1], _BATCH_SIZE.value)[2]
        steps = -(-steps // spe) * spe  # a whole number of executions
        time_fit(model, ds, 2 * spe)  # warm-up: tracing, XLA compilation, oneDNN primitives
        runs[key] = (model, ds, steps, batch, [])
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; TensorFlow {tf.__version__}; "
          f"VGG-nagadomi x{_WIDTH.value:g}, F({_TILE_SIZE.value}x{_TILE_SIZE.value}) for the "
          f"Winograd types; {_ROUNDS.value} rounds, order rotating", flush=True)
    for r in range(_ROUNDS.value):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            model, ds, steps, batch, samples = runs[key]
            samples.append(time_fit(model, ds, steps))
    print(f"{'conv type':>14} {'variant':>22} {'batch':>5} | ms/step wall: median best |"
          f" CPU: median best | ms per 1000 images (median wall, CPU)")
    for key in keys:
        _, _, steps, batch, samples = runs[key]
        wall = [w / steps * 1e3 for w, _ in samples]
        cpu = [c / steps * 1e3 for _, c in samples]
        mw, mc = statistics.median(wall), statistics.median(cpu)
        print(f"{key[0]:>14} {key[1]:>22} {batch:5d} | {mw:8.1f} {min(wall):7.1f} | "
              f"{mc:7.1f} {min(cpu):6.1f} | {mw / batch * 1e3:8.0f} {mc / batch * 1e3:6.0f}",
              flush=True)


if __name__ == "__main__":
    app.run(main)
