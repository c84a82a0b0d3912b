"""Subject tracking (pure numpy): link per-frame detections into tracks and pick the subject's track.

Linking is greedy on a cost that adds ``1 - IoU`` of the boxes and the mean keypoint distance (in units of the box
size, ``sqrt(area)``) between a track's last detection, moved on at the track's recent velocity, and a new one, plus
``gap_penalty`` per frame the track was not seen (so a person hidden behind another does not take the detection of
the one in front, whose track was seen a frame ago). A detection may join a track only if its IoU
reaches ``min_iou`` or its keypoint distance is within ``max_kp_dist`` (allowed to grow with the gap since the track
was last seen), and only while that gap is at most ``max_gap_frames``. Frames inside the subject's track where it was
not detected are *bridged*: they keep the track id but no keypoints are invented (NaN, confidence 0).

Every track is kept (:class:`PeopleArrays`, one row per detection of each person, written as ``tracks.parquet``) and
summarised (:class:`TrackSummary`); the subject is then chosen from the summaries by the rule in
:attr:`TrackerConfig.subject`, so a different subject can be taken from the tracks without running the models again
(:func:`subject_from_people`).
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

SubjectRule = Literal["longest", "largest", "central"] | int  # an int is a given track id
SUBJECT_RULES: tuple[str, ...] = ("longest", "largest", "central")


class SubjectTrackError(ValueError):
    """The requested subject track does not exist in this video; the message lists the tracks there are."""


def check_subject_rule(rule: object) -> str | int:
    """``rule`` if it is one of SUBJECT_RULES or a track id (int >= 0), else ValueError."""
    if isinstance(rule, bool) or not (
        (isinstance(rule, int) and rule >= 0) or (isinstance(rule, str) and rule in SUBJECT_RULES)
    ):
        raise ValueError(
            f"subject rule {rule!r} is unknown; use one of {SUBJECT_RULES} or a track id (an integer >= 0)"
        )
    return rule


@dataclass(frozen=True)
class TrackerConfig:
    """How detections are linked and which track is the subject (every field changes the output)."""

    max_gap_frames: int = 15
    subject: SubjectRule = "longest"
    min_iou: float = 0.1
    max_kp_dist: float = 0.5
    gap_growth: float = 0.25  # allowed keypoint distance: max_kp_dist * (1 + gap_growth * missed frames)
    gap_penalty: float = (
        0.02  # added to the cost per frame the track was not seen: recent tracks win close calls
    )
    min_subject_fraction: float = (
        0.5  # "largest"/"central" choose among tracks >= this fraction of the longest
    )

    def __post_init__(self) -> None:
        if self.max_gap_frames < 0:
            raise ValueError(f"max_gap_frames must be >= 0, got {self.max_gap_frames}")
        check_subject_rule(self.subject)
        if not 0.0 <= self.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in [0, 1], got {self.min_iou}")
        if self.max_kp_dist < 0 or self.gap_growth < 0 or self.gap_penalty < 0:
            raise ValueError("max_kp_dist, gap_growth and gap_penalty must be >= 0")
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


@dataclass(frozen=True)
class PeopleArrays:
    """Every tracked person's detections, one row per (track, frame), sorted by track id then frame.

    Shaped for :func:`mocapflow.keypoints.build_tracks_table`; joints cleaned like the subject's (:func:`clean_joints`).
    """

    frame: NDArray[np.int32]
    kp2d_px: NDArray[np.float32]
    kp3d_mm: NDArray[np.float32]
    conf: NDArray[np.float32]
    box: NDArray[np.float32]
    box_score: NDArray[np.float32]
    track_id: NDArray[np.int32]


@dataclass(frozen=True)
class TrackSummary:
    """One person over the video: what the subject rules look at (written into the keypoints table's metadata).

    ``mean_box_px``: mean sqrt(box area); ``centre_offset``: mean distance of the box centre from the image centre
    in units of the image diagonal (0 = centred; None when the image size is unknown); ``mean_score``: mean box score.
    """

    track_id: int
    first_frame: int
    last_frame: int
    frames_detected: int
    mean_box_px: float
    centre_offset: float | None
    mean_score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackSummary:
        return cls(**{f: d[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TrackingResult:
    """Everything the tracker found in one video: the subject's rows, every person's rows and their summaries."""

    subject: SubjectArrays
    people: PeopleArrays
    summaries: tuple[TrackSummary, ...]
    subject_track_id: int | None


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


def _velocity(
    detections: Sequence[FrameDetections], before: tuple[int, int] | None, last: tuple[int, int]
) -> NDArray[np.float64]:
    """Image velocity (px/frame) of a track from its last two detections: the mean displacement of the joints seen
    in both (else of the box centre); zero with a single detection or more than ``_VELOCITY_MAX_STEP`` frames apart."""
    if before is None or last[0] - before[0] > _VELOCITY_MAX_STEP:
        return np.zeros(2)
    (f0, d0), (f1, d1) = before, last
    a, b = detections[f0], detections[f1]
    both = (
        (a.conf[d0] > 0)
        & (b.conf[d1] > 0)
        & np.isfinite(a.kp2d[d0]).all(-1)
        & np.isfinite(b.kp2d[d1]).all(-1)
    )
    if both.any():
        step = (np.asarray(b.kp2d[d1], np.float64)[both] - np.asarray(a.kp2d[d0], np.float64)[both]).mean(
            axis=0
        )
    else:
        step = _box_centre(b.boxes[d1]) - _box_centre(a.boxes[d0])
    return step / float(f1 - f0)


_VELOCITY_MAX_STEP = 3


def link_tracks(detections: Sequence[FrameDetections], config: TrackerConfig) -> list[Track]:
    """Link detections frame by frame into tracks (greedy lowest-cost matching). Ids follow creation order.

    Each track's last detection is moved by its constant-velocity prediction (:func:`_velocity`) before it is
    compared, so when a person passes in front of another, the one who keeps moving keeps its track.
    """
    frames_of: list[list[int]] = []
    index_of: list[list[int]] = []
    last: list[tuple[int, int]] = []  # (frame, detection index) of each track's latest detection
    before: list[tuple[int, int] | None] = []  # ... and the one before it
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
            shift = _velocity(detections, before[ti], last[ti]) * (t - f0)
            kp_pred = np.asarray(prev.kp2d[d0], np.float64) + shift
            box_pred = np.asarray(prev.boxes[d0], np.float64) + np.tile(shift, 2)
            ious = box_iou(box_pred, det.boxes[valid])[0]
            for k, di in enumerate(valid):
                dist = keypoint_distance(
                    kp_pred, prev.conf[d0], box_pred, det.kp2d[di], det.conf[di], det.boxes[di]
                )
                if ious[k] >= config.min_iou or dist <= allowed:
                    pairs.append((float(1.0 - ious[k] + dist + config.gap_penalty * gap), ti, int(di)))
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
            before[ti] = last[ti]
            last[ti] = (t, di)
        for di in valid:
            if int(di) not in used_dets:
                frames_of.append([t])
                index_of.append([int(di)])
                last.append((t, int(di)))
                before.append(None)
    return [
        Track(i, np.asarray(f, np.int64), np.asarray(d, np.int64))
        for i, (f, d) in enumerate(zip(frames_of, index_of, strict=True))
    ]


# -- subject choice -----------------------------------------------------------------------------------------


def _mean_box(track: Track, detections: Sequence[FrameDetections]) -> NDArray[np.float64]:
    boxes = np.stack([detections[f].boxes[d] for f, d in zip(track.frames, track.det_index, strict=True)])
    return np.asarray(boxes, np.float64)


def summarise_tracks(
    tracks: Sequence[Track], detections: Sequence[FrameDetections], image_size: tuple[int, int] | None = None
) -> list[TrackSummary]:
    """One :class:`TrackSummary` per track (``image_size`` = (width, height) gives ``centre_offset``)."""
    out = []
    for t in tracks:
        boxes = _mean_box(t, detections)
        offset = None
        if image_size is not None:
            w, h = image_size
            centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
            offset = float(
                np.linalg.norm(_box_centre(boxes) - centre, axis=-1).mean() / float(np.hypot(w, h))
            )
        scores = [float(detections[f].scores[d]) for f, d in zip(t.frames, t.det_index, strict=True)]
        out.append(
            TrackSummary(
                track_id=t.track_id,
                first_frame=t.first,
                last_frame=t.last,
                frames_detected=t.n_detected,
                mean_box_px=float(_box_size(boxes).mean()),
                centre_offset=offset,
                mean_score=float(min(np.mean(scores), 1.0)),
            )
        )
    return out


def choose_from_summaries(
    summaries: Sequence[TrackSummary], rule: SubjectRule = "longest", min_fraction: float = 0.5
) -> TrackSummary | None:
    """The subject's track summary, or None if there is no track.

    ``longest``: most detected frames (ties: larger mean box). ``largest``: largest mean box size; ``central``: box
    centre closest on average to the image centre. The last two consider only tracks with at least
    ``min_fraction`` of the longest track's detections, so a brief passer-by is never the subject. An int is a
    given track id (:class:`SubjectTrackError` if the video has no such track).
    """
    check_subject_rule(rule)
    if isinstance(rule, int):
        for t in summaries:
            if t.track_id == rule:
                return t
        raise SubjectTrackError(
            f"subject track {rule} does not exist; this video has tracks {[t.track_id for t in summaries]} "
            "(see tracks.parquet or the keypoints table's 'tracks' metadata)"
        )
    if not summaries:
        return None
    longest = max(t.frames_detected for t in summaries)
    if rule == "longest":
        return max(summaries, key=lambda t: (t.frames_detected, t.mean_box_px, -t.track_id))
    candidates = [t for t in summaries if t.frames_detected >= min_fraction * longest]
    if rule == "largest":
        return max(candidates, key=lambda t: (t.mean_box_px, t.frames_detected, -t.track_id))
    if any(t.centre_offset is None for t in candidates):
        raise ValueError("subject rule 'central' needs the image size (width, height)")
    return min(candidates, key=lambda t: (t.centre_offset, -t.frames_detected, t.track_id))


def choose_subject(
    tracks: Sequence[Track],
    detections: Sequence[FrameDetections],
    rule: SubjectRule = "longest",
    image_size: tuple[int, int] | None = None,
    min_fraction: float = 0.5,
) -> Track | None:
    """The subject's track by :func:`choose_from_summaries`, or None if there is no track."""
    chosen = choose_from_summaries(summarise_tracks(tracks, detections, image_size), rule, min_fraction)
    return None if chosen is None else next(t for t in tracks if t.track_id == chosen.track_id)


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


def people_arrays(
    detections: Sequence[FrameDetections], tracks: Sequence[Track], n_joints: int
) -> PeopleArrays:
    """Every track's detections as rows sorted by (track id, frame), joints cleaned (:func:`clean_joints`)."""
    rows = [
        (t.track_id, int(f), int(d))
        for t in sorted(tracks, key=lambda t: t.track_id)
        for f, d in zip(t.frames, t.det_index, strict=True)
    ]
    n = len(rows)
    out = PeopleArrays(
        frame=np.array([r[1] for r in rows], np.int32),
        kp2d_px=np.full((n, n_joints, 2), np.nan, np.float32),
        kp3d_mm=np.full((n, n_joints, 3), np.nan, np.float32),
        conf=np.zeros((n, n_joints), np.float32),
        box=np.zeros((n, 4), np.float32),
        box_score=np.zeros((n,), np.float32),
        track_id=np.array([r[0] for r in rows], np.int32),
    )
    for i, (_tid, f, d) in enumerate(rows):
        det = detections[f]
        out.kp2d_px[i], out.kp3d_mm[i], out.conf[i] = clean_joints(det.kp2d[d], det.kp3d[d], det.conf[d])
        out.box[i] = det.boxes[d]
        out.box_score[i] = min(float(det.scores[d]), 1.0)
    return out


def subject_from_people(people: PeopleArrays, track_id: int | None, n_frames: int) -> SubjectArrays:
    """The subject's per-frame arrays taken from every person's rows: the rows of ``track_id`` (None: nobody).

    Frames between the track's first and last detection where it was not detected are bridged.
    """
    out = empty_subject(n_frames, people.kp2d_px.shape[1])
    if track_id is None:
        return out
    rows = np.flatnonzero(people.track_id == track_id)
    if rows.size == 0:
        raise SubjectTrackError(
            f"subject track {track_id} does not exist; the tracks are {sorted(set(people.track_id.tolist()))}"
        )
    frames = people.frame[rows]
    if frames.max() >= n_frames:
        raise ValueError(
            f"track {track_id} has a row for frame {int(frames.max())} of a {n_frames}-frame video"
        )
    for name in ("kp2d_px", "kp3d_mm", "conf", "box", "box_score"):
        getattr(out, name)[frames] = getattr(people, name)[rows]
    first, last = int(frames.min()), int(frames.max())
    out.track_id[first : last + 1] = track_id
    out.bridged[first : last + 1] = True
    out.bridged[frames] = False
    return out


def subject_arrays(
    detections: Sequence[FrameDetections], track: Track | None, n_joints: int
) -> SubjectArrays:
    """Fill one row per frame from ``track``; frames inside the track without a detection are bridged."""
    if track is None:
        return empty_subject(len(detections), n_joints)
    return subject_from_people(people_arrays(detections, [track], n_joints), track.track_id, len(detections))


def track_people(
    detections: Sequence[FrameDetections],
    n_joints: int,
    config: TrackerConfig,
    image_size: tuple[int, int] | None = None,
) -> TrackingResult:
    """Link every person into tracks, summarise them, choose the subject (``config.subject``)."""
    for t, det in enumerate(detections):
        if det.n and det.kp2d.shape[1] != n_joints:
            raise ValueError(f"frame {t}: detections have {det.kp2d.shape[1]} joints, expected {n_joints}")
    tracks = link_tracks(detections, config)
    summaries = summarise_tracks(tracks, detections, image_size)
    chosen = choose_from_summaries(summaries, config.subject, config.min_subject_fraction)
    people = people_arrays(detections, tracks, n_joints)
    subject_id = None if chosen is None else chosen.track_id
    out = subject_from_people(people, subject_id, len(detections))
    logger.debug(
        "tracking: %d frames, %d tracks, subject %s (%d detected, %d bridged)",
        len(detections),
        len(tracks),
        subject_id,
        0 if chosen is None else chosen.frames_detected,
        int(out.bridged.sum()),
    )
    return TrackingResult(out, people, tuple(summaries), subject_id)


def track_subject(
    detections: Sequence[FrameDetections],
    n_joints: int,
    config: TrackerConfig,
    image_size: tuple[int, int] | None = None,
) -> SubjectArrays:
    """Link, choose the subject (``config.subject``) and return its per-frame arrays."""
    return track_people(detections, n_joints, config, image_size).subject
