"""Without a loadable op library the inference layers run plain TF ops after one warning; the ops
themselves, the export and SavedModel loading raise errors that say why and how to rebuild."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_sparse_winograd import ops
from tf_sparse_winograd import layers
from tf_sparse_winograd.layers import SparseWinogradConv2D

import support

# A child that loads a .keras model holding both sparse layers, runs it eagerly and in a
# tf.function, calls the ops directly and tries to export; it prints what happened as JSON.
_CHILD = """
import json, sys, warnings
import numpy as np
import tensorflow as tf
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import keras
    import tf_sparse_winograd as tfsw
    model = keras.saving.load_model(sys.argv[1])
    x = np.load(sys.argv[2])
    eager = model(x).numpy()
    graph = tf.function(lambda t: model(t))(tf.constant(x)).numpy()
    np.save(sys.argv[3], np.stack([eager, graph]))
    errors = {}
    conv = model.get_layer("conv")
    for name, call in (
            ("sparse_winograd_conv2d", lambda: tfsw.ops.sparse_winograd_conv2d(x, conv.packed)),
            ("sparse_dense_matmul", lambda: tfsw.ops.sparse_dense_matmul(
                np.ones((1, 4), np.float32), [0, 1, 1, 1, 1], [0], [1.0], 2)),
            ("export_saved_model", lambda: tfsw.export.export_saved_model(model, sys.argv[4]))):
        try:
            call()
            errors[name] = None
        except tfsw.ops.OpLibraryError as error:
            errors[name] = str(error)
ours = [str(w.message) for w in caught if "SparseWinograd op library" in str(w.message)]
print("RESULT=" + json.dumps({"warnings": ours, "errors": errors}))
"""


def _sparse_model():
    """A functional model: SparseWinogradConv2D (ReLU fused, pooled) -> flatten -> SparseDense."""
    rng = np.random.default_rng(7)
    u = rng.normal(size=(4, 4, 3, 5)).astype(np.float32)
    u[rng.random(u.shape) < 0.6] = 0.0
    w = rng.normal(size=(4 * 4 * 5, 6)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0.0
    conv = SparseWinogradConv2D.from_kernel(u, rng.normal(size=5), tile_size=2, activation="relu",
                                            max_pool_2x2=True, name="conv")
    dense = layers.SparseDense.from_kernel(w, rng.normal(size=6), activation="relu", name="fc")
    inputs = keras.Input((9, 8, 3))
    outputs = dense(keras.layers.Flatten()(conv(inputs)))
    return keras.Model(inputs, outputs)


def _run_without_library(tmp_path, library_path):
    model = _sparse_model()
    x = np.random.default_rng(8).normal(size=(2, 9, 8, 3)).astype(np.float32)
    expected = model(x).numpy()  # On the op.
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    result = support.run_python(
        _CHILD, tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "y.npy",
        tmp_path / "saved", env={"TFSW_OP_LIBRARY": library_path})
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT=")][-1]
    report = json.loads(line[len("RESULT="):])
    eager, graph = np.load(tmp_path / "y.npy")
    for outputs in (eager, graph):
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    assert len(report["warnings"]) == 1, report["warnings"]
    assert "python -m tf_sparse_winograd.ops.build" in report["warnings"][0]
    assert "pure-TensorFlow path" in report["warnings"][0]
    for name, error in report["errors"].items():
        assert error == report["warnings"][0].split(" Until then")[0], (name, error)
    return report["warnings"][0]


def test_missing_library(tmp_path):
    message = _run_without_library(tmp_path, str(tmp_path / "missing.so"))
    assert "missing.so is missing" in message


@pytest.mark.slow
def test_library_built_for_another_tensorflow(tmp_path):
    stale = tmp_path / "stale.so"
    data = open(ops.loader.library_path(), "rb").read()
    stamp = b"tfsw-built-for-tensorflow=" + tf.__version__.encode()
    assert data.count(stamp) == 1
    stale.write_bytes(data.replace(stamp, b"tfsw-built-for-tensorflow=" + b"9" * len(tf.__version__)))
    message = _run_without_library(tmp_path, str(stale))
    assert f"was built for TensorFlow {'9' * len(tf.__version__)}" in message
    assert f"TensorFlow {tf.__version__} is installed" in message


@pytest.mark.slow
def test_library_that_does_not_load(tmp_path):
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not a shared object tfsw-built-for-tensorflow=" + tf.__version__.encode()
                       + b"\0")
    message = _run_without_library(tmp_path, str(broken))
    assert "Could not load the SparseWinograd op library" in message


def test_reference_paths_match_the_ops():
    """The fallback paths, called directly, against the ops on the same kernels."""
    model = _sparse_model()
    conv, dense = model.get_layer("conv"), model.get_layer("fc")
    x = np.random.default_rng(9).normal(size=(3, 9, 8, 3)).astype(np.float32)
    args = dict(bias=conv.bias, tile_size=2, padding="SAME", activation="relu", max_pool_2x2=True)
    np.testing.assert_allclose(
        ops.sparse_winograd_conv2d(x, conv.packed, implementation="reference", **args),
        ops.sparse_winograd_conv2d(x, conv.packed, **args), rtol=1e-5, atol=1e-5)
    h = np.random.default_rng(10).normal(size=(3, 80)).astype(np.float32)
    fields = (dense.row_ptr, dense.col_idx, dense.values, dense.units)
    for layout in ("unit_groups", "feature_rows"):
        if layout == "feature_rows":
            fields = ops.pack_dense_kernel(ops.unpack_dense_kernel(
                *fields[:3], 80, dense.units, dense.kernel_layout)) + (dense.units,)
        np.testing.assert_allclose(
            ops.sparse_dense_matmul(h, *fields, bias=dense.bias, activation="relu",
                                    implementation="reference", kernel_layout=layout),
            ops.sparse_dense_matmul(h, *fields, bias=dense.bias, activation="relu",
                                    kernel_layout=layout),
            rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="implementation"):
        ops.sparse_dense_matmul(h, *fields, implementation="fast")


def test_build_without_compiler_names_what_is_missing(tmp_path):
    result = support.run_python("from tf_sparse_winograd.ops import build; build.main()",
                                "--cxx", "no-such-compiler++", "--output", tmp_path / "x.so",
                                check=False)
    assert result.returncode != 0
    assert "No C++ compiler: 'no-such-compiler++' is not on PATH" in result.stderr
    assert "apt-get install g++" in result.stderr
    assert "Traceback" not in result.stderr
    assert shutil.which("no-such-compiler++") is None
