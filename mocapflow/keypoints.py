"""The keypoints table (docs/ARCHITECTURE.md "Keypoints table"): build, validate and read it; and the tracks table.

One row per video frame of the tracked subject, nested fixed-size-list columns, metadata as UTF-8 JSON values in
the Arrow schema metadata (kept by Parquet). Missing detections are NaN with confidence 0, never zeros with
confidence 1: :func:`validate_table` enforces that ``conf == 0`` exactly where ``kp2d_px`` is NaN. The metadata
carries the subject's coverage (``frames_detected`` of ``n_frames``) and a summary of every person tracked.

The tracks table (``tracks.parquet`` beside ``keypoints.parquet``) has the same columns and metadata, with one row
per (track, frame) where that person was detected, sorted by ``track_id`` then ``frame`` (:func:`build_tracks_table`).

Schema version 2 added ``frames_detected``, ``coverage``, ``subject_track_id`` and ``tracks`` to the metadata;
version 3 added ``source`` (the URI the video was read from) and ``subject_id`` (from a cohort manifest, else null).
Versions 1 and 2 are still read (coverage counted from the rows, empty track summary, unknown source).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from mocapflow.camera import Intrinsics

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
VERSION_KEY = "mocapflow.schema_version"
TABLE_KEY = "mocapflow.table"  # "keypoints" (one row per frame) or "tracks" (one row per track and frame)
_META_KEYS = (
    "video_sha256",
    "fps",
    "width",
    "height",
    "n_frames",
    "intrinsics",
    "joint_names",
    "joint_edges",
    "model_id",
    "model_name",
    "params",
)
_META_KEYS_V2 = ("frames_detected", "subject_track_id", "tracks")
_META_KEYS_V3 = ("source", "subject_id")
COLUMNS = ("frame", "time_s", "kp2d_px", "kp3d_mm", "conf", "box", "box_score", "track_id")


class KeypointsError(ValueError):
    """A keypoints table (or the arrays given to build one) breaks the contract; the message says where."""


@dataclass(frozen=True)
class KeypointsMeta:
    """The table's schema metadata. ``joint_names``/``joint_edges`` are normalised to tuples.

    ``frames_detected``: frames where the subject was found (rows with a box); None until :func:`build_table` counts
    it. ``coverage`` = frames_detected / n_frames. ``subject_track_id``: the subject's track (None: no tracker or no
    subject). ``tracks``: one summary per person tracked (:func:`mocapflow.pose.tracking.summarise_tracks`).
    """

    video_sha256: str
    fps: float
    width: int
    height: int
    n_frames: int
    intrinsics: Intrinsics
    joint_names: tuple[str, ...]
    joint_edges: tuple[tuple[int, int], ...]
    model_id: str
    model_name: str
    params: dict[str, Any] = field(default_factory=dict)
    frames_detected: int | None = None
    subject_track_id: int | None = None
    tracks: tuple[dict[str, Any], ...] = ()
    source: str | None = None
    subject_id: str | None = None

    def __post_init__(self) -> None:
        intr = self.intrinsics
        if isinstance(intr, dict):
            intr = Intrinsics.from_dict(intr)
        if not isinstance(intr, Intrinsics):
            raise KeypointsError(
                f"intrinsics must be a mocapflow.camera.Intrinsics, got {type(intr).__name__}"
            )
        object.__setattr__(self, "intrinsics", intr)
        object.__setattr__(self, "joint_names", tuple(str(n) for n in self.joint_names))
        object.__setattr__(self, "joint_edges", tuple((int(a), int(b)) for a, b in self.joint_edges))
        object.__setattr__(self, "fps", float(self.fps))
        for name in ("width", "height", "n_frames"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise KeypointsError(f"fps must be finite and > 0, got {self.fps}")
        if self.width < 1 or self.height < 1 or self.n_frames < 0:
            raise KeypointsError(f"bad video size {self.width}x{self.height} / n_frames {self.n_frames}")
        if (intr.width, intr.height) != (self.width, self.height):
            raise KeypointsError(
                f"intrinsics are for a {intr.width}x{intr.height} image but the video is {self.width}x{self.height};"
                " the fit must use the intrinsics of the frames the keypoints came from"
            )
        n = len(self.joint_names)
        if n == 0:
            raise KeypointsError("joint_names is empty")
        if len(set(self.joint_names)) != n:
            raise KeypointsError("joint_names has duplicates")
        bad = [e for e in self.joint_edges if not (0 <= e[0] < n and 0 <= e[1] < n)]
        if bad:
            raise KeypointsError(f"joint_edges {bad[:3]} out of range for {n} joints")
        if not isinstance(self.params, dict):
            raise KeypointsError(f"params must be a dict, got {type(self.params).__name__}")
        if self.frames_detected is not None:
            object.__setattr__(self, "frames_detected", int(self.frames_detected))
            if not 0 <= self.frames_detected <= self.n_frames:
                raise KeypointsError(
                    f"frames_detected {self.frames_detected} must be in 0..n_frames ({self.n_frames})"
                )
        if self.subject_track_id is not None:
            object.__setattr__(self, "subject_track_id", int(self.subject_track_id))
        if not all(isinstance(t, dict) for t in self.tracks):
            raise KeypointsError("tracks must be a list of per-track summaries (JSON objects)")
        object.__setattr__(self, "tracks", tuple(dict(t) for t in self.tracks))
        for name in ("source", "subject_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise KeypointsError(f"{name} must be a string or None, got {type(value).__name__}")

    @property
    def label(self) -> str:
        """How messages and plots name the video: its file name (after the subject id when a manifest gave one),
        else the start of its hash (tables written before the source was recorded)."""
        from mocapflow.report import video_name  # report reads the store, which reads keypoints tables

        if not self.source:
            return f"video {self.video_sha256[:12]}"
        name = video_name(self.source)
        return f"{self.subject_id}, {name}" if self.subject_id else name

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def coverage(self) -> float | None:
        """Fraction of the video's frames where the subject was found (None until ``frames_detected`` is known)."""
        if self.frames_detected is None:
            return None
        return self.frames_detected / self.n_frames if self.n_frames else 0.0

    def to_metadata(self, table: str = "keypoints") -> dict[bytes, bytes]:
        """Schema metadata: every value UTF-8 JSON. ``table``: "keypoints" or "tracks"."""
        values: dict[str, Any] = {
            VERSION_KEY: SCHEMA_VERSION,
            TABLE_KEY: table,
            "video_sha256": self.video_sha256,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "n_frames": self.n_frames,
            "intrinsics": self.intrinsics.to_dict(),
            "joint_names": list(self.joint_names),
            "joint_edges": [list(e) for e in self.joint_edges],
            "model_id": self.model_id,
            "model_name": self.model_name,
            "params": self.params,
            "frames_detected": self.frames_detected,
            "coverage": self.coverage,
            "subject_track_id": self.subject_track_id,
            "tracks": list(self.tracks),
            "source": self.source,
            "subject_id": self.subject_id,
        }
        try:
            return {
                k.encode(): json.dumps(v, sort_keys=True, allow_nan=False).encode() for k, v in values.items()
            }
        except (TypeError, ValueError) as e:
            raise KeypointsError(
                f"keypoints metadata is not plain JSON ({e}); params must be JSON values"
            ) from e

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None, table: str = "keypoints") -> KeypointsMeta:
        """Parse schema metadata (versions in READABLE_VERSIONS); ``table`` is the kind of table expected."""
        md = metadata or {}
        raw_version = md.get(VERSION_KEY.encode())
        if raw_version is None:
            raise KeypointsError(
                f"table has no {VERSION_KEY!r} metadata: it is not a mocapflow keypoints table "
                "(or it lost its schema metadata on the way)"
            )
        try:
            version = json.loads(raw_version)
        except ValueError as e:
            raise KeypointsError(f"{VERSION_KEY!r} metadata is not JSON: {raw_version!r}") from e
        if version not in READABLE_VERSIONS:
            raise KeypointsError(
                f"keypoints schema version {version} is not supported (this code reads {READABLE_VERSIONS}); "
                "rerun the pose stage"
            )
        kind = json.loads(md.get(TABLE_KEY.encode(), b'"keypoints"'))
        if kind != table:
            raise KeypointsError(
                f"this is a {kind} table, not a {table} table "
                f"(read tracks.parquet with read_tracks_arrays, keypoints.parquet with read_arrays)"
            )
        keys = _META_KEYS + (_META_KEYS_V2 if version >= 2 else ()) + (_META_KEYS_V3 if version >= 3 else ())
        missing = [k for k in keys if k.encode() not in md]
        if missing:
            raise KeypointsError(f"keypoints table metadata lacks {missing}")
        try:
            values = {k: json.loads(md[k.encode()]) for k in keys}
        except ValueError as e:
            raise KeypointsError(f"keypoints table metadata is not UTF-8 JSON: {e}") from e
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            if isinstance(e, KeypointsError):
                raise
            raise KeypointsError(f"keypoints table metadata is invalid: {e}") from e


