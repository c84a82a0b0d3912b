"""Compare pose-stage keypoints with synthetic ground truth (pure numpy).

Errors are taken over keypoints that are visible in the ground truth and present (finite) in the prediction.
3D errors are root-relative: per frame, both sets are centred on the mean of those same keypoints. Depth errors are
absolute (camera z). Visible keypoints the prediction missed are counted, not hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from mocapflow.keypoints import read_arrays
from mocapflow.synth.groundtruth import GroundTruth


@dataclass(frozen=True)
class PoseErrors:
    """Per-keypoint errors of one video (flat arrays over the compared keypoints)."""

    err2d_px: NDArray[np.float64]
    err3d_mm: NDArray[np.float64]
    depth_mm: NDArray[np.float64]
    frames: int
    visible: int
    missed: int


def joint_order(pred_names: Sequence[str], truth_names: Sequence[str]) -> NDArray[np.int64]:
    """For each ground-truth joint, its index among the predicted joints (ValueError names the missing ones)."""
    index = {n: i for i, n in enumerate(pred_names)}
    missing = [n for n in truth_names if n not in index]
    if missing:
        raise ValueError(
            f"the model does not predict ground-truth joints {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            "compare a model set whose joints match the synthetic markers"
        )
    return np.array([index[n] for n in truth_names], np.int64)


def _centred(points: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """points [F,J,3] minus, per frame, the mean over the joints in ``mask`` [F,J]."""
    w = mask[..., None].astype(np.float64)
    n = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(np.where(w > 0, points, 0.0), axis=1, keepdims=True) / n, np.nan)
    return points - mean


def compare(
    pred2d: NDArray[np.floating],
    pred3d: NDArray[np.floating],
    truth2d: NDArray[np.floating],
    truth3d: NDArray[np.floating],
    visible: NDArray[np.bool_],
) -> PoseErrors:
    """Errors of predictions [F,J,2] px / [F,J,3] mm against the truth on the same frames and joints."""
    p2, p3 = np.asarray(pred2d, np.float64), np.asarray(pred3d, np.float64)
    t2, t3 = np.asarray(truth2d, np.float64), np.asarray(truth3d, np.float64)
    vis = np.asarray(visible, bool)
    if not (p2.shape[:2] == t2.shape[:2] == p3.shape[:2] == t3.shape[:2] == vis.shape):
        raise ValueError(
            f"prediction and truth shapes differ: pred {p2.shape}/{p3.shape}, truth {t2.shape}/{t3.shape}, "
            f"visible {vis.shape}; compare the same frames and joints"
        )
    found2d = vis & np.isfinite(p2).all(-1)
    err2d = np.linalg.norm(p2 - t2, axis=-1)[found2d]
    found3d = vis & np.isfinite(p3).all(-1) & np.isfinite(t3).all(-1)
    err3d = np.linalg.norm(_centred(p3, found3d) - _centred(t3, found3d), axis=-1)[found3d]
    depth = np.abs(p3[..., 2] - t3[..., 2])[found3d]
    return PoseErrors(err2d, err3d, depth, int(vis.shape[0]), int(vis.sum()), int((vis & ~found2d).sum()))


def _median(parts: Sequence[NDArray[np.float64]]) -> float | None:
    values = np.concatenate(parts) if parts else np.zeros(0)
    return float(np.median(values)) if values.size else None


def summarise(errors: Sequence[PoseErrors], seconds: float | None = None) -> dict[str, Any]:
    """One summary over videos: medians (None when nothing was compared), 95th percentile 2D, counts, speed."""
    err2d = [e.err2d_px for e in errors]
    all2d = np.concatenate(err2d) if err2d else np.zeros(0)
    frames = sum(e.frames for e in errors)
    visible = sum(e.visible for e in errors)
    missed = sum(e.missed for e in errors)
    return {
        "videos": len(errors),
        "frames": frames,
        "keypoints_compared": int(all2d.size),
        "missed_fraction": missed / visible if visible else None,
        "median_2d_px": _median(err2d),
        "p95_2d_px": float(np.percentile(all2d, 95)) if all2d.size else None,
        "median_3d_mm": _median([e.err3d_mm for e in errors]),
        "median_depth_mm": _median([e.depth_mm for e in errors]),
        "frames_per_second": frames / seconds if seconds else None,
    }


def compare_with_truth(table: pa.Table, truth: GroundTruth) -> PoseErrors:
    """Errors of a keypoints table against the synthetic ground truth of its video (joints matched by name)."""
    meta, a = read_arrays(table)
    n = len(truth.visible)
    if a["frame"].size != n or not np.array_equal(a["frame"], np.arange(n)):
        raise ValueError(
            f"the keypoints table has {a['frame'].size} frames but the ground truth has {n}; "
            "compare the table of the same video"
        )
    order = joint_order(meta.joint_names, truth.joint_names)
    return compare(
        a["kp2d_px"][:, order], a["kp3d_mm"][:, order], truth.kp2d_px, truth.kp3d_mm, truth.visible
    )
