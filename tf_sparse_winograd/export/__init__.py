"""Sparse inference: convert a trained (pruned) Keras model and export it as a SavedModel.

  * `to_sparse(model)`: a clone whose WinogradConv2D layers are SparseWinogradConv2D layers on the
    sparse C++ op, with batch norm (and a following ReLU) folded into them where it is safe.
  * `export_saved_model(model, path)`: a SavedModel with a `serving_default` signature.
  * `load_saved_model(path)`: loads the op library, then the SavedModel, with a clear error.
"""

from tf_sparse_winograd.export.convert import to_sparse
from tf_sparse_winograd.export.folding import batch_norm_affine
from tf_sparse_winograd.export.folding import fold_affine
from tf_sparse_winograd.export.saved_model import SIGNATURE_KEY
from tf_sparse_winograd.export.saved_model import export_saved_model
from tf_sparse_winograd.export.saved_model import graph_op_types
from tf_sparse_winograd.export.saved_model import load_saved_model
from tf_sparse_winograd.export.saved_model import missing_op_message
from tf_sparse_winograd.export.saved_model import saved_model_size
