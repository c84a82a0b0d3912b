"""The pose stage for one video (pure core): decode in batches, estimate, track every person, write two tables.

Per-frame detections are collected in a list and turned into arrays once at the end; the subject's keypoints table
is written in one put under ``keypoints_key(video sha256, model id, params)``, every person's tracks in one put under
the same key with ``tracks/`` for ``keypoints/`` (:func:`tracks_key`, a dataset of its own), and each prefix is
committed with ``_SUCCESS.json`` after the data, the keypoints prefix last. :func:`subject_from_tracks`
takes another subject from ``tracks.parquet`` without running the models.
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
from mocapflow.keypoints import (
    SCHEMA_VERSION,
    KeypointsMeta,
    build_table,
    build_tracks_table,
    read_tracks_arrays,
)
from mocapflow.pose.tracking import (
    PeopleArrays,
    SubjectArrays,
    SubjectRule,
    TrackerConfig,
    TrackSummary,
    choose_from_summaries,
    subject_from_people,
    track_people,
)
from mocapflow.store import KeyNotFoundError, keypoints_key, keypoints_prefix
from mocapflow.video import VideoError, VideoInfo, downscaled_size, iter_batches, local_copy, probe

if TYPE_CHECKING:
    from mocapflow.settings import Settings
    from mocapflow.store import Store
    from models.runtime import FrameDetections, PoseEstimator

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
SIDECAR_SUFFIX = ".camera.json"
TRACKS_FILE = "tracks.parquet"


class CameraError(ValueError):
    """A camera sidecar (or explicit intrinsics) cannot be used for this video; the message says which and why."""


@dataclass(frozen=True)
class PoseParams:
    """What the pose stage needs besides the video and the model. The tracker, the intrinsics and the test-time
    augmentation change the output, so they go into the storage key (:meth:`key_params`); the batch size does not."""

    batch_size: int = 32
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    default_fov_deg: float = 55.0
    test_time_augmentation: int = 1  # crops per detection where the model set supports it (metrabs)
    max_people: int | None = None  # tracking policy of model sets that track people (blazepose)
    mirror_average: bool = True  # blazepose: each crop averaged with its mirror image
    backtrack_frames: int = 10  # blazepose: new people tracked backwards from this many frames after they were found
    scan_interval_frames: int = 10
    max_scan_interval_frames: int = 30  # blazepose: scans that find nobody new space out up to this
    max_frame_side: int | None = (
        1920  # longer frames are downscaled before inference (results in original px)
    )

    def __post_init__(self) -> None:
        if self.test_time_augmentation < 1:
            raise ValueError(f"test_time_augmentation must be >= 1, got {self.test_time_augmentation}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 1.0 < self.default_fov_deg < 179.0:
            raise ValueError(f"default_fov_deg must be in (1, 179), got {self.default_fov_deg}")
        if self.backtrack_frames < 0:
            raise ValueError(f"backtrack_frames must be >= 0, got {self.backtrack_frames}")
        if self.max_frame_side is not None and self.max_frame_side < 64:
            raise ValueError(f"max_frame_side must be >= 64 px (or None), got {self.max_frame_side}")

    @classmethod
    def from_settings(cls, settings: Settings) -> PoseParams:
        return cls(
            batch_size=settings.batch_size,
            tracker=TrackerConfig(max_gap_frames=settings.max_gap_frames, subject=settings.subject_track),
            default_fov_deg=settings.default_fov_deg,
            test_time_augmentation=settings.test_time_augmentation,
            max_people=settings.max_people,
            mirror_average=settings.mirror_average,
            backtrack_frames=settings.backtrack_frames,
            scan_interval_frames=settings.scan_interval_frames,
            max_scan_interval_frames=settings.max_scan_interval_frames,
            max_frame_side=settings.max_frame_side,
        )

    def estimator_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`models.runtime.open_estimator` these parameters set (the runtime options
        that change the output)."""
        return {
            "test_time_augmentation": self.test_time_augmentation,
            "max_people": self.max_people,
            "scan_interval": self.scan_interval_frames,
            "max_scan_interval": self.max_scan_interval_frames,
            "mirror_average": self.mirror_average,
            "backtrack_frames": self.backtrack_frames,
        }

    def key_params(self, intrinsics: Intrinsics, kind: str) -> dict[str, Any]:
        """The parameters recorded in the table and hashed into its key (with the table's schema version, so a
        store written by older code is not taken for this code's output); ``kind``: the model set's kind (options
        of one kind's runtime go into that kind's keys only)."""
        params: dict[str, Any] = {
            "tracker": self.tracker.to_params(),
            "intrinsics": intrinsics.to_dict(),
            "keypoints_schema": SCHEMA_VERSION,
        }
        # options that change the output only when they differ from their defaults (earlier keys stay valid)
        if self.test_time_augmentation > 1:
            params["test_time_augmentation"] = self.test_time_augmentation
        if kind == "blazepose":  # both became defaults at once: keys from before them stay apart
            if self.mirror_average:
                params["mirror_average"] = True
            if self.max_scan_interval_frames > self.scan_interval_frames:
                params["max_scan_interval_frames"] = self.max_scan_interval_frames
            if self.backtrack_frames:
                params["backtrack_frames"] = self.backtrack_frames
        if self.max_people is not None:
            params["max_people"] = self.max_people
        if self.scan_interval_frames != 10:
            params["scan_interval_frames"] = self.scan_interval_frames
        if self.max_frame_side is not None and max(intrinsics.width, intrinsics.height) > self.max_frame_side:
            params["max_frame_side"] = (
                self.max_frame_side
            )  # only videos it downscales: the others keep their keys
        return params


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
    frames_detected: int = 0  # frames where the subject was found (coverage = frames_detected / frames)
    coverage: float = 0.0
    tracks_uri: str = ""
    n_tracks: int = 0

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


