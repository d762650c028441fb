"""Folding inference-mode batch norm (and a following ReLU) into the convolution before it.

In inference mode BatchNormalization is a per-channel affine map z = s * y + t with
s = gamma / sqrt(moving_variance + epsilon) and t = beta - s * moving_mean. For a convolution
y = conv(x, U) + b that is linear in its kernel, per output channel f:

    s_f * (conv(x, U)_f + b_f) + t_f = conv(x, s_f * U[..., f])_f + (s_f * b_f + t_f).

This holds for a Winograd kernel too, since Y = A^T [U . V] A is linear in U, and it still holds
with `winograd_relu`: that ReLU acts on the transformed *input* tiles V, before the products, so
the output is still linear in U. It does not hold when the convolution has its own nonlinear
activation (then the batch norm follows the activation, not the products): such pairs are left
alone. Scaling a column of U by s_f maps zeros to zeros, so a pruned kernel keeps its zeros.

A ReLU that directly follows (conv [+ batch norm]) is fused into the sparse op's store, and a
2 x 2 stride-2 'valid' max pool after that into the op as well (`max_pool_2x2`): the op pools
each tile's outputs before storing them, so the full-size output never goes to memory. The pool
moves before the bias and ReLU inside the op, which is exact: max commutes with adding a
per-channel constant and with any non-decreasing function.
"""

import keras
import numpy as np

from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D


def batch_norm_affine(bn):
    """(scale, offset) in float64 such that bn(y, training=False) == scale * y + offset."""
    variance = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
    mean = np.asarray(keras.ops.convert_to_numpy(bn.moving_mean), np.float64)
    gamma = (np.asarray(keras.ops.convert_to_numpy(bn.gamma), np.float64) if bn.scale
             else np.ones_like(variance))
    beta = (np.asarray(keras.ops.convert_to_numpy(bn.beta), np.float64) if bn.center
            else np.zeros_like(variance))
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - scale * mean


def fold_affine(kernel, bias, scale, offset):
    """(kernel * scale, bias * scale + offset): scale and offset act on the last (output) axis.

    Computed in float64 and returned in the kernel's dtype; `bias` may be None (no bias).
    """
    kernel = np.asarray(kernel)
    folded_kernel = (kernel.astype(np.float64) * scale).astype(kernel.dtype)
    folded_bias = offset if bias is None else np.asarray(bias, np.float64) * scale + offset
    return folded_kernel, folded_bias.astype(kernel.dtype)


def head_of(layer):
    """The layer a chain can start at: a WinogradConv2D or a plain Dense; else None.

    Batch norm folds into a Dense kernel the same way (its output channel is the last axis).
    Models reach the planning without pruning wrappers (`to_sparse` strips them first).
    """
    if type(layer) is keras.layers.Dense or isinstance(layer, WinogradConv2D):  # pylint: disable=unidiomatic-typecheck
        return layer
    return None


def is_linear(activation):
    return keras.activations.serialize(activation) == "linear"


def foldable_batch_norm(layer):
    """True for a built BatchNormalization over the last (channel) axis: foldable in inference.

    Subclasses qualify when they declare `inference_is_batch_normalization = True` (their
    inference is Keras' own, e.g. layers.FusedBatchNormalization).
    """
    if type(layer) is not keras.layers.BatchNormalization and not (  # pylint: disable=unidiomatic-typecheck
            isinstance(layer, keras.layers.BatchNormalization)
            and getattr(type(layer), "inference_is_batch_normalization", False)):
        return False
    if not layer.built or getattr(layer, "renorm", False):
        return False
    axis = layer.axis if isinstance(layer.axis, int) else (
        layer.axis[0] if len(layer.axis) == 1 else None)
    ndim = layer.input_spec.ndim if layer.input_spec is not None else None
    return axis == -1 or (ndim is not None and axis == ndim - 1)


