"""One small interface for every object mocapflow writes: blobs, JSON and Parquet tables by key.

A local folder (plain path or ``file://``) and an object store (``s3://`` through s3fs) differ only in the fsspec
filesystem. Every object is written in one put from a finished in-memory buffer; on a local folder the put is a
temp file in the same folder followed by ``os.replace``, so readers never see half an object. Keys are relative,
``/``-separated and derived from content (:func:`keypoints_key`, :func:`fit_prefix`); user-derived parts go through
:func:`safe_key`. Each read, write, check and listing is retried on its own while the error is transient
(:func:`mocapflow.errors.retry_transient`, a few seconds: an object store that blinks does not cost a stage);
what still fails raises :class:`StoreError` (``transient`` says whether a later retry of the stage may help) or
:class:`KeyNotFoundError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mocapflow.errors import DEFAULT_RETRY, RetryPolicy, is_transient, retry_transient

if TYPE_CHECKING:
    from mocapflow.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

SUCCESS = "_SUCCESS.json"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MODEL_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class StoreError(OSError):
    """An object-store operation failed; the message names the operation and the object.

    ``transient`` is True when a retry may succeed (network, throttling, server errors) and False for errors a retry
    cannot fix (missing object, permission denied, invalid key).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __str__(self) -> str:  # OSError.__str__ would prepend errno fields
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``transient`` across processes (Ray pickles exceptions)
        return (_rebuild_error, (type(self), str(self), self.transient))


class KeyNotFoundError(StoreError, FileNotFoundError):
    """The key does not exist in the store."""


def _rebuild_error(cls: type[StoreError], message: str, transient: bool) -> StoreError:
    return cls(message, transient=transient)


@dataclass(frozen=True)
class WriteReport:
    """What one write produced (STYLE.md #7)."""

    uri: str
    rows: int | None
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "rows": self.rows, "bytes": self.bytes, "seconds": self.seconds}


# -- keys ---------------------------------------------------------------------------------------------------


def _sanitise_segment(segment: str) -> str:
    return "".join("_" if (c == "\\" or unicodedata.category(c) == "Cc") else c for c in segment)


def safe_key(*parts: str | int) -> str:
    """Join key parts with ``/``, making user-derived strings safe as object keys.

    Each part may hold ``/``-separated segments. Backslashes and control characters become ``_``. A part that is
    empty, absolute (starts with ``/``), has an empty segment (``a//b``, trailing ``/``) or a ``.``/``..`` segment
    raises ValueError: such input is never silently reinterpreted as another location.
    Example: ``safe_key("runs", "a\\\\b\\tc")`` -> ``"runs/a_b_c"``.
    """
    if not parts:
        raise ValueError("safe_key needs at least one key part")
    out: list[str] = []
    for raw in parts:
        part = _sanitise_segment(str(raw))
        if part == "":
            raise ValueError(f"key part {raw!r} is empty; every part of a storage key needs a name")
        if part.startswith("/"):
            raise ValueError(
                f"key part {raw!r} is an absolute path; storage keys are relative to the store root"
            )
        for seg in part.split("/"):
            if seg == "":
                raise ValueError(f"key part {raw!r} has an empty path segment ('//' or a trailing '/')")
            if seg in (".", ".."):
                raise ValueError(
                    f"key part {raw!r} contains a {seg!r} segment; keys may not leave their folder"
                )
        out.append(part)
    return "/".join(out)


def check_key(key: str) -> str:
    """Return ``key`` if it is already a safe relative key, else raise ValueError saying why."""
    if not isinstance(key, str):
        raise ValueError(f"storage key must be a str, got {type(key).__name__}")
    cleaned = safe_key(key)
    if cleaned != key:
        raise ValueError(
            f"storage key {key!r} contains backslashes or control characters; build it with safe_key()"
        )
    return key


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(
        f"{type(obj).__name__} is not JSON serialisable; pass plain numbers, strings, lists and dicts"
    )


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces and no NaN: the same value always gives the same text.

    Note ``1`` and ``1.0`` are different values here (``"1"`` vs ``"1.0"``); tuples are lists.
    """
    try:
        return json.dumps(
            obj,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_json_default,
        )
    except ValueError as e:
        raise ValueError(f"parameters cannot be hashed: {e} (NaN/inf have no canonical JSON form)") from e


def params_hash(params: dict[str, Any]) -> str:
    """16 hex chars of sha256 over :func:`canonical_json` of ``params``."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()[:16]