def scale_intrinsics(intrinsics: Intrinsics, width: int, height: int) -> Intrinsics:
    """The intrinsics of the same camera for its frames resized to ``width`` x ``height``.

    Pixel centres sit at integer coordinates (``Intrinsics.from_fov``: cx = (W - 1) / 2), and a resize maps pixel
    edges onto pixel edges, so a point moves as x' = (x + 0.5) * sx - 0.5 with sx = width / W; focal lengths
    scale by sx, sy. :func:`detections_to_original` is the inverse for the model's outputs.
    """
    sx, sy = width / intrinsics.width, height / intrinsics.height
    return Intrinsics(
        fx=intrinsics.fx * sx,
        fy=intrinsics.fy * sy,
        cx=(intrinsics.cx + 0.5) * sx - 0.5,
        cy=(intrinsics.cy + 0.5) * sy - 0.5,
        width=int(width),
        height=int(height),
    )


def detections_to_original(found: FrameDetections, sx: float, sy: float) -> FrameDetections:
    """Detections made on frames resized by (sx, sy), in the original frames' pixels (3D in camera mm unchanged:
    the resized frames were given the scaled intrinsics of the same camera)."""
    import numpy as np

    scale = np.array([sx, sy], np.float32)
    kp2d = (found.kp2d + 0.5) / scale - 0.5
    boxes = ((found.boxes.reshape(-1, 2, 2) + 0.5) / scale - 0.5).reshape(-1, 4)
    return dataclasses.replace(found, kp2d=kp2d.astype(np.float32), boxes=boxes.astype(np.float32))


