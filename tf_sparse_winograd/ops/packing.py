"""Packing kernels into the sparse ops' layouts (and the conv kernel back), with TF ops.

Both layouts are CSR, built by one routine (`_csr_rows`: row pointers, then each row's column
indices in ascending order and its nonzero values); they differ in what a row is:

  * the convolution (`pack_kernel`): the a^2 matrices U[i, j] (filters x in_channels) of a
    Winograd-domain kernel are one CSR matrix of a^2 * filters rows; row p * filters + f
    (p = i * a + j) holds the nonzeros U[i, j, :, f], indexed by input channel;
  * the fully connected layer (`pack_dense_kernel`): a row per input feature of the
    (in_features, units) kernel, indexed by output unit, in int16 when the units fit.

Both work eagerly and inside tf.function (the number of nonzeros may be dynamic).
"""

import typing

import numpy as np
import tensorflow as tf


class PackedKernel(typing.NamedTuple):
    """A sparse Winograd kernel; every field is a tf.Tensor.

    Attributes:
      shape: int32 [3]: (a, in_channels, filters), a = tile_size + 2.
      row_ptr: int32 [a * a * filters + 1]: offsets of each row's nonzeros.
      col_idx: int32 [nnz]: input channel of each nonzero.
      values: float32 [nnz]: the nonzero weights.
    """
    shape: tf.Tensor
    row_ptr: tf.Tensor
    col_idx: tf.Tensor
    values: tf.Tensor

    @property
    def nnz(self):
        return tf.shape(self.values)[0]


def _csr_rows(rows):
    """(row_ptr int32 [rows + 1], col_idx int32 [nnz], values [nnz]) of a 2-D tensor's nonzeros,
    row by row, each row's columns ascending."""
    mask = tf.not_equal(rows, 0.0)
    counts = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    row_ptr = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(counts)], axis=0)
    where = tf.where(mask)  # Row-major: sorted by row, then column.
    return row_ptr, tf.cast(where[:, 1], tf.int32), tf.gather_nd(rows, where)


def pack_kernel(winograd_kernel):
    """Packs a dense (a, a, in_channels, filters) Winograd-domain kernel; keeps only nonzeros."""
    u = tf.convert_to_tensor(winograd_kernel)
    if u.shape.rank is not None and u.shape.rank != 4:
        raise ValueError("`winograd_kernel` must have shape (a, a, in_channels, filters). "
                         f"Received: winograd_kernel.shape={u.shape}")
    if u.shape[0] is not None and u.shape[1] is not None and u.shape[0] != u.shape[1]:
        raise ValueError("`winograd_kernel` must be square in its first two dimensions. "
                         f"Received: winograd_kernel.shape={u.shape}")
    u = tf.cast(u, tf.float32)
    dims = tf.shape(u, out_type=tf.int32)
    a, channels, filters = dims[0], dims[2], dims[3]
    # (a, a, C, F) -> (a * a * F, C): row p * F + f.
    rows = tf.reshape(tf.transpose(u, [0, 1, 3, 2]), [a * a * filters, channels])
    row_ptr, col_idx, values = _csr_rows(rows)
    return PackedKernel(shape=tf.stack([a, channels, filters]), row_ptr=row_ptr,
                        col_idx=col_idx, values=values)


def dense_index_dtype(units):
    """The column-index dtype of a packed FC kernel with `units` outputs: int16 when it fits."""
    return "int16" if units <= np.iinfo(np.int16).max else "int32"


def pack_dense_kernel(kernel, index_dtype=None):
    """The nonzeros of a dense (in_features, units) FC kernel as CSR rows by input feature.

    Returns (row_ptr, col_idx, values), tensors in the layout `sparse_dense_matmul` takes:
    row_ptr int32 [in_features + 1]; col_idx [nnz] output units, `index_dtype` (default
    `dense_index_dtype(units)`); values float32 [nnz], each row's in increasing unit order.
    """
    kernel = tf.convert_to_tensor(kernel, tf.float32)
    if kernel.shape.rank != 2:
        raise ValueError("`kernel` must be 2-D (in_features, units). "
                         f"Received: shape={kernel.shape}")
    row_ptr, col_idx, values = _csr_rows(kernel)
    units = kernel.shape[1]
    if index_dtype is None and units is None:
        raise ValueError("`index_dtype` is needed when the kernel's unit count is not static.")
    index_dtype = tf.as_dtype(index_dtype or dense_index_dtype(units))
    return row_ptr, tf.cast(col_idx, index_dtype), values


def unpack_kernel(packed):
    """The dense (a, a, in_channels, filters) float32 kernel of a PackedKernel."""
    packed = PackedKernel(*(tf.convert_to_tensor(t) for t in packed))
    a, channels, filters = packed.shape[0], packed.shape[1], packed.shape[2]
    num_rows = a * a * filters
    row_of_nonzero = tf.searchsorted(packed.row_ptr[1:], tf.range(tf.size(packed.col_idx)),
                                     side="right")
    indices = tf.stack([row_of_nonzero, packed.col_idx], axis=1)
    rows = tf.scatter_nd(indices, tf.cast(packed.values, tf.float32),
                         tf.stack([num_rows, channels]))
    return tf.transpose(tf.reshape(rows, tf.stack([a, a, filters, channels])), [0, 1, 3, 2])
