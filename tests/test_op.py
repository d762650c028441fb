"""Tests of the SparseWinograd>Conv2D op against independent float64 references.

Every op call pre-fills the output with NaN (debug_fill_nan), so an element the kernel misses
shows up as NaN. The grid is sampled: a full grid on tiny images (tile remainders, borders) and a
pairwise-covering sample of the large grid (sizes, channels, batch, density, options, ISA).
"""

import concurrent.futures
import contextlib
import itertools
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from tf_sparse_winograd import ops
from tf_sparse_winograd import transforms
from tf_sparse_winograd.ops import loader
from tf_sparse_winograd.ops import transform_header

import support
from support import ISAS
from support import use_isa
from winograd_reference import assert_close
from winograd_reference import numpy_max_pool_2x2
from winograd_reference import numpy_winograd_conv2d
from winograd_reference import same_conv_reference


def random_winograd_kernel(rng, tile_size, in_channels, filters, density):
    """A dense (a, a, C, F) float32 Winograd kernel with about `density` nonzeros."""
    a = tile_size + 2
    u = rng.standard_normal((a, a, in_channels, filters)).astype(np.float32)
    if density < 1.0:
        u[rng.random(u.shape) >= density] = 0.0
    return u


def relative_error(actual, expected, bound):
    """max |actual - expected| / bound over elements (0 for empty arrays)."""
    if np.size(expected) == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected) / (bound + 1e-30)))


# .ci/sanitizers.sh sets TFSW_TEST_OP_LIBRARY_ONLY=1: the comparisons of the package's pure-TF
# path (no op library in it) are then left out; under AddressSanitizer, tracing its tf.functions
# took most of the run.
OP_LIBRARY_ONLY = os.environ.get("TFSW_TEST_OP_LIBRARY_ONLY") == "1"
# Relative to the absolute-value bound (see winograd_reference.numpy_winograd_conv2d): float32
# rounding of the transforms and of sums over <= 130 channels; measured <= 2e-6 for every tile.
RTOL = 1e-5
# Against tf.nn.conv2d (relative to the direct convolution's absolute bound): the Winograd
# transforms amplify rounding, more with bigger tiles. Measured maxima over the test shapes:
# ~1e-6 (tile 2), ~1e-5 (tile 4), ~1.5e-4 (tile 6); the limits keep a margin.
CONV_RTOL = {2: 1e-5, 4: 1e-4, 6: 1e-3}


pytestmark = pytest.mark.usefixtures("isa_restored")  # tests force kernels with use_isa


def run_op(x, u, bias, tile_size, padding, winograd_relu, activation, isa=None,
           max_pool_2x2=False):
    if isa is not None:
        use_isa(isa)
    packed = ops.pack_kernel(u)
    return ops.sparse_winograd_conv2d(x, packed, bias, tile_size=tile_size, padding=padding,
                                      winograd_relu=winograd_relu, activation=activation,
                                      max_pool_2x2=max_pool_2x2, debug_fill_nan=True).numpy()


@contextlib.contextmanager
def _functions_run_eagerly():
    saved = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(saved)


