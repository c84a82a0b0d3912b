"""Import a user's MeTRAbs split artifacts into a ``metrabs`` model set.

The origin shipped three things in one folder (names are free; the importer finds them by kind):

- a TensorFlow person-detector **SavedModel folder** (holds ``saved_model.pb``). Contract chosen here: signature
  ``serving_default`` with one input, uint8 ``[H, W, 3]`` RGB, and outputs ``boxes`` float32 ``[m, 4]`` as
  (x, y, w, h) image px (x, y = top-left corner) and ``scores`` float32 ``[m]``. The runtime applies its own score
  threshold and NMS on top, so a detector that already does both is fine.
- the **backbone** ``.onnx``: one input ``image`` float16 NHWC ``[n, 256, 256, 3]`` (RGB / 255, i.e. [0, 1]) and two
  outputs ``[n, J, 2]`` (crop px) and ``[n, J, 3]`` (mm, camera orientation, any origin), told apart by their last
  dimension. J is the full joint set of the metadata.
- the metadata **.pkl**: ``joint_names``, ``joint_edges`` and ``skeleton_infos`` (``{name: {"names", "edges",
  "indices"}}``). It is read with a restricted unpickler and stored in the set as ``metadata.json``; the pickle itself
  is not copied, so nothing ever unpickles it again.

The model set keeps the chosen skeleton (default ``bml_movi_87``): its names and edges become the manifest's joints and
``extra.joint_indices`` selects them from the backbone output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.metrabs.metadata import pickle_to_json
from models.modelset import MANIFEST, ModelSet, ModelSetError, read_local, sha256_path, write_manifest

logger = logging.getLogger(__name__)

DEFAULT_SKELETON = "bml_movi_87"
CROP_SIZE = 256
DETECTOR_DIR = "detector"
BACKBONE_FILE = "backbone.onnx"
METADATA_FILE = "metadata.json"
INPUT_NAME = "image"
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class MetrabsSource:
    """Where the three artifacts are in the user's folder."""

    detector: Path
    backbone: Path
    metadata: Path


def find_artifacts(src_folder: Path) -> MetrabsSource:
    """Locate exactly one SavedModel folder, one ``.onnx`` and one ``.pkl`` in ``src_folder`` (top level)."""
    src = Path(src_folder)
    if not src.is_dir():
        raise ModelSetError(
            f"{src}: not a folder; give the folder holding the MeTRAbs detector, .onnx and .pkl"
        )
    entries = sorted(src.iterdir())
    detectors = [p for p in entries if p.is_dir() and (p / "saved_model.pb").is_file()]
    onnx_files = [p for p in entries if p.is_file() and p.suffix == ".onnx"]
    pkl_files = [p for p in entries if p.is_file() and p.suffix == ".pkl"]
    found = {
        "detector SavedModel folder": detectors,
        "backbone .onnx": onnx_files,
        "metadata .pkl": pkl_files,
    }
    for what, items in found.items():
        if len(items) != 1:
            names = [p.name for p in entries]
            raise ModelSetError(
                f"{src}: expected exactly one {what}, found {len(items)} ({[p.name for p in items]}); "
                f"the folder holds {names}"
            )
    return MetrabsSource(detectors[0], onnx_files[0], pkl_files[0])


