"""Fit figures of ``mocapflow bench``: a real 5 s keypoints table (a clip of a real person through the blazepose
pool) fitted on one pinned core in fresh processes (:mod:`benchmarks.fit_child`):

* **cold**: an empty JAX compilation cache (everything traced and compiled);
* **cached**: a fresh process with the cache the cold one filled (what a Ray fit worker's first fit pays);
* **warm**: the second fit in that process (what every later fit of a reused Ray fit worker pays);

and jitted blocks of optimiser steps vs a Python loop of single jitted steps (the origin's way), same data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _child(keypoints: str, cache: Path, loop_steps: int = 0, block: int = 200) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.fit_child", keypoints, "--cache", str(cache)]
    cmd += ["--loop-steps", str(loop_steps), "--block", str(block)]
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=str(Path(__file__).resolve().parent.parent)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fit benchmark process failed: {proc.stderr.strip()[-800:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(time.perf_counter() - t, 2)
    return out


def fit_section(keypoints: str, video_seconds: float, loop_steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-jax-") as tmp:
        cold = _child(keypoints, Path(tmp))
        cached = _child(keypoints, Path(tmp), loop_steps=loop_steps)
    per5 = 5.0 / video_seconds
    warm = cached["fits"][1]["wall_s"] if len(cached["fits"]) > 1 else None
    warm_cpu = cached["fits"][1]["cpu_s"] if len(cached["fits"]) > 1 else None
    loop = cached.get("scan_vs_loop") or {}
    return {
        "keypoints": keypoints,
        "video_seconds": video_seconds,
        "cold": cold,
        "cached": cached,
        "keys": {
            # what a fit costs in the product: Ray fit workers are reused (tasks/fit_ray.py), so after a worker's
            # first fit every fit is warm; per 5 s of video, on one pinned core
            "fit_s_per_5s_video": None if warm is None else round(warm * per5, 2),
            "fit_cpu_s_per_5s_video": None if warm_cpu is None else round(warm_cpu * per5, 2),
            # a worker's first fit: fresh process, JAX import, compiled code from the disk cache
            "fit_s_per_5s_video_fresh_process": round(cached["process_to_first_fit_end_s"] * per5, 2),
            "fit_s_per_5s_video_cold": round(cold["process_to_first_fit_end_s"] * per5, 2),
            "fit_iters_vs_loop": loop.get("ratio"),
        },
    }
