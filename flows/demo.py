"""`mocapflow demo`: a small synthetic cohort through the whole DAG on the embedded defaults, checked against truth.

Generates 4 files of ~5 s (one video with a second person, one corrupt file), runs the process-cohort flow (local
folder store, local Ray, Prefect's local server), then compares every fitted joint angle with the ground truth and
draws the pictures people look at: joint angles against truth and a QC GIF of the tracked skeleton per video.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mocapflow.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class DemoVideo:
    name: str
    motion: str
    status: str
    failed_stage: str | None = None
    error: str | None = None
    frames: int | None = None
    seconds: dict[str, float | None] = field(default_factory=dict)
    mjae_deg: float | None = None
    coverage: float | None = None  # fraction of frames where the subject was found
    second_person: bool = False
    plot: str | None = None
    qc_gif: str | None = None


@dataclass
class DemoReport:
    cohort_dir: Path
    storage_root: str
    run_state: str
    run_message: str
    videos: list[DemoVideo]
    seconds: dict[str, float]
    summary_uri: str | None = None


def mjae_deg(angles: dict[str, np.ndarray], truth_deg: dict[str, np.ndarray]) -> float:
    """Median absolute joint-angle error over hips, knees, ankles, shoulders and elbows (both sides)."""
    from mocapflow.fit.validate import METRIC_DOFS

    errs = [np.abs(angles[d] - truth_deg[d]) for d in METRIC_DOFS if d in angles and d in truth_deg]
    return float(np.nanmedian(np.concatenate(errs)))


class _RowEvents(logging.Handler):
    """Feeds per-video results the flow logs (``extra={"mocapflow_row": ...}``) to a callback."""

    def __init__(self, callback: Any) -> None:
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        row = getattr(record, "mocapflow_row", None)
        if row is not None:
            self.callback(row)


def _pictures(entry: Any, row: dict[str, Any], plots: Path) -> tuple[float | None, str | None, str | None]:
    """Angles-vs-truth PNG and QC GIF for one processed video; returns (MJAE, png path, gif path)."""
    from mocapflow.keypoints import read_arrays
    from mocapflow.qc import angles_vs_truth_png, qc_gif
    from mocapflow.synth.groundtruth import read_ground_truth
    from mocapflow.video import iter_batches

    fit_dir = Path(row["fit_uri"])
    table = pq.read_table(fit_dir / "angles.parquet")
    angles = {c: table[c].to_numpy() for c in table.column_names}
    gt = read_ground_truth(entry.gt)
    frames = angles["frame"].astype(int)
    truth = {d: np.rad2deg(gt.q[frames, i]) for i, d in enumerate(gt.dof_names)}
    err = mjae_deg(angles, truth)
    stem = Path(entry.video).stem
    png = plots / f"{stem}_angles.png"
    png.write_bytes(
        angles_vs_truth_png(
            angles["time_s"], angles, truth, title=f"{stem}: fit vs ground truth (median |err| {err:.2f} deg)"
        )
    )
    meta, kp = read_arrays(pq.read_table(row["keypoints_uri"]))
    video_frames = np.concatenate(list(iter_batches(str(entry.video), 64)))
    gif = plots / f"{stem}_qc.gif"
    gif.write_bytes(qc_gif(video_frames, kp["kp2d_px"], kp["conf"], meta.joint_edges, meta.fps))
    return err, str(png), str(gif)


def run_demo(
    settings: Settings,
    out: Path,
    n_videos: int = 3,
    seconds: float = 5.0,
    seed: int = 7,
    progress: Any = None,
) -> DemoReport:
    """Run the demo; ``progress(stage, advance_or_total, text)`` is called as work finishes (for the CLI's bars)."""
    from flows.cohort import process_cohort, run_summary
    from flows.params import CohortSource, RunOptions
    from mocapflow.synth import CohortSpec, generate_cohort
    from tasks.runtime import resolve_model_set

    def tick(stage: str, n: int = 1, text: str = "") -> None:
        if progress is not None:
            progress(stage, n, text)

    timings: dict[str, float] = {}
    cohort_dir = out / "cohort"
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = CohortSpec(
        n_videos=n_videos,
        seed=seed,
        seconds=seconds,
        n_second_person=1,
        n_corrupt=1,
        noise_sigma=2.0,
        textured=True,
    )
    entries = generate_cohort(cohort_dir, spec, on_video_done=lambda e: tick("synth", 1, Path(e.video).name))
    timings["synth_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    resolve_model_set(settings)
    timings["models_s"] = time.perf_counter() - t0
    tick("models", 1)

    flow_logger = logging.getLogger("prefect.flow_runs")
    handler = _RowEvents(lambda row: tick("videos", 1, f"{Path(row['video']).name}: {row['status']}"))
    flow_logger.addHandler(handler)
    t0 = time.perf_counter()
    try:
        state = process_cohort(
            CohortSource(manifest=str(cohort_dir / "cohort.csv")),
            RunOptions(storage_root=settings.storage_root),
            return_state=True,
        )
    finally:
        flow_logger.removeHandler(handler)
    timings["flow_s"] = time.perf_counter() - t0
    summary = run_summary(state)

    t0 = time.perf_counter()
    by_video = {Path(r["video"]).name: r for r in summary["rows"]}
    videos = []
    for e in entries:
        name = Path(e.video).name
        row = by_video[name]
        v = DemoVideo(
            name,
            e.motion or "",
            row["status"],
            row["failed_stage"],
            row["error"],
            row["frames"],
            {"probe": row["probe_s"], "pose": row["pose_s"], "fit": row["fit_s"]},
            coverage=row.get("coverage"),
            second_person=bool(e.second_person),
        )
        if row["status"] != "failed":
            v.mjae_deg, v.plot, v.qc_gif = _pictures(e, row, plots)
        videos.append(v)
        tick("plots", 1, name)
    timings["plots_s"] = time.perf_counter() - t0
    return DemoReport(
        cohort_dir,
        settings.storage_root,
        state.type.value,
        state.message or "",
        videos,
        timings,
        summary.get("summary_uri"),
    )
