"""Model-set manifests: a folder (or object-store prefix) with ``manifest.json`` and the files it lists.

The model-set id is a content hash of the manifest, whose file entries carry content hashes; it goes into every
cache key, so changing any weight file changes every downstream key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA = "mocapflow.modelset/1"
MANIFEST = "manifest.json"
KINDS = ("markers", "blazepose", "metrabs")


class ModelSetError(ValueError):
    """A model set is missing, incomplete or does not match its manifest."""


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder: its files' relative paths and contents in sorted order."""
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if not path.is_dir():
        raise ModelSetError(f"{path}: no such file or folder")
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_path(p).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ModelSetManifest:
    name: str
    kind: str
    version: str
    joint_names: list[str]
    joint_edges: list[list[int]]
    input_resolution: list[int]
    files: dict[str, dict[str, str]]
    has_3d: bool = True
    camera: dict[str, Any] = field(default_factory=lambda: {"default_fov_deg": 55.0})
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelSetError(
                f"model set {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}"
            )
        if self.schema != SCHEMA:
            raise ModelSetError(f"model set {self.name!r}: unsupported manifest schema {self.schema!r}")
        n = len(self.joint_names)
        for e in self.joint_edges:
            if len(e) != 2 or not all(0 <= i < n for i in e):
                raise ModelSetError(f"model set {self.name!r}: joint edge {e} out of range for {n} joints")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """Content id: 16 hex chars of sha256 over the canonical manifest JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSetManifest:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ModelSetError(f"manifest has unknown fields {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ModelSetError(f"manifest is incomplete: {e}") from e


def write_manifest(folder: Path, **fields: Any) -> ModelSetManifest:
    """Hash the files named in ``fields['files']`` (``{role: {"path": rel}}``) and write ``manifest.json``."""
    files = {
        role: {"path": entry["path"], "sha256": sha256_path(folder / entry["path"])}
        for role, entry in fields.pop("files").items()
    }
    manifest = ModelSetManifest(files=files, **fields)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
    os.replace(tmp, folder / MANIFEST)
    return manifest


@dataclass(frozen=True)
class ModelSet:
    """A model set present on local disk."""

    root: Path
    manifest: ModelSetManifest

    @property
    def id(self) -> str:
        return self.manifest.id

    def path(self, role: str) -> Path:
        try:
            return self.root / self.manifest.files[role]["path"]
        except KeyError:
            raise ModelSetError(
                f"model set {self.manifest.name!r} ({self.root}) has no {role!r} file; "
                f"it lists {sorted(self.manifest.files)}"
            ) from None


def read_local(folder: Path, verify: bool = True) -> ModelSet:
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise ModelSetError(
            f"{folder}: no {MANIFEST}; build it (`mocapflow models build NAME`) or point to one"
        )
    try:
        manifest = ModelSetManifest.from_dict(json.loads(mpath.read_text()))
    except json.JSONDecodeError as e:
        raise ModelSetError(f"{mpath}: not valid JSON ({e})") from e
    if verify:
        for role, entry in manifest.files.items():
            got = sha256_path(folder / entry["path"])
            if got != entry["sha256"]:
                raise ModelSetError(
                    f"{folder}: file {entry['path']!r} ({role}) does not match its manifest hash; rebuild the model set"
                )
    return ModelSet(folder, manifest)


def resolve(
    spec: str, modelsets_dir: Path, cache_dir: Path, storage_options: dict[str, Any] | None = None
) -> ModelSet:
    """Find a model set by built-in name (under ``modelsets_dir``), local folder, or remote prefix (cached locally).

    Remote sets are copied to ``cache_dir/remote/<manifest id>`` once; the copy is verified against the manifest.
    """
    if "://" in spec and not spec.startswith("file://"):
        return _fetch_remote(spec, cache_dir, storage_options or {})
    path = Path(spec.removeprefix("file://"))
    if path.is_dir():
        return read_local(path)
    if "/" not in spec and (modelsets_dir / spec).is_dir():
        return read_local(modelsets_dir / spec)
    raise ModelSetError(
        f"model set {spec!r} not found (looked in {modelsets_dir}); "
        f"build it with `mocapflow models build {spec}` or give a folder / s3:// prefix with a {MANIFEST}"
    )


def _fetch_remote(uri: str, cache_dir: Path, storage_options: dict[str, Any]) -> ModelSet:
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri, **storage_options)
    root = root.rstrip("/")
    try:
        manifest = ModelSetManifest.from_dict(json.loads(fs.cat_file(f"{root}/{MANIFEST}")))
    except FileNotFoundError:
        raise ModelSetError(f"{uri}: no {MANIFEST} there") from None
    dest = cache_dir / "remote" / manifest.id
    if (dest / MANIFEST).is_file():
        return read_local(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".partial-"))
    try:
        logger.info("fetching model set %s (%s) into %s", manifest.name, manifest.id, dest)
        for entry in manifest.files.values():
            src = f"{root}/{entry['path']}"
            target = staging / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if fs.isdir(src):
                fs.get(src + "/", str(target), recursive=True)
            else:
                fs.get(src, str(target))
        (staging / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
        ms = read_local(staging)  # verifies hashes before the copy becomes visible
        os.replace(staging, dest)
        return ModelSet(dest, ms.manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
