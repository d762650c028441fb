"""SavedModel export whose graph runs the sparse Winograd op, and loading it back.

A SavedModel that contains the custom op can only be loaded in a process where the op is
registered: `import tf_sparse_winograd` (which loads the op library) or
`load_saved_model(path)` (which loads it and explains a failure) before `tf.saved_model.load`.
"""

import os

import tensorflow as tf

from tf_sparse_winograd import pruning
from tf_sparse_winograd.export.convert import replaced_by_to_sparse
from tf_sparse_winograd.export.convert import strip_if_pruned
from tf_sparse_winograd.export.convert import to_sparse
from tf_sparse_winograd.layers.sparse_dense import SparseDense
from tf_sparse_winograd.layers.sparse_winograd_conv2d import SparseWinogradConv2D

SIGNATURE_KEY = "serving_default"
_OP_PREFIX = "SparseWinograd>"


def _ops():
    from tf_sparse_winograd import ops  # pylint: disable=import-outside-toplevel
    return ops


def graph_op_types(path):
    """The set of op types in a SavedModel's graph and all of its functions."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    types = set()
    for meta_graph in saved_model.meta_graphs:
        types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            types.update(node.op for node in function.node_def)
    return types


def saved_model_size(path):
    """{'variables': bytes of the variable files, 'constants': bytes of the graph's Const tensors}."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    variables_dir = os.path.join(path, "variables")
    variables = sum(os.path.getsize(os.path.join(variables_dir, name))
                    for name in os.listdir(variables_dir)) if os.path.isdir(variables_dir) else 0
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    constants = 0
    for meta_graph in saved_model.meta_graphs:
        node_lists = [meta_graph.graph_def.node] + [
            function.node_def for function in meta_graph.graph_def.library.function]
        for nodes in node_lists:
            for node in nodes:
                if node.op == "Const" and "value" in node.attr:
                    constants += node.attr["value"].tensor.ByteSize()
    return {"variables": variables, "constants": constants}


def export_saved_model(model, path, convert=True, fold_batch_norm=True, fuse_relu=True,
                       fuse_max_pool=True, sparse_dense_max_density=0.5):
    """Writes `model` as a SavedModel with a `serving_default` signature (batch dimension None).

    Args:
      model: a built Keras model. With `convert=True`, a model holding WinogradConv2D layers
        (plain, stripped or pruning-wrapped) or pruned Dense layers (density at most
        `sparse_dense_max_density`) is first converted with `to_sparse`, so the SavedModel's
        graph runs the sparse ops and stores only the nonzeros.
      path: the SavedModel directory.
      convert: False exports the model as it is (e.g. a dense reference model).
      fold_batch_norm, fuse_relu, fuse_max_pool, sparse_dense_max_density: passed to
        `to_sparse`.

    Returns:
      The Keras model that was exported (the sparse clone when a conversion took place).

    Raises:
      OpLibraryError: if the model has sparse layers and the op library cannot be loaded (the
        layers would fall back to plain TF ops, which a sparse SavedModel must not contain).
      RuntimeError: if the model has sparse layers but the written graph lacks the sparse op.
    """
    pruning.check_model(model, "export_saved_model", graph=False)
    if convert:
        model = strip_if_pruned(model)
        if any(replaced_by_to_sparse(layer, sparse_dense_max_density)
               for layer in pruning.walk_layers(model)):
            model = to_sparse(model, fold_batch_norm=fold_batch_norm, fuse_relu=fuse_relu,
                              fuse_max_pool=fuse_max_pool,
                              sparse_dense_max_density=sparse_dense_max_density)
    layers = list(pruning.walk_layers(model))
    if any(isinstance(l, (SparseWinogradConv2D, SparseDense)) for l in layers):
        _ops().load_op_library()  # The export runs the op: an OpLibraryError says why it cannot.
    specs = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=t.name)
             for t in model.inputs]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return {f"output_{i}": y for i, y in enumerate(tf.nest.flatten(outputs))}

    # A plain tf.Module that tracks each variable once. (keras.export.ExportArchive, as of Keras
    # 3.15, stores every variable twice: once as a Keras variable and once as the tf.Variable
    # the endpoint captured, which doubles the size of the SavedModel.)
    module = tf.Module(name=model.name)
    module.model_variables = [getattr(v, "value", v) for v in model.variables]
    module.serve = serve
    tf.saved_model.save(module, path, signatures={SIGNATURE_KEY: serve})
    written = graph_op_types(path)
    ops = _ops()
    for layer_type, op_name in ((SparseWinogradConv2D, ops.CONV_OP_NAME),
                                (SparseDense, ops.DENSE_OP_NAME)):
        if op_name not in written and any(isinstance(l, layer_type) for l in layers):
            raise RuntimeError(f"The SavedModel written to {path} does not run the sparse op "
                               f"'{op_name}'.")
    return model


def _missing_op_message(path, error=None):
    """Explains how to make a SavedModel that uses the sparse ops loadable."""
    from google.protobuf import message  # pylint: disable=import-outside-toplevel
    try:
        used = sorted(t for t in graph_op_types(path) if t.startswith(_OP_PREFIX))
    except (OSError, message.DecodeError):  # no readable saved_model.pb: name the conv op
        used = []
    names = ", ".join(f"'{name}'" for name in used or [_ops().CONV_OP_NAME])
    message = (f"The SavedModel at '{path}' uses the custom op{'s' if len(used) > 1 else ''} "
               f"{names} of tf-sparse-winograd, which is not registered in this process. Fix: "
               "install tf-sparse-winograd with its op library built for this TensorFlow "
               f"({tf.__version__}): `python -m tf_sparse_winograd.ops.build` rebuilds it in "
               "place, `pip install .` in the source tree reinstalls it; then "
               "`import tf_sparse_winograd` before `tf.saved_model.load`, or load with "
               "`tf_sparse_winograd.export.load_saved_model`.")
    if error is not None:
        message += f"\nOriginal error: {error}"
    return message


def load_saved_model(path, **kwargs):
    """`tf.saved_model.load(path)` after registering the sparse op, with a clear error if it fails.

    Call the loaded `signatures["serving_default"]` with its input by name (`serve(image=x)`):
    a positional call costs TensorFlow 2.21 a failed bind first (docs/export.md).

    Raises:
      tf.errors.NotFoundError: naming the missing op and the fix, when the op library cannot be
        loaded or the SavedModel needs an op that is not registered. (Plain `tf.saved_model.load`
        raises TensorFlow's "Op type not registered 'SparseWinograd>Conv2D'" error instead.)
    """
    try:
        _ops().load_op_library()
    except Exception as error:  # pylint: disable=broad-except
        raise tf.errors.NotFoundError(None, None, _missing_op_message(path, error)) from error
    try:
        return tf.saved_model.load(path, **kwargs)
    except (tf.errors.NotFoundError, RuntimeError) as error:
        # TensorFlow 2.21 reports an unregistered op in a function as a RuntimeError
        # ("Op type not registered ..."), older versions as a NotFoundError.
        if _OP_PREFIX.rstrip(">") in str(error):
            raise tf.errors.NotFoundError(None, None, _missing_op_message(path, error)) from error
        raise
