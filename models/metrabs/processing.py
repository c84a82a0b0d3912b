"""MeTRAbs pre- and post-processing as plain numpy functions (tested without a model).

Geometry: image px with pixel centres at integer coordinates (docs/ARCHITECTURE.md). A detection box becomes a square
crop centred on the box, side ``max(w, h) * crop_scale`` image px, resampled to ``size`` x ``size`` crop px (crop
pixel centres at integers too). The image -> crop map is ``q = k (p - c) + (size - 1) / 2`` with ``k = size / side``.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def xywh_to_xyxy(boxes: NDArray[np.floating]) -> F32:
    """Boxes ``[m, 4]`` (x, y, w, h) -> (x0, y0, x1, y1)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def box_iou(a: F32, b: F32) -> F32:
    """IoU of every box in ``a`` [m, 4] with every box in ``b`` [k, 4] (x0, y0, x1, y1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)


def filter_detections(
    boxes_xyxy: F32, scores: F32, threshold: float, nms_iou: float, max_people: int
) -> NDArray[np.intp]:
    """Indices of the boxes kept: score >= threshold, finite, non-empty, greedy NMS, at most ``max_people``."""
    boxes_xyxy = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    ok = (
        np.isfinite(scores)
        & (scores >= threshold)
        & np.all(np.isfinite(boxes_xyxy), axis=1)
        & (boxes_xyxy[:, 2] > boxes_xyxy[:, 0])
        & (boxes_xyxy[:, 3] > boxes_xyxy[:, 1])
    )
    order = np.flatnonzero(ok)[np.argsort(-scores[ok], kind="stable")]
    if order.size == 0:
        return order
    iou = box_iou(boxes_xyxy[order], boxes_xyxy[order])
    keep: list[int] = []
    suppressed = np.zeros(order.size, bool)
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_people:
            break
        suppressed |= iou[i] > nms_iou
    return order[np.asarray(keep, np.intp)]


def crop_matrices(boxes_xyxy: F32, size: int, crop_scale: float = 1.0) -> NDArray[np.float64]:
    """Image -> crop affine matrices ``[m, 2, 3]`` for square crops around the boxes (see module docstring)."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2.0
    side = np.max(b[:, 2:] - b[:, :2], axis=1) * crop_scale
    k = size / side
    m = np.zeros((b.shape[0], 2, 3))
    m[:, 0, 0] = k
    m[:, 1, 1] = k
    m[:, :, 2] = (size - 1) / 2.0 - k[:, None] * centre
    return m


def make_crops(
    frames: NDArray[np.uint8], owner: NDArray[np.intp], matrices: NDArray[np.float64], size: int
) -> NDArray[np.uint8]:
    """Crops ``[m, size, size, 3]``: crop i is taken from ``frames[owner[i]]`` with ``matrices[i]`` (bilinear,
    black outside the image)."""
    out = np.zeros((matrices.shape[0], size, size, 3), np.uint8)
    for i in range(matrices.shape[0]):
        cv2.warpAffine(
            frames[owner[i]],
            matrices[i],
            (size, size),
            dst=out[i],
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    return out


def crops_to_input(crops: NDArray[np.uint8], scale: float = 1.0 / 255.0) -> NDArray[np.float16]:
    """uint8 crops -> the backbone's float16 NHWC input (values ``crop * scale``, [0, 1] by default)."""
    return (crops.astype(np.float32) * np.float32(scale)).astype(np.float16)


def crop_to_image(points: NDArray[np.floating], matrices: NDArray[np.float64]) -> F32:
    """Crop px ``[m, J, 2]`` -> image px with the inverse of each crop's matrix."""
    p = np.asarray(points, np.float64)
    lin = matrices[:, :, :2]
    inv = np.linalg.inv(lin)
    shifted = p - matrices[:, None, :, 2]
    return np.einsum("mij,mkj->mki", inv, shifted).astype(np.float32)


def reconstruct_absolute(
    kp2d_px: NDArray[np.floating],
    kp3d_mm: NDArray[np.floating],
    weights: NDArray[np.floating],
    fx: float,
    fy: float,
    cx: float,
    cy: float,
) -> F32:
    """Place each person's 3D pose ``[m, J, 3]`` (any origin, camera orientation) in the camera frame.

    Finds the translation t minimising the weighted linear reprojection error ``(X + t) - x (Z + t_z)`` (and the same
    for y), where ``x = (u - cx) / fx`` are the normalised image coordinates of the 2D prediction; returns
    ``kp3d + t``. People with fewer than two usable joints get NaN.
    """
    p2 = np.asarray(kp2d_px, np.float64)
    p3 = np.asarray(kp3d_mm, np.float64)
    w = np.asarray(weights, np.float64)
    m, j = p3.shape[:2]
    x = (p2[..., 0] - cx) / fx
    y = (p2[..., 1] - cy) / fy
    usable = np.isfinite(x) & np.isfinite(y) & np.all(np.isfinite(p3), axis=-1) & (w > 0)
    w = np.where(usable, w, 0.0)
    x, y = np.where(usable, x, 0.0), np.where(usable, y, 0.0)
    X, Y, Z = (np.where(usable, p3[..., i], 0.0) for i in range(3))
    a = np.zeros((m, 2 * j, 3))
    a[:, :j, 0] = 1.0
    a[:, :j, 2] = -x
    a[:, j:, 1] = 1.0
    a[:, j:, 2] = -y
    b = np.concatenate([x * Z - X, y * Z - Y], axis=1)
    sw = np.sqrt(np.concatenate([w, w], axis=1))
    a *= sw[..., None]
    b *= sw
    ata = np.einsum("mki,mkj->mij", a, a)
    atb = np.einsum("mki,mk->mi", a, b)
    ok = usable.sum(axis=1) >= 2
    t = np.full((m, 3), np.nan)
    for i in np.flatnonzero(ok):  # a few people per batch: lstsq copes with degenerate (collinear) poses
        t[i] = np.linalg.lstsq(ata[i], atb[i], rcond=None)[0]
    return (p3 + t[:, None, :]).astype(np.float32)
