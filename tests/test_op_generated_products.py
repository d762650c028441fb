"""Tests of the generated products (products='jit') of SparseWinograd>Conv2D.

The same tests as every kernel gets: float64 references with NaN-prefilled outputs at every tile
size, channel and filter counts that are not multiples of the code's blocks (64 filters per
block of code, up to 30 per register block with AVX-512 and 13 with AVX2; V loads with 8-bit
displacements up to 256 channels), empty rows, empty register blocks and empty blocks of code,
rows with repeated or unordered columns, NaN and Inf, many threads on one node, and the same
results from the generated code and the CSR loop on the same kernel. The fuzz test
(test_op_fuzz.py) runs its well-formed kernels through both paths too.
"""

import concurrent.futures

import numpy as np
import pytest
import tensorflow as tf

from tf_sparse_winograd import ops
from test_op import (RTOL, _grouped_rows_kernel, _kernel_of_rows, _mixed_rows_kernel,
                     assert_close, numpy_winograd_conv2d, random_winograd_kernel, relative_error,
                     same_conv_reference)
from support import use_isa

# The instruction sets with generated products.
JIT_ISAS = ("avx2", "avx512")
# Generated code and CSR loop sum the same products in other orders: both within float32
# rounding of the float64 result, so of each other (relative to the absolute-value bound).
PATHS_RTOL = 2 * RTOL


pytestmark = pytest.mark.usefixtures("isa_restored")  # tests force kernels with use_isa


def conv(x, packed, products, **kwargs):
    return ops.sparse_winograd_conv2d(x, packed, products=products, debug_fill_nan=True,
                                      **kwargs).numpy()


def check_both_paths(x, u_or_packed, tile_size, what, bias=None, padding="SAME",
                     winograd_relu=False, activation=None, max_pool_2x2=False, dense=None):
    """Runs the op with products 'jit' and 'csr' on one kernel; both must match the float64
    reference (NaN-prefilled outputs) and each other."""
    if isinstance(u_or_packed, ops.PackedKernel):
        packed, u = u_or_packed, dense
    else:
        packed, u = ops.pack_kernel(u_or_packed), u_or_packed
    kwargs = dict(bias=bias, tile_size=tile_size, padding=padding, winograd_relu=winograd_relu,
                  activation=activation, max_pool_2x2=max_pool_2x2)
    jit = conv(x, packed, "jit", **kwargs)
    csr = conv(x, packed, "csr", **kwargs)
    expected = numpy_winograd_conv2d(x, u, bias, tile_size, padding, winograd_relu, activation)
    bound = numpy_winograd_conv2d(x, u, bias, tile_size, padding, winograd_relu, activation,
                                  absolute=True)
    if max_pool_2x2:
        from test_op import numpy_max_pool_2x2  # pylint: disable=import-outside-toplevel
        expected, bound = numpy_max_pool_2x2(expected), numpy_max_pool_2x2(bound)
    assert_close(jit, expected, bound, RTOL, "jit " + what)
    assert_close(csr, expected, bound, RTOL, "csr " + what)
    assert_close(jit, csr.astype(np.float64), bound, PATHS_RTOL, "jit vs csr " + what)
    return jit


# Shapes around the code's block sizes: filters 1, 29/30/31 (one AVX-512 register block and
# one more), 63/64/65 and 130 (blocks of code and a partial one), channels 1, 3, 17, 130 and
# 300 (beyond 256: V loads with 32-bit displacements).
GRID = [
    # (h, w, tile, cin, cout, batch, density)
    (5, 7, 2, 3, 1, 2, 0.7),
    (9, 6, 4, 17, 29, 3, 0.4),
    (13, 11, 6, 17, 31, 2, 0.4),
    (8, 8, 2, 1, 65, 1, 1.0),
    (10, 9, 4, 130, 63, 1, 0.1),
    (7, 7, 6, 64, 64, 2, 0.25),
    (6, 9, 2, 300, 30, 1, 0.3),
    (9, 9, 4, 33, 130, 2, 0.4),
    (17, 4, 2, 8, 150, 3, 0.05),
]


