"""Build the ``blazepose`` model set from MediaPipe's pretrained weights.

Steps: download the ``mediapipe==0.10.21`` wheel (cp311, manylinux x86_64) with pip into
``<cache_dir>/downloads`` (reused when present; mediapipe is never installed: it pins protobuf<5, which breaks
TensorFlow), take ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` out of it, convert the landmark model
to ONNX with tf2onnx (opset 17), keep only the outputs we use and give it a dynamic batch axis, check it against the
TFLite original, write ``manifest.json`` in a staging folder and rename that folder to ``dest``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from models.blazepose.skeleton import JOINT_EDGES, JOINT_NAMES
from models.modelset import MANIFEST, ModelSet, ModelSetError, read_local, write_manifest

logger = logging.getLogger(__name__)

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
WHEEL_GLOB = "mediapipe-0.10.21-cp311-cp311-manylinux*_x86_64.whl"
DETECTOR_MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
LANDMARK_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
DETECTOR_FILE = "detector.tflite"
BACKBONE_FILE = "backbone.onnx"
OPSET = 17
INPUT_SIZE = 256

# ONNX names given to the landmark model's tensors; tf2onnx names follow the TFLite outputs in order:
# Identity = 39x5 landmarks, Identity_1 = pose presence, Identity_2 = segmentation, Identity_3 = heatmap,
# Identity_4 = 39x3 world landmarks. Segmentation and heatmap are dropped.
INPUT_NAME = "image"
OUTPUTS = {"Identity": "landmarks", "Identity_1": "pose_presence", "Identity_4": "world_landmarks"}
OUTPUT_WIDTHS = {"landmarks": 195, "pose_presence": 1, "world_landmarks": 117}

# ONNX vs TFLite on the same inputs, per output; measured here: 4e-3 (landmarks, 0..256 input units),
# 5e-5 (world landmarks, m), 1e-6 (presence)
MAX_ABS_DIFF = {"landmarks": 2e-2, "pose_presence": 1e-3, "world_landmarks": 1e-3}


def build(dest: Path, cache_dir: Path) -> ModelSet:
    """Build the set into ``dest`` (a no-op returning it when ``dest`` already holds a valid blazepose set)."""
    dest = Path(dest)
    if dest.exists():
        return _existing(dest)
    t0 = time.perf_counter()
    wheel = download_wheel(Path(cache_dir) / "downloads")
    wheel_sha = _sha256(wheel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the set is shared read-only
    try:
        with tempfile.TemporaryDirectory(prefix="blazepose-build-") as work_dir:
            work = Path(work_dir)
            extract_member(wheel, DETECTOR_MEMBER, staging / DETECTOR_FILE)
            landmark_tflite = extract_member(wheel, LANDMARK_MEMBER, work / "pose_landmark_full.tflite")
            raw_onnx = convert_tflite(landmark_tflite, work / "raw.onnx", work / "tf2onnx.log")
            _save_backbone(raw_onnx, staging / BACKBONE_FILE)
            diffs = verify_backbone(landmark_tflite, staging / BACKBONE_FILE)
            logger.info(
                "ONNX backbone matches TFLite, max abs diff: %s",
                ", ".join(f"{k} {v:.1e} (limit {MAX_ABS_DIFF[k]:.0e})" for k, v in diffs.items()),
            )
        write_manifest(
            staging,
            name="blazepose",
            kind="blazepose",
            version="1",
            joint_names=list(JOINT_NAMES),
            joint_edges=[list(e) for e in JOINT_EDGES],
            input_resolution=[INPUT_SIZE, INPUT_SIZE],
            has_3d=True,
            camera={"default_fov_deg": 55.0},
            files={"detector": {"path": DETECTOR_FILE}, "backbone": {"path": BACKBONE_FILE}},
            extra=_extra(wheel, wheel_sha),
        )
        try:
            os.replace(staging, dest)
        except OSError:
            if (dest / MANIFEST).is_file():  # another builder finished first
                logger.info("%s appeared while building; using it", dest)
                return _existing(dest)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ms = read_local(dest)
    logger.info("built model set blazepose (%s) at %s in %.1f s", ms.id, dest, time.perf_counter() - t0)
    return ms


def _existing(dest: Path) -> ModelSet:
    try:
        ms = read_local(dest)
    except ModelSetError as e:
        raise ModelSetError(
            f"{dest} exists but is not a valid model set ({e}); remove it or choose another destination"
        ) from e
    if ms.manifest.kind != "blazepose":
        raise ModelSetError(
            f"{dest} holds a {ms.manifest.kind!r} model set, not blazepose; choose another destination"
        )
    logger.info("model set blazepose (%s) already at %s", ms.id, dest)
    return ms


def _extra(wheel: Path, wheel_sha: str) -> dict[str, Any]:
    import tf2onnx

    return {
        "source": {
            "requirement": MEDIAPIPE_REQUIREMENT,
            "wheel": wheel.name,
            "wheel_sha256": wheel_sha,
            "detector": DETECTOR_MEMBER,
            "landmarks": LANDMARK_MEMBER,
        },
        "converter": {"tool": "tf2onnx", "version": tf2onnx.__version__, "opset": OPSET},
        "detector": {"input_size": 224, "runtime": "tflite"},
        "backbone": {"input": INPUT_NAME, "outputs": list(OUTPUT_WIDTHS), "layout": "NHWC RGB [0, 1]"},
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_command() -> list[str]:
    """A pip to download with: this interpreter's, else one on PATH, else uv's ephemeral one."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    uv = shutil.which("uv")
    if uv:
        return [uv, "tool", "run", "pip"]
    raise ModelSetError(
        f"cannot download {MEDIAPIPE_REQUIREMENT}: no pip in {sys.executable} and none (nor uv) on PATH; "
        "install pip, or put the wheel into the downloads folder yourself"
    )


