"""Pruning wrapper, one-shot pruning, retraining with fixed masks, serialization and reports."""

import glob
import inspect
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_sparse_winograd import pruning
from tf_sparse_winograd.layers import WinogradConv2D
from tf_sparse_winograd.pruning import pruning_wrapper

SEED = 1234


def _data(n=16, seed=SEED):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 8, 8, 3)).astype("float32"),
            rng.standard_normal((n, 5)).astype("float32"))


def _model(seed=SEED):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_first")(inputs)
    x = WinogradConv2D(6, tile_size=2, activation="relu", name="wino")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv_second")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="dense")(x)
    return keras.Model(inputs, outputs)


def _reference_keep(values, keep):
    """Independent reference: flat indices of the `keep` largest |values|, ties to lower index."""
    flat = np.abs(np.asarray(values, np.float64).ravel())
    order = np.lexsort((np.arange(flat.size), -flat))
    return set(order[:keep].tolist())


# ------------------------------------------------------------------------------ mask maths
@pytest.mark.parametrize("density", [1.0, 0.75, 0.5, 0.37, 0.1, 0.001])
def test_magnitude_mask_keeps_exactly_the_largest(density):
    rng = np.random.default_rng(SEED)
    # Small integers: many ties, so the tie rule matters.
    w = rng.integers(-6, 7, size=(4, 4, 3, 5)).astype("float32")
    keep = max(1, round(density * w.size))
    threshold, mask = pruning.magnitude_mask(w, keep)
    mask = mask.numpy()
    assert mask.shape == w.shape and set(np.unique(mask)) <= {0.0, 1.0}
    assert int(mask.sum()) == keep
    kept = set(np.flatnonzero(mask.ravel()).tolist())
    assert kept == _reference_keep(w, keep)
    assert float(threshold) == np.min(np.abs(w.ravel()[sorted(kept)]))


def test_keep_count_rounds_like_tfmot():
    for size, sparsity in [(10, 0.25), (10, 0.35), (1000, 0.7), (7, 0.99), (5, 0.0)]:
        expected = max(1, int(np.round(np.float32(size) * (np.float32(1) - np.float32(sparsity)))))
        assert int(pruning.keep_count(size, sparsity)) == expected


# ------------------------------------------------------------------------- one-shot pruning
@pytest.mark.parametrize("density", [0.6, 0.25])
def test_prune_to_density_per_layer_density_and_magnitudes(density):
    model = _model()
    original = {l.name: [keras.ops.convert_to_numpy(w) for w in l.weights] for l in model.layers}
    pruned = pruning.prune_to_density(model, density)  # skip_first_conv=True by default.
    wrappers = {w.layer.name: w for w in pruning.collect_prunable_layers(pruned)}
    assert sorted(wrappers) == ["conv_second", "dense", "wino"]
    assert not isinstance(pruned.get_layer("conv_first"), pruning.PruneLowMagnitude)
    np.testing.assert_array_equal(pruned.get_layer("conv_first").kernel.numpy(),
                                  original["conv_first"][0])
    for name, wrapper in wrappers.items():
        (weight, mask, _), = wrapper.pruning_vars
        w = keras.ops.convert_to_numpy(weight)
        before = original[name][0]
        assert abs(np.count_nonzero(w) - density * w.size) <= 1, name
        kept = set(np.flatnonzero(w.ravel()).tolist())
        assert kept == _reference_keep(before, max(1, round(density * before.size))), name
        np.testing.assert_array_equal(w.ravel()[sorted(kept)], before.ravel()[sorted(kept)])
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask) != 0, w != 0)
        assert int(wrapper.pruning_step.numpy()) == 1
    # The original model is untouched (the pruned one holds copies).
    np.testing.assert_array_equal(model.get_layer("wino").winograd_kernel.numpy(),
                                  original["wino"][0])
    report = pruning.sparsity_report(pruned)
    assert report.density("wino") == pytest.approx(density, abs=1 / 384)
    assert report.density("conv_first") == 1.0


