"""What a cohort run hands back to a person: one line per video by name, every output's URI, QC videos.

Pure (no Prefect, no Ray): works on the summary rows the cohort flow returns (``flows/cohort.py``) and on the store.
The CLI renders :class:`VideoLine` objects; tests read them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mocapflow.store import Store, fit_key

logger = logging.getLogger(__name__)

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


def video_name(uri: str) -> str:
    """The file name of a video URI or path (``s3://b/clinic/p01.mp4`` -> ``p01.mp4``)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


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
    """``mocapflow run``'s arguments as a cohort source: ``{"videos": [...], "manifest": ..., "prefix": ...}``.

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
    return {
        "videos": videos,
        "manifest": manifests[0] if manifests else None,
        "prefix": prefixes[0] if prefixes else None,
    }


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