def check_case(seed, h, w, tile_size, cin, cout, batch, density, padding, winograd_relu,
               use_bias, activation, isa, max_pool_2x2=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, h, w, cin)).astype(np.float32)
    u = random_winograd_kernel(rng, tile_size, cin, cout, density)
    bias = rng.standard_normal(cout).astype(np.float32) if use_bias else None
    if padding.upper() == "VALID" and (h < 3 or w < 3):
        if h < 2 or w < 2:
            with pytest.raises(tf.errors.InvalidArgumentError, match="at least 3 x 3"):
                run_op(x, u, bias, tile_size, padding, winograd_relu, activation, isa,
                       max_pool_2x2)
            return
        y = run_op(x, u, bias, tile_size, padding, winograd_relu, activation, isa, max_pool_2x2)
        side = 2 if max_pool_2x2 else 1
        assert y.shape == (batch, (h - 2) // side, (w - 2) // side, cout)
        return
    what = (f"seed={seed} hw={h}x{w} m={tile_size} c={cin}->{cout} n={batch} d={density} "
            f"{padding} wrelu={winograd_relu} bias={use_bias} act={activation} isa={isa} "
            f"pool={max_pool_2x2}")
    # Max pooling moves no value by more than the largest error in its window, so the pooled
    # bound is the pooled absolute-value evaluation.
    pool = numpy_max_pool_2x2 if max_pool_2x2 else (lambda y: y)
    expected = pool(numpy_winograd_conv2d(x, u, bias, tile_size, padding, winograd_relu,
                                          activation))
    bound = pool(numpy_winograd_conv2d(x, u, bias, tile_size, padding, winograd_relu, activation,
                                       absolute=True))
    y = run_op(x, u, bias, tile_size, padding, winograd_relu, activation, isa, max_pool_2x2)
    assert_close(y, expected, bound, RTOL, "op " + what)
    if OP_LIBRARY_ONLY:
        return
    # The package's pure-TF reference implementation, from the dense kernel: its ops run one by
    # one here (XLA would compile every case's new shape, ~1-4 s each); test_winograd_conv2d
    # checks the same transforms compiled, as training runs them.
    with _functions_run_eagerly():
        y_ref = ops.sparse_winograd_conv2d(x, u, bias, tile_size=tile_size, padding=padding,
                                           winograd_relu=winograd_relu, activation=activation,
                                           max_pool_2x2=max_pool_2x2,
                                           implementation="reference").numpy()
    assert_close(y_ref, expected, bound, RTOL, "reference " + what)


# ----------------------------------------------------------------------------- grids
SMALL_GRID = list(itertools.product([1, 2, 3, 4, 5, 6, 8], [1, 2, 3, 5, 7], [2, 4, 6],
                                    ["SAME", "VALID"]))


@pytest.mark.parametrize("h,w,tile_size,padding", support.fast_sample(SMALL_GRID, 12))
def test_small_images_every_tile_remainder(h, w, tile_size, padding):
    seed = h * 1000 + w * 100 + tile_size * 10 + (padding == "SAME")
    isa = ISAS[seed % 3]
    check_case(seed, h, w, tile_size, 3, 5, 2, 0.7, padding, seed % 2 == 0, seed % 4 < 2,
               "relu" if seed % 3 == 0 else None, isa)


LARGE_PARAMS = {
    "hw": [(1, 33), (3, 13), (7, 7), (13, 3), (33, 33), (33, 1), (13, 7), (7, 33)],
    "tile_size": [2, 4, 6],
    "cin": [1, 3, 17, 64, 130],
    "cout": [1, 3, 17, 64, 130],
    "batch": [0, 1, 5],
    "density": [0.0, 0.1, 0.4, 1.0],
    "padding": ["same", "VALID"],
    "winograd_relu": [False, True],
    "use_bias": [False, True],
    "activation": [None, "relu"],
    "isa": list(ISAS),
}


def pairwise_cases(params, seed=20240611, tries=60):
    """A small set of cases covering every pair of parameter values (greedy, seeded)."""
    rng = random.Random(seed)
    names = list(params)
    uncovered = {((p, i), (q, j)) for p, q in itertools.combinations(names, 2)
                 for i in range(len(params[p])) for j in range(len(params[q]))}
    cases = []
    while uncovered:
        best, best_gain = None, -1
        anchor = sorted(uncovered)[rng.randrange(len(uncovered))]
        for _ in range(tries):
            case = {p: rng.randrange(len(params[p])) for p in names}
            for p, i in anchor:
                case[p] = i
            gain = sum(((p, case[p]), (q, case[q])) in uncovered
                       for p, q in itertools.combinations(names, 2))
            if gain > best_gain:
                best, best_gain = case, gain
        uncovered -= {((p, best[p]), (q, best[q])) for p, q in itertools.combinations(names, 2)}
        cases.append({p: params[p][i] for p, i in best.items()})
    return cases


PAIRWISE = pairwise_cases(LARGE_PARAMS)


@pytest.mark.parametrize("index", support.fast_sample(list(range(len(PAIRWISE))), 5))
def test_pairwise_grid(index):
    case = dict(PAIRWISE[index])
    h, w = case.pop("hw")
    check_case(1000 + index, h, w, **case)


def test_pairwise_grid_covers_every_pair():
    names = list(LARGE_PARAMS)
    for p, q in itertools.combinations(names, 2):
        seen = {(repr(c[p]), repr(c[q])) for c in PAIRWISE}
        assert len(seen) == len(LARGE_PARAMS[p]) * len(LARGE_PARAMS[q]), (p, q)


# ------------------------------------------------------- against TF's direct convolution
@pytest.mark.parametrize("tile_size", [2, 4, 6])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("isa", ISAS)
def test_matches_tf_conv2d_for_a_spatial_kernel(tile_size, padding, isa):
    rng = np.random.default_rng(tile_size * 7 + len(padding) + len(isa))
    x = rng.standard_normal((3, 15, 10, 19)).astype(np.float32)
    g = rng.standard_normal((3, 3, 19, 21)).astype(np.float32)
    bias = rng.standard_normal(21).astype(np.float32)
    u = transforms.kernel_to_winograd(g, tile_size).astype(np.float32)
    y = run_op(x, u, bias, tile_size, padding, False, "relu", isa)
    conv = tf.nn.relu(tf.nn.conv2d(x, g, 1, padding) + bias).numpy().astype(np.float64)
    bound = tf.nn.conv2d(np.abs(x), np.abs(g), 1, padding).numpy().astype(np.float64) + np.abs(bias)
    assert_close(y, conv, bound, CONV_RTOL[tile_size], f"conv2d m={tile_size}")


def test_tolerance_is_not_vacuous():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, 6, 4)).astype(np.float32)
    u = random_winograd_kernel(rng, 2, 4, 3, 1.0)
    expected, bound = same_conv_reference(x, u)
    y = run_op(x, u, None, 2, "SAME", False, None)
    assert_close(y, expected, bound, RTOL)
    y[0, 5, 5, 2] += 20 * RTOL * bound[0, 5, 5, 2]
    with pytest.raises(AssertionError):
        assert_close(y, expected, bound, RTOL)
    y[0, 5, 5, 2] = np.nan
    with pytest.raises(AssertionError, match="NaN"):
        assert_close(y, expected, bound, RTOL)


