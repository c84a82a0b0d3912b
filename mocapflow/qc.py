"""Pictures people look at: joint angles against ground truth, and a QC GIF of the tracked keypoints and skeleton.

Pure functions that return PNG / GIF bytes; callers write them through the store in one put.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

MAIN_DOFS = (
    "hip_flexion_r",
    "hip_flexion_l",
    "knee_angle_r",
    "knee_angle_l",
    "ankle_angle_r",
    "ankle_angle_l",
    "arm_flex_r",
    "arm_flex_l",
    "elbow_flex_r",
    "elbow_flex_l",
)


def angles_vs_truth_png(
    time_s: NDArray[np.floating],
    fitted_deg: Mapping[str, NDArray[np.floating]],
    truth_deg: Mapping[str, NDArray[np.floating]] | None = None,
    dofs: Sequence[str] = MAIN_DOFS,
    title: str = "",
) -> bytes:
    """A grid of the main joint angles over time (fit solid, ground truth dashed) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    dofs = [d for d in dofs if d in fitted_deg]
    ncols = 2
    nrows = max(1, (len(dofs) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 1.9 * nrows + 0.6), sharex=True, squeeze=False)
    for ax, dof in zip(axes.flat, dofs, strict=False):
        ax.plot(time_s, fitted_deg[dof], color="tab:blue", lw=1.6, label="fit")
        if truth_deg is not None and dof in truth_deg:
            err = np.nanmedian(np.abs(np.asarray(fitted_deg[dof]) - np.asarray(truth_deg[dof])))
            ax.plot(time_s, truth_deg[dof], color="black", lw=1.0, ls="--", label="truth")
            ax.set_title(f"{dof}  (median |err| {err:.1f} deg)", fontsize=9)
        else:
            ax.set_title(dof, fontsize=9)
        ax.set_ylabel("deg", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(dofs) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    if truth_deg is not None:
        axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def draw_skeleton(
    frame: NDArray[np.uint8],
    kp2d: NDArray[np.floating],
    conf: NDArray[np.floating],
    edges: Sequence[Sequence[int]],
    min_conf: float = 0.3,
) -> NDArray[np.uint8]:
    """The frame (RGB) with confident keypoints and the edges between them drawn over it."""
    out = np.ascontiguousarray(frame.copy())
    ok = np.isfinite(kp2d).all(axis=-1) & (conf >= min_conf)
    pts = np.where(ok[:, None], kp2d, 0).round().astype(np.int32)
    for a, b in edges:
        if ok[a] and ok[b]:
            cv2.line(out, tuple(map(int, pts[a])), tuple(map(int, pts[b])), (255, 255, 255), 2, cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        cv2.circle(out, tuple(map(int, pts[j])), 3, (255, 40, 40), -1, cv2.LINE_AA)
    return out


def qc_gif(
    frames: Sequence[NDArray[np.uint8]] | NDArray[np.uint8],
    kp2d: NDArray[np.floating],
    conf: NDArray[np.floating],
    edges: Sequence[Sequence[int]],
    fps: float,
    every: int = 2,
    scale: float = 0.5,
) -> bytes:
    """An animated GIF of every ``every``-th frame with the tracked skeleton, downscaled by ``scale``."""
    import imageio.v3 as iio

    picked = []
    for t in range(0, min(len(frames), len(kp2d)), every):
        img = draw_skeleton(np.asarray(frames[t]), kp2d[t], conf[t], edges)
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        picked.append(img)
    if not picked:
        raise ValueError("qc_gif: no frames to draw")
    buf = io.BytesIO()
    iio.imwrite(buf, np.stack(picked), extension=".gif", duration=1000.0 * every / fps, loop=0)
    return buf.getvalue()
