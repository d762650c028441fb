"""to_winograd: existing Keras CNNs with their eligible convolutions as WinogradConv2D, same
outputs, a per-layer report, and clear errors for what it cannot take."""

import keras
import numpy as np
import pytest

import support
import tf_sparse_winograd as tfsw
from tf_sparse_winograd import models
from tf_sparse_winograd.layers import WinogradConv2D

# Whole-network output error relative to the largest output, per tile size: measured 1e-6 to
# 1.1e-5 on VGG-16/19 and ResNet-50 with random weights (F(6x6) rounds most).
RELATIVE_BOUND = {2: 2e-5, 4: 5e-5, 6: 2e-4}


def _images(shape, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch,) + shape).astype(np.float32)


def _assert_same_outputs(original, converted, x, tile_size):
    expected = np.asarray(original(x))
    actual = np.asarray(converted(x))
    assert actual.shape == expected.shape
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert error < RELATIVE_BOUND[tile_size], (error, tile_size)


def _eligible_convolutions(model):
    return [layer.name for layer in tfsw.pruning.walk_layers(model)
            if type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (3, 3)  # pylint: disable=unidiomatic-typecheck
            and tuple(layer.strides) == (1, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("application,tile_size", [
    (keras.applications.VGG16, 4), (keras.applications.VGG19, 2),
    (keras.applications.ResNet50, 6)])
def test_keras_applications(application, tile_size):
    model = application(weights=None, input_shape=(64, 64, 3), classes=10,
                        classifier_activation=None)
    converted, report = tfsw.to_winograd(model, tile_size=tile_size, return_report=True)
    expected = _eligible_convolutions(model)
    assert report.converted == expected and expected
    for name in expected:
        layer = converted.get_layer(name)
        original = model.get_layer(name)
        assert isinstance(layer, WinogradConv2D) and layer.tile_size == tile_size
        assert layer.use_bias == original.use_bias
        assert keras.activations.serialize(layer.activation) == keras.activations.serialize(
            original.activation)
    names = lambda m: [l.name for l in m.layers if not isinstance(l, keras.layers.InputLayer)]
    assert names(converted) == names(model)
    assert [t.name for t in converted.inputs] == [t.name for t in model.inputs]
    skipped = report.skipped
    assert set(skipped) == {row.layer for row in report} - set(expected)
    if application is keras.applications.ResNet50:
        assert skipped["conv1_conv"] == "kernel 7x7, not 3x3"
        assert skipped["conv2_block1_1_conv"] == "kernel 1x1, not 3x3"
    _assert_same_outputs(model, converted, _images((64, 64, 3)), tile_size)


@pytest.mark.slow
def test_vgg16_at_imagenet_size():
    model = keras.applications.VGG16(weights=None, classifier_activation=None)
    converted = tfsw.to_winograd(model, tile_size=4)
    _assert_same_outputs(model, converted, _images((224, 224, 3), batch=1), 4)


@pytest.mark.parametrize("name", support.fast_sample(list(models.MODEL_NAMES), 3))
def test_repository_models_built_spatial(name):
    model = models.build_model(name, (20, 20, 3), 10, "spatial", width=0.125)
    _randomize_batch_norms(model)
    converted, report = tfsw.to_winograd(model, tile_size=2, return_report=True)
    assert report.converted == _eligible_convolutions(model)
    _assert_same_outputs(model, converted, _images((20, 20, 3)), 2)


def _randomize_batch_norms(model):
    rng = np.random.default_rng(5)
    for layer in tfsw.pruning.walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.1, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))


def _every_kind_model():
    """Each kind of convolution the converter must keep, and two it converts."""
    inputs = keras.Input((12, 12, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="same3x3")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="valid", activation="relu", name="valid3x3")(x)
    kept = [keras.layers.Conv2D(4, 3, strides=2, padding="same", name="strided"),
            keras.layers.Conv2D(4, 1, name="pointwise"),
            keras.layers.Conv2D(4, 7, padding="same", name="big"),
            keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2, name="dilated"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise"),
            keras.layers.Conv2D(4, 3, padding="same", groups=2, name="grouped"),
            keras.layers.SeparableConv2D(4, 3, padding="same", name="separable"),
            keras.layers.Conv2D(4, 3, padding="same", kernel_constraint="max_norm",
                                name="constrained")]
    outputs = [keras.layers.GlobalAveragePooling2D()(layer(x)) for layer in kept]
    return keras.Model(inputs, keras.layers.Concatenate()(outputs))


