"""SparseWinogradConv2D: made from WinogradConv2D layers, same outputs, only nonzeros stored."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from tf_sparse_winograd.layers.sparse_winograd_conv2d import SparseWinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D

RNG_SEED = 1234


def _pruned_winograd(filters=6, in_channels=5, tile_size=2, density=0.4, seed=RNG_SEED, **kwargs):
    """A built WinogradConv2D whose kernel keeps the `density` largest-magnitude entries."""
    rng = np.random.default_rng(seed)
    layer = WinogradConv2D(filters, tile_size=tile_size, **kwargs)
    layer.build((None, None, None, in_channels))
    kernel = rng.normal(size=layer.winograd_kernel.shape).astype(np.float32)
    if density < 1.0:
        threshold = np.quantile(np.abs(kernel), 1.0 - density)
        kernel[np.abs(kernel) < threshold] = 0.0
    layer.winograd_kernel.assign(kernel)
    if layer.use_bias:
        layer.bias.assign(rng.normal(size=filters).astype(np.float32))
    return layer


def _inputs(shape, seed=RNG_SEED + 1):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("tile_size,padding,winograd_relu,activation,use_bias", [
    (2, "same", False, None, True),
    (2, "valid", True, "relu", False),
    (4, "same", True, "relu", True),
    (4, "valid", False, "sigmoid", True),
])
def test_from_winograd_matches_dense_layer(tile_size, padding, winograd_relu, activation, use_bias):
    dense = _pruned_winograd(tile_size=tile_size, padding=padding, winograd_relu=winograd_relu,
                             activation=activation, use_bias=use_bias)
    sparse = SparseWinogradConv2D.from_winograd(dense)
    assert sparse.name == dense.name and sparse.trainable_weights == []
    assert sparse.nnz() == np.count_nonzero(dense.winograd_kernel.numpy())
    x = _inputs((3, 9, 7, 5))
    _assert_close(sparse(x), dense(x))


def test_from_pruning_wrapper_applies_the_mask():
    pruning = pytest.importorskip("tf_sparse_winograd.pruning")
    layer = _pruned_winograd(density=1.0)
    model = keras.Sequential([keras.Input((8, 8, 5)), layer])
    pruned = pruning.prune_to_density(model, 0.25, skip_first_conv=False)
    wrapper = pruned.layers[0]
    mask = next(m for w, m, _ in wrapper.pruning_vars).numpy()
    # Put the pruned weights back to nonzero values: from_winograd must use the mask, not the zeros.
    wrapper.layer.winograd_kernel.assign(np.random.default_rng(0).normal(
        size=mask.shape).astype(np.float32))
    sparse = SparseWinogradConv2D.from_winograd(wrapper)
    assert sparse.nnz() == int(mask.sum())
    expected = SparseWinogradConv2D.from_kernel(
        wrapper.layer.winograd_kernel.numpy() * mask, wrapper.layer.bias.numpy(),
        tile_size=2, padding="same")
    x = _inputs((2, 8, 8, 5))
    np.testing.assert_array_equal(sparse(x), expected(x))


def test_density_zero_and_keras_file_round_trip(tmp_path):
    for density in (0.0, 0.3):
        layer = _pruned_winograd(tile_size=4, density=density)
        if density == 0.0:
            layer.winograd_kernel.assign(tf.zeros_like(layer.winograd_kernel))
        sparse = SparseWinogradConv2D.from_winograd(layer)
        model = keras.Sequential([keras.Input((6, 10, 5)), sparse])
        path = str(tmp_path / f"sparse_{density}.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
        x = _inputs((2, 6, 10, 5))
        np.testing.assert_array_equal(reloaded(x), model(x))
        _assert_close(model(x), layer(x))
        assert reloaded.layers[0].nnz() == np.count_nonzero(layer.winograd_kernel.numpy())


def test_get_config_round_trip_keeps_every_argument():
    sparse = SparseWinogradConv2D.from_winograd(
        _pruned_winograd(tile_size=4, padding="valid", winograd_relu=True, activation="relu"))
    config = sparse.get_config()
    clone = SparseWinogradConv2D.from_config(config)
    assert clone.get_config() == config
    for key in ("filters", "packed_spec", "tile_size", "padding", "use_bias", "activation",
                "winograd_relu", "in_channels"):
        assert key in config


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="filters"):
        SparseWinogradConv2D(0, packed_spec={"values": {"shape": [1], "dtype": "float32"}})
    with pytest.raises(ValueError, match="packed_spec"):
        SparseWinogradConv2D(4, packed_spec={})
    with pytest.raises(ValueError, match="winograd_kernel"):
        SparseWinogradConv2D.from_kernel(np.zeros((3, 3, 2, 2)), tile_size=2)
    with pytest.raises(ValueError, match="WinogradConv2D"):
        SparseWinogradConv2D.from_winograd(keras.layers.Dense(3))
