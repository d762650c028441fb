"""`sparse_winograd_conv2d`: the C++ op's Python wrapper and a pure-TF reference."""

import numpy as np
import tensorflow as tf

from tf_sparse_winograd import transforms
from tf_sparse_winograd import winograd_math
from tf_sparse_winograd.ops import loader
from tf_sparse_winograd.ops import packing

_ACTIVATIONS = (None, "relu")


def _check_arguments(tile_size, padding, activation):
    tile_size = transforms.check_tile_size(tile_size)
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"`padding` must be 'same' or 'valid'. Received: padding={padding!r}")
    if activation not in _ACTIVATIONS and not (isinstance(activation, str)
                                               and activation.lower() in ("relu", "none")):
        raise ValueError(f"`activation` must be None or 'relu'. Received: activation={activation!r}")
    activation = None if activation is None or activation.lower() == "none" else "relu"
    return tile_size, padding.upper(), activation


# The op's tuning attributes and the largest value each accepts; 0 lets the op choose (the fastest
# layout measured). Every value computes the same convolution.
TUNING_LIMITS = {"tile_vectors": 4, "filter_block": 4096, "units_per_thread": 1024}


def _check_tuning(tuning):
    for name, value in tuning.items():
        if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                or not 0 <= value <= TUNING_LIMITS[name]
                or name == "tile_vectors" and value == 3):
            allowed = ("0, 1, 2 or 4" if name == "tile_vectors"
                       else f"an integer in [0, {TUNING_LIMITS[name]}]")
            raise ValueError(f"`{name}` must be {allowed} (0: chosen by the op). "
                             f"Received: {name}={value!r}")
    return {name: int(value) for name, value in tuning.items()}


# How the op's products stage runs (its `products` attribute): 'auto' lets the op choose.
PRODUCTS = ("auto", "csr", "jit")


def sparse_winograd_conv2d(x, packed, bias=None, tile_size=2, padding="SAME",
                           winograd_relu=False, activation=None, max_pool_2x2=False,
                           implementation="op", debug_fill_nan=False, *, tile_vectors=0,
                           filter_block=0, units_per_thread=0, products="auto"):
    """3x3 stride-1 convolution as F(m x m, 3 x 3) Winograd with a sparse Winograd kernel.

    Args:
      x: NHWC float32 input.
      packed: a `PackedKernel` (see `pack_kernel`), or for implementation='reference' also a
        dense (a, a, in_channels, filters) Winograd kernel.
      bias: optional [filters] bias, added after the output transform.
      tile_size: m, 2, 4 or 6.
      padding: 'same' (pad 1 on each side) or 'valid' (no padding), any case.
      winograd_relu: ReLU on the transformed input tiles V = B^T d B before the products.
      activation: None or 'relu', applied after the bias.
      max_pool_2x2: max-pool the result over 2 x 2 windows with stride 2 ('valid': odd last
        rows and columns are dropped) inside the op, as `tf.nn.max_pool2d(y, 2, 2, 'VALID')`
        after it would, without writing the full-size output to memory and reading it back.
      implementation: 'op' (the C++ kernel) or 'reference' (pure TF, dense).
      debug_fill_nan: test-only: the op fills its output with NaN before computing.
      tile_vectors, filter_block, units_per_thread: the op's tuning attributes, for experiments
        and tests (see the op's documentation): 0, the default, lets the op choose the fastest
        layout measured. The op computes the same convolution with every value.
      products: how the op runs its products stage: 'auto' (the default: the op chooses;
        today the CSR loop, the faster path on whole networks), 'csr' (the CSR loop) or 'jit'
        (machine code generated for the kernel when a node first sees it, ~7 bytes per nonzero,
        whenever the CPU has AVX-512 or AVX2; faster for some layers alone, not in a network:
        docs/performance.md). The result is the same to float32 rounding.

    Returns:
      NHWC float32: (N, H, W, filters) for 'same', (N, H - 2, W - 2, filters) for 'valid'; with
      max_pool_2x2 the two spatial sizes halved, rounded down.
    """
    tile_size, padding, activation = _check_arguments(tile_size, padding, activation)
    tuning = _check_tuning(dict(tile_vectors=tile_vectors, filter_block=filter_block,
                                units_per_thread=units_per_thread))
    if not isinstance(products, str) or products not in PRODUCTS:
        raise ValueError(f"`products` must be one of {', '.join(map(repr, PRODUCTS))}. "
                         f"Received: products={products!r}")
    if not isinstance(max_pool_2x2, (bool, np.bool_)):
        raise ValueError(f"`max_pool_2x2` must be a bool. Received: max_pool_2x2={max_pool_2x2!r}")
    if implementation == "reference":
        return reference_conv2d(x, packed, bias, tile_size, padding, winograd_relu, activation,
                                max_pool_2x2)
    if implementation != "op":
        raise ValueError("`implementation` must be 'op' or 'reference'. "
                         f"Received: implementation={implementation!r}")
    if not isinstance(packed, packing.PackedKernel):
        raise TypeError("`packed` must be a PackedKernel (see pack_kernel). "
                        f"Received: {type(packed).__name__}")
    library = loader.load_op_library()
    x = tf.convert_to_tensor(x, tf.float32)
    bias = tf.zeros([0], tf.float32) if bias is None else tf.convert_to_tensor(bias, tf.float32)
    return library.sparse_winograd_conv2d(
        input=x, kernel_shape=tf.convert_to_tensor(packed.shape, tf.int32),
        row_ptr=tf.convert_to_tensor(packed.row_ptr, tf.int32),
        col_idx=tf.convert_to_tensor(packed.col_idx, tf.int32),
        values=tf.convert_to_tensor(packed.values, tf.float32), bias=bias,
        tile_size=tile_size, padding=padding, winograd_relu=bool(winograd_relu),
        activation="none" if activation is None else activation,
        max_pool_2x2=bool(max_pool_2x2), debug_fill_nan=bool(debug_fill_nan), products=products,
        **tuning)