def _check_content_ids(video_sha256: str, model_id: str) -> tuple[str, str]:
    sha = video_sha256.lower() if isinstance(video_sha256, str) else video_sha256
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise ValueError(
            f"video_sha256 {video_sha256!r} is not a sha256 hex digest (64 hex chars); use probe()"
        )
    if not isinstance(model_id, str) or not _MODEL_ID_RE.match(model_id):
        raise ValueError(f"model_id {model_id!r} is not a model-set id (16 lowercase hex chars, ModelSet.id)")
    return sha, model_id


def keypoints_key(video_sha256: str, model_id: str, params: dict[str, Any]) -> str:
    """``keypoints/model=<model_id>/video=<sha256>/params=<params_hash>/keypoints.parquet``."""
    sha, mid = _check_content_ids(video_sha256, model_id)
    return f"keypoints/model={mid}/video={sha}/params={params_hash(params)}/keypoints.parquet"


def keypoints_prefix(video_sha256: str, model_id: str, params: dict[str, Any]) -> str:
    """The folder of :func:`keypoints_key` (where its ``_SUCCESS.json`` goes)."""
    return keypoints_key(video_sha256, model_id, params).rsplit("/", 1)[0]


FIT_FOLDERS = {  # a fit's output file -> the folder under fits/ that holds every fit's file of that kind
    "angles.parquet": "angles",
    "residuals.parquet": "residuals",
    "scales.json": "scales",
    "angles.mot": "mot",
    "angles.png": "plots",
    "subject.osim": "osim",
    "markers.trc": "trc",
    "qc.mp4": "qc",
}
_FIT_COMMIT_FOLDER = "fits/angles/"


def fit_prefix(video_sha256: str, model_id: str, fit_params: dict[str, Any]) -> str:
    """``fits/angles/model=<model_id>/video=<sha256>/fit=<fit_hash>``: the fit's commit prefix.

    Each kind of output has its own folder so that it reads as one dataset (``fits/angles/``, ``fits/residuals/``,
    ``fits/mot/``, ...): :func:`fit_key` gives an output's key. The commit marker goes beside ``angles.parquet``.
    (Fits before version 3 of the outputs lived together under ``fits/model=<id>/video=<sha256>/fit=<hash>/``.)
    """
    sha, mid = _check_content_ids(video_sha256, model_id)
    return f"{_FIT_COMMIT_FOLDER}model={mid}/video={sha}/fit={params_hash(fit_params)}"


def fit_key(prefix: str, name: str) -> str:
    """The key of output ``name`` (a key of :data:`FIT_FOLDERS`) of the fit committed at ``prefix``.

    Example: ``fit_key("fits/angles/model=m/video=v/fit=f", "angles.mot")`` -> ``"fits/mot/model=m/video=v/fit=f/angles.mot"``.
    """
    if not prefix.startswith(_FIT_COMMIT_FOLDER):
        raise ValueError(f"{prefix!r} is not a fit prefix (fits/angles/model=.../video=.../fit=...)")
    if name not in FIT_FOLDERS:
        raise ValueError(f"{name!r} is not a fit output; known: {', '.join(FIT_FOLDERS)}")
    return check_key(f"fits/{FIT_FOLDERS[name]}/{prefix.removeprefix(_FIT_COMMIT_FOLDER)}/{name}")


def run_prefix(run_id: str) -> str:
    """``runs/<run_id>`` with ``run_id`` made safe by :func:`safe_key` (one segment: ``/`` is not allowed)."""
    if "/" in str(run_id):
        raise ValueError(f"run id {run_id!r} may not contain '/'")
    return safe_key("runs", run_id)


# -- the store ----------------------------------------------------------------------------------------------


def _is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


