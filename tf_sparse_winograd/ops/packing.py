"""Packing a dense Winograd-domain kernel into the op's sparse layout, and back.

Layout: the a^2 matrices U[i, j] (filters x in_channels) are stored as one CSR matrix of
a^2 * filters rows; row p * filters + f (p = i * a + j) holds the nonzeros U[i, j, :, f], with
their input channels in `col_idx` (ascending) and the weights in `values`.
"""

import typing

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


def pack_kernel(winograd_kernel):
    """Packs a dense (a, a, in_channels, filters) Winograd-domain kernel; keeps only nonzeros.

    Works eagerly and inside tf.function (the number of nonzeros may be dynamic).
    """
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
    mask = tf.not_equal(rows, 0.0)
    counts = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    row_ptr = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(counts)], axis=0)
    where = tf.where(mask)  # row-major: sorted by row, then column
    col_idx = tf.cast(where[:, 1], tf.int32)
    values = tf.gather_nd(rows, where)
    shape = tf.stack([a, channels, filters])
    return PackedKernel(shape=shape, row_ptr=row_ptr, col_idx=col_idx, values=values)


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
