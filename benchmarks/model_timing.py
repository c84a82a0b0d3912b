"""Per-model inference timing of the ``blazepose`` set, in a process of its own: the first inference timed apart,
then warm-up, then mean/min/max/std per inference, either pinned (one CPU, one thread) or unpinned
(``os.cpu_count()`` threads, no affinity: the origin's way).

Run by :mod:`benchmarks.pose_suite` as ``python -m benchmarks.model_timing VIDEO --mode pinned|unpinned``; prints
one JSON line. Inputs are real: the detector sees the clip's letterboxed frames, the landmark model the 256x256
crops around the person the tracker follows in them.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--mode", choices=("pinned", "unpinned"), required=True)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last allowed)")
    args = ap.parse_args()

    exclusive = None
    if args.mode == "pinned":
        from mocapflow.cpus import lease_cpus

        lease = lease_cpus(1) if args.cpu is None else None  # a CPU no other mocapflow worker holds, if any
        exclusive = bool(lease and lease.cpus)
        if not exclusive:
            os.sched_setaffinity(
                0, [args.cpu if args.cpu is not None else sorted(os.sched_getaffinity(0))[-1]]
            )
        threads = 1
    else:
        threads = os.cpu_count() or 1

    import cv2
    import numpy as np

    from benchmarks.timing import stats_of
    from mocapflow.camera import Intrinsics
    from mocapflow.settings import load_settings
    from models.blazepose.runtime import BlazePoseEstimator, landmark_input
    from models.modelset import resolve
    from models.runtime import ThreadConfig

    settings = load_settings()
    ms = resolve("blazepose", settings.modelsets_dir, settings.cache_dir)
    t = time.perf_counter()
    est = BlazePoseEstimator(ms, ThreadConfig(threads))
    load_s = time.perf_counter() - t

    cap = cv2.VideoCapture(args.video)
    frames = []
    while len(frames) < args.repeats + args.warmup + 1:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"{args.video}: no frames decoded")
    h, w = frames[0].shape[:2]
    # the person's ROI in each frame, from a tracking pass (not timed)
    session = est.video_session(Intrinsics.from_fov(w, h, 55.0))
    rois = []
    for f in frames:
        rois.append(session.state.rois[:1].copy())
        session(f[None])
    crops = [landmark_input(f, r[0])[None] for f, r in zip(frames, rois, strict=True) if r.shape[0]]
    if not crops:
        raise SystemExit(f"{args.video}: nobody tracked; the landmark model would be timed on no person")
    est2 = BlazePoseEstimator(ms, ThreadConfig(threads))  # fresh sessions: their true first inference

    def timed(fn, inputs):
        n = len(inputs)
        t0 = time.perf_counter()
        fn(inputs[0])
        first = time.perf_counter() - t0
        for i in range(args.warmup):
            fn(inputs[(1 + i) % n])
        samples = []
        for i in range(args.repeats):
            x = inputs[(1 + args.warmup + i) % n]
            t0 = time.perf_counter()
            fn(x)
            samples.append(time.perf_counter() - t0)
        return stats_of(first, samples).to_dict(1e3, "ms")

    out = {
        "mode": args.mode,
        "threads": threads,
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_exclusive": exclusive,
        "model_load_s": round(load_s, 3),
        "detector": timed(lambda f: est2.detect(f, tiled=False), frames),
        "landmarks": timed(lambda c: est2.landmarks(c), crops),
        "frames": len(frames),
        "crops": len(crops),
        "person_found": bool(np.isfinite(np.asarray(rois[-1])).all()),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
