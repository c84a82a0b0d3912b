"""BlazePose tracking vs the reference pipeline (MediaPipe's own Pose solution, same weights) on real footage.

On one video (default: OpenCV's vtest.avi, 768x576 pedestrians filmed from above), on this machine, one after the
other (decoding excluded from both timings):
  * the reference: ``mediapipe==0.10.21`` ``Pose(static_image_mode=False, model_complexity=1)`` in its own venv
    (``--refvenv``; it pins protobuf<5, so it never enters the project's venv), run as a subprocess of this very
    file (``--reference-worker``), with its landmark smoothing on (its default) and off;
  * ours: ``BlazePoseEstimator.video_session`` at ``--threads`` threads, for each ``--max-people`` value.
Prints side by side: frames with >= 1 person found, people per frame, wall frames/s and CPU ms per frame (the CPU
time of the whole process: comparable across thread counts on a shared machine), and — on frames both found — the
median 2D distance of our subject's landmarks to the reference's (our person closest to the reference's one; the
reference's landmarks with visibility >= 0.5), normalised by the reference's torso (mid-shoulder to mid-hip).

Run: ``.venv/bin/python benchmarks/bench_blazepose_tracking.py [--frames N] [--json out.json]``. Asserts nothing.
The module's top level imports only the standard library: the reference worker runs it with the reference venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VIDEO = "/work/realdata/vtest.avi"
DEFAULT_REFVENV = "/work/refvenv"


def read_frames(video: str, limit: int | None) -> list:
    """RGB frames with OpenCV (present in both venvs)."""
    import cv2

    cap = cv2.VideoCapture(video)
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"{video}: no frames decoded; pass an existing video with --video")
    return frames


def reference_worker(video: str, out: str, limit: int | None, smooth: bool) -> None:
    """Runs in the reference venv: MediaPipe Pose on every frame, landmarks in px + visibility to ``out`` (JSON)."""
    import mediapipe as mp

    frames = read_frames(video, limit)
    h, w = frames[0].shape[:2]
    opts = {"static_image_mode": False, "model_complexity": 1, "smooth_landmarks": smooth}
    with mp.solutions.pose.Pose(**opts) as pose:  # warm-up: graph and model load outside the timing
        pose.process(frames[0])
    landmarks = []
    with mp.solutions.pose.Pose(**opts) as pose:
        t0, c0 = time.perf_counter(), time.process_time()
        for frame in frames:
            r = pose.process(frame)
            lm = r.pose_landmarks
            landmarks.append(None if lm is None else [[p.x * w, p.y * h, p.visibility] for p in lm.landmark])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    Path(out).write_text(
        json.dumps({"wall": wall, "cpu": cpu, "frames": len(frames), "landmarks": landmarks})
    )


def run_reference(args: argparse.Namespace, smooth: bool, tmp: Path) -> dict:
    python = Path(args.refvenv) / "bin" / "python"
    if not python.exists():
        raise SystemExit(
            f"{python} not found: create the reference venv (pip install mediapipe==0.10.21) or pass --refvenv"
        )
    out = tmp / f"reference-{int(smooth)}.json"
    cmd = [str(python), __file__, "--reference-worker", "--video", args.video, "--out", str(out)]
    cmd += ["--frames", str(args.frames)] if args.frames else []
    cmd += [] if smooth else ["--no-smooth"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def run_ours(args: argparse.Namespace, max_people: int | None, batch: int = 16) -> dict:
    import numpy as np

    from mocapflow.camera import Intrinsics
    from mocapflow.settings import load_settings
    from models.blazepose.runtime import BlazePoseEstimator, BlazePoseOptions
    from models.modelset import resolve
    from models.runtime import ThreadConfig

    settings = load_settings()
    ms = resolve("blazepose", settings.modelsets_dir, settings.cache_dir)
    options = BlazePoseOptions(max_people=max_people, scan_interval=args.scan_interval)
    est = BlazePoseEstimator(ms, ThreadConfig(args.threads), options)
    frames = np.stack(read_frames(args.video, args.frames or None))
    h, w = frames.shape[1:3]
    est(frames[:1], Intrinsics.from_fov(w, h, 55.0))  # warm-up outside the timing
    session = est.video_session(Intrinsics.from_fov(w, h, 55.0))
    found = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(frames), batch):
        found += session(frames[i : i + batch])
    found += session.finish()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = session.state
    return {
        "wall": wall,
        "cpu": cpu,
        "frames": len(found),
        "people": [d.n for d in found],
        "kp2d": [d.kp2d for d in found],
        "profile": {
            "scans": st.scans,
            "whole": st.whole_frame_detections,
            "local": st.local_detections,
            "crops": st.crops,
        },
    }


def crop_runtimes(threads: int, tmp: Path, repeats: int = 30) -> dict:
    """CPU ms per 256x256 crop of the landmark model: our ONNX under ONNX Runtime vs the original .tflite (from the
    cached mediapipe wheel) under TensorFlow's TFLite interpreter (XNNPACK), both at ``threads`` threads."""
    import numpy as np

    from mocapflow.settings import load_settings
    from models.blazepose.build import LANDMARK_MEMBER, extract_member, find_wheel
    from models.blazepose.runtime import tflite_interpreter
    from models.modelset import resolve
    from models.runtime import ThreadConfig, ort_session

    settings = load_settings()
    ms = resolve("blazepose", settings.modelsets_dir, settings.cache_dir)
    x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    ort = ort_session(ms.path("backbone"), ThreadConfig(threads))
    runs = {"onnxruntime": lambda: ort.run(None, {"image": x})}
    wheel = find_wheel(settings.cache_dir / "downloads")
    if wheel is not None:
        tfl = tflite_interpreter(
            extract_member(wheel, LANDMARK_MEMBER, tmp / "landmarks.tflite"), ThreadConfig(threads)
        )
        tfl.allocate_tensors()
        index = tfl.get_input_details()[0]["index"]

        def run_tflite() -> None:
            tfl.set_tensor(index, x)
            tfl.invoke()

        runs["tflite (xnnpack)"] = run_tflite
    out = {}
    for name, run in runs.items():
        run()
        times = []
        for _ in range(repeats):
            c0 = time.process_time()
            run()
            times.append(time.process_time() - c0)
        out[name] = 1e3 * float(np.median(times))
    return out