# ---------------------------------------------------------------------------- the transforms
def test_cpp_transform_header_matches_transforms_py():
    path = os.path.join(os.path.dirname(ops.__file__), transform_header.HEADER_PATH)
    with open(path, encoding="utf-8") as f:
        assert f.read() == transform_header.render_header()


@pytest.mark.parametrize("tile_size", [2, 4, 6])
def test_input_and_output_transform_of_single_tile(tile_size):
    # One tile, one channel, U = 1 at a single Winograd coordinate: the op's output is
    # A^T E_p A restricted by the input transform, compared with the matrices of transforms.py.
    bt, _, at = transforms.transform_matrices(tile_size)
    a = tile_size + 2
    rng = np.random.default_rng(tile_size)
    d = rng.standard_normal((1, a, a, 1)).astype(np.float32)
    v = bt @ d[0, :, :, 0].astype(np.float64) @ bt.T
    for p in range(a * a):
        u = np.zeros((a, a, 1, 1), np.float32)
        u[p // a, p % a, 0, 0] = 1.0
        y = run_op(d, u, None, tile_size, "VALID", False, None)[0, :, :, 0]
        e = np.zeros((a, a))
        e[p // a, p % a] = v[p // a, p % a]
        np.testing.assert_allclose(y, at @ e @ at.T, rtol=1e-5, atol=1e-5 * np.abs(v).max())


# ----------------------------------------------------------------------------- packing
def test_pack_kernel_layout_and_round_trip():
    rng = np.random.default_rng(0)
    u = random_winograd_kernel(rng, 4, 7, 5, 0.3)
    packed = ops.pack_kernel(u)
    assert all(isinstance(t, tf.Tensor) for t in packed)
    assert packed.shape.dtype == tf.int32 and packed.row_ptr.dtype == tf.int32
    assert packed.col_idx.dtype == tf.int32 and packed.values.dtype == tf.float32
    np.testing.assert_array_equal(packed.shape.numpy(), [6, 7, 5])
    assert packed.values.shape[0] == np.count_nonzero(u)
    assert packed.row_ptr.shape[0] == 36 * 5 + 1
    # Row p * filters + f holds U[i, j, :, f] with ascending channels.
    row_ptr, cols, vals = (t.numpy() for t in packed[1:])
    for p, f in [(0, 0), (7, 3), (35, 4)]:
        r = p * 5 + f
        nz = np.nonzero(u[p // 6, p % 6, :, f])[0]
        np.testing.assert_array_equal(cols[row_ptr[r]:row_ptr[r + 1]], nz)
        np.testing.assert_array_equal(vals[row_ptr[r]:row_ptr[r + 1]], u[p // 6, p % 6, nz, f])
    np.testing.assert_array_equal(ops.unpack_kernel(packed).numpy(), u)
    rebuilt = ops.PackedKernel(**{k: tf.constant(v.numpy()) for k, v in packed._asdict().items()})
    np.testing.assert_array_equal(ops.unpack_kernel(rebuilt).numpy(), u)


def test_pack_kernel_in_tf_function_and_rejects_bad_shapes():
    rng = np.random.default_rng(1)
    u = random_winograd_kernel(rng, 2, 3, 4, 0.5)
    packed = tf.function(ops.pack_kernel)(tf.constant(u))
    np.testing.assert_array_equal(ops.unpack_kernel(packed).numpy(), u)
    with pytest.raises(ValueError, match="winograd_kernel"):
        ops.pack_kernel(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="square"):
        ops.pack_kernel(np.zeros((4, 3, 3, 2)))


# ------------------------------------------------------- fused 2 x 2 max pool (max_pool_2x2)
POOL_GRID = [(h, w, m, padding)
             for h, w, m, padding in itertools.product([1, 2, 3, 4, 7, 13], [2, 5, 8, 9], [2, 4, 6],
                                                       ["SAME", "VALID"])
             if padding == "SAME" or min(h, w) >= 3]


@pytest.mark.parametrize("h,w,tile_size,padding", support.fast_sample(POOL_GRID, 6))
def test_fused_max_pool_matches_pooling_the_convolution(h, w, tile_size, padding):
    seed = 7000 + h * 100 + w * 10 + tile_size + (padding == "SAME")
    check_case(seed, h, w, tile_size, 5, 19, 2, 0.4, padding, winograd_relu=h == 7,
               use_bias=w != 5, activation=None if h % 2 else "relu", isa=None,
               max_pool_2x2=True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tile_size", [2, 4])
def test_fused_max_pool_on_every_isa_with_many_tiles_and_channels(isa, tile_size):
    # 3 x 17 x 17 images: 243 (tile 2) or 75 (tile 4) tiles, several tile blocks with a partial
    # last one; 130 channels and 33 filters leave partial vectors on both sides.
    check_case(11 + tile_size, 17, 17, tile_size, 130, 33, 3, 0.4, "SAME", winograd_relu=False,
               use_bias=True, activation="relu", isa=isa, max_pool_2x2=True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tile_size,seed", [(2, 0), (4, 5)])
def test_fused_max_pool_propagates_nan_and_inf(isa, tile_size, seed):
    # A pooled pixel is NaN exactly when one of its window's unpooled outputs is NaN, whichever
    # of the four it is (a plain max instruction drops a NaN in one of its operands). Infinite
    # inputs give NaN (Inf - Inf) in some outputs of a tile and +-Inf in others; these seeds give
    # windows whose only NaN sits in each of the four positions.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 12, 12, 5)).astype(np.float32)
    for _ in range(4):
        n, i, j, c = rng.integers(2), rng.integers(12), rng.integers(12), rng.integers(5)
        x[n, i, j, c] = rng.choice([np.inf, -np.inf])
    a = tile_size + 2
    u = rng.standard_normal((a, a, 5, 6)).astype(np.float32)
    u[rng.random(u.shape) >= 0.5] = 0.0
    use_isa(isa)
    packed = ops.pack_kernel(u)
    for activation in (None, "relu"):
        full = ops.sparse_winograd_conv2d(x, packed, tile_size=tile_size,
                                          activation=activation).numpy()
        windows = np.isnan(full).reshape(2, 6, 2, 6, 2, 6).transpose(0, 1, 3, 5, 2, 4)
        windows = windows.reshape(-1, 4)
        lone_nan = windows[windows.sum(axis=1) == 1]
        assert lone_nan.any(axis=0).all(), "the data no longer puts a lone NaN in each position"
        pooled = ops.sparse_winograd_conv2d(x, packed, tile_size=tile_size, activation=activation,
                                            max_pool_2x2=True, debug_fill_nan=True).numpy()
        expected = numpy_max_pool_2x2(full)  # numpy's max propagates NaN
        np.testing.assert_array_equal(np.isnan(pooled), np.isnan(expected))
        np.testing.assert_array_equal(pooled[~np.isnan(pooled)], expected[~np.isnan(expected)])


def test_fused_max_pool_shapes_in_graph_mode_and_empty_outputs():
    rng = np.random.default_rng(12)
    u = random_winograd_kernel(rng, 4, 6, 9, 0.5)
    packed = ops.pack_kernel(u)
    pooled = tf.function(lambda x: ops.sparse_winograd_conv2d(x, packed, tile_size=4,
                                                              max_pool_2x2=True))
    concrete = pooled.get_concrete_function(tf.TensorSpec([None, 13, 8, 6], tf.float32))
    assert concrete.output_shapes.as_list() == [None, 6, 4, 9]
    for shape, expected in [((0, 9, 9, 6), (0, 4, 4, 9)), ((2, 1, 9, 6), (2, 0, 4, 9))]:
        y = ops.sparse_winograd_conv2d(np.zeros(shape, np.float32), packed, tile_size=4,
                                       max_pool_2x2=True, debug_fill_nan=True)
        assert y.shape == expected
    with pytest.raises(ValueError, match="max_pool_2x2"):
        ops.sparse_winograd_conv2d(np.zeros((1, 4, 4, 6), np.float32), packed, tile_size=4,
                                   max_pool_2x2="yes")


# ------------------------------------------------------------------------- edge cases
def test_graph_mode_shape_inference_and_dynamic_batch():
    rng = np.random.default_rng(2)
    u = random_winograd_kernel(rng, 2, 6, 9, 0.5)
    packed = ops.pack_kernel(u)

    @tf.function(input_signature=[tf.TensorSpec([None, 12, 11, 6], tf.float32)])
    def f(x):
        y = ops.sparse_winograd_conv2d(x, packed, padding="valid")
        assert y.shape.as_list() == [None, 10, 9, None] or y.shape.as_list() == [None, 10, 9, 9]
        return y

    x = rng.standard_normal((4, 12, 11, 6)).astype(np.float32)
    expected = numpy_winograd_conv2d(x, u, None, 2, "VALID", False, None)
    bound = numpy_winograd_conv2d(x, u, None, 2, "VALID", False, None, absolute=True)
    assert_close(f(x).numpy(), expected, bound, RTOL)
    assert_close(f(x[:1]).numpy(), expected[:1], bound[:1], RTOL)

    const = tf.function(lambda x: ops.sparse_winograd_conv2d(x, packed))
    assert const.get_concrete_function(tf.TensorSpec([2, 5, 5, 6])).output_shapes == [2, 5, 5, 9]


def test_shape_function_rejects_wrong_ranks():
    packed = ops.pack_kernel(np.ones((4, 4, 3, 2), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        tf.function(lambda x: ops.sparse_winograd_conv2d(x, packed)).get_concrete_function(
            tf.TensorSpec([5, 5, 3]))
    with pytest.raises(ValueError, match="a must be tile_size|tile_size \\+ 2"):
        tf.function(lambda x: ops.sparse_winograd_conv2d(x, packed, tile_size=4)
                    ).get_concrete_function(tf.TensorSpec([1, 5, 5, 3]))


def test_batch_zero_zero_filters_zero_channels_and_valid_2x2():
    rng = np.random.default_rng(3)
    u = random_winograd_kernel(rng, 2, 3, 4, 1.0)
    assert run_op(np.zeros((0, 5, 6, 3), np.float32), u, None, 2, "SAME", False, None).shape == (0, 5, 6, 4)
    assert run_op(np.zeros((2, 2, 6, 3), np.float32), u, None, 2, "VALID", False, None).shape == (2, 0, 4, 4)
    y = run_op(rng.standard_normal((2, 5, 6, 3)).astype(np.float32), np.zeros((4, 4, 3, 0), np.float32),
               None, 2, "SAME", False, None)
    assert y.shape == (2, 5, 6, 0)
    bias = np.array([1.5, -2.0], np.float32)
    y = run_op(np.zeros((1, 3, 4, 0), np.float32), np.zeros((4, 4, 0, 2), np.float32), bias, 2,
               "SAME", False, "relu")
    np.testing.assert_array_equal(y, np.broadcast_to([1.5, 0.0], (1, 3, 4, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 3 x 3"):
        run_op(np.zeros((1, 1, 5, 3), np.float32), u, None, 2, "VALID", False, None)


@pytest.mark.parametrize("isa", ISAS)
def test_nan_and_inf_propagate(isa):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 9, 9, 5)).astype(np.float32)
    x[0, 4, 4, 2] = np.nan
    x[0, 0, 8, 1] = np.inf
    g = rng.standard_normal((3, 3, 5, 3)).astype(np.float32)
    u = transforms.kernel_to_winograd(g, 2).astype(np.float32)
    y = run_op(x, u, None, 2, "SAME", False, "relu", isa)
    assert np.isnan(y[0, 3:6, 3:6, :]).all()           # every output seeing the NaN
    assert not np.isfinite(y[0, 0:2, 7:9, :]).any()    # ... and the Inf (Inf or NaN)
    assert np.isfinite(y[0, 7:, :3, :]).all()          # far away: untouched
    packed = ops.pack_kernel(u)
    bad = packed._replace(values=tf.tensor_scatter_nd_update(packed.values, [[0]], [np.nan]))
    y = ops.sparse_winograd_conv2d(np.ones((1, 4, 4, 5), np.float32), bad).numpy()
    assert np.isnan(y).any()


def test_padding_and_activation_spellings():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    packed = ops.pack_kernel(random_winograd_kernel(rng, 2, 2, 2, 1.0))
    a = ops.sparse_winograd_conv2d(x, packed, padding="same", activation="relu").numpy()
    b = ops.sparse_winograd_conv2d(x, packed, padding="Same", activation="RELU").numpy()
    np.testing.assert_array_equal(a, b)
    for kwargs in [dict(padding="full"), dict(activation="tanh"), dict(tile_size=3),
                   dict(implementation="fast")]:
        with pytest.raises(ValueError):
            ops.sparse_winograd_conv2d(x, packed, **kwargs)


def test_argument_errors_name_the_argument():
    rng = np.random.default_rng(7)
    u = random_winograd_kernel(rng, 2, 3, 4, 0.5)
    packed = ops.pack_kernel(u)
    x = np.zeros((1, 5, 5, 3), np.float32)
    cases = [
        (dict(x=np.zeros((1, 5, 5, 4), np.float32)), "in_channels"),
        (dict(bias=np.zeros(3, np.float32)), "bias"),
        (dict(tile_size=4), "kernel_shape\\[0\\]"),
        (dict(packed=packed._replace(col_idx=packed.col_idx + 3)), "col_idx"),
        (dict(packed=packed._replace(row_ptr=tf.reverse(packed.row_ptr, [0]))), "row_ptr"),
        (dict(packed=packed._replace(values=packed.values[:-1])), "values"),
        (dict(packed=packed._replace(shape=tf.constant([4, 3, -4]))), "non-negative"),
    ]
    for change, pattern in cases:
        args = dict(x=x, packed=packed, bias=None, tile_size=2)
        args.update(change)
        with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
            ops.sparse_winograd_conv2d(args.pop("x"), args.pop("packed"), **args)
    with pytest.raises(TypeError, match="PackedKernel"):
        ops.sparse_winograd_conv2d(x, u)


@pytest.mark.parametrize("isa", ISAS)
def test_bad_column_index_is_found_next_to_complete_rows(isa):
    # The range check skips complete rows (0, 1, ..., C - 1) and checks the runs between them:
    # a bad index before, between and after complete rows, and in a row of C nonzeros that is
    # not complete, must each be rejected.
    use_isa(isa)
    rng = np.random.default_rng(21)
    channels, filters = 6, 5
    u = rng.standard_normal((4, 4, channels, filters)).astype(np.float32)
    rows = u.transpose(0, 1, 3, 2).reshape(16 * filters, channels)
    rows[1::3, 1:] = 0.0  # every third row sparse, the others complete
    packed = ops.pack_kernel(rows.reshape(4, 4, filters, channels).transpose(0, 1, 3, 2))
    row_ptr = packed.row_ptr.numpy()
    col_idx = packed.col_idx.numpy()
    x = rng.standard_normal((1, 6, 6, channels)).astype(np.float32)
    ops.sparse_winograd_conv2d(x, packed)  # well-formed: accepted
    sparse_rows = list(range(1, 16 * filters, 3))
    complete_rows = [r for r in range(16 * filters) if r % 3 != 1]
    positions = {
        "first nonzero": 0,
        "sparse row between complete rows": row_ptr[sparse_rows[5]],
        "last nonzero": col_idx.size - 1,
        "inside a complete-length row": row_ptr[complete_rows[7]] + channels - 1,
    }
    for k in positions.values():
        for bad in (channels, -1):
            broken = col_idx.copy()
            broken[k] = bad
            with pytest.raises(tf.errors.InvalidArgumentError, match="col_idx"):
                ops.sparse_winograd_conv2d(x, packed._replace(col_idx=tf.constant(broken)))


def test_every_isa_gives_the_same_result_and_threads_do_not_matter():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 20, 17, 40)).astype(np.float32)
    u = random_winograd_kernel(rng, 4, 40, 70, 0.3)
    results = [run_op(x, u, None, 4, "SAME", True, None, isa) for isa in ISAS]
    expected = numpy_winograd_conv2d(x, u, None, 4, "SAME", True, None)
    bound = numpy_winograd_conv2d(x, u, None, 4, "SAME", True, None, absolute=True)
    for isa, y in zip(ISAS, results):
        assert_close(y, expected, bound, RTOL, isa)


def test_tuning_attributes_give_the_same_convolution():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 17, 19, 33)).astype(np.float32)
    u = random_winograd_kernel(rng, 2, 33, 150, 0.4)
    expected, bound = same_conv_reference(x, u)
    packed = ops.pack_kernel(u)
    for nv, fb, upt in [(1, 16, 0), (2, 48, 3), (4, 200, 0), (4, 16, 1024), (0, 4096, 2)]:
        y = ops.sparse_winograd_conv2d(x, packed, tile_vectors=nv, filter_block=fb,
                                       units_per_thread=upt, debug_fill_nan=True).numpy()
        assert_close(y, expected, bound, RTOL, f"nv={nv} fb={fb} upt={upt}")


@pytest.mark.parametrize("name,value", [("tile_vectors", 3), ("tile_vectors", 8),
                                        ("tile_vectors", -1), ("filter_block", -1),
                                        ("filter_block", 4097), ("units_per_thread", -2),
                                        ("units_per_thread", 1025)])
def test_tuning_attributes_out_of_range_are_rejected_by_wrapper_and_op(name, value):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 6, 6, 3)).astype(np.float32)
    packed = ops.pack_kernel(random_winograd_kernel(rng, 2, 3, 4, 0.5))
    with pytest.raises(ValueError, match=f"`{name}` must be .* Received: {name}={value}"):
        ops.sparse_winograd_conv2d(x, packed, **{name: value})
    # The op itself (a SavedModel could hold any value): InvalidArgument naming the attribute.
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"Received: {name}={value}"):
        ops.load_op_library().sparse_winograd_conv2d(
            input=x, kernel_shape=packed.shape, row_ptr=packed.row_ptr, col_idx=packed.col_idx,
            values=packed.values, bias=np.zeros(0, np.float32), **{name: value})


def _conv_with_kernel_knobs(x, packed, isa, tile_vectors):
    """The op at tile 2 on the kernel of `isa` with the tile_vectors attribute."""
    use_isa(isa)
    return ops.sparse_winograd_conv2d(x, packed, tile_size=2, debug_fill_nan=True,
                                      tile_vectors=tile_vectors).numpy()


def _kernel_of_rows(rng, a, channels, filters, columns_of):
    """A PackedKernel whose row (p, f) holds the columns `columns_of(p, f)` (called in row order)
    with random values, and its dense (a, a, channels, filters) sum."""
    dense = np.zeros((a * a, channels, filters))
    row_ptr, col_idx, values = [0], [], []
    for p in range(a * a):
        for f in range(filters):
            cols = columns_of(p, f)
            vals = rng.standard_normal(len(cols))
            np.add.at(dense[p, :, f], cols, vals)
            col_idx.extend(cols)
            values.extend(vals)
            row_ptr.append(len(col_idx))
    packed = ops.PackedKernel(tf.constant([a, channels, filters], tf.int32),
                              tf.constant(row_ptr, tf.int32), tf.constant(col_idx, tf.int32),
                              tf.constant(values, tf.float32))
    return packed, dense.reshape(a, a, channels, filters)


def _mixed_rows_kernel(rng, a, channels, filters):
    """A hand-made CSR kernel whose rows mix every kind the op tells apart, and its dense sum.

    Even Winograd coordinates: complete rows (every channel, in order: the dense micro-kernel) with
    a few exceptions, so that groups of 4 and 8 complete rows both occur and are both broken.
    Odd coordinates: rows of length `channels` that are not complete (channels permuted or
    repeated: they must take the sparse path), in runs of 8, and ordinary sparse rows.
    """
    def columns_of(p, f):
        if p % 2 == 0:
            kind = "sparse" if rng.random() < 0.1 else "complete"
        elif f < 16:  # runs of 8, long enough for either group size
            kind = "permuted" if f < 8 else "repeated"
        else:
            kind = ("permuted", "repeated", "sparse")[rng.integers(3)]
        if kind == "complete":
            return np.arange(channels)
        if kind == "permuted":
            return np.roll(np.arange(channels), 1 + rng.integers(channels - 1))
        if kind == "repeated":
            cols = np.sort(rng.integers(0, channels, channels))
            cols[0] = cols[1]  # never 0, 1, 2, ... in order
            return cols
        return np.flatnonzero(rng.random(channels) < 0.3)
    return _kernel_of_rows(rng, a, channels, filters, columns_of)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tile_vectors", [1, 4])
def test_complete_rows_use_the_dense_kernel_and_lookalike_rows_do_not(isa, tile_vectors):
    rng = np.random.default_rng(11)
    channels, filters = 19, 29  # 29 filters: groups of 4 and of 8 with leftovers
    x = rng.standard_normal((3, 9, 10, channels)).astype(np.float32)
    packed, u = _mixed_rows_kernel(rng, 4, channels, filters)
    expected, bound = same_conv_reference(x, u)
    y = _conv_with_kernel_knobs(x, packed, isa, tile_vectors)
    assert_close(y, expected, bound, RTOL, f"{isa} tile_vectors={tile_vectors}")


def _grouped_rows_kernel(rng, a, channels, filters):
    """A CSR kernel in which blocks of 4 filters share column lists (the group micro-kernel), and
    look-alike blocks that must not be taken for groups, with its dense sum.

    Per Winograd coordinate, each block of 4 filters (f % 4 == 0) is one of: a true group (one
    column list, own values); a block whose last row differs in one column, or lists the same
    columns in another order (same lengths: only the columns tell); a group of empty rows. The
    blocks at odd coordinates are shifted by 2 filters (f % 4 == 2 starts them), which the op
    must not take for groups; 30 filters leave a partial block at the end.
    """
    block = {}

    def columns_of(p, f):
        shift = 2 if p % 2 else 0
        if (f - shift) % 4 == 0 or f == 0:
            block["kind"] = ("group", "group", "one_differs", "reordered", "empty")[rng.integers(5)]
            base = np.flatnonzero(rng.random(channels) < 0.4)
            block["base"] = base if len(base) >= 2 else np.array([0, channels - 1])
        cols = block["base"].copy()
        last_of_block = (f - shift) % 4 == 3
        if block["kind"] == "empty":
            return cols[:0]
        if block["kind"] == "one_differs" and last_of_block:
            cols[-1] = (cols[-1] + 1) % channels
        elif block["kind"] == "reordered" and last_of_block:
            cols = cols[::-1]
        return cols
    return _kernel_of_rows(rng, a, channels, filters, columns_of)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tile_vectors", [1, 4])
def test_filter_groups_with_one_column_list_and_lookalike_groups(isa, tile_vectors):
    rng = np.random.default_rng(12)
    channels, filters = 21, 30
    x = rng.standard_normal((3, 9, 10, channels)).astype(np.float32)
    packed, u = _grouped_rows_kernel(rng, 4, channels, filters)
    expected, bound = same_conv_reference(x, u)
    y = _conv_with_kernel_knobs(x, packed, isa, tile_vectors)
    assert_close(y, expected, bound, RTOL, f"{isa} tile_vectors={tile_vectors}")


# -------------------------------------------------------- kernels checked once per op node
def test_checked_kernel_follows_a_variable_assigned_new_indices():
    # The op keeps the checked indices of a kernel per node, keyed by the index tensors'
    # buffers. A variable assigned new indices of the same size must be seen, and checked.
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 6, 6, 8)).astype(np.float32)
    first, second = ops.pack_kernel(random_winograd_kernel(rng, 2, 8, 5, 0.5)), None
    while second is None or second.col_idx.shape != first.col_idx.shape:
        second = ops.pack_kernel(random_winograd_kernel(rng, 2, 8, 5, 0.5))
    fields = [tf.Variable(t) for t in first]
    conv = tf.function(lambda x: ops.sparse_winograd_conv2d(
        x, ops.PackedKernel(*(v.read_value() for v in fields)), debug_fill_nan=True))

    def update(variable, new_value):
        # assign_add updates the variable's buffer in place unless a reader still holds it.
        variable.assign_add(tf.convert_to_tensor(new_value) - variable.read_value())

    for packed in (first, second, first):
        for v, t in zip(fields, packed):
            update(v, t)
        u = ops.unpack_kernel(packed).numpy()
        for _ in range(2):  # the second call finds the kernel checked
            assert_close(conv(x), *same_conv_reference(x, u), RTOL)
    update(fields[2], tf.tensor_scatter_nd_update(first.col_idx, [[3]], [8]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"col_idx\[3\]=8"):
        conv(x)
    update(fields[1], tf.tensor_scatter_nd_update(first.row_ptr, [[4]], [-1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-decreasing"):
        conv(x)


def _kernel_with_three_per_row(rng):
    """A (PackedKernel, dense kernel) pair, tile 2, 6 channels, 4 filters, with 3 nonzeros per
    row at random channels: every such kernel packs to the same sizes, with other columns."""
    return _kernel_of_rows(rng, 4, 6, 4, lambda p, f: np.sort(rng.choice(6, 3, replace=False)))


@pytest.mark.parametrize("isa", ISAS)
def test_checked_kernels_of_many_eager_kernels_of_one_shape(isa):
    # Eager calls with the same attributes share one op kernel, whose cache holds a few checked
    # kernels: more kernels than that, alternating, and kernels made, used and dropped one after
    # the other (a freed buffer's address is soon reused) must each give their own result.
    use_isa(isa)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 5, 7, 6)).astype(np.float32)
    kernels = [_kernel_with_three_per_row(rng) for _ in range(6)]
    for _ in range(2):
        for packed, u in kernels:
            y = ops.sparse_winograd_conv2d(x, packed, debug_fill_nan=True)
            assert_close(y, *same_conv_reference(x, u), RTOL)
    for _ in range(6):
        packed, u = _kernel_with_three_per_row(rng)
        y = ops.sparse_winograd_conv2d(x, packed, debug_fill_nan=True)
        assert_close(y, *same_conv_reference(x, u), RTOL)


def test_checked_kernels_under_concurrent_calls_of_one_node():
    # One graph node (the packed kernel is an argument of the function) called from several
    # threads at once with more kernels than its cache holds: every call gets its own result.
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2, 6, 6, 6)).astype(np.float32)
    kernels = [_kernel_with_three_per_row(rng) for _ in range(7)]
    references = [same_conv_reference(x, u) for _, u in kernels]
    conv = tf.function(lambda x, *packed: ops.sparse_winograd_conv2d(
        x, ops.PackedKernel(*packed), debug_fill_nan=True))

    def worker(start):
        for i in range(start, start + 3 * len(kernels)):
            k = i % len(kernels)
            assert_close(conv(x, *kernels[k][0]), *references[k], RTOL, f"kernel {k}")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(worker, start) for start in range(4)]:
            future.result()
    assert conv.experimental_get_tracing_count() == 1  # one graph, one node, one op kernel


@pytest.mark.parametrize("isa", ISAS)
def test_more_than_65536_input_channels_use_32_bit_column_indices(isa):
    # Up to 65536 channels the kernel reads 16-bit copies of the column indices; above, 32-bit.
    use_isa(isa)
    rng = np.random.default_rng(22)
    channels = 65536 + 37
    x = rng.standard_normal((1, 3, 3, channels)).astype(np.float32)
    u = np.zeros((4, 4, channels, 2), np.float32)
    for c in (0, 5, 65535, 65536, channels - 1):  # 65536 and above wrap around in 16 bits
        u[:, :, c, :] = rng.standard_normal((4, 4, 2))
    y = ops.sparse_winograd_conv2d(x, ops.pack_kernel(u), debug_fill_nan=True)
    assert_close(y, *same_conv_reference(x, u), RTOL)


# ------------------------------------------------------------------------------ loader
def test_library_records_the_tensorflow_version():
    from tf_sparse_winograd.ops import build  # pylint: disable=import-outside-toplevel
    assert build.built_for_version(loader.library_path()) == tf.__version__
