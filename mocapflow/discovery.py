"""Find the videos of a cohort: explicit URIs, a manifest (CSV or Parquet), or a storage prefix with a glob.

A manifest has one row per video with a ``video`` column (URI or path relative to the manifest) and optional
per-video data: ``camera`` (a camera JSON sidecar, relative like ``video``) or ``fx, fy, cx, cy`` columns (with the
video's ``width, height``), and ``subject_id``. Pure: fsspec only.

A camera file that cannot be used (missing, not JSON, a field missing or not a number) fails only its own video:
its :class:`VideoSpec` carries the ``error`` and the probe stage fails that video with it. Error messages name the
file and the field, never the file's content. Storage reads retry transient errors (:mod:`mocapflow.errors`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mocapflow.camera import Intrinsics
from mocapflow.errors import is_transient, retry_transient

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")


class DiscoveryError(ValueError):
    """The cohort source cannot be read; the message names it and what to fix."""


class CameraFileError(ValueError):
    """A camera JSON file cannot be used; the message names the file and the field, never its content."""


CAMERA_FIELDS = ("fx", "fy", "cx", "cy", "width", "height")
MAX_CAMERA_BYTES = 1 << 20
_CAMERA_HINT = (
    "expected a JSON object with numbers fx, fy, cx, cy (px) and integers width, height "
    '(or {"intrinsics": {...}}); fix or remove the file'
)


def parse_camera_json(source: str, data: bytes) -> Intrinsics:
    """Intrinsics from a camera file's bytes (``{fx, fy, cx, cy, width, height}`` or ``{"intrinsics": {...}}``).

    Raises CameraFileError naming ``source`` and the bad field; the file's content is never put in the message.
    """
    where = f"camera file {source}"
    problem = None
    d: Any = None
    try:
        d = json.loads(data)
    except json.JSONDecodeError as e:
        problem = f"not valid JSON (line {e.lineno}, column {e.colno})"
    except (UnicodeDecodeError, ValueError):
        problem = "not valid JSON (not UTF-8 text)"
    if problem is not None:  # raised outside the except block: the decoder's error holds the whole document
        raise CameraFileError(f"{where}: {problem}; {_CAMERA_HINT}")
    if isinstance(d, dict) and isinstance(d.get("intrinsics"), dict):
        d = d["intrinsics"]
    if not isinstance(d, dict):
        raise CameraFileError(f"{where}: holds a JSON {type(d).__name__}, not an object; {_CAMERA_HINT}")
    missing = [k for k in CAMERA_FIELDS if k not in d]
    if missing:
        raise CameraFileError(f"{where}: missing field {', '.join(repr(k) for k in missing)}; {_CAMERA_HINT}")
    values: dict[str, float] = {}
    for k in CAMERA_FIELDS:
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise CameraFileError(f"{where}: field {k!r} is not a finite number; {_CAMERA_HINT}")
        values[k] = float(v)
    for k in ("fx", "fy"):
        if values[k] <= 0:
            raise CameraFileError(f"{where}: field {k!r} must be > 0 (a focal length in px); {_CAMERA_HINT}")
    for k in ("width", "height"):
        if values[k] < 1 or values[k] != int(values[k]):
            raise CameraFileError(f"{where}: field {k!r} must be a positive integer (px); {_CAMERA_HINT}")
    return Intrinsics(
        values["fx"], values["fy"], values["cx"], values["cy"], int(values["width"]), int(values["height"])
    )


def read_camera_file(uri: str, storage_options: dict[str, Any] | None = None) -> Intrinsics:
    """The intrinsics in camera file ``uri``; FileNotFoundError if there is none, CameraFileError if it is unusable.

    Transient read errors are retried, then raised as they are (the orchestration layer may retry the stage).
    """

    def read() -> bytes:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            return f.read(MAX_CAMERA_BYTES + 1)

    try:
        data = retry_transient(read, f"read camera file {uri}")
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as e:
        if is_transient(e):
            raise
        raise CameraFileError(
            f"camera file {uri}: cannot be read ({type(e).__name__}); check the path"
        ) from None
    if len(data) > MAX_CAMERA_BYTES:
        raise CameraFileError(f"camera file {uri}: larger than {MAX_CAMERA_BYTES} bytes; {_CAMERA_HINT}")
    return parse_camera_json(uri, data)


@dataclass(frozen=True)
class VideoSpec:
    """One video of a cohort and what its manifest row says about it."""

    uri: str
    intrinsics: Intrinsics | None = None
    subject_id: str | None = None
    error: str | None = None  # why this video cannot run (a bad camera file); it fails alone at probe

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "intrinsics": self.intrinsics.to_dict() if self.intrinsics else None,
            "subject_id": self.subject_id,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoSpec:
        intr = d.get("intrinsics")
        return cls(
            d["uri"], Intrinsics.from_dict(intr) if intr else None, d.get("subject_id"), d.get("error")
        )


def _join(base: str, rel: str) -> str:
    if "://" in rel or rel.startswith("/"):
        return rel
    if "://" in base:
        scheme, path = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(path, rel))}"
    return posixpath.normpath(posixpath.join(base, rel))


def _parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> list[VideoSpec]:
    """Rows of a cohort manifest (CSV or Parquet) as VideoSpecs; rows flagged ``corrupt`` are kept (they fail alone)."""

    def read() -> bytes:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            return f.read()

    try:
        data = retry_transient(read, f"read cohort manifest {uri}")
    except FileNotFoundError:
        raise DiscoveryError(f"cohort manifest {uri}: no such file") from None
    try:
        table = (
            pq.read_table(io.BytesIO(data)) if uri.endswith(".parquet") else pacsv.read_csv(io.BytesIO(data))
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise DiscoveryError(f"cohort manifest {uri}: not a readable CSV/Parquet table ({e})") from e
    if "video" not in table.column_names:
        raise DiscoveryError(f"cohort manifest {uri}: needs a 'video' column (has {table.column_names})")
    base = _parent(uri)
    specs = []
    for row in table.to_pylist():
        video = _join(base, str(row["video"]))
        intr = None
        error = None
        if row.get("camera"):
            cam_uri = _join(base, str(row["camera"]))
            try:
                intr = read_camera_file(cam_uri, storage_options)
            except FileNotFoundError:
                error = f"camera file {cam_uri}: no such file (manifest {uri}, column 'camera')"
            except IsADirectoryError:
                error = (
                    f"camera file {cam_uri}: is a folder, not a JSON file (manifest {uri}, column 'camera')"
                )
            except CameraFileError as e:
                error = f"{e} (manifest {uri}, column 'camera')"
        elif all(row.get(k) is not None for k in ("fx", "fy", "cx", "cy", "width", "height")):
            try:
                intr = Intrinsics(
                    *(float(row[k]) for k in ("fx", "fy", "cx", "cy")), int(row["width"]), int(row["height"])
                )
            except (TypeError, ValueError):
                error = f"cohort manifest {uri}: the fx, fy, cx, cy, width, height of {video} are not valid intrinsics"
        if error is not None:
            logger.warning("%s: %s; this video will fail, the others go on", video, error)
        subject = row.get("subject_id")
        specs.append(VideoSpec(video, intr, None if subject is None else str(subject), error))
    return specs


def list_prefix(
    prefix: str, glob: str = "**/*.mp4", storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Video URIs under a folder / s3:// prefix matching the glob, sorted."""
    fs, root = fsspec.core.url_to_fs(prefix, **(storage_options or {}))
    root = root.rstrip("/")

    def find() -> list[str]:
        try:
            paths = fs.glob(f"{root}/{glob}")
        except FileNotFoundError:
            return []
        return [p for p in paths if not fs.isdir(p)]

    scheme = prefix.split("://", 1)[0] + "://" if "://" in prefix and not prefix.startswith("file://") else ""
    uris = sorted(scheme + p for p in retry_transient(find, f"list {prefix}"))
    if not uris:
        raise DiscoveryError(f"no videos match {glob!r} under {prefix}")
    return uris


def discover(
    videos: list[str] | None = None,
    manifest: str | None = None,
    prefix: str | None = None,
    glob: str = "**/*.mp4",
    storage_options: dict[str, Any] | None = None,
) -> list[VideoSpec]:
    """All videos named by any of the sources, de-duplicated by URI (first mention wins), in a stable order."""
    specs: list[VideoSpec] = [VideoSpec(v) for v in videos or []]
    if manifest:
        specs += read_manifest(manifest, storage_options)
    if prefix:
        specs += [VideoSpec(u) for u in list_prefix(prefix, glob, storage_options)]
    if not specs:
        raise DiscoveryError("no videos given: pass video URIs, a manifest, or a prefix")
    seen: dict[str, VideoSpec] = {}
    for s in specs:
        seen.setdefault(s.uri, s)
    return list(seen.values())