def test_prune_to_density_per_layer_dict_and_rounds():
    model = _model()
    pruned = pruning.prune_to_density(model, {"wino": 0.5, "dense": 0.2}, skip_first_conv=False)
    report = pruning.sparsity_report(pruned)
    assert report.density("wino") == pytest.approx(0.5, abs=1 / 384)
    assert report.density("dense") == pytest.approx(0.2, abs=1 / 25)
    assert report.density("conv_first") == 1.0 and report.density("conv_second") == 1.0
    # A second round prunes further, keeping a subset of the previous survivors.
    first = pruned.get_layer("prune_low_magnitude_wino").layer.winograd_kernel.numpy() != 0
    again = pruning.prune_to_density(pruned, {"wino": 0.3})
    second = again.get_layer("prune_low_magnitude_wino").layer.winograd_kernel.numpy() != 0
    assert np.all(first[second]) and abs(second.sum() - 0.3 * second.size) <= 1
    with pytest.raises(ValueError, match="density"):
        pruning.prune_to_density(model, 0.0)


# ------------------------------------------------------------ retraining keeps exact zeros
_OPTIMIZERS = {
    "sgd_momentum_weight_decay": lambda: keras.optimizers.SGD(0.05, momentum=0.9,
                                                              nesterov=True, weight_decay=0.01),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.05),
}


def _masks_and_weights(model):
    return [(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(m))
            for wrapper in pruning.collect_prunable_layers(model)
            for w, m, _ in wrapper.pruning_vars]


@pytest.mark.parametrize("optimizer", sorted(_OPTIMIZERS))
def test_zeros_stay_exactly_zero_during_retraining(optimizer):
    x, y = _data()
    pruned = pruning.prune_to_density(_model(), 0.4)
    before = _masks_and_weights(pruned)
    pruned.compile(_OPTIMIZERS[optimizer](), "mse")
    pruned.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
               callbacks=[pruning.UpdatePruningStep()])
    assert int(pruned.optimizer.iterations.numpy()) == 8
    for (w0, m0), (w1, m1) in zip(before, _masks_and_weights(pruned)):
        np.testing.assert_array_equal(m1, m0)  # Masks fixed.
        assert np.all(w1[m0 == 0] == 0.0)  # Exact zeros.
        assert np.count_nonzero(w1) == np.count_nonzero(m0)
        assert not np.allclose(w1[m0 != 0], w0[m0 != 0])  # It did train.


def test_without_mask_constraint_momentum_revives_zeros():
    """Negative control: the optimizer-side constraint is what keeps the zeros exact."""
    x, y = _data()
    pruned = pruning.prune_to_density(_model(), 0.4)
    for wrapper in pruning.collect_prunable_layers(pruned):
        for weight, _, _ in wrapper.pruning_vars:
            weight.constraint = None
    pruned.compile(_OPTIMIZERS["sgd_momentum_weight_decay"](), "mse")
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0)
    revived = sum(int(np.count_nonzero(w[m == 0])) for w, m in _masks_and_weights(pruned))
    assert revived > 0


def test_existing_constraint_is_composed():
    layer = keras.layers.Dense(4, kernel_constraint=keras.constraints.NonNeg())
    wrapper = pruning.PruneLowMagnitude(layer, pruning.ConstantSparsity(0.5, 0, frequency=1))
    model = keras.Sequential([keras.Input((6,)), wrapper])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    rng = np.random.default_rng(SEED)
    model.fit(rng.standard_normal((8, 6)), rng.standard_normal((8, 4)), batch_size=4, verbose=0,
              callbacks=[pruning.UpdatePruningStep()])
    kernel = layer.kernel.numpy()
    assert np.all(kernel >= 0)
    assert np.all(kernel[wrapper.masks[0].numpy() == 0] == 0)
    assert np.count_nonzero(wrapper.masks[0].numpy()) == 12


def test_mask_is_applied_in_the_forward_pass():
    pruned = pruning.prune_to_density(_model(), 0.3)
    wrapper = pruned.get_layer("prune_low_magnitude_wino")
    mask = wrapper.masks[0].numpy()
    # Overwrite the kernel with dense values: the next call must see the masked kernel.
    dense = np.full(mask.shape, 0.1, "float32")
    wrapper.layer.winograd_kernel.assign(dense)
    x, _ = _data(2)
    out = pruned(x, training=False).numpy()
    np.testing.assert_array_equal(wrapper.layer.winograd_kernel.numpy(), dense * mask)
    reference = pruning.strip_pruning(pruned)(x).numpy()
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)