def reference_conv2d(x, kernel, bias=None, tile_size=2, padding="SAME", winograd_relu=False,
                     activation=None, max_pool_2x2=False):
    """The same convolution in plain TF ops from a dense (or packed) Winograd kernel.

    It runs the training path's dense Winograd convolution (`winograd_math`), so it is the path
    the inference layers take when the op library cannot be loaded.
    """
    tile_size, padding, activation = _check_arguments(tile_size, padding, activation)
    if isinstance(kernel, packing.PackedKernel):
        kernel = packing.unpack_kernel(kernel)
    a = transforms.input_tile_size(tile_size)
    u = tf.convert_to_tensor(kernel, tf.float32)
    u = tf.reshape(u, tf.concat([[a, a], tf.shape(u)[2:]], 0))  # A static (a, a) for the checks.
    x = tf.convert_to_tensor(x, tf.float32)
    if padding == "VALID" and (x.shape[1] is not None and x.shape[1] < 3
                               or x.shape[2] is not None and x.shape[2] < 3):
        raise ValueError("With padding 'valid' the input must be at least 3 x 3. "
                         f"Received: x.shape={x.shape}")
    y = winograd_math.winograd_conv2d(x, u, tile_size, padding, winograd_relu)
    if bias is not None:
        y = y + tf.convert_to_tensor(bias, tf.float32)
    if activation == "relu":
        y = tf.nn.relu(y)
    if max_pool_2x2:
        y = _max_pool_2x2(y)
    return y


def _max_pool_2x2(y):
    """`tf.nn.max_pool2d(y, 2, 2, 'VALID')`, also for outputs of height or width 1 (empty)."""
    shape = tf.shape(y)
    pooled_h, pooled_w = shape[1] // 2, shape[2] // 2
    windows = tf.reshape(y[:, :2 * pooled_h, :2 * pooled_w],
                         [shape[0], pooled_h, 2, pooled_w, 2, shape[3]])
    pooled = tf.reduce_max(windows, axis=[2, 4])
    static = y.shape
    pooled.set_shape([static[0]] + [None if d is None else d // 2 for d in static[1:3]]
                     + [static[3]])
    return pooled