def find_wheel(downloads: Path) -> Path | None:
    """A previously downloaded, readable mediapipe wheel in ``downloads``, if any."""
    for p in sorted(downloads.glob(WHEEL_GLOB)):
        if zipfile.is_zipfile(p):
            return p
        logger.warning("ignoring %s: not a readable wheel (interrupted download?)", p)
    return None


def download_wheel(downloads: Path) -> Path:
    """The mediapipe wheel, downloaded with ``pip download --no-deps`` unless already in ``downloads``."""
    downloads.mkdir(parents=True, exist_ok=True)
    found = find_wheel(downloads)
    if found:
        logger.info("reusing %s", found)
        return found
    cmd = [
        *_pip_command(),
        "download",
        MEDIAPIPE_REQUIREMENT,
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        WHEEL_PLATFORM,
        "-d",
        str(downloads),
    ]
    logger.info("downloading %s into %s", MEDIAPIPE_REQUIREMENT, downloads)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = find_wheel(downloads)
    if proc.returncode != 0 or found is None:
        raise ModelSetError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); check access to the package index. "
            f"pip said: {proc.stderr.strip()[-1500:]}"
        )
    return found


def extract_member(wheel: Path, member: str, target: Path) -> Path:
    """Copy one file out of the wheel."""
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(member)
        except KeyError:
            raise ModelSetError(
                f"{wheel.name} has no {member}; the blazepose set needs {MEDIAPIPE_REQUIREMENT} exactly"
            ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    logger.info("extracted %s (%d bytes)", member, len(data))
    return target


def convert_tflite(tflite: Path, output: Path, log_file: Path) -> Path:
    """tf2onnx in a subprocess (it configures logging and TF globally)."""
    cmd = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        "--tflite",
        str(tflite),
        "--opset",
        str(OPSET),
        "--output",
        str(output),
    ]
    logger.info("converting %s to ONNX with tf2onnx (opset %d)", tflite.name, OPSET)
    t0 = time.perf_counter()
    with log_file.open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not output.is_file():
        tail = log_file.read_text(errors="replace")[-2000:]
        raise ModelSetError(f"tf2onnx failed on {tflite.name} (exit {proc.returncode}):\n{tail}")
    logger.info("tf2onnx done in %.1f s", time.perf_counter() - t0)
    return output


