""".keras files whose WinogradConv2D config was tampered with load with an error that says what
is wrong, never with a silently different layer."""

import json
import zipfile

import keras
import numpy as np
import pytest

from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, WinogradConv2D(4, tile_size=2, name="wc")(inputs))
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model.save(path)
    return path, model


def _tampered(saved, tmp_path, change):
    """A copy of the .keras file whose WinogradConv2D config went through `change(config)`."""
    with zipfile.ZipFile(saved) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    (layer,) = [l for l in config["config"]["layers"] if l["class_name"] == "WinogradConv2D"]
    change(layer["config"])
    files["config.json"] = json.dumps(config).encode()
    path = tmp_path / "tampered.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_the_untampered_file_loads(saved):
    path, model = saved
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize("tile_size,message", [
    (5, r"`tile_size` must be one of \(2, 4, 6\)\. Received: tile_size=5"),
    (0, r"Received: tile_size=0"),
    ("2", r"Received: tile_size='2'"),
])
def test_an_unsupported_tile_size(saved, tmp_path, tile_size, message):
    path = _tampered(saved[0], tmp_path, lambda c: c.update(tile_size=tile_size))
    with pytest.raises((TypeError, ValueError), match=message):
        keras.models.load_model(path)


@pytest.mark.parametrize("change,expected", [
    # A tile size the kernel was not made for: (4, 4, ...) saved, (6, 6, ...) or (8, 8, ...) needed.
    (dict(tile_size=4), r"the saved winograd_kernel has shape \(4, 4, 3, 4\), but the layer's "
                        r"config \(tile_size=4, filters=4\) needs \(6, 6, 3, 4\)"),
    (dict(tile_size=6), r"needs \(8, 8, 3, 4\)"),
    (dict(filters=5), r"\(tile_size=2, filters=5\) needs \(4, 4, 3, 5\)"),
])
def test_a_kernel_whose_shape_does_not_match_the_config(saved, tmp_path, change, expected):
    path = _tampered(saved[0], tmp_path, lambda c: c.update(change))
    with pytest.raises(ValueError, match=r"WinogradConv2D 'wc': .*" + expected) as info:
        keras.models.load_model(path)
    assert "config and weights do not match" in str(info.value)
    assert len(str(info.value)) < 2000, "the message dumps the kernel"


def test_other_tampered_arguments(saved, tmp_path):
    for change, message in [(dict(kernel_size=5), r"kernel_size"), (dict(strides=2), r"strides"),
                            (dict(filters=0), r"filters")]:
        path = _tampered(saved[0], tmp_path, lambda c, change=change: c.update(change))
        with pytest.raises((TypeError, ValueError), match=message):
            keras.models.load_model(path)