def schema(meta: KeypointsMeta, table: str = "keypoints") -> pa.Schema:
    """The Arrow schema for ``meta.n_joints`` joints, with ``meta`` as schema metadata."""
    j = meta.n_joints
    return pa.schema(
        [
            pa.field("frame", pa.int32(), nullable=False),
            pa.field("time_s", pa.float64(), nullable=False),
            pa.field("kp2d_px", pa.list_(pa.list_(pa.float32(), 2), j), nullable=False),
            pa.field("kp3d_mm", pa.list_(pa.list_(pa.float32(), 3), j), nullable=False),
            pa.field("conf", pa.list_(pa.float32(), j), nullable=False),
            pa.field("box", pa.list_(pa.float32(), 4), nullable=False),
            pa.field("box_score", pa.float32(), nullable=False),
            pa.field("track_id", pa.int32(), nullable=False),
        ],
        metadata=meta.to_metadata(table),
    )


def missing_arrays(n_frames: int, n_joints: int) -> dict[str, NDArray[Any]]:
    """Arrays for ``n_frames`` frames with no detection (NaN, confidence 0, track -1); fill in what is found."""
    frame = np.arange(n_frames, dtype=np.int32)
    return {
        "frame": frame,
        "kp2d_px": np.full((n_frames, n_joints, 2), np.nan, np.float32),
        "kp3d_mm": np.full((n_frames, n_joints, 3), np.nan, np.float32),
        "conf": np.zeros((n_frames, n_joints), np.float32),
        "box": np.full((n_frames, 4), np.nan, np.float32),
        "box_score": np.zeros((n_frames,), np.float32),
        "track_id": np.full((n_frames,), -1, np.int32),
    }


