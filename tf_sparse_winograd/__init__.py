"""Sparse Winograd-domain convolutions for TensorFlow and Keras 3.

Importing the package registers its Keras objects (layers, pruning wrapper and schedules) for
`.keras` loading and, when the compiled library is present, the `SparseWinograd>Conv2D` op, so
that `tf.saved_model.load` can run exported models. A missing library is reported, with the fix,
only when the op is used.
"""

from tf_sparse_winograd import layers
from tf_sparse_winograd import pruning
from tf_sparse_winograd import export
from tf_sparse_winograd.ops import loader as _loader

__version__ = "0.1.0"

try:
    _loader.load_op_library()
except _loader.OpLibraryError:
    pass
