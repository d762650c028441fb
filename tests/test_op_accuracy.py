"""The op's float32 error against float64, per tile size, over the op tests' grid: the numbers
docs/export.md states, kept true by the bounds below.

Two errors, both as a fraction of the absolute-value evaluation of each output (the sum of the
magnitudes of all the terms it adds up, so an error of 1e-6 is about 8 float32 roundings of
the largest term):
- winograd: the op against the same Winograd-domain convolution (the same U) in float64: the
  rounding of the op's own arithmetic (transforms, products, sums over channels);
- direct: the op on U = G g G^T (rounded to float32) against the direct 3 x 3 convolution with
  g in float64: what a model converted from spatial weights gets, the Winograd transforms'
  amplification of rounding included (it grows quickly with the tile size).
Plus, for the direct comparison, the error as a fraction of the largest output of each case,
the figure a user compares with a model's tolerance.

    python tests/test_op_accuracy.py   # prints the table of docs/export.md
"""

import numpy as np
import pytest
import tensorflow as tf

import test_op
from tf_sparse_winograd import ops
from tf_sparse_winograd import transforms

TILES = (2, 4, 6)
# Bounds a little above the maxima measured (docs/export.md); a change of the kernel's order of
# operations that loses accuracy fails here.
WINOGRAD_BOUND = {2: 5e-7, 4: 5e-7, 6: 5e-7}
DIRECT_BOUND = {2: 5e-6, 4: 2e-5, 6: 1.5e-4}


# Besides the pairwise grid: test_op's comparison with tf.nn.conv2d, and VGG-nagadomi-like layers
# (many channels: the sums are longest there).
EXTRA_SHAPES = [((3, 15, 10), 19, 21, "SAME"), ((3, 15, 10), 19, 21, "VALID"),
                ((2, 16, 16), 64, 64, "SAME"), ((2, 8, 8), 256, 256, "SAME")]


def _cases(tile):
    """(seed, batch, h, w, in_channels, filters, padding, density, winograd_relu) of the op tests'
    pairwise grid with this tile size (non-empty outputs), then EXTRA_SHAPES."""
    for index, case in enumerate(test_op.PAIRWISE):
        h, w = case["hw"]
        if case["tile_size"] != tile or case["batch"] == 0 or case["cout"] == 0:
            continue
        if case["padding"].upper() == "VALID" and min(h, w) < 3:
            continue
        yield (5000 + index, case["batch"], h, w, case["cin"], case["cout"], case["padding"],
               case["density"], case["winograd_relu"])
    for index, ((batch, h, w), cin, cout, padding) in enumerate(EXTRA_SHAPES):
        yield 6000 + index, batch, h, w, cin, cout, padding, 1.0, False


def measure(tile, isas=None):
    """{'winograd', 'direct', 'tf_direct' and their '_of_max' twins}: the largest
    errors over the grid for `tile`, on every kernel of `isas` (default: every one this CPU
    runs); tf_*: tf.nn.conv2d in float32 on the same cases."""
    worst = dict.fromkeys(("winograd", "winograd_of_max", "direct", "direct_of_max", "tf_direct",
                           "tf_direct_of_max"), 0.0)
    previous = ops.set_isa("auto")
    try:
        for isa in isas or ops.cpu_isas():
            ops.set_isa(isa)
            for seed, batch, h, w, cin, cout, padding, density, wrelu in _cases(tile):
                rng = np.random.default_rng(seed)
                x = rng.standard_normal((batch, h, w, cin)).astype(np.float32)
                # The same Winograd-domain kernel in both evaluations.
                u = test_op.random_winograd_kernel(rng, tile, cin, cout, density)
                y = test_op.run_op(x, u, None, tile, padding, wrelu, None)
                expected = test_op.numpy_winograd_conv2d(x, u, None, tile, padding, wrelu, None)
                bound = test_op.numpy_winograd_conv2d(x, u, None, tile, padding, False, None,
                                                      absolute=True)
                worst["winograd"] = max(worst["winograd"],
                                        test_op.relative_error(y, expected, bound))
                if np.abs(expected).max() > 0:
                    worst["winograd_of_max"] = max(
                        worst["winograd_of_max"],
                        float(np.abs(y - expected).max() / np.abs(expected).max()))
                # A spatial kernel, transformed: against the float64 direct convolution.
                g = rng.standard_normal((3, 3, cin, cout))
                u = transforms.kernel_to_winograd(g, tile).astype(np.float32)
                y = test_op.run_op(x, u, None, tile, padding, False, None).astype(np.float64)
                x64 = x.astype(np.float64)
                direct = tf.nn.conv2d(x64, g, 1, padding.upper()).numpy()
                bound = tf.nn.conv2d(np.abs(x64), np.abs(g), 1, padding.upper()).numpy()
                worst["direct"] = max(worst["direct"], test_op.relative_error(y, direct, bound))
                worst["direct_of_max"] = max(
                    worst["direct_of_max"], float(np.abs(y - direct).max() / np.abs(direct).max()))
                # For scale: TensorFlow's own float32 convolution, the same measures.
                y_tf = tf.nn.conv2d(x, g.astype(np.float32), 1, padding.upper()).numpy()
                worst["tf_direct"] = max(worst["tf_direct"],
                                         test_op.relative_error(y_tf, direct, bound))
                worst["tf_direct_of_max"] = max(
                    worst["tf_direct_of_max"],
                    float(np.abs(y_tf - direct).max() / np.abs(direct).max()))
    finally:
        ops.set_isa(previous)
    return worst


@pytest.mark.parametrize("tile", TILES)
def test_float32_error_against_float64_stays_within_the_documented_bounds(tile):
    assert len(list(_cases(tile))) >= 10
    worst = measure(tile, isas=[ops.cpu_isas()[0], ops.cpu_isas()[-1]])
    assert worst["winograd"] <= WINOGRAD_BOUND[tile], worst
    assert worst["direct"] <= DIRECT_BOUND[tile], worst


def main():
    print(f"kernels: {', '.join(ops.cpu_isas())}")
    print("| tile | cases | same U: of the bound | of max abs(y) | spatial g: of the bound "
          "| of max abs(y) | tf.nn.conv2d float32: of the bound | of max abs(y) |")
    print("|---|---|---|---|---|---|---|---|")
    for tile in TILES:
        worst = measure(tile)
        print(f"| F({tile}x{tile}) | {len(list(_cases(tile)))} | {worst['winograd']:.2g} | "
              f"{worst['winograd_of_max']:.2g} | {worst['direct']:.2g} | "
              f"{worst['direct_of_max']:.2g} | {worst['tf_direct']:.2g} | "
              f"{worst['tf_direct_of_max']:.2g} |")


if __name__ == "__main__":
    main()
