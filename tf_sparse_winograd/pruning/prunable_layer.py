"""Which weights of a layer are pruned.

A layer declares its prunable weights with `get_prunable_weights()` (the tfmot interface);
`WinogradConv2D` returns `[winograd_kernel]`. Built-in Keras convolutions and Dense layers are
prunable through their `kernel`. Biases and normalisation parameters are never pruned.
"""

import abc

import keras


class PrunableLayer(abc.ABC):
    """Interface for layers that say which of their weights may be pruned."""

    @abc.abstractmethod
    def get_prunable_weights(self):
        """Returns the list of variables to prune (the layer must be built)."""


_KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv2D,
)


def is_prunable(layer):
    """True for layers with `get_prunable_weights()` and for Keras conv / Dense layers."""
    return callable(getattr(layer, "get_prunable_weights", None)) or isinstance(
        layer, _KERNEL_LAYERS)


def get_prunable_weights(layer):
    """The variables of a (built) layer that pruning masks."""
    if callable(getattr(layer, "get_prunable_weights", None)):
        return list(layer.get_prunable_weights())
    if isinstance(layer, _KERNEL_LAYERS):
        # Dense and convolutions keep the variable in `_kernel` when `kernel` is a property (LoRA).
        kernel = getattr(layer, "_kernel", None)
        return [kernel if isinstance(kernel, keras.Variable) else layer.kernel]
    raise ValueError(
        "Layer is not prunable: it has no `get_prunable_weights()` method and is not a Keras "
        f"convolution or Dense layer. Received: layer={layer.name!r} ({type(layer).__name__})")


def is_convolution(layer):
    """True for convolution layers (for `skip_first_conv`): Keras convs and WinogradConv2D."""
    return isinstance(layer, _KERNEL_LAYERS[1:]) or "conv" in type(layer).__name__.lower()
