"""The normalized magnitude criterion: |w| / the layer's pruning scale ranks entries, not |w|."""

import os

import keras
import numpy as np
import pytest

from tf_sparse_winograd import pruning
from tf_sparse_winograd.layers import WinogradConv2D
from tf_sparse_winograd.pruning import pruning_impl
from tf_sparse_winograd.training import config as config_lib
from test_transforms import LAVIN_F2
from test_transforms import LAVIN_F4


def _published_scale(published):
    """|G_i| |G_j| from the published G (Lavin & Gray), as an (a, a) float64 array."""
    norms = np.linalg.norm(np.array(published["G"], dtype=np.float64), axis=1)
    return np.outer(norms, norms)


def _reference_mask(w, keep, scale):
    """float64 numpy: the `keep` largest |w| / scale kept, ties to the lower flat index."""
    scores = (np.abs(w.astype(np.float64)) / np.broadcast_to(scale, w.shape)).ravel()
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(w.size, w.dtype)
    mask[order[:keep]] = 1
    return mask.reshape(w.shape)


@pytest.mark.parametrize("tile_size, published", [(2, LAVIN_F2), (4, LAVIN_F4)])
def test_winograd_scales_are_the_row_norms_of_the_published_g(tile_size, published):
    layer = WinogradConv2D(4, tile_size=tile_size)
    layer.build((None, 8, 8, 3))
    (scale,) = layer.get_pruning_scales()
    assert scale.shape == (tile_size + 2, tile_size + 2, 1, 1)
    np.testing.assert_allclose(scale[:, :, 0, 0], _published_scale(published), rtol=1e-12)


@pytest.mark.parametrize("shape, keep", [((6, 6, 5, 7), 126), ((6, 6, 1, 1), 1),
                                         ((4, 4, 3, 9), 144)])
def test_scaled_mask_matches_a_numpy_reference(shape, keep):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.03, 1.0, shape[:2] + (1, 1))
    _, mask = pruning_impl.block_magnitude_mask(w, keep, (1, 1), scale)
    np.testing.assert_array_equal(mask.numpy(), _reference_mask(w, keep, scale))
    assert mask.numpy().sum() == min(keep, w.size)


def test_scaled_block_mask_scores_blocks_by_their_mean_scaled_magnitude():
    w = np.ones((2, 1, 1, 8), np.float32)
    w[0, ..., :4] = 3.0   # the largest |w|, but at a coordinate whose scale is 10x larger
    scale = np.array([10.0, 1.0]).reshape(2, 1, 1, 1)
    _, plain = pruning_impl.block_magnitude_mask(w, 1, (1, 4))
    _, scaled = pruning_impl.block_magnitude_mask(w, 1, (1, 4), scale)
    assert plain.numpy()[0, ..., :4].all() and plain.numpy().sum() == 4
    assert scaled.numpy()[1, ..., :4].all() and scaled.numpy().sum() == 4


def _f4_model(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12, 12, 4)),
        WinogradConv2D(6, tile_size=4, padding="same", name="first"),
        WinogradConv2D(10, tile_size=4, padding="same", name="second"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="head"),
    ])


def _coordinates_left(model, name):
    mask = pruning.masks(next(l for l in pruning.walk_layers(model) if pruning.unwrap(l).name
                              == name))[0]
    return int((np.asarray(mask).sum(axis=(2, 3)) > 0).sum())


def test_f4_magnitude_pruning_empties_whole_coordinates_and_normalized_does_not():
    """U = G g G^T of random 3x3 kernels: at density 0.1 plain magnitude keeps only the
    coordinates of G's long rows; the normalized criterion keeps the mask the numpy reference
    gives, which leaves far more coordinates in use."""
    model = _f4_model()
    second = model.get_layer("second")
    rng = np.random.default_rng(0)
    _, G, _ = (np.array(LAVIN_F4[k], dtype=np.float64) for k in ("BT", "G", "AT"))
    g = rng.standard_normal((3, 3, 6, 10))
    u = np.einsum("ia,abcd,jb->ijcd", G, g, G).astype(np.float32)
    second.set_weights([u] + second.get_weights()[1:])
    density = {"second": 0.1}
    plain = pruning.prune_to_density(model, density)
    normalized = pruning.prune_to_density(model, density, criterion="normalized_magnitude")
    keep = int(round(0.1 * u.size))
    expected = _reference_mask(u, keep, _published_scale(LAVIN_F4)[:, :, None, None])
    got = np.asarray(pruning.masks(normalized.get_layer("prune_low_magnitude_second"))[0])
    np.testing.assert_array_equal(got, expected)
    assert _coordinates_left(plain, "second") <= 12
    assert _coordinates_left(normalized, "second") >= 30


