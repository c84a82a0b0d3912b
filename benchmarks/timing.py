"""How every figure of ``mocapflow bench`` is timed: the first call apart, then warm-up, then per-call statistics.

Pure standard library + numpy; no project imports (the model-timing child process uses it too).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CallStats:
    """Seconds of the first call (timed apart), then ``n`` calls after ``warmup`` untimed ones."""

    first_s: float
    n: int
    mean_s: float
    min_s: float
    max_s: float
    std_s: float
    median_s: float

    def to_dict(self, scale: float = 1.0, unit: str = "s") -> dict[str, Any]:
        d = asdict(self)
        if scale == 1.0:
            return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
        return {
            (k[:-2] + "_" + unit if k.endswith("_s") else k): (
                round(v * scale, 4) if isinstance(v, float) else v
            )
            for k, v in d.items()
        }


def stats_of(first_s: float, samples: list[float]) -> CallStats:
    if not samples:
        samples = [first_s]
    return CallStats(
        first_s=first_s,
        n=len(samples),
        mean_s=statistics.fmean(samples),
        min_s=min(samples),
        max_s=max(samples),
        std_s=statistics.pstdev(samples) if len(samples) > 1 else 0.0,
        median_s=statistics.median(samples),
    )


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> CallStats:
    """Time ``fn``: its first call apart, ``warmup`` untimed calls, then ``repeats`` timed calls."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return stats_of(first, samples)


def machine() -> dict[str, Any]:
    """What the figures ran on: CPUs, load average (the machine may be shared), CPU model, Python."""
    import platform

    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
