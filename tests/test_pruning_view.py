"""The pruning view: walking nested models, prunable and convolution layers by registration
(never by class name), masked kernels, and the model-argument check of every public function."""

import keras
import numpy as np
import pytest

from tf_sparse_winograd import analysis
from tf_sparse_winograd import export
from tf_sparse_winograd import pruning
from tf_sparse_winograd.layers import WinogradConv2D


def _nested_model():
    """Functional model: conv -> nested Sequential (Winograd conv, ReLU) -> the shared Dense,
    called twice -> sum."""
    inner = keras.Sequential([keras.Input((6, 6, 3)), WinogradConv2D(4, tile_size=2, name="wino"),
                              keras.layers.ReLU(name="relu")], name="block")
    shared = keras.layers.Dense(5, name="shared")
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="first")(inputs)
    x = keras.layers.Flatten(name="flatten")(inner(x))
    outputs = keras.layers.Add(name="add")([shared(x), shared(x)])
    return keras.Model(inputs, outputs)


def test_walk_layers_enters_nested_models_and_yields_shared_layers_once():
    model = _nested_model()
    names = [layer.name for layer in pruning.walk_layers(model)
             if not isinstance(layer, keras.layers.InputLayer)]
    assert names == ["first", "wino", "relu", "flatten", "shared", "add"]


class _ConvLookalike(keras.layers.Layer):
    """A layer whose class name says 'conv' and which has a kernel, but which says nothing."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 2))

    def call(self, x):
        return x


class _Projection(keras.layers.Layer):
    """A user's layer that implements the PrunableLayer interface."""

    def build(self, input_shape):
        self.matrix = self.add_weight(shape=(input_shape[-1], 3))

    def call(self, x):
        return x @ self.matrix

    def get_prunable_weights(self):
        return [self.matrix]


def test_prunable_and_convolution_only_because_the_layer_says_so():
    lookalike = _ConvLookalike(name="my_conv")
    lookalike.build((None, 4, 4, 2))
    assert not pruning.is_prunable(lookalike) and not pruning.is_convolution(lookalike)
    with pytest.raises(ValueError, match="not prunable"):
        pruning.prunable_weights(lookalike)
    projection = _Projection()
    projection.build((None, 4))
    assert pruning.is_prunable(projection) and not pruning.is_convolution(projection)
    assert pruning.prunable_weights(projection) == [projection.matrix]
    assert pruning.is_convolution(WinogradConv2D(2)) and pruning.is_convolution(
        keras.layers.DepthwiseConv2D(3)) and not pruning.is_convolution(keras.layers.Dense(2))

    class Registered(_ConvLookalike):
        pass

    pruning.register_layer(Registered, weights=("kernel",), convolution=True)
    registered = Registered()
    registered.build((None, 4, 4, 2))
    assert pruning.is_convolution(registered)
    assert pruning.prunable_weights(registered) == [registered.kernel]
    with pytest.raises(TypeError, match="layer_class"):
        pruning.register_layer("Conv2D")
    with pytest.raises(ValueError, match="weights=None"):
        pruning.register_layer(_ConvLookalike)


def test_effective_kernel_applies_the_mask_the_variable_may_not_have_yet():
    model = _nested_model()
    pruned = pruning.prune_low_magnitude(model, pruning_schedule=0.5)
    wrappers = {pruning.unwrap(w).name: w for w in pruning.collect_prunable_layers(pruned)}
    assert sorted(wrappers) == ["first", "shared", "wino"]  # The nested one included.
    wrapper = wrappers["wino"]
    rng = np.random.default_rng(0)
    mask = (rng.random(wrapper.masks[0].shape) < 0.3).astype(np.float32)
    wrapper.masks[0].assign(mask)
    kernel = rng.normal(size=mask.shape).astype(np.float32)
    pruning.unwrap(wrapper).winograd_kernel.assign(kernel)  # Not re-masked until called.
    np.testing.assert_array_equal(pruning.masks(wrapper)[0], mask)
    np.testing.assert_array_equal(pruning.effective_kernel(wrapper), kernel * mask)
    plain = pruning.unwrap(wrapper)
    assert pruning.masks(plain) is None
    np.testing.assert_array_equal(pruning.effective_kernel(plain), kernel)
    report = {row.layer: row for row in pruning.sparsity_report(pruned)}
    assert report["wino"].nonzero == np.count_nonzero(kernel * mask)
    assert analysis.weight_density(wrapper) == pytest.approx(np.count_nonzero(kernel * mask)
                                                             / kernel.size)


def test_count_multiplies_counts_and_measures_layers_of_nested_models():
    model = _nested_model()
    images = np.random.default_rng(1).normal(size=(4, 6, 6, 2)).astype(np.float32)
    counts = {c.name: c for c in analysis.count_multiplies(model, [images]).layers}
    assert sorted(counts) == ["first", "shared", "wino"]
    assert counts["wino"].kind == "winograd"
    assert counts["wino"].winograd_multiplies == 9 * 16 * 3 * 4
    # Measured where the multiplies happen: the transformed tiles of the nested conv's input.
    assert 0.9 < counts["wino"].activation_density <= 1.0
    # The shared Dense layer, called twice, is counted and measured once, at its first call.
    assert counts["shared"].direct_multiplies == 4 * 6 * 6 * 5
    assert 0.0 < counts["shared"].activation_density < 1.0  # After the nested ReLU.


_PUBLIC_MODEL_FUNCTIONS = [
    ("prune_to_density", lambda m: pruning.prune_to_density(m, 0.5), "model"),
    ("strip_pruning", pruning.strip_pruning, "model"),
    ("prune_low_magnitude", pruning.prune_low_magnitude, "to_prune"),
    ("sparsity_report", pruning.sparsity_report, "model"),
    ("count_multiplies", analysis.count_multiplies, "model"),
    ("to_sparse", export.to_sparse, "model"),
    ("export_saved_model", lambda m: export.export_saved_model(m, "/nonexistent/x"), "model"),
]


@pytest.mark.parametrize("name,function,argument", _PUBLIC_MODEL_FUNCTIONS,
                         ids=[f[0] for f in _PUBLIC_MODEL_FUNCTIONS])
def test_public_functions_taking_a_model_reject_other_objects_by_name(name, function, argument):
    with pytest.raises(TypeError, match=rf"{argument}='hello' \(type str\)"):
        function("hello")


def test_unbuilt_and_subclassed_models_get_value_errors():
    with pytest.raises(ValueError, match="built"):
        export.to_sparse(keras.Sequential([keras.layers.Dense(2)]))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        pruning.prune_to_density(Subclassed(), 0.5)
