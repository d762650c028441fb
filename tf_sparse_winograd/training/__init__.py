"""Library logic behind train.py: the three phases, checkpoints and resuming, strategies.

Names are imported on first use, so that `reporting` (report.py) does not pull in TensorFlow.
"""

import importlib

_EXPORTS = {
    "CheckpointError": "checkpointing",
    "read_progress": "checkpointing",
    "PHASES": "config",
    "TrainConfig": "config",
    "parse_list": "config",
    "write_flags": "config",
    "Runner": "phases",
    "run": "phases",
}


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