def test_gradual_pruning_in_a_custom_tf_function_loop():
    keras.utils.set_random_seed(SEED)
    layer = keras.layers.Dense(16)
    schedule = pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2)
    model = keras.Sequential([keras.Input((12,)), pruning.prune_low_magnitude(layer, schedule)])
    wrapper = model.layers[0]
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    x = tf.random.stateless_normal((8, 12), seed=(1, 2))
    y = tf.random.stateless_normal((8, 16), seed=(3, 4))

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    densities = []
    for _ in range(9):
        train_step()
        densities.append(np.count_nonzero(layer.kernel.numpy()) / 192)
    assert int(wrapper.pruning_step.numpy()) == 9  # Started at -1, treated as 0.
    # Masks are recomputed at steps 0, 2, 4, 6 with the schedule's sparsity at those steps.
    expected = [1 - float(schedule(s)[1]) for s in (0, 0, 2, 2, 4, 4, 6, 6, 6)]
    for got, want in zip(densities, expected):
        assert abs(got * 192 - round(want * 192)) <= 1
    assert densities[-1] == pytest.approx(0.25, abs=1 / 192)


# ----------------------------------------------------------------------- API and control
def test_prune_low_magnitude_model_list_and_layer():
    model = _model()
    wrapped = pruning.prune_low_magnitude(model)
    assert [l.name for l in wrapped.layers[1:]] == [
        "prune_low_magnitude_conv_first", "prune_low_magnitude_wino",
        "prune_low_magnitude_conv_second", model.layers[4].name, "prune_low_magnitude_dense"]
    assert len(pruning.collect_prunable_layers(wrapped)) == 4
    skipped = pruning.prune_low_magnitude(model, skip_first_conv=True)
    assert [w.layer.name for w in pruning.collect_prunable_layers(skipped)] == [
        "wino", "conv_second", "dense"]
    # Weights are copied, not shared.
    copy = skipped.get_layer("prune_low_magnitude_wino").layer.winograd_kernel
    np.testing.assert_array_equal(copy.numpy(), model.get_layer("wino").winograd_kernel.numpy())
    assert copy is not model.get_layer("wino").winograd_kernel
    layers = pruning.prune_low_magnitude([keras.layers.Dense(3), keras.layers.ReLU()])
    assert isinstance(layers[0], pruning.PruneLowMagnitude) and isinstance(
        layers[1], keras.layers.ReLU)
    single = pruning.prune_low_magnitude(keras.layers.Conv2D(2, 3), name="custom")
    assert single.name == "custom"
    with pytest.raises(ValueError, match="not prunable"):
        pruning.prune_low_magnitude(keras.layers.ReLU())
    with pytest.raises(TypeError, match="Received: to_prune='model' \\(type str\\)"):
        pruning.prune_low_magnitude("model")


def test_per_layer_schedules_by_dict_and_callable():
    model = _model()
    poly = pruning.PolynomialDecay(0.1, 0.6, 0, 10)
    by_name = pruning.prune_low_magnitude(model, {"wino": poly, "dense": 0.25})
    wrappers = {w.layer.name: w for w in pruning.collect_prunable_layers(by_name)}
    assert sorted(wrappers) == ["dense", "wino"]
    assert wrappers["wino"].pruning_schedule == poly
    assert wrappers["dense"].pruning_schedule == pruning.ConstantSparsity(0.75, 0)
    by_callable = pruning.prune_low_magnitude(
        model, lambda layer: 0.5 if isinstance(layer, WinogradConv2D) else None)
    assert [w.layer.name for w in pruning.collect_prunable_layers(by_callable)] == ["wino"]


def test_nested_model_is_pruned_recursively():
    keras.utils.set_random_seed(SEED)
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1"),
                              WinogradConv2D(4, name="w1")], name="block")
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, name="d1")(keras.layers.Flatten()(inner(inputs)))
    model = keras.Model(inputs, outputs)
    pruned = pruning.prune_to_density(model, 0.5)
    assert [w.layer.name for w in pruning.collect_prunable_layers(pruned)] == ["w1", "d1"]
    x, _ = _data(2)
    assert pruned(x).shape == (2, 2)
    densities = [r.density for r in pruning.sparsity_report(pruned)]
    assert densities[0] == 1.0 and all(abs(d - 0.5) < 0.02 for d in densities[1:])


