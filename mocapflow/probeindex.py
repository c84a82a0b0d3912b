"""The probe index: a video whose size and version tag are unchanged is not downloaded and hashed again.

Every run probes every video (size, fps, frames and the sha256 that keys all its outputs); for an s3:// video that is
a full download. The index keeps each probe's result in the store under a key derived from what the storage reports
without reading the content: the URI, the size and the object's version tag (S3's ``ETag``, else a local file's
``mtime`` in ns and inode). A rerun asks the storage for those (one HEAD / ``stat``), finds the entry and reuses the
probe; a video that was replaced (other size, tag or mtime) gets a new key and is probed again. Where the storage
reports no tag at all, nothing is indexed (the video is always probed).

Keys: ``index/probe/<16 hex of sha256(uri, size, tag, version)>.json``, written in one put like every object.
Pure: fsspec and the store; no Prefect or Ray.
"""

from __future__ import annotations

import logging
from typing import Any

import fsspec

from mocapflow.errors import retry_transient
from mocapflow.store import KeyNotFoundError, Store, params_hash
from mocapflow.video import VideoInfo, probe

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
INDEX_PREFIX = "index/probe"


def fingerprint(uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What the storage says about ``uri`` without reading it: size and a version tag; None if it gives no tag."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    # fsspec reuses filesystem instances and s3fs answers info() from its listings cache: a long-lived process
    # (``mocapflow serve``) would see a replaced video's old ETag. Ask the storage itself (one HEAD / stat).
    fs.invalidate_cache(path)
    info = retry_transient(lambda: fs.info(path), f"stat video {uri}")
    size = info.get("size")
    tag = info.get("ETag") or info.get("etag") or info.get("VersionId")
    if (
        tag is None and info.get("mtime") is not None
    ):  # a local file: replaced or rewritten => mtime/inode change
        mtime = info["mtime"]
        tag = f"mtime:{int(mtime * 1e9) if isinstance(mtime, float) else mtime}:ino:{info.get('ino')}"
    if size is None or tag is None:
        return None
    return {"size": int(size), "tag": str(tag)}


def index_key(uri: str, fp: dict[str, Any]) -> str:
    return f"{INDEX_PREFIX}/{params_hash({'uri': uri, **fp, 'v': INDEX_VERSION})}.json"


def probe_indexed(
    uri: str, store: Store, storage_options: dict[str, Any] | None = None
) -> tuple[VideoInfo, bool]:
    """``(info, from_index)``: the indexed probe of an unchanged video, else a fresh :func:`mocapflow.video.probe`
    (then indexed)."""
    fp = fingerprint(uri, storage_options)
    key = index_key(uri, fp) if fp is not None else None
    if key is not None:
        try:
            d = store.get_json(key)
            if d.get("uri") == uri and d.get("size_bytes") == fp["size"]:  # type: ignore[index]
                return VideoInfo(**d), True
        except KeyNotFoundError:
            pass
        except (ValueError, TypeError) as e:  # an unreadable entry is probed again and overwritten
            logger.warning("probe index entry %s for %s is unusable (%s); probing again", key, uri, e)
    info = probe(uri, storage_options)
    if key is not None:
        store.put_json(key, info.to_dict())
    return info, False
