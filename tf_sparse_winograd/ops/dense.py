"""`sparse_dense_matmul`: the Python wrapper of the SparseWinograd>SparseDense op."""

import numpy as np
import tensorflow as tf

from tf_sparse_winograd.ops import loader
from tf_sparse_winograd.ops import packing


def _check_units(units):
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 0:
        raise ValueError(f"`units` must be an integer >= 0. Received: units={units!r}")
    return int(units)


def sparse_dense_matmul(x, row_ptr, col_idx, values, units, bias=None, activation=None,
                        implementation="op", debug_fill_nan=False, *, one_sample_gather=True,
                        kernel_layout="feature_rows"):
    """activation(x @ W + bias) for a sparse W (in_features x units) on the C++ op.

    W is given as `pack_dense_kernel` returns it for `kernel_layout`: 'unit_groups' (what
    `SparseDense.from_kernel` stores), which the op reads in place, or 'feature_rows' (CSR rows
    by input feature: row i of (`row_ptr`, `col_idx`, `values`) lists the nonzeros W[i, u] with
    their output units u), of which the op regroups a copy. The op checks the kernel once per
    graph node (and once per eager kernel), keyed by the tensors' buffers: pass the same
    constants or variables on every call, with `col_idx` already of its final dtype, so that no
    per-call conversion makes a new buffer.

    Args:
      x: [batch, in_features] float32.
      row_ptr: int32, non-decreasing from 0 to nnz: [in_features + 1] ('feature_rows') or
        [packing.dense_unit_group_rows(in_features, units) + 1] ('unit_groups').
      col_idx: 'feature_rows': [nnz] int16 or int32 output units in [0, units) (other integer
        types are cast); 'unit_groups': uint8 [nnz + 16], each feature's place in its block.
      values: [nnz] float32.
      units: the number of output features.
      bias: optional [units] float32.
      activation: None or 'relu', applied after the bias inside the op.
      implementation: 'op' (the C++ kernel) or 'reference' (pure TF: the kernel made dense
        and multiplied with tf.matmul; what `SparseDense` runs without the op library).
      debug_fill_nan: test-only: the op fills its output with NaN before computing.
      one_sample_gather: the op's tuning attribute, for experiments and tests: True (the
        default, the fastest measured) gathers the inputs of a batch of one sample (AVX-512);
        False keeps the sample in the vector lanes. Both compute the same result.
      kernel_layout: 'feature_rows' (the default, for kernels packed by hand) or 'unit_groups'.

    Returns:
      [batch, units] float32. With the op, only stored weights enter the sums: a NaN or Inf
      input reaches only the outputs whose weights for it are stored.
    """
    units = _check_units(units)
    if not isinstance(one_sample_gather, (bool, np.bool_)):
        raise ValueError("`one_sample_gather` must be a bool. "
                         f"Received: one_sample_gather={one_sample_gather!r}")
    packing.check_dense_kernel_layout(kernel_layout)
    if activation not in (None, "relu"):
        raise ValueError("`activation` must be None or 'relu'. "
                         f"Received: activation={activation!r}")
    if implementation == "reference":
        return _reference_matmul(x, row_ptr, col_idx, values, units, bias, activation,
                                 kernel_layout)
    if implementation != "op":
        raise ValueError("`implementation` must be 'op' or 'reference'. "
                         f"Received: implementation={implementation!r}")
    library = loader.load_op_library()
    col_idx = tf.convert_to_tensor(col_idx)
    if kernel_layout == "unit_groups":
        if col_idx.dtype != tf.uint8:
            raise TypeError("`col_idx` must be uint8 with kernel_layout='unit_groups'. "
                            f"Received: dtype={col_idx.dtype.name}")
    elif col_idx.dtype not in (tf.int16, tf.int32):
        if not col_idx.dtype.is_integer:
            raise TypeError("`col_idx` must be an integer tensor. "
                            f"Received: dtype={col_idx.dtype.name}")
        col_idx = tf.cast(col_idx, tf.int32)
    bias = tf.zeros([0], tf.float32) if bias is None else tf.convert_to_tensor(bias, tf.float32)
    return library.sparse_winograd_sparse_dense(
        input=tf.convert_to_tensor(x, tf.float32),
        row_ptr=tf.convert_to_tensor(row_ptr, tf.int32), col_idx=col_idx,
        values=tf.convert_to_tensor(values, tf.float32), bias=bias, units=units,
        activation="none" if activation is None else activation,
        debug_fill_nan=bool(debug_fill_nan), one_sample_gather=bool(one_sample_gather),
        kernel_layout=kernel_layout)


def _reference_matmul(x, row_ptr, col_idx, values, units, bias, activation, kernel_layout):
    x = tf.convert_to_tensor(x, tf.float32)
    in_features = tf.shape(x)[1]
    kernel = packing.unpack_dense_kernel(row_ptr, col_idx, values, in_features, units,
                                         kernel_layout)
    y = tf.matmul(x, kernel)
    if bias is not None:
        y = y + tf.convert_to_tensor(bias, tf.float32)
    return tf.nn.relu(y) if activation == "relu" else y
