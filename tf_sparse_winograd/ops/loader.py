"""Lazy loading of the compiled op library, with a clear error naming the fix.

`load_op_library()` raises an `OpLibraryError` saying why the library cannot be used (missing,
built for another TensorFlow, not loadable). The inference layers ask `op_library_available()`
instead: when it is False they run their pure-TF path, after one warning per process that says
why and how to rebuild (as TensorFlow Addons does for its custom kernels).
"""

import os
import threading
import warnings

import tensorflow as tf

from tf_sparse_winograd.ops import build

CONV_OP_NAME = "SparseWinograd>Conv2D"
DENSE_OP_NAME = "SparseWinograd>SparseDense"

_LOCK = threading.Lock()
_LIBRARY = None
_LIBRARY_PATH = None  # The path _LIBRARY was loaded from.
_LOAD_ERROR = None  # The OpLibraryError of the first failed load, raised again by later calls.
_FALLBACK_WARNED = False

_FIX = ("Rebuild it in place with `python -m tf_sparse_winograd.ops.build` (needs g++), or "
        "reinstall the package (`pip install .` or `pip install -e .` from its source tree).")


class OpLibraryError(ImportError):
    """The op library is missing, stale or unloadable."""


def library_path():
    """Where the op library is expected (TFSW_OP_LIBRARY overrides it)."""
    return os.environ.get("TFSW_OP_LIBRARY", build.DEFAULT_OUTPUT)


def load_op_library():
    """Loads (once) and returns the op library module of `tf.load_op_library`.

    A failure is remembered: later calls raise the same error (restart the process after a
    rebuild).
    """
    global _LIBRARY, _LIBRARY_PATH, _LOAD_ERROR
    if _LIBRARY is not None:
        return _LIBRARY
    with _LOCK:
        if _LIBRARY is None and _LOAD_ERROR is None:
            try:
                path = library_path()
                _LIBRARY, _LIBRARY_PATH = _load(path), path
            except OpLibraryError as error:
                _LOAD_ERROR = error
        if _LOAD_ERROR is not None:
            raise _LOAD_ERROR
        return _LIBRARY


def loaded_library_path():
    """The path the op library was loaded from (loading it first)."""
    load_op_library()
    return _LIBRARY_PATH


def _load(path):
    if not os.path.exists(path):
        raise OpLibraryError(f"The SparseWinograd op library {path} is missing. {_FIX}")
    version = build.built_for_version(path)
    if version != tf.__version__:
        built_for = ("has no TensorFlow version stamp" if version is None
                     else f"was built for TensorFlow {version}")
        raise OpLibraryError(
            f"The SparseWinograd op library {path} {built_for}, but TensorFlow "
            f"{tf.__version__} is installed. {_FIX}")
    try:
        return tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as error:
        raise OpLibraryError(
            f"Could not load the SparseWinograd op library {path}: {error}. {_FIX}") from error


def op_library_available():
    """True if the op library is (or now gets) loaded.

    Otherwise returns False after warning, once per process, why it cannot be loaded and how to
    rebuild it; the caller then runs its pure-TF path.
    """
    global _FALLBACK_WARNED
    try:
        load_op_library()
        return True
    except OpLibraryError as error:
        with _LOCK:
            warn, _FALLBACK_WARNED = not _FALLBACK_WARNED, True
        if warn:
            warnings.warn(f"{error} Until then, SparseWinogradConv2D and SparseDense layers run a "
                          "pure-TensorFlow path, which gives the same results but is much slower.",
                          RuntimeWarning, stacklevel=3)
        return False
