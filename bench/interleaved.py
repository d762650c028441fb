"""Timing shared by the benchmarks: interleaved rounds (every function once per round, round after
round, so that the load of a shared machine hits them alike), calls timed over a minimum
duration, SavedModel serving functions, and the machine's description."""

import statistics
import time

import numpy as np

from tf_sparse_winograd.ops import cpu_model  # noqa: F401  (the benchmarks print it)


def measure(samplers, rounds):
    """Runs each sampler (a callable returning one time) once per round; returns (best, median)
    of each sampler's times.

    The order rotates every round: two identical functions measured 1.2-1.8% apart by their
    position in a fixed order (the first of a round slower).
    """
    results = [[] for _ in samplers]
    for round_index in range(rounds):
        start = round_index % len(samplers)
        for i in list(range(start, len(samplers))) + list(range(start)):
            results[i].append(samplers[i]())
    return [(min(r), statistics.median(r)) for r in results]


def time_per_call(fn, x, min_seconds):
    """Seconds per call: calls `fn(x)` repeatedly for at least `min_seconds` (and twice)."""
    calls, start = 0, time.perf_counter()
    while True:
        result = fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 2:
            break
    del result
    return elapsed / calls


def time_variants(variants, x, rounds, min_seconds, agree=(), rtol=1e-3):
    """Warms up every variant (a dict name -> fn) on `x`, checks that those named in `agree`
    compute what the first one does (within rtol of its largest output), then times them all
    interleaved. Returns ({name: best seconds per call}, {name: median})."""
    reference = None
    for name, fn in variants.items():
        out = first_output(fn(x))
        if reference is None:
            reference = out
        elif name in agree:
            np.testing.assert_allclose(out, reference, rtol=rtol,
                                       atol=rtol * np.abs(reference).max(), err_msg=name)
    results = measure([lambda fn=fn: time_per_call(fn, x, min_seconds)
                       for fn in variants.values()], rounds)
    return ({name: b for name, (b, _) in zip(variants, results)},
            {name: m for name, (_, m) in zip(variants, results)})


def serving_function(path):
    """The `serving_default` signature of the SavedModel at `path` (op library loaded first),
    called with its input by name.

    A signature binds keyword arguments only. Called positionally, TensorFlow 2.21 first fails to
    bind, formats the input tensor into the message of the exception it then discards, and
    retries with the flat signature: 2.6 ms more per call at batch 1 on a 28x28 image (AMD EPYC
    Zen 5), three times the dense VGG-nagadomi's own time.
    """
    from tf_sparse_winograd import export  # pylint: disable=import-outside-toplevel
    loaded = export.load_saved_model(path)
    signature = loaded.signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1]
    return lambda x, _loaded=loaded: signature(**{input_name: x})


def first_output(outputs):
    """The first tensor of a model's or a signature's outputs, as numpy."""
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return outputs.numpy()
