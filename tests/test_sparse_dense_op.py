"""SparseWinograd>SparseDense against a float64 numpy reference, its argument checks, its
once-per-node kernel cache, and a fuzz of malformed kernels (in a subprocess)."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import support
from support import ISAS
from support import use_isa
from tf_sparse_winograd import layers
from tf_sparse_winograd import ops

pytestmark = pytest.mark.usefixtures("isa_restored")  # tests force kernels with use_isa


def _random_case(rng, batch, in_features, units, density):
    kernel = (rng.normal(size=(in_features, units))
              * (rng.random((in_features, units)) < density)).astype(np.float32)
    x = rng.normal(size=(batch, in_features)).astype(np.float32)
    bias = rng.normal(size=units).astype(np.float32)
    return x, kernel, bias


def _check_against_reference(x, kernel, bias, relu, index_dtype, one_sample_gather=True):
    """index_dtype: of the 'feature_rows' layout, or uint8 for 'unit_groups'."""
    layout = "unit_groups" if index_dtype == np.uint8 else "feature_rows"
    row_ptr, col_idx, values = ops.pack_dense_kernel(kernel, index_dtype, kernel_layout=layout)
    y = ops.sparse_dense_matmul(x, row_ptr, col_idx, values, kernel.shape[1], bias=bias,
                                activation="relu" if relu else None, debug_fill_nan=True,
                                one_sample_gather=one_sample_gather, kernel_layout=layout)
    y = y.numpy()
    expected = x.astype(np.float64) @ kernel.astype(np.float64)
    bound = np.abs(x).astype(np.float64) @ np.abs(kernel).astype(np.float64)
    if bias is not None:
        expected += bias
        bound += np.abs(bias)
    if relu:
        expected = np.maximum(expected, 0.0)
    assert y.shape == expected.shape and y.dtype == np.float32
    assert not np.isnan(y).any(), "an output element was not written"
    np.testing.assert_array_less(np.abs(y - expected), 1e-5 * bound + 1e-30)


# Batches around the chunk of 32 samples and the vector widths (8, 16); features around the
# block of 256; units around the group of 64 and the vector widths.
SHAPES = [(1, 1, 1), (5, 17, 3), (16, 256, 64), (17, 257, 65), (33, 600, 130), (70, 255, 16),
          (2, 513, 63), (32, 40, 7), (1, 1000, 200)]


@pytest.mark.parametrize("isa,batch,in_features,units,density", support.fast_sample(
    [(isa,) + shape + (density,) for isa in ISAS for shape in SHAPES
     for density in (0.0, 0.1, 0.4, 1.0)], 5))
def test_op_matches_float64_reference(isa, batch, in_features, units, density):
    use_isa(isa)
    rng = np.random.default_rng(hash((batch, in_features, units, density)) % 2**32)
    x, kernel, bias = _random_case(rng, batch, in_features, units, density)
    _check_against_reference(x, kernel, bias, relu=False, index_dtype=np.int32)
    _check_against_reference(x, kernel, None, relu=True, index_dtype=np.int16)
    _check_against_reference(x, kernel, bias, relu=True, index_dtype=np.uint8)


@pytest.mark.parametrize("gather,in_features,units,density", support.fast_sample(
    [(gather,) + shape + (density,) for gather in (False, True)
     for shape in ((1, 1), (15, 3), (17, 5), (33, 64), (700, 130)) for density in (0.1, 0.4, 1.0)],
    4))
def test_one_sample_with_and_without_gathers(gather, in_features, units, density):
    """At batch 1 AVX-512 gathers 16 inputs per FMA (rows of 1-15 and 17+ nonzeros take its
    masked tail); one_sample_gather=False keeps the sample in the lanes instead."""
    use_isa("avx512")
    rng = np.random.default_rng(hash((in_features, units, density)) % 2**32)
    x, kernel, bias = _random_case(rng, 1, in_features, units, density)
    _check_against_reference(x, kernel, bias, relu=True, index_dtype=np.int16,
                             one_sample_gather=gather)
    _check_against_reference(x, kernel, None, relu=False, index_dtype=np.int32,
                             one_sample_gather=gather)
    _check_against_reference(x, kernel, bias, relu=False, index_dtype=np.uint8,
                             one_sample_gather=gather)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("batch,in_features,units", [(0, 5, 4), (3, 0, 4), (4, 6, 0)])
def test_empty_sizes(isa, batch, in_features, units):
    use_isa(isa)
    rng = np.random.default_rng(0)
    x, kernel, bias = _random_case(rng, batch, in_features, units, 0.5)
    _check_against_reference(x, kernel, bias, relu=True, index_dtype=np.int32)
    _check_against_reference(x, kernel, bias, relu=True, index_dtype=np.uint8)


@pytest.mark.parametrize("in_features,units", [(1, 1), (255, 63), (256, 64), (257, 65),
                                               (600, 130)])
def test_both_layouts_unpack_to_the_kernel_and_the_unit_groups_rows_are_explicit(in_features,
                                                                                  units):
    """The 'unit_groups' layout against its definition, row by row (the op reads it as is)."""
    rng = np.random.default_rng(in_features * 1000 + units)
    _, kernel, _ = _random_case(rng, 1, in_features, units, 0.3)
    for layout in ("feature_rows", "unit_groups"):
        packed = ops.pack_dense_kernel(kernel, kernel_layout=layout)
        unpacked = ops.unpack_dense_kernel(*packed, in_features, units, layout).numpy()
        np.testing.assert_array_equal(unpacked, kernel)
    row_ptr, col_idx, values = (t.numpy() for t in ops.pack_dense_kernel(
        kernel, kernel_layout="unit_groups"))
    blocks, groups = -(-in_features // 256), -(-units // 64)
    assert row_ptr.shape == (groups * blocks * 64 + 1,) and col_idx.dtype == np.uint8
    assert col_idx.shape == (values.size + 16,) and not col_idx[values.size:].any()
    for unit in range(groups * 64):
        for block in range(blocks):
            row = (unit // 64 * blocks + block) * 64 + unit % 64
            features = block * 256 + np.arange(256)
            features = features[features < in_features]
            nonzero = features[kernel[features, unit] != 0] if unit < units else features[:0]
            k = slice(row_ptr[row], row_ptr[row + 1])
            np.testing.assert_array_equal(col_idx[k], nonzero - block * 256)
            np.testing.assert_array_equal(values[k], kernel[nonzero, unit] if unit < units else [])


def _unit_groups_good():
    """A 3 -> 2 kernel in the 'unit_groups' layout: W[0, 0] = 1, W[2, 1] = 2."""
    row_ptr = np.full(65, 2, np.int32)
    row_ptr[0], row_ptr[1] = 0, 1
    col_idx = np.zeros(2 + 16, np.uint8)
    col_idx[1] = 2
    return (np.ones((2, 3), np.float32), row_ptr, col_idx, np.array([1.0, 2.0], np.float32), 2)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(row_ptr=a["row_ptr"][:-1]), "row_ptr must have ceil(units / 64)"),
    (lambda a: a.update(col_idx=a["col_idx"][:-1]), "col_idx must have len(values) + 16 = 18"),
    (lambda a: a.update(values=np.ones(3, np.float32)), "col_idx must have len(values) + 16"),
    (lambda a: a["col_idx"].__setitem__(1, 3), "last feature block must be below"),
    (lambda a: a["row_ptr"].__setitem__(2, 1), "Rows past the last unit must be empty"),
    (lambda a: a["row_ptr"].__setitem__(1, 3), "non-decreasing"),
    (lambda a: a.update(bias=np.ones(3, np.float32)), "bias must have 0 or units = 2"),
    (lambda a: a.update(col_idx=a["col_idx"].astype(np.int16)), "col_idx must be uint8"),
])
def test_bad_unit_groups_kernels_raise_invalid_argument(change, message):
    x, row_ptr, col_idx, values, units = _unit_groups_good()
    args = dict(x=x, row_ptr=row_ptr, col_idx=col_idx, values=values, units=units, bias=None)
    np.testing.assert_array_equal(_op(**args, kernel_layout="unit_groups"),
                                  [[1.0, 2.0], [1.0, 2.0]])
    # New arrays: the node's cache knows a kernel by its buffers (see the next test).
    args = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    change(args)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)) as info:
        _op(**args, kernel_layout="unit_groups")
    assert message in str(info.value)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("batch", [1, 5])
def test_a_unit_groups_kernel_changed_in_place_after_its_check_never_reads_out_of_bounds(isa,
                                                                                         batch):
    """An eager call may read a NumPy array's memory as is; the node checks a kernel once per
    buffer, so an array changed in place after a call is not checked again. The row pointers are
    copied when checked and any 8-bit column reads inside its block (zeros past in_features), so
    hostile changes give wrong numbers but no out-of-bounds read (the sanitizer run checks it)."""
    use_isa(isa)
    rng = np.random.default_rng(11)
    x, kernel, _ = _random_case(rng, batch, 300, 70, 0.3)
    # TensorFlow reads a 64-byte aligned NumPy input of an op in place.
    row_ptr, col_idx, values = (_aligned(t.numpy()) for t in ops.pack_dense_kernel(
        kernel, kernel_layout="unit_groups"))
    y = _op(x, row_ptr, col_idx, values, 70, kernel_layout="unit_groups").numpy()
    np.testing.assert_allclose(y, x @ kernel, rtol=1e-4, atol=1e-4)
    col_idx[:] = 255
    row_ptr[1:] = np.iinfo(np.int32).max
    # Checked again, these would be rejected: computing proves that the node used its copy.
    y = _op(x, row_ptr, col_idx, values, 70, kernel_layout="unit_groups").numpy()
    assert y.shape == (batch, 70)


def _aligned(array):
    """A copy of `array` whose data starts on a 64-byte boundary."""
    buffer = np.empty(array.nbytes + 64, np.uint8)
    start = -buffer.ctypes.data % 64
    out = buffer[start:start + array.nbytes].view(array.dtype)
    out[:] = array
    return out


def test_feature_rows_reject_uint8_indices():
    x, row_ptr, col_idx, values, units = _good()
    with pytest.raises(tf.errors.InvalidArgumentError, match="int16 or int32 in the 'feature_rows'"):
        _op(x, row_ptr, col_idx.astype(np.uint8), values, units)


def test_duplicate_entries_add_up():
    x = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
    row_ptr = np.array([0, 3, 4], np.int32)
    col_idx = np.array([1, 1, 0, 1], np.int32)
    values = np.array([0.5, 0.25, 2.0, 4.0], np.float32)
    y = ops.sparse_dense_matmul(x, row_ptr, col_idx, values, 2).numpy()
    kernel = np.array([[2.0, 0.75], [0.0, 4.0]])
    np.testing.assert_allclose(y, x @ kernel, rtol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_nan_and_inf_reach_the_outputs_whose_weights_are_stored(isa):
    use_isa(isa)
    rng = np.random.default_rng(3)
    x, kernel, _ = _random_case(rng, 20, 300, 70, 0.3)
    x[3, 7], x[11, 280] = np.nan, np.inf
    row_ptr, col_idx, values = ops.pack_dense_kernel(kernel, np.int32)
    nan_units, inf_units = kernel[7] != 0, kernel[280] != 0
    y = ops.sparse_dense_matmul(x, row_ptr, col_idx, values, 70).numpy()
    assert np.isnan(y[3, nan_units]).all() and np.isfinite(y[3, ~nan_units]).all()
    assert (~np.isfinite(y[11, inf_units])).all() and np.isfinite(y[11, ~inf_units]).all()
    assert np.isfinite(np.delete(y, [3, 11], axis=0)).all()
    # One sample at a time (the gather path on AVX-512).
    for sample, units in ((3, nan_units), (11, inf_units), (0, np.zeros(70, bool))):
        y = ops.sparse_dense_matmul(x[sample:sample + 1], row_ptr, col_idx, values, 70).numpy()
        assert (~np.isfinite(y[0, units])).all() and np.isfinite(y[0, ~units]).all()


def _op(x, row_ptr, col_idx, values, units, bias=None, kernel_layout="feature_rows"):
    library = ops.load_op_library()
    return library.sparse_winograd_sparse_dense(
        input=x, row_ptr=row_ptr, col_idx=col_idx, values=values,
        bias=np.zeros([0], np.float32) if bias is None else bias, units=units,
        kernel_layout=kernel_layout)


def _good():
    return (np.ones((2, 3), np.float32), np.array([0, 1, 1, 2], np.int32),
            np.array([0, 1], np.int32), np.array([1.0, 2.0], np.float32), 2)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(x=np.ones((2, 3, 1), np.float32)), "input must be rank 2"),
    (lambda a: a.update(x=np.ones((2, 4), np.float32)), "row_ptr must have in_features + 1"),
    (lambda a: a.update(row_ptr=np.array([[0, 1, 1, 2]], np.int32)), "row_ptr must be rank 1"),
    (lambda a: a.update(row_ptr=np.array([1, 1, 1, 2], np.int32)), "row_ptr[0] must be 0"),
    (lambda a: a.update(row_ptr=np.array([0, 2, 1, 2], np.int32)), "non-decreasing"),
    (lambda a: a.update(row_ptr=np.array([0, 1, 1, 1], np.int32)), "row_ptr[-1] must equal"),
    (lambda a: a.update(col_idx=np.array([0, 2], np.int32)), "col_idx must be in [0, units = 2)"),
    (lambda a: a.update(col_idx=np.array([-1, 0], np.int16)), "Received: col_idx[0]=-1"),
    (lambda a: a.update(values=np.ones(3, np.float32)), "values and col_idx must have the same"),
    (lambda a: a.update(bias=np.ones(3, np.float32)), "bias must have 0 or units = 2"),
])
def test_bad_arguments_raise_invalid_argument(change, message):
    x, row_ptr, col_idx, values, units = _good()
    args = dict(x=x, row_ptr=row_ptr, col_idx=col_idx, values=values, units=units, bias=None)
    _op(**args)  # the unchanged arguments are accepted
    change(args)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)) as info:
        _op(**args)
    assert message in str(info.value)


def test_wrapper_rejects_bad_units_and_activation():
    x, row_ptr, col_idx, values, _ = _good()
    for units in (-1, 2.0, True):
        with pytest.raises(ValueError, match="`units` must be an integer >= 0"):
            ops.sparse_dense_matmul(x, row_ptr, col_idx, values, units)
    with pytest.raises(ValueError, match="`activation` must be None or 'relu'"):
        ops.sparse_dense_matmul(x, row_ptr, col_idx, values, 2, activation="tanh")


def test_kernel_in_variables_updated_between_calls_is_seen():
    """The node keeps a regrouped copy of the values too: an update must not go unseen."""
    rng = np.random.default_rng(8)
    x, kernel, _ = _random_case(rng, 6, 300, 20, 0.4)
    row_ptr, col_idx, values = ops.pack_dense_kernel(kernel, np.int32)
    variables = [tf.Variable(row_ptr), tf.Variable(col_idx), tf.Variable(values)]

    @tf.function
    def run(x):
        return ops.sparse_dense_matmul(x, *variables, 20)

    np.testing.assert_allclose(run(x), x @ kernel, rtol=1e-4, atol=1e-4)
    variables[2].assign_add(np.ones_like(values))
    np.testing.assert_allclose(run(x), x @ (kernel + (kernel != 0)), rtol=1e-4, atol=1e-4)
    # A new sparsity pattern of the same size: the first feature's nonzeros moved to unit 0..
    shifted = kernel.copy()
    row_ptr2, col_idx2, values2 = ops.pack_dense_kernel(shifted, np.int32)
    col_idx2 = (col_idx2 + 1) % 20
    for variable, value in zip(variables, (row_ptr2, col_idx2, values2)):
        variable.assign(value)
    expected = np.zeros_like(kernel)
    rows = np.repeat(np.arange(300), np.diff(row_ptr2))
    np.add.at(expected, (rows, col_idx2), values2)
    np.testing.assert_allclose(run(x), x @ expected, rtol=1e-4, atol=1e-4)


def test_eager_kernels_of_one_shape_alternate_through_the_cache():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 70)).astype(np.float32)
    kernels = [_random_case(rng, 1, 70, 9, 0.5)[1] for _ in range(6)]
    packed = [[tf.constant(a) for a in ops.pack_dense_kernel(k, np.int32)] for k in kernels]
    for _ in range(2):
        for kernel, (row_ptr, col_idx, values) in zip(kernels, packed):
            y = ops.sparse_dense_matmul(x, row_ptr, col_idx, values, 9)
            np.testing.assert_allclose(y, x @ kernel, rtol=1e-5, atol=1e-5)


def test_sparse_dense_layer_on_rank_3_input_with_unfused_activation():
    rng = np.random.default_rng(10)
    _, kernel, bias = _random_case(rng, 1, 40, 12, 0.3)
    layer = layers.SparseDense.from_kernel(kernel, bias, activation="tanh")
    x = rng.normal(size=(3, 5, 40)).astype(np.float32)
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == (3, 5, 12)
    np.testing.assert_allclose(y, np.tanh(x @ kernel + bias), rtol=1e-5, atol=1e-6)


_FUZZ_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tf_sparse_winograd import ops
    library = ops.load_op_library()
    rng = np.random.default_rng(int(sys.argv[1]))
    counts = {"rejected": 0, "accepted": 0, "accepted unit_groups": 0}
    for _ in range(int(sys.argv[2])):
        in_features, units = int(rng.integers(0, 300)), int(rng.integers(0, 80))
        nnz = int(rng.integers(0, 400))
        row_ptr = np.sort(rng.integers(0, nnz + 1, in_features + 1)).astype(np.int32)
        row_ptr[0], row_ptr[-1] = 0, nnz
        col_idx = rng.integers(0, max(units, 1), nnz)
        values = rng.normal(size=nnz).astype(np.float32)
        bias = np.zeros(units if rng.random() < 0.5 else 0, np.float32)
        x = rng.normal(size=(int(rng.integers(0, 40)), in_features)).astype(np.float32)
        corruption = int(rng.integers(0, 8))
        if corruption == 0 and in_features > 0:
            row_ptr[rng.integers(1, in_features + 1)] = rng.integers(-5, nnz + 5)
        elif corruption == 1 and nnz > 0:
            col_idx[rng.integers(0, nnz)] = rng.choice([-1, units, units + 1000, -30000])
        elif corruption == 2:
            row_ptr = row_ptr[: rng.integers(0, len(row_ptr) + 1)]
        elif corruption == 3:
            values = values[: rng.integers(0, nnz + 1)]
        elif corruption == 4:
            bias = np.zeros(units + int(rng.integers(1, 3)), np.float32)
        elif corruption == 5:
            x = x.reshape(-1)
        elif corruption == 6:
            row_ptr[0] = int(rng.integers(1, 5))
        layout = "unit_groups" if rng.random() < 0.5 else "feature_rows"
        if layout == "unit_groups":  # the same corruptions, on rows by group, block and unit
            blocks = -(-in_features // 256)
            rows = -(-units // 64) * 64 * blocks
            unit_of_row = np.arange(rows) // (64 * blocks) * 64 + np.arange(rows) % 64
            valid = unit_of_row < units
            row_counts = np.zeros(rows, np.int64)
            if valid.any():
                row_counts[valid] = rng.multinomial(nnz, np.full(valid.sum(), 1 / valid.sum()))
            row_ptr = np.concatenate([[0], np.cumsum(row_counts)]).astype(np.int32)
            if corruption == 0 and rows > 0:
                row_ptr[rng.integers(1, rows + 1)] = rng.integers(-5, nnz + 5)
            elif corruption == 2:
                row_ptr = row_ptr[: rng.integers(0, len(row_ptr) + 1)]
            elif corruption == 6:
                row_ptr[0] = int(rng.integers(1, 5))
            col_idx = rng.integers(0, min(max(in_features, 1), 256), nnz + 16)
            if corruption == 1 and nnz > 0 and rng.random() < 0.5:
                col_idx[rng.integers(0, nnz)] = rng.integers(0, 256)
            elif corruption == 1:
                col_idx = col_idx[: rng.integers(0, nnz + 16)]
            dtype = np.uint8
        else:
            dtype = np.int16 if rng.random() < 0.5 else np.int32
        try:
            y = library.sparse_winograd_sparse_dense(
                input=x, row_ptr=row_ptr, col_idx=col_idx.astype(dtype), values=values,
                bias=bias, units=units, kernel_layout=layout)
            assert y.shape == (x.shape[0], units)
            counts["accepted"] += 1
            counts["accepted unit_groups"] += layout == "unit_groups"
        except (tf.errors.InvalidArgumentError, ValueError):
            counts["rejected"] += 1
    print("FUZZ=" + json.dumps(counts))
""")


@pytest.mark.slow
def test_malformed_kernels_are_rejected_and_never_crash():
    """Malformed kernels in a subprocess: an abort or segfault fails this test, not the suite.
    Uncorrupted kernels (and some corruptions that keep a kernel valid) must be accepted."""
    result = support.run_python(_FUZZ_SCRIPT, 2024, 2500, timeout=600)
    counts = json.loads(support.result_line(result, "FUZZ="))
    assert counts["rejected"] > 1000 and counts["accepted"] > 200, counts
    assert counts["accepted unit_groups"] > 100, counts
