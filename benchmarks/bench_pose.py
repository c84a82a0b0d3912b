"""Pose-stage throughput (frames/s) on this machine's CPUs, for the markers set (and blazepose if it is built).

Compares, in one run on the same synthetic videos:
  * 1 actor x k=all CPUs threads          vs  all-CPUs actors x 1 thread (the default pool),
  * actors whose ORT runs k threads       vs  actors whose ORT runs os.cpu_count() threads, unpinned
    (the origin's oversubscription that DESIGN.md "Threads" forbids).

Run: `.venv/bin/python benchmarks/bench_pose.py [--videos 4 --seconds 3]`. Prints figures; asserts nothing
(machines here are shared and noisy: compare the ratios of one run, not figures across runs).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from infra.ray_cluster import ensure_ray, local_cpus, shutdown_ray
from mocapflow.pose.pipeline import PoseParams, PoseResult
from mocapflow.settings import Settings, load_settings
from models.modelset import ModelSet, ModelSetError, resolve
from models.runtime import PoseEstimator, ThreadConfig, open_estimator
from tasks.pose_ray import PosePool


def open_oversubscribed(model_set: ModelSet, threads: ThreadConfig) -> PoseEstimator:
    """What the origin did: every process sizes ONNX Runtime to all the host's cores (runs inside the actor)."""
    return open_estimator(model_set, ThreadConfig(os.cpu_count() or 1, threads.spinning))


@dataclass(frozen=True)
class Case:
    name: str
    actors: int
    cpus: int
    oversubscribed: bool = False


def run_case(settings: Settings, case: Case, videos: list[str]) -> tuple[float, int, float]:
    """(frames/s, frames, seconds) of one pool configuration, models loaded before the clock starts."""
    s = settings.model_copy(update={"pose_cpus": case.cpus, "pin_cpus": not case.oversubscribed})
    opener = open_oversubscribed if case.oversubscribed else None
    with PosePool(s, n_actors=case.actors, cpus_per_actor=case.cpus, open_model=opener) as pool:
        infos = pool.info()  # waits until every actor has loaded its models
        threads = sorted({v["intra_op_num_threads"] for i in infos for v in i["ort_sessions"].values()})
        cpus = [i["affinity"] for i in infos]
        t0 = time.perf_counter()
        outcomes = pool.run(videos, PoseParams.from_settings(s))
        seconds = time.perf_counter() - t0
    failed = [str(o) for o in outcomes if not isinstance(o, PoseResult)]
    if failed:
        raise RuntimeError(f"{case.name}: videos failed: {failed}")
    frames = sum(o.frames for o in outcomes if isinstance(o, PoseResult))
    print(
        f"    {case.name:<50} ORT threads {threads} CPUs {cpus}: {frames} frames in {seconds:6.2f} s",
        flush=True,
    )
    return frames / seconds, frames, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--models", nargs="*", default=["markers", "blazepose"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from mocapflow.synth import CohortSpec, generate_cohort

    n = local_cpus()
    base = load_settings()
    cases = [
        Case(f"1 actor x {n} threads", 1, n),
        Case(f"{n} actors x 1 thread", n, 1),
        Case(f"{n} actors x os.cpu_count()={os.cpu_count()} threads, unpinned", n, 1, oversubscribed=True),
    ]
    ensure_ray(base, num_cpus=n)  # before the cohort imports JAX: Ray must not fork a JAX-threaded process
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pose-") as tmp:
            spec = CohortSpec(n_videos=args.videos, seed=7, seconds=args.seconds)
            t0 = time.perf_counter()
            videos = [str(e.video) for e in generate_cohort(Path(tmp) / "cohort", spec)]
            print(
                f"{len(videos)} synthetic videos x {spec.n_frames} frames {spec.width}x{spec.height} "
                f"(rendered in {time.perf_counter() - t0:.1f} s); {n} CPUs, os.cpu_count()={os.cpu_count()}"
            )
            for name in args.models:
                # blazepose finds no person in marker videos: give it a real photo of one, moving
                clips = (
                    photo_videos(Path(tmp) / "photo", args.videos, spec.n_frames)
                    if name == "blazepose"
                    else videos
                )
                bench_model(base, name, cases, clips, Path(tmp))
    finally:
        shutdown_ray()


def photo_videos(folder: Path, n: int, frames: int) -> list[str]:
    """H.264 videos of scikit-image's astronaut photo (a real person) sliding across a 640x480 frame."""
    import imageio.v2 as imageio
    import numpy as np
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    photo = data.astronaut()[32:480, 64:448]  # 448 x 384 crop around the person
    paths = []
    for v in range(n):
        path = folder / f"astronaut{v}.mp4"
        writer = imageio.get_writer(
            str(path), fps=30, codec="libx264", macro_block_size=16, ffmpeg_log_level="error"
        )
        try:
            for i in range(frames):
                canvas = np.full((480, 640, 3), 90, np.uint8)
                x = (7 * i + 40 * v) % (640 - photo.shape[1])
                canvas[16 : 16 + photo.shape[0], x : x + photo.shape[1]] = photo
                writer.append_data(canvas)
        finally:
            writer.close()
        paths.append(str(path))
    return paths


def bench_model(base: Settings, name: str, cases: list[Case], videos: list[str], tmp: Path) -> None:
    """Run every case for one model set and print frames/s side by side."""
    try:
        ms = resolve(name, base.modelsets_dir, base.cache_dir)
    except ModelSetError as e:
        print(f"\n[{name}] skipped: {e}")
        return
    print(f"\n[{name}] model set {ms.id}")
    settings = base.model_copy(update={"model_set": str(ms.root), "storage_root": str(tmp / f"store-{name}")})
    fps = {c.name: run_case(settings, c, videos)[0] for c in cases}
    ref = fps[cases[1].name]
    print(f"  {'configuration':<50}{'frames/s':>10}{'ratio':>8}")
    for c in cases:
        print(f"  {c.name:<50}{fps[c.name]:>10.1f}{fps[c.name] / ref:>8.2f}")
    print(f"  (ratio: frames/s relative to '{cases[1].name}')")


if __name__ == "__main__":
    main()
