"""Subject tracking on hand-made detections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mocapflow.pose.tracking import (
    SubjectTrackError,
    TrackerConfig,
    box_iou,
    choose_subject,
    clean_joints,
    link_tracks,
    subject_from_people,
    track_people,
    track_subject,
)
from models.runtime import FrameDetections

J = 3


def person(
    cx: float, cy: float, w: float = 60.0, h: float = 160.0, score: float = 0.9
) -> dict[str, np.ndarray]:
    """A person with 3 joints (head, hip, feet) inside a box centred at (cx, cy)."""
    kp2d = np.array([[cx, cy - 0.4 * h], [cx, cy], [cx, cy + 0.4 * h]], np.float32)
    return {
        "box": np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32),
        "score": np.float32(score),
        "kp2d": kp2d,
        "kp3d": np.concatenate([kp2d, np.full((J, 1), 3000.0, np.float32)], axis=1),
        "conf": np.full((J,), 0.8, np.float32),
    }


def frame(*people: dict[str, np.ndarray]) -> FrameDetections:
    if not people:
        return FrameDetections.empty(J)
    return FrameDetections(
        boxes=np.stack([p["box"] for p in people]),
        scores=np.array([p["score"] for p in people], np.float32),
        kp2d=np.stack([p["kp2d"] for p in people]),
        kp3d=np.stack([p["kp3d"] for p in people]),
        conf=np.stack([p["conf"] for p in people]),
    )


def test_box_iou_matches_hand_computed_values() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    # overlap 5x10 = 50, union 100 + 100 - 50 = 150
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_two_people_stay_on_their_own_tracks() -> None:
    # A walks right from x=100, B walks left from x=500; their paths never cross. Detection order swaps halfway.
    dets = []
    for t in range(20):
        a, b = person(100 + 5 * t, 240), person(500 - 5 * t, 240, h=120)
        dets.append(frame(a, b) if t < 10 else frame(b, a))
    tracks = link_tracks(dets, TrackerConfig())
    assert len(tracks) == 2
    for tr in tracks:
        assert tr.frames.tolist() == list(range(20))
        xs = [float(dets[f].boxes[d, [0, 2]].mean()) for f, d in zip(tr.frames, tr.det_index, strict=True)]
        steps = np.diff(xs)
        assert np.allclose(steps, steps[0]) and abs(steps[0]) == pytest.approx(5.0)


def test_person_who_leaves_and_returns_within_the_gap_keeps_one_track() -> None:
    # Seen in frames 0-9, absent 10-14 (5 frames <= max gap 6), back in 15-24 near where it left.
    dets = [frame(person(200 + 2 * t, 240)) if not 10 <= t <= 14 else frame() for t in range(25)]
    out = track_subject(dets, J, TrackerConfig(max_gap_frames=6))
    assert out.track_id.tolist() == [0] * 25
    assert out.bridged.tolist() == [10 <= t <= 14 for t in range(25)]
    gap = slice(10, 15)
    assert np.isnan(out.kp2d_px[gap]).all() and np.isnan(out.kp3d_mm[gap]).all()
    assert (out.conf[gap] == 0).all() and np.isnan(out.box[gap]).all() and (out.box_score[gap] == 0).all()
    # detected frames carry the detections themselves
    np.testing.assert_array_equal(out.kp2d_px[20], person(240, 240)["kp2d"])
    np.testing.assert_array_equal(out.box[3], person(206, 240)["box"])
    assert out.box_score[3] == pytest.approx(0.9)


def test_a_gap_longer_than_the_limit_starts_a_new_track() -> None:
    dets = [frame(person(200, 240)) if not 10 <= t <= 14 else frame() for t in range(25)]
    tracks = link_tracks(dets, TrackerConfig(max_gap_frames=4))
    assert [tr.frames.tolist() for tr in tracks] == [list(range(10)), list(range(15, 25))]


def test_short_second_track_is_not_the_subject() -> None:
    # The subject is small and seen in all 30 frames; a bigger passer-by is seen for 6 frames in the middle.
    dets = []
    for t in range(30):
        people = [person(150 + t, 240, w=40, h=100)]
        if 12 <= t < 18:
            people.append(person(450, 240, w=120, h=300))
        dets.append(frame(*people))
    for rule in ("longest", "largest", "central"):
        out = track_subject(dets, J, TrackerConfig(subject=rule), image_size=(640, 480))
        np.testing.assert_allclose(out.box[:, 0], 150 + np.arange(30) - 20)
        assert (out.track_id == out.track_id[0]).all() and out.track_id[0] >= 0


def test_subject_rules_choose_by_their_criterion() -> None:
    # Two people in all frames: A small and central, B large and off-centre.
    dets = [frame(person(320, 240, w=40, h=100), person(560, 240, w=100, h=260)) for _ in range(10)]
    tracks = link_tracks(dets, TrackerConfig())
    assert len(tracks) == 2
    largest = choose_subject(tracks, dets, "largest")
    central = choose_subject(tracks, dets, "central", image_size=(640, 480))
    assert largest is not None and central is not None
    assert dets[0].boxes[largest.det_index[0], 0] == pytest.approx(510.0)
    assert dets[0].boxes[central.det_index[0], 0] == pytest.approx(300.0)
    with pytest.raises(ValueError, match="image size"):
        choose_subject(tracks, dets, "central")
    # a given track id
    given = choose_subject(tracks, dets, 1)
    assert given is not None and given.track_id == 1
    with pytest.raises(
        SubjectTrackError, match=r"subject track 5 does not exist; this video has tracks \[0, 1\]"
    ):
        choose_subject(tracks, dets, 5)
    for bad in (-1, "track:1", True, 1.0):
        with pytest.raises(ValueError, match="is unknown"):
            TrackerConfig(subject=bad)  # type: ignore[arg-type]


def test_every_person_is_kept_and_summarised() -> None:
    # A (small, central) in frames 0-9; B (large, right) in frames 2-5 with a score above 1 (clipped)
    dets = [
        frame(
            *(
                [person(320, 240, w=40, h=100)]
                + ([person(560, 200, w=100, h=256, score=1.5)] if 2 <= t <= 5 else [])
            )
        )
        for t in range(10)
    ]
    result = track_people(dets, J, TrackerConfig(subject=1), image_size=(640, 480))
    assert result.subject_track_id == 1
    a, b = result.summaries
    assert (a.track_id, a.first_frame, a.last_frame, a.frames_detected) == (0, 0, 9, 10)
    assert (b.track_id, b.first_frame, b.last_frame, b.frames_detected) == (1, 2, 5, 4)
    assert a.mean_box_px == pytest.approx(math.sqrt(40 * 100)) and b.mean_box_px == pytest.approx(160.0)
    assert a.centre_offset == pytest.approx(math.hypot(0.5, 0.5) / 800.0)
    assert b.centre_offset == pytest.approx(math.hypot(240.5, 39.5) / 800.0)
    assert (a.mean_score, b.mean_score) == (pytest.approx(0.9), 1.0)
    people = result.people
    assert people.track_id.tolist() == [0] * 10 + [1] * 4
    assert people.frame.tolist() == list(range(10)) + [2, 3, 4, 5]
    np.testing.assert_array_equal(people.kp2d_px[10], person(560, 200, w=100, h=256)["kp2d"])
    # the subject is B: its frames only, "no subject" elsewhere (not bridged: outside its track)
    assert result.subject.track_id.tolist() == [-1, -1, 1, 1, 1, 1, -1, -1, -1, -1]
    np.testing.assert_array_equal(result.subject.box[2:6], people.box[10:])
    # the same subject taken from the people's rows
    again = subject_from_people(people, 1, 10)
    for name in ("kp2d_px", "kp3d_mm", "conf", "box", "box_score", "track_id", "bridged"):
        np.testing.assert_array_equal(getattr(again, name), getattr(result.subject, name), err_msg=name)


def test_empty_frames_and_no_people_at_all() -> None:
    out = track_subject([frame() for _ in range(4)], J, TrackerConfig())
    assert out.n_frames == 4 and out.frame.tolist() == [0, 1, 2, 3]
    assert (out.track_id == -1).all() and not out.bridged.any()
    assert np.isnan(out.kp2d_px).all() and np.isnan(out.box).all()
    assert (out.conf == 0).all() and (out.box_score == 0).all()
    assert track_subject([], J, TrackerConfig()).n_frames == 0

    # empty frames before and after the subject are "no subject", not bridged
    dets = [frame(), frame(), *[frame(person(300, 240)) for _ in range(3)], frame()]
    out = track_subject(dets, J, TrackerConfig())
    assert out.track_id.tolist() == [-1, -1, 0, 0, 0, -1]
    assert not out.bridged.any()


def test_clean_joints_turns_unconfident_or_broken_joints_into_missing() -> None:
    kp2d = np.array([[1, 2], [3, 4], [np.nan, 5], [7, 8]], np.float32)
    kp3d = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]], np.float32)
    conf = np.array([0.5, 0.0, 0.9, 1.5], np.float32)
    k2, k3, c = clean_joints(kp2d, kp3d, conf)
    np.testing.assert_array_equal(c, [0.5, 0.0, 0.0, 1.0])
    assert np.isnan(k2[1:3]).all() and np.isfinite(k2[[0, 3]]).all()
    np.testing.assert_array_equal(k3[0], [1, 2, 3])
    assert np.isnan(k3[1:]).all()  # missing joints and the (0, 0, 0) point


def test_detections_with_zero_score_or_broken_box_are_ignored() -> None:
    bad = person(300, 240, score=0.0)
    broken = person(100, 240)
    broken["box"] = np.array([10, np.nan, 20, 30], np.float32)
    good = person(500, 240)
    out = track_subject([frame(bad, broken, good)] * 3, J, TrackerConfig())
    np.testing.assert_array_equal(out.box, np.stack([good["box"]] * 3))


def crossing(t: int) -> FrameDetections:
    """A stands at x=300; B, as big, walks in front of A from x=60 to x=540 (16 px/frame, frames 0-30). Where they
    overlap (|xB - 300| < 100) the detector returns one box around both, with B's keypoints (B is in front)."""
    a, b = person(300, 240), person(60 + 16 * t, 250, h=170)
    if abs(b["box"][0] + 30 - 300) >= 100:
        return frame(a, b) if t % 2 else frame(b, a)  # detection order varies
    both = dict(b)
    both["box"] = np.concatenate(
        [np.minimum(a["box"][:2], b["box"][:2]), np.maximum(a["box"][2:], b["box"][2:])]
    )
    return frame(both)


