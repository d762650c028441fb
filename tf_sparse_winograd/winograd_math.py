"""Dense Winograd convolution F(m x m, 3 x 3) from TensorFlow ops: the training path.

Stride-1 3x3 correlation as Y = A^T [U . V] A per output tile, written so that every stage runs on
a fast TensorFlow kernel and there is no Python loop over tiles:

  1. input transform: the (zero-padded) input is cut into overlapping a x a tiles with stride m and
     each tile d becomes V = B^T d B. Since every element of V is a fixed linear combination of the
     tile, this is one depthwise convolution with a^2 fixed a x a filters (the outer products of
     rows of B^T) and stride m.
  2. element-wise stage: for each of the a^2 Winograd coordinates p, M_p = V_p U_p, a batched
     matrix product (tiles x in_channels) @ (in_channels x filters).
  3. output transform: Y = A^T M A is a fixed (m^2 x a^2) matrix applied along the coordinate axis,
     one plain matmul; the m x m outputs of each tile are then put back in place and cropped.

All functions accept float32/float64/float16 tensors and shapes that are only known at run time.
"""

import numpy as np
import tensorflow as tf

from tf_sparse_winograd import transforms

PADDING_MODES = ("same", "valid")


def normalize_padding(padding, argument_name="padding"):
    """Returns 'same' or 'valid', accepting any case; raises a ValueError otherwise."""
    if isinstance(padding, str) and padding.lower() in PADDING_MODES:
        return padding.lower()
    raise ValueError(f"`{argument_name}` must be one of {PADDING_MODES} (any case). "
                     f"Received: {argument_name}={padding!r}")


def output_size(input_size, padding):
    """Output height or width of a stride-1 3x3 convolution; None stays None."""
    if input_size is None:
        return None
    return input_size if normalize_padding(padding) == "same" else input_size - 2


def _input_transform_filters(tile_size, channels, dtype):
    """Depthwise filters (a, a, channels, a^2): filter p = (i, j) is the outer product BT[i] BT[j]."""
    BT, _, _ = transforms.transform_matrices(tile_size)
    a = BT.shape[0]
    outer = np.einsum("iu,jv->uvij", BT, BT).reshape(a, a, 1, a * a)
    return tf.tile(tf.constant(outer, dtype=dtype), [1, 1, channels, 1])


def _output_transform_matrix(tile_size, dtype):
    """(m^2, a^2) matrix whose row (u, v) holds AT[u, i] * AT[v, j] at column (i, j)."""
    _, _, AT = transforms.transform_matrices(tile_size)
    m, a = AT.shape
    return tf.constant(np.einsum("ui,vj->uvij", AT, AT).reshape(m * m, a * a), dtype=dtype)


class TileGrid:
    """Tiling of an NHWC input for F(m x m, 3 x 3): output size, tile counts and padding.

    Sizes are int32 scalar tensors so that inputs with unknown spatial size work too.
    """

    def __init__(self, x, tile_size, padding):
        self.tile_size = transforms.check_tile_size(tile_size)
        self.padding = normalize_padding(padding)
        shape = tf.shape(x)
        self.batch, height, width, self.channels = shape[0], shape[1], shape[2], shape[3]
        border = 1 if self.padding == "same" else 0
        self.out_height = height + 2 * border - 2
        self.out_width = width + 2 * border - 2
        m = self.tile_size
        self.tiles_h = (self.out_height + m - 1) // m
        self.tiles_w = (self.out_width + m - 1) // m
        # Pad so that the tiles (stride m, size m + 2) exactly cover the padded input.
        self.paddings = [[0, 0],
                         [border, self.tiles_h * m + 2 - height - border],
                         [border, self.tiles_w * m + 2 - width - border],
                         [0, 0]]

    @property
    def num_tiles(self):
        return self.batch * self.tiles_h * self.tiles_w


def input_transform(x, grid):
    """V = B^T d B for every tile: returns (a^2, tiles, channels), tiles ordered (n, th, tw)."""
    a = grid.tile_size + 2
    channels = x.shape[-1] if x.shape[-1] is not None else grid.channels
    padded = tf.pad(x, grid.paddings)
    filters = _input_transform_filters(grid.tile_size, channels, x.dtype)
    stride = grid.tile_size
    v = tf.nn.depthwise_conv2d(padded, filters, strides=[1, stride, stride, 1], padding="VALID")
    v = tf.reshape(v, [grid.num_tiles, channels, a * a])
    return tf.transpose(v, [2, 0, 1])


def elementwise_product(v, winograd_kernel):
    """M_p = V_p @ U_p for every Winograd coordinate p: (a^2, T, C) x (a, a, C, K) -> (a^2, T, K)."""
    a = winograd_kernel.shape[0]
    u = tf.reshape(winograd_kernel, [a * a, tf.shape(winograd_kernel)[2], tf.shape(winograd_kernel)[3]])
    return tf.linalg.matmul(v, u)


def output_transform(m_tiles, grid):
    """Y = A^T M A for every tile, placed back into an NHWC image and cropped to the output size."""
    m = grid.tile_size
    a2 = (m + 2) ** 2
    filters = tf.shape(m_tiles)[-1]
    flat = tf.reshape(m_tiles, [a2, -1])
    y = tf.linalg.matmul(_output_transform_matrix(m, m_tiles.dtype), flat)
    y = tf.reshape(y, [m, m, grid.batch, grid.tiles_h, grid.tiles_w, filters])
    y = tf.transpose(y, [2, 3, 0, 4, 1, 5])
    y = tf.reshape(y, [grid.batch, grid.tiles_h * m, grid.tiles_w * m, filters])
    return y[:, :grid.out_height, :grid.out_width, :]


def winograd_conv2d(x, winograd_kernel, tile_size=2, padding="same", winograd_relu=False):
    """3x3 stride-1 convolution of NHWC `x` with a Winograd-domain kernel U of shape (a, a, C, K).

    With a kernel U = G g G^T this equals `tf.nn.conv2d(x, g, 1, padding)` up to rounding.
    `winograd_relu` applies ReLU to the transformed input tiles V before the products.
    """
    x = tf.convert_to_tensor(x)
    winograd_kernel = tf.convert_to_tensor(winograd_kernel, dtype=x.dtype)
    tile_size = transforms.check_tile_size(tile_size)
    a = tile_size + 2
    if winograd_kernel.shape.rank != 4 or tuple(winograd_kernel.shape[:2]) != (a, a):
        raise ValueError(f"`winograd_kernel` must have shape ({a}, {a}, in_channels, filters) for "
                         f"tile_size={tile_size}. Received: shape={winograd_kernel.shape}")
    if x.shape.rank != 4:
        raise ValueError(f"`x` must be a 4-D NHWC tensor. Received: shape={x.shape}")
    grid = TileGrid(x, tile_size, padding)
    v = input_transform(x, grid)
    if winograd_relu:
        v = tf.nn.relu(v)
    return output_transform(elementwise_product(v, winograd_kernel), grid)


def transformed_input(x, tile_size=2, padding="same", winograd_relu=False):
    """The Winograd-domain input V (a^2, tiles, channels) where the multiplies happen."""
    x = tf.convert_to_tensor(x)
    v = input_transform(x, TileGrid(x, tile_size, padding))
    return tf.nn.relu(v) if winograd_relu else v
