"""tile_choice.fastest_tile_sizes: a tile size per convertible convolution, by measurement."""

import keras
import numpy as np
import pytest

import tf_sparse_winograd as tfsw
from tf_sparse_winograd import ops
from tf_sparse_winograd import tile_choice

pytestmark = pytest.mark.skipif(not ops.op_library_available(), reason="needs the op library")


def _model():
    inputs = keras.Input((12, 10, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="strided")(h)
    h = keras.layers.Conv2D(6, 1, name="pointwise")(h)
    inner = keras.Sequential([keras.Input((6, 5, 6)),
                              keras.layers.Conv2D(5, 3, padding="valid", name="inner")])
    h = inner(h)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))


def test_one_measured_size_per_convertible_convolution_and_to_winograd_takes_it():
    model = _model()
    lines = []
    sizes = tile_choice.fastest_tile_sizes(model, density=0.5, tile_sizes=(2, 4),
                                           min_seconds=0.001, print_fn=lines.append,
                                           keep_dense_when_faster=False)
    assert set(sizes) == {"a", "inner"}
    assert set(sizes.values()) <= {2, 4}
    assert len(lines) == 2 and lines[0].startswith("a: F(2x2)") and "->" in lines[0]
    converted, report = tfsw.to_winograd(model, tile_size=sizes, return_report=True)
    assert {row.layer: row.tile_size for row in report if row.converted} == sizes
    x = np.random.default_rng(0).standard_normal((2, 12, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(converted(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_single_candidate_and_a_layer_selection():
    sizes = tile_choice.fastest_tile_sizes(_model(), density=1.0, tile_sizes=(6,),
                                           layers=["inner"], min_seconds=0.001,
                                           keep_dense_when_faster=False)
    assert sizes == {"inner": 6}


def test_time_tile_sizes_times_every_candidate():
    times = tile_choice.time_tile_sizes((9, 7, 4), 5, "valid", 0.3, batch_size=2,
                                        tile_sizes=(2, 4, 6), min_seconds=0.001)
    assert list(times) == [2, 4, 6] and all(t > 0 for t in times.values())
    times = tile_choice.time_tile_sizes((9, 7, 4), 5, "valid", 0.3, tile_sizes=(2,),
                                        min_seconds=0.001, dense=True)
    assert list(times) == [None, 2] and all(t > 0 for t in times.values())


def test_a_layer_the_dense_convolution_runs_faster_is_kept(monkeypatch):
    """Where tf.nn.conv2d is timed fastest the layer maps to None and `to_winograd` keeps it;
    the choice follows the measured times (made up here, so that it does not depend on speed)."""
    measured = {"a": {None: 1.0, 2: 2.0, 4: 3.0}, "inner": {None: 3.0, 2: 2.0, 4: 1.0}}
    shapes = {(12, 10, 3): "a", (6, 5, 6): "inner"}

    def fake_times(input_shape, filters, padding, density, batch_size, tile_sizes, min_seconds,
                   dense):
        assert dense and density == 0.3 and tile_sizes == (2, 4)
        return dict(measured[shapes[input_shape]])

    monkeypatch.setattr(tile_choice, "time_tile_sizes", fake_times)
    model = _model()
    lines = []
    sizes = tile_choice.fastest_tile_sizes(model, density=0.3, tile_sizes=(2, 4),
                                           print_fn=lines.append)
    assert sizes == {"a": None, "inner": 4}
    assert lines[0] == ("a: dense conv2d 1000.000 ms, F(2x2) 2000.000 ms, F(4x4) 3000.000 ms "
                        "-> dense conv2d")
    converted, report = tfsw.to_winograd(model, tile_size=sizes, return_report=True)
    assert report.converted == ["inner"]
    assert report.skipped["a"] == "`tile_size` maps it to None"
    assert type(converted.get_layer("a")) is keras.layers.Conv2D


def test_with_the_dense_candidate_every_layer_gets_a_size_or_none():
    sizes = tile_choice.fastest_tile_sizes(_model(), density=0.5, tile_sizes=(2,),
                                           min_seconds=0.001)
    assert set(sizes) == {"a", "inner"} and set(sizes.values()) <= {None, 2}


def test_unknown_spatial_size_names_the_layer():
    model = keras.Sequential([keras.Input((None, None, 3)),
                              keras.layers.Conv2D(4, 3, padding="same", name="free")])
    with pytest.raises(ValueError, match="'free'.*height, width and channels"):
        tile_choice.fastest_tile_sizes(model, density=0.5)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(density=0.0), ValueError, "density"),
    (dict(density=0.5, tile_sizes=(3,)), ValueError, "tile_size"),
    (dict(density=0.5, tile_sizes=()), ValueError, "tile_sizes"),
])
def test_bad_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        tile_choice.fastest_tile_sizes(_model(), **kwargs)


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="model"):
        tile_choice.fastest_tile_sizes("hello", density=0.5)
