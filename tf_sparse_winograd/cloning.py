"""Rewriting a Keras model layer by layer into a new model: `clone_with(model, make_layer)`.

Pruning (wrapping, stripping) and the conversion to Winograd layers are all "the same model with
some layers replaced": `keras.models.clone_model` does the graph, this module the rest (weights
copied after the clone is built, nested models rewritten too, shared layers kept shared, the
source model's distribution strategy kept).
"""

import contextlib

import keras
import tensorflow as tf

from tf_sparse_winograd.pruning import pruning_impl


def clone_with(model, make_layer):
    """A new model of the same kind with each layer replaced by make_layer(layer).

    Args:
      model: a built Sequential or functional model; the layers of nested models are passed to
        `make_layer` too (the nested models are rebuilt around them).
      make_layer: layer -> (new layer, copy), where copy(new layer) fills its weights once the
        new model is built. Called once per layer, so a shared layer stays shared.
    """
    copies = []

    def clone_function(layer):
        new_layer, copy = make_layer(layer)
        copies.append((new_layer, copy))
        return new_layer

    # A model built under a distribution strategy is cloned under the same strategy, so that the
    # new variables are distributed like the old ones even when called outside its scope.
    strategy = pruning_impl.strategy_of(model.weights)
    scope = (strategy.scope() if strategy is not None and not tf.distribute.has_strategy()
             else contextlib.nullcontext())
    with scope:
        clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
        for new_layer, copy in copies:
            copy(new_layer)
    return clone


def fresh_layer(layer):
    """A new, unbuilt layer of the same class and config."""
    return layer.__class__.from_config(layer.get_config())


def fresh_copy(layer):
    """(fresh_layer(layer), copy): copy(new layer) gives it `layer`'s weights."""
    weights = layer.get_weights()

    def copy(new_layer):
        new_layer.set_weights(weights)

    return fresh_layer(layer), copy
