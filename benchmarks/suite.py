"""``mocapflow bench``: the project's speed figures, each measured side by side with what it is compared to, in one run.

Sections (all on real people: ``blazepose`` on the real footage of :mod:`mocapflow.realdata`):

* ``pose``          (:mod:`benchmarks.pose_suite`) the pose pool vs the reference MediaPipe pipeline, the origin's
                    one-process way, oversubscribed actors, Ray Data; 1 -> n scaling; per-model first inference and
                    per-call statistics pinned vs unpinned; latency to the first keypoints table, cold and warm;
* ``fit``           (:mod:`benchmarks.fit_suite`) a 5 s real keypoints table on one pinned core, cold / cached /
                    warm compilation; jitted blocks vs a Python loop of single steps;
* ``storage``       (:mod:`benchmarks.storage_suite`) Parquet vs .npz for a cohort of keypoints tables;
* ``orchestration`` (:mod:`benchmarks.orchestration`) cohort efficiency, cached rerun, backfill overhead.

Every figure keeps its first call apart, then warm-up, then statistics per call; the machine's load average is
recorded with the run (before and after each section): figures from a loaded, shared machine are noisy, and ratios
measured in one run are what to compare. Tiers: ``full`` (< 15 min on 2 idle cores), ``quick`` (a few minutes) and
``tiny`` (a subset for tests). Nothing here asserts a target: :data:`TARGETS` and ``targets_met`` report them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.timing import machine

logger = logging.getLogger(__name__)

SECTIONS = ("pose", "fit", "storage", "orchestration")

# key -> (comparison, bound) from the speed issue; ">=": the figure must be at least the bound
TARGETS: dict[str, tuple[str, float]] = {
    "pose_vs_reference": (">=", 1.0),
    "pose_vs_origin": (">=", 1.3),
    "pose_vs_oversubscribed": (">=", 1.2),
    "pose_vs_ray_data": (">=", 1.0),
    "pose_scaling_efficiency": (">=", 0.85),
    "first_result_warm_s": ("<=", 15.0),
    "fit_s_per_5s_video": ("<=", 10.0),
    "fit_iters_vs_loop": (">=", 5.0),
    "cohort_efficiency": (">=", 0.8),
    "overhead_ms_per_video": ("<=", 100.0),
    "rerun_vs_first": ("<=", 0.05),
}

# every key the run prints (None when its section did not run), and the section that measures it
KEYS: dict[str, str] = {
    "pose_fps": "pose",
    "reference_fps": "pose",
    "pose_vs_reference": "pose",
    "pose_vs_origin": "pose",
    "pose_vs_oversubscribed": "pose",
    "pose_vs_ray_data": "pose",
    "pose_scaling_efficiency": "pose",
    "first_result_warm_s": "pose",
    "first_result_cold_s": "pose",
    "first_result_cold_model_load_s": "pose",
    "first_result_next_run_s": "pose",
    "fit_s_per_5s_video": "fit",
    "fit_cpu_s_per_5s_video": "fit",
    "fit_s_per_5s_video_fresh_process": "fit",
    "fit_s_per_5s_video_cold": "fit",
    "fit_iters_vs_loop": "fit",
    "storage_bytes_parquet_vs_npz": "storage",
    "storage_write_parquet_vs_npz": "storage",
    "storage_read_parquet_vs_npz": "storage",
    "storage_joint_parquet_vs_npz": "storage",
    "cohort_efficiency": "orchestration",
    "cohort_efficiency_warm": "orchestration",
    "overhead_ms_per_video": "orchestration",
    "overhead_ms_per_video_warm": "orchestration",
    "rerun_vs_first": "orchestration",
}


@dataclass(frozen=True)
class Tier:
    clips: int  # real clips for the pose figures (photo pans; the fit clip is extra)
    clip_seconds: float
    repeats: int  # timed passes per pose configuration (after the first)
    model_repeats: int  # inferences per model after warm-up
    fit_seconds: float  # length of the fitted real clip
    loop_steps: int  # steps for blocks vs loop
    storage_cohort: int
    storage_repeats: int
    cohort_videos: int
    cohort_seconds: float
    backfill_videos: int
    backfill_seconds: float
    # each clip's videos in one timed pose pass: with 4 videos on 2 actors, the last of a pass ran alone on one actor
    # (the videos' pose seconds differ by up to 1.5x), a tail a cohort of many videos does not have
    pass_copies: int = 1


TIERS: dict[str, Tier] = {
    "full": Tier(4, 2.0, 3, 50, 5.0, 200, 20, 5, 20, 2.0, 100, 0.5, pass_copies=3),
    "quick": Tier(2, 1.0, 2, 20, 5.0, 100, 20, 3, 6, 1.0, 20, 0.5, pass_copies=2),
    "tiny": Tier(2, 0.5, 1, 5, 1.0, 20, 4, 1, 2, 0.5, 3, 0.5),
}


def _clips(cache_dir: Path, tier: Tier) -> list[str]:
    from mocapflow.realdata import clip_video

    names = ("messi_pan", "basketball_pan", "astronaut_pan", "cameraman_pan")
    return [str(clip_video(n, cache_dir, seconds=tier.clip_seconds, fetch=True)) for n in names[: tier.clips]]


def _keypoints_in_process(settings: Any, video: str, store_root: Path) -> str:
    """A real keypoints table without Ray (when the pose section does not run): the pose stage in this process."""
    from mocapflow.pose.pipeline import PoseParams, run_pose
    from mocapflow.pose.validate_real import open_blazepose
    from mocapflow.store import Store

    est = open_blazepose(settings, threads=1)
    return run_pose(video, est, Store(str(store_root)), PoseParams.from_settings(settings)).uri


def run_bench(
    settings: Any,
    tier_name: str = "full",
    sections: tuple[str, ...] = SECTIONS,
    backfill_videos: int | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the chosen sections; returns ``{"keys": {...}, "targets": ..., "machine": ..., <section>: details}``."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    tier = TIERS[tier_name]
    if backfill_videos is not None:
        tier = replace(tier, backfill_videos=backfill_videos)
    settings = settings.model_copy(update={"model_set": "blazepose"})
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "tier": tier_name,
        "tier_sizes": asdict(tier),
        "sections": list(sections),
        "machine": machine(),
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
        "seconds": {},
    }
    keys: dict[str, Any] = dict.fromkeys(KEYS)
    with tempfile.TemporaryDirectory(prefix="mocapflow-bench-", dir=work_dir) as tmp_s:
        tmp = Path(tmp_s)
        from mocapflow.realdata import clip_video
        from tasks.runtime import resolve_model_set

        resolve_model_set(settings)  # builds the blazepose set once if it is missing (not timed)
        clips = _clips(settings.cache_dir, tier)
        fit_clip = str(clip_video("messi_pan", settings.cache_dir, seconds=tier.fit_seconds, fetch=True))
        fit_keypoints: str | None = None
        tables: list[Any] = []

        def section(name: str, fn: Any) -> Any:
            t = time.perf_counter()
            logger.info("bench: %s", name)
            out = fn()
            report["seconds"][name] = round(time.perf_counter() - t, 1)
            report["load_average"][name] = [round(x, 2) for x in os.getloadavg()]
            return out

        need_ray = "pose" in sections or "orchestration" in sections
        if "pose" in sections:
            from benchmarks.pose_suite import first_result_cold

            # cold: before this process starts Ray, in a process of its own (Ray, actors, models all start)
            try:
                cold = section(
                    "first_result_cold", lambda: first_result_cold(clips[-1], str(tmp / "store-cold"))
                )
                keys["first_result_cold_s"] = cold["seconds"]
                keys["first_result_cold_model_load_s"] = cold["pool_start_and_model_load_s"]
                keys["first_result_next_run_s"] = cold["next_run_on_the_live_pool_s"]
            except (
                RuntimeError
            ) as e:  # e.g. Ray could not start in time on a crowded machine: the rest goes on
                logger.error("cold first result not measured: %s", e)
                cold = {"error": str(e)[-500:]}
            report["first_result_cold"] = cold
        if need_ray:
            from infra.ray_cluster import ensure_ray, local_cpus

            for attempt in range(6):  # before anything imports JAX in this process
                try:
                    ensure_ray(settings, num_cpus=local_cpus())
                    break
                except (
                    Exception
                ) as e:  # Ray gives its raylet a fixed 30 s to register: a loaded machine misses it
                    if "timed out during startup" not in str(e) or attempt == 5:
                        raise
                    logger.warning("Ray did not start in time (attempt %d); starting it again", attempt + 1)
                    from infra.ray_cluster import shutdown_ray

                    shutdown_ray()
        try:
            if "pose" in sections:
                from benchmarks.pose_suite import pose_section

                pose = section(
                    "pose",
                    lambda: pose_section(
                        settings, clips * tier.pass_copies, tier.repeats, tmp, tier.model_repeats, fit_clip
                    ),
                )
                report["pose"] = pose
                keys.update(pose.pop("keys"))
                fit_keypoints = pose.get("fit_keypoints_uri")
            if "orchestration" in sections:
                from benchmarks.orchestration import orchestration_section, person_videos
                from infra.ray_cluster import cluster_cpus

                def orch() -> dict[str, Any]:
                    cohort = person_videos(
                        settings.cache_dir, tmp / "cohort", tier.cohort_videos, tier.cohort_seconds, "c"
                    )
                    back = person_videos(
                        settings.cache_dir, tmp / "backfill", tier.backfill_videos, tier.backfill_seconds, "b"
                    )
                    return orchestration_section(settings, cohort, back, tmp, cluster_cpus())

                orchestration = section("orchestration", orch)
                report["orchestration"] = orchestration
                keys.update(orchestration.pop("keys"))
        finally:
            if need_ray:
                from infra.ray_cluster import shutdown_ray

                shutdown_ray()
        if ("fit" in sections or "storage" in sections) and fit_keypoints is None:
            fit_keypoints = section(
                "keypoints_in_process", lambda: _keypoints_in_process(settings, fit_clip, tmp / "store-local")
            )
        if "fit" in sections:
            from benchmarks.fit_suite import fit_section

            assert fit_keypoints is not None
            fit = section("fit", lambda: fit_section(fit_keypoints, tier.fit_seconds, tier.loop_steps))
            report["fit"] = fit
            keys.update(fit.pop("keys"))
        if "storage" in sections:
            import pyarrow.parquet as pq

            from benchmarks.storage_suite import storage_section

            found = sorted(tmp.glob("store-*/keypoints/**/keypoints.parquet"))
            tables = [pq.read_table(p) for p in found] or []
            storage = section(
                "storage",
                lambda: storage_section(
                    tables, tier.storage_cohort, 25, tier.storage_repeats, tmp / "storage"
                ),
            )
            report["storage"] = storage
            keys.update(storage.pop("keys"))
    report["keys"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in keys.items()}
    report["targets"] = {k: f"{op} {bound:g}" for k, (op, bound) in TARGETS.items()}
    report["targets_met"] = {k: met(keys.get(k), op, bound) for k, (op, bound) in TARGETS.items()}
    report["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"]["total"] = round(time.perf_counter() - t_start, 1)
    return report


def met(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return value >= bound if op == ">=" else value <= bound


def table(report: dict[str, Any]) -> str:
    """The keys as a plain-text table (figure, target, met)."""
    lines = [f"{'key':<34}{'value':>12}  {'target':<10}{'met':<6}"]
    for k, v in report["keys"].items():
        target = report["targets"].get(k, "")
        ok = report["targets_met"].get(k)
        shown = "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"{k:<34}{shown:>12}  {target:<10}{'' if ok is None else ('yes' if ok else 'NO'):<6}")
    m = report["machine"]
    lines.append(
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), load average at start "
        f"{report['load_average']['start']}, at end {report['load_average']['end']}; "
        f"tier {report['tier']}, {report['seconds']['total']} s"
    )
    return "\n".join(lines)
