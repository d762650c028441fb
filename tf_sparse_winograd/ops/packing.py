"""Packing kernels into the sparse ops' layouts (and the conv kernel back), with TF ops.

The layouts are CSR (row pointers, then each row's column indices in ascending order and its
nonzero values); they differ in what a row is:

  * the convolution (`pack_kernel`): the a^2 matrices U[i, j] (filters x in_channels) of a
    Winograd-domain kernel are one CSR matrix of a^2 * filters rows; row p * filters + f
    (p = i * a + j) holds the nonzeros U[i, j, :, f], indexed by input channel;
  * the fully connected layer (`pack_dense_kernel`), in one of two layouts:
    - 'unit_groups', the one the SparseDense op reads in place (what `SparseDense.from_kernel`
      stores): the units in groups of DENSE_UNIT_GROUP, the features in blocks of
      DENSE_FEATURE_BLOCK, a row per (group, block, unit of the group) holding the unit's weights
      for the block's features, each indexed by its place in the block (uint8), then
      DENSE_INDEX_PADDING bytes of padding: 5 bytes per nonzero;
    - 'feature_rows': a row per input feature, indexed by output unit (int16 when the units
      fit): 6 bytes per nonzero, and the op regroups a copy of it. SparseDense layers saved
      before 'unit_groups' existed hold it.

All work eagerly and inside tf.function (the number of nonzeros may be dynamic).
"""

import typing

import numpy as np
import tensorflow as tf


# The FC kernel's 'unit_groups' layout: kDenseUnitGroup, kDenseFeatureBlock and
# kDenseIndexPadding of ops/cc/kernels/sparse_dense.h.
DENSE_UNIT_GROUP = 64
DENSE_FEATURE_BLOCK = 256
DENSE_INDEX_PADDING = 16
DENSE_KERNEL_LAYOUTS = ("unit_groups", "feature_rows")


def check_dense_kernel_layout(layout):
    """`layout` if it names an FC kernel layout, else a ValueError naming the argument."""
    if layout not in DENSE_KERNEL_LAYOUTS:
        raise ValueError(f"`kernel_layout` must be one of {DENSE_KERNEL_LAYOUTS}. "
                         f"Received: kernel_layout={layout!r}")
    return layout


def dense_unit_group_rows(in_features, units):
    """Rows of an (in_features, units) FC kernel in the 'unit_groups' layout (its row_ptr has one
    more element): DENSE_UNIT_GROUP rows per group of units and block of features."""
    groups = -(-units // DENSE_UNIT_GROUP)
    blocks = -(-in_features // DENSE_FEATURE_BLOCK)
    return groups * DENSE_UNIT_GROUP * blocks


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


def pack_dense_kernel(kernel, index_dtype=None, kernel_layout="feature_rows"):
    """The nonzeros of a dense (in_features, units) FC kernel in one of the op's layouts.

    Returns (row_ptr, col_idx, values), tensors in the layout `sparse_dense_matmul` takes with
    the same `kernel_layout` (see the module docstring):
      * 'feature_rows': row_ptr int32 [in_features + 1]; col_idx [nnz] output units, in
        `index_dtype` (default `dense_index_dtype(units)`); values float32 [nnz], each row's in
        increasing unit order;
      * 'unit_groups': row_ptr int32 [dense_unit_group_rows(in_features, units) + 1]; col_idx
        uint8 [nnz + DENSE_INDEX_PADDING], each feature's place in its block (padding 0);
        values float32 [nnz], each row's in increasing feature order. `index_dtype` must be
        None or uint8.
    """
    check_dense_kernel_layout(kernel_layout)
    kernel = tf.convert_to_tensor(kernel, tf.float32)
    if kernel.shape.rank != 2:
        raise ValueError("`kernel` must be 2-D (in_features, units). "
                         f"Received: shape={kernel.shape}")
    if kernel_layout == "unit_groups":
        if index_dtype is not None and tf.as_dtype(index_dtype) != tf.uint8:
            raise ValueError("`index_dtype` must be None or uint8 with kernel_layout="
                             f"'unit_groups'. Received: index_dtype={index_dtype!r}")
        return _unit_group_rows(kernel)
    row_ptr, col_idx, values = _csr_rows(kernel)
    units = kernel.shape[1]
    if index_dtype is None and units is None:
        raise ValueError("`index_dtype` is needed when the kernel's unit count is not static.")
    index_dtype = tf.as_dtype(index_dtype or dense_index_dtype(units))
    return row_ptr, tf.cast(col_idx, index_dtype), values


def _unit_group_rows(kernel):
    """pack_dense_kernel's 'unit_groups' layout: the nonzeros in row-major order, stably sorted by
    their row (group, block, unit of the group), so each row's features stay ascending."""
    where = tf.where(tf.not_equal(kernel, 0.0))  # Row-major: by feature, then unit.
    feature, unit = where[:, 0], where[:, 1]
    dims = tf.shape(kernel, out_type=tf.int64)
    blocks = (dims[0] + DENSE_FEATURE_BLOCK - 1) // DENSE_FEATURE_BLOCK
    groups = (dims[1] + DENSE_UNIT_GROUP - 1) // DENSE_UNIT_GROUP
    row = ((unit // DENSE_UNIT_GROUP * blocks + feature // DENSE_FEATURE_BLOCK)
           * DENSE_UNIT_GROUP + unit % DENSE_UNIT_GROUP)
    order = tf.argsort(row, stable=True)
    rows = tf.cast(groups * blocks * DENSE_UNIT_GROUP, tf.int32)
    counts = tf.math.bincount(tf.cast(row, tf.int32), minlength=rows, maxlength=rows)
    row_ptr = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(counts)], axis=0)
    places = tf.cast(tf.gather(feature % DENSE_FEATURE_BLOCK, order), tf.uint8)
    col_idx = tf.concat([places, tf.zeros([DENSE_INDEX_PADDING], tf.uint8)], axis=0)
    return row_ptr, col_idx, tf.gather(tf.gather_nd(kernel, where), order)


def unpack_dense_kernel(row_ptr, col_idx, values, in_features, units, kernel_layout):
    """The dense (in_features, units) float32 kernel of a packed FC kernel (duplicates add up)."""
    check_dense_kernel_layout(kernel_layout)
    row_ptr = tf.convert_to_tensor(row_ptr, tf.int32)
    values = tf.convert_to_tensor(values, tf.float32)
    col_idx = tf.cast(tf.convert_to_tensor(col_idx), tf.int32)[:tf.size(values)]
    rows = tf.repeat(tf.range(tf.size(row_ptr) - 1), row_ptr[1:] - row_ptr[:-1])
    if kernel_layout == "unit_groups":
        blocks = (in_features + DENSE_FEATURE_BLOCK - 1) // DENSE_FEATURE_BLOCK
        group = rows // (blocks * DENSE_UNIT_GROUP)
        block = rows // DENSE_UNIT_GROUP % blocks
        features = block * DENSE_FEATURE_BLOCK + col_idx
        units_of = group * DENSE_UNIT_GROUP + rows % DENSE_UNIT_GROUP
    else:
        features, units_of = rows, col_idx
    return tf.scatter_nd(tf.stack([features, units_of], axis=1), values,
                         tf.stack([in_features, units]))


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
