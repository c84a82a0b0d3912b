"""Subject tracking (pure numpy): link per-frame detections into tracks and pick the subject's track.

Linking is greedy on a cost that adds ``1 - IoU`` of the boxes and the mean keypoint distance (in units of the box
size, ``sqrt(area)``) between a track's last detection and a new one. A detection may join a track only if its IoU
reaches ``min_iou`` or its keypoint distance is within ``max_kp_dist`` (allowed to grow with the gap since the track
was last seen), and only while that gap is at most ``max_gap_frames``. Frames inside the subject's track where it was
not detected are *bridged*: they keep the track id but no keypoints are invented (NaN, confidence 0).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models.runtime import FrameDetections

logger = logging.getLogger(__name__)

SubjectRule = Literal["longest", "largest", "central"]
SUBJECT_RULES: tuple[str, ...] = ("longest", "largest", "central")


@dataclass(frozen=True)
class TrackerConfig:
    """How detections are linked and which track is the subject (every field changes the output)."""

    max_gap_frames: int = 15
    subject: SubjectRule = "longest"
    min_iou: float = 0.1
    max_kp_dist: float = 0.5
    gap_growth: float = 0.25  # allowed keypoint distance: max_kp_dist * (1 + gap_growth * missed frames)
    min_subject_fraction: float = (
        0.5  # "largest"/"central" choose among tracks >= this fraction of the longest
    )

    def __post_init__(self) -> None:
        if self.max_gap_frames < 0:
            raise ValueError(f"max_gap_frames must be >= 0, got {self.max_gap_frames}")
        if self.subject not in SUBJECT_RULES:
            raise ValueError(f"subject rule {self.subject!r} is unknown; use one of {SUBJECT_RULES}")
        if not 0.0 <= self.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in [0, 1], got {self.min_iou}")
        if self.max_kp_dist < 0 or self.gap_growth < 0:
            raise ValueError("max_kp_dist and gap_growth must be >= 0")
        if not 0.0 <= self.min_subject_fraction <= 1.0:
            raise ValueError(f"min_subject_fraction must be in [0, 1], got {self.min_subject_fraction}")

    def to_params(self) -> dict[str, Any]:
        """Plain JSON values (part of the keypoints storage key)."""
        return asdict(self)


@dataclass(frozen=True)
class Track:
    """One person over time: the frames where it was detected and the detection's index in each."""

    track_id: int
    frames: NDArray[np.int64]
    det_index: NDArray[np.int64]

    @property
    def n_detected(self) -> int:
        return int(self.frames.size)

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])


@dataclass(frozen=True)
class SubjectArrays:
    """The subject's per-frame arrays, shaped for :func:`mocapflow.keypoints.build_table`.

    ``bridged`` marks frames inside the subject's track where it was not detected (track id kept, keypoints NaN).
    """

    frame: NDArray[np.int32]
    kp2d_px: NDArray[np.float32]
    kp3d_mm: NDArray[np.float32]
    conf: NDArray[np.float32]
    box: NDArray[np.float32]
    box_score: NDArray[np.float32]
    track_id: NDArray[np.int32]
    bridged: NDArray[np.bool_]

    @property
    def n_frames(self) -> int:
        return int(self.frame.size)


