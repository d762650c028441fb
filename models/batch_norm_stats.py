"""Batch-norm statistics away from the identity, for tests and benchmarks of exported models.

A freshly built model's batch norms compute the identity (mean 0, variance 1, scale 1, offset 0):
an export that folded them wrongly, or dropped them, would go unnoticed. These values make every
batch norm a real per-channel affine map.
"""

import keras


def randomize_batch_norms(model, rng):
    """Sets every BatchNormalization layer's statistics and affine parameters from `rng`."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0.0, 0.1, n))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
