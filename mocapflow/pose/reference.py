"""The reference pipeline (MediaPipe's own Pose solution, same BlazePose weights) in its own virtual environment.

``mediapipe==0.10.21`` pins protobuf<5, which TensorFlow cannot share, so it never goes into the project's
environment: :func:`ensure_reference_venv` creates ``<cache_dir>/reference-venv`` with ``python -m venv`` (the
same Python 3.11 as the project) and ``pip install``s :data:`REQUIREMENTS` (~1-2 min once on an idle machine, 5 on a loaded one; a marker file written
last makes it idempotent). :func:`run_reference` runs ``reference_worker.py`` (shipped beside this module) in a
subprocess pinned to the same CPUs as the caller and reads its ``.npz`` (no pickles) with :func:`read_reference`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

REQUIREMENTS: tuple[str, ...] = ("mediapipe==0.10.21", "numpy<2")
WORKER = Path(__file__).with_name("reference_worker.py")
N_LANDMARKS = 33
_MARKER = ".mocapflow-reference-ready"


class ReferenceError(RuntimeError):
    """The reference pipeline cannot be set up or run; the message says which step and what to do."""


@dataclass(frozen=True)
class ReferenceOptions:
    """MediaPipe Pose options; the defaults are the solution's (model_complexity 1 = the ``full`` landmark model
    that the project's ``blazepose`` set converts, landmark smoothing on, as MediaPipe documents for video)."""

    model_complexity: int = 1
    smooth_landmarks: bool = True
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    def args(self) -> list[str]:
        a = [
            "--model-complexity",
            str(self.model_complexity),
            "--min-detection-confidence",
            str(self.min_detection_confidence),
            "--min-tracking-confidence",
            str(self.min_tracking_confidence),
        ]
        return a if self.smooth_landmarks else [*a, "--no-smooth"]


@dataclass(frozen=True)
class ReferenceResult:
    """Per-frame landmarks of the reference: ``kp2d_px`` [F, 33, 2] (NaN where no pose was found),
    ``visibility``/``presence`` [F, 33] (0 there), ``found`` [F]; ``meta`` as the worker wrote it."""

    kp2d_px: NDArray[np.float32]
    visibility: NDArray[np.float32]
    presence: NDArray[np.float32]
    found: NDArray[np.bool_]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.found.shape[0])

    @property
    def frames_per_second(self) -> float | None:
        v = self.meta.get("frames_per_second")
        return float(v) if v is not None else None


def read_reference(path: Path) -> ReferenceResult:
    """Read and check a worker's ``.npz`` (loaded with ``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("kp2d_px", "visibility", "presence", "found", "meta")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ReferenceError(
            f"reference result {path} is unreadable or incomplete ({e}); rerun the reference"
        ) from e
    kp, vis, pres, found = arrays["kp2d_px"], arrays["visibility"], arrays["presence"], arrays["found"]
    n = found.shape[0] if found.ndim == 1 else -1
    if (
        found.dtype != np.bool_
        or kp.shape != (n, N_LANDMARKS, 2)
        or vis.shape != (n, N_LANDMARKS)
        or pres.shape != (n, N_LANDMARKS)
    ):
        raise ReferenceError(
            f"reference result {path} has shapes kp2d {kp.shape}, visibility {vis.shape}, presence {pres.shape}, "
            f"found {found.shape} {found.dtype}; expected [F, 33, 2], [F, 33], [F, 33], bool [F]"
        )
    if np.isnan(kp[found]).any() or not np.isnan(kp[~found]).all():
        raise ReferenceError(f"reference result {path}: landmarks must be finite exactly on the found frames")
    meta = json.loads(str(arrays["meta"]))
    if not isinstance(meta, dict) or meta.get("frames") != n:
        raise ReferenceError(f"reference result {path}: its meta does not describe {n} frames")
    return ReferenceResult(
        kp.astype(np.float32), vis.astype(np.float32), pres.astype(np.float32), found.astype(bool), meta
    )


# -- the virtual environment ---------------------------------------------------------------------------------


def venv_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "reference-venv"


def venv_python(cache_dir: Path) -> Path:
    return venv_dir(cache_dir) / "bin" / "python"


def _marker_text(requirements: tuple[str, ...]) -> str:
    return json.dumps({"requirements": list(requirements), "python": sys.version.split()[0]}, sort_keys=True)


def reference_ready(cache_dir: Path, requirements: tuple[str, ...] = REQUIREMENTS) -> bool:
    marker = venv_dir(cache_dir) / _MARKER
    return (
        marker.is_file()
        and marker.read_text() == _marker_text(requirements)
        and venv_python(cache_dir).exists()
    )


def _check(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ReferenceError(
            f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-600:]}; "
            "check that the package index is reachable and retry `mocapflow realdata`"
        )


def ensure_reference_venv(
    cache_dir: Path, requirements: tuple[str, ...] = REQUIREMENTS, python: str | None = None
) -> Path:
    """Create (once) the reference venv under ``<cache_dir>/reference-venv``; return its python.

    Uses this interpreter's base Python (3.11) for ``python -m venv``; a half-made venv (no marker) is rebuilt.
    """
    if reference_ready(cache_dir, requirements):
        return venv_python(cache_dir)
    root = venv_dir(cache_dir)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    base = python or getattr(sys, "_base_executable", None) or sys.executable
    logger.info("creating the reference venv at %s (%s); a few minutes", root, ", ".join(requirements))
    _check([base, "-m", "venv", str(root)], f"python -m venv {root}")
    py = str(venv_python(cache_dir))
    _check(
        [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        f"pip install {' '.join(requirements)} into {root}",
    )
    _check([py, "-I", "-c", "import mediapipe, cv2, numpy"], f"importing mediapipe in {root}")
    (root / _MARKER).write_text(_marker_text(requirements))
    return venv_python(cache_dir)


# -- running it -------------------------------------------------------------------------------------------------


def run_reference(
    video: Path,
    cache_dir: Path,
    *,
    cpus: list[int] | None = None,
    options: ReferenceOptions | None = None,
    out: Path | None = None,
    timeout_s: float | None = None,
) -> ReferenceResult:
    """Run MediaPipe Pose over a local video in the reference venv, pinned to ``cpus`` (default: this process's
    CPUs, so both pipelines are timed on the same cores); returns its per-frame landmarks and frames/s.

    The venv must exist (:func:`ensure_reference_venv`). ``out`` keeps the ``.npz`` (default: a temp file).
    """
    if not reference_ready(cache_dir):
        raise ReferenceError(
            f"the reference venv is not set up in {venv_dir(cache_dir)}; run `mocapflow realdata` (or make realdata)"
        )
    if cpus is None and hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
    options = options or ReferenceOptions()
    with tempfile.TemporaryDirectory(prefix="mocapflow-reference-") as tmp:
        target = out or Path(tmp) / "reference.npz"
        cmd = [str(venv_python(cache_dir)), "-I", str(WORKER), str(video), str(target), *options.args()]
        if cpus:
            cmd += ["--cpus", ",".join(str(c) for c in cpus)]
        logger.debug("reference: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ReferenceError(f"the reference pipeline on {video} did not finish in {timeout_s} s") from e
        if proc.returncode != 0:
            raise ReferenceError(
                f"the reference pipeline failed on {video} (exit {proc.returncode}): {proc.stderr.strip()[-600:]}"
            )
        return read_reference(target)
