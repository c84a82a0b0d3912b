"""Latency to the first keypoints table on a cold machine (no Ray, no actors, models not loaded), in a fresh
process: start Ray, start the pose pool (models load), probe (hash) the video, get its keypoints table committed.
Then the same process's next run (what a served deployment pays): a new lease on the process's pool
(:mod:`tasks.pose_pools`, the pool the first run left), probe and pose the video again into another store.

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
    from mocapflow.store import Store
    from mocapflow.video import probe
    from tasks import pose_pools
    from tasks.runtime import resolve_model_set

    settings = load_settings(model_set="blazepose", storage_root=store_root)
    model_set = resolve_model_set(settings)
    params = PoseParams.from_settings(settings)
    t_import = time.perf_counter()
    ensure_ray(settings)
    t_ray = time.perf_counter()
    try:
        lease = pose_pools.acquire(settings, model_set)  # the first run: the pool starts
        lease.pool.info()  # every actor has loaded its models
        t_pool = time.perf_counter()
        info = probe(video)
        t_probe = time.perf_counter()
        outcome = lease.pool.process_one(video, params)
        t_done = time.perf_counter()
        if not isinstance(outcome, PoseResult):
            raise SystemExit(f"cold first result failed: {outcome}")
        n = lease.pool.n_actors
        lease.release(idle_s=600)
        # the next run in this process: its own store, the pool the first run left
        second = Store(f"{store_root}-next-run")
        t_next = time.perf_counter()
        lease = pose_pools.acquire(settings, model_set)
        probe(video)
        again = lease.pool.process_one(video, params, store=second)
        t_next_done = time.perf_counter()
        if not isinstance(again, PoseResult) or not lease.reused:
            raise SystemExit(f"warm next run failed (pool reused: {lease.reused}): {again}")
        lease.release(idle_s=0)
    finally:
        pose_pools.registry().shutdown_all()
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
                "next_run_on_the_live_pool_s": round(t_next_done - t_next, 3),
                "actors": n,
                "frames": outcome.frames,
                "sha256": info.sha256[:12],
            }
        )
    )


if __name__ == "__main__":
    main()