def subject_distance(ref: list, ours: list) -> dict:
    """Per frame both found: median over the reference's visible landmarks of |ours - ref| / torso, for our person
    closest to the reference's; summarised over frames."""
    import numpy as np

    d = []
    for r, k in zip(ref, ours, strict=False):
        if r is None or len(k) == 0:
            continue
        r = np.asarray(r)
        vis = r[:, 2] >= 0.5
        torso = np.linalg.norm(r[[11, 12], :2].mean(0) - r[[23, 24], :2].mean(0))
        d.append(min(np.median(np.linalg.norm(p[vis] - r[vis, :2], axis=1)) / torso for p in k))
    d = np.asarray(d)
    if d.size == 0:
        return {"both": 0}
    return {
        "both": int(d.size),
        "median": float(np.median(d)),
        "p75": float(np.percentile(d, 75)),
        "other_person": float((d > 0.5).mean()),  # frames where our closest person is not the reference's one
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=DEFAULT_VIDEO)
    ap.add_argument("--frames", type=int, default=0, help="first N frames only (0 = all)")
    ap.add_argument("--refvenv", default=DEFAULT_REFVENV)
    ap.add_argument("--threads", type=int, default=1, help="ORT/TF threads of ours")
    ap.add_argument(
        "--max-people", nargs="*", default=["all", "1"], help="values to run ours with ('all' = None)"
    )
    ap.add_argument("--scan-interval", type=int, default=10)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--no-smooth", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_worker:
        reference_worker(args.video, args.out, args.frames or None, smooth=not args.no_smooth)
        return

    with tempfile.TemporaryDirectory() as tmp:
        refs = {s: run_reference(args, s, Path(tmp)) for s in (True, False)}
        crops = crop_runtimes(args.threads, Path(tmp))
    ours = {m: run_ours(args, None if m == "all" else int(m)) for m in args.max_people}
    n = refs[True]["frames"]
    print(
        f"\n{args.video}: {n} frames, os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    head = (
        f"  {'pipeline':<44}{'found':>10}{'people/fr':>10}{'frames/s':>10}{'CPU ms/fr':>10}{'dist/torso':>11}"
    )
    print(head)
    rows = {}
    for s, r in refs.items():
        name = f"reference MediaPipe Pose (smooth={'on' if s else 'off'})"
        k = sum(x is not None for x in r["landmarks"])
        rows[name] = {"found": k, "frames": n, "fps": n / r["wall"], "cpu_ms": 1e3 * r["cpu"] / n}
        found = f"{k}/{n}"
        print(
            f"  {name:<44}{found:>10}{k / n:>10.2f}{n / r['wall']:>10.1f}{1e3 * r['cpu'] / n:>10.1f}{'-':>11}"
        )
    for m, o in ours.items():
        name = f"ours, {args.threads} thread(s), max_people={m}"
        k = sum(p > 0 for p in o["people"])
        dist = subject_distance(refs[False]["landmarks"], o["kp2d"])
        dist_s = subject_distance(refs[True]["landmarks"], o["kp2d"])
        rows[name] = {
            "found": k,
            "frames": o["frames"],
            "people_per_frame": sum(o["people"]) / o["frames"],
            "fps": o["frames"] / o["wall"],
            "cpu_ms": 1e3 * o["cpu"] / o["frames"],
            "distance_vs_unsmoothed_reference": dist,
            "distance_vs_smoothed_reference": dist_s,
            "profile": o["profile"],
        }
        med = dist.get("median", float("nan"))
        found = f"{k}/{o['frames']}"
        print(
            f"  {name:<44}{found:>10}{sum(o['people']) / o['frames']:>10.2f}"
            f"{o['frames'] / o['wall']:>10.1f}{1e3 * o['cpu'] / o['frames']:>10.1f}{med:>11.3f}"
        )
    print(
        "  found = frames with >= 1 person; dist/torso = median 2D distance of our closest person's landmarks to the\n"
        "  reference's (smoothing off) on frames both found, over the reference's torso length.\n"
        "  Ours per run: " + "; ".join(f"max_people={m}: {o['profile']}" for m, o in ours.items())
    )
    print(
        f"  landmark model, CPU ms per crop at {args.threads} thread(s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in crops.items())
    )
    rows["landmark_crop_cpu_ms"] = crops
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