def detect_all(
    video_path: str,
    estimator: PoseEstimator,
    intrinsics: Intrinsics,
    batch_size: int,
    total_frames: int = 0,
    decode_threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    max_frame_side: int | None = None,
) -> list[FrameDetections]:
    """Run the estimator over every frame, batch by batch; one FrameDetections per decoded frame.

    Frames whose longer side exceeds ``max_frame_side`` are downscaled as they are decoded (the model sees the scaled
    intrinsics); the detections come back in the original frames' pixels, so memory per batch is bounded by
    ``batch_size x max_frame_side^2``-ish whatever the video's size.
    """
    detections: list[FrameDetections] = []
    decoded = 0
    size = downscaled_size(intrinsics.width, intrinsics.height, max_frame_side)
    resized = size != (intrinsics.width, intrinsics.height)
    sx, sy = size[0] / intrinsics.width, size[1] / intrinsics.height
    if resized:
        logger.info(
            "%s: %dx%d frames downscaled to %dx%d for inference (max_frame_side %d)",
            video_path,
            intrinsics.width,
            intrinsics.height,
            *size,
            max_frame_side,
        )
    session = estimator.video_session(scale_intrinsics(intrinsics, *size) if resized else intrinsics)
    for batch in iter_batches(
        video_path, batch_size, threads=decode_threads, frame_size=size if resized else None
    ):
        t0 = time.perf_counter()
        found = session(batch)
        decoded += len(batch)
        if resized:
            found = [detections_to_original(f, sx, sy) for f in found]
        detections.extend(found)
        logger.debug(
            "%s: %d/%d frames (%d in %.3f s)",
            video_path,
            decoded,
            total_frames,
            len(batch),
            time.perf_counter() - t0,
        )
        if on_progress is not None:
            on_progress(decoded, max(total_frames, decoded))
    found = session.finish()
    detections.extend([detections_to_original(f, sx, sy) for f in found] if resized else found)
    if len(detections) != decoded:
        raise RuntimeError(
            f"model set {estimator.model_set.manifest.name!r} returned {len(detections)} results for {decoded} "
            f"frames of {video_path}; its estimator must return one per frame"
        )
    return detections


@dataclass(frozen=True)
class PoseTables:
    """The subject's keypoints table and every person's tracks table of one video."""

    keypoints: pa.Table
    tracks: pa.Table


def _subject_table(subject: SubjectArrays, meta: KeypointsMeta) -> pa.Table:
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


def _people_table(people: PeopleArrays, meta: KeypointsMeta) -> pa.Table:
    return build_tracks_table(
        people.frame,
        people.kp2d_px,
        people.kp3d_mm,
        people.conf,
        people.box,
        people.box_score,
        people.track_id,
        meta,
    )


def estimate_people(
    video_path: str,
    estimator: PoseEstimator,
    intrinsics: Intrinsics,
    params: PoseParams,
    info: VideoInfo | None = None,
    decode_threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> PoseTables:
    """The subject's keypoints table and every person's tracks table of a local video (probed unless ``info``)."""
    info = info or probe(video_path)
    detections = detect_all(
        video_path,
        estimator,
        intrinsics,
        params.batch_size,
        info.n_frames,
        decode_threads,
        on_progress,
        params.max_frame_side,
    )
    if len(detections) != info.n_frames:
        logger.info(
            "%s: decoded %d frames, the container says %d", video_path, len(detections), info.n_frames
        )
    return pose_tables(detections, estimator, intrinsics, params, info)


def pose_tables(
    detections: list[FrameDetections],
    estimator: PoseEstimator,
    intrinsics: Intrinsics,
    params: PoseParams,
    info: VideoInfo,
) -> PoseTables:
    """Track every person in a video's detections (one per decoded frame) and build its two tables."""
    n_joints = len(estimator.joint_names)
    try:
        found = track_people(detections, n_joints, params.tracker, image_size=(info.width, info.height))
    except ValueError as e:
        raise type(e)(f"video {info.uri}: {e}") from e
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
        params=params.key_params(intrinsics, estimator.model_set.manifest.kind),
        subject_track_id=found.subject_track_id,
        tracks=tuple(t.to_dict() for t in found.summaries),
        source=info.uri,
    )
    keypoints = _subject_table(found.subject, meta)
    tracks = _people_table(found.people, KeypointsMeta.from_metadata(keypoints.schema.metadata))
    return PoseTables(keypoints, tracks)


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
    return estimate_people(
        video_path, estimator, intrinsics, params, info, decode_threads, on_progress
    ).keypoints


