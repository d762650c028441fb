"""Pruning schedules: tfmot's values step by step, validation, and config round trips.

tfmot is imported only in a subprocess (importing it sets TF_USE_LEGACY_KERAS=1 and flips
`tf.keras`), which evaluates its own schedules and prints them as JSON.
"""

import inspect
import json
import math
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

import support
from tf_sparse_winograd import pruning
from tf_sparse_winograd.pruning import pruning_schedule as schedules


# (class name, kwargs); every schedule is evaluated at _steps(kwargs).
CASES = [
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=0)),
    ("ConstantSparsity", dict(target_sparsity=0.9, begin_step=3, end_step=20, frequency=4)),
    ("ConstantSparsity", dict(target_sparsity=0.0, begin_step=7, end_step=7, frequency=1)),
    ("ConstantSparsity", dict(target_sparsity=0.3, begin_step=10, end_step=-1, frequency=3)),
    ("ConstantSparsity", dict(target_sparsity=0.75, begin_step=0, end_step=0)),
    ("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.8, begin_step=0,
                             end_step=100)),
    ("PolynomialDecay", dict(initial_sparsity=0.0, final_sparsity=0.95, begin_step=5,
                             end_step=37, power=2, frequency=4)),
    ("PolynomialDecay", dict(initial_sparsity=0.5, final_sparsity=0.1, begin_step=1,
                             end_step=11, power=1, frequency=1)),
    ("PolynomialDecay", dict(initial_sparsity=0.3, final_sparsity=0.6, begin_step=4,
                             end_step=4, power=3, frequency=2)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.7, begin_step=2,
                             end_step=50, power=0.5, frequency=7)),
]

INVALID = [
    ("ConstantSparsity", dict(target_sparsity=1.0, begin_step=0)),
    ("ConstantSparsity", dict(target_sparsity=-0.1, begin_step=0)),
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=-1)),
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=5, end_step=4)),
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=0, end_step=-2)),
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=0, frequency=0)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.5, begin_step=0,
                             end_step=-1)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=1.0, begin_step=0,
                             end_step=10)),
    ("PolynomialDecay", dict(initial_sparsity=1.5, final_sparsity=0.5, begin_step=0,
                             end_step=10)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.5, begin_step=3,
                             end_step=2)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.5, begin_step=0,
                             end_step=10, frequency=-3)),
]


def _steps(kwargs):
    begin = kwargs["begin_step"]
    end = kwargs.get("end_step", -1)
    freq = kwargs.get("frequency", 100)
    last = max(begin, end) + 2 * freq + 3
    steps = set(range(0, min(last, 400)))
    for s in (begin - 1, begin, begin + 1, end - 1, end, end + 1, end + freq, begin + freq,
              begin + freq - 1, begin + 10 * freq, 1000, 10 ** 6):
        if s >= 0:
            steps.add(s)
    return sorted(steps)


# Evaluates a list of (class name, kwargs, steps) with a schedules module `S` and prints JSON.
_EVALUATE = textwrap.dedent("""
    import json, math, sys
    import tensorflow as tf

    def evaluate(S, cases, invalid):
        values = []
        for name, kwargs, steps in cases:
            schedule = getattr(S, name)(**kwargs)
            rows = []
            for step in steps:
                for s in (step, tf.constant(step, tf.int64)):
                    should, sparsity = schedule(s)
                    v = float(sparsity.numpy())
                    rows.append([bool(should.numpy()), None if math.isnan(v) else v])
            values.append({"rows": rows, "config": schedule.get_config()})
        raised = []
        for name, kwargs in invalid:
            try:
                getattr(S, name)(**kwargs)
                raised.append(False)
            except ValueError:
                raised.append(True)
        return {"values": values, "raised": raised}
""")


@pytest.fixture(scope="module")
def tfmot_results():
    cases = [(name, kwargs, _steps(kwargs)) for name, kwargs in CASES]
    script = _EVALUATE + textwrap.dedent("""
        import tf_sparse_winograd.pruning
        from tf_sparse_winograd.pruning import PruneLowMagnitude
        imported = any(m.startswith("tensorflow_model_optimization") for m in sys.modules)
        import tensorflow_model_optimization as tfmot
        import keras
        cases, invalid = json.loads(sys.stdin.read())
        result = evaluate(tfmot.sparsity.keras, cases, invalid)
        # tfmot's schedule objects are accepted and turned into ours.
        coerced = []
        for name, kwargs, _ in cases:
            theirs = getattr(tfmot.sparsity.keras, name)(**kwargs)
            wrapper = PruneLowMagnitude(keras.layers.Dense(3), pruning_schedule=theirs)
            coerced.append([type(wrapper.pruning_schedule).__module__,
                            wrapper.pruning_schedule.get_config()])
        result["coerced"] = coerced
        result["tfmot_imported_by_us"] = imported
        result["legacy_keras"] = __import__("os").environ.get("TF_USE_LEGACY_KERAS")
        print("RESULT" + json.dumps(result))
    """)
    result = support.run_python(script, stdin=json.dumps([cases, INVALID]), timeout=300)
    return cases, json.loads(support.result_line(result, "RESULT"))


