"""The reference pipeline: MediaPipe's own Pose solution over one video, run in the reference venv.

This file is a script for the separate virtual environment that ``mocapflow.pose.reference`` creates
(``mediapipe==0.10.21`` pins protobuf<5, which the project's TensorFlow cannot share). It imports only the standard
library, mediapipe, cv2 and numpy, never mocapflow.

    python reference_worker.py VIDEO OUT.npz [--cpus 0,1] [--model-complexity 1] [--no-smooth]

Pins itself to ``--cpus`` before loading anything, then runs ``mediapipe.solutions.pose.Pose`` in video mode
(``static_image_mode=False``: detect to acquire, then track the region of interest from the landmarks) over every
frame and writes OUT.npz without pickles: ``kp2d_px`` float32 [F, 33, 2] (NaN where no pose), ``visibility`` and
``presence`` float32 [F, 33] (0 where no pose), ``found`` bool [F], and ``meta``, a JSON string (frames, size,
seconds of the decode+pose loop, frames per second, load seconds, versions, options, CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="MediaPipe Pose (reference) over one video")
    p.add_argument("video")
    p.add_argument("out")
    p.add_argument("--cpus", default="", help="comma-separated CPU ids to pin to (default: as started)")
    p.add_argument("--model-complexity", type=int, default=1, choices=(0, 1, 2))
    p.add_argument("--no-smooth", action="store_true", help="smooth_landmarks=False")
    p.add_argument("--min-detection-confidence", type=float, default=0.5)
    p.add_argument("--min-tracking-confidence", type=float, default=0.5)
    a = p.parse_args(argv)

    if a.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in a.cpus.split(",")})
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None

    t_load = time.perf_counter()
    import cv2
    import mediapipe as mp
    import numpy as np

    options = {
        "static_image_mode": False,
        "model_complexity": a.model_complexity,
        "smooth_landmarks": not a.no_smooth,
        "enable_segmentation": False,
        "min_detection_confidence": a.min_detection_confidence,
        "min_tracking_confidence": a.min_tracking_confidence,
    }
    pose = mp.solutions.pose.Pose(**options)
    cap = cv2.VideoCapture(a.video)
    if not cap.isOpened():
        sys.stderr.write(f"reference worker: cannot open video {a.video}\n")
        return 2
    load_seconds = time.perf_counter() - t_load

    kp: list[np.ndarray] = []
    vis: list[np.ndarray] = []
    pres: list[np.ndarray] = []
    found: list[bool] = []
    width = height = 0
    t0 = time.perf_counter()
    while True:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            break
        height, width = bgr.shape[:2]
        res = pose.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if res.pose_landmarks is None:
            kp.append(np.full((33, 2), np.nan, np.float32))
            vis.append(np.zeros(33, np.float32))
            pres.append(np.zeros(33, np.float32))
            found.append(False)
            continue
        lm = res.pose_landmarks.landmark
        kp.append(np.array([[p.x * width, p.y * height] for p in lm], np.float32))
        vis.append(np.array([p.visibility for p in lm], np.float32))
        pres.append(np.array([p.presence for p in lm], np.float32))
        found.append(True)
    seconds = time.perf_counter() - t0
    cap.release()
    pose.close()
    n = len(found)
    meta = {
        "video": a.video,
        "frames": n,
        "width": width,
        "height": height,
        "seconds": seconds,
        "frames_per_second": n / seconds if seconds > 0 else None,
        "load_seconds": load_seconds,
        "mediapipe": mp.__version__,
        "opencv": cv2.__version__,
        "python": sys.version.split()[0],
        "options": options,
        "cpus": cpus,
    }
    tmp = a.out + ".partial.npz"
    np.savez(
        tmp,
        kp2d_px=np.stack(kp) if n else np.zeros((0, 33, 2), np.float32),
        visibility=np.stack(vis) if n else np.zeros((0, 33), np.float32),
        presence=np.stack(pres) if n else np.zeros((0, 33), np.float32),
        found=np.array(found, bool),
        meta=np.array(json.dumps(meta)),
    )
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
