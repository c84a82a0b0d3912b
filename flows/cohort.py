"""The product's flows: one video, a cohort, and a resumable backfill. They wire the tasks in tasks/stages.py.

Per video: probe -> pose (Ray actor pool) -> fit (pinned Ray task). Videos run concurrently up to
``max_videos_in_flight``; a video that fails stops its own chain only. Each run writes a summary table to
``runs/<run_id>/summary.parquet`` (committed last with ``_COMMITTED``), a table artifact, a markdown artifact per
video and a progress artifact while it works; its final state is Failed, naming the videos, when any video failed.
A video whose subject was found in fewer than ``min_coverage`` of its frames is processed but reported with status
``low_coverage`` (summary, artifacts and the final message name it), never as a plain ``ok``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.params import CohortSource, RunOptions
from mocapflow.discovery import VideoSpec, discover
from mocapflow.settings import Settings
from mocapflow.store import KeyNotFoundError, run_prefix, safe_key
from tasks.runtime import FlowRuntime
from tasks.stages import fit_video, pose_video, probe_video

COMMITTED = "_COMMITTED"
OK, LOW_COVERAGE, FAILED = "ok", "low_coverage", "failed"


@dataclass
class _Chain:
    spec: VideoSpec
    probe: PrefectFuture
    pose: PrefectFuture
    fit: PrefectFuture
    pose_done: threading.Event = field(default_factory=threading.Event)


def _state_error(fut: PrefectFuture) -> str:
    state = fut.state
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - reported, not raised
        return f"{type(e).__name__}: {e}"
    return state.message or state.name


def _pose_coverage(res: dict[str, Any], rt: FlowRuntime | None) -> tuple[int | None, float | None]:
    """(frames_detected, coverage) of a pose result; a cached result's come from the committed table's metadata."""
    if res.get("coverage") is not None:
        return res.get("frames_detected"), res["coverage"]
    if rt is None or not res.get("key"):
        return None, None
    import pyarrow.parquet as pq

    from mocapflow.keypoints import KeypointsMeta

    try:
        with rt.store.fs.open(rt.store.path(res["key"]), "rb") as f:
            meta = KeypointsMeta.from_metadata(pq.read_schema(f).metadata)
    except (OSError, ValueError) as e:  # reported as unknown coverage, never fatal for the run
        get_run_logger().warning("%s: cannot read the subject's coverage: %s", res.get("video"), e)
        return None, None
    return meta.frames_detected, meta.coverage


def _row(chain: _Chain, rt: FlowRuntime | None = None) -> dict[str, Any]:
    """One summary row from a finished chain."""
    row: dict[str, Any] = {
        "video": chain.spec.uri,
        "subject_id": chain.spec.subject_id,
        "status": "ok",
        "failed_stage": None,
        "error": None,
        "cached": False,
        "frames": None,
        "frames_detected": None,
        "coverage": None,
        "video_sha256": None,
        "probe_s": None,
        "pose_s": None,
        "fit_s": None,
        "residual_2d_px": None,
        "residual_3d_mm": None,
        "keypoints_uri": None,
        "fit_uri": None,
        "plot_uri": None,
        "angles_summary": None,
        "fit_converged": None,
        "fit_rel_loss_change": None,
        "fit_observed_fraction": None,
        **dict.fromkeys(OUTPUT_COLUMNS.values()),
    }
    for stage, fut in (("probe", chain.probe), ("pose", chain.pose), ("fit", chain.fit)):
        fut.wait()  # the local final state, with its data (``.state`` alone may fetch a data-less copy from the API)
        if not fut.state.is_completed():
            row.update(status=FAILED, failed_stage=stage, error=_state_error(fut))
            break
        res = fut.result()
        if stage == "probe":
            row.update(video_sha256=res["sha256"], frames=res["n_frames"], probe_s=res.get("seconds"))
        elif stage == "pose":
            detected, coverage = _pose_coverage(res, rt)
            row.update(
                keypoints_uri=res["uri"],
                pose_s=res.get("seconds"),
                frames=res.get("frames") or row["frames"],
                frames_detected=detected,
                coverage=coverage,
                cached=bool(res.get("cached")),
            )
        else:
            row.update(
                fit_uri=res["uri"],
                fit_s=res.get("wall_seconds", res.get("seconds")),
                residual_2d_px=res.get("residual_2d_px"),
                residual_3d_mm=res.get("residual_3d_mm"),
                plot_uri=res.get("plot_uri"),
                angles_summary=res.get("angles_summary"),
                fit_converged=res.get("converged"),
                fit_rel_loss_change=res.get("rel_loss_change"),
                fit_observed_fraction=res.get("observed_fraction"),
                cached=row["cached"] and bool(res.get("cached")),
                **{col: res.get("outputs", {}).get(name) for name, col in OUTPUT_COLUMNS.items()},
            )
    row["status"] = coverage_status(row["status"], row["coverage"], rt.settings.min_coverage if rt else 0.5)
    return row


def coverage_status(status: str, coverage: float | None, min_coverage: float) -> str:
    """``low_coverage`` for a processed video whose subject was found in fewer than ``min_coverage`` of its frames."""
    if status == OK and coverage is not None and coverage < min_coverage:
        return LOW_COVERAGE
    return status


OUTPUT_COLUMNS = {  # a fit's output file -> its summary column (every output's URI is in the summary)
    "angles.parquet": "angles_uri",
    "residuals.parquet": "residuals_uri",
    "angles.mot": "mot_uri",
    "subject.osim": "osim_uri",
    "markers.trc": "trc_uri",
    "scales.json": "scales_uri",
}

SUMMARY_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("subject_id", pa.string()),
        ("status", pa.string()),
        ("failed_stage", pa.string()),
        ("error", pa.string()),
        ("cached", pa.bool_()),
        ("frames", pa.int64()),
        ("frames_detected", pa.int64()),
        ("coverage", pa.float64()),
        ("video_sha256", pa.string()),
        ("probe_s", pa.float64()),
        ("pose_s", pa.float64()),
        ("fit_s", pa.float64()),
        ("residual_2d_px", pa.float64()),
        ("residual_3d_mm", pa.float64()),
        ("keypoints_uri", pa.string()),
        ("fit_uri", pa.string()),
        ("plot_uri", pa.string()),
        ("angles_summary", pa.string()),
        ("fit_converged", pa.bool_()),
        ("fit_rel_loss_change", pa.float64()),
        ("fit_observed_fraction", pa.float64()),
        *((col, pa.string()) for col in OUTPUT_COLUMNS.values()),
    ]
)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _publish(rt: FlowRuntime, run_id: str, kind: str, rows: list[dict[str, Any]], seconds: float) -> str:
    """Summary table to the store (committed last), plus the table and per-video artifacts."""
    table = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
    prefix = run_prefix(run_id)
    report = rt.store.write_table(f"{prefix}/summary.parquet", table)
    failed = [r for r in rows if r["status"] == FAILED]
    low = [r for r in rows if r["status"] == LOW_COVERAGE]
    rt.store.commit(
        prefix,
        {
            "kind": kind,
            "videos": len(rows),
            "failed": len(failed),
            "low_coverage": len(low),
            "seconds": seconds,
            "summary": report.to_dict(),
            "model_set": rt.model_set.manifest.name,
            "model_id": rt.model_set.id,
        },
        marker=COMMITTED,
    )
    cols = [
        "video",
        "status",
        "failed_stage",
        "cached",
        "frames",
        "coverage",
        "probe_s",
        "pose_s",
        "fit_s",
        "residual_2d_px",
        "residual_3d_mm",
        "angles_summary",
        "error",
        "keypoints_uri",
        "fit_uri",
    ]
    create_table_artifact(
        key=f"{kind}-summary",
        table=[{c: _fmt(r[c]) for c in cols} for r in rows],
        description=f"{kind} run {run_id}: {len(rows) - len(failed) - len(low)} of {len(rows)} videos ok, "
        f"{len(low)} with low subject coverage, {len(failed)} failed; summary at {report.uri}",
    )
    for r in rows:
        lines = [
            f"### {r['video']}",
            f"status: **{r['status']}**"
            + (f" at {r['failed_stage']}: {r['error']}" if r["failed_stage"] else ""),
        ]
        if r["status"] == LOW_COVERAGE:
            lines.append(
                f"- **warning: the subject was found in only {r['frames_detected']} of {r['frames']} frames "
                f"({100 * r['coverage']:.0f} % < {100 * rt.settings.min_coverage:.0f} %)**; check tracks.parquet "
                "for the right person (setting subject_track)"
            )
        if r["status"] != FAILED:
            lines += [
                f"- subject coverage: {r['frames_detected']} of {r['frames']} frames ({_fmt(r['coverage'])})",
                f"- frames: {r['frames']}; seconds: probe {_fmt(r['probe_s'])}, pose {_fmt(r['pose_s'])}, "
                f"fit {_fmt(r['fit_s'])}{' (cached)' if r['cached'] else ''}",
                f"- residuals: 2D {_fmt(r['residual_2d_px'])} px, 3D {_fmt(r['residual_3d_mm'])} mm",
                f"- fit: converged {_fmt(r['fit_converged'])} (final relative loss change "
                f"{'' if r['fit_rel_loss_change'] is None else format(r['fit_rel_loss_change'], '.1e')}); "
                f"observed fraction of frames {_fmt(r['fit_observed_fraction'])}",
                f"- joint angles: {r['angles_summary'] or ''}",
                f"- keypoints: `{r['keypoints_uri']}`",
                f"- fit outputs: `{r['fit_uri']}`",
                f"- plot: `{r['plot_uri']}`",
            ]
        create_markdown_artifact("\n".join(lines), description=f"mocapflow video {r['video']}")
    return report.uri


def run_videos(
    specs: list[VideoSpec], rt: FlowRuntime, kind: str, max_in_flight: int, on_row: Any = None
) -> list[dict[str, Any]]:
    """Submit probe -> pose -> fit chains, at most ``max_in_flight`` at once; rows in input order."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"{kind}: videos finished of {len(specs)}")
    pending: deque[VideoSpec] = deque(specs)
    running: list[_Chain] = []
    rows: dict[str, dict[str, Any]] = {}
    rtq = quote(rt)
    while pending or running:
        while pending and len(running) < max_in_flight:
            spec = pending.popleft()
            d = spec.to_dict()
            p = probe_video.submit(d, rtq)
            po = pose_video.submit(d, p, rtq)
            chain = _Chain(spec, p, po, fit_video.submit(po, rtq))
            po.add_done_callback(lambda _f, c=chain: c.pose_done.set())
            running.append(chain)
        if not pending and all(c.pose_done.is_set() for c in running):
            rt.release_pose_pool()
        first = next(as_completed([c.fit for c in running]))
        finished = [c for c in running if c.fit is first]
        for c in finished:
            running.remove(c)
            row = _row(c, rt)
            rows[c.spec.uri] = row
            extra = {"mocapflow_row": row}
            if row["status"] == OK:
                logger.info("%s: ok%s", c.spec.uri, " (cached)" if row["cached"] else "", extra=extra)
            elif row["status"] == LOW_COVERAGE:
                logger.warning(
                    "%s: low coverage: subject found in %s of %s frames",
                    c.spec.uri,
                    row["frames_detected"],
                    row["frames"],
                    extra=extra,
                )
            else:
                logger.error(
                    "%s: failed at %s: %s", c.spec.uri, row["failed_stage"], row["error"], extra=extra
                )
            if on_row is not None:
                on_row(row)
        update_progress_artifact(progress, 100.0 * len(rows) / len(specs))
    return [rows[s.uri] for s in specs]


