"""The check that Keras runs on TensorFlow, done before anything imports Keras' layers."""

import json
import os

_REQUIRED = "tensorflow"


def _error(backend, source):
    return ImportError(
        f"tf-sparse-winograd needs Keras' TensorFlow backend (its layers, pruning and C++ op are "
        f"TensorFlow code), but Keras is set to use {backend!r} ({source}). Set "
        f"KERAS_BACKEND=tensorflow (or leave it unset) before Python imports keras.")


def _configured_backend():
    """(backend, where it was set) from KERAS_BACKEND or keras.json; None where unset."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    path = os.path.join(keras_home, "keras.json")
    try:
        with open(path) as f:
            return json.load(f).get("backend"), path
    except (OSError, ValueError, AttributeError):
        return None, None


def require_tensorflow_backend():
    """Raises an ImportError naming the setting when Keras is configured for another backend."""
    backend, source = _configured_backend()
    if backend not in (None, _REQUIRED):
        raise _error(backend, source)  # Before importing keras, which may fail on that backend.
    import keras  # pylint: disable=import-outside-toplevel
    if keras.backend.backend() != _REQUIRED:
        raise _error(keras.backend.backend(), "keras.backend.backend()")
