"""Storage figures of ``mocapflow bench``: a cohort of real keypoints tables as Arrow/Parquet (the store's format:
one ``keypoints.parquet`` per video under hive-style ``video=<id>/`` folders, readable with ``pyarrow.dataset``) vs
``.npz`` (the origin's format: one file of named numpy arrays per video). Timed: write the cohort, read it back
whole, and read one joint's 3D track across the cohort (Parquet: only the ``kp3d_mm`` column via a dataset scan;
npz: ``np.load(...)["kp3d_mm"]`` per file, which also reads only that member). First call apart, then per call.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks.timing import ratio, time_calls


def _arrays(table: pa.Table) -> dict[str, np.ndarray]:
    from mocapflow.keypoints import read_arrays

    return read_arrays(table)[1]


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def storage_section(
    tables: list[pa.Table], cohort: int, joint: int, repeats: int, tmp: Path
) -> dict[str, Any]:
    """``cohort`` videos (the real ``tables`` in turn), both formats, in ``tmp``."""
    videos = [tables[i % len(tables)] for i in range(cohort)]
    arrays = [_arrays(t) for t in videos]
    pq_root, npz_root = tmp / "parquet", tmp / "npz"

    def write_parquet() -> None:
        shutil.rmtree(pq_root, ignore_errors=True)
        for i, t in enumerate(videos):
            d = pq_root / f"video={i:04d}"
            d.mkdir(parents=True)
            pq.write_table(t, d / "keypoints.parquet")

    def write_npz() -> None:
        shutil.rmtree(npz_root, ignore_errors=True)
        npz_root.mkdir(parents=True)
        for i, a in enumerate(arrays):
            np.savez(npz_root / f"{i:04d}.npz", **a)

    def read_parquet() -> int:
        return sum(
            pq.read_table(pq_root / f"video={i:04d}" / "keypoints.parquet").num_rows for i in range(cohort)
        )

    def read_npz() -> int:
        n = 0
        for i in range(cohort):
            with np.load(npz_root / f"{i:04d}.npz") as z:
                n += len({k: z[k] for k in z.files}["frame"])
        return n

    def joint_parquet() -> np.ndarray:
        t = ds.dataset(pq_root, format="parquet", partitioning="hive").to_table(columns=["kp3d_mm"])
        col = t.column("kp3d_mm").combine_chunks()  # [N] x [J] x [3] fixed-size lists
        j = col.type.list_size
        flat = col.flatten().flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(-1, j, 3)[:, joint]

    def joint_npz() -> np.ndarray:
        parts = []
        for i in range(cohort):
            with np.load(npz_root / f"{i:04d}.npz") as z:
                parts.append(z["kp3d_mm"][:, joint])
        return np.concatenate(parts)

    out: dict[str, Any] = {"videos": cohort, "rows": int(sum(t.num_rows for t in videos)), "joint": joint}
    for name, fn in (
        ("write_parquet", write_parquet),
        ("write_npz", write_npz),
        ("read_parquet", read_parquet),
        ("read_npz", read_npz),
        ("joint_parquet", joint_parquet),
        ("joint_npz", joint_npz),
    ):
        out[name] = time_calls(fn, repeats, warmup=1).to_dict(1e3, "ms")
    a, b = joint_parquet(), joint_npz()
    if (
        a.shape != b.shape
        or not np.array_equal(np.isnan(a), np.isnan(b))
        or not np.allclose(a, b, equal_nan=True)
    ):
        raise RuntimeError("storage benchmark: the joint read from Parquet and from .npz differ")
    out["bytes_parquet"] = _folder_bytes(pq_root)
    out["bytes_npz"] = _folder_bytes(npz_root)
    out["keys"] = {
        "storage_bytes_parquet_vs_npz": ratio(out["bytes_parquet"], out["bytes_npz"]),
        "storage_write_parquet_vs_npz": ratio(
            out["write_parquet"]["median_ms"], out["write_npz"]["median_ms"]
        ),
        "storage_read_parquet_vs_npz": ratio(out["read_parquet"]["median_ms"], out["read_npz"]["median_ms"]),
        "storage_joint_parquet_vs_npz": ratio(
            out["joint_parquet"]["median_ms"], out["joint_npz"]["median_ms"]
        ),
    }
    return out
