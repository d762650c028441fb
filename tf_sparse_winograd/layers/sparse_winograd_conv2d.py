"""`SparseWinogradConv2D`: the inference twin of `WinogradConv2D`, running the sparse C++ op.

The layer holds the Winograd-domain kernel in the packed form made by
`tf_sparse_winograd.ops.pack_kernel`: a `PackedKernel` whose fields are ordinary tensors holding
only the nonzeros. Each field becomes a non-trainable weight named `packed_<field>`, so a SavedModel
or a `.keras` file stores the nonzeros and their indices, never the dense kernel.

The sizes of the packed fields depend on the number of nonzeros, which is only known once a kernel
has been packed. They are therefore part of the layer's config (`packed_spec`: field name ->
{"shape", "dtype"}), so that `from_config` + `build` recreate weights of the right shapes before the
saved values are loaded.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_winograd import pruning
from tf_sparse_winograd import transforms
from tf_sparse_winograd import winograd_math
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D

_PACKAGE = "tf_sparse_winograd"

# Activations the op fuses into its store; any other Keras activation runs after the op.
_FUSABLE_ACTIVATIONS = ("relu",)


def _ops():
    """The ops module, imported on first use so that importing the layers never loads the op."""
    from tf_sparse_winograd import ops  # pylint: disable=import-outside-toplevel
    return ops


def _activation_name(activation):
    """'linear', 'relu', ... for a Keras activation function, or None if it has no plain name."""
    serialized = keras.activations.serialize(activation)
    return serialized if isinstance(serialized, str) else None


def _check_packed_spec(packed_spec):
    """Validates and normalizes {field: {"shape": [...], "dtype": str}} into plain python values."""
    if not isinstance(packed_spec, dict) or not packed_spec:
        raise ValueError("`packed_spec` must be a non-empty dict mapping each PackedKernel field to "
                         f"{{'shape': [...], 'dtype': ...}}. Received: packed_spec={packed_spec!r}")
    normalized = {}
    for field, spec in packed_spec.items():
        try:
            shape = [int(d) for d in spec["shape"]]
            dtype = tf.as_dtype(spec["dtype"]).name
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"`packed_spec[{field!r}]` must be {{'shape': [ints], 'dtype': str}}. "
                             f"Received: {spec!r}") from error
        if any(d < 0 for d in shape):
            raise ValueError(f"`packed_spec[{field!r}]['shape']` must not be negative. "
                             f"Received: {shape}")
        normalized[str(field)] = {"shape": shape, "dtype": dtype}
    return normalized


def packed_spec_of(packed):
    """The `packed_spec` config entry describing the fields of a `PackedKernel`."""
    return {field: {"shape": [int(d) for d in tensor.shape], "dtype": tf.as_dtype(tensor.dtype).name}
            for field, tensor in packed._asdict().items()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SparseWinogradConv2D(keras.layers.Layer):
    """3x3 stride-1 convolution computed by the sparse Winograd C++ op, for inference.

    Without a loadable op library (see `tf_sparse_winograd.ops.op_library_available`) it computes
    the same result with plain TF ops, after one warning that says how to rebuild the library.

    Usually made with `SparseWinogradConv2D.from_winograd(layer)` or
    `SparseWinogradConv2D.from_kernel(winograd_kernel, ...)`; `tf_sparse_winograd.export.to_sparse`
    does it for a whole model.

    Args:
      filters: number of output channels.
      packed_spec: {field: {"shape": [...], "dtype": str}} for every field of the `PackedKernel`
        (see `packed_spec_of`); the shapes depend on the number of nonzeros.
      tile_size: m of F(m x m, 3 x 3): 2, 4 or 6.
      padding: 'same' or 'valid'.
      use_bias: whether the layer adds a bias.
      activation: output activation. 'relu' is fused into the op; others run after it.
      winograd_relu: ReLU on the transformed input tiles (as in `WinogradConv2D`).
      in_channels: the number of input channels, checked at build when given.
      max_pool_2x2: the output max-pooled over 2 x 2 windows with stride 2 ('valid'), as a
        `MaxPooling2D(2)` after the layer would, computed inside the op (`to_sparse` fuses such
        pools). Needs an activation the op fuses ('relu') or none.
    """

    def __init__(self, filters, packed_spec, tile_size=2, padding="same", use_bias=True,
                 activation=None, winograd_relu=False, in_channels=None, max_pool_2x2=False,
                 **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters!r}")
        self.filters = int(filters)
        self.packed_spec = _check_packed_spec(packed_spec)
        self.tile_size = transforms.check_tile_size(tile_size)
        self.padding = winograd_math.normalize_padding(padding)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        if not isinstance(winograd_relu, (bool, np.bool_)):
            raise ValueError(f"`winograd_relu` must be a bool. Received: winograd_relu={winograd_relu!r}")
        self.winograd_relu = bool(winograd_relu)
        if not isinstance(max_pool_2x2, (bool, np.bool_)):
            raise ValueError("`max_pool_2x2` must be a bool. "
                             f"Received: max_pool_2x2={max_pool_2x2!r}")
        self.max_pool_2x2 = bool(max_pool_2x2)
        if self.max_pool_2x2 and self._fused_activation() is None and not self._linear():
            raise ValueError("`max_pool_2x2` pools inside the op, before any activation the op "
                             "does not fuse; use activation 'relu' or None. Received: "
                             f"activation={keras.activations.serialize(self.activation)!r}")
        self.in_channels = None if in_channels is None else int(in_channels)
        self.input_spec = keras.InputSpec(ndim=4, axes=None if in_channels is None
                                          else {-1: self.in_channels})

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if self.in_channels is not None and in_channels not in (None, self.in_channels):
            raise ValueError(f"Layer '{self.name}' was packed for {self.in_channels} input channels. "
                             f"Received: input_shape={input_shape}")
        self.compute_output_shape(input_shape)
        self.packed_weights = {}
        for field, spec in self.packed_spec.items():
            self.packed_weights[field] = self.add_weight(
                name=f"packed_{field}", shape=tuple(spec["shape"]), dtype=spec["dtype"],
                initializer="zeros", trainable=False)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros",
                                        dtype="float32", trainable=False)
        else:
            self.bias = None

    @property
    def packed(self):
        """The layer's `PackedKernel`, rebuilt from its weights."""
        ops = _ops()
        return ops.PackedKernel(**{field: tf.convert_to_tensor(weight)
                                   for field, weight in self.packed_weights.items()})

    def _fused_activation(self):
        name = _activation_name(self.activation)
        return name if name in _FUSABLE_ACTIVATIONS else None

    def _linear(self):
        return _activation_name(self.activation) == "linear"

    def call(self, inputs):
        fused = self._fused_activation()
        ops = _ops()
        outputs = ops.sparse_winograd_conv2d(
            tf.cast(inputs, tf.float32), self.packed,
            bias=tf.convert_to_tensor(self.bias) if self.use_bias else None,
            tile_size=self.tile_size, padding=self.padding.upper(),
            winograd_relu=self.winograd_relu, activation=fused, max_pool_2x2=self.max_pool_2x2,
            implementation="op" if ops.op_library_available() else "reference")
        # The op's shape function cannot see the filter count when the packed shape is a
        # variable (as in a SavedModel); the layer knows it.
        outputs.set_shape(self.compute_output_shape(tuple(inputs.shape)))
        if fused is None and not self._linear():
            outputs = self.activation(outputs)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        shape = winograd_math.conv_output_shape(input_shape, self.padding, self.filters,
                                                type(self).__name__)
        if not self.max_pool_2x2:
            return shape
        return (shape[0],) + tuple(None if d is None else d // 2 for d in shape[1:3]) + (shape[3],)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "packed_spec": self.packed_spec,
            "tile_size": self.tile_size,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "winograd_relu": self.winograd_relu,
            "in_channels": self.in_channels,
            "max_pool_2x2": self.max_pool_2x2,
        })
        return config

    def nnz(self):
        """The number of stored nonzero weights."""
        return int(np.prod(self.packed_spec["values"]["shape"]))

    @classmethod
    def from_kernel(cls, winograd_kernel, bias=None, tile_size=2, padding="same",
                    activation=None, winograd_relu=False, name=None, max_pool_2x2=False,
                    **kwargs):
        """A built layer holding the nonzeros of a dense (a, a, in, filters) Winograd kernel."""
        kernel = np.asarray(winograd_kernel, dtype=np.float32)
        tile_size = transforms.check_tile_size(tile_size)
        a = transforms.input_tile_size(tile_size)
        if kernel.ndim != 4 or kernel.shape[:2] != (a, a):
            raise ValueError(f"`winograd_kernel` must have shape ({a}, {a}, in, filters) for "
                             f"tile_size={tile_size}. Received: shape={kernel.shape}")
        in_channels, filters = kernel.shape[2:]
        packed = _ops().pack_kernel(tf.constant(kernel))
        layer = cls(filters=int(filters), packed_spec=packed_spec_of(packed), tile_size=tile_size,
                    padding=padding, use_bias=bias is not None, activation=activation,
                    winograd_relu=winograd_relu, in_channels=int(in_channels), name=name,
                    max_pool_2x2=max_pool_2x2, **kwargs)
        layer.build((None, None, None, int(in_channels)))
        for field, tensor in packed._asdict().items():
            layer.packed_weights[field].assign(tensor)
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float32)
            if bias.shape != (filters,):
                raise ValueError(f"`bias` must have shape ({filters},). Received: shape={bias.shape}")
            layer.bias.assign(bias)
        return layer

    @classmethod
    def from_winograd(cls, layer, name=None):
        """The sparse twin of a built `WinogradConv2D`: plain, stripped, or in a pruning wrapper.

        A wrapped layer is unwrapped and its pruning mask applied to the kernel, so exactly the
        unpruned weights are stored. The name defaults to the Winograd layer's.
        """
        inner = pruning.unwrap(layer)
        if not isinstance(inner, WinogradConv2D):
            raise ValueError("Expected a WinogradConv2D (plain, stripped or in a pruning wrapper). "
                             f"Received: layer={layer!r} ({type(layer).__name__})")
        if not inner.built:
            raise ValueError(f"`layer` must be built. Received unbuilt layer '{inner.name}'")
        bias = keras.ops.convert_to_numpy(inner.bias) if inner.use_bias else None
        return cls.from_kernel(pruning.effective_kernel(layer), bias, tile_size=inner.tile_size, padding=inner.padding,
                               activation=keras.activations.serialize(inner.activation),
                               winograd_relu=inner.winograd_relu, name=name or inner.name)
