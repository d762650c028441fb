"""Tests for the model builders: every model x conv type builds, trains a step, places its ReLUs."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import support
from tf_sparse_winograd import models
from tf_sparse_winograd import data
from tf_sparse_winograd.layers import WinogradConv2D


def _convs(model):
    return [l for l in model.layers if isinstance(l, (WinogradConv2D, keras.layers.Conv2D))]


@pytest.mark.parametrize("name,conv_type", support.fast_sample(
    [(name, conv_type) for name in models.MODEL_NAMES for conv_type in models.CONV_TYPES], 9))
def test_builds_and_trains_a_step_on_mock_data(name, conv_type):
    keras.utils.set_random_seed(0)
    with tfds.testing.mock_data(num_examples=8):
        ds, info = data.load_dataset("fashion_mnist", "train", batch_size=4, training=True,
                                     source="tfds")
    model = models.build_model(name, info["image_shape"], info["num_classes"], conv_type,
                               width=1 / 16)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(ds.take(1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, np.array(w)) for b, w in zip(before, model.trainable_weights))
    winograd = [l for l in model.layers if isinstance(l, WinogradConv2D)]
    if conv_type == "spatial":
        assert not winograd
    else:
        assert winograd and all(l.tile_size == 2 for l in winograd)


@pytest.mark.slow
def test_any_input_size_and_channels():
    model = models.build_model("vgg_nagadomi", (20, 36, 5), 7, "winograd", tile_size=4, width=0.1)
    assert model(np.zeros((2, 20, 36, 5), np.float32)).shape == (2, 7)


def test_vgg_winograd_relu_moves_relu_into_next_layer():
    model = models.build_model("vgg_nagadomi", (32, 32, 3), 10, "winograd_relu", width=0.1)
    convs = _convs(model)
    assert len(convs) == 8
    assert [c.winograd_relu for c in convs] == [False] + [True] * 7
    relus = [l.name for l in model.layers if isinstance(l, keras.layers.ReLU)]
    # Only the last conv (feeding the FC layers) and the FC layers keep spatial ReLUs.
    assert relus == ["conv8_relu", "fc1_relu", "fc2_relu"]
    # Batch norm stays right after each conv.
    names = [l.name for l in model.layers]
    for c in convs:
        assert names[names.index(c.name) + 1] == f"{c.name}_bn"


@pytest.mark.parametrize("conv_type", ["spatial", "winograd"])
def test_vgg_plain_types_keep_spatial_relus(conv_type):
    model = models.build_model("vgg_nagadomi", (32, 32, 3), 10, conv_type, width=0.1)
    relus = [l.name for l in model.layers if isinstance(l, keras.layers.ReLU)]
    assert relus == [f"conv{i}_relu" for i in range(1, 9)] + ["fc1_relu", "fc2_relu"]
    assert not any(getattr(c, "winograd_relu", False) for c in _convs(model))


def test_moving_the_relu_changes_the_function():
    """'winograd' and 'winograd_relu' share their weights' shapes but not their function."""
    keras.utils.set_random_seed(1)
    a = models.build_model("vgg_nagadomi", (16, 16, 1), 10, "winograd", width=0.1)
    b = models.build_model("vgg_nagadomi", (16, 16, 1), 10, "winograd_relu", width=0.1)
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    assert not np.allclose(a(x), b(x))


def test_convpool_and_resnet_structure():
    c = models.build_model("convpool_cnn_c", (32, 32, 3), 100, "winograd_relu", width=0.1)
    wino = [l for l in c.layers if isinstance(l, WinogradConv2D)]
    assert len(wino) == 7 and [l.winograd_relu for l in wino] == [False] + [True] * 6
    r = models.build_model("resnet18", (32, 32, 3), 10, "winograd_relu", width=0.1)
    wino = [l for l in r.layers if isinstance(l, WinogradConv2D)]
    assert len(wino) == 17 and wino[0].name == "stem" and not wino[0].winograd_relu
    assert all(l.winograd_relu for l in wino[1:])
    assert not any(isinstance(l, keras.layers.Conv2D) and l.strides != (1, 1) for l in r.layers)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="conv_type"):
        models.build_model("vgg_nagadomi", (32, 32, 3), 10, "sparse")
    with pytest.raises(ValueError, match="model"):
        models.build_model("vgg16", (32, 32, 3), 10)
