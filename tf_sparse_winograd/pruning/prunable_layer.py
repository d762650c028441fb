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

A prunable layer may also say how its weights' entries compare in size, for the normalized
magnitude criterion (`criterion="normalized_magnitude"`): `get_pruning_scales()` returns, for each
prunable weight, None or positive values broadcastable to it by which |w| is divided before
ranking (`WinogradConv2D`: |G_i| |G_j| per Winograd coordinate). Layers without it are ranked by
plain magnitude under either criterion.
"""

import abc

import keras
import numpy as np


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


CRITERIA = ("magnitude", "normalized_magnitude")


def check_criterion(criterion):
    """Returns `criterion` if it is one of CRITERIA; raises a ValueError naming it otherwise."""
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {CRITERIA}. Received: "
                         f"criterion={criterion!r}")
    return criterion


def get_pruning_scales(layer, weights, criterion):
    """One entry per prunable weight: None (rank by |w|) or the values dividing |w|.

    `weights` are `layer`'s prunable weights (`get_prunable_weights(layer)`). Under "magnitude"
    every entry is None; under "normalized_magnitude" they are the layer's `get_pruning_scales()`,
    checked to be positive and broadcastable to their weights.
    """
    if check_criterion(criterion) == "magnitude" \
            or not callable(getattr(layer, "get_pruning_scales", None)):
        return [None] * len(weights)
    scales = list(layer.get_pruning_scales())
    if len(scales) != len(weights):
        raise ValueError(f"{type(layer).__name__}.get_pruning_scales() returned {len(scales)} "
                         f"entries for {len(weights)} prunable weights (layer {layer.name!r}).")
    checked = []
    for weight, scale in zip(weights, scales):
        if scale is not None:
            scale = np.asarray(scale, dtype=np.float64)
            try:
                np.broadcast_to(scale, tuple(weight.shape))
            except ValueError:
                raise ValueError(f"{type(layer).__name__}.get_pruning_scales(): a scale of shape "
                                 f"{scale.shape} does not broadcast to the weight's shape "
                                 f"{tuple(weight.shape)} (layer {layer.name!r}).") from None
            if not np.all(np.isfinite(scale) & (scale > 0)):
                raise ValueError(f"{type(layer).__name__}.get_pruning_scales(): scales must be "
                                 f"positive and finite (layer {layer.name!r}).")
        checked.append(scale)
    return checked
