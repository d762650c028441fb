"""Interleaved timing shared by the benchmarks: every function once per round, round after round,
so that the load of a shared machine hits them alike."""

import statistics


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