# -- geometry -----------------------------------------------------------------------------------------------


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """IoU of boxes a [n,4] and b [m,4] (x0, y0, x1, y1) -> [n, m]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _box_size(box: NDArray[np.floating]) -> NDArray[np.float64]:
    """sqrt(area) of boxes [..., 4], at least 1 px."""
    b = np.asarray(box, np.float64)
    return np.sqrt(np.maximum((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 1.0))


def _box_centre(box: NDArray[np.floating]) -> NDArray[np.float64]:
    b = np.asarray(box, np.float64)
    return np.stack([(b[..., 0] + b[..., 2]) / 2.0, (b[..., 1] + b[..., 3]) / 2.0], axis=-1)


def keypoint_distance(
    kp_a: NDArray[np.floating],
    conf_a: NDArray[np.floating],
    box_a: NDArray[np.floating],
    kp_b: NDArray[np.floating],
    conf_b: NDArray[np.floating],
    box_b: NDArray[np.floating],
) -> float:
    """Mean distance of the joints seen in both detections, in units of their mean box size.

    Falls back to the box-centre distance when no joint is seen in both.
    """
    scale = float((_box_size(box_a) + _box_size(box_b)) / 2.0)
    both = (conf_a > 0) & (conf_b > 0) & np.isfinite(kp_a).all(-1) & np.isfinite(kp_b).all(-1)
    if both.any():
        d = np.linalg.norm(np.asarray(kp_a, np.float64)[both] - np.asarray(kp_b, np.float64)[both], axis=-1)
        return float(d.mean() / scale)
    return float(np.linalg.norm(_box_centre(box_a) - _box_centre(box_b)) / scale)


# -- cleaning -----------------------------------------------------------------------------------------------


def _valid_detections(det: FrameDetections) -> NDArray[np.int64]:
    """Indices of detections with a finite, well-formed box and a score in (0, 1]."""
    if det.n == 0:
        return np.zeros((0,), np.int64)
    b = det.boxes
    ok = np.isfinite(b).all(-1) & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
    ok &= np.isfinite(det.scores) & (det.scores > 0)
    return np.flatnonzero(ok).astype(np.int64)


def clean_joints(
    kp2d: NDArray[np.floating], kp3d: NDArray[np.floating], conf: NDArray[np.floating]
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Enforce the table's missing-data rules on one person's joints.

    A joint is missing (2D and 3D NaN, confidence 0) when its confidence is not > 0 or its 2D point is not finite;
    a 3D point that is partly non-finite or exactly (0, 0, 0) becomes NaN; confidences are clipped to [0, 1].
    """
    k2 = np.array(kp2d, np.float32, copy=True)
    k3 = np.array(kp3d, np.float32, copy=True)
    c = np.nan_to_num(np.asarray(conf, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    c = np.clip(c, 0.0, 1.0)
    missing = ~(c > 0) | ~np.isfinite(k2).all(-1)
    bad3d = missing | ~np.isfinite(k3).all(-1) | np.all(k3 == 0, axis=-1)
    k2[missing] = np.nan
    k3[bad3d] = np.nan
    c[missing] = 0.0
    return k2, k3, c


# -- linking ------------------------------------------------------------------------------------------------


def link_tracks(detections: Sequence[FrameDetections], config: TrackerConfig) -> list[Track]:
    """Link detections frame by frame into tracks (greedy lowest-cost matching). Ids follow creation order."""
    frames_of: list[list[int]] = []
    index_of: list[list[int]] = []
    last: list[tuple[int, int]] = []  # (frame, detection index) of each track's latest detection
    for t, det in enumerate(detections):
        valid = _valid_detections(det)
        if valid.size == 0:
            continue
        active = [i for i, (f, _) in enumerate(last) if t - f - 1 <= config.max_gap_frames]
        pairs: list[tuple[float, int, int]] = []
        for ti in active:
            f0, d0 = last[ti]
            prev = detections[f0]
            gap = t - f0 - 1
            allowed = config.max_kp_dist * (1.0 + config.gap_growth * gap)
            ious = box_iou(prev.boxes[d0], det.boxes[valid])[0]
            for k, di in enumerate(valid):
                dist = keypoint_distance(
                    prev.kp2d[d0], prev.conf[d0], prev.boxes[d0], det.kp2d[di], det.conf[di], det.boxes[di]
                )
                if ious[k] >= config.min_iou or dist <= allowed:
                    pairs.append((float(1.0 - ious[k] + dist), ti, int(di)))
        pairs.sort()
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        for _cost, ti, di in pairs:
            if ti in used_tracks or di in used_dets:
                continue
            used_tracks.add(ti)
            used_dets.add(di)
            frames_of[ti].append(t)
            index_of[ti].append(di)
            last[ti] = (t, di)
        for di in valid:
            if int(di) not in used_dets:
                frames_of.append([t])
                index_of.append([int(di)])
                last.append((t, int(di)))
    return [
        Track(i, np.asarray(f, np.int64), np.asarray(d, np.int64))
        for i, (f, d) in enumerate(zip(frames_of, index_of, strict=True))
    ]


# -- subject choice -----------------------------------------------------------------------------------------


def _mean_box(track: Track, detections: Sequence[FrameDetections]) -> NDArray[np.float64]:
    boxes = np.stack([detections[f].boxes[d] for f, d in zip(track.frames, track.det_index, strict=True)])
    return np.asarray(boxes, np.float64)


def choose_subject(
    tracks: Sequence[Track],
    detections: Sequence[FrameDetections],
    rule: SubjectRule = "longest",
    image_size: tuple[int, int] | None = None,
    min_fraction: float = 0.5,
) -> Track | None:
    """The subject's track, or None if there is no track.

    ``longest``: most detected frames (ties: larger mean box). ``largest``: largest mean box size; ``central``: box
    centre closest on average to the image centre (needs ``image_size`` = (width, height)). The last two consider only
    tracks with at least ``min_fraction`` of the longest track's detections, so a brief passer-by is never the subject.
    """
    if not tracks:
        return None
    sizes = {t.track_id: float(_box_size(_mean_box(t, detections)).mean()) for t in tracks}
    longest = max(t.n_detected for t in tracks)
    if rule == "longest":
        return max(tracks, key=lambda t: (t.n_detected, sizes[t.track_id], -t.track_id))
    candidates = [t for t in tracks if t.n_detected >= min_fraction * longest]
    if rule == "largest":
        return max(candidates, key=lambda t: (sizes[t.track_id], t.n_detected, -t.track_id))
    if rule == "central":
        if image_size is None:
            raise ValueError("subject rule 'central' needs the image size (width, height)")
        w, h = image_size
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        diag = float(np.hypot(w, h))

        def off_centre(t: Track) -> float:
            return float(
                np.linalg.norm(_box_centre(_mean_box(t, detections)) - centre, axis=-1).mean() / diag
            )

        return min(candidates, key=lambda t: (off_centre(t), -t.n_detected, t.track_id))
    raise ValueError(f"subject rule {rule!r} is unknown; use one of {SUBJECT_RULES}")


# -- output -------------------------------------------------------------------------------------------------


def empty_subject(n_frames: int, n_joints: int) -> SubjectArrays:
    """Arrays for frames with no subject: NaN keypoints and box, confidence and box score 0, track id -1."""
    return SubjectArrays(
        frame=np.arange(n_frames, dtype=np.int32),
        kp2d_px=np.full((n_frames, n_joints, 2), np.nan, np.float32),
        kp3d_mm=np.full((n_frames, n_joints, 3), np.nan, np.float32),
        conf=np.zeros((n_frames, n_joints), np.float32),
        box=np.full((n_frames, 4), np.nan, np.float32),
        box_score=np.zeros((n_frames,), np.float32),
        track_id=np.full((n_frames,), -1, np.int32),
        bridged=np.zeros((n_frames,), bool),
    )


def subject_arrays(
    detections: Sequence[FrameDetections], track: Track | None, n_joints: int
) -> SubjectArrays:
    """Fill one row per frame from ``track``; frames inside the track without a detection are bridged."""
    out = empty_subject(len(detections), n_joints)
    if track is None:
        return out
    for f, d in zip(track.frames, track.det_index, strict=True):
        det = detections[f]
        k2, k3, c = clean_joints(det.kp2d[d], det.kp3d[d], det.conf[d])
        out.kp2d_px[f], out.kp3d_mm[f], out.conf[f] = k2, k3, c
        out.box[f] = det.boxes[d]
        out.box_score[f] = min(float(det.scores[d]), 1.0)
    out.track_id[track.first : track.last + 1] = track.track_id
    out.bridged[track.first : track.last + 1] = True
    out.bridged[track.frames] = False
    return out


def track_subject(
    detections: Sequence[FrameDetections],
    n_joints: int,
    config: TrackerConfig,
    image_size: tuple[int, int] | None = None,
) -> SubjectArrays:
    """Link, choose the subject (``config.subject``) and return its per-frame arrays."""
    for t, det in enumerate(detections):
        if det.n and det.kp2d.shape[1] != n_joints:
            raise ValueError(f"frame {t}: detections have {det.kp2d.shape[1]} joints, expected {n_joints}")
    tracks = link_tracks(detections, config)
    subject = choose_subject(tracks, detections, config.subject, image_size, config.min_subject_fraction)
    out = subject_arrays(detections, subject, n_joints)
    logger.debug(
        "tracking: %d frames, %d tracks, subject %s (%d detected, %d bridged)",
        len(detections),
        len(tracks),
        None if subject is None else subject.track_id,
        0 if subject is None else subject.n_detected,
        int(out.bridged.sum()),
    )
    return out
