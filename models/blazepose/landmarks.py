"""Landmark-model post-processing: image landmarks, confidences, and world landmarks put into the camera frame.

``pose_landmark_full`` outputs, per crop: 39 x (x, y, z, visibility, presence) in input units of its 256x256 input
(the first 33 are the BlazePose landmarks, the rest auxiliary), a pose-presence score, and 39 x (x, y, z) world
landmarks in metres with the origin at the hip centre, axes along the crop's (x right, y down, z away from the
camera). MediaPipe rotates the world landmarks' x/y by the crop rotation so their axes follow the image's.

Camera frame (an approximation, documented): BlazePose gives no absolute depth. We keep the world landmarks'
metric shape and orientation (axes taken as the camera's, which holds near the optical axis) and solve for the one
translation T that best reprojects them onto the 2D landmarks with the video's intrinsics:
``u_j - cx = fx (X_j + Tx) / (Z_j + Tz)`` (and v), linearised as
``fx Tx - (u_j - cx) Tz = (u_j - cx) Z_j - fx X_j``, weighted by confidence and solved by least squares. The hip
centre's depth Tz is therefore ~ focal length x the model's metric body size / the body's size in pixels: it is only
as good as the model's prior on body size (a small adult and a tall one at the same pixel size get the same depth).
"""

from __future__ import annotations

import numpy as np

from models.blazepose.detection import iou, sigmoid
from models.blazepose.geometry import input_units_to_image, roi_from_alignment, roi_matrix
from models.blazepose.skeleton import JOINT_NAMES, N_JOINTS
from models.joints import mirror_indices

N_MODEL_LANDMARKS = 39
# each model point's left/right twin (the 6 auxiliary points lie on the body's midline)
MODEL_MIRROR = np.concatenate([mirror_indices(JOINT_NAMES), np.arange(N_JOINTS, N_MODEL_LANDMARKS)])