def test_every_kept_kind_is_reported_with_its_reason():
    model = _every_kind_model()
    converted, report = tfsw.to_winograd(model, tile_size=2, return_report=True)
    assert report.converted == ["same3x3", "valid3x3"]
    assert report.skipped == {
        "strided": "strides (2, 2)", "pointwise": "kernel 1x1, not 3x3",
        "big": "kernel 7x7, not 3x3", "dilated": "dilation (2, 2)",
        "depthwise": "a DepthwiseConv2D, not a keras.layers.Conv2D", "grouped": "groups=2",
        "separable": "a SeparableConv2D, not a keras.layers.Conv2D",
        "constrained": "a kernel constraint (it acts on the spatial kernel, which a "
                       "WinogradConv2D does not have)"}
    for name in report.skipped:
        assert type(converted.get_layer(name)) is type(model.get_layer(name))  # pylint: disable=unidiomatic-typecheck
    _assert_same_outputs(model, converted, _images((12, 12, 4)), 2)
    lines = []
    tfsw.to_winograd(model, print_fn=lines.append)
    assert "2 of 10 convolutions converted." in lines[0] and "kept: groups=2" in lines[0]


def test_channels_first_is_kept():
    inputs = keras.Input((3, 8, 8))
    outputs = keras.layers.Conv2D(2, 3, data_format="channels_first", name="cf")(inputs)
    _, report = tfsw.to_winograd(keras.Model(inputs, outputs), return_report=True)
    assert report.skipped == {"cf": "data_format='channels_first'"}


def test_shared_layer_stays_shared_and_nested_sequential_is_converted():
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    block = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(5, 3, padding="same", name="inner"),
                              keras.layers.ReLU()], name="block")
    inputs = keras.Input((8, 8, 3))
    x = shared(keras.layers.ReLU()(shared(inputs)))
    model = keras.Model(inputs, block(x))
    converted, report = tfsw.to_winograd(model, tile_size=4, return_report=True)
    assert report.converted == ["shared", "inner"]
    assert isinstance(converted.get_layer("block").get_layer("inner"), WinogradConv2D)
    # One layer object called twice, as in the original.
    calls = [l for l in converted.layers if l.name == "shared"]
    assert len(calls) == 1 and isinstance(calls[0], WinogradConv2D)
    _assert_same_outputs(model, converted, _images((8, 8, 3)), 4)


def test_tile_size_per_layer_and_layer_selection():
    model = _every_kind_model()
    _, report = tfsw.to_winograd(model, tile_size={"same3x3": 6}, return_report=True)
    assert report.converted == ["same3x3"] and report[0].tile_size == 6
    assert report.skipped["valid3x3"] == "no tile size given (`tile_size`)"
    _, report = tfsw.to_winograd(model, tile_size={"same3x3": 6, "valid3x3": None},
                                 return_report=True)
    assert report.skipped["valid3x3"] == "`tile_size` maps it to None"
    _, report = tfsw.to_winograd(model, tile_size=lambda layer: 4, layers=["valid3x3"],
                                 return_report=True)
    assert report.converted == ["valid3x3"] and report.skipped["same3x3"] == (
        "not selected (`layers`)")
    _, report = tfsw.to_winograd(model, layers=lambda layer: layer.name == "same3x3",
                                 return_report=True)
    assert report.converted == ["same3x3"]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, x):
        return self.conv(x)


def test_bad_arguments_name_the_argument():
    model = _every_kind_model()
    with pytest.raises(ValueError, match=r"Received: tile_size=3$"):
        tfsw.to_winograd(model, tile_size=3)
    with pytest.raises(ValueError, match=r"Received: tile_size=5 for layer 'same3x3'"):
        tfsw.to_winograd(model, tile_size={"same3x3": 5})
    with pytest.raises(ValueError, match="the callable for layer"):
        tfsw.to_winograd(model, tile_size=lambda layer: "2")
    with pytest.raises(ValueError, match=r"layers the model does not have: \['nope'\]"):
        tfsw.to_winograd(model, layers=["same3x3", "nope"])
    with pytest.raises(TypeError, match="`layers` must be"):
        tfsw.to_winograd(model, layers="same3x3")
    with pytest.raises(TypeError, match=r"model=<object object"):
        tfsw.to_winograd(object())
    with pytest.raises(ValueError, match="subclassed"):
        subclassed = _Subclassed()
        subclassed(np.zeros((1, 5, 5, 1), np.float32))
        tfsw.to_winograd(subclassed)
    with pytest.raises(ValueError, match="built"):
        tfsw.to_winograd(keras.Sequential([keras.layers.Conv2D(2, 3)]))


