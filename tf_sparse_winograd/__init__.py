"""Sparse Winograd-domain convolutions for TensorFlow and Keras 3.

Importing the package registers its Keras objects (layers, pruning wrapper and schedules) for
`.keras` loading and, when the compiled library is present, the `SparseWinograd>Conv2D` op, so
that `tf.saved_model.load` can run exported models. A missing library is reported when the op is
used: the inference layers then fall back to plain TF ops with one warning.

Keras must use its TensorFlow backend; any other raises an ImportError here.
"""

from tf_sparse_winograd import _backend

_backend.require_tensorflow_backend()

from tf_sparse_winograd import layers  # noqa: E402
from tf_sparse_winograd import pruning  # noqa: E402
from tf_sparse_winograd import export  # noqa: E402
from tf_sparse_winograd import tile_choice  # noqa: E402
from tf_sparse_winograd.conversion import to_winograd  # noqa: E402
from tf_sparse_winograd.ops import loader as _loader  # noqa: E402

__version__ = "0.1.0"

try:
    _loader.load_op_library()
except _loader.OpLibraryError:
    pass
