"""Pose-stage figures of ``mocapflow bench``, side by side on the same real clips in one run.

Configurations (each loads its models before the clock starts; the first call on freshly loaded actors is timed
apart, then ``repeats`` passes over the videos are timed, frames/s per pass; a pass holds each clip
``Tier.pass_copies`` times, 12 videos in the full tier, so that the last video of a pass does not run alone):

* ``pool``            the product's default: n actors x 1 thread, each pinned to its own CPU (n = CPUs here);
* ``pool_1``          one such actor (for the 1 -> n scaling efficiency);
* ``origin``          the origin's way: one process, ONNX Runtime / TensorFlow at ``os.cpu_count()`` threads,
                      unpinned, the videos in turn;
* ``oversubscribed``  n actors, each at ``os.cpu_count()`` threads, unpinned;
* ``ray_data``        Ray Data ``map_batches`` over the videos with an actor pool of n (each actor holds the models
                      at 1 thread, unpinned: what Ray Data gives without the pool's CPU leases); each pass one
                      execution, timed from its first video's start to its last one's end inside the actors (actor
                      start and model load excluded; a pass's tail included, as in the pool's passes);
* ``reference``       MediaPipe's own Pose solution (same BlazePose weights) in its own venv, pinned to the same CPUs,
                      the videos in turn; its frames/s counts decode and inference, not process start or model load.

All of them run the ``blazepose`` set on real footage (``mocapflow.realdata`` clips), every frame of which shows a
person (checked: a configuration whose subject coverage is under 0.9 is reported).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.timing import ratio, stats_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoseCase:
    name: str
    actors: int
    cpus: int  # Ray CPUs per actor (= ORT/TF threads unless oversubscribed)
    oversubscribed: bool = False
    what: str = ""


def _open_oversubscribed(model_set: Any, threads: Any) -> Any:
    """The origin's sizing: every process runs ONNX Runtime and TensorFlow at all the host's cores."""
    from benchmarks.bench_pose import open_oversubscribed

    return open_oversubscribed(model_set, threads)


def _check(outcomes: list[Any], case: str) -> tuple[int, float]:
    from mocapflow.pose.pipeline import PoseResult

    bad = [str(o) for o in outcomes if not isinstance(o, PoseResult)]
    if bad:
        raise RuntimeError(f"pose benchmark {case}: videos failed: {bad}")
    frames = sum(o.frames for o in outcomes)
    detected = sum(o.frames_detected for o in outcomes)
    return frames, detected / frames if frames else 0.0


def run_pool_case(settings: Any, case: PoseCase, videos: list[str], repeats: int, keep: bool = False) -> dict:
    """Frames/s of one PosePool configuration; with ``keep`` the live pool is returned under ``"pool"``."""
    from mocapflow.pose.pipeline import PoseParams
    from tasks.pose_ray import PosePool

    s = settings.model_copy(update={"pose_cpus": case.cpus, "pin_cpus": not case.oversubscribed})
    params = PoseParams.from_settings(s)
    t = time.perf_counter()
    pool = PosePool(
        s,
        n_actors=case.actors,
        cpus_per_actor=case.cpus,
        open_model=_open_oversubscribed if case.oversubscribed else None,
    )
    try:
        infos = pool.info()  # returns once every actor has loaded its models
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = videos[: case.actors] if len(videos) >= case.actors else videos
        frames0, _ = _check(pool.run(warm, params), case.name)
        first_s = time.perf_counter() - t
        fps, walls, coverage = [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            frames, cov = _check(pool.run(videos, params), case.name)
            wall = time.perf_counter() - t
            walls.append(wall)
            fps.append(frames / wall)
            coverage.append(cov)
        out = {
            "what": case.what,
            "actors": case.actors,
            "threads": sorted({v["intra_op_num_threads"] for i in infos for v in i["ort_sessions"].values()}),
            "affinity": [i["affinity"] for i in infos],
            "pinned": not case.oversubscribed,
            "model_load_s": round(load_s, 2),
            "first_call": {"videos": len(warm), "frames": frames0, "seconds": round(first_s, 3)},
            "frames_per_pass": frames,
            "fps": _fps_stats(fps),
            "pass_seconds": stats_of(walls[0], walls).to_dict(),
            "subject_coverage": round(min(coverage), 3),
        }
    except BaseException:
        pool.shutdown()
        raise
    if keep:
        out["pool"] = pool
    else:
        pool.shutdown()
    return out


def _fps_stats(fps: list[float]) -> dict[str, float]:
    import statistics

    return {
        "mean": round(statistics.fmean(fps), 2),
        "min": round(min(fps), 2),
        "max": round(max(fps), 2),
        "std": round(statistics.pstdev(fps) if len(fps) > 1 else 0.0, 2),
        "median": round(statistics.median(fps), 2),
        "n": len(fps),
    }


class _RayDataPose:
    """Ray Data callable class: holds the blazepose models (1 thread, unpinned), runs the pose stage per video."""

    def __init__(self, settings: Any, store_root: str) -> None:
        from mocapflow.pose.pipeline import PoseParams
        from mocapflow.store import Store
        from models.modelset import resolve
        from models.runtime import ThreadConfig, configure_tensorflow, open_estimator
        from tasks.pose_ray import startup_output_captured

        self.settings = settings
        ms = resolve(settings.model_set, settings.modelsets_dir, settings.cache_dir)
        # TensorFlow's C++ start-up lines are captured, as in the pool's actors
        with startup_output_captured(not settings.verbose):
            configure_tensorflow(ThreadConfig(1))
            self.estimator = open_estimator(
                ms, ThreadConfig(1), **PoseParams.from_settings(settings).estimator_options()
            )
        self.store = Store(store_root)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from mocapflow.pose.pipeline import PoseParams, run_pose

        params = PoseParams.from_settings(self.settings)
        out: dict[str, list[Any]] = {"frames": [], "detected": [], "t0": [], "t1": []}
        for video in batch["video"]:
            t0 = time.time()
            r = run_pose(str(video), self.estimator, self.store, params, decode_threads=1)
            out["t1"].append(time.time())
            out["t0"].append(t0)
            out["frames"].append(r.frames)
            out["detected"].append(r.frames_detected)
        return {k: np.asarray(v) for k, v in out.items()}


def run_ray_data(settings: Any, videos: list[str], repeats: int, actors: int, store_root: str) -> dict:
    """``repeats`` passes, each one Ray Data execution over the videos (its actors start and load their models
    first); a pass's frames/s is over the span from its first video's start to its last one's end inside the
    actors, so actor start and model load are outside it and a pass's tail inside it, as in the pool's passes."""
    import numpy as np
    import ray.data

    if not settings.verbose:  # Ray Data's own notices ("progress bars disabled", "execution finished")
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    fps, spans, walls, frames_total, detected_total = [], [], [], 0, 0
    for _ in range(repeats):
        t = time.perf_counter()
        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote args but names no parameter for max_restarts; its actor pool's own
            # comment gives map_batches(..., max_restarts=0) as the way to turn restarts off
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ray.data.from_items([{"video": v} for v in videos]).map_batches(
                _RayDataPose,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                fn_constructor_args=(settings, store_root),
                # no actor restarts (Ray Data's default is unlimited): a failure fails the case, and Ray's core
                # worker then has no reason to print its warning about constructor arguments held in the object store
                max_restarts=0,
            )
        rows = ds.take_all()
        walls.append(time.perf_counter() - t)
        t0 = np.array([r["t0"] for r in rows])
        t1 = np.array([r["t1"] for r in rows])
        frames = int(np.sum([r["frames"] for r in rows]))
        span = float(t1.max() - t0.min())
        spans.append(span)
        fps.append(frames / span)
        frames_total += frames
        detected_total += int(np.sum([r["detected"] for r in rows]))
    return {
        "what": "Ray Data map_batches, ActorPoolStrategy(size=n), 1 thread per actor, unpinned",
        "actors": actors,
        "videos_per_pass": len(videos),
        "frames_per_pass": frames_total // max(1, repeats),
        "span_s": [round(x, 3) for x in spans],
        "wall_with_startup_s": [round(x, 3) for x in walls],
        "fps": _fps_stats(fps),
        "subject_coverage": round(detected_total / frames_total, 3) if frames_total else 0.0,
    }


def run_reference_case(cache_dir: Path, videos: list[str], repeats: int) -> dict:
    """The reference pipeline over the videos in turn, ``repeats`` passes; frames/s per pass from its own clock."""
    from mocapflow.pose.reference import run_reference

    fps, found = [], []
    first = None
    for p in range(repeats + 1):
        frames, seconds, hit = 0, 0.0, 0
        for v in videos:
            r = run_reference(Path(v), cache_dir)
            frames += r.frames
            seconds += r.frames / float(r.frames_per_second or float("nan"))
            hit += int(r.found.sum())
        if p == 0:
            first = frames / seconds
        else:
            fps.append(frames / seconds)
            found.append(hit / frames)
    return {
        "what": "MediaPipe Pose 0.10.21 (model_complexity=1, same weights), own venv, pinned to the same CPUs",
        "first_pass_fps": round(first or 0.0, 2),
        "fps": _fps_stats(fps),
        "frames_per_pass": frames,
        "found_fraction": round(min(found), 3) if found else None,
    }


def model_timings(video: str, repeats: int) -> dict:
    """Per-model first inference and per-call statistics, pinned and unpinned, each in a fresh process."""
    out = {}
    for mode in ("pinned", "unpinned"):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.model_timing",
            video,
            "--mode",
            mode,
            "--repeats",
            str(repeats),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=_root())
        if proc.returncode != 0:
            raise RuntimeError(f"model timing ({mode}) failed: {proc.stderr.strip()[-800:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def first_result_cold(video: str, store_root: str) -> dict:
    """A fresh process: start Ray, start the pose pool (models load), probe, first keypoints table committed."""
    cmd = [sys.executable, "-m", "benchmarks.first_result", video, store_root]
    for attempt in range(6):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=_root())
        wall = time.perf_counter() - t
        if proc.returncode == 0 or "timed out during startup" not in proc.stderr:
            break
        # Ray gives its raylet a fixed 30 s to register; a heavily loaded machine can miss it
        logger.warning("Ray did not start in time (attempt %d); starting it again", attempt + 1)
    if proc.returncode != 0:
        raise RuntimeError(f"cold first-result run failed: {proc.stderr.strip()[-800:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 2)
    return out


def first_result_warm(pool: Any, settings: Any, video: str) -> dict:
    """On a live pool (models loaded): probe (hash) a new video and get its keypoints table committed."""
    from mocapflow.pose.pipeline import PoseParams, PoseResult
    from mocapflow.video import probe

    t = time.perf_counter()
    info = probe(video)
    probe_s = time.perf_counter() - t
    outcome = pool.process_one(video, PoseParams.from_settings(settings))
    total = time.perf_counter() - t
    if not isinstance(outcome, PoseResult):
        raise RuntimeError(f"warm first result failed: {outcome}")
    return {
        "seconds": round(total, 3),
        "probe_s": round(probe_s, 3),
        "pose_s": round(outcome.seconds, 3),
        "frames": outcome.frames,
        "sha256": info.sha256[:12],
    }


def pose_section(
    settings: Any, videos: list[str], repeats: int, tmp: Path, model_repeats: int, fit_clip: str | None = None
) -> dict:
    """Every pose figure; Ray must be running with n CPUs (``infra.ray_cluster.ensure_ray``). With ``fit_clip``, that
    clip's keypoints table is made on the warm pool too (``fit_keypoints_uri``: the fit section's input)."""
    from infra.ray_cluster import cluster_cpus

    n = cluster_cpus()
    cpu_count = os.cpu_count() or 1
    cases = [
        PoseCase("pool", n, 1, what=f"{n} actors x 1 thread, pinned (the default pool)"),
        PoseCase("pool_1", 1, 1, what="1 actor x 1 thread, pinned"),
        PoseCase(
            "origin",
            1,
            n,
            oversubscribed=True,
            what=f"1 process x {cpu_count} threads, unpinned, videos in turn",
        ),
        PoseCase(
            "oversubscribed", n, 1, oversubscribed=True, what=f"{n} actors x {cpu_count} threads, unpinned"
        ),
    ]
    out: dict[str, Any] = {"videos": videos, "cpus": n, "os_cpu_count": cpu_count, "cases": {}}
    for c in cases:
        s = settings.model_copy(update={"storage_root": str(tmp / f"store-{c.name}")})
        logger.info("pose: %s", c.what)
        r = run_pool_case(s, c, videos, repeats, keep=c.name == "pool")
        if c.name == "pool":
            pool = r.pop("pool")
            try:  # the long-lived pool (models loaded): a video to its keypoints table, then the fit's clip
                out["first_result_warm"] = first_result_warm(pool, s, videos[-1])
                if fit_clip is not None:
                    from mocapflow.pose.pipeline import PoseParams, PoseResult

                    fr = pool.process_one(fit_clip, PoseParams.from_settings(s))
                    if not isinstance(fr, PoseResult):
                        raise RuntimeError(f"pose of the fit clip failed: {fr}")
                    out["fit_keypoints_uri"] = fr.uri
            finally:
                pool.shutdown()  # its CPUs go to the next configuration
        out["cases"][c.name] = r
    logger.info("pose: Ray Data")
    out["cases"]["ray_data"] = run_ray_data(settings, videos, repeats, n, str(tmp / "store-raydata"))
    logger.info("pose: the reference pipeline")
    out["cases"]["reference"] = run_reference_case(settings.cache_dir, videos, max(1, repeats - 1))
    logger.info("pose: per-model timings")
    out["models"] = model_timings(videos[0], model_repeats)

    fps = {k: v["fps"]["mean"] for k, v in out["cases"].items()}
    out["keys"] = {
        "pose_fps": fps["pool"],
        "reference_fps": fps["reference"],
        "pose_vs_reference": ratio(fps["pool"], fps["reference"]),
        "pose_vs_origin": ratio(fps["pool"], fps["origin"]),
        "pose_vs_oversubscribed": ratio(fps["pool"], fps["oversubscribed"]),
        "pose_vs_ray_data": ratio(fps["pool"], fps["ray_data"]),
        "pose_scaling_efficiency": ratio(fps["pool"], n * fps["pool_1"]),
        "first_result_warm_s": out["first_result_warm"]["seconds"],
    }
    return out
