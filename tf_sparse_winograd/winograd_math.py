"""Dense Winograd convolution F(m x m, 3 x 3) from TensorFlow ops: the training path.

Stride-1 3x3 correlation as Y = A^T [U . V] A per output tile, written so that every stage runs on
a fast TensorFlow kernel and there is no Python loop over tiles:

  1. input transform: the (zero-padded) input is cut into overlapping a x a tiles with stride m,
     as a = m + 2 strided slices (one per offset in the tile), and each tile d becomes
     V = B^T d B by the few additions and scalings the sparse B^T needs, rows then columns. XLA
     compiles the whole transform (`jit_compile`) into one pass over the input; its gradient is
     written by hand.
  2. element-wise stage: for each of the a^2 Winograd coordinates p, M_p = V_p U_p, a batched
     matrix product (tiles x in_channels) @ (in_channels x filters).
  3. output transform: Y = A^T M A in the same way (slices of M per coordinate, additions,
     compiled by XLA); the m x m outputs of each tile are put back in place and cropped.

XLA compiles the transforms once per input shape. All functions accept float32/float64/float16
tensors; the batch and spatial sizes may be known only at run time.
"""

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


def conv_output_shape(input_shape, padding, filters, layer_name):
    """NHWC output shape of a stride-1 3x3 convolution, for a layer's `compute_output_shape`.

    Raises a ValueError naming `layer_name` for a non-4-D shape or an input too small for 'valid'.
    """
    if len(input_shape) != 4:
        raise ValueError(f"{layer_name} expects 4-D NHWC inputs. Received: input_shape={input_shape}")
    height, width = (output_size(d, padding) for d in input_shape[1:3])
    if (height is not None and height <= 0) or (width is not None and width <= 0):
        raise ValueError(f"Inputs of spatial size {tuple(input_shape[1:3])} are too small for "
                         f"a 3x3 '{padding}' convolution. Received: input_shape={input_shape}")
    return (input_shape[0], height, width, filters)


def _linear_combination(coefficients, terms):
    """sum_k c_k * t_k over the nonzero c_k, without multiplying by +-1."""
    total = None
    for c, term in zip(coefficients, terms):
        if c == 0:
            continue
        scaled = term if c == 1 else (-term if c == -1 else term * c)
        total = scaled if total is None else total + scaled
    return total


class TileGrid:
    """Tiling of an NHWC input for F(m x m, 3 x 3): output size, tile counts and padding.

    Sizes are Python ints where the input's static shape has them (so that the XLA-compiled
    transforms see constants) and int32 scalar tensors otherwise.
    """

    def __init__(self, x, tile_size, padding):
        self.tile_size = transforms.check_tile_size(tile_size)
        self.padding = normalize_padding(padding)
        dynamic_shape = tf.shape(x)
        self.batch, height, width, _ = (
            static if static is not None else dynamic_shape[i]
            for i, static in enumerate(x.shape))
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


def _overlap_add(parts, axis, tile_size, length):
    """Adjoint of cutting tiles with stride m: sums parts[u][..., t, ...] into position t * m + u.

    `parts` are the a = m + 2 per-offset tensors with the tile axis at `axis`; the result has that
    axis replaced by one of `length` positions. Since a <= 2m, offset u = q * m + r lands in tile
    t + q at row r, so each r is one sum of at most two tile-shifted parts.
    """
    m = tile_size
    rank = len(parts[0].shape)
    merged = []
    for r in range(m):
        terms = []
        for q in (0, 1):
            if q * m + r < len(parts):
                paddings = [[0, 0]] * rank
                paddings[axis] = [q, 1 - q]
                terms.append(tf.pad(parts[q * m + r], paddings))
        merged.append(tf.add_n(terms))
    stacked = tf.stack(merged, axis=axis + 1)
    shape = tf.shape(stacked)
    merged_shape = tf.concat([shape[:axis], [-1], shape[axis + 2:]], axis=0)
    return tf.gather(tf.reshape(stacked, merged_shape), tf.range(length), axis=axis)