def select_skeleton(meta: dict[str, Any], skeleton: str, source: str = "metadata") -> dict[str, Any]:
    """``{"names", "edges", "indices"}`` of ``skeleton``, checked against the full joint list; edges made local."""
    for key in ("joint_names", "joint_edges", "skeleton_infos"):
        if key not in meta:
            raise ModelSetError(f"{source}: no {key!r}; it has {sorted(meta)}")
    infos = meta["skeleton_infos"]
    if not isinstance(infos, dict) or skeleton not in infos:
        have = sorted(infos) if isinstance(infos, dict) else type(infos).__name__
        raise ModelSetError(f"{source}: no skeleton {skeleton!r} in skeleton_infos; available: {have}")
    info = infos[skeleton]
    try:
        names = [str(n) for n in info["names"]]
        indices = [int(i) for i in info["indices"]]
        edges = [[int(a), int(b)] for a, b in info["edges"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelSetError(
            f"{source}: skeleton {skeleton!r} needs 'names', 'indices' and 'edges' ({e})"
        ) from e
    n_all = len(meta["joint_names"])
    if len(names) != len(indices):
        raise ModelSetError(
            f"{source}: skeleton {skeleton!r} has {len(names)} names but {len(indices)} indices"
        )
    bad = [i for i in indices if not 0 <= i < n_all]
    if bad:
        raise ModelSetError(f"{source}: skeleton {skeleton!r} indices {bad[:5]} outside the {n_all} joints")
    if not all(0 <= i < len(names) for e in edges for i in e):
        where = {g: k for k, g in enumerate(indices)}
        if all(i in where for e in edges for i in e):  # edges given in full-joint indices
            edges = [[where[a], where[b]] for a, b in edges]
        else:
            raise ModelSetError(f"{source}: skeleton {skeleton!r} edges do not index its {len(names)} joints")
    return {"names": names, "edges": edges, "indices": indices}


def inspect_backbone(path: Path, n_joints: int) -> dict[str, Any]:
    """Check the ONNX backbone's input/outputs; return ``{"input", "kp2d", "kp3d"}`` tensor names."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelSetError(f"{path}: not a loadable ONNX model ({e})") from e
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ModelSetError(
            f"{path}: weights are in external data files; save it as one file "
            "(onnx.save(model, path, save_as_external_data=False)) and import again"
        )
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]

    def dims(v: Any) -> list[int | str]:
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in v.type.tensor_type.shape.dim
        ]

    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelSetError(
            f"{path}: expected one input named {INPUT_NAME!r}, got {[i.name for i in inputs]}"
        )
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 or dims(inp)[1:] != [
        CROP_SIZE,
        CROP_SIZE,
        3,
    ]:
        raise ModelSetError(
            f"{path}: input {INPUT_NAME!r} must be float16 [n, {CROP_SIZE}, {CROP_SIZE}, 3] (NHWC), got "
            f"{onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)} {dims(inp)}"
        )
    by_width: dict[int, list[str]] = {}
    for out in model.graph.output:
        d = dims(out)
        if len(d) == 3 and d[2] in (2, 3):
            if isinstance(d[1], int) and d[1] != n_joints:
                raise ModelSetError(
                    f"{path}: output {out.name!r} has {d[1]} joints, the metadata lists {n_joints}"
                )
            by_width.setdefault(int(d[2]), []).append(out.name)
    if len(by_width.get(2, [])) != 1 or len(by_width.get(3, [])) != 1:
        outs = {o.name: dims(o) for o in model.graph.output}
        raise ModelSetError(f"{path}: expected one [n, J, 2] and one [n, J, 3] output, got {outs}")
    return {"input": INPUT_NAME, "kp2d": by_width[2][0], "kp3d": by_width[3][0], "input_scale": 1.0 / 255.0}


def inspect_detector(path: Path) -> dict[str, Any]:
    """Load the SavedModel and check its ``serving_default`` signature; return its input/output names."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ModelSetError(f"{path}: not a loadable TensorFlow SavedModel ({type(e).__name__}: {e})") from e
    sig = loaded.signatures.get(SIGNATURE)
    if sig is None:
        raise ModelSetError(f"{path}: no {SIGNATURE!r} signature; it has {sorted(loaded.signatures)}")
    specs = sig.structured_input_signature[1]
    outputs = sig.structured_outputs
    if len(specs) != 1:
        raise ModelSetError(f"{path}: {SIGNATURE} must take one image input, takes {sorted(specs)}")
    ((name, spec),) = specs.items()
    if spec.dtype != tf.uint8 or spec.shape.rank != 3:
        raise ModelSetError(
            f"{path}: input {name!r} must be uint8 [H, W, 3], got {spec.dtype.name} {spec.shape}"
        )
    if not isinstance(outputs, dict) or not {"boxes", "scores"} <= set(outputs):
        have = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ModelSetError(
            f"{path}: {SIGNATURE} must return 'boxes' [m, 4] (x, y, w, h) and 'scores' [m]; got {have}"
        )
    return {"signature": SIGNATURE, "input": name, "boxes": "boxes", "scores": "scores", "box_format": "xywh"}


def import_metrabs(
    src_folder: Path | str,
    dest_folder: Path | str,
    skeleton: str = DEFAULT_SKELETON,
    crop_scale: float = 1.0,
) -> ModelSet:
    """Copy the artifacts in ``src_folder`` into a ``metrabs`` model set at ``dest_folder`` and write its manifest.

    Idempotent: if ``dest_folder`` already holds the set made from the same artifacts and options, it is returned.
    ``crop_scale`` is the crop side over the box's longer side that the backbone was trained with.
    """
    src = find_artifacts(Path(src_folder))
    dest = Path(dest_folder)
    meta = pickle_to_json(src.metadata)
    skel = select_skeleton(meta, skeleton, source=str(src.metadata))
    n_all = len(meta["joint_names"])
    backbone = inspect_backbone(src.backbone, n_all)
    detector = inspect_detector(src.detector)
    source = {
        role: {"name": p.name, "sha256": sha256_path(p)}
        for role, p in (("detector", src.detector), ("backbone", src.backbone), ("metadata", src.metadata))
    }
    extra = {
        "skeleton": skeleton,
        "joint_indices": skel["indices"],
        "n_backbone_joints": n_all,
        "crop_size": CROP_SIZE,
        "crop_scale": float(crop_scale),
        "backbone": backbone,
        "detector": detector,
        "source": source,
    }
    if dest.exists():
        return _existing(dest, extra)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        shutil.copytree(src.detector, staging / DETECTOR_DIR)
        shutil.copyfile(src.backbone, staging / BACKBONE_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True, allow_nan=False))
        write_manifest(
            staging,
            name="metrabs",
            kind="metrabs",
            version="1",
            joint_names=skel["names"],
            joint_edges=skel["edges"],
            input_resolution=[CROP_SIZE, CROP_SIZE],
            has_3d=True,
            camera={"default_fov_deg": 55.0},
            files={
                "detector": {"path": DETECTOR_DIR},
                "backbone": {"path": BACKBONE_FILE},
                "metadata": {"path": METADATA_FILE},
            },
            extra=extra,
        )
        try:
            os.replace(staging, dest)
        except OSError:
            if (dest / MANIFEST).is_file():  # another import finished first
                return _existing(dest, extra)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ms = read_local(dest)
    logger.info(
        "imported MeTRAbs (%s, %d joints) from %s as model set %s",
        skeleton,
        len(skel["names"]),
        src_folder,
        ms.id,
    )
    return ms


def _existing(dest: Path, extra: dict[str, Any]) -> ModelSet:
    try:
        ms = read_local(dest)
    except ModelSetError as e:
        raise ModelSetError(
            f"{dest} exists but is not a valid model set ({e}); remove it or choose another"
        ) from e
    if ms.manifest.kind != "metrabs" or ms.manifest.extra != extra:
        raise ModelSetError(
            f"{dest} already holds a different model set ({ms.manifest.kind}, {ms.id}); remove it or choose another"
        )
    logger.info("model set metrabs (%s) already at %s", ms.id, dest)
    return ms
