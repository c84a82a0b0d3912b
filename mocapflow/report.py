"""What a run reports: one summary row per video, the summary table's schema, the per-video markdown, the run's final
message, and artifact keys. Pure: no Prefect, no Ray (tasks/publish.py turns these into Prefect artifacts).

A video's status is ``ok``, ``low_coverage`` (processed, but its subject was found in fewer than ``min_coverage`` of
its frames) or ``failed`` (``failed_stage`` and a one-line ``error`` say where and why).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

OK, LOW_COVERAGE, FAILED = "ok", "low_coverage", "failed"

SUMMARY_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
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
    ]
)

TABLE_COLUMNS = (
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
)


class RunFailed(Exception):
    """A run in which some videos failed: the final state's data (Prefect resolves it into this exception, not a
    traceback about an unresolvable result); ``summary`` is the run's summary (the same as a completed run's data)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.summary))


def empty_row(video: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SUMMARY_SCHEMA.names)
    row.update(video=video, status=OK, cached=False)
    return row


def add_probe(row: dict[str, Any], res: dict[str, Any]) -> None:
    row.update(video_sha256=res["sha256"], frames=res["n_frames"], probe_s=res.get("seconds"))


def add_pose(
    row: dict[str, Any], res: dict[str, Any], frames_detected: int | None, coverage: float | None
) -> None:
    row.update(
        keypoints_uri=res["uri"],
        pose_s=res.get("seconds"),
        frames=res.get("frames") or row["frames"],
        frames_detected=frames_detected,
        coverage=coverage,
        cached=bool(res.get("cached")),
    )


def add_fit(row: dict[str, Any], res: dict[str, Any]) -> None:
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
    )


def add_failure(row: dict[str, Any], stage: str, error: str) -> None:
    row.update(status=FAILED, failed_stage=stage, error=error)


def coverage_status(status: str, coverage: float | None, min_coverage: float) -> str:
    """``low_coverage`` for a processed video whose subject was found in fewer than ``min_coverage`` of its frames."""
    if status == OK and coverage is not None and coverage < min_coverage:
        return LOW_COVERAGE
    return status


def fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def video_name(uri: str) -> str:
    """The file name of a video URI or path."""
    return posixpath.basename(uri.rstrip("/")) or uri


_KEY_BAD = re.compile(r"[^a-z0-9]+")


def artifact_key(*parts: str, unique: str | None = None, max_len: int = 60) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from readable parts, e.g.
    ``artifact_key("video", "Walk_01.MP4", unique=uri)`` -> ``"video-walk-01-mp4-1a2b3c"``. ``unique`` (a URI) adds
    6 hex digits of its hash, so two videos of the same name in different folders keep apart."""
    text = "-".join(_KEY_BAD.sub("-", p.lower()).strip("-") for p in parts if p)
    text = re.sub(r"-+", "-", text).strip("-") or "run"
    if unique is None:
        return text[:max_len].rstrip("-")
    tag = hashlib.sha1(unique.encode()).hexdigest()[:6]
    return f"{text[: max_len - 7].rstrip('-')}-{tag}"


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The summary as the strings a table artifact shows (video by file name, URIs in full)."""
    return [{c: (video_name(r[c]) if c == "video" else fmt(r[c])) for c in TABLE_COLUMNS} for r in rows]


def video_markdown(r: dict[str, Any], min_coverage: float, plot_link: str | None = None) -> str:
    """The per-video report: status (with the error), coverage, timings, residuals, convergence, outputs, plot."""
    lines = [
        f"### {video_name(r['video'])}",
        f"source: `{r['video']}`",
        "",
        f"status: **{r['status']}**"
        + (f" at {r['failed_stage']}: {r['error']}" if r["failed_stage"] else ""),
    ]
    if r["status"] == LOW_COVERAGE:
        lines.append(
            f"- **warning: the subject was found in only {r['frames_detected']} of {r['frames']} frames "
            f"({100 * r['coverage']:.0f} % < {100 * min_coverage:.0f} %)**; check tracks.parquet "
            "for the right person (setting subject_track)"
        )
    if r["status"] != FAILED:
        rel = r["fit_rel_loss_change"]
        lines += [
            f"- subject coverage: {r['frames_detected']} of {r['frames']} frames ({fmt(r['coverage'])})",
            f"- frames: {r['frames']}; seconds: probe {fmt(r['probe_s'])}, pose {fmt(r['pose_s'])}, "
            f"fit {fmt(r['fit_s'])}{' (cached)' if r['cached'] else ''}",
            f"- residuals: 2D {fmt(r['residual_2d_px'])} px, 3D {fmt(r['residual_3d_mm'])} mm",
            f"- fit: converged {fmt(r['fit_converged'])} (final relative loss change "
            f"{'' if rel is None else format(rel, '.1e')}); observed fraction of frames "
            f"{fmt(r['fit_observed_fraction'])}",
            f"- joint angles: {r['angles_summary'] or ''}",
            f"- keypoints: `{r['keypoints_uri']}`",
            f"- fit outputs: `{r['fit_uri']}`",
            f"- plot: `{r['plot_uri']}`",
        ]
        if plot_link:
            lines += ["", f"![joint angles of {video_name(r['video'])}]({plot_link})"]
    return "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``failed`` when any video failed; ``message`` names the failed and low-coverage videos."""

    failed: bool
    message: str


def outcome(rows: list[dict[str, Any]], min_coverage: float) -> Outcome:
    failed = [r for r in rows if r["status"] == FAILED]
    low = [r for r in rows if r["status"] == LOW_COVERAGE]
    low_note = (
        f"; {len(low)} with the subject in under {100 * min_coverage:.0f} % of frames: "
        + "; ".join(f"{video_name(r['video'])} ({r['frames_detected']}/{r['frames']})" for r in low)
        if low
        else ""
    )
    if failed:
        names = "; ".join(f"{video_name(r['video'])} ({r['failed_stage']}: {r['error']})" for r in failed)
        return Outcome(True, f"{len(failed)} of {len(rows)} videos failed: {names}{low_note}")
    return Outcome(False, f"all {len(rows)} videos processed{low_note}")
