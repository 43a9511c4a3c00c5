"""Timing helpers the benchmark scripts share (run them from the repository root: `python benchmarks/...`)."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int, warm_up: bool = False) -> float:
    """Median wall time of `repeats` calls of `fn` (after one untimed call with `warm_up`)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turns so that drift in the machine hits all alike."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}
