"""`WinogradConv2D`: a 3x3 stride-1 convolution whose trainable kernel lives in the Winograd domain.

The layer keeps no spatial kernel. Its only kernel variable, `winograd_kernel`, has shape
(a, a, in_channels, filters) with a = tile_size + 2, and is trained by backpropagation through the
inverse (output) transform, as in Liu et al., "Efficient Sparse-Winograd CNNs" (ICLR 2018). That is
what makes pruning in the Winograd domain possible: a zero in `winograd_kernel` is a multiply saved.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_winograd import transforms
from tf_sparse_winograd import winograd_math
from tf_sparse_winograd.pruning import prunable_layer

_PACKAGE = "tf_sparse_winograd"
KERNEL_GRADIENT_SCALES = ("transform", None)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WinogradKernelInitializer(keras.initializers.Initializer):
    """Samples a spatial 3x3 kernel g with `spatial_initializer` and returns U = G g G^T.

    The spatial initializer sees the spatial shape (3, 3, in, out), so its fan-in/fan-out (and
    therefore its variance) are those of a Conv2D, and the layer's initial outputs have exactly the
    distribution a Conv2D with the same initializer would give.
    """

    def __init__(self, spatial_initializer="glorot_uniform", tile_size=2):
        self.spatial_initializer = keras.initializers.get(spatial_initializer)
        self.tile_size = transforms.check_tile_size(tile_size)

    def __call__(self, shape, dtype=None):
        a = transforms.input_tile_size(self.tile_size)
        if len(shape) != 4 or tuple(shape[:2]) != (a, a):
            raise ValueError(f"WinogradKernelInitializer(tile_size={self.tile_size}) builds kernels "
                             f"of shape ({a}, {a}, in, out). Received: shape={tuple(shape)}")
        spatial_shape = (transforms.KERNEL_SIZE, transforms.KERNEL_SIZE) + tuple(shape[2:])
        g = self.spatial_initializer(spatial_shape, dtype="float32")
        _, G, _ = transforms.transform_matrices(self.tile_size, np.float32)
        u = tf.einsum("iu,uvcf,jv->ijcf", G, tf.cast(g, tf.float32), G)
        return tf.cast(u, dtype or "float32")

    def get_config(self):
        return {"spatial_initializer": keras.initializers.serialize(self.spatial_initializer),
                "tile_size": self.tile_size}


def _require_square(value, expected, argument_name, reason):
    """Accepts `expected` or (expected, expected), the only value Winograd F(m x m, 3 x 3) supports."""
    normalized = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(normalized, (tuple, list)) or tuple(normalized) != (expected, expected):
        raise ValueError(f"WinogradConv2D supports only {argument_name}={expected} ({reason}). "
                         f"Received: {argument_name}={value!r}")
    return expected


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WinogradConv2D(keras.layers.Layer):
    """3x3 stride-1 2-D convolution computed as Winograd F(m x m, 3 x 3), trained in that domain.

    Args:
      filters: number of output channels, a positive int.
      kernel_size: must be 3 (or (3, 3)); kept for Conv2D compatibility.
      tile_size: m, the output tile side: 2, 4 or 6. Larger tiles save more multiplies but are
        numerically less accurate (see docs/performance.md for measured errors).
      padding: 'same' or 'valid'.
      strides, dilation_rate: must be 1; kept for Conv2D compatibility.
      use_bias: whether to add a bias.
      activation: activation applied to the output (any Keras activation).
      winograd_relu: apply ReLU to the transformed input tiles V = B^T d B (the paper's Figure 1c),
        i.e. the previous layer's ReLU moved into this layer's Winograd domain.
      kernel_gradient_scale: 'transform' (default) multiplies the gradient of `winograd_kernel`
        by |G_i|^2 |G_j|^2 per Winograd coordinate (`transforms.kernel_gradient_scale`): an SGD
        step then moves U on the transforms of 3x3 kernels at about the scale a step on the
        spatial kernel would, so a learning rate that suits Conv2D suits F(4x4) too. None keeps
        the plain gradient, whose steps at F(4x4) are up to 750 times larger on some coordinates
        (SGD at learning rate 0.05 diverges in the first epoch); at F(2x2) the two differ by at
        most 1.8x. The forward pass is the same either way, but with 'transform' the gradient
        a tape reports for `winograd_kernel` is the scaled one: use None where the true gradient
        is needed (gradient checks, gradient-based pruning criteria).
      kernel_initializer: a *spatial* initializer; a 3x3 kernel g is sampled with it and the
        Winograd kernel initialized to G g G^T, so the initial output variance is a Conv2D's.
      bias_initializer, kernel_regularizer, bias_regularizer, activity_regularizer,
      kernel_constraint, bias_constraint: as for Conv2D; kernel ones act on `winograd_kernel`.
    """

    def __init__(self, filters, kernel_size=3, tile_size=2, padding="same", strides=1,
                 dilation_rate=1, use_bias=True, activation=None, winograd_relu=False,
                 kernel_gradient_scale="transform", kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters!r}")
        self.filters = int(filters)
        self.kernel_size = _require_square(kernel_size, 3, "kernel_size", "3x3 kernels")
        self.strides = _require_square(strides, 1, "strides", "use max-pooling to downsample")
        self.dilation_rate = _require_square(dilation_rate, 1, "dilation_rate", "undilated")
        self.tile_size = transforms.check_tile_size(tile_size)
        self.padding = winograd_math.normalize_padding(padding)
        if not isinstance(winograd_relu, (bool, np.bool_)):
            raise ValueError(f"`winograd_relu` must be a bool. Received: winograd_relu={winograd_relu!r}")
        self.winograd_relu = bool(winograd_relu)
        if kernel_gradient_scale not in KERNEL_GRADIENT_SCALES:
            raise ValueError(f"`kernel_gradient_scale` must be one of {KERNEL_GRADIENT_SCALES}. "
                             f"Received: kernel_gradient_scale={kernel_gradient_scale!r}")
        self.kernel_gradient_scale = kernel_gradient_scale
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.InputSpec(ndim=4)

    @property
    def input_tile_size(self):
        """a = tile_size + 2, the side of an input tile and of the Winograd kernel."""
        return self.tile_size + 2

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError("The channel dimension of the inputs to WinogradConv2D must be known. "
                             f"Received: input_shape={input_shape}")
        self.compute_output_shape(input_shape)  # Rejects inputs too small for 'valid'.
        a = self.input_tile_size
        self.winograd_kernel = self.add_weight(
            name="winograd_kernel", shape=(a, a, in_channels, self.filters),
            initializer=WinogradKernelInitializer(self.kernel_initializer, self.tile_size),
            regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        else:
            self.bias = None
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: in_channels})

    def call(self, inputs):
        outputs = winograd_math.winograd_conv2d(
            inputs, self.kernel_for_call(), self.tile_size, self.padding, self.winograd_relu)
        return self.add_bias_and_activation(outputs)

    def kernel_for_call(self):
        """`winograd_kernel` in the compute dtype, gradient scaled per `kernel_gradient_scale`."""
        kernel = tf.cast(self.winograd_kernel, self.compute_dtype)
        if self.kernel_gradient_scale is None:
            return kernel
        scale = tf.constant(transforms.kernel_gradient_scale(self.tile_size)[:, :, None, None],
                            dtype=kernel.dtype)

        @tf.custom_gradient
        def identity_with_scaled_gradient(u):
            return tf.identity(u), lambda upstream: upstream * scale

        return identity_with_scaled_gradient(kernel)

    def add_bias_and_activation(self, outputs):
        """The layer's bias and activation applied to the convolution's `outputs` (for
        subclasses that compute the convolution their own way)."""
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return winograd_math.conv_output_shape(input_shape, self.padding, self.filters,
                                               type(self).__name__)

    def get_prunable_weights(self):
        """The weights that pruning acts on: the Winograd-domain kernel (the paper's method)."""
        return [self.winograd_kernel]

    def get_pruning_scales(self):
        """|G_i| |G_j| for Winograd coordinate (i, j), shaped (a, a, 1, 1): the most a unit 3x3
        kernel can put there (|G_i g G_j^T| <= |G_i| |G_j| |g|). At F(4x4) it spans 0.036 to 1,
        so plain magnitude pruning removes the coordinates of G's short rows first, whole, for
        their scale alone; the normalized criterion ranks |U_ij| / (|G_i| |G_j|) instead."""
        scale = np.sqrt(transforms.kernel_gradient_scale(self.tile_size))
        return [scale[:, :, np.newaxis, np.newaxis]]

    def load_own_variables(self, store):
        """Keras' loading of a saved kernel, after checking that it fits the config's tile_size
        (a file whose config and weights disagree would otherwise fail with a bare shape
        mismatch, or a dump of the kernel)."""
        saved = tuple(store["0"].shape) if "0" in store else None  # winograd_kernel comes first
        expected = tuple(self.winograd_kernel.shape)
        if saved is not None and saved != expected:
            raise ValueError(
                f"WinogradConv2D '{self.name}': the saved winograd_kernel has shape {saved}, but "
                f"the layer's config (tile_size={self.tile_size}, filters={self.filters}) needs "
                f"{expected} (a = tile_size + 2 = {self.input_tile_size}): the file's config and "
                "weights do not match.")
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "tile_size": self.tile_size,
            "padding": self.padding,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "winograd_relu": self.winograd_relu,
            "kernel_gradient_scale": self.kernel_gradient_scale,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        })
        return config

    @classmethod
    def from_conv2d(cls, conv2d_layer, tile_size=2, winograd_relu=False, name=None):
        """A WinogradConv2D computing the same function as a built 3x3 stride-1 `keras.layers.Conv2D`.

        The kernel is U = G g G^T, computed in float64; the bias, activation, padding and
        regularizers are carried over. Spatial zeros do not survive the transform (Figure 1a of
        the paper): prune in the Winograd domain afterwards.
        """
        if not isinstance(conv2d_layer, keras.layers.Conv2D) or type(conv2d_layer).__name__ != "Conv2D":
            raise ValueError("`conv2d_layer` must be a keras.layers.Conv2D. "
                             f"Received: conv2d_layer={conv2d_layer!r}")
        if not conv2d_layer.built:
            raise ValueError(f"`conv2d_layer` must be built. Received unbuilt layer "
                             f"'{conv2d_layer.name}'")
        config = conv2d_layer.get_config()
        if config.get("data_format", "channels_last") != "channels_last":
            raise ValueError("`conv2d_layer` must use data_format='channels_last'. "
                             f"Received: data_format={config['data_format']!r}")
        if config.get("groups", 1) != 1:
            raise ValueError(f"`conv2d_layer` must have groups=1. Received: groups={config['groups']}")
        layer = cls(filters=config["filters"], kernel_size=config["kernel_size"],
                    tile_size=tile_size, padding=config["padding"], strides=config["strides"],
                    dilation_rate=config["dilation_rate"], use_bias=config["use_bias"],
                    activation=config["activation"], winograd_relu=winograd_relu,
                    kernel_regularizer=config["kernel_regularizer"],
                    bias_regularizer=config["bias_regularizer"],
                    activity_regularizer=config["activity_regularizer"],
                    name=name or conv2d_layer.name, dtype=conv2d_layer.dtype_policy)
        spatial_kernel = np.asarray(keras.ops.convert_to_numpy(conv2d_layer.kernel))
        layer.build((None, None, None, spatial_kernel.shape[2]))
        layer.winograd_kernel.assign(transforms.kernel_to_winograd(spatial_kernel, tile_size)
                                     .astype(layer.winograd_kernel.dtype))
        if config["use_bias"]:
            layer.bias.assign(keras.ops.convert_to_numpy(conv2d_layer.bias))
        return layer


prunable_layer.register_layer(WinogradConv2D, convolution=True)