@pytest.mark.parametrize("isa", JIT_ISAS)
@pytest.mark.parametrize("index", range(len(GRID)))
def test_generated_products_match_float64_and_the_csr_loop(isa, index):
    use_isa(isa)
    h, w, tile, cin, cout, batch, density = GRID[index]
    rng = np.random.default_rng(100 + index)
    x = rng.standard_normal((batch, h, w, cin)).astype(np.float32)
    u = random_winograd_kernel(rng, tile, cin, cout, density)
    bias = rng.standard_normal(cout).astype(np.float32) if index % 2 else None
    check_both_paths(x, u, tile, f"{isa} {GRID[index]}", bias=bias,
                     padding="VALID" if index % 3 == 2 else "SAME",
                     winograd_relu=index % 2 == 0, activation="relu" if index % 4 == 1 else None)


@pytest.mark.parametrize("isa", JIT_ISAS)
@pytest.mark.parametrize("tile_size", [2, 4, 6])
def test_empty_rows_register_blocks_and_blocks_of_code(isa, tile_size):
    # Filters 0-63 (the first block of code): at even coordinates everything is empty; at odd
    # ones only filters 31-40 have weights (the first register blocks empty). Filters 64-99: the
    # second block, empty but for filter 99 at coordinate 0. Some rows empty everywhere.
    use_isa(isa)
    rng = np.random.default_rng(7 + tile_size)
    a = tile_size + 2
    channels, filters = 19, 100
    u = np.zeros((a, a, channels, filters), np.float32)
    for p in range(1, a * a, 2):
        i, j = divmod(p, a)
        u[i, j, :, 31:41] = rng.standard_normal((channels, 10)) * (rng.random((channels, 10)) < 0.5)
    u[0, 0, 3, 99] = 2.5
    x = rng.standard_normal((2, 9, 11, channels)).astype(np.float32)
    check_both_paths(x, u, tile_size, f"{isa} tile {tile_size}")
    # All zero: the output is the bias alone.
    bias = rng.standard_normal(filters).astype(np.float32)
    y = conv(x, ops.pack_kernel(np.zeros_like(u)), "jit", bias=bias, tile_size=tile_size)
    np.testing.assert_array_equal(y, np.broadcast_to(bias, y.shape))


@pytest.mark.parametrize("isa", JIT_ISAS)
def test_rows_with_repeated_unordered_and_complete_columns(isa):
    # Repeated columns add up; a row's columns need not be sorted (the code sorts them); complete
    # rows are just long rows to the generated code.
    use_isa(isa)
    rng = np.random.default_rng(31)
    x = rng.standard_normal((3, 9, 10, 19)).astype(np.float32)
    packed, u = _mixed_rows_kernel(rng, 4, 19, 29)
    check_both_paths(x, packed, 2, f"{isa} mixed rows", dense=u)
    packed, u = _grouped_rows_kernel(rng, 4, 21, 30)
    x = rng.standard_normal((3, 9, 10, 21)).astype(np.float32)
    check_both_paths(x, packed, 2, f"{isa} grouped rows", dense=u)


@pytest.mark.parametrize("isa", JIT_ISAS)
def test_fused_pool_bias_and_relu_with_generated_products(isa):
    use_isa(isa)
    rng = np.random.default_rng(41)
    x = rng.standard_normal((2, 12, 14, 24)).astype(np.float32)
    u = random_winograd_kernel(rng, 4, 24, 70, 0.4)
    bias = rng.standard_normal(70).astype(np.float32)
    check_both_paths(x, u, 4, f"{isa} pool", bias=bias, activation="relu", max_pool_2x2=True)


