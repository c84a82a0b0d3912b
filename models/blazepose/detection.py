"""Pose-detector post-processing: SSD anchors, box/keypoint decoding and weighted non-max suppression.

The options are those MediaPipe documents for ``pose_detection.tflite`` in its ``pose_detection_cpu`` graph
(SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppressionCalculator). All coordinates here are
normalised to the detector's 224x224 input tensor, edge to edge (0 = left edge, 1 = right edge).

Each detection carries 4 keypoints: 0 = mid-hip centre, 1 = the point whose offset from it gives the full-body
size and rotation, 2 = mid-shoulder centre, 3 = the same for the upper body. Its box is the FACE box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnchorOptions:
    """SSD anchor scheme (MediaPipe ``SsdAnchorsCalculatorOptions``); defaults are the pose detector's."""

    input_size: tuple[int, int] = (224, 224)  # height, width
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: tuple[float, float] = (0.5, 0.5)  # x, y
    strides: tuple[int, ...] = (8, 16, 32, 32, 32)
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = True


@dataclass(frozen=True)
class DecodeOptions:
    """Raw-output layout (MediaPipe ``TensorsToDetectionsCalculatorOptions``); defaults are the pose detector's."""

    num_keypoints: int = 4
    # reverse_output_order: boxes come as (x, y, w, h) rather than (y, x, h, w)
    reverse_output_order: bool = True
    scale: tuple[float, float, float, float] = (224.0, 224.0, 224.0, 224.0)  # x, y, w, h
    score_clipping: float = 100.0


@dataclass(frozen=True)
class Detections:
    """Decoded detections, normalised to the detector input tensor."""

    boxes: np.ndarray  # [k, 4] x0, y0, x1, y1
    keypoints: np.ndarray  # [k, K, 2] x, y
    scores: np.ndarray  # [k]

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.keypoints[index], self.scores[index])


def _anchor_scale(min_scale: float, max_scale: float, index: int, n: int) -> float:
    if n == 1:
        return (min_scale + max_scale) / 2
    return min_scale + (max_scale - min_scale) * index / (n - 1)