# ------------------------------------------------------------------------ serialization
def test_wrapper_get_config_round_trips_every_constructor_argument():
    schedule = pruning.PolynomialDecay(0.1, 0.7, begin_step=2, end_step=30, power=2, frequency=3)
    kwargs = dict(name="my_wrapper", trainable=False, dtype="float64")
    wrapper = pruning.PruneLowMagnitude(WinogradConv2D(3, tile_size=4, name="w4"),
                                        pruning_schedule=schedule, **kwargs)
    config = wrapper.get_config()
    signature = [p for p in inspect.signature(pruning.PruneLowMagnitude.__init__).parameters
                 if p not in ("self", "kwargs")]
    for argument in signature + list(kwargs):
        assert argument in config, f"get_config() forgets `{argument}`"
    for clone in (pruning.PruneLowMagnitude.from_config(config),
                  keras.layers.deserialize(keras.layers.serialize(wrapper))):
        assert clone.get_config() == config
        assert clone.pruning_schedule == schedule
        assert clone.name == "my_wrapper" and clone.trainable is False
        assert clone.dtype_policy.name == "float64"
        assert isinstance(clone.layer, WinogradConv2D) and clone.layer.tile_size == 4
    # Every constructor argument of the wrapped layer survives too.
    assert pruning.PruneLowMagnitude.from_config(config).layer.get_config() == \
        wrapper.layer.get_config()


def test_keras_save_mid_training_reloads_and_continues(tmp_path):
    x, y = _data(16)
    keras.utils.set_random_seed(SEED)
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=12, frequency=2)
    model = pruning.prune_low_magnitude(_model(), schedule, skip_first_conv=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.01), "mse")
    fit = dict(batch_size=4, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, callbacks=[pruning.UpdatePruningStep()], **fit)
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(pruning.collect_prunable_layers(model),
                    pruning.collect_prunable_layers(loaded)):
        assert a.name == b.name and a.pruning_schedule == b.pruning_schedule
        assert int(b.pruning_step.numpy()) == int(a.pruning_step.numpy()) == 4
        for (wa, ma, ta), (wb, mb, tb) in zip(a.pruning_vars, b.pruning_vars):
            np.testing.assert_array_equal(mb.numpy(), ma.numpy())
            np.testing.assert_array_equal(tb.numpy(), ta.numpy())
            np.testing.assert_array_equal(wb.numpy(), wa.numpy())
    assert int(loaded.optimizer.iterations.numpy()) == 4
    # Both continue the same way: masks keep being updated by the schedule from step 4.
    model.fit(x, y, callbacks=[pruning.UpdatePruningStep()], **fit)
    loaded.fit(x, y, callbacks=[pruning.UpdatePruningStep()], **fit)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-5, atol=1e-6)
    for wrapper in pruning.collect_prunable_layers(loaded):
        assert int(wrapper.pruning_step.numpy()) == 8
        (weight, mask, _), = wrapper.pruning_vars
        assert np.all(weight.numpy()[mask.numpy() == 0] == 0)
        expected = round((1 - float(schedule(6)[1])) * mask.numpy().size)
        assert abs(int(mask.numpy().sum()) - expected) <= 1