def _nested(values: NDArray[np.float32], *sizes: int) -> pa.Array:
    arr: pa.Array = pa.array(values.reshape(-1), pa.float32())
    for size in reversed(sizes):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return arr


def build_table(
    frames: ArrayLike,
    time_s: ArrayLike | None,
    kp2d: ArrayLike,
    kp3d: ArrayLike,
    conf: ArrayLike,
    box: ArrayLike,
    box_score: ArrayLike,
    track_id: ArrayLike,
    meta: KeypointsMeta,
) -> pa.Table:
    """Build and validate the keypoints table. ``time_s=None`` means ``frames / meta.fps``.

    Shapes: frames [N], kp2d [N,J,2] px, kp3d [N,J,3] camera mm (all NaN for 2D-only models), conf [N,J],
    box [N,4] x0,y0,x1,y1 px, box_score [N], track_id [N]. ``meta.frames_detected`` is counted here (rows with a
    box); a value given in ``meta`` must agree.
    """
    return _build(frames, time_s, kp2d, kp3d, conf, box, box_score, track_id, meta, "keypoints")


def build_tracks_table(
    frames: ArrayLike,
    kp2d: ArrayLike,
    kp3d: ArrayLike,
    conf: ArrayLike,
    box: ArrayLike,
    box_score: ArrayLike,
    track_id: ArrayLike,
    meta: KeypointsMeta,
) -> pa.Table:
    """Build and validate the tracks table: one row per detection of every tracked person, sorted by
    (track_id, frame); same columns, types and missing-joint rules as the keypoints table, every row has a box and
    a track id >= 0. ``meta`` is the keypoints table's metadata (its coverage is the subject's)."""
    return _build(frames, None, kp2d, kp3d, conf, box, box_score, track_id, meta, "tracks")