def subject_from_tracks(tracks: pa.Table, subject: SubjectRule) -> pa.Table:
    """The keypoints table the pose stage would have written with subject rule ``subject`` (a rule name or a track
    id), taken from the video's ``tracks.parquet`` without running the models. Its metadata's ``params`` record the
    new rule, so :func:`keypoints_key` of them is where a run with that rule would store it.

    Raises :class:`mocapflow.pose.tracking.SubjectTrackError` when the video has no such track.
    """
    meta, a = read_tracks_arrays(tracks)
    tracker_params = dict(meta.params.get("tracker", {}))
    config = TrackerConfig(**{**tracker_params, "subject": subject})
    summaries = [TrackSummary.from_dict(t) for t in meta.tracks]
    chosen = choose_from_summaries(summaries, config.subject, config.min_subject_fraction)
    people = PeopleArrays(
        a["frame"], a["kp2d_px"], a["kp3d_mm"], a["conf"], a["box"], a["box_score"], a["track_id"]
    )
    chosen_id = None if chosen is None else chosen.track_id
    arrays = subject_from_people(people, chosen_id, meta.n_frames)
    new_meta = dataclasses.replace(
        meta,
        params={**meta.params, "tracker": config.to_params()},
        subject_track_id=chosen_id,
        frames_detected=None,
    )
    return _subject_table(arrays, new_meta)