def test_layers_without_scales_are_ranked_by_magnitude():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(5, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(4, name="head")])
    density = {"conv": 0.3, "head": 0.2}
    plain = pruning.prune_to_density(model, density, skip_first_conv=False)
    normalized = pruning.prune_to_density(model, density, skip_first_conv=False,
                                          criterion="normalized_magnitude")
    for a, b in zip(pruning.collect_prunable_layers(plain),
                    pruning.collect_prunable_layers(normalized)):
        np.testing.assert_array_equal(np.asarray(a.masks[0]), np.asarray(b.masks[0]))


def test_gradual_pruning_uses_the_criterion():
    model = _f4_model(seed=4)
    schedule = pruning.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2, frequency=1)
    pruned = pruning.prune_low_magnitude(model, pruning_schedule={"second": schedule},
                                         criterion="normalized_magnitude")
    pruned.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(0).standard_normal((4, 12, 12, 4)).astype(np.float32)
    pruned.fit(x, np.zeros((4, 3), np.float32), epochs=3, batch_size=4, verbose=0,
               callbacks=[pruning.UpdatePruningStep()])
    wrapper = pruned.get_layer("prune_low_magnitude_second")
    u = np.asarray(model.get_layer("second").winograd_kernel)  # lr 0: the weights did not move
    expected = _reference_mask(u, int(round(0.1 * u.size)),
                               _published_scale(LAVIN_F4)[:, :, None, None])
    np.testing.assert_array_equal(np.asarray(wrapper.masks[0]), expected)


def test_criterion_survives_a_keras_save(tmp_path):
    pruned = pruning.prune_to_density(_f4_model(), {"second": 0.2},
                                      criterion="normalized_magnitude")
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    wrapper = loaded.get_layer("prune_low_magnitude_second")
    assert wrapper.criterion == "normalized_magnitude"
    np.testing.assert_array_equal(np.asarray(wrapper.masks[0]),
                                  np.asarray(pruned.get_layer("prune_low_magnitude_second")
                                             .masks[0]))


@pytest.mark.parametrize("bad", ["l1", None, "Magnitude", 1])
def test_bad_criterion_is_named(bad):
    with pytest.raises(ValueError, match="criterion"):
        pruning.PruneLowMagnitude(WinogradConv2D(4, tile_size=4), criterion=bad)
    with pytest.raises(ValueError, match="criterion"):
        pruning.prune_to_density(_f4_model(), 0.5, criterion=bad)
    with pytest.raises(ValueError, match="prune_criterion"):
        config_lib.TrainConfig(prune_criterion=bad)


class _BadScales(WinogradConv2D):
    def __init__(self, scales, **kwargs):
        super().__init__(4, tile_size=2, **kwargs)
        self._scales = scales

    def get_pruning_scales(self):
        return self._scales


@pytest.mark.parametrize("scales, message", [
    ([np.ones((3, 3, 1, 1))], "does not broadcast"),
    ([np.zeros((4, 4, 1, 1))], "positive"),
    ([np.full((4, 4, 1, 1), np.nan)], "positive"),
    ([None, None], "2 entries for 1"),
])
def test_bad_layer_scales_are_reported(scales, message):
    layer = _BadScales(scales)
    layer.build((None, 8, 8, 3))
    with pytest.raises(ValueError, match=message):
        pruning.PruneLowMagnitude(layer, criterion="normalized_magnitude").build((None, 8, 8, 3))


def test_normalized_runs_get_their_own_directories():
    plain = config_lib.TrainConfig(density=(0.1,), model_dir="/r")
    normalized = config_lib.TrainConfig(density=(0.1,), model_dir="/r",
                                        prune_criterion="normalized_magnitude")
    assert plain.phase_dir("retrain") != normalized.phase_dir("retrain")
    assert plain.phase_dir("dense") == normalized.phase_dir("dense")