def _build(
    frames: ArrayLike,
    time_s: ArrayLike | None,
    kp2d: ArrayLike,
    kp3d: ArrayLike,
    conf: ArrayLike,
    box: ArrayLike,
    box_score: ArrayLike,
    track_id: ArrayLike,
    meta: KeypointsMeta,
    kind: str,
) -> pa.Table:
    j = meta.n_joints
    f = np.asarray(frames)
    n = f.shape[0] if f.ndim == 1 else -1
    if f.ndim != 1 or (f.size and not np.issubdtype(f.dtype, np.integer)):
        raise KeypointsError(f"frames must be a 1-D integer array, got shape {f.shape} dtype {f.dtype}")
    arrays: dict[str, NDArray[Any]] = {"frame": f.astype(np.int32)}
    t = f / meta.fps if time_s is None else np.asarray(time_s, dtype=np.float64)
    expected = {
        "time_s": (t, (n,), np.float64),
        "kp2d_px": (kp2d, (n, j, 2), np.float32),
        "kp3d_mm": (kp3d, (n, j, 3), np.float32),
        "conf": (conf, (n, j), np.float32),
        "box": (box, (n, 4), np.float32),
        "box_score": (box_score, (n,), np.float32),
        "track_id": (track_id, (n,), np.int32),
    }
    for name, (value, shape, dtype) in expected.items():
        a = np.asarray(value)
        if a.shape != shape:
            raise KeypointsError(f"{name} has shape {a.shape}, expected {shape} (N={n} frames, J={j} joints)")
        arrays[name] = a.astype(dtype, copy=False)
    _check_values(arrays, kind)
    if kind == "keypoints":
        detected = int(np.isfinite(arrays["box"][:, 0]).sum())
        if meta.frames_detected is not None and meta.frames_detected != detected:
            raise KeypointsError(
                f"metadata says the subject was found in {meta.frames_detected} frames, the rows hold {detected}"
            )
        meta = dataclasses.replace(meta, frames_detected=detected)
    columns = [
        pa.array(arrays["frame"], pa.int32()),
        pa.array(arrays["time_s"], pa.float64()),
        _nested(arrays["kp2d_px"], j, 2),
        _nested(arrays["kp3d_mm"], j, 3),
        _nested(arrays["conf"], j),
        _nested(arrays["box"], 4),
        pa.array(arrays["box_score"], pa.float32()),
        pa.array(arrays["track_id"], pa.int32()),
    ]
    return pa.Table.from_arrays(columns, schema=schema(meta, kind))


def validate_table(table: pa.Table) -> KeypointsMeta:
    """Check schema version, metadata, column types and the missing-data invariants; return the metadata."""
    meta, _ = _read(table)
    return meta


def read_arrays(table: pa.Table) -> tuple[KeypointsMeta, dict[str, NDArray[Any]]]:
    """Validate, then return the metadata and one numpy array per column (keys = column names).

    Shapes as in :func:`build_table`; ``time_s`` float64, ``frame``/``track_id`` int32, the rest float32.
    For a version-1 table ``meta.frames_detected`` is counted from the rows (for a slice: the slice's rows).
    """
    return _read(table)


def read_tracks_arrays(table: pa.Table) -> tuple[KeypointsMeta, dict[str, NDArray[Any]]]:
    """:func:`read_arrays` for the tracks table (one row per track and frame)."""
    return _read(table, "tracks")


def _read(table: pa.Table, kind: str = "keypoints") -> tuple[KeypointsMeta, dict[str, NDArray[Any]]]:
    meta = KeypointsMeta.from_metadata(table.schema.metadata, kind)
    want = schema(meta, kind)
    for f in want:
        if f.name not in table.column_names:
            raise KeypointsError(f"keypoints table has no column {f.name!r}; it has {table.column_names}")
        got = table.schema.field(f.name).type
        if got != f.type:
            raise KeypointsError(f"column {f.name!r} has type {got}, expected {f.type}")
        if table.column(f.name).null_count:
            raise KeypointsError(
                f"column {f.name!r} has nulls; missing values are NaN (and conf 0), not null"
            )
    n, j = table.num_rows, meta.n_joints
    shapes = {
        "frame": (n,),
        "time_s": (n,),
        "kp2d_px": (n, j, 2),
        "kp3d_mm": (n, j, 3),
        "conf": (n, j),
        "box": (n, 4),
        "box_score": (n,),
        "track_id": (n,),
    }
    arrays = {name: _column_numpy(table.column(name), shape) for name, shape in shapes.items()}
    _check_values(arrays, kind)
    if kind == "keypoints":
        detected = int(np.isfinite(arrays["box"][:, 0]).sum())
        # version 1: count it. A version-2 figure is the whole video's, so a slice of the table keeps it.
        if meta.frames_detected is None:
            meta = dataclasses.replace(meta, frames_detected=min(detected, meta.n_frames))
    return meta, arrays


def _column_numpy(col: pa.ChunkedArray, shape: tuple[int, ...]) -> NDArray[Any]:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    while pa.types.is_fixed_size_list(arr.type):
        arr = arr.flatten()  # respects slice offsets
    values = arr.to_numpy(zero_copy_only=False)
    if values.size and not values.flags.writeable:
        values = values.copy()
    return values.reshape(shape)


