"""Build the ``markers`` model set: detector SavedModel + backbone ONNX + manifest, written atomically.

Deterministic: the same code gives the same bytes, so the same model-set id. Two things in a SavedModel are not
byte-stable and are handled here: ``fingerprint.pb`` holds a random ``uuid`` (replaced by one derived from
``saved_model.pb``), and function names carry a process-wide counter (``__inference___call___325``), so a second
export in the same process differs; the detector is therefore exported in a fresh Python process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from models.markers.backbone import BackboneConfig, build_backbone
from models.markers.prepost import CROP_MARGIN, CROP_SIZE
from models.modelset import ModelSet, read_local, write_manifest

logger = logging.getLogger(__name__)

NAME = "markers"
VERSION = "1"
DETECTOR_DIR = "detector"
BACKBONE_FILE = "backbone.onnx"
MIN_BOX_SCORE = 0.1  # detector score (fraction of palette colours present) below which a detection is dropped


def export_detector(path: str | Path) -> None:
    """Write the detector SavedModel to ``path`` in this process (see the module docstring for why the build runs
    it in a child process)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import fingerprint_pb2

    from mocapflow.synth.palette import MARKER_COLORS
    from models.markers.detector import DetectorConfig, MarkerDetector

    module = MarkerDetector(MARKER_COLORS, DetectorConfig())
    path = Path(path)
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.__call__.get_concrete_function()}
    )
    fp_path = path / "fingerprint.pb"
    if fp_path.is_file():  # its uuid is random per save; make it a function of the graph
        fp = fingerprint_pb2.FingerprintDef()
        fp.ParseFromString(fp_path.read_bytes())
        digest = hashlib.sha256((path / "saved_model.pb").read_bytes()).digest()
        fp.uuid = str(int.from_bytes(digest[:16], "big"))
        fp_path.write_bytes(fp.SerializeToString(deterministic=True))


def _save_detector(path: Path) -> None:
    code = "import sys; from models.markers.build import export_detector; export_detector(sys.argv[1])"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not (path / "saved_model.pb").is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"exporting the markers detector to {path} failed (exit {proc.returncode}):\n{tail}"
        )


def _save_backbone(path: Path) -> BackboneConfig:
    import onnx

    from mocapflow.synth.palette import DISC_RADIUS_M, MARKER_COLORS

    cfg = BackboneConfig()
    onnx.save(build_backbone(MARKER_COLORS, DISC_RADIUS_M * 1000.0, cfg), str(path))
    return cfg


def build(dest: Path, cache_dir: Path | None = None) -> ModelSet:
    """Build the model set into ``dest`` (replaced atomically if it exists). ``cache_dir`` is not needed: nothing is
    downloaded."""
    from mocapflow.synth.palette import DISC_RADIUS_M, MARKER_COLORS, MARKER_SITES, marker_edges

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        _save_detector(staging / DETECTOR_DIR)
        cfg = _save_backbone(staging / BACKBONE_FILE)
        manifest = write_manifest(
            staging,
            name=NAME,
            kind="markers",
            version=VERSION,
            joint_names=list(MARKER_SITES),
            joint_edges=[list(e) for e in marker_edges()],
            input_resolution=[CROP_SIZE, CROP_SIZE],
            has_3d=True,
            camera={"default_fov_deg": 55.0},
            files={"detector": {"path": DETECTOR_DIR}, "backbone": {"path": BACKBONE_FILE}},
            extra={
                "disc_radius_m": DISC_RADIUS_M,
                "marker_colors": MARKER_COLORS.tolist(),
                "crop_margin": CROP_MARGIN,
                "min_box_score": MIN_BOX_SCORE,
                "backbone": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            },
        )
        _swap_into_place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built model set %s (%s) at %s", NAME, manifest.id, dest)
    return read_local(dest)


def _swap_into_place(staging: Path, dest: Path) -> None:
    """Rename ``staging`` to ``dest``; an existing ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    try:
        os.replace(staging, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