def test_two_people_crossing_never_swap_tracks() -> None:
    dets = [crossing(t) for t in range(31)]
    covered = [t for t in range(31) if dets[t].n == 1]
    assert covered == list(range(9, 22))  # 13 frames

    def person_of(tracks: list) -> list[str]:
        out = []
        for tr in tracks:
            kp = np.stack([dets[f].kp2d[d] for f, d in zip(tr.frames, tr.det_index, strict=True)])
            is_a = np.isclose(kp[:, 1, 0], 300.0) & np.isclose(
                kp[:, 1, 1], 240.0
            )  # A's hip; B's is 10 px lower
            assert is_a.all() or not is_a.any(), f"track {tr.track_id} mixes A and B"
            out.append("A" if is_a.all() else "B")
        return out

    # A hidden for 13 frames: bridged with a gap allowance of 13, a new track for A with 12, never B's track
    tracks = link_tracks(dets, TrackerConfig(max_gap_frames=13))
    assert person_of(tracks) == ["A", "B"] or person_of(tracks) == ["B", "A"]
    a_track = tracks[person_of(tracks).index("A")]
    assert a_track.frames.tolist() == [t for t in range(31) if t not in covered]
    short = link_tracks(dets, TrackerConfig(max_gap_frames=12))
    assert sorted(person_of(short)) == ["A", "A", "B"]
    # B is in every frame, so "longest" is B; the subject rule by track id gives A, missing while covered
    result = track_people(dets, J, TrackerConfig(max_gap_frames=13), image_size=(640, 480))
    assert person_of([tracks[result.subject_track_id]]) == ["B"]
    a_id = a_track.track_id
    sub = subject_from_people(result.people, a_id, 31)
    assert np.isnan(sub.kp2d_px[covered]).all() and sub.bridged[covered].all()
    np.testing.assert_array_equal(sub.kp2d_px[30], person(300, 240)["kp2d"])