def _finish(kind: str, rt: FlowRuntime, rows: list[dict[str, Any]], t0: float) -> State:
    run_id = str(flow_run.get_id() or uuid.uuid4())
    uri = _publish(rt, run_id, kind, rows, time.perf_counter() - t0)
    failed = [r for r in rows if r["status"] == FAILED]
    low = [r for r in rows if r["status"] == LOW_COVERAGE]
    summary = {
        "run_id": run_id,
        "summary_uri": uri,
        "videos": len(rows),
        "failed": len(failed),
        "low_coverage": len(low),
        "pose_calls": rt.pose_calls,
        "fit_calls": rt.fit_calls,
        "rows": rows,
    }
    low_note = (
        f"; {len(low)} with the subject in under {100 * rt.settings.min_coverage:.0f} % of frames: "
        + "; ".join(f"{r['video']} ({r['frames_detected']}/{r['frames']})" for r in low)
        if low
        else ""
    )
    if failed:
        names = "; ".join(f"{r['video']} ({r['failed_stage']}: {r['error']})" for r in failed)
        return Failed(message=f"{len(failed)} of {len(rows)} videos failed: {names}{low_note}", data=summary)
    return Completed(message=f"all {len(rows)} videos processed{low_note}", data=summary)


def _cohort(
    source: CohortSource,
    settings: Settings,
    kind: str,
    max_in_flight: int | None = None,
    select: Any = None,
    on_row: Any = None,
) -> State:
    t0 = time.perf_counter()
    logger = get_run_logger()
    rt = FlowRuntime.start(settings)
    try:
        specs = discover(
            source.videos, source.manifest, source.prefix, source.glob, settings.storage_options()
        )
        if select is not None:
            specs = select(specs)
        logger.info(
            "%s: %d videos, model set %s (%s), store %s",
            kind,
            len(specs),
            rt.model_set.manifest.name,
            rt.model_set.id,
            rt.store,
        )
        rows = run_videos(specs, rt, kind, max_in_flight or settings.max_videos_in_flight, on_row)
        return _finish(kind, rt, rows, t0)
    finally:
        rt.close()