@tf.function(jit_compile=True)
def _input_transform_forward(padded, tile_size, tiles_h, tiles_w):
    """V = B^T d B of every a x a tile (stride m) of a padded NHWC input: (a^2, tiles, C).

    Strided slices and the few additions the sparse B^T needs, separably (rows, then columns),
    which XLA fuses into one pass; this measured 3-10x faster than the equivalent depthwise
    convolution followed by a transpose. Stacking the a^2 results on a new leading axis gives the
    coordinate-major layout of the batched products without a transpose.
    """
    BT, _, _ = transforms.transform_matrices(tile_size)
    a, m = tile_size + 2, tile_size
    rows = [padded[:, u:u + m * tiles_h:m] for u in range(a)]
    v = []
    for i in range(a):
        row_i = _linear_combination(BT[i], rows)
        columns = [row_i[:, :, u:u + m * tiles_w:m] for u in range(a)]
        v.extend(_linear_combination(BT[j], columns) for j in range(a))
    return tf.reshape(tf.stack(v), [a * a, -1, tf.shape(padded)[-1]])


@tf.function(jit_compile=True)
def _input_transform_backward(dv, tile_size, batch, tiles_h, tiles_w, padded_height, padded_width):
    """Gradient of `_input_transform_forward`: dd = sum over tiles of B dV B^T, overlap-added.

    Written by hand because the automatic gradient of a strided slice materialises a full-size
    zero tensor per slice (a^2 of them), which dominated the training step.
    """
    BT, _, _ = transforms.transform_matrices(tile_size)
    a = tile_size + 2
    channels = tf.shape(dv)[-1]
    dv = tf.unstack(tf.reshape(dv, [a * a, batch, tiles_h, tiles_w, channels]))
    row_grads = []
    for i in range(a):
        per_column = [_linear_combination(BT[:, u], dv[i * a:(i + 1) * a]) for u in range(a)]
        row_grads.append(_overlap_add(per_column, 2, tile_size, padded_width))
    per_row = [_linear_combination(BT[:, u], row_grads) for u in range(a)]
    return _overlap_add(per_row, 1, tile_size, padded_height)


def input_transform(x, grid):
    """V = B^T d B for every tile: returns (a^2, tiles, channels), tiles ordered (n, th, tw)."""

    @tf.custom_gradient
    def transform(padded):
        def gradient(dv):
            shape = tf.shape(padded)
            return _input_transform_backward(dv, grid.tile_size, grid.batch, grid.tiles_h,
                                             grid.tiles_w, shape[1], shape[2])

        return _input_transform_forward(padded, grid.tile_size, grid.tiles_h, grid.tiles_w), gradient

    return transform(tf.pad(x, grid.paddings))


def elementwise_product(v, winograd_kernel):
    """M_p = V_p @ U_p for every Winograd coordinate p: (a^2, T, C) x (a, a, C, K) -> (a^2, T, K)."""
    a = winograd_kernel.shape[0]
    u = tf.reshape(winograd_kernel, [a * a, tf.shape(winograd_kernel)[2], tf.shape(winograd_kernel)[3]])
    return tf.linalg.matmul(v, u)


@tf.function(jit_compile=True)
def _output_transform(m_tiles, tile_size, batch, tiles_h, tiles_w, out_height, out_width):
    """Y = A^T M A for every tile (slices and additions, fused by XLA), placed and cropped."""
    _, _, AT = transforms.transform_matrices(tile_size)
    a, m = tile_size + 2, tile_size
    filters = m_tiles.shape[-1] if m_tiles.shape[-1] is not None else tf.shape(m_tiles)[-1]
    coordinates = tf.unstack(tf.reshape(m_tiles, [a * a, batch, tiles_h, tiles_w, filters]))
    outputs = []
    for u in range(m):
        # S_u[j] = sum_i AT[u, i] M[i, j]
        s_u = [_linear_combination(AT[u], [coordinates[i * a + j] for i in range(a)])
               for j in range(a)]
        outputs.append(tf.stack([_linear_combination(AT[v], s_u) for v in range(m)], axis=3))
    y = tf.stack(outputs, axis=2)  # (batch, tiles_h, m, tiles_w, m, filters)
    y = tf.reshape(y, [batch, tiles_h * m, tiles_w * m, filters])
    return y[:, :out_height, :out_width, :]


def output_transform(m_tiles, grid):
    """Y = A^T M A for every tile, placed back into an NHWC image and cropped to the output size."""
    return _output_transform(m_tiles, grid.tile_size, grid.batch, grid.tiles_h, grid.tiles_w,
                             grid.out_height, grid.out_width)


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