def _ours():
    namespace = {}
    exec(_EVALUATE, namespace)
    cases = [(name, kwargs, _steps(kwargs)) for name, kwargs in CASES]
    return namespace["evaluate"](schedules, cases, INVALID)


@pytest.mark.slow
def test_importing_pruning_does_not_import_tfmot(tfmot_results):
    _, theirs = tfmot_results
    assert theirs["tfmot_imported_by_us"] is False
    assert "tensorflow_model_optimization" not in sys.modules


@pytest.mark.slow
def test_schedules_match_tfmot_step_by_step(tfmot_results):
    cases, theirs = tfmot_results
    assert theirs["legacy_keras"] == "1"  # The subprocess really ran tfmot's import side effect.
    ours = _ours()
    assert len(ours["values"]) == len(theirs["values"]) == len(CASES)
    for (name, kwargs, steps), mine, ref in zip(cases, ours["values"], theirs["values"]):
        assert len(mine["rows"]) == len(ref["rows"]) == 2 * len(steps)
        for i, (a, b) in enumerate(zip(mine["rows"], ref["rows"])):
            step = steps[i // 2]
            assert a[0] == b[0], f"{name}{kwargs} should_prune differs at step {step}"
            assert a[1] == b[1], f"{name}{kwargs} sparsity differs at step {step}: {a[1]} {b[1]}"
        assert mine["config"] == ref["config"]


def test_schedule_semantics_independently():
    # An independent reference for the prune steps, written from tfmot's documentation.
    s = pruning.ConstantSparsity(0.6, begin_step=3, end_step=12, frequency=3)
    expected = {3, 6, 9, 12}
    for step in range(0, 30):
        should, sparsity = s(step)
        assert bool(should) == (step in expected), step
        assert float(sparsity) == pytest.approx(0.6)
    forever = pruning.ConstantSparsity(0.6, begin_step=2, end_step=-1, frequency=5)
    assert bool(forever(10 ** 6 + 2)[0]) and not bool(forever(10 ** 6 + 3)[0])
    d = pruning.PolynomialDecay(0.1, 0.9, begin_step=10, end_step=20, power=2, frequency=1)
    for step in (0, 10, 13, 20, 25):
        p = min(1.0, max(0.0, (step - 10) / 10))
        assert float(d(step)[1]) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - p) ** 2, abs=1e-6)
    assert not bool(d(21)[0]) and not bool(d(9)[0]) and bool(d(20)[0])


@pytest.mark.slow
def test_validation_matches_tfmot(tfmot_results):
    _, theirs = tfmot_results
    assert all(theirs["raised"])
    assert _ours()["raised"] == theirs["raised"]


def test_validation_messages_name_the_argument():
    with pytest.raises(ValueError, match="target_sparsity"):
        pruning.ConstantSparsity(1.0, 0)
    with pytest.raises(ValueError, match="end_step"):
        pruning.PolynomialDecay(0.1, 0.5, 0, -1)
    with pytest.raises(ValueError, match="frequency"):
        pruning.ConstantSparsity(0.5, 0, frequency=0)


@pytest.mark.slow
def test_tfmot_schedules_are_accepted(tfmot_results):
    cases, theirs = tfmot_results
    for (name, kwargs, _), (module, config) in zip(cases, theirs["coerced"]):
        assert module == schedules.__name__
        assert config == getattr(schedules, name)(**kwargs).get_config()


_NON_DEFAULT = {
    "ConstantSparsity": dict(target_sparsity=0.35, begin_step=4, end_step=40, frequency=6),
    "PolynomialDecay": dict(initial_sparsity=0.15, final_sparsity=0.85, begin_step=3,
                            end_step=90, power=2, frequency=9),
}


@pytest.mark.parametrize("name", sorted(_NON_DEFAULT))
def test_schedule_config_round_trip_every_argument(name):
    cls = getattr(pruning, name)
    kwargs = _NON_DEFAULT[name]
    parameters = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(parameters) == sorted(kwargs)  # The test covers every argument.
    schedule = cls(**kwargs)
    config = schedule.get_config()
    assert config == {"class_name": name, "config": kwargs}  # tfmot's format.
    for clone in (cls.from_config(config), cls.from_config(config["config"]),
                  keras.saving.deserialize_keras_object(
                      keras.saving.serialize_keras_object(schedule)),
                  schedules.deserialize(schedules.serialize(schedule)),
                  schedules.deserialize(json.loads(json.dumps(config)))):
        assert type(clone) is cls
        for key, value in kwargs.items():
            assert getattr(clone, key) == value, key
        assert clone.get_config() == config
        for step in (0, 3, 9, 40, 90, 91):
            assert bool(clone(step)[0]) == bool(schedule(step)[0])
            assert float(clone(step)[1]) == float(schedule(step)[1])


def test_schedule_works_inside_tf_function():
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10, frequency=2)

    @tf.function
    def run(step):
        return schedule(step)

    for step in range(12):
        should, sparsity = run(tf.constant(step, tf.int64))
        eager_should, eager_sparsity = schedule(step)
        assert bool(should) == bool(eager_should)
        # Graph and eager pow may differ in the last bit.
        assert float(sparsity) == pytest.approx(float(eager_sparsity), rel=1e-6)
    assert math.isclose(float(run(tf.constant(10, tf.int64))[1]), 0.8, rel_tol=1e-6)