@flow(name="process-video", task_runner=ThreadPoolTaskRunner(max_workers=4))
def process_video(video: str, options: RunOptions = RunOptions()) -> State:  # noqa: B008 - pydantic default
    """One video through probe -> pose -> fit."""
    return _cohort(CohortSource(videos=[video]), options.settings(), "video")


@flow(name="process-cohort", task_runner=ThreadPoolTaskRunner(max_workers=16))
def process_cohort(source: CohortSource, options: RunOptions = RunOptions()) -> State:  # noqa: B008
    """Every video of a cohort; unchanged videos (same content, model and parameters) cost nothing."""
    return _cohort(source, options.settings(), "cohort")


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=16))
def backfill(
    source: CohortSource,
    options: RunOptions = RunOptions(),  # noqa: B008
    name: str = "default",
    only_failed: bool = False,
    max_in_flight: int | None = None,
) -> State:
    """Reprocess a large dataset on the Ray cluster: bounded in flight, resumable, ``only_failed`` reruns failures.

    Every finished video is recorded at once in the backfill's ledger (``backfills/<name>/status/``); outputs are
    content-addressed, so a rerun after an interruption skips every video whose outputs are committed.
    """
    settings = options.settings()
    from mocapflow.store import Store, params_hash

    store = Store.from_settings(settings)
    ledger = safe_key("backfills", name, "status")

    def status_key(uri: str) -> str:
        return f"{ledger}/{params_hash({'uri': uri})}.json"

    def select(specs: list[VideoSpec]) -> list[VideoSpec]:
        if not only_failed:
            return specs
        keep = []
        for s in specs:
            try:
                if store.get_json(status_key(s.uri))["status"] == FAILED:
                    keep.append(s)
            except KeyNotFoundError:
                continue
        get_run_logger().info("only_failed: %d of %d videos failed last time", len(keep), len(specs))
        return keep

    def record(row: dict[str, Any]) -> None:
        store.put_json(
            status_key(row["video"]), {k: row[k] for k in ("video", "status", "failed_stage", "error")}
        )

    return _cohort(source, settings, "backfill", max_in_flight, select, record)
