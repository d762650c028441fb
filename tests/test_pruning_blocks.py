"""Block pruning: whole blocks of a weight's last two axes kept or pruned by mean magnitude."""

import os

import keras
import numpy as np
import pytest

from tf_sparse_winograd import pruning
from tf_sparse_winograd.layers import SparseWinogradConv2D
from tf_sparse_winograd.layers import WinogradConv2D
from tf_sparse_winograd.pruning import pruning_impl


def _reference_block_mask(w, keep, block_size):
    """float64 numpy: mean |w| per (partial) block, the `keep` largest blocks kept."""
    rows, cols = block_size
    lead = w.reshape(-1, *w.shape[-2:])
    height, width = w.shape[-2:]
    scores, spans = [], []
    for i in range(lead.shape[0]):
        for r in range(0, height, rows):
            for c in range(0, width, cols):
                scores.append(np.abs(lead[i, r:r + rows, c:c + cols]).astype(np.float64).mean())
                spans.append((i, slice(r, r + rows), slice(c, c + cols)))
    order = np.argsort(-np.array(scores), kind="stable")
    mask = np.zeros_like(lead)
    for b in order[:keep]:
        i, rs, cs = spans[b]
        mask[i, rs, cs] = 1
    return mask.reshape(w.shape), scores[order[keep - 1]]


@pytest.mark.parametrize("shape, block_size, keep", [
    ((4, 4, 10, 30), (1, 4), 150),    # Winograd kernel, partial last block of filters
    ((3, 3, 7, 9), (2, 3), 1),        # partial blocks on both axes, a single block kept
    ((12, 8), (1, 4), 24),            # Dense kernel, every block kept
    ((5, 16), (4, 4), 3),
])
def test_block_mask_matches_a_numpy_reference(shape, block_size, keep):
    w = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    threshold, mask = pruning_impl.block_magnitude_mask(w, keep, block_size)
    expected_mask, expected_threshold = _reference_block_mask(w, keep, block_size)
    np.testing.assert_array_equal(mask.numpy(), expected_mask)
    assert float(threshold) == pytest.approx(expected_threshold, rel=1e-6)
    assert pruning_impl.num_blocks(shape, block_size) >= keep


@pytest.mark.parametrize("bad", [(0, 4), (4,), "14", (1.5, 2), (True, 4), None, (1, 4, 1)])
def test_bad_block_size_is_named(bad):
    layer = WinogradConv2D(8, tile_size=2)
    with pytest.raises(ValueError, match="block_size"):
        pruning.PruneLowMagnitude(layer, block_size=bad)


def _winograd_model(filters=30, tile_size=2):
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((9, 10, 6)),
        WinogradConv2D(8, tile_size=tile_size, padding="same", name="first"),
        WinogradConv2D(filters, tile_size=tile_size, padding="same", name="blocked"),
    ])


@pytest.mark.parametrize("density", [0.1, 0.4])
def test_prune_to_density_keeps_whole_filter_blocks(density):
    pruned = pruning.prune_to_density(_winograd_model(), density, block_size=(1, 4))
    wrapper = pruned.get_layer("prune_low_magnitude_blocked")
    mask = keras.ops.convert_to_numpy(wrapper.masks[0])  # (a, a, in, filters = 30)
    full = mask[..., :28].reshape(*mask.shape[:-1], 7, 4)
    assert (full == full[..., :1]).all(), "a block of 4 filters was split"
    tail = mask[..., 28:]
    assert (tail == tail[..., :1]).all(), "the partial last block was split"
    blocks = pruning_impl.num_blocks(mask.shape, (1, 4))
    kept = full[..., 0].sum() + tail[..., 0].sum()
    assert kept == max(1, round(density * blocks))
    assert "prune_low_magnitude_first" not in [l.name for l in pruned.layers]  # skipped


def test_block_size_survives_config_and_keras_save(tmp_path):
    pruned = pruning.prune_low_magnitude(_winograd_model(), 0.5, block_size=(1, 4))
    wrapper = pruned.get_layer("prune_low_magnitude_blocked")
    assert wrapper.block_size == (1, 4)
    assert pruning.PruneLowMagnitude.from_config(wrapper.get_config()).block_size == (1, 4)
    path = os.path.join(tmp_path, "blocked.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("prune_low_magnitude_blocked").block_size == (1, 4)


def test_training_keeps_blocks_and_zeros():
    model = pruning.prune_to_density(_winograd_model(), 0.3, block_size=(1, 4))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x = np.random.default_rng(0).standard_normal((4, 9, 10, 6)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((4, 9, 10, 30)).astype(np.float32)
    wrapper = model.get_layer("prune_low_magnitude_blocked")
    before = keras.ops.convert_to_numpy(wrapper.masks[0]).copy()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    kernel = keras.ops.convert_to_numpy(wrapper.layer.winograd_kernel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper.masks[0]), before)
    assert (kernel[before == 0] == 0).all()


@pytest.mark.parametrize("tile_size", [2, 4])
def test_block_pruned_layer_runs_on_the_op_like_keras(tile_size):
    model = pruning.prune_to_density(_winograd_model(tile_size=tile_size), 0.4,
                                     block_size=(1, 4))
    stripped = pruning.strip_pruning(model)
    layer = stripped.get_layer("blocked")
    x = np.random.default_rng(2).standard_normal((3, 9, 10, 8)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(layer(x))
    sparse = SparseWinogradConv2D.from_winograd(layer)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sparse(x)), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