def _first(mask: NDArray[np.bool_]) -> str:
    idx = np.argwhere(mask)[0]
    return f"row {idx[0]}" + (f", joint {idx[1]}" if len(idx) > 1 else "")


def _check_values(a: dict[str, NDArray[Any]], kind: str = "keypoints") -> None:
    frame, kp2d, kp3d, conf = a["frame"], a["kp2d_px"], a["kp3d_mm"], a["conf"]
    box, score, track = a["box"], a["box_score"], a["track_id"]
    if kind == "tracks":
        if track.size and track.min() < 0:
            raise KeypointsError(f"tracks table: track_id must be >= 0 in every row, see {_first(track < 0)}")
        if np.isnan(box[:, 0]).any():
            raise KeypointsError(
                f"tracks table: every row is a detection with a box, see {_first(np.isnan(box[:, 0]))}"
            )
        order = track.astype(np.int64) * (1 << 32) + frame.astype(np.int64)
        if frame.size and (frame.min() < 0 or np.any(np.diff(order) <= 0)):
            raise KeypointsError(
                "tracks table: rows must be sorted by (track_id, frame), one per track and frame"
            )
    elif frame.size and (frame.min() < 0 or np.any(np.diff(frame.astype(np.int64)) <= 0)):
        raise KeypointsError("frame must be non-negative and strictly increasing (one row per frame)")
    if not np.all(np.isfinite(a["time_s"])):
        raise KeypointsError(f"time_s is not finite at {_first(~np.isfinite(a['time_s']))}")
    for name, v in (("kp2d_px", kp2d), ("kp3d_mm", kp3d), ("box", box)):
        if np.any(np.isinf(v)):
            raise KeypointsError(f"{name} is infinite at {_first(np.isinf(v).any(-1))}; use NaN for missing")
        nan = np.isnan(v)
        partial = nan.any(-1) & ~nan.all(-1)
        if partial.any():
            raise KeypointsError(
                f"{name} is partly NaN at {_first(partial)}; a point is all NaN or all finite"
            )
    if not np.all(np.isfinite(conf)) or np.any((conf < 0) | (conf > 1)):
        raise KeypointsError(
            f"conf must be in [0, 1] (no NaN), bad at {_first(~((conf >= 0) & (conf <= 1)))}"
        )
    missing = np.isnan(kp2d[..., 0])
    bad = missing & (conf != 0)
    if bad.any():
        raise KeypointsError(f"conf must be 0 where kp2d_px is NaN (missing), but is not at {_first(bad)}")
    bad = ~missing & (conf == 0)
    if bad.any():
        raise KeypointsError(
            f"kp2d_px must be NaN where conf is 0 (missing detections are NaN with confidence 0), see {_first(bad)}"
        )
    bad = missing & ~np.isnan(kp3d[..., 0])
    if bad.any():
        raise KeypointsError(
            f"kp3d_mm must be NaN where the joint is missing (kp2d_px NaN), see {_first(bad)}"
        )
    zeros = ~missing & np.all(kp3d == 0, axis=-1)
    if zeros.any():
        raise KeypointsError(
            f"kp3d_mm is exactly (0, 0, 0) with conf > 0 at {_first(zeros)}: missing detections must be NaN with "
            "confidence 0, not zeros"
        )
    all_zero_2d = (~missing).any(-1) & np.all(missing | np.all(kp2d == 0, axis=-1), axis=-1)
    if all_zero_2d.any():
        raise KeypointsError(
            f"every present joint is at (0, 0) px at {_first(all_zero_2d)}: missing detections must be NaN "
            "with confidence 0, not zeros"
        )
    no_box = np.isnan(box[:, 0])
    if not np.all(np.isfinite(score)) or np.any((score < 0) | (score > 1)):
        raise KeypointsError("box_score must be in [0, 1] with no NaN")
    bad = no_box != (score == 0)
    if bad.any():
        raise KeypointsError(f"box_score must be 0 exactly where box is NaN (no subject), see {_first(bad)}")
    bad = (no_box != (track == -1)) | (track < -1)
    if bad.any():
        raise KeypointsError(
            f"track_id must be -1 exactly where box is NaN (no subject) and >= 0 elsewhere, see {_first(bad)}"
        )
    bad = no_box & (~missing).any(-1)
    if bad.any():
        raise KeypointsError(f"frames without a subject box must have no joints, see {_first(bad)}")
    bad = ~no_box & ((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1]))
    if bad.any():
        raise KeypointsError(f"box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0, see {_first(bad)}")