_SERVE = """
import sys
import numpy as np
import tensorflow as tf
import tf_sparse_winograd  # registers the ops
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
(y,) = serve(tf.constant(np.load(sys.argv[2]))).values()
np.save(sys.argv[3], y.numpy())
"""


@pytest.mark.slow
@pytest.mark.parametrize("pruning_method", ["prune_to_density", "prune_low_magnitude"])
def test_converted_resnet50_through_the_whole_pipeline(tmp_path, pruning_method):
    """Convert, prune, retrain a step, strip (both pruning methods), export, serve in a fresh
    process (once): same outputs, the 3x3 convolutions on the sparse op, everything else
    ordinary TF ops."""
    model = keras.applications.ResNet50(weights=None, input_shape=(48, 48, 3), classes=10,
                                        classifier_activation=None)
    converted = tfsw.to_winograd(model, tile_size=4)
    # The convolutions are pruned; the classifier stays dense (pruned, it would run on the
    # sparse FC op).
    if pruning_method == "prune_to_density":
        pruned = tfsw.pruning.prune_to_density(
            converted, lambda layer: 0.4 if tfsw.pruning.is_convolution(layer) else None)
    else:
        schedule = tfsw.pruning.ConstantSparsity(0.6, begin_step=0, frequency=1)
        pruned = tfsw.pruning.prune_low_magnitude(
            converted, lambda layer: schedule if tfsw.pruning.is_convolution(layer) else None)
    pruned.compile(optimizer=keras.optimizers.SGD(1e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _images((48, 48, 3), batch=4, seed=3)
    pruned.fit(x, np.arange(4) % 10, epochs=1, batch_size=4, verbose=0,
               callbacks=[tfsw.pruning.UpdatePruningStep()])
    report = {row.layer: row for row in tfsw.pruning.sparsity_report(pruned)}
    winograd = _eligible_convolutions(model)
    for name in winograd:
        assert report[name].layer_class == "WinogradConv2D"
        assert report[name].density == pytest.approx(0.4, abs=0.01)
    stripped = tfsw.pruning.strip_pruning(pruned)
    if pruning_method == "prune_low_magnitude":
        # Stripped, both methods leave the same layers: one export and fresh process is enough.
        assert {type(layer) for layer in tfsw.pruning.walk_layers(stripped)} == {
            type(layer) for layer in tfsw.pruning.walk_layers(converted)}
        return
    path = str(tmp_path / "saved")
    sparse = tfsw.export.export_saved_model(stripped, path)
    kinds = {layer.name: type(layer).__name__ for layer in tfsw.pruning.walk_layers(sparse)}
    assert all(kinds[name] == "SparseWinogradConv2D" for name in winograd)
    assert kinds["conv1_conv"] == "Conv2D" and kinds["conv3_block1_1_conv"] == "Conv2D"
    assert kinds["conv2_block1_add"] == "Add" and kinds["avg_pool"] == "GlobalAveragePooling2D"
    assert kinds["predictions"] == "Dense"
    assert "conv2_block1_2_bn" not in kinds  # Folded into the 3x3 convolution before it.
    assert kinds["conv2_block1_1_bn"] == "BatchNormalization"  # After a 1x1 Conv2D: kept.
    op_types = tfsw.export.graph_op_types(path)
    assert {"SparseWinograd>Conv2D", "Conv2D", "AddV2", "MatMul"} <= op_types
    np.save(tmp_path / "x.npy", x)
    support.run_python(_SERVE, path, tmp_path / "x.npy", tmp_path / "y.npy")
    expected = np.asarray(stripped(x, training=False))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4,
                               atol=1e-4 * np.max(np.abs(expected)))


@pytest.mark.slow
def test_imagenet_resnet18_keeps_its_strided_and_projection_convolutions():
    model = models.imagenet_resnet18.build(input_shape=(64, 64, 3), num_classes=7)
    _randomize_batch_norms(model)
    converted, report = tfsw.to_winograd(model, tile_size=4, return_report=True)
    assert len(report) == 20 and len(report.converted) == 13
    assert report.skipped["stem_conv"] == "kernel 7x7, not 3x3"
    assert report.skipped["stage2_block1_1_conv"] == "strides (2, 2)"
    assert report.skipped["stage2_block1_shortcut_conv"] == "kernel 1x1, not 3x3"
    _assert_same_outputs(model, converted, _images((64, 64, 3)), 4)