def ssd_anchors(opts: AnchorOptions = AnchorOptions()) -> np.ndarray:
    """Anchors [K, 4] as (x_centre, y_centre, w, h), normalised, in the order the model emits its boxes.

    Consecutive layers with the same stride share one feature map; each map cell gets, for every layer in the
    group, one anchor per aspect ratio plus one at the interpolated scale (when enabled).
    """
    n = len(opts.strides)
    height, width = opts.input_size
    blocks: list[np.ndarray] = []
    layer = 0
    while layer < n:
        scales: list[float] = []
        ratios: list[float] = []
        last = layer
        while last < n and opts.strides[last] == opts.strides[layer]:
            scale = _anchor_scale(opts.min_scale, opts.max_scale, last, n)
            if last == 0 and opts.reduce_boxes_in_lowest_layer:
                scales += [0.1, scale, scale]
                ratios += [1.0, 2.0, 0.5]
            else:
                scales += [scale] * len(opts.aspect_ratios)
                ratios += list(opts.aspect_ratios)
                if opts.interpolated_scale_aspect_ratio > 0:
                    nxt = 1.0 if last == n - 1 else _anchor_scale(opts.min_scale, opts.max_scale, last + 1, n)
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(opts.interpolated_scale_aspect_ratio)
            last += 1
        stride = opts.strides[layer]
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        a = len(scales)
        ys, xs, _ = np.meshgrid(np.arange(fh), np.arange(fw), np.arange(a), indexing="ij")
        block = np.empty((fh, fw, a, 4), np.float64)
        block[..., 0] = (xs + opts.anchor_offset[0]) / fw
        block[..., 1] = (ys + opts.anchor_offset[1]) / fh
        if opts.fixed_anchor_size:
            block[..., 2:] = 1.0
        else:
            sq = np.sqrt(np.asarray(ratios))
            block[..., 2] = np.asarray(scales) * sq
            block[..., 3] = np.asarray(scales) / sq
        blocks.append(block.reshape(-1, 4))
        layer = last
    return np.concatenate(blocks).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_detections(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    min_score: float,
    opts: DecodeOptions = DecodeOptions(),
) -> Detections:
    """Decode one image's raw outputs ``[K, 4 + 2*keypoints]`` and ``[K]`` (or ``[K, 1]``); keep score >= min_score."""
    raw_boxes = np.asarray(raw_boxes, np.float64).reshape(anchors.shape[0], -1)
    expected = 4 + 2 * opts.num_keypoints
    if raw_boxes.shape[1] != expected:
        raise ValueError(
            f"detector output has {raw_boxes.shape[1]} values per anchor, expected {expected}; "
            "is this the pose_detection.tflite the model set was built with?"
        )
    logits = np.clip(
        np.asarray(raw_scores, np.float64).reshape(-1), -opts.score_clipping, opts.score_clipping
    )
    scores = sigmoid(logits)
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes[keep]
    anc = anchors[keep].astype(np.float64)
    sx, sy, sw, sh = opts.scale
    if opts.reverse_output_order:
        dx, dy, dw, dh = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
    else:
        dy, dx, dh, dw = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
    xc = dx / sx * anc[:, 2] + anc[:, 0]
    yc = dy / sy * anc[:, 3] + anc[:, 1]
    w = dw / sw * anc[:, 2]
    h = dh / sh * anc[:, 3]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kp = raw[:, 4:].reshape(-1, opts.num_keypoints, 2)
    kx = kp[..., 0] / sx * anc[:, 2:3] + anc[:, 0:1]
    ky = kp[..., 1] / sy * anc[:, 3:4] + anc[:, 1:2]
    return Detections(
        boxes=boxes.astype(np.float32),
        keypoints=np.stack([kx, ky], axis=-1).astype(np.float32),
        scores=scores[keep].astype(np.float32),
    )


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one x0, y0, x1, y1 box with each of ``boxes`` [k, 4]."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(dets: Detections, iou_threshold: float) -> Detections:
    """MediaPipe's WEIGHTED non-max suppression, best score first.

    The best remaining detection and every other one overlapping it by IoU > ``iou_threshold`` form a cluster;
    the cluster becomes one detection: its boxes and keypoints averaged with score weights, the best score kept.
    """
    order = np.argsort(-dets.scores, kind="stable")
    boxes, kps, scores = [], [], []
    while order.size:
        top = order[0]
        overlap = iou(dets.boxes[top], dets.boxes[order])
        overlap[0] = 1.0
        cluster = order[overlap > iou_threshold]
        order = order[overlap <= iou_threshold]
        w = dets.scores[cluster].astype(np.float64)
        w = w / w.sum()
        boxes.append(np.tensordot(w, dets.boxes[cluster], axes=1))
        kps.append(np.tensordot(w, dets.keypoints[cluster], axes=1))
        scores.append(dets.scores[top])
    k = dets.keypoints.shape[1]
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        keypoints=np.asarray(kps, np.float32).reshape(-1, k, 2),
        scores=np.asarray(scores, np.float32).reshape(-1),
    )


def concat(parts: list[Detections], num_keypoints: int = 4) -> Detections:
    """Detections of several regions (already in image px) as one set."""
    if not parts:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros((0, num_keypoints, 2), np.float32),
            np.zeros((0,), np.float32),
        )
    return Detections(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.keypoints for p in parts]),
        np.concatenate([p.scores for p in parts]),
    )


def inside_region(dets: Detections, region: np.ndarray, tolerance: float = 0.25) -> np.ndarray:
    """Mask [k]: the person's whole-body box (circle around keypoint 0 through keypoint 1, image px) lies inside the
    square ``region`` (x0, y0, side) widened on each side by ``tolerance`` x the box's side, and is no bigger than
    the region.

    A tile that holds only part of a big person (a face, a torso) still fires; the detector then extrapolates the
    body beyond the tile. Those detections are dropped: a coarser region sees that person whole.
    """
    c = dets.keypoints[:, 0].astype(np.float64)
    r = np.linalg.norm(dets.keypoints[:, 1].astype(np.float64) - c, axis=1)
    x0, y0, side = (float(v) for v in region)
    m = tolerance * 2 * r
    lo_x, lo_y, hi_x, hi_y = (
        x0 - 0.5 - m,
        y0 - 0.5 - m,
        x0 + side - 0.5 + m,
        y0 + side - 0.5 + m,
    )  # pixel edges
    inside = (c[:, 0] - r >= lo_x) & (c[:, 1] - r >= lo_y) & (c[:, 0] + r <= hi_x) & (c[:, 1] + r <= hi_y)
    return inside & (2 * r <= side)