def test_strip_pruning_gives_plain_layers_with_zeros(tmp_path):
    x, _ = _data(3)
    original = _model()
    pruned = pruning.prune_to_density(original, 0.35)
    stripped = pruning.strip_pruning(pruned)
    assert not pruning.collect_prunable_layers(stripped)
    assert [type(l) for l in stripped.layers] == [type(l) for l in original.layers]
    assert [l.name for l in stripped.layers[1:]] == [l.name for l in original.layers[1:]]
    np.testing.assert_allclose(stripped(x).numpy(), pruned(x).numpy(), rtol=1e-6, atol=1e-6)
    for row_p, row_s in zip(pruning.sparsity_report(pruned), pruning.sparsity_report(stripped)):
        assert (row_p.layer, row_p.nonzero, row_p.size) == (row_s.layer, row_s.nonzero, row_s.size)
    kernel = stripped.get_layer("wino").winograd_kernel
    assert not isinstance(kernel.constraint, pruning_wrapper.MaskConstraint)
    single = pruning.strip_pruning(pruned.get_layer("prune_low_magnitude_dense"))
    assert isinstance(single, keras.layers.Dense) and single.built
    # A stripped model saves and loads without the pruning package's wrapper.
    stripped.save(str(tmp_path / "stripped.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "stripped.keras"))
    np.testing.assert_allclose(reloaded(x).numpy(), stripped(x).numpy(), rtol=1e-6)


def test_sparsity_report_printable():
    pruned = pruning.prune_to_density(_model(), 0.5)
    report = pruning.sparsity_report(pruned)
    assert [r.layer for r in report] == ["conv_first", "wino", "conv_second", "dense"]
    assert [r.pruned for r in report] == [False, True, True, True]
    text = str(report)
    assert "winograd_kernel" in text and "WinogradConv2D" in text and "total" in text
    assert report.as_dicts()[1]["shape"] == (4, 4, 4, 6)
    assert 0.5 < report.total_density < 1.0


def test_callbacks_step_and_tensorboard_summaries(tmp_path):
    x, y = _data(8)
    model = pruning.prune_low_magnitude(_model(), pruning.ConstantSparsity(0.5, 0, frequency=1))
    assert all(int(w.pruning_step.numpy()) == -1 for w in pruning.collect_prunable_layers(model))
    model.compile("sgd", "mse")
    log_dir = str(tmp_path / "logs")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[pruning.UpdatePruningStep(), pruning.PruningSummaries(log_dir)])
    assert all(int(w.pruning_step.numpy()) == 4 for w in pruning.collect_prunable_layers(model))
    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert files
    values = {}
    for record in tf.data.TFRecordDataset(files):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for v in event.summary.value:
            values[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
    assert values[("prune_low_magnitude_wino/winograd_kernel/density", 4)] == pytest.approx(0.5)
    # 25 weights at sparsity 0.5 keep round(12.5) = 12 (round half to even, as tfmot).
    assert values[("prune_low_magnitude_dense/kernel/weight_density", 2)] == pytest.approx(0.48)
    assert ("prune_low_magnitude_conv_first/kernel/threshold", 4) in values
    with pytest.raises(ValueError, match="log_dir"):
        pruning.PruningSummaries("")


def test_rewrapping_keeps_state_and_tensor_training_flag():
    pruned = pruning.prune_to_density(_model(), 0.3)
    # Wrapped layers are kept, with their state.
    again = pruning.prune_low_magnitude(pruned, skip_first_conv=True)
    for a, b in zip(pruning.collect_prunable_layers(pruned),
                    pruning.collect_prunable_layers(again)):
        assert a.name == b.name and a.pruning_schedule == b.pruning_schedule
        for x, y in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="already wrapped"):
        pruning.PruneLowMagnitude(pruning.collect_prunable_layers(pruned)[0])
    model = keras.Sequential([keras.Input((4,)), pruning.prune_low_magnitude(
        keras.layers.Dense(3), pruning.ConstantSparsity(0.5, 0, frequency=1))])

    @tf.function
    def run(x, training):
        return model(x, training=training)

    run(tf.ones((2, 4)), tf.constant(True))
    run(tf.ones((2, 4)), tf.constant(False))
    assert int(model.layers[0].pruning_step.numpy()) == 1
    assert np.count_nonzero(model.layers[0].masks[0].numpy()) == 6


def test_tf_train_checkpoint_restores_masks_thresholds_and_step(tmp_path):
    # tf.train.Checkpoint tracks variables by attribute, unlike the .keras format.
    source = pruning.prune_to_density(_model(SEED), 0.3)
    path = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    target = pruning.prune_to_density(_model(SEED + 1), 0.6)
    tf.train.Checkpoint(model=target).restore(path).assert_existing_objects_matched()
    for a, b in zip(pruning.collect_prunable_layers(source),
                    pruning.collect_prunable_layers(target)):
        assert int(b.pruning_step.numpy()) == int(a.pruning_step.numpy())
        for (wa, ma, ta), (wb, mb, tb) in zip(a.pruning_vars, b.pruning_vars):
            np.testing.assert_array_equal(mb.numpy(), ma.numpy())
            np.testing.assert_array_equal(tb.numpy(), ta.numpy())
            np.testing.assert_array_equal(wb.numpy(), wa.numpy())


def test_gradual_pruning_under_xla():
    keras.utils.set_random_seed(SEED)
    model = pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)]),
        pruning.PolynomialDecay(0.1, 0.7, begin_step=0, end_step=4, frequency=1))
    model.compile(keras.optimizers.AdamW(0.01, weight_decay=0.1), "mse", jit_compile=True)
    rng = np.random.default_rng(SEED)
    model.fit(rng.random((32, 6)), rng.random((32, 3)), batch_size=4, verbose=0,
              callbacks=[pruning.UpdatePruningStep()])
    for wrapper in pruning.collect_prunable_layers(model):
        (weight, mask, _), = wrapper.pruning_vars
        w, m = weight.numpy(), mask.numpy()
        assert int(m.sum()) == round(0.3 * m.size) and np.all(w[m == 0] == 0)
