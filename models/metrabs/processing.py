"""MeTRAbs pre- and post-processing as plain numpy functions (tested without a model).

Geometry: image px with pixel centres at integer coordinates (docs/ARCHITECTURE.md). A detection box becomes a square
crop centred on the box, side ``max(w, h) * crop_scale`` image px, resampled to ``size`` x ``size`` crop px (crop
pixel centres at integers too). The image -> crop map is ``q = k (p - c) + (size - 1) / 2`` with ``k = size / side``.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# -- test-time augmentation -----------------------------------------------------------------------------------
#
# The MeTRAbs authors' schedule (isarandi/metrabs, ``num_aug``, default 5): for augmentation i of n, a rotation of
# the crop evenly spaced in [-25, 25] deg, a zoom (the first n // 2 evenly in [0.8, 1.0), the rest evenly in
# [1.0, 1.1]), a horizontal flip where (i - n // 2) is odd (joint labels swapped left <-> right), and a gamma evenly
# in [0.6, 1.0] applied to the crop's values ((v / 255) ** gamma). Predictions are mapped back and averaged. One
# augmentation (n = 1) is the plain crop. The authors warp with a perspective homography and an optional
# anti-aliasing factor (default 1, none); here the crop stays the affine square crop of ``crop_matrices``, rotated
# and zoomed about its centre, so a rotation of the crop is a rotation of the 3D pose about the camera's z axis.

TTA_ROTATION_DEG = 25.0
TTA_ZOOM = (0.8, 1.0, 1.1)
TTA_GAMMA = (0.6, 1.0)


@dataclass(frozen=True)
class TtaSchedule:
    """Per augmentation: rotation (deg, about the crop centre), zoom, horizontal flip, gamma."""

    angles_deg: NDArray[np.float64]
    zooms: NDArray[np.float64]
    flips: NDArray[np.bool_]
    gammas: NDArray[np.float64]

    @property
    def n(self) -> int:
        return int(self.angles_deg.size)

    def linear(self) -> NDArray[np.float64]:
        """``[n, 2, 2]``: base crop px (about the centre) -> augmented crop px, i.e. ``zoom * F @ R``."""
        a = np.deg2rad(self.angles_deg)
        c, s = np.cos(a), np.sin(a)
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
        flip = np.where(self.flips, -1.0, 1.0)
        rot[:, 0, :] *= flip[:, None]
        return rot * self.zooms[:, None, None]


def tta_schedule(n: int) -> TtaSchedule:
    """The MeTRAbs authors' schedule of ``n`` augmentations (see above); ``n = 1`` is the identity."""
    if n < 1:
        raise ValueError(f"test_time_augmentation must be >= 1, got {n}")
    if n == 1:
        return TtaSchedule(np.zeros(1), np.ones(1), np.zeros(1, bool), np.ones(1))
    half = n // 2
    lo, mid, hi = TTA_ZOOM
    zooms = np.concatenate([np.linspace(lo, mid, half, endpoint=False), np.linspace(mid, hi, n - half)])
    return TtaSchedule(
        angles_deg=np.linspace(-TTA_ROTATION_DEG, TTA_ROTATION_DEG, n),
        zooms=zooms,
        flips=(np.arange(n) - half) % 2 != 0,
        gammas=np.linspace(TTA_GAMMA[0], TTA_GAMMA[1], n),
    )


def augment_matrices(matrices: NDArray[np.float64], schedule: TtaSchedule, size: int) -> NDArray[np.float64]:
    """Image -> augmented crop matrices ``[m, n, 2, 3]``: each base crop matrix followed by the augmentation's
    rotation, zoom and flip about the crop centre ``((size - 1) / 2, (size - 1) / 2)``."""
    base = np.asarray(matrices, np.float64).reshape(-1, 2, 3)
    lin = schedule.linear()  # [n, 2, 2]
    centre = np.full(2, (size - 1) / 2.0)
    out = np.empty((base.shape[0], schedule.n, 2, 3))
    out[..., :2] = np.einsum("aij,mjk->maik", lin, base[:, :, :2])
    out[..., 2] = np.einsum("aij,mj->mai", lin, base[:, :, 2] - centre) + centre
    return out


