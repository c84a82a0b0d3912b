"""The pose stage for one video (pure core): decode in batches, estimate, track the subject, write one table.

Per-frame detections are collected in a list and turned into arrays once at the end; the keypoints table is written
in one put under ``keypoints_key(video sha256, model id, params)`` and committed with ``_SUCCESS.json`` after it.
The intrinsics come from the caller (a cohort manifest), else from ``<video stem>.camera.json`` beside the video,
else from the default field of view; the SAME object goes into the table (and its key) for the fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mocapflow.camera import Intrinsics
from mocapflow.keypoints import KeypointsMeta, build_table
from mocapflow.pose.tracking import TrackerConfig, track_subject
from mocapflow.store import keypoints_key, keypoints_prefix
from mocapflow.video import VideoError, VideoInfo, iter_batches, local_copy, probe

if TYPE_CHECKING:
    from mocapflow.settings import Settings
    from mocapflow.store import Store
    from models.runtime import FrameDetections, PoseEstimator

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
SIDECAR_SUFFIX = ".camera.json"


class CameraError(ValueError):
    """A camera sidecar (or explicit intrinsics) cannot be used for this video; the message says which and why."""


@dataclass(frozen=True)
class PoseParams:
    """What the pose stage needs besides the video and the model. Only ``tracker`` and the intrinsics change the
    output, so only they go into the storage key (:meth:`key_params`); the batch size does not."""

    batch_size: int = 32
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    default_fov_deg: float = 55.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 1.0 < self.default_fov_deg < 179.0:
            raise ValueError(f"default_fov_deg must be in (1, 179), got {self.default_fov_deg}")

    @classmethod
    def from_settings(cls, settings: Settings) -> PoseParams:
        return cls(
            batch_size=settings.batch_size,
            tracker=TrackerConfig(max_gap_frames=settings.max_gap_frames, subject=settings.subject_track),
            default_fov_deg=settings.default_fov_deg,
        )

    def key_params(self, intrinsics: Intrinsics) -> dict[str, Any]:
        """The parameters recorded in the table and hashed into its key."""
        return {"tracker": self.tracker.to_params(), "intrinsics": intrinsics.to_dict()}


@dataclass(frozen=True)
class PoseResult:
    """What one pose run wrote (STYLE.md #7)."""

    video: str
    video_sha256: str
    model_id: str
    key: str
    uri: str
    rows: int
    bytes: int
    seconds: float
    frames: int
    fps_processed: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- intrinsics ---------------------------------------------------------------------------------------------


def sidecar_uri(video_uri: str) -> str:
    """``<video stem>.camera.json`` beside the video (same folder or prefix)."""
    folder, _, name = video_uri.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return (
        f"{folder}/{stem}{SIDECAR_SUFFIX}"
        if folder or video_uri.startswith("/")
        else f"{stem}{SIDECAR_SUFFIX}"
    )


def read_sidecar(video_uri: str, storage_options: dict[str, Any] | None = None) -> Intrinsics | None:
    """The intrinsics in the video's camera sidecar, or None if there is none.

    The sidecar holds the intrinsics object (``fx, fy, cx, cy, width, height``) or ``{"intrinsics": {...}, ...}``.
    CameraError names the sidecar and the bad field, never its content.
    """
    from mocapflow.discovery import CameraFileError, read_camera_file

    uri = sidecar_uri(video_uri)
    try:
        return read_camera_file(uri, storage_options)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CameraError(f"camera sidecar {uri} is a folder, not a JSON file; remove or rename it") from None
    except CameraFileError as e:
        raise CameraError(f"{e} (the camera sidecar of {video_uri})") from None


def resolve_intrinsics(
    video_uri: str,
    width: int,
    height: int,
    default_fov_deg: float,
    explicit: Intrinsics | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Intrinsics:
    """Explicit intrinsics, else the video's sidecar, else ``Intrinsics.from_fov(width, height, default_fov_deg)``."""
    source = "the caller"
    intr = explicit
    if intr is None:
        intr, source = read_sidecar(video_uri, storage_options), sidecar_uri(video_uri)
    if intr is None:
        logger.debug("%s: no camera sidecar; assuming a %.1f deg horizontal FOV", video_uri, default_fov_deg)
        return Intrinsics.from_fov(width, height, default_fov_deg)
    if (intr.width, intr.height) != (width, height):
        raise CameraError(
            f"intrinsics from {source} are for a {intr.width}x{intr.height} image but video {video_uri} is "
            f"{width}x{height}; give the intrinsics of this video's frames"
        )
    return intr


# -- estimation ---------------------------------------------------------------------------------------------


def detect_all(
    video_path: str,
    estimator: PoseEstimator,
    intrinsics: Intrinsics,
    batch_size: int,
    total_frames: int = 0,
    decode_threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[FrameDetections]:
    """Run the estimator over every frame, batch by batch; one FrameDetections per decoded frame."""
    detections: list[FrameDetections] = []
    session = estimator.video_session(intrinsics)
    for batch in iter_batches(video_path, batch_size, threads=decode_threads):
        t0 = time.perf_counter()
        found = session(batch)
        if len(found) != len(batch):
            raise RuntimeError(
                f"model set {estimator.model_set.manifest.name!r} returned {len(found)} results for a batch of "
                f"{len(batch)} frames of {video_path}; its estimator must return one per frame"
            )
        detections.extend(found)
        logger.debug(
            "%s: %d/%d frames (%d in %.3f s)",
            video_path,
            len(detections),
            total_frames,
            len(batch),
            time.perf_counter() - t0,
        )
        if on_progress is not None:
            on_progress(len(detections), max(total_frames, len(detections)))
    return detections


def estimate_keypoints(
    video_path: str,
    estimator: PoseEstimator,
    intrinsics: Intrinsics,
    params: PoseParams,
    info: VideoInfo | None = None,
    decode_threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> pa.Table:
    """The keypoints table of the subject in a local video (probed here unless ``info`` is given)."""
    info = info or probe(video_path)
    detections = detect_all(
        video_path, estimator, intrinsics, params.batch_size, info.n_frames, decode_threads, on_progress
    )
    n_joints = len(estimator.joint_names)
    subject = track_subject(detections, n_joints, params.tracker, image_size=(info.width, info.height))
    if len(detections) != info.n_frames:
        logger.info(
            "%s: decoded %d frames, the container says %d", video_path, len(detections), info.n_frames
        )
    meta = KeypointsMeta(
        video_sha256=info.sha256,
        fps=info.fps,
        width=info.width,
        height=info.height,
        n_frames=len(detections),
        intrinsics=intrinsics,
        joint_names=tuple(estimator.joint_names),
        joint_edges=tuple(tuple(e) for e in estimator.joint_edges),
        model_id=estimator.model_set.id,
        model_name=estimator.model_set.manifest.name,
        params=params.key_params(intrinsics),
    )
    # The table ties track_id to the box (-1 exactly where the box is NaN), so bridged frames, which have no box,
    # are written with -1; the tracker's own arrays keep the subject's id on them.
    track_id = subject.track_id.copy()
    track_id[subject.bridged] = -1
    return build_table(
        subject.frame,
        None,
        subject.kp2d_px,
        subject.kp3d_mm,
        subject.conf,
        subject.box,
        subject.box_score,
        track_id,
        meta,
    )


@contextlib.contextmanager
def _named(video_uri: str, local_path: str) -> Iterator[None]:
    """Make VideoErrors raised on a local copy name the original video."""
    try:
        yield
    except VideoError as e:
        if local_path == video_uri:
            raise
        msg = str(e).replace(local_path, video_uri)
        raise VideoError(msg if video_uri in msg else f"video {video_uri}: {msg}") from e


class NoPersonError(VideoError):
    """The pose stage found nobody in the video: nothing to fit, so no table is committed."""


def _check_someone_found(video_uri: str, table: pa.Table) -> None:
    """NoPersonError unless the subject was observed in at least one frame (an all-NaN table is never committed)."""
    import numpy as np

    if table.num_rows == 0 or not bool(np.any(table.column("track_id").to_numpy() >= 0)):
        raise NoPersonError(
            f"video {video_uri}: no person found in {table.num_rows} frames; check that a person is in view "
            "(and large enough), or try another model set"
        )


def run_pose(
    video_uri: str,
    estimator: PoseEstimator,
    store: Store,
    params: PoseParams,
    intrinsics: Intrinsics | None = None,
    storage_options: dict[str, Any] | None = None,
    decode_threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> PoseResult:
    """Probe, estimate and track, write the table in one put under its content key, then commit it.

    Raises VideoError (naming the video) for empty, corrupt or frameless files and NoPersonError (a VideoError)
    when nobody is found in any frame; CameraError for a bad sidecar.
    ``storage_options`` are for reading the video and its sidecar (a remote video is downloaded once).
    """
    t0 = time.perf_counter()
    with (
        local_copy(video_uri, storage_options, hash_local=False) as (path, _sha, _size),
        _named(video_uri, path),
    ):
        info = dataclasses.replace(probe(path), uri=video_uri)
        intr = resolve_intrinsics(
            video_uri, info.width, info.height, params.default_fov_deg, intrinsics, storage_options
        )
        table = estimate_keypoints(path, estimator, intr, params, info, decode_threads, on_progress)
    _check_someone_found(video_uri, table)
    model_id = estimator.model_set.id
    key_params = params.key_params(intr)
    key = keypoints_key(info.sha256, model_id, key_params)
    report = store.write_table(key, table)
    seconds = time.perf_counter() - t0
    store.commit(
        keypoints_prefix(info.sha256, model_id, key_params),
        {
            "rows": table.num_rows,
            "bytes": report.bytes,
            "seconds": seconds,
            "inputs": {
                "video": video_uri,
                "video_sha256": info.sha256,
                "model_id": model_id,
                "model_name": estimator.model_set.manifest.name,
                "params": key_params,
            },
        },
    )
    frames = table.num_rows
    result = PoseResult(
        video=video_uri,
        video_sha256=info.sha256,
        model_id=model_id,
        key=key,
        uri=report.uri,
        rows=table.num_rows,
        bytes=report.bytes,
        seconds=seconds,
        frames=frames,
        fps_processed=frames / seconds if seconds > 0 else float("inf"),
    )
    logger.info(
        "pose %s: %d frames in %.2f s (%.1f fps) -> %s", video_uri, frames, seconds, result.fps_processed, key
    )
    return result
