"""SavedModels across the ops' attribute changes: one written before the tuning attributes
existed still loads and computes the same; one written now leaves default-valued attributes
out, so that a library without them loads it too."""

import numpy as np
import tensorflow as tf

import pytest
from tensorflow.core.protobuf import saved_model_pb2

import support
from tf_sparse_winograd import ops

NEW_ATTRIBUTES = {"SparseWinograd>Conv2D": ("tile_vectors", "filter_block", "units_per_thread"),
                  "SparseWinograd>SparseDense": ("one_sample_gather", "kernel_layout")}
# The attributes of the first release, all set explicitly as an older writer may have done.
FIRST_RELEASE = {"SparseWinograd>Conv2D": ("tile_size", "padding", "winograd_relu", "activation",
                                           "max_pool_2x2", "debug_fill_nan"),
                 "SparseWinograd>SparseDense": ("units", "Tindex", "activation",
                                                "debug_fill_nan")}


def _op_nodes(saved_model):
    for function in saved_model.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op in NEW_ATTRIBUTES:
                yield node


def _save(tmp_path, x, u, dense_kernel, **tuning):
    packed = ops.pack_kernel(u)
    dense_packed = ops.pack_dense_kernel(dense_kernel)
    module = tf.Module()
    module.fields = [tf.Variable(t) for t in packed] + [tf.Variable(t) for t in dense_packed]

    @tf.function(input_signature=[tf.TensorSpec([None] + list(x.shape[1:]), tf.float32)])
    def serve(inputs):
        y = ops.sparse_winograd_conv2d(inputs, ops.PackedKernel(*module.fields[:4]), tile_size=4,
                                       activation="relu", **tuning)
        pooled = tf.reduce_mean(y, axis=[1, 2])
        return ops.sparse_dense_matmul(pooled, *module.fields[4:], dense_kernel.shape[1])

    module.serve = serve
    path = str(tmp_path / "saved")
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path, serve(x).numpy()


def _read(path):
    saved_model = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 9, 5)).astype(np.float32)
    u = rng.standard_normal((6, 6, 5, 7)).astype(np.float32) * (rng.random((6, 6, 5, 7)) < 0.5)
    dense = rng.standard_normal((7, 3)).astype(np.float32) * (rng.random((7, 3)) < 0.5)
    return x, u, dense


def _serve_in_fresh_process(path, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    support.run_python("""
        import sys
        import numpy as np
        import tensorflow as tf
        import tf_sparse_winograd  # registers the ops
        serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        (y,) = serve(tf.constant(np.load(sys.argv[2]))).values()
        np.save(sys.argv[3], y.numpy())
    """, path, tmp_path / "x.npy", tmp_path / "y.npy")
    return np.load(tmp_path / "y.npy")


def test_new_saved_models_leave_default_attributes_out(tmp_path):
    x, u, dense = _inputs()
    path, _ = _save(tmp_path, x, u, dense)
    nodes = list(_op_nodes(_read(path)))
    assert {node.op for node in nodes} == set(NEW_ATTRIBUTES)
    for node in nodes:
        assert not set(NEW_ATTRIBUTES[node.op]) & set(node.attr), node


@pytest.mark.slow
def test_a_saved_model_of_the_first_release_loads_and_computes_the_same(tmp_path):
    x, u, dense = _inputs()
    path, expected = _save(tmp_path, x, u, dense, tile_vectors=1, filter_block=16)
    saved_model = _read(path)
    nodes = list(_op_nodes(saved_model))
    assert any("tile_vectors" in node.attr for node in nodes)  # the non-defaults were written
    defaults = {"tile_size": 2, "padding": b"SAME", "winograd_relu": False, "activation": b"none",
                "max_pool_2x2": False, "debug_fill_nan": False}
    for node in nodes:  # what the first release wrote: its own attributes, all of them
        for name in NEW_ATTRIBUTES[node.op]:
            if name in node.attr:
                del node.attr[name]
        for name in FIRST_RELEASE[node.op]:
            if name not in node.attr and name in defaults:
                value = defaults[name]
                if isinstance(value, bool):
                    node.attr[name].b = value
                elif isinstance(value, int):
                    node.attr[name].i = value
                else:
                    node.attr[name].s = value
        assert set(node.attr) - {"_output_shapes"} <= set(FIRST_RELEASE[node.op]), node.attr
    with open(f"{path}/saved_model.pb", "wb") as f:
        f.write(saved_model.SerializeToString())
    np.testing.assert_allclose(_serve_in_fresh_process(path, x, tmp_path), expected, rtol=1e-5,
                               atol=1e-5)