def tracks_key(keypoints_key: str) -> str:
    """``tracks/model=<id>/video=<sha256>/params=<hash>/tracks.parquet`` for the keypoints table at ``keypoints_key``:
    the same content key under its own top-level folder, so ``keypoints/`` and ``tracks/`` each read as one dataset."""
    if not keypoints_key.startswith("keypoints/"):
        raise ValueError(f"{keypoints_key!r} is not a keypoints key (keypoints/model=.../keypoints.parquet)")
    return f"tracks/{keypoints_key.removeprefix('keypoints/').rsplit('/', 1)[0]}/{TRACKS_FILE}"


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
    subject_id: str | None = None,
) -> PoseResult:
    """Probe, estimate and track, write the table in one put under its content key, then commit it.

    The tables' metadata name the source (``video_uri``) and ``subject_id`` (a cohort manifest's, if any).

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
        tables = estimate_people(path, estimator, intr, params, info, decode_threads, on_progress)
    if subject_id is not None:
        tables = with_subject_id(tables, subject_id)
    table = tables.keypoints
    _check_someone_found(video_uri, table)
    meta = KeypointsMeta.from_metadata(table.schema.metadata)
    model_id = estimator.model_set.id
    key_params = params.key_params(intr, estimator.model_set.manifest.kind)
    key = keypoints_key(info.sha256, model_id, key_params)
    report = store.write_table(key, table)
    people_key = tracks_key(key)
    people_report = store.write_table(people_key, tables.tracks)
    seconds = time.perf_counter() - t0
    inputs = {
        "video": video_uri,
        "video_sha256": info.sha256,
        "model_id": model_id,
        "model_name": estimator.model_set.manifest.name,
        "params": key_params,
    }
    store.commit(
        people_key.rsplit("/", 1)[0],
        {
            "rows": tables.tracks.num_rows,
            "bytes": people_report.bytes,
            "n_tracks": len(meta.tracks),
            "inputs": inputs,
        },
    )
    store.commit(
        keypoints_prefix(info.sha256, model_id, key_params),
        {
            "rows": table.num_rows,
            "bytes": report.bytes,
            "seconds": seconds,
            "n_frames": meta.n_frames,
            "frames_detected": meta.frames_detected,
            "coverage": meta.coverage,
            "tracks": {**people_report.to_dict(), "n_tracks": len(meta.tracks)},
            "inputs": inputs,
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
        frames_detected=meta.frames_detected or 0,
        coverage=meta.coverage or 0.0,
        tracks_uri=people_report.uri,
        n_tracks=len(meta.tracks),
    )
    logger.info(
        "pose %s: %d frames in %.2f s (%.1f fps), subject found in %d (%.0f %%), %d people -> %s",
        video_uri,
        frames,
        seconds,
        result.fps_processed,
        result.frames_detected,
        100.0 * result.coverage,
        result.n_tracks,
        key,
    )
    return result


def with_subject_id(tables: PoseTables, subject_id: str) -> PoseTables:
    """Both tables with ``subject_id`` (a cohort manifest's person id) in their metadata."""
    meta = dataclasses.replace(
        KeypointsMeta.from_metadata(tables.keypoints.schema.metadata), subject_id=subject_id
    )
    return PoseTables(
        tables.keypoints.replace_schema_metadata(meta.to_metadata("keypoints")),
        tables.tracks.replace_schema_metadata(meta.to_metadata("tracks")),
    )


def switch_subject(store: Store, keypoints_key_: str, subject: SubjectRule) -> PoseResult:
    """Write the keypoints (and tracks) table of another subject of an already processed video, from its committed
    ``tracks.parquet``, under the key a pose run with rule ``subject`` would use; no model runs. The fit then takes
    the new table like any other. Raises KeyNotFoundError if the video's pose output is not committed."""
    t0 = time.perf_counter()
    source_prefix = keypoints_key_.rsplit("/", 1)[0]
    if not store.is_committed(source_prefix) or not store.is_committed(
        tracks_key(keypoints_key_).rsplit("/", 1)[0]
    ):
        raise KeyNotFoundError(
            f"{keypoints_key_}: no committed pose output with tracks here; run the pose stage with this code first"
        )
    tracks = store.read_table(tracks_key(keypoints_key_))
    table = subject_from_tracks(tracks, subject)
    meta = KeypointsMeta.from_metadata(table.schema.metadata)
    _, a = read_tracks_arrays(tracks)
    people = build_tracks_table(
        a["frame"], a["kp2d_px"], a["kp3d_mm"], a["conf"], a["box"], a["box_score"], a["track_id"], meta
    )
    key = keypoints_key(meta.video_sha256, meta.model_id, meta.params)
    report = store.write_table(key, table)
    people_report = store.write_table(tracks_key(key), people)
    inputs = {
        "video_sha256": meta.video_sha256,
        "model_id": meta.model_id,
        "params": meta.params,
        "switched_from": keypoints_key_,
    }
    store.commit(
        tracks_key(key).rsplit("/", 1)[0],
        {
            "rows": people.num_rows,
            "bytes": people_report.bytes,
            "n_tracks": len(meta.tracks),
            "inputs": inputs,
        },
    )
    seconds = time.perf_counter() - t0
    store.commit(
        key.rsplit("/", 1)[0],
        {
            "rows": table.num_rows,
            "bytes": report.bytes,
            "seconds": seconds,
            "n_frames": meta.n_frames,
            "frames_detected": meta.frames_detected,
            "coverage": meta.coverage,
            "tracks": {**people_report.to_dict(), "n_tracks": len(meta.tracks)},
            "inputs": inputs,
        },
    )
    logger.info(
        "subject %s of %s -> %s (found in %d of %d frames)",
        subject,
        keypoints_key_,
        key,
        meta.frames_detected or 0,
        meta.n_frames,
    )
    return PoseResult(
        video=keypoints_key_,
        video_sha256=meta.video_sha256,
        model_id=meta.model_id,
        key=key,
        uri=report.uri,
        rows=table.num_rows,
        bytes=report.bytes,
        seconds=seconds,
        frames=table.num_rows,
        fps_processed=table.num_rows / seconds if seconds > 0 else float("inf"),
        frames_detected=meta.frames_detected or 0,
        coverage=meta.coverage or 0.0,
        tracks_uri=people_report.uri,
        n_tracks=len(meta.tracks),
    )