@pytest.mark.parametrize("isa", JIT_ISAS)
def test_nan_and_inf_reach_the_same_outputs_on_both_paths(isa):
    use_isa(isa)
    rng = np.random.default_rng(43)
    x = rng.standard_normal((2, 8, 8, 20)).astype(np.float32)
    u = random_winograd_kernel(rng, 2, 20, 40, 0.5)
    x[0, 3, 4, 7] = np.nan
    x[1, 1, 1, 2] = np.inf
    packed = ops.pack_kernel(u)
    values = packed.values.numpy()
    values[5] = np.nan
    packed = packed._replace(values=tf.constant(values))
    jit, csr = conv(x, packed, "jit"), conv(x, packed, "csr")
    np.testing.assert_array_equal(np.isnan(jit), np.isnan(csr))
    assert np.isnan(jit).any() and not np.isnan(jit).all()
    finite = np.isfinite(csr)
    np.testing.assert_allclose(jit[finite], csr[finite], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("tile_vectors", [1, 2, 4])
def test_tile_vectors_and_threads_give_the_same_generated_result(tile_vectors):
    # The code loops over the vectors of tiles of a block: every block size gives identical
    # outputs (the same sums in the same order), on many threads at once on one node.
    use_isa("avx512")
    rng = np.random.default_rng(51)
    x = rng.standard_normal((4, 16, 16, 40)).astype(np.float32)
    u = random_winograd_kernel(rng, 4, 40, 96, 0.3)
    packed = ops.pack_kernel(u)
    expected, bound = same_conv_reference(x, u, tile_size=4)
    reference = conv(x, packed, "jit", tile_size=4, tile_vectors=1)
    assert_close(reference, expected, bound, RTOL)
    fn = tf.function(lambda x: ops.sparse_winograd_conv2d(
        x, packed, tile_size=4, products="jit", tile_vectors=tile_vectors, debug_fill_nan=True))

    def worker(_):
        for _ in range(5):
            np.testing.assert_array_equal(fn(x).numpy(), reference)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(worker, i) for i in range(4)]:
            future.result()


def test_generated_code_follows_a_variable_assigned_new_values():
    # The code holds the values in its own order: a kernel whose values change (same indices)
    # gets new code, and its results follow.
    use_isa("avx512")
    rng = np.random.default_rng(61)
    x = rng.standard_normal((2, 6, 6, 8)).astype(np.float32)
    u = random_winograd_kernel(rng, 2, 8, 5, 0.5)
    packed = ops.pack_kernel(u)
    values = tf.Variable(packed.values)
    fn = tf.function(lambda x: ops.sparse_winograd_conv2d(
        x, packed._replace(values=values.read_value()), products="jit", debug_fill_nan=True))
    for scale in (1.0, -2.0, 1.0):
        values.assign(packed.values * scale)
        for _ in range(2):
            assert_close(fn(x), *same_conv_reference(x, u * scale), RTOL, f"scale {scale}")


def test_many_eager_kernels_through_the_cache_of_generated_code():
    use_isa("avx512")
    rng = np.random.default_rng(62)
    x = rng.standard_normal((1, 5, 7, 6)).astype(np.float32)
    kernels = [_kernel_of_rows(rng, 4, 6, 4,
                               lambda p, f: np.sort(rng.choice(6, 3, replace=False)))
               for _ in range(6)]
    for _ in range(2):
        for packed, u in kernels:
            assert_close(conv(x, packed, "jit"), *same_conv_reference(x, u), RTOL)


def test_auto_is_the_default_and_products_must_be_a_known_path():
    rng = np.random.default_rng(63)
    x = rng.standard_normal((1, 6, 6, 3)).astype(np.float32)
    u = random_winograd_kernel(rng, 2, 3, 4, 0.5)
    packed = ops.pack_kernel(u)
    y = ops.sparse_winograd_conv2d(x, packed, debug_fill_nan=True).numpy()
    assert relative_error(y, *same_conv_reference(x, u)) <= RTOL
    with pytest.raises(ValueError, match="`products` must be .* Received: products='gen'"):
        ops.sparse_winograd_conv2d(x, packed, products="gen")
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError), match="products"):
        ops.load_op_library().sparse_winograd_conv2d(
            input=x, kernel_shape=packed.shape, row_ptr=packed.row_ptr, col_idx=packed.col_idx,
            values=packed.values, bias=np.zeros(0, np.float32), products="gen")


