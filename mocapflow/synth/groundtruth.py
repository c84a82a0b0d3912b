"""Ground truth beside each synthetic video (``<stem>.gt.parquet``): write and read it.

One row per video frame. Columns: ``frame`` int32, ``time_s`` float64, one float64 column per body-model DOF
(radians, or metres for slides), then the rendered markers of the main subject in the keypoints-table layout
(``kp2d_px`` fixed_size_list<fixed_size_list<float32, 2>, J>, ``kp3d_mm`` camera-frame mm, ``visible``
fixed_size_list<bool, J>: the disc centre is in the image and no nearer disc covers it), ``box`` (x0, y0, x1, y1 px
around the subject's discs), ``blank`` (a dropped frame: background only), and the second person's markers
(``second_present``, ``second_kp2d_px``, ``second_kp3d_mm``, ``second_visible``; NaN/false when absent).
Schema metadata (UTF-8 JSON values): see :data:`META_KEYS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from mocapflow.camera import Extrinsics, Intrinsics

GT_VERSION_KEY = "mocapflow.synth_gt_version"
GT_VERSION = 1
META_KEYS = (
    "video",
    "fps",
    "width",
    "height",
    "n_frames",
    "intrinsics",
    "extrinsics",
    "camera",
    "joint_names",
    "joint_edges",
    "marker_colors",
    "disc_radius_m",
    "dof_names",
    "units",
    "model_name",
    "subject",
    "motion",
    "motion_params",
    "seed",
    "video_index",
    "flags",
    "second_subject",
)


class GroundTruthError(ValueError):
    """A ground-truth file is not what this module writes."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """A ground-truth table as arrays (shapes: T frames, D DOFs, J markers)."""

    meta: dict[str, Any]
    q: NDArray[np.float64]  # [T, D] model units
    kp2d_px: NDArray[np.float32]  # [T, J, 2]
    kp3d_mm: NDArray[np.float32]  # [T, J, 3]
    visible: NDArray[np.bool_]  # [T, J]
    box: NDArray[np.float32]  # [T, 4]
    blank: NDArray[np.bool_]  # [T]
    second_present: NDArray[np.bool_]  # [T]
    second_kp2d_px: NDArray[np.float32]
    second_kp3d_mm: NDArray[np.float32]
    second_visible: NDArray[np.bool_]

    @property
    def intrinsics(self) -> Intrinsics:
        return Intrinsics.from_dict(self.meta["intrinsics"])

    @property
    def extrinsics(self) -> Extrinsics:
        return Extrinsics.from_dict(self.meta["extrinsics"])

    @property
    def dof_names(self) -> list[str]:
        return list(self.meta["dof_names"])

    @property
    def joint_names(self) -> list[str]:
        return list(self.meta["joint_names"])


def _nested(values: NDArray[Any], value_type: pa.DataType, *sizes: int) -> pa.Array:
    arr: pa.Array = pa.array(np.ascontiguousarray(values).reshape(-1), value_type)
    for size in reversed(sizes):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return arr


def build_table(gt: GroundTruth) -> pa.Table:
    """The Arrow table (with schema metadata) for ``gt``."""
    n, j = gt.visible.shape
    dof_names = gt.dof_names
    if gt.q.shape != (n, len(dof_names)) or gt.kp2d_px.shape != (n, j, 2) or gt.kp3d_mm.shape != (n, j, 3):
        raise GroundTruthError(
            f"inconsistent shapes: q {gt.q.shape}, kp2d {gt.kp2d_px.shape}, kp3d {gt.kp3d_mm.shape}, "
            f"visible {gt.visible.shape} for {len(dof_names)} DOFs"
        )
    missing = [k for k in META_KEYS if k not in gt.meta]
    if missing:
        raise GroundTruthError(f"ground-truth metadata lacks {missing}")
    fps = float(gt.meta["fps"])
    columns: dict[str, pa.Array] = {
        "frame": pa.array(np.arange(n, dtype=np.int32)),
        "time_s": pa.array(np.arange(n) / fps, pa.float64()),
    }
    for i, name in enumerate(dof_names):
        columns[name] = pa.array(gt.q[:, i].astype(np.float64))
    columns |= {
        "kp2d_px": _nested(gt.kp2d_px.astype(np.float32), pa.float32(), j, 2),
        "kp3d_mm": _nested(gt.kp3d_mm.astype(np.float32), pa.float32(), j, 3),
        "visible": _nested(gt.visible.astype(bool), pa.bool_(), j),
        "box": _nested(gt.box.astype(np.float32), pa.float32(), 4),
        "blank": pa.array(gt.blank.astype(bool)),
        "second_present": pa.array(gt.second_present.astype(bool)),
        "second_kp2d_px": _nested(gt.second_kp2d_px.astype(np.float32), pa.float32(), j, 2),
        "second_kp3d_mm": _nested(gt.second_kp3d_mm.astype(np.float32), pa.float32(), j, 3),
        "second_visible": _nested(gt.second_visible.astype(bool), pa.bool_(), j),
    }
    meta = {GT_VERSION_KEY: GT_VERSION, **gt.meta}
    try:
        metadata = {
            k.encode(): json.dumps(v, sort_keys=True, allow_nan=False).encode() for k, v in meta.items()
        }
    except (TypeError, ValueError) as e:
        raise GroundTruthError(f"ground-truth metadata is not plain JSON: {e}") from e
    return pa.table(columns).replace_schema_metadata(metadata)


def to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _column(table: pa.Table, name: str, dtype: Any, shape: tuple[int, ...]) -> NDArray[Any]:
    col = table.column(name).combine_chunks()
    while pa.types.is_fixed_size_list(col.type):
        col = col.flatten()
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype).reshape(shape)


def read_ground_truth(path: str | Path) -> GroundTruth:
    """Read a ``<stem>.gt.parquet`` written by :func:`mocapflow.synth.generate_cohort`."""
    table = pq.read_table(path)
    md = table.schema.metadata or {}
    if GT_VERSION_KEY.encode() not in md:
        raise GroundTruthError(f"{path}: no {GT_VERSION_KEY!r} metadata; not a synthetic ground-truth file")
    meta = {k.decode(): json.loads(v) for k, v in md.items() if not k.startswith(b"ARROW:")}
    version = meta.pop(GT_VERSION_KEY)
    if version != GT_VERSION:
        raise GroundTruthError(
            f"{path}: ground-truth version {version}, this code reads {GT_VERSION}; regenerate it"
        )
    n, j = table.num_rows, len(meta["joint_names"])
    q = np.stack([table.column(name).to_numpy() for name in meta["dof_names"]], axis=1).astype(np.float64)
    return GroundTruth(
        meta=meta,
        q=q.reshape(n, len(meta["dof_names"])),
        kp2d_px=_column(table, "kp2d_px", np.float32, (n, j, 2)),
        kp3d_mm=_column(table, "kp3d_mm", np.float32, (n, j, 3)),
        visible=_column(table, "visible", bool, (n, j)),
        box=_column(table, "box", np.float32, (n, 4)),
        blank=_column(table, "blank", bool, (n,)),
        second_present=_column(table, "second_present", bool, (n,)),
        second_kp2d_px=_column(table, "second_kp2d_px", np.float32, (n, j, 2)),
        second_kp3d_mm=_column(table, "second_kp3d_mm", np.float32, (n, j, 3)),
        second_visible=_column(table, "second_visible", bool, (n, j)),
    )
