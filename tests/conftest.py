"""Shared pytest set-up: quiet TensorFlow logs, and Keras' global state cleared after each test
module (layer name counters, cached graphs), so that modules do not depend on the order they run
in and the process does not keep every module's models. Shared helpers live in support.py and
winograd_reference.py (tests-only modules; pytest puts tests/ on sys.path)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  pylint: disable=wrong-import-position
import pytest  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(autouse=True, scope="module")
def _clear_keras_state_after_module():
    yield
    keras.backend.clear_session()  # also runs gc.collect() (free_memory=True)


@pytest.fixture
def isa_restored():
    """Puts back the op's kernel choice (ops.set_isa) after a test that forces one with
    support.use_isa."""
    from tf_sparse_winograd import ops  # pylint: disable=import-outside-toplevel
    saved = ops.set_isa("auto")
    yield
    ops.set_isa(saved)
