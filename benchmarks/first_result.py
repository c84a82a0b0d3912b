"""Latency to the first keypoints table on a cold machine (no Ray, no actors, models not loaded), in a fresh
process: start Ray, start the pose pool (models load), probe (hash) the video, get its keypoints table committed.

Run by :mod:`benchmarks.pose_suite` as ``python -m benchmarks.first_result VIDEO STORE_ROOT``; prints one JSON line
with the time of each step from the process's start of work (interpreter start and imports are in ``import_s``).
"""

from __future__ import annotations

import json
import sys
import time

T0 = time.perf_counter()


def main() -> None:
    video, store_root = sys.argv[1], sys.argv[2]
    from infra.ray_cluster import ensure_ray, shutdown_ray
    from mocapflow.pose.pipeline import PoseParams, PoseResult
    from mocapflow.settings import load_settings
    from mocapflow.video import probe
    from tasks.pose_ray import PosePool

    settings = load_settings(model_set="blazepose", storage_root=store_root)
    t_import = time.perf_counter()
    ensure_ray(settings)
    t_ray = time.perf_counter()
    try:
        with PosePool(settings) as pool:
            pool.info()  # every actor has loaded its models
            t_pool = time.perf_counter()
            info = probe(video)
            t_probe = time.perf_counter()
            outcome = pool.process_one(video, PoseParams.from_settings(settings))
            t_done = time.perf_counter()
            if not isinstance(outcome, PoseResult):
                raise SystemExit(f"cold first result failed: {outcome}")
            n = pool.n_actors
    finally:
        shutdown_ray()
    print(
        json.dumps(
            {
                "import_s": round(t_import - T0, 2),
                "ray_start_s": round(t_ray - t_import, 2),
                "pool_start_and_model_load_s": round(t_pool - t_ray, 2),
                "probe_s": round(t_probe - t_pool, 3),
                "pose_s": round(t_done - t_probe, 3),
                "seconds": round(t_done - t_import, 2),
                "seconds_without_model_load": round(t_done - t_import - (t_pool - t_ray), 2),
                "actors": n,
                "frames": outcome.frames,
                "sha256": info.sha256[:12],
            }
        )
    )


if __name__ == "__main__":
    main()
