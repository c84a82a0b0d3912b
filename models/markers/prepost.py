"""Pre- and post-processing of the markers model set: plain numpy (and OpenCV for the warp), no model needed.

Crops: a square around each person's box (``margin`` of the box's longer side added on every side), resampled to
``size`` x ``size``. Pixel centres sit at integer coordinates in both the frame and the crop, so the crop's affine
maps the box centre to ``((size - 1) / 2, (size - 1) / 2)``:  q = s * (p - c) + (size - 1) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

CROP_SIZE = 256
CROP_MARGIN = 0.08  # of the box's longer side, added on every side
MIN_BOX_SIDE_PX = 32.0


class PinholeLike(Protocol):
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass(frozen=True)
class Crops:
    """A batch of crops and how they map back: ``affine`` [m, 2, 3] frame px -> crop px, ``scale`` [m] crop px
    per frame px, ``frame_index`` [m] the frame each crop comes from."""

    pixels: NDArray[np.float32]  # [m, S, S, 3] RGB 0..255
    affine: NDArray[np.float64]
    scale: NDArray[np.float64]
    frame_index: NDArray[np.int64]


def crop_affines(
    boxes: NDArray, size: int = CROP_SIZE, margin: float = CROP_MARGIN
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """boxes [m, 4] (x0, y0, x1, y1 px) -> (affine [m, 2, 3] frame -> crop, scale [m] crop px per frame px)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = 0.5 * (b[:, :2] + b[:, 2:])
    side = np.maximum(np.max(b[:, 2:] - b[:, :2], axis=1) * (1.0 + 2.0 * margin), MIN_BOX_SIDE_PX)
    s = size / side
    half = (size - 1) / 2.0
    a = np.zeros((len(b), 2, 3))
    a[:, 0, 0] = s
    a[:, 1, 1] = s
    a[:, :, 2] = half - s[:, None] * centre
    return a, s


def invert_affines(affine: NDArray) -> NDArray[np.float64]:
    """[m, 2, 3] -> the inverse maps [m, 2, 3]."""
    a = np.asarray(affine, np.float64)
    lin = np.linalg.inv(a[:, :, :2])
    return np.concatenate([lin, -lin @ a[:, :, 2:]], axis=2)


def apply_affines(affine: NDArray, points: NDArray) -> NDArray[np.float64]:
    """affine [m, 2, 3], points [m, K, 2] -> [m, K, 2]."""
    a = np.asarray(affine, np.float64)
    p = np.asarray(points, np.float64)
    return np.einsum("mij,mkj->mki", a[:, :, :2], p) + a[:, None, :, 2]


def warp_crops(
    frames: NDArray[np.uint8],
    frame_index: NDArray,
    affine: NDArray,
    size: int = CROP_SIZE,
) -> NDArray[np.float32]:
    """frames uint8 [n, H, W, 3], one affine [m, 2, 3] per crop of frame ``frame_index[m]`` -> float32 [m, S, S, 3].

    Bilinear; outside the frame is black (no palette colour and no background grey, so the backbone ignores it).
    """
    out = np.empty((len(affine), size, size, 3), np.float32)
    for i, (fi, a) in enumerate(zip(frame_index, affine, strict=True)):
        out[i] = cv2.warpAffine(
            frames[int(fi)],
            np.asarray(a, np.float64),
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    return out


def make_crops(
    frames: NDArray[np.uint8], boxes: list[NDArray], size: int = CROP_SIZE, margin: float = CROP_MARGIN
) -> Crops:
    """Crops for every box of every frame (``boxes[i]`` [m_i, 4] for frame i), in frame order."""
    frame_index = np.concatenate(
        [np.full(len(b), i, np.int64) for i, b in enumerate(boxes)] or [np.zeros(0, np.int64)]
    )
    all_boxes = np.concatenate(
        [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes] or [np.zeros((0, 4))]
    )
    affine, scale = crop_affines(all_boxes, size, margin)
    return Crops(warp_crops(frames, frame_index, affine, size), affine, scale, frame_index)


def boxes_in_crops(boxes: NDArray, affine: NDArray, pad_px: float = 2.0) -> NDArray[np.float32]:
    """Each crop's own box [m, 4] in its crop px, grown by ``pad_px`` crop px."""
    b = np.asarray(boxes, np.float64).reshape(-1, 2, 2)
    q = apply_affines(affine, b).reshape(-1, 4)
    return (q + np.array([-pad_px, -pad_px, pad_px, pad_px])).astype(np.float32)


def select_detections(
    boxes: NDArray, scores: NDArray, min_score: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Drop the detector's padding rows (score 0) and weak detections; keep the detector's order."""
    s = np.asarray(scores, np.float32).reshape(-1)
    keep = s >= max(min_score, 1e-6)
    return np.asarray(boxes, np.float32).reshape(-1, 4)[keep], s[keep]


def backproject(uv: NDArray, depth: NDArray, intrinsics: PinholeLike) -> NDArray[np.float64]:
    """Pixels [..., 2] and camera-frame depth [...] -> camera-frame points [..., 3] (the unit of ``depth``)."""
    p = np.asarray(uv, np.float64)
    z = np.asarray(depth, np.float64)
    x = (p[..., 0] - intrinsics.cx) / intrinsics.fx * z
    y = (p[..., 1] - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=-1)


def postprocess(
    kp2d_crop: NDArray,
    depth_mm: NDArray,
    conf: NDArray,
    affine: NDArray,
    intrinsics: PinholeLike,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Backbone outputs for m crops -> (kp2d [m, J, 2] frame px, kp3d [m, J, 3] camera mm, conf [m, J]).

    Keypoints with confidence 0 become NaN (missing, never a fake zero).
    """
    uv = apply_affines(invert_affines(affine), kp2d_crop)
    xyz = backproject(uv, depth_mm, intrinsics)
    c = np.clip(np.asarray(conf, np.float32), 0.0, 1.0)
    missing = ~(c > 0) | ~np.isfinite(xyz).all(axis=-1)
    uv[missing] = np.nan
    xyz[missing] = np.nan
    c[missing] = 0.0
    return uv.astype(np.float32), xyz.astype(np.float32), c
