"""Which layers are prunable, which of their weights are pruned, and which are convolutions.

A layer is prunable because it says so, in one of two ways (tfmot's rules):
  * it implements the `PrunableLayer` interface, `get_prunable_weights()` (e.g. `WinogradConv2D`,
    whose Winograd-domain kernel is pruned);
  * its class is in the registry of prunable layers, where Keras' convolution and Dense layers
    are, with the attribute names of their prunable weights (their kernel). `register_layer` adds
    a class (a user's own layer, or a Keras layer this package does not know).
The registry also records which prunable layers are convolutions (for `skip_first_conv`, the
paper's unpruned first convolution): Keras' convolutions, and whatever is registered with
`convolution=True` (`WinogradConv2D` registers itself). Biases and normalisation parameters are
never pruned.
"""

import abc

import keras


class PrunableLayer(abc.ABC):
    """Interface for layers that say which of their weights may be pruned."""

    @abc.abstractmethod
    def get_prunable_weights(self):
        """Returns the list of variables to prune (the layer must be built)."""


# Layer class -> (names of the prunable weight attributes, or None: the class's
# get_prunable_weights(); whether the layer is a convolution).
_REGISTRY = {}


def register_layer(layer_class, weights=None, convolution=False):
    """Registers a layer class as prunable (and, with `convolution=True`, as a convolution).

    Args:
      layer_class: a subclass of keras.layers.Layer; its subclasses are covered too.
      weights: names of the attributes holding the prunable variables (e.g. ('kernel',)), or None
        when the class implements `get_prunable_weights()`.
      convolution: whether the layer is a convolution (`skip_first_conv` skips the first one).
    Returns:
      `layer_class`.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError("`layer_class` must be a subclass of keras.layers.Layer. "
                        f"Received: layer_class={layer_class!r}")
    if weights is None and not callable(getattr(layer_class, "get_prunable_weights", None)):
        raise ValueError(f"{layer_class.__name__} has no get_prunable_weights(); give `weights`, "
                         "the names of its prunable weight attributes. Received: weights=None")
    _REGISTRY[layer_class] = (None if weights is None else tuple(weights), bool(convolution))
    return layer_class


for _conv in (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
              keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D):
    register_layer(_conv, weights=("kernel",), convolution=True)
for _separable in (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D):
    register_layer(_separable, weights=("depthwise_kernel", "pointwise_kernel"), convolution=True)
register_layer(keras.layers.Dense, weights=("kernel",))


def _entry(layer):
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def is_prunable(layer):
    """True for layers implementing `get_prunable_weights()` and for registered layer classes."""
    return callable(getattr(layer, "get_prunable_weights", None)) or _entry(layer) is not None


def is_convolution(layer):
    """True for layers of a class registered as a convolution (Keras' convs, WinogradConv2D)."""
    entry = _entry(layer)
    return entry is not None and entry[1]


def get_prunable_weights(layer):
    """The variables of a (built) prunable layer that pruning masks."""
    if callable(getattr(layer, "get_prunable_weights", None)):
        return list(layer.get_prunable_weights())
    entry = _entry(layer)
    if entry is None:
        raise ValueError(
            "Layer is not prunable: it has no `get_prunable_weights()` method and its class is not "
            "registered (tf_sparse_winograd.pruning.register_layer). "
            f"Received: layer={layer.name!r} ({type(layer).__name__})")
    variables = []
    for name in entry[0]:
        # Keras convolutions and Dense keep the variable in `_kernel` when `kernel` is a property
        # (LoRA); the variable itself is what pruning masks.
        variable = getattr(layer, f"_{name}", None)
        variables.append(variable if isinstance(variable, keras.Variable) else getattr(layer, name))
    return variables