def gamma_tables(gammas: NDArray[np.floating]) -> NDArray[np.uint8]:
    """``[n, 256]`` lookup tables ``round(255 * (v / 255) ** gamma)``."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.round(255.0 * v[None, :] ** np.asarray(gammas, np.float64)[:, None]).astype(np.uint8)


def unaugment(
    crop2d: NDArray[np.floating],
    rel3d: NDArray[np.floating],
    matrices: NDArray[np.float64],
    schedule: TtaSchedule,
    mirror: NDArray[np.intp],
) -> tuple[F32, F32]:
    """Backbone outputs on augmented crops -> the original frame.

    ``crop2d [m, n, J, 2]`` augmented-crop px and ``rel3d [m, n, J, 3]`` mm in the augmented crop's camera
    orientation, with ``matrices [m, n, 2, 3]`` from :func:`augment_matrices`. Returns image px ``[m, n, J, 2]`` and
    mm ``[m, n, J, 3]`` in the camera orientation; flipped augmentations get their joint labels swapped back."""
    m, n, j = np.shape(crop2d)[:3]
    img = crop_to_image(np.reshape(crop2d, (m * n, j, 2)), np.reshape(matrices, (m * n, 2, 3)))
    img = img.reshape(m, n, j, 2)
    lin = schedule.linear() / schedule.zooms[:, None, None]  # F @ R: 3D is metric, the zoom does not apply
    p3 = np.asarray(rel3d, np.float64).copy()
    # the inverse of F @ R is its transpose
    p3[..., :2] = np.einsum("aji,mapj->mapi", lin, p3[..., :2])
    swap = schedule.flips
    img[:, swap] = img[:, swap][:, :, mirror]
    p3[:, swap] = p3[:, swap][:, :, mirror]
    return img.astype(np.float32), p3.astype(np.float32)


# MeTRAbs' authors' cohort pipeline (Cotton lab, PosePipeline) runs num_aug=10, averages the augmentations, and maps
# each joint's 3D spread across them (sqrt of the summed per-axis variances, mm) to a confidence with a logistic of
# midpoint 200 mm and scale 50 mm: 0.98 at 0 mm, 0.88 at 100 mm, 0.5 at 200 mm, 0.12 at 300 mm, 0.02 at 400 mm.
SPREAD_HALF_MM = 200.0
SPREAD_SCALE_MM = 50.0


def tta_average(
    img2d: NDArray[np.floating], rel3d: NDArray[np.floating]
) -> tuple[F32, F32, F32, NDArray[np.bool_]]:
    """Average un-augmented predictions ``[m, n, J, 2|3]`` over the n augmentations.

    Returns mean image px ``[m, J, 2]``, mean mm ``[m, J, 3]``, each joint's 3D spread ``[m, J]`` (mm: the square root
    of the summed per-axis variances across augmentations) and ``ok [m, J]`` (finite in every augmentation).
    The backbone's 3D has no fixed origin, so before the spread each augmentation's pose is shifted by the median
    (over usable joints) of its offset from the per-joint median pose; a minority of unstable joints cannot move
    the others. Joints not ``ok`` are NaN."""
    p2 = np.asarray(img2d, np.float64)
    p3 = np.asarray(rel3d, np.float64)
    ok = np.all(np.isfinite(p2), axis=(1, 3)) & np.all(np.isfinite(p3), axis=(1, 3))
    p3 = np.where(ok[:, None, :, None], p3, 0.0)
    centre = np.median(p3, axis=1)  # [m, J, 3]
    offset = p3 - centre[:, None]
    shift = np.zeros((p3.shape[0], p3.shape[1], 3))
    for i in np.flatnonzero(ok.any(axis=1)):
        shift[i] = np.median(offset[i][:, ok[i]], axis=1)
    aligned = p3 - shift[:, :, None, :]
    mean3d = aligned.mean(axis=1)
    spread = np.sqrt(aligned.var(axis=1).sum(axis=-1))
    mean2d = np.where(ok[:, None, :, None], p2, 0.0).mean(axis=1)
    mean2d[~ok] = np.nan
    mean3d[~ok] = np.nan
    spread[~ok] = np.nan
    return mean2d.astype(np.float32), mean3d.astype(np.float32), spread.astype(np.float32), ok


def spread_to_confidence(
    spread_mm: NDArray[np.floating], half_mm: float = SPREAD_HALF_MM, scale_mm: float = SPREAD_SCALE_MM
) -> F32:
    """Confidence in (0, 1) from a joint's spread across augmentations: ``1 / (1 + exp((spread - half) / scale))``;
    non-finite spreads give 0."""
    from scipy.special import expit

    s = np.asarray(spread_mm, np.float64)
    conf = expit((half_mm - np.where(np.isfinite(s), s, np.inf)) / scale_mm)
    return conf.astype(np.float32)