def prepare_backbone(model: Any) -> Any:
    """Keep the landmark, presence and world outputs, rename tensors, and make the batch axis dynamic."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    if len(graph.input) != 1:
        raise ModelSetError(f"landmark ONNX model has {len(graph.input)} inputs, expected 1")
    missing = set(OUTPUTS) - {o.name for o in graph.output}
    if missing:
        raise ModelSetError(f"landmark ONNX model lacks outputs {sorted(missing)}; tf2onnx naming changed?")
    model = onnx.utils.Extractor(model).extract_model([graph.input[0].name], list(OUTPUTS))
    graph = model.graph
    renames = {graph.input[0].name: INPUT_NAME, **OUTPUTS}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for v in [*graph.input, *graph.output]:
        v.name = renames.get(v.name, v.name)
        v.type.tensor_type.shape.dim[0].ClearField("dim_value")
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    # constant reshape targets that pin the batch to 1
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]])
            if shape.size and shape[0] == 1 and -1 not in shape:
                shape = shape.copy()
                shape[0] = -1
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del graph.value_info[:]
    _canonical_initializer_names(graph)
    onnx.checker.check_model(model)
    return model


def _canonical_initializer_names(graph: Any) -> None:
    """Name constants ``const_<k>`` by first use: tf2onnx's folded-constant names vary between runs, and the
    model-set id must not."""
    import onnx

    inits = {t.name: t for t in graph.initializer}
    order = list(dict.fromkeys([i for node in graph.node for i in node.input if i in inits] + list(inits)))
    renames = {old: f"const_{k}" for k, old in enumerate(order)}
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
    renamed = []
    for old in order:
        t = onnx.TensorProto()
        t.CopyFrom(inits[old])
        t.name = renames[old]
        renamed.append(t)
    del graph.initializer[:]
    graph.initializer.extend(renamed)


def _save_backbone(raw_onnx: Path, target: Path) -> None:
    import onnx

    model = prepare_backbone(onnx.load(str(raw_onnx)))
    onnx.save(model, str(target))
    logger.info("wrote %s (%d bytes)", target.name, target.stat().st_size)


def verify_inputs() -> np.ndarray:
    """Two deterministic 256x256 RGB inputs in [0, 1]: smooth colour ramps plus noise, and pure noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE] / (INPUT_SIZE - 1)
    ramps = np.stack([x, y, (x + y) / 2], axis=-1)
    a = np.clip(ramps + rng.normal(0, 0.05, ramps.shape), 0, 1)
    b = rng.uniform(0, 1, ramps.shape)
    return np.stack([a, b]).astype(np.float32)


def verify_backbone(tflite: Path, onnx_path: Path) -> dict[str, float]:
    """Max abs difference per output between TFLite (one input at a time) and ONNX (both as one batch).

    Raises when one exceeds its limit in ``MAX_ABS_DIFF``.
    """
    from models.blazepose.runtime import tflite_interpreter
    from models.runtime import ThreadConfig, ort_session

    x = verify_inputs()
    threads = ThreadConfig(threads=1)
    interp = tflite_interpreter(tflite, threads)
    interp.allocate_tensors()
    index = {d["name"]: d["index"] for d in interp.get_output_details()}
    reference: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUTS.values()}
    for sample in x:
        interp.set_tensor(interp.get_input_details()[0]["index"], sample[None])
        interp.invoke()
        for tfl_name, name in OUTPUTS.items():
            reference[name].append(interp.get_tensor(index[tfl_name]).reshape(-1))
    session = ort_session(onnx_path, threads)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: x}), strict=True))
    diffs = {}
    for name, ref in reference.items():
        r = np.stack(ref)
        diffs[name] = float(np.max(np.abs(r - got[name].reshape(r.shape))))
    bad = {k: v for k, v in diffs.items() if not v <= MAX_ABS_DIFF[k]}
    if bad:
        raise ModelSetError(
            f"converted {onnx_path.name} differs from {tflite.name}: max abs diff {bad} over limits "
            f"{MAX_ABS_DIFF}; the tf2onnx conversion is wrong: check the tf2onnx / onnxruntime versions"
        )
    return diffs
