"""Find the videos of a cohort: explicit URIs, a manifest (CSV or Parquet), or a storage prefix with a glob.

A manifest has one row per video with a ``video`` column (URI or path relative to the manifest) and optional
per-video data: ``camera`` (a camera JSON sidecar, relative like ``video``) or ``fx, fy, cx, cy`` columns (with the
video's ``width, height``), and ``subject_id``. Pure: fsspec only.
"""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mocapflow.camera import Intrinsics

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")


class DiscoveryError(ValueError):
    """The cohort source cannot be read; the message names it and what to fix."""


@dataclass(frozen=True)
class VideoSpec:
    """One video of a cohort and what its manifest row says about it."""

    uri: str
    intrinsics: Intrinsics | None = None
    subject_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "intrinsics": self.intrinsics.to_dict() if self.intrinsics else None,
            "subject_id": self.subject_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoSpec:
        intr = d.get("intrinsics")
        return cls(d["uri"], Intrinsics.from_dict(intr) if intr else None, d.get("subject_id"))


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
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            data = f.read()
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
        if row.get("camera"):
            cam_uri = _join(base, str(row["camera"]))
            try:
                with fsspec.open(cam_uri, "rb", **(storage_options or {})) as f:
                    intr = Intrinsics.from_json(f.read())
            except (OSError, ValueError) as e:
                raise DiscoveryError(f"cohort manifest {uri}: camera {cam_uri} for {video}: {e}") from e
        elif all(row.get(k) is not None for k in ("fx", "fy", "cx", "cy", "width", "height")):
            intr = Intrinsics(
                *(float(row[k]) for k in ("fx", "fy", "cx", "cy")), int(row["width"]), int(row["height"])
            )
        subject = row.get("subject_id")
        specs.append(VideoSpec(video, intr, None if subject is None else str(subject)))
    return specs


def list_prefix(
    prefix: str, glob: str = "**/*.mp4", storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Video URIs under a folder / s3:// prefix matching the glob, sorted."""
    fs, root = fsspec.core.url_to_fs(prefix, **(storage_options or {}))
    root = root.rstrip("/")
    try:
        paths = fs.glob(f"{root}/{glob}")
    except FileNotFoundError:
        paths = []
    scheme = prefix.split("://", 1)[0] + "://" if "://" in prefix and not prefix.startswith("file://") else ""
    uris = sorted(scheme + p for p in paths if not fs.isdir(p))
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
