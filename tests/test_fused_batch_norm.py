"""FusedBatchNormalization trains like keras.layers.BatchNormalization, on TF's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_sparse_winograd.export import folding
from tf_sparse_winograd.models import conv_block
from tf_sparse_winograd.layers import FusedBatchNormalization


def _pair(shape, rng):
    layers = [keras.layers.BatchNormalization(momentum=0.9),
              FusedBatchNormalization(momentum=0.9)]
    gamma, beta = rng.uniform(0.5, 2.0, shape[-1]), rng.normal(0, 1, shape[-1])
    for layer in layers:
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return layers


def _train_call(layer, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * dy)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [y] + grads + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("shape", [(8, 5, 6, 3), (16, 7)])
def test_training_matches_keras_batch_norm(shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 3.0, shape), tf.float32)
    dy = tf.constant(rng.normal(0.0, 1.0, shape), tf.float32)
    keras_bn, fused = _pair(shape, rng)
    for _ in range(2):  # the moving statistics follow Keras' update twice in a row
        expected, actual = _train_call(keras_bn, x, dy), _train_call(fused, x, dy)
        for name, e, a in zip(["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"],
                              expected, actual):
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-4, atol=1e-4,
                                       err_msg=name)
    np.testing.assert_allclose(fused(x, training=False), keras_bn(x, training=False), atol=1e-6)


def test_runs_the_fused_kernel_in_training_only():
    layer = FusedBatchNormalization()
    layer.build((2, 4, 4, 3))
    spec = tf.TensorSpec((2, 4, 4, 3), tf.float32)
    training = tf.function(lambda x: layer(x, training=True)).get_concrete_function(spec)
    inference = tf.function(lambda x: layer(x, training=False)).get_concrete_function(spec)
    ops = lambda f: {op.type for op in f.graph.get_operations()}
    assert any(t.startswith("FusedBatchNorm") for t in ops(training))
    assert not any(t.startswith("FusedBatchNorm") for t in ops(inference))


def test_falls_back_to_keras_where_the_kernel_does_not_apply():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0, 1, (4, 3, 5)), tf.float32)  # rank 3: Keras' code path
    keras_bn, fused = _pair((4, 3, 5), rng)
    np.testing.assert_allclose(fused(x, training=True), keras_bn(x, training=True), atol=1e-5)


def test_models_use_it_and_export_folds_it():
    layer = conv_block.batch_norm("bn")
    assert isinstance(layer, FusedBatchNormalization)
    layer.build((None, 4, 4, 3))
    assert folding.foldable_batch_norm(layer)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is FusedBatchNormalization and restored.momentum == layer.momentum

    class Other(keras.layers.BatchNormalization):  # an arbitrary subclass is not folded
        pass
    other = Other()
    other.build((None, 4, 4, 3))
    assert not folding.foldable_batch_norm(other)