def fusable_relu(layer):
    """True for a plain ReLU (keras.layers.ReLU() with default arguments, or Activation('relu'))."""
    if type(layer) is keras.layers.ReLU:  # pylint: disable=unidiomatic-typecheck
        config = layer.get_config()
        return (config.get("max_value") is None and not config.get("negative_slope")
                and not config.get("threshold"))
    if type(layer) is keras.layers.Activation:  # pylint: disable=unidiomatic-typecheck
        return keras.activations.serialize(layer.activation) == "relu"
    return False


def fusable_max_pool(layer):
    """True for a channels-last MaxPooling2D with 2 x 2 windows, stride 2 and 'valid' padding."""
    if type(layer) is not keras.layers.MaxPooling2D:  # pylint: disable=unidiomatic-typecheck
        return False
    return (tuple(layer.pool_size) == (2, 2) and tuple(layer.strides) == (2, 2)
            and layer.padding == "valid" and layer.data_format == "channels_last")


class Chain:
    """A Winograd convolution (or Dense layer) and what is folded into it: batch norm, ReLU, and
    for a Winograd convolution a 2 x 2 max pool."""

    def __init__(self, conv):
        self.conv = conv
        self.batch_norm = None
        self.relu = None
        self.max_pool = None

    @property
    def absorbed(self):
        return [layer for layer in (self.batch_norm, self.relu, self.max_pool)
                if layer is not None]

    def try_extend(self, layer, fold_batch_norm, fuse_relu, fuse_max_pool=False):
        """Appends `layer` if it can be absorbed after the layers already in the chain."""
        inner = self.conv
        if self.max_pool is not None:
            return False
        if (fuse_max_pool and fusable_max_pool(layer) and isinstance(self.conv, WinogradConv2D)
                and keras.activations.serialize(inner.activation) in ("linear", "relu")):
            self.max_pool = layer
            return True
        if self.relu is not None:
            return False
        if (self.batch_norm is None and self.relu is None and fold_batch_norm
                and foldable_batch_norm(layer)):
            if not is_linear(inner.activation):
                return False
            self.batch_norm = layer
            return True
        if fuse_relu and fusable_relu(layer) and is_linear(inner.activation):
            self.relu = layer
            return True
        return False


def plan_sequential(layers, fold_batch_norm=True, fuse_relu=True, fuse_max_pool=False):
    """{id(conv): Chain} for consecutive conv [-> BN] [-> ReLU] [-> max pool] runs of a
    Sequential's layers."""
    chains, current = {}, None
    for layer in layers:
        if head_of(layer) is not None:
            current = chains[id(layer)] = Chain(layer)
        elif current is None or not current.try_extend(layer, fold_batch_norm, fuse_relu,
                                                         fuse_max_pool):
            current = None
    return chains


def plan_functional(model, fold_batch_norm=True, fuse_relu=True, fuse_max_pool=False):
    """{id(conv): Chain} for a functional model.

    A layer joins a chain only when every link is private: each layer is called once in the model,
    and each intermediate output feeds exactly the next layer (it is neither a model output nor
    read by any other layer), so removing the intermediate tensors changes nothing else.
    """
    nodes = [node for depth_nodes in model._nodes_by_depth.values()  # pylint: disable=protected-access
             for node in depth_nodes]
    consumers, calls = {}, {}
    for node in nodes:
        if node.operation is None or node.is_input:
            continue
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    outputs = {id(tensor) for tensor in model.outputs}

    def single_consumer(node):
        if len(node.outputs) != 1 or id(node.outputs[0]) in outputs:
            return None
        readers = consumers.get(id(node.outputs[0]), [])
        if len(readers) != 1 or len(readers[0].input_tensors) != 1:
            return None
        return readers[0]

    chains = {}
    for node in nodes:
        layer = node.operation
        if layer is None or node.is_input or head_of(layer) is None:
            continue
        if calls[id(layer)] != 1:
            continue
        chain = chains[id(layer)] = Chain(layer)
        reader = single_consumer(node)
        while reader is not None and calls[id(reader.operation)] == 1 and chain.try_extend(
                reader.operation, fold_batch_norm, fuse_relu, fuse_max_pool):
            reader = single_consumer(reader)
    return chains
