"""The pruning view of a model: its layers, which are prunable, and their kernels once masked.

Code outside `tf_sparse_winograd.pruning` (analysis, export, training, the layers) asks these
functions instead of looking into pruning wrappers, so that only this package knows how a
`PruneLowMagnitude` wrapper keeps its masks:

  walk_layers(model)        every layer of a model, nested models flattened, each layer once
  unwrap(layer)             the layer inside a pruning wrapper (the layer itself otherwise)
  is_prunable(layer), is_convolution(layer), prunable_weights(layer)
  masks(layer)              the masks of a wrapped layer's prunable weights (None if unwrapped)
  effective_weights(layer)  the prunable weights with their masks applied, as numpy arrays
  effective_kernel(layer)   the same for a layer with one prunable weight
  collect_prunable_layers(model)  the pruning wrappers of a model
  check_model(model, ...)   the argument check every public function taking a model makes
"""

import keras
import numpy as np

from tf_sparse_winograd.pruning import prunable_layer
from tf_sparse_winograd.pruning.pruning_wrapper import PruneLowMagnitude


def check_model(model, function_name, argument="model", graph=True):
    """Raises unless `model` is a built Keras model (Sequential or functional with `graph`).

    Raises:
      TypeError: `model` is not a keras.Model, naming the argument and what was received.
      ValueError: a subclassed model where `graph` is needed, or a model that is not built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{function_name}` expects a Keras model as `{argument}`. "
                        f"Received: {argument}={model!r} (type {type(model).__name__})")
    if graph and not is_graph_model(model):
        raise ValueError(f"`{function_name}` supports Sequential and functional models only "
                         f"(not subclassed models). Received: {argument} of type "
                         f"{type(model).__name__}")
    if not model.built:
        raise ValueError(f"`{function_name}` needs a built model: give it an Input, or call it "
                         f"once on data. Received: unbuilt {argument} {model.name!r}")


def is_graph_model(model):
    """True for Sequential and functional models (a graph of layer calls Keras can clone)."""
    return isinstance(model, keras.Sequential) or isinstance(model, keras.Model) and hasattr(
        model, "_nodes_by_depth")


def walk_layers(model):
    """Yields the layers of `model` in order: nested models are walked into (and not yielded),
    pruning wrappers are yielded as one layer, and a layer used twice is yielded once."""
    seen = set()

    def walk(container):
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    yield from walk(model)


def unwrap(layer):
    """The layer a pruning wrapper holds, or `layer` itself when it is not wrapped."""
    return layer.layer if isinstance(layer, PruneLowMagnitude) else layer


def is_prunable(layer):
    """True if the (unwrapped) layer has weights that pruning masks."""
    return prunable_layer.is_prunable(unwrap(layer))


def is_convolution(layer):
    """True if the (unwrapped) layer is a convolution (see `register_layer`)."""
    return prunable_layer.is_convolution(unwrap(layer))


def prunable_weights(layer):
    """The variables pruning masks, of the layer or of the layer it wraps."""
    if isinstance(layer, PruneLowMagnitude) and layer.built:
        return layer.prunable_weights
    return prunable_layer.get_prunable_weights(unwrap(layer))


def masks(layer):
    """The 0/1 masks (numpy) of a wrapped layer's prunable weights, in their order; None when the
    layer is not in a pruning wrapper (it has no mask: its zeros are its own)."""
    if not isinstance(layer, PruneLowMagnitude):
        return None
    return [np.asarray(keras.ops.convert_to_numpy(mask)) for mask in layer.masks]


def effective_weights(layer):
    """The prunable weights as numpy arrays, each times its mask where the layer is wrapped:
    exactly the values the layer computes with (a wrapper re-masks its weights only when called)."""
    values = [np.asarray(keras.ops.convert_to_numpy(w)) for w in prunable_weights(layer)]
    layer_masks = masks(layer)
    if layer_masks is None:
        return values
    return [value * mask.astype(value.dtype) for value, mask in zip(values, layer_masks)]


def effective_kernel(layer):
    """`effective_weights` of a layer with exactly one prunable weight (its kernel)."""
    values = effective_weights(layer)
    if len(values) != 1:
        raise ValueError(f"Layer {unwrap(layer).name!r} has {len(values)} prunable weights; "
                         "use effective_weights().")
    return values[0]


def collect_prunable_layers(model):
    """The `PruneLowMagnitude` wrappers of a model (nested models included), in layer order."""
    if isinstance(model, PruneLowMagnitude):
        return [model]
    return [layer for layer in walk_layers(model) if isinstance(layer, PruneLowMagnitude)]