class Store:
    """Blobs, JSON and Parquet tables by key under ``root`` (a folder, ``file://`` or ``s3://bucket/prefix``).

    ``storage_options`` go to fsspec (s3fs: key, secret, endpoint_url, client_kwargs); they are never logged or shown
    in ``repr``. The filesystem is created on first use, so a Store is cheap to build and to pickle.
    """

    def __init__(
        self, root: str, storage_options: dict[str, Any] | None = None, retry: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        if not isinstance(root, str) or not root.strip():
            raise ValueError(f"storage root {root!r} is empty; give a folder or an s3://bucket/prefix URI")
        self._local = _is_local(root)
        if self._local:
            path = root.removeprefix("file://")
            self.root = os.path.abspath(os.path.expanduser(path))
            self._base = self.root
        else:
            self.root = root.rstrip("/")
            self._base = self.root.split("://", 1)[1]
            if not self._base:
                raise ValueError(
                    f"storage root {root!r} names no bucket; use s3://bucket or s3://bucket/prefix"
                )
        self._options = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None
        self._retry = retry

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store of ``settings.storage_root`` with ``settings.storage_options()``."""
        return cls(settings.storage_root, settings.storage_options())

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        return state

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (paths on it are ``self.path(key)``)."""
        if self._fs is None:
            if self._local:
                self._fs = fsspec.filesystem("file")
            else:
                self._fs, _ = fsspec.core.url_to_fs(self.root, **self._options)
        return self._fs

    @property
    def is_local(self) -> bool:
        return self._local

    def path(self, key: str) -> str:
        """The filesystem path of ``key`` (no protocol), for use with :attr:`fs`."""
        check_key(key)
        return f"{self._base}/{key}"

    def uri(self, key: str) -> str:
        """Where ``key`` lives: an absolute local path for local roots, ``s3://bucket/prefix/key`` otherwise."""
        check_key(key)
        return f"{self.root}/{key}"

    # -- bytes --------------------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes | bytearray | memoryview) -> WriteReport:
        """Write ``data`` to ``key`` in one put (atomic replace on a local folder)."""
        t0 = time.perf_counter()
        path = self.path(key)
        data = bytes(data) if not isinstance(data, bytes) else data

        def put() -> None:
            if self._local:
                _atomic_write_local(path, data)
            else:
                self.fs.pipe_file(path, data)

        try:
            self._retried(put, "write", key)
        except Exception as e:
            raise self._error("write", key, e) from e
        report = WriteReport(self.uri(key), None, len(data), time.perf_counter() - t0)
        logger.debug("wrote %s (%d bytes)", report.uri, report.bytes)
        return report

    def get_bytes(self, key: str) -> bytes:
        """The bytes at ``key``; KeyNotFoundError if there is none."""
        path = self.path(key)
        try:
            return self._retried(lambda: self.fs.cat_file(path), "read", key)
        except Exception as e:
            raise self._error("read", key, e) from e

    def exists(self, key: str) -> bool:
        """True if an object (or, for a prefix, any object below it) exists at ``key``."""
        path = self.path(key)

        def check() -> bool:
            self.fs.invalidate_cache(path)
            return bool(self.fs.exists(path))

        try:
            return self._retried(check, "check", key)
        except Exception as e:
            raise self._error("check", key, e) from e

    def list(self, prefix: str = "") -> list[str]:
        """Keys of all objects below ``prefix`` (recursive, sorted); hidden temp files (``.name``) are skipped."""
        base = self._base if prefix == "" else self.path(prefix.rstrip("/"))

        def find() -> list[str]:
            self.fs.invalidate_cache(base)
            return list(self.fs.find(base))

        try:
            found = self._retried(find, "list", prefix or "<root>")
        except FileNotFoundError:
            return []
        except Exception as e:
            raise self._error("list", prefix or "<root>", e) from e
        n = len(self._base) + 1
        keys = []
        for p in found:
            p = p.split("://", 1)[1] if "://" in p else p
            if self._local:
                p = Path(p).as_posix()
            rel = p[n:]
            if rel and not any(seg.startswith(".") for seg in rel.split("/")):
                keys.append(rel)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Remove one object (no error if it is already gone)."""
        path = self.path(key)
        try:
            self._retried(lambda: self.fs.rm_file(path), "delete", key)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise self._error("delete", key, e) from e

    # -- conditional writes (leases) -----------------------------------------------------------------------
    #
    # Small objects that several runs race for (mocapflow.leases) are written with a condition: create only if no
    # object is there, replace or delete only if the object is still the version read. On S3 these are conditional
    # requests (PutObject with ``If-None-Match: *`` / ``If-Match: <ETag>``, DeleteObject with ``If-Match``), which
    # S3 and moto evaluate atomically; on a local folder a hard link (create) and an exclusive ``flock`` on a
    # hidden lock file (replace, delete) do the same between processes of one machine. A version ``tag`` is the
    # ETag on S3 and the sha256 of the content locally.

    def create_bytes(self, key: str, data: bytes) -> str | None:
        """Write ``data`` to ``key`` only if no object is there; its version tag, or None if one was there."""
        path = self.path(key)

        def put() -> str | None:
            if self._local:
                return _create_local(path, data)
            out = self._s3_conditional(path, "put_object", Body=data, IfNoneMatch="*")
            return None if out is None else str(out["ETag"])

        try:
            return self._retried(put, "create", key)
        except Exception as e:
            raise self._error("write", key, e) from e

    def get_bytes_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The bytes at ``key`` and their version tag, or None if there is no object."""
        path = self.path(key)

        def get() -> tuple[bytes, str] | None:
            try:
                if self._local:
                    with open(path, "rb") as f:
                        data = f.read()
                    return data, hashlib.sha256(data).hexdigest()
                # the tag first: if the object changes between the two calls, a write conditional on this tag fails
                self.fs.invalidate_cache(path)
                tag = str(self.fs.info(path)["ETag"])
                return self.fs.cat_file(path), tag
            except FileNotFoundError:
                return None

        try:
            return self._retried(get, "read", key)
        except Exception as e:
            raise self._error("read", key, e) from e

    def replace_bytes(self, key: str, data: bytes, tag: str) -> str | None:
        """Replace the object at ``key`` only if it is still version ``tag``; the new tag, or None if it changed."""
        path = self.path(key)

        def write_local() -> str:
            _atomic_write_local(path, data)
            return hashlib.sha256(data).hexdigest()

        def put() -> str | None:
            if self._local:
                return _if_local_tag(path, tag, write_local)
            out = self._s3_conditional(path, "put_object", Body=data, IfMatch=tag)
            return None if out is None else str(out["ETag"])

        try:
            return self._retried(put, "replace", key)
        except Exception as e:
            raise self._error("write", key, e) from e

    def delete_if(self, key: str, tag: str) -> bool:
        """Delete the object at ``key`` only if it is still version ``tag``; False if it changed or is gone."""
        path = self.path(key)

        def rm() -> bool:
            if self._local:
                return _if_local_tag(path, tag, lambda: os.unlink(path) or True) is not None
            return self._s3_conditional(path, "delete_object", IfMatch=tag) is not None

        try:
            return self._retried(rm, "delete", key)
        except Exception as e:
            raise self._error("delete", key, e) from e

    def _s3_conditional(self, path: str, method: str, **kwargs: Any) -> dict[str, Any] | None:
        """S3 ``method`` on ``path`` with a condition (``IfNoneMatch`` / ``IfMatch``): its response, or None if the
        condition failed (with ``IfMatch``, also if the object is gone: it is not the version read)."""
        bucket, obj, _ = self.fs.split_path(path)
        try:
            return dict(self.fs.call_s3(method, Bucket=bucket, Key=obj, **kwargs))
        except FileNotFoundError:
            if "IfMatch" in kwargs:
                return None
            raise
        except OSError as e:
            if _precondition_failed(e):
                return None
            raise
        finally:
            self.fs.invalidate_cache(path)

    # -- tables and JSON ----------------------------------------------------------------------------------

    def write_table(self, key: str, table: pa.Table, compression: str = "zstd") -> WriteReport:
        """Serialise ``table`` to Parquet in memory, then write it in one put (schema metadata is kept)."""
        t0 = time.perf_counter()
        check_key(key)
        sink = pa.BufferOutputStream()
        try:
            pq.write_table(table, sink, compression=compression)
        except Exception as e:
            raise ValueError(f"cannot serialise the table for {self.uri(key)} to Parquet: {e}") from e
        buf = sink.getvalue()
        put = self.put_bytes(key, buf.to_pybytes())
        report = WriteReport(put.uri, table.num_rows, put.bytes, time.perf_counter() - t0)
        logger.info(
            "wrote %s (%d rows, %d bytes, %.3f s)", report.uri, report.rows, report.bytes, report.seconds
        )
        return report

    def read_table(self, key: str) -> pa.Table:
        """The Parquet table at ``key`` (with its schema metadata)."""
        data = self.get_bytes(key)
        try:
            return pq.read_table(pa.BufferReader(data))
        except Exception as e:
            raise StoreError(f"{self.uri(key)} is not a readable Parquet file ({e}); rewrite it") from e

    def put_json(self, key: str, obj: Any) -> WriteReport:
        """Write ``obj`` as indented, key-sorted JSON (NaN is refused)."""
        t0 = time.perf_counter()
        try:
            text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot write {key!r} as JSON: {e}") from e
        put = self.put_bytes(key, text.encode("utf-8"))
        return WriteReport(put.uri, None, put.bytes, time.perf_counter() - t0)

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as e:
            raise StoreError(f"{self.uri(key)} is not valid JSON ({e})") from e

    # -- commit markers -----------------------------------------------------------------------------------

    def commit(self, prefix: str, info: dict[str, Any], marker: str = SUCCESS) -> WriteReport:
        """Write ``<prefix>/<marker>`` (``_SUCCESS.json``) with ``info``; call it after the data is written."""
        report = self.put_json(f"{check_key(prefix)}/{marker}", info)
        logger.info("committed %s", report.uri)
        return report

    def is_committed(self, prefix: str, marker: str = SUCCESS) -> bool:
        """True if ``<prefix>/<marker>`` exists: only then may readers trust the data below ``prefix``."""
        return self.exists(f"{check_key(prefix)}/{marker}")

    # -- helpers ------------------------------------------------------------------------------------------

    def _retried(self, fn: Any, op: str, key: str) -> Any:
        return retry_transient(fn, f"{op} {self.root}/{key}", self._retry)

    def _error(self, op: str, key: str, e: BaseException) -> StoreError:
        uri = f"{self.root}/{key}"
        if isinstance(e, StoreError):
            return e
        if isinstance(e, FileNotFoundError) and op == "write":
            return StoreError(
                f"cannot write {uri}: its bucket or parent folder does not exist ({e}); create it or fix storage_root"
            )
        if isinstance(e, FileNotFoundError):
            return KeyNotFoundError(f"{uri}: no such object ({op} failed); was the stage that writes it run?")
        if isinstance(e, PermissionError):
            return StoreError(f"cannot {op} {uri}: permission denied ({e}); check the storage credentials")
        transient = is_transient(e)
        hint = "a retry may succeed" if transient else "check the storage root and settings"
        return StoreError(f"cannot {op} {uri}: {type(e).__name__}: {e} ({hint})", transient=transient)


def _precondition_failed(e: BaseException) -> bool:
    """An S3 conditional request was refused: 412 PreconditionFailed, or 409 ConditionalRequestConflict (another
    conditional write of the same key was in progress; it won)."""
    if isinstance(e, FileExistsError):
        return True
    seen: BaseException | None = e
    for _ in range(5):
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            err = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if err.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                return True
        seen = seen.__cause__ or seen.__context__
    text = str(e)
    return (
        "PreconditionFailed" in text or "Precondition Failed" in text or "ConditionalRequestConflict" in text
    )


def _local_tag(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _local_lock(path: str) -> Iterator[None]:
    """An exclusive flock on ``.<name>.lock`` beside ``path`` (hidden: never listed), for one read-check-write."""
    import fcntl

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, "." + os.path.basename(path) + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _if_local_tag(path: str, tag: str, action: Callable[[], T]) -> T | None:
    """``action()`` under the file's lock if ``path`` is still version ``tag`` (else None: it changed or is gone)."""
    with _local_lock(path):
        return action() if _local_tag(path) == tag else None


def _create_local(path: str, data: bytes) -> str | None:
    """Write a complete temp file, then hard-link it to ``path``: atomic, and it fails if ``path`` exists."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        return hashlib.sha256(data).hexdigest()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _atomic_write_local(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
