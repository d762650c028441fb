"""The one place that turns a `conv_type` into layers: the three architectures of Figure 1.

Every model in this package is written as a chain of "conv units" (3x3 stride-1 convolution, batch
norm, ReLU). `ConvStack` builds each unit for the requested `conv_type`:

  * 'spatial' (Figure 1a/b for pruning): `keras.layers.Conv2D` -> BatchNorm -> ReLU.
  * 'winograd': `WinogradConv2D` -> BatchNorm -> ReLU. Same function as 'spatial', but the
    trainable (and prunable) kernel lives in the Winograd domain (Figure 1b).
  * 'winograd_relu' (Figure 1c): the ReLU that follows a unit is moved into the next 3x3 conv's
    Winograd domain. A unit whose output feeds another 3x3 conv ends with BatchNorm and no
    spatial ReLU; the consuming conv is built with `winograd_relu=True`, i.e. ReLU(B^T d B).
    Batch norm therefore stays where it is in the other two architectures (right after the
    convolution, before the ReLU): only the ReLU moves. Max-pooling between the two commutes
    with a ReLU, so it is left in place. The first conv of a network reads the image itself
    and keeps `winograd_relu=False`. A unit whose output feeds something other than a 3x3
    convolution (a dense layer, a 1x1 conv, a global pool) keeps its spatial ReLU.

`unit(x, filters, relu_follows_in_winograd)` is the single entry point: the caller says whether
the *next* layer is a Winograd conv that will take over the ReLU; `ConvStack` remembers whether
the current input still owes a ReLU.
"""

import keras

from tf_sparse_winograd.layers import FusedBatchNormalization
from tf_sparse_winograd.layers import WinogradConv2D

CONV_TYPES = ("spatial", "winograd", "winograd_relu")
# Batch-norm moving-average momentum: 0.9 rather than Keras' 0.99 so that the inference statistics
# are usable after the short runs this package is often used for (a few hundred steps).
BN_MOMENTUM = 0.9


def batch_norm(name):
    return FusedBatchNormalization(momentum=BN_MOMENTUM, name=name)


def check_conv_type(conv_type):
    if conv_type not in CONV_TYPES:
        raise ValueError(f"`conv_type` must be one of {CONV_TYPES}. Received: conv_type={conv_type!r}")
    return conv_type


def conv3x3(filters, conv_type, tile_size=2, winograd_relu=False, weight_decay=0.0, name=None,
            kernel_gradient_scale="transform"):
    """A bias-free 3x3 stride-1 'same' convolution of the given type (batch norm follows it)."""
    check_conv_type(conv_type)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    if conv_type == "spatial":
        if winograd_relu:
            raise ValueError("A 'spatial' convolution cannot apply a Winograd-domain ReLU.")
        return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                   kernel_initializer="he_normal",
                                   kernel_regularizer=regularizer, name=name)
    return WinogradConv2D(filters, 3, tile_size=tile_size, padding="same", use_bias=False,
                          winograd_relu=bool(winograd_relu), kernel_initializer="he_normal",
                          kernel_regularizer=regularizer, name=name,
                          kernel_gradient_scale=kernel_gradient_scale)


class ConvStack:
    """Builds conv units for one network, keeping track of where the ReLU went.

    Args:
      conv_type: 'spatial', 'winograd' or 'winograd_relu'.
      tile_size: m of F(m x m, 3 x 3) for the Winograd types.
      weight_decay: L2 factor on conv kernels (the Winograd kernel U for the Winograd types).
      kernel_gradient_scale: WinogradConv2D's argument of that name, for the Winograd types.
    """

    def __init__(self, conv_type, tile_size=2, weight_decay=0.0, kernel_gradient_scale="transform"):
        self.conv_type = check_conv_type(conv_type)
        self.tile_size = tile_size
        self.weight_decay = weight_decay
        self.kernel_gradient_scale = kernel_gradient_scale
        self._count = 0

    @property
    def moves_relu(self):
        return self.conv_type == "winograd_relu"

    def unit(self, x, filters, next_is_winograd_conv, pending_relu=False, name=None, relu=True):
        """conv -> BN -> ReLU (or no ReLU when the next conv takes it over).

        Args:
          x: input tensor.
          filters: output channels.
          next_is_winograd_conv: True when the output feeds (only) a 3x3 conv of this stack, which
            can then apply the ReLU in its Winograd domain.
          pending_relu: True when `x` has not had its ReLU yet (the previous unit passed it on);
            then this conv applies it as a Winograd-domain ReLU.
          name: layer name prefix (default conv1, conv2, ... in call order).
          relu: False to end the unit at batch norm whatever comes next (a residual sum follows);
            the returned flag is then True: the output owes a ReLU.
        Returns:
          (output tensor, whether the output still owes a ReLU).
        """
        self._count += 1
        name = name or f"conv{self._count}"
        if pending_relu and not self.moves_relu:
            raise ValueError("Only conv_type='winograd_relu' defers ReLUs.")
        x = conv3x3(filters, self.conv_type, self.tile_size, winograd_relu=pending_relu,
                    weight_decay=self.weight_decay, name=name,
                    kernel_gradient_scale=self.kernel_gradient_scale)(x)
        x = batch_norm(f"{name}_bn")(x)
        if not relu or (self.moves_relu and next_is_winograd_conv):
            return x, True
        return keras.layers.ReLU(name=f"{name}_relu")(x), False


def settle_relu(x, pending_relu, name):
    """Applies a ReLU that was deferred but whose consumer turned out not to be a Winograd conv."""
    return keras.layers.ReLU(name=name)(x) if pending_relu else x
