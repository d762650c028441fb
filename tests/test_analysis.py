"""Tests for count_multiplies: hand counts, the paper's VGG-nagadomi numbers, measured densities."""

import keras
import numpy as np
import pytest

from tf_sparse_winograd import models
from tf_sparse_winograd import analysis
from tf_sparse_winograd.layers import WinogradConv2D
from winograd_reference import transformed_input


def _tiny(conv_type, relu_inside=False):
    inputs = keras.Input((6, 7, 2))
    if conv_type == "spatial":
        x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    else:
        x = WinogradConv2D(4, tile_size=2, name="c1")(inputs)
    x = WinogradConv2D(3, tile_size=4, winograd_relu=relu_inside, name="c2")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs)


def test_hand_count_on_tiny_model():
    result = analysis.count_multiplies(_tiny("spatial"))
    c1, c2, fc = result.layers
    # c1: 6*7 outputs * 9 * 2 * 4 direct; F(2x2): ceil(6/2)*ceil(7/2) = 12 tiles * 16 * 2 * 4.
    assert (c1.kind, c1.direct_multiplies, c1.winograd_multiplies) == ("conv3x3", 3024, 1536)
    # c2: Winograd F(4x4): ceil(6/4)*ceil(7/4) = 4 tiles * 36 * 4 * 3.
    assert (c2.kind, c2.direct_multiplies, c2.winograd_multiplies) == ("winograd", 4536, 1728)
    # fc: pooled 3x3x3 = 27 inputs * 5.
    assert (fc.kind, fc.direct_multiplies, fc.winograd_multiplies) == ("dense", 135, 135)
    assert result.total_direct == 3024 + 4536 + 135
    # Executed: the spatial conv runs direct, the Winograd one in its domain.
    assert result.total_executed == 3024 + 1728 + 135
    assert result.total_effective == pytest.approx(result.total_executed)
    assert "total" in str(result) and "| layer |" in result.format_table(markdown=True)


def test_vgg_nagadomi_matches_paper():
    spatial = analysis.count_multiplies(models.build_model("vgg_nagadomi", (32, 32, 3), 10))
    conv = sum(l.direct_multiplies for l in spatial.layers if l.kind == "conv3x3")
    fc = sum(l.direct_multiplies for l in spatial.layers if l.kind == "dense")
    assert conv == pytest.approx(2.28e8, rel=0.005)
    assert fc == pytest.approx(5.2e6, rel=0.02)
    assert spatial.total_direct == pytest.approx(2.3e8, rel=0.02)
    assert spatial.total_winograd == pytest.approx(1.1e8, rel=0.04)
    wino = analysis.count_multiplies(
        models.build_model("vgg_nagadomi", (32, 32, 3), 10, "winograd_relu"))
    assert wino.total_executed == spatial.total_winograd
    assert wino.total_direct == spatial.total_direct


def test_weight_density_sees_zeros_in_winograd_kernel():
    model = _tiny("winograd")
    c2 = model.get_layer("c2")
    u = np.array(c2.winograd_kernel)
    u.reshape(-1)[::4] = 0.0
    c2.winograd_kernel.assign(u)
    result = analysis.count_multiplies(model)
    layer = result.layers[1]
    assert layer.weight_density == pytest.approx(0.75, abs=1 / u.size)
    assert layer.effective_multiplies == pytest.approx(layer.winograd_multiplies * layer.weight_density)


@pytest.mark.parametrize("relu_inside", [False, True])
def test_measured_activation_density(relu_inside):
    keras.utils.set_random_seed(3)
    model = _tiny("winograd", relu_inside)
    rng = np.random.default_rng(0)
    batches = [np.maximum(rng.normal(size=(3, 6, 7, 2)), 0).astype(np.float32) for _ in range(2)]
    result = analysis.count_multiplies(model, dataset=batches)
    c1, c2, fc = result.layers
    images = np.concatenate(batches)
    per_image = (images != 0).reshape(6, -1).mean(1)
    assert c1.spatial_activation_density == pytest.approx(per_image.mean(), abs=1e-6)
    assert c1.spatial_activation_density_std == pytest.approx(per_image.std(), abs=1e-6)
    # c2's input is c1's output; its V is computed by hand.
    c1_out = keras.Model(model.inputs, model.get_layer("c1").output)(images).numpy()
    v = transformed_input(c1_out, 4, "SAME", relu_inside)
    expected = (np.abs(v) > 1e-6).reshape(6, -1).mean(1).mean()
    assert c2.activation_density == pytest.approx(expected, abs=0.02)
    if relu_inside:
        assert c2.activation_density < 0.8
        assert c2.effective_multiplies == pytest.approx(
            c2.winograd_multiplies * c2.weight_density * c2.activation_density)
    else:
        assert c2.activation_density > 0.95  # The transform fills in zeros (Figure 1a).
    assert result.measured and result.total_effective < result.total_executed
