"""Lazy loading of the compiled op library, with a clear error naming the fix."""

import os
import threading

import tensorflow as tf

from tf_sparse_winograd.ops import build

_LOCK = threading.Lock()
_LIBRARY = None

_FIX = ("Build it with `pip install .` (or `pip install -e .`) from the repository root, or in "
        "place with `python -m tf_sparse_winograd.ops.build`.")


class OpLibraryError(ImportError):
    """The op library is missing, stale or unloadable."""


def library_path():
    """Where the op library is expected (TFSW_OP_LIBRARY overrides it)."""
    return os.environ.get("TFSW_OP_LIBRARY", build.DEFAULT_OUTPUT)


def load_op_library():
    """Loads (once) and returns the op library module of `tf.load_op_library`."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    with _LOCK:
        if _LIBRARY is not None:
            return _LIBRARY
        path = library_path()
        if not os.path.exists(path):
            raise OpLibraryError(f"The SparseWinograd op library {path} is missing. {_FIX}")
        version = build.built_for_version(path)
        if version != tf.__version__:
            raise OpLibraryError(
                f"The SparseWinograd op library {path} was built for TensorFlow {version} "
                f"(recorded in the library), but TensorFlow {tf.__version__} "
                f"is installed. Rebuild it: {_FIX}")
        try:
            _LIBRARY = tf.load_op_library(path)
        except (tf.errors.NotFoundError, OSError) as error:
            raise OpLibraryError(
                f"Could not load the SparseWinograd op library {path}: {error}. {_FIX}") from error
        return _LIBRARY
