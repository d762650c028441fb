"""`to_sparse(model)`: a clone of a Keras model whose Winograd convolutions run on the sparse op.

Pruning wrappers are stripped first (`pruning.strip_pruning`: the masks applied, the zeros
exact), so everything below sees plain layers. Every `WinogradConv2D` becomes a
`SparseWinogradConv2D` holding only its nonzeros. Where it is safe (see `folding`), an
inference-mode BatchNormalization right after a convolution or Dense layer is folded into its
kernel and bias, a ReLU right after that is fused into the layer, and a 2 x 2 max pool after a
Winograd convolution (and its batch norm and ReLU) into its op. A pruned Dense layer becomes a
`SparseDense` (stored as its nonzeros). Every other layer is cloned with its weights. The
original model is left untouched.
"""

import keras
import numpy as np

from tf_sparse_winograd import pruning
from tf_sparse_winograd.export import folding
from tf_sparse_winograd.layers.sparse_dense import SparseDense
from tf_sparse_winograd.layers.sparse_winograd_conv2d import SparseWinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D


class _Absorbed:
    """Stands in for a layer folded into the layer before it: calling it passes its input on."""

    def __init__(self, layer):
        self.layer = layer


def strip_if_pruned(model):
    """`model` without pruning wrappers (a stripped clone), or `model` itself when it has none."""
    return pruning.strip_pruning(model) if pruning.collect_prunable_layers(model) else model


def _sparse_enough(kernel, sparse_dense_max_density):
    """True if a Dense kernel is pruned enough to become a SparseDense."""
    return (sparse_dense_max_density is not None
            and np.count_nonzero(kernel) <= sparse_dense_max_density * kernel.size)


def replaced_by_to_sparse(layer, sparse_dense_max_density=0.5):
    """True if `to_sparse` replaces `layer` of a model without pruning wrappers: a Winograd
    convolution, or a plain Dense layer pruned to at most `sparse_dense_max_density`."""
    if isinstance(layer, WinogradConv2D):
        return True
    return (folding.head_of(layer) is layer and layer.built
            and _sparse_enough(pruning.effective_kernel(layer), sparse_dense_max_density))


def _sparse_head(chain, sparse_dense_max_density=None):
    """The layer replacing a chain's head (with the chain's batch norm and ReLU folded in).

    A Dense head becomes a SparseDense when its kernel's density is at most
    `sparse_dense_max_density`; returns None for a Dense head that needs no change.
    """
    head = chain.conv
    kernel = pruning.effective_kernel(head)
    bias = keras.ops.convert_to_numpy(head.bias) if head.use_bias else None
    if isinstance(head, keras.layers.Dense):
        to_sparse_dense = _sparse_enough(kernel, sparse_dense_max_density)
        if not chain.absorbed and not to_sparse_dense:
            return None
    if chain.batch_norm is not None:
        kernel, bias = folding.fold_affine(kernel, bias, *folding.batch_norm_affine(chain.batch_norm))
    activation = "relu" if chain.relu is not None else keras.activations.serialize(head.activation)
    if isinstance(head, keras.layers.Dense):
        if to_sparse_dense:
            return SparseDense.from_kernel(kernel, bias, activation=activation, name=head.name)
        config = head.get_config()
        config.update(activation=activation, use_bias=bias is not None)
        dense = keras.layers.Dense.from_config(config)
        dense.build((None, kernel.shape[0]))
        dense.kernel.assign(kernel)
        if bias is not None:
            dense.bias.assign(bias)
        return dense
    return SparseWinogradConv2D.from_kernel(
        kernel, bias, tile_size=head.tile_size, padding=head.padding, activation=activation,
        winograd_relu=head.winograd_relu, max_pool_2x2=chain.max_pool is not None,
        name=head.name)


class _Cloner:
    """Maps each original layer to its replacement, once per layer (shared layers stay shared)."""

    def __init__(self, chains, options):
        self.chains = chains
        self.absorbed = {id(layer) for chain in chains.values() for layer in chain.absorbed}
        self.options = options
        self.clones = {}
        self.weight_copies = []

    def __call__(self, layer):
        if id(layer) not in self.clones:
            self.clones[id(layer)] = self._replace(layer)
        return self.clones[id(layer)]

    def _replace(self, layer):
        if id(layer) in self.absorbed:
            return _Absorbed(layer)
        if isinstance(layer, keras.Model):
            return to_sparse(layer, **self.options)
        chain = self.chains.get(id(layer))
        if chain is None and folding.head_of(layer) is not None:
            chain = folding.Chain(layer)  # A shared layer: converted, nothing folded.
        if chain is not None:
            replacement = _sparse_head(chain, self.options["sparse_dense_max_density"])
            if replacement is not None:
                return replacement
        clone = layer.__class__.from_config(layer.get_config())
        self.weight_copies.append((layer, clone))
        return clone

    def copy_weights(self):
        for layer, clone in self.weight_copies:
            clone.set_weights(layer.get_weights())


def _call(layer, *args, **kwargs):
    if isinstance(layer, _Absorbed):
        return args[0]
    return layer(*args, **kwargs)


def to_sparse(model, fold_batch_norm=True, fuse_relu=True, fuse_max_pool=True,
              sparse_dense_max_density=0.5):
    """A clone of a built Sequential or functional `model` for sparse inference.

    Args:
      model: a built Keras Sequential or functional model, possibly with pruning wrappers (which
        are stripped first).
      fold_batch_norm: fold a BatchNormalization directly after a WinogradConv2D or Dense layer
        (with no activation of its own, whose output feeds only the batch norm) into its kernel
        and bias, with the moving statistics (inference mode).
      fuse_relu: fuse a plain ReLU directly after such a layer (or its batch norm) into it.
      fuse_max_pool: fuse a MaxPooling2D(2) (2 x 2, stride 2, 'valid', channels last) directly
        after a WinogradConv2D (or its batch norm or ReLU) into its op, which then stores only
        the pooled output. The clone's output is the same (max pooling commutes with the bias
        and the ReLU the op adds after it).
      sparse_dense_max_density: a Dense layer whose kernel has at most this fraction of nonzeros
        becomes a `SparseDense` (stored as its nonzeros, run on the sparse op); None keeps
        every Dense.

    Returns:
      A new model of the same kind; the WinogradConv2D layers are SparseWinogradConv2D layers
      with the same names, folded batch norm, ReLU and max pool layers are gone.

    Raises:
      TypeError: `model` is not a Keras model. ValueError: a subclassed or unbuilt model.
    """
    pruning.check_model(model, "to_sparse")
    options = {"fold_batch_norm": fold_batch_norm, "fuse_relu": fuse_relu,
               "fuse_max_pool": fuse_max_pool,
               "sparse_dense_max_density": sparse_dense_max_density}
    model = strip_if_pruned(model)
    if isinstance(model, keras.Sequential):
        chains = folding.plan_sequential(model.layers, fold_batch_norm, fuse_relu, fuse_max_pool)
        cloner = _Cloner(chains, options)
        layers = [cloner(layer) for layer in model.layers]
        source = model.inputs[0]
        inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
        clone = keras.Sequential([inputs] + [layer for layer in layers
                                             if not isinstance(layer, _Absorbed)], name=model.name)
    else:
        chains = folding.plan_functional(model, fold_batch_norm, fuse_relu, fuse_max_pool)
        cloner = _Cloner(chains, options)
        clone = keras.models.clone_model(model, clone_function=cloner, call_function=_call)
    cloner.copy_weights()
    return clone
