"""Ratio of a WinogradConv2D training step to a Conv2D training step on VGG-nagadomi layer shapes.

A training step is forward, backward (gradients for the input and the kernel) and an SGD update,
compiled with tf.function. Both layers are timed in the same run, interleaved, best of several
repeats, so the ratio is meaningful on a noisy shared machine. Usage:

  python bench/train_step.py [--batch_size 32] [--tile_sizes 2,4,6] [--repeats 7]
"""

import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from tf_sparse_winograd.layers import WinogradConv2D

# (height/width, in_channels, filters) of VGG-nagadomi's convolutions on 32x32 inputs.
VGG_NAGADOMI_LAYERS = ((32, 3, 64), (32, 64, 64), (16, 64, 128), (16, 128, 128),
                       (8, 128, 256), (8, 256, 256), (8, 256, 256), (8, 256, 256))

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_TILE_SIZES = flags.DEFINE_list("tile_sizes", ["2", "4", "6"], "Winograd tile sizes to time.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats per layer (best is kept).")
_STEPS = flags.DEFINE_integer("steps", 5, "Training steps per timed repeat.")


def make_train_step(layer, x, dy):
    """A compiled step: forward, gradients w.r.t. input and weights, SGD update."""
    layer(x)
    optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
    optimizer.build(layer.trainable_variables)

    @tf.function(jit_compile=False)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * dy)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        optimizer.apply(grads[1:], layer.trainable_variables)
        return grads[0]

    return step


def timed(step, steps):
    """(wall seconds, process CPU seconds) per step. CPU time is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        result = step()
    result.numpy()
    return ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    tile_sizes = [int(t) for t in _TILE_SIZES.value]
    batch = _BATCH_SIZE.value
    totals = {key: (0.0, 0.0) for key in ["conv2d"] + tile_sizes}
    print(f"batch {batch}; time per training step, best of {_REPEATS.value}; "
          "ratio = WinogradConv2D / Conv2D as wall / CPU time")
    print(f"{'layer':>18} {'conv wall':>8} {'conv cpu':>8} " +
          " ".join(f"{'tile ' + str(t):>13}" for t in tile_sizes))
    for size, cin, cout in VGG_NAGADOMI_LAYERS:
        x = tf.constant(rng.standard_normal((batch, size, size, cin)), tf.float32)
        dy = tf.constant(rng.standard_normal((batch, size, size, cout)), tf.float32)
        steps = {"conv2d": make_train_step(keras.layers.Conv2D(cout, 3, padding="same"), x, dy)}
        for t in tile_sizes:
            steps[t] = make_train_step(WinogradConv2D(cout, tile_size=t), x, dy)
        best = {key: (float("inf"), float("inf")) for key in steps}
        for key, step in steps.items():
            timed(step, 2)  # Warm-up: tracing, XLA compilation, oneDNN primitive creation.
        for _ in range(_REPEATS.value):
            for key, step in steps.items():
                best[key] = tuple(map(min, best[key], timed(step, _STEPS.value)))
        for key in best:
            totals[key] = tuple(map(sum, zip(totals[key], best[key])))
        print_row(f"{size}x{size}x{cin}->{cout}", best, tile_sizes)
    print_row("all layers", totals, tile_sizes)


def print_row(label, times, tile_sizes):
    conv_wall, conv_cpu = times["conv2d"]
    print(f"{label:>18} {conv_wall * 1e3:8.2f} {conv_cpu * 1e3:8.2f} " + " ".join(
        f"{times[t][0] / conv_wall:6.2f} /{times[t][1] / conv_cpu:5.2f}" for t in tile_sizes))


if __name__ == "__main__":
    app.run(main)
