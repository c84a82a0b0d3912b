"""What a run reports: one summary row per video, the summary table's schema, the per-video markdown, the run's final
message, and artifact keys (tasks/publish.py turns these into Prefect artifacts); and what ``mocapflow run`` hands
back to a person: one line per video by name, every output's URI, QC videos. Pure: no Prefect, no Ray.

A video's status is ``ok``, ``low_coverage`` (processed, but its subject was found in fewer than ``min_coverage`` of
its frames) or ``failed`` (``failed_stage`` and a one-line ``error`` say where and why).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mocapflow.store import Store, fit_key

logger = logging.getLogger(__name__)

OK, LOW_COVERAGE, FAILED = "ok", "low_coverage", "failed"

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


def empty_row(video: str, subject_id: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SUMMARY_SCHEMA.names)
    row.update(video=video, subject_id=subject_id, status=OK, cached=False)
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
        **{col: res.get("outputs", {}).get(name) for name, col in OUTPUT_COLUMNS.items()},
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


THUMB_WIDTH = 700


def plot_thumbnail(png: bytes, width: int = THUMB_WIDTH) -> bytes:
    """A plot at ``width`` px as a JPEG (~10x smaller than the PNG: it is inlined in the run's per-video report,
    which lives in Prefect's database). ~50-100 ms of CPU for a 1000x1400 plot: made where the fit ran
    (tasks/fit_ray.py), not in the flow's driver at the end of the run."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable image")
    if img.shape[1] > width:
        img = cv2.resize(
            img, (width, round(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA
        )
    ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return out.tobytes()


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


# --- what `mocapflow run` hands back to a person ---

QC_VIDEO = "qc.mp4"
# summary column -> label of the output it points at, in the order people look for them
OUTPUT_LABELS = (
    ("keypoints_uri", "keypoints"),
    ("angles_uri", "joint angles"),
    ("residuals_uri", "residuals"),
    ("mot_uri", "OpenSim motion"),
    ("osim_uri", "OpenSim model"),
    ("trc_uri", "OpenSim markers"),
    ("scales_uri", "body scales"),
    ("plot_uri", "angles plot"),
    ("qc_video_uri", "QC video"),
)


def absolute_uri(uri: str) -> str:
    """Local paths become absolute (Ray workers may run elsewhere in the tree); URIs stay as they are."""
    import os

    if "://" in uri and not uri.startswith("file://"):
        return uri
    return os.path.abspath(uri.removeprefix("file://"))


def first_line(text: str | None, limit: int = 160) -> str:
    """The first line of an error, shortened to ``limit`` characters (the summary keeps the whole message)."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class VideoLine:
    """One video of a run as a person reads it."""

    name: str
    source: str
    subject_id: str | None
    status: str
    frames: int | None
    coverage: float | None
    observed_fraction: float | None
    converged: bool | None
    cached: bool
    failed_stage: str | None
    error: str
    outputs: dict[str, str] = field(default_factory=dict)  # label -> URI

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VideoLine:
        outputs = {label: row[col] for col, label in OUTPUT_LABELS if row.get(col)}
        return cls(
            name=video_name(row["video"]),
            source=row["video"],
            subject_id=row.get("subject_id"),
            status=row["status"],
            frames=row.get("frames"),
            coverage=row.get("coverage"),
            observed_fraction=row.get("fit_observed_fraction"),
            converged=row.get("fit_converged"),
            cached=bool(row.get("cached")),
            failed_stage=row.get("failed_stage"),
            error=first_line(row.get("error")),
            outputs=outputs,
        )


def key_of(store: Store, uri: str) -> str | None:
    """The store key of a URI the store produced (None if ``uri`` is not under the store's root)."""
    root = store.root.rstrip("/") + "/"
    return uri[len(root) :] if uri.startswith(root) else None


def write_qc_video(
    store: Store,
    row: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write the QC video of one processed video (a summary row with ``keypoints_uri`` and ``fit_uri``) beside its
    fit (``fits/qc/model=…/video=…/fit=…/qc.mp4``) and return its URI; an existing one is kept unless ``overwrite``.

    The skeleton comes from the keypoints table; which frames were observed, bridged or not fitted from the angles
    table (:func:`mocapflow.qc.frame_states`).
    """
    from mocapflow.keypoints import read_arrays
    from mocapflow.qc import frame_states, qc_video_mp4
    from mocapflow.video import iter_batches

    kp_key, prefix = key_of(store, row["keypoints_uri"] or ""), key_of(store, row["fit_uri"] or "")
    if kp_key is None or prefix is None:
        raise ValueError(f"{row['video']}: its outputs are not in the store {store.root}")
    key = fit_key(prefix, QC_VIDEO)
    if not overwrite and store.exists(key):
        return store.uri(key)
    meta, kp = read_arrays(store.read_table(kp_key))
    angles = store.read_table(fit_key(prefix, "angles.parquet")).select(["frame", "observed", "interpolated"])
    states = frame_states(
        meta.n_frames,
        angles["frame"].to_numpy(),
        angles["observed"].to_numpy(zero_copy_only=False),
        angles["interpolated"].to_numpy(zero_copy_only=False),
    )
    title = video_name(row["video"]) + (f"  subject {row['subject_id']}" if row.get("subject_id") else "")
    data = qc_video_mp4(
        iter_batches(row["video"], 32, storage_options),
        kp["kp2d_px"],
        kp["conf"],
        meta.joint_edges,
        states,
        meta.fps,
        title=title,
    )
    report = store.put_bytes(key, data)
    logger.info("QC video of %s: %s (%d bytes)", row["video"], report.uri, report.bytes)
    return report.uri


MANIFEST_SUFFIXES = (".csv", ".parquet")


def split_sources(args: list[str]) -> dict[str, Any]:
    """``mocapflow run``'s arguments as cohort-source fields: those of ``videos`` (a list), ``manifest``, ``prefix``
    that were given (more than one kind is refused by the flow's ``CohortSource``).

    A ``.csv`` / ``.parquet`` argument is the manifest, a local folder or an ``s3://`` URI ending in ``/`` (or
    without a video suffix) is the prefix, anything else a video. At most one manifest and one prefix.
    """
    import os

    from mocapflow.discovery import VIDEO_SUFFIXES

    videos: list[str] = []
    manifests: list[str] = []
    prefixes: list[str] = []
    for arg in args:
        low = arg.lower()
        remote = "://" in arg and not arg.startswith("file://")
        local = arg.removeprefix("file://")
        if low.endswith(MANIFEST_SUFFIXES):
            manifests.append(absolute_uri(arg))
        elif (not remote and os.path.isdir(local)) or (
            remote and (arg.endswith("/") or not low.endswith(VIDEO_SUFFIXES))
        ):
            prefixes.append(absolute_uri(arg))
        else:
            videos.append(absolute_uri(arg))
    if len(manifests) > 1 or len(prefixes) > 1:
        raise ValueError(
            f"give at most one manifest and one folder/prefix (got {len(manifests)} manifests, "
            f"{len(prefixes)} folders); list videos one by one or put them in a manifest"
        )
    given: dict[str, Any] = {"videos": videos} if videos else {}
    if manifests:
        given["manifest"] = manifests[0]
    if prefixes:
        given["prefix"] = prefixes[0]
    return given


def write_qc_videos(
    store: Store,
    rows: list[dict[str, Any]],
    storage_options: dict[str, Any] | None = None,
    on_video: Any = None,
) -> None:
    """:func:`write_qc_video` for each processed row; sets ``row["qc_video_uri"]``, or ``row["qc_video_error"]``
    when it cannot be made (a QC video is a picture: the run's outputs stand without it)."""
    for row in rows:
        try:
            row["qc_video_uri"] = write_qc_video(store, row, storage_options)
        except (OSError, ValueError) as e:
            logger.warning("%s: no QC video: %s", row["video"], e)
            row["qc_video_error"] = f"{type(e).__name__}: {e}"
        if on_video is not None:
            on_video(row)