def test_generic_kernel_runs_the_csr_loop_under_products_jit():
    # No generated code for the portable kernel: 'jit' falls back to the CSR loop.
    use_isa("generic")
    rng = np.random.default_rng(64)
    x = rng.standard_normal((2, 7, 9, 11)).astype(np.float32)
    u = random_winograd_kernel(rng, 4, 11, 13, 0.4)
    assert_close(conv(x, ops.pack_kernel(u), "jit", tile_size=4),
                 *same_conv_reference(x, u, tile_size=4), RTOL)


def generated_code_bytes():
    """Bytes of generated code alive in this process (the op library's counter)."""
    import ctypes  # pylint: disable=import-outside-toplevel
    from tf_sparse_winograd.ops import loader  # pylint: disable=import-outside-toplevel
    ops.load_op_library()
    library = ctypes.CDLL(loader.library_path())
    library.tfsw_generated_code_bytes.restype = ctypes.c_int64
    return library.tfsw_generated_code_bytes()


def test_code_is_made_once_for_nodes_sharing_a_kernel_and_freed_with_them():
    import gc  # pylint: disable=import-outside-toplevel
    use_isa("avx512")
    rng = np.random.default_rng(71)
    x = rng.standard_normal((2, 8, 8, 64)).astype(np.float32)
    u = random_winograd_kernel(rng, 4, 64, 128, 0.4)
    expected, bound = same_conv_reference(x, u, tile_size=4)
    before = generated_code_bytes()

    def make():
        packed = ops.pack_kernel(u)  # one set of constants, read by three nodes
        return tf.function(lambda x: [ops.sparse_winograd_conv2d(
            x * (1.0 + i), packed, tile_size=4, products="jit", debug_fill_nan=True)
            for i in range(3)])

    fn = make()
    for i, y in enumerate(fn(x)):
        assert_close(y, expected * (1 + i), bound * (1 + i), RTOL)
    one_copy = generated_code_bytes() - before
    # 36 coordinates x 128 filters x 64 channels x 0.4: ~118000 nonzeros of 7 bytes each.
    assert 0.7e6 < one_copy < 1.6e6, one_copy
    fn2 = make()  # another graph, other constants: its own code
    fn2(x)
    assert generated_code_bytes() - before >= 2 * one_copy * 0.99
    del fn, fn2
    gc.collect()
    assert generated_code_bytes() == before


def test_auto_runs_the_csr_loop_and_jit_generates_code():
    # 'auto' runs the CSR loop, the faster path on whole networks (sparse_products_jit.h): no
    # code for a VGG-nagadomi layer at batch 32, nor for a dense or block-pruned kernel; 'jit'
    # makes code for the same kernel.
    use_isa("avx512")
    rng = np.random.default_rng(72)
    x = rng.standard_normal((32, 8, 8, 128)).astype(np.float32)
    sparse = random_winograd_kernel(rng, 4, 128, 256, 0.4)
    dense = rng.standard_normal((6, 6, 128, 256)).astype(np.float32)
    blocked = dense * np.repeat(rng.random((6, 6, 128, 64)) < 0.4, 4, axis=3)
    before = generated_code_bytes()
    for u in (sparse, dense, blocked):
        packed = ops.pack_kernel(u)
        fn = tf.function(lambda x, packed=packed: ops.sparse_winograd_conv2d(
            x, packed, tile_size=4, debug_fill_nan=True))
        expected, bound = same_conv_reference(x[:2], u, tile_size=4)
        assert_close(fn(x)[:2], expected, bound, RTOL)
        assert generated_code_bytes() == before
    packed = ops.pack_kernel(sparse)
    fn = tf.function(lambda x: ops.sparse_winograd_conv2d(x, packed, tile_size=4,
                                                          products="jit", debug_fill_nan=True))
    expected, bound = same_conv_reference(x[:2], sparse, tile_size=4)
    assert_close(fn(x)[:2], expected, bound, RTOL)
    assert generated_code_bytes() > before
