"""Winograd-domain pruning: the paper's Figure 1a, and pruning under MirroredStrategy."""

import json
import textwrap

import keras
import numpy as np
import pytest

import support
from tf_sparse_winograd import pruning
from tf_sparse_winograd.layers import WinogradConv2D

SEED = 7

# Lavin & Gray's F(2x2, 3x3) kernel transform, typed in as an independent reference.
G2 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def _conv_model(layer, channels=8):
    keras.utils.set_random_seed(SEED)
    return keras.Sequential([keras.Input((10, 10, channels)), layer])


@pytest.mark.parametrize("density", [0.2, 0.4])
def test_figure_1a_spatial_pruning_does_not_survive_the_transform(density):
    model = _conv_model(keras.layers.Conv2D(8, 3, padding="same", name="spatial"))
    pruned = pruning.strip_pruning(pruning.prune_to_density(model, density,
                                                            skip_first_conv=False))
    conv = pruned.get_layer("spatial")
    g = conv.kernel.numpy().astype(np.float64)
    assert abs(np.count_nonzero(g) - density * g.size) <= 1

    winograd = WinogradConv2D.from_conv2d(conv, tile_size=2)
    u = winograd.winograd_kernel.numpy()
    np.testing.assert_allclose(u, np.einsum("iu,uvcf,jv->ijcf", G2, g, G2), rtol=1e-6, atol=1e-7)
    # U[i, j] mixes every g[u, v] with G[i, u] G[j, v] != 0: it is zero only where all are.
    support = np.einsum("iu,uvcf,jv->ijcf", (G2 != 0) * 1.0, (g != 0) * 1.0, (G2 != 0) * 1.0)
    np.testing.assert_array_equal(u != 0, support > 0)
    winograd_density = np.count_nonzero(u) / u.size
    # Dense again: with zeros spread at random, 4 inner entries mix 9 weights, 8 edge entries 3,
    # and 4 corners 1 (0.2 -> ~0.51, 0.4 -> ~0.74).
    q = 1 - density
    expected = (4 * (1 - q ** 9) + 8 * (1 - q ** 3) + 4 * density) / 16
    assert winograd_density == pytest.approx(expected, abs=0.05)
    assert winograd_density > 1.8 * density
    # Only the four corners U[0|3, 0|3] = g[0|2, 0|2] keep the spatial zeros.
    inner = u[1:3, 1:3]
    assert np.count_nonzero(inner) / inner.size > 1 - (1 - density) ** 9 - 0.05

    # Larger tiles densify too.
    u4 = WinogradConv2D.from_conv2d(conv, tile_size=4).winograd_kernel.numpy()
    assert np.count_nonzero(u4) / u4.size > 1.8 * density


@pytest.mark.parametrize("tile_size", support.fast_sample([2, 4], 2))
def test_figure_1a_winograd_domain_pruning_keeps_its_density(tile_size):
    density = 0.3
    rng = np.random.default_rng(SEED)
    model = _conv_model(WinogradConv2D(8, tile_size=tile_size, name="wino"))
    pruned = pruning.prune_to_density(model, density, skip_first_conv=False)
    wrapper = pruned.get_layer("prune_low_magnitude_wino")
    u = wrapper.layer.winograd_kernel.numpy()
    assert abs(np.count_nonzero(u) - density * u.size) <= 1
    mask = wrapper.masks[0].numpy()
    pruned.compile(keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-3), "mse")
    x = rng.standard_normal((8, 10, 10, 8)).astype("float32")
    y = rng.standard_normal((8, 10, 10, 8)).astype("float32")
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    trained = wrapper.layer.winograd_kernel.numpy()
    assert not np.allclose(trained, u)
    np.testing.assert_array_equal(trained != 0, mask != 0)  # Same zeros, same density.
    stripped = pruning.strip_pruning(pruned)
    kernel = stripped.get_layer("wino").winograd_kernel.numpy()
    assert abs(np.count_nonzero(kernel) - density * kernel.size) <= 1
    report = pruning.sparsity_report(stripped)
    assert report.density("wino") == pytest.approx(density, abs=1 / kernel.size)


_MIRRORED = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tf_sparse_winograd import pruning
    from tf_sparse_winograd.layers import WinogradConv2D

    keras.utils.set_random_seed(3)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 8, 8, 3)).astype("float32")
    y = rng.standard_normal((32, 4)).astype("float32")
    schedule = pruning.PolynomialDecay(0.1, 0.7, begin_step=0, end_step=3, frequency=1)
    results = {}
    with strategy.scope():
        base = keras.Sequential([keras.Input((8, 8, 3)),
                                 keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                                 WinogradConv2D(6, tile_size=2, activation="relu"),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
        gradual = pruning.prune_low_magnitude(base, schedule)
        gradual.compile(keras.optimizers.AdamW(0.01, weight_decay=0.05), "mse")
    # Outside the scope: the clone is made under the model's strategy anyway.
    oneshot = pruning.prune_to_density(base, 0.4)
    with strategy.scope():
        oneshot.compile(keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.01), "mse")
    for name, model in (("gradual", gradual), ("oneshot", oneshot)):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[pruning.UpdatePruningStep()])
        rows = []
        for wrapper in pruning.collect_prunable_layers(model):
            steps = [int(v.numpy()) for v in wrapper.pruning_step.value.values]
            for weight, mask, threshold in wrapper.pruning_vars:
                masks = [v.numpy() for v in mask.value.values]
                weights = [v.numpy() for v in weight.value.values]
                rows.append({
                    "layer": wrapper.layer.name,
                    "replicas": len(masks),
                    "masks_equal": all(np.array_equal(masks[0], m) for m in masks),
                    "weights_equal": all(np.array_equal(weights[0], w) for w in weights),
                    "zeros_exact": all(bool(np.all(w[masks[0] == 0] == 0)) for w in weights),
                    "density": float(np.mean(masks[0])),
                    "size": int(masks[0].size),
                    "steps": steps,
                })
        results[name] = rows
    print("RESULT" + json.dumps(results))
""")


@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    results = json.loads(support.result_line(support.run_python(_MIRRORED, timeout=300),
                                             "RESULT"))
    final_keep = lambda size, sparsity: max(1, round(size * (1 - sparsity)))
    assert len(results["gradual"]) == 3 and len(results["oneshot"]) == 2
    for row in results["gradual"]:
        assert row["replicas"] == 2
        assert row["masks_equal"] and row["weights_equal"] and row["zeros_exact"], row
        assert row["steps"] == [4, 4]  # 32 examples / global batch 8.
        assert abs(row["density"] * row["size"] - final_keep(row["size"], 0.7)) <= 1, row
    for row in results["oneshot"]:
        assert row["masks_equal"] and row["weights_equal"] and row["zeros_exact"], row
        assert row["steps"] == [5, 5]  # Step 1 after the one-shot pruning, plus 4 batches.
        assert abs(row["density"] * row["size"] - 0.4 * row["size"]) <= 1, row
