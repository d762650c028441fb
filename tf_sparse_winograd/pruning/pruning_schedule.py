"""Pruning schedules: when to prune, and to which sparsity, at each training step.

A schedule is a callable `step -> (should_prune, sparsity)` returning a scalar bool tensor and a
scalar float32 tensor, plus `get_config()`. `ConstantSparsity` and `PolynomialDecay` reproduce the
semantics, argument validation and `get_config()` format of tensorflow_model_optimization's classes
of the same names (`{'class_name': ..., 'config': {...}}`), so a tfmot user's settings carry over.

tfmot's own schedule objects are accepted wherever a schedule is expected; `coerce_schedule` turns
tfmot's `ConstantSparsity` / `PolynomialDecay` into the equivalent classes here (recognised by class
name and module, without importing tfmot), so that a model saved with them reloads without tfmot.
Any other callable with `get_config()` is used as is.
"""

import abc
import numbers

import keras
import tensorflow as tf

_PACKAGE = "tf_sparse_winograd"


class PruningSchedule(abc.ABC):
    """Base class: `schedule(step)` returns `(should_prune, sparsity)`.

    Subclasses implement `__call__` and `get_config`; `from_config` accepts both the inner config
    dict and the tfmot-style `{'class_name': ..., 'config': {...}}` wrapper around it.
    """

    @staticmethod
    def _should_prune_in_step(step, begin_step, end_step, frequency):
        """True iff begin <= step <= end (or end < 0) and (step - begin) % frequency == 0."""
        in_range = tf.math.logical_and(
            tf.math.greater_equal(step, begin_step),
            tf.math.logical_or(tf.math.less_equal(step, end_step), tf.math.less(end_step, 0)))
        is_turn = tf.math.equal(tf.math.floormod(tf.math.subtract(step, begin_step), frequency), 0)
        return tf.math.logical_and(in_range, is_turn)

    @staticmethod
    def _validate_step(begin_step, end_step, frequency, allow_negative_1):
        for name, value in (("begin_step", begin_step), ("end_step", end_step),
                            ("frequency", frequency)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"`{name}` must be an int. Received: {name}={value!r}")
        if begin_step < 0:
            raise ValueError(f"`begin_step` must be >= 0. Received: begin_step={begin_step}")
        if not allow_negative_1 and end_step == -1:
            raise ValueError(f"`end_step` cannot be -1. Received: end_step={end_step}")
        if end_step != -1:
            if end_step < 0:
                raise ValueError(f"`end_step` must be -1 or >= 0. Received: end_step={end_step}")
            if end_step < begin_step:
                raise ValueError("`begin_step` must be <= `end_step` when end_step != -1. "
                                 f"Received: begin_step={begin_step}, end_step={end_step}")
        if frequency <= 0:
            raise ValueError(f"`frequency` must be > 0. Received: frequency={frequency}")

    @staticmethod
    def _validate_sparsity(sparsity, name):
        if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
            raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={sparsity!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={sparsity!r}")

    @abc.abstractmethod
    def __call__(self, step):
        """Returns (should_prune: bool tensor, sparsity: float32 tensor) at `step`."""

    @abc.abstractmethod
    def get_config(self):
        """Returns `{'class_name': ..., 'config': {constructor arguments}}` (tfmot's format)."""

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "config" in config and isinstance(config["config"], dict):
            config = dict(config["config"])
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config()["config"].items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstantSparsity(PruningSchedule):
    """Prunes to `target_sparsity` every `frequency` steps in [begin_step, end_step].

    Args:
      target_sparsity: fraction of zeros, in [0, 1).
      begin_step: first step at which to prune (>= 0).
      end_step: last step at which to prune; -1 (default) prunes until the end of training.
      frequency: prune every `frequency` steps counted from `begin_step` (default 100).
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self._validate_step(begin_step, end_step, frequency, True)
        self._validate_sparsity(target_sparsity, "target_sparsity")
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        return (self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
                tf.constant(self.target_sparsity, dtype=tf.float32))

    def get_config(self):
        return {
            "class_name": type(self).__name__,
            "config": {
                "target_sparsity": self.target_sparsity,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` along a polynomial.

    sparsity(step) = final + (initial - final) * (1 - p) ** power, with
    p = clip((step - begin_step) / (end_step - begin_step), 0, 1), computed in float32 as in tfmot.

    Args:
      initial_sparsity, final_sparsity: fractions of zeros, in [0, 1).
      begin_step: first pruning step (>= 0).
      end_step: last pruning step (>= begin_step; -1 is not allowed).
      power: exponent of the decay (default 3).
      frequency: prune every `frequency` steps counted from `begin_step` (default 100).
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        self._validate_step(begin_step, end_step, frequency, False)
        self._validate_sparsity(initial_sparsity, "initial_sparsity")
        self._validate_sparsity(final_sparsity, "final_sparsity")
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.power = power
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        # Same float32 operations, in the same order, as tfmot; begin_step == end_step divides by
        # zero there too (giving inf or nan before clipping), so the values agree in that case.
        with tf.name_scope("polynomial_decay_pruning_schedule"):
            p = tf.math.minimum(1.0, tf.math.maximum(0.0, tf.math.divide(
                tf.cast(step - self.begin_step, tf.float32), self.end_step - self.begin_step)))
            sparsity = tf.math.add(
                tf.math.multiply(self.initial_sparsity - self.final_sparsity,
                                 tf.math.pow(1 - p, self.power)),
                self.final_sparsity, name="sparsity")
        return (self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
                sparsity)

    def get_config(self):
        return {
            "class_name": type(self).__name__,
            "config": {
                "initial_sparsity": self.initial_sparsity,
                "final_sparsity": self.final_sparsity,
                "power": self.power,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


_BUILTIN_SCHEDULES = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


def _is_tfmot_builtin(schedule):
    cls = type(schedule)
    return (cls.__name__ in _BUILTIN_SCHEDULES
            and cls.__module__.startswith("tensorflow_model_optimization"))


def coerce_schedule(schedule):
    """Returns a schedule usable by the wrapper, or raises a ValueError.

    tfmot's `ConstantSparsity` / `PolynomialDecay` become the classes here (same semantics), other
    callables with a `get_config` method are returned unchanged.
    """
    if isinstance(schedule, PruningSchedule):
        return schedule
    if _is_tfmot_builtin(schedule):
        return _BUILTIN_SCHEDULES[type(schedule).__name__].from_config(schedule.get_config())
    if callable(schedule) and callable(getattr(schedule, "get_config", None)):
        return schedule
    raise ValueError("`pruning_schedule` must be a callable step -> (should_prune, sparsity) with "
                     f"a `get_config()` method. Received: pruning_schedule={schedule!r}")


def serialize(schedule):
    """Serializes a schedule with `keras.saving.serialize_keras_object`."""
    return keras.saving.serialize_keras_object(coerce_schedule(schedule))


def deserialize(config, custom_objects=None):
    """Inverse of `serialize`; also accepts tfmot's bare `{'class_name', 'config'}` dicts."""
    if isinstance(config, PruningSchedule) or (callable(config) and not isinstance(config, dict)):
        return coerce_schedule(config)
    if not isinstance(config, dict):
        raise ValueError(f"Cannot deserialize a pruning schedule from {config!r}")
    if "module" not in config and "registered_name" not in config:
        cls = (custom_objects or {}).get(config.get("class_name")) or _BUILTIN_SCHEDULES.get(
            config.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown pruning schedule class in {config!r}")
        return cls.from_config(config["config"])
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