def average_with_mirror(
    out: dict[str, np.ndarray], mirrored: dict[str, np.ndarray], input_size: int = 256
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One landmark-model output per crop from its outputs for n crops (``out``) and for the same crops flipped
    left-right (``mirrored``): ``landmarks`` [n, 195], ``world_landmarks`` [n, 117], ``pose_presence`` [n, 1].

    The mirrored crop's points are flipped back (x -> ``input_size`` - x in input units; world x -> -x) and their
    labels swapped left <-> right, then both are averaged (visibility and presence as logits). Where the model saw
    the mirrored crop as the same person facing the other way (its labels, flipped back, match the crop's without
    the swap: the summed 2D distance of the 33 landmarks is smaller), the labels are not swapped, so a crop never
    averages a left limb with a right one. The pose presence is the lower of the two: a person must be seen both
    ways (the mean let a 19 px sliver of an arm through as a third person in a two-person photo).
    Returns the average and that mask [n].
    """
    a = np.asarray(out["landmarks"], np.float64).reshape(-1, N_MODEL_LANDMARKS, 5)
    b = np.asarray(mirrored["landmarks"], np.float64).reshape(-1, N_MODEL_LANDMARKS, 5).copy()
    b[..., 0] = input_size - b[..., 0]
    swapped = np.linalg.norm(b[:, MODEL_MIRROR, :2] - a[..., :2], axis=-1)[:, :N_JOINTS].sum(axis=1)
    kept = np.linalg.norm(b[..., :2] - a[..., :2], axis=-1)[:, :N_JOINTS].sum(axis=1)
    same_labels = kept < swapped
    order = np.where(same_labels[:, None], np.arange(N_MODEL_LANDMARKS), MODEL_MIRROR[None, :])
    rows = np.arange(a.shape[0])[:, None]
    wa = np.asarray(out["world_landmarks"], np.float64).reshape(-1, N_MODEL_LANDMARKS, 3)
    wb = np.asarray(mirrored["world_landmarks"], np.float64).reshape(-1, N_MODEL_LANDMARKS, 3).copy()
    wb[..., 0] *= -1.0
    merged = {
        "landmarks": ((a + b[rows, order]) / 2).reshape(a.shape[0], -1).astype(np.float32),
        "world_landmarks": ((wa + wb[rows, order]) / 2).reshape(a.shape[0], -1).astype(np.float32),
        "pose_presence": np.minimum(out["pose_presence"], mirrored["pose_presence"]).astype(np.float32),
    }
    return merged, same_labels


def decode_landmarks(
    raw: np.ndarray, rois: np.ndarray, input_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Raw landmarks [n, 195] and their crops' ROIs [n, 4] -> 2D px [n, 33, 2] and conf [n, 33].

    conf = sigmoid(visibility) * sigmoid(presence).
    """
    lm = np.asarray(raw, np.float64).reshape(-1, N_MODEL_LANDMARKS, 5)[:, :N_JOINTS]
    kp2d = landmarks_to_image(raw, rois, input_size)[:, :N_JOINTS]
    conf = sigmoid(lm[..., 3]) * sigmoid(lm[..., 4])
    return kp2d.astype(np.float32), conf.astype(np.float32)


def landmarks_to_image(raw: np.ndarray, rois: np.ndarray, input_size: int = 256) -> np.ndarray:
    """Raw landmarks [n, 195] and their crops' ROIs [n, 4] -> all 39 model points in image px [n, 39, 2] (float64).

    Points 33 and 34 are the auxiliary alignment points (hip centre and full-body scale/rotation point) that
    MediaPipe takes the next frame's ROI from.
    """
    lm = np.asarray(raw, np.float64).reshape(-1, N_MODEL_LANDMARKS, 5)
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    if lm.shape[0] != rois.shape[0]:
        raise ValueError(f"{lm.shape[0]} landmark sets for {rois.shape[0]} ROIs")
    out = np.empty((lm.shape[0], N_MODEL_LANDMARKS, 2))
    for i, (roi, p) in enumerate(zip(rois, lm, strict=True)):
        out[i] = input_units_to_image(roi_matrix(roi, input_size), p[:, :2])
    return out


# MediaPipe's pose_landmark graph (0.10.21): the ROI for the next frame comes from the auxiliary points
# 33 (centre) -> 34 (scale/rotation point), rotated so that vector points up, and expanded by 1.25 (square).
AUX_CENTER = 33
AUX_SCALE = 34


def roi_from_landmarks(points: np.ndarray, expand: float = 1.25) -> np.ndarray:
    """All 39 image-px points of each person [n, 39, 2] -> the ROIs [n, 4] to crop them from in the next frame."""
    p = np.asarray(points, np.float64).reshape(-1, N_MODEL_LANDMARKS, 2)
    return roi_from_alignment(p[:, AUX_CENTER], p[:, AUX_SCALE], expand=expand)


def alignment_boxes(center: np.ndarray, scale_point: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes [n, 4] of the circle around ``center`` through ``scale_point`` (the whole body).

    Detections (keypoints 0 and 1) and tracked people (points 33 and 34) both give one, so the two compare.
    """
    c = np.asarray(center, np.float64).reshape(-1, 2)
    r = np.linalg.norm(np.asarray(scale_point, np.float64).reshape(-1, 2) - c, axis=1)[:, None]
    return np.concatenate([c - r, c + r], axis=1)


def dedupe_people(boxes: np.ndarray, scores: np.ndarray, max_iou: float) -> np.ndarray:
    """Indices (ascending) of the people to keep: best score first, dropping any whose box overlaps a kept one by
    IoU > ``max_iou`` (two ROIs that converged on the same person)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or np.all(iou(boxes[i], boxes[keep]) <= max_iou):
            keep.append(int(i))
    return np.sort(np.asarray(keep, dtype=np.intp))


def decode_world(raw: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Raw world landmarks [n, 117] and crop rotations [n] -> [n, 33, 3] metres, hip-centred, image-aligned axes."""
    w = np.asarray(raw, np.float64).reshape(-1, N_MODEL_LANDMARKS, 3)[:, :N_JOINTS]
    c = np.cos(rotation)[:, None]
    s = np.sin(rotation)[:, None]
    x = c * w[..., 0] - s * w[..., 1]
    y = s * w[..., 0] + c * w[..., 1]
    return np.stack([x, y, w[..., 2]], axis=-1)


def camera_translation(
    world: np.ndarray,
    kp2d: np.ndarray,
    weights: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
) -> np.ndarray:
    """Translation T [3] (metres) putting hip-centred world landmarks [J, 3] into the camera frame (module doc).

    Returns NaNs when the system is degenerate or the solution lies behind the camera.
    """
    w = np.sqrt(np.clip(np.asarray(weights, np.float64), 0.0, None))
    if not np.all(np.isfinite(world)) or not np.all(np.isfinite(kp2d)) or w.sum() <= 1e-6:
        return np.full(3, np.nan)
    du = kp2d[:, 0].astype(np.float64) - cx
    dv = kp2d[:, 1].astype(np.float64) - cy
    j = world.shape[0]
    a = np.zeros((2 * j, 3))
    b = np.empty(2 * j)
    a[:j, 0] = fx
    a[:j, 2] = -du
    b[:j] = du * world[:, 2] - fx * world[:, 0]
    a[j:, 1] = fy
    a[j:, 2] = -dv
    b[j:] = dv * world[:, 2] - fy * world[:, 1]
    ww = np.concatenate([w, w])
    t, *_ = np.linalg.lstsq(a * ww[:, None], b * ww, rcond=None)
    if not np.all(np.isfinite(t)) or t[2] <= 0:
        return np.full(3, np.nan)
    return t


def world_to_camera_mm(
    world: np.ndarray, kp2d: np.ndarray, conf: np.ndarray, fx: float, fy: float, cx: float, cy: float
) -> np.ndarray:
    """World landmarks [n, J, 3] m -> camera-frame [n, J, 3] mm (NaN for a person whose translation is degenerate)."""
    out = np.empty(world.shape, np.float32)
    for i in range(world.shape[0]):
        t = camera_translation(world[i], kp2d[i], conf[i], fx, fy, cx, cy)
        out[i] = (world[i] + t) * 1000.0
    return out


def landmark_boxes(kp2d: np.ndarray, conf: np.ndarray, min_conf: float = 0.5) -> np.ndarray:
    """Boxes [n, 4] (x0, y0, x1, y1) around each person's landmarks [n, J, 2] with conf >= ``min_conf``.

    BlazePose also guesses landmarks outside the frame (legs below a portrait's edge); they would blow the box up.
    A person with fewer than two confident landmarks gets the box of all of them.
    """
    boxes = np.empty((kp2d.shape[0], 4), np.float32)
    for i, (p, c) in enumerate(zip(kp2d, conf, strict=True)):
        sel = p[c >= min_conf] if np.count_nonzero(c >= min_conf) >= 2 else p
        boxes[i, :2] = sel.min(axis=0)
        boxes[i, 2:] = sel.max(axis=0)
    return boxes
