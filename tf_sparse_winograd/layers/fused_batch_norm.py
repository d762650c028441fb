"""`FusedBatchNormalization`: Keras 3's BatchNormalization, trained with TensorFlow's fused kernel.

Keras 3 computes batch statistics and the normalization from generic ops (moments, subtract,
multiply, ...); their gradients broadcast with Tile and multiply several full-size tensors. On the
CPU that costs about as much as the convolutions of VGG-nagadomi x0.25 (a third of a training step
on 2 cores). TensorFlow's FusedBatchNormV3 and its gradient do the same work in one pass each
(oneDNN kernels). This subclass uses them in training for channels-last 4-D and 2-D inputs and
otherwise defers to Keras. The layer keeps Keras' variables, configuration and inference
computation, and updates the moving statistics as Keras does (with the biased batch variance), so
a checkpoint of either class loads into the other and inference is the same function.
"""

import keras
import tensorflow as tf

_PACKAGE = "tf_sparse_winograd"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step runs on TF's fused batch-norm kernel.

    Inference, and every case the fused kernel does not cover (masks, renorm, synchronized
    statistics, an axis other than the last, a rank other than 2 or 4, inputs other than float32,
    no scale or center), is Keras' own code.
    """

    # export.folding folds this layer like a keras.layers.BatchNormalization: its inference
    # computation is inherited unchanged.
    inference_is_batch_normalization = True

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        axis = self.axis if isinstance(self.axis, int) else None
        return (mask is None and not self.renorm and not self.synchronized and rank in (2, 4)
                and axis in (-1, rank - 1) and inputs.dtype == tf.float32
                and self.compute_dtype == "float32" and self.scale and self.center
                and inputs.shape[-1] is not None)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The kernel returns the Bessel-corrected variance; Keras averages the biased one.
        count = tf.cast(tf.size(x) // channels, tf.float32)
        variance = unbiased_variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y if len(inputs.shape) == 4 else tf.reshape(y, tf.shape(inputs))
