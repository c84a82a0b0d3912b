"""Synthetic cohort: determinism, pixels that match the ground truth, subjects, motions, flags, CLI.

The decoded-frame checks segment each marker colour here, independently of the renderer: a pixel belongs to the
palette colour (or background grey) nearest to it; a disc's centre is the colour-weighted centroid around its
segment, its radius sqrt(area / pi).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mocapflow.camera import Intrinsics, project
from mocapflow.synth import (
    DISC_RADIUS_M,
    MARKER_COLORS,
    MARKER_SITES,
    MOTIONS,
    CohortSpec,
    generate_cohort,
    marker_edges,
    read_ground_truth,
)
from mocapflow.synth.kinematics import FrameFk
from mocapflow.synth.motions import _pelvis_angles, foot_site_indices, generate_motion
from mocapflow.synth.palette import BACKGROUND_GREY
from mocapflow.synth.render import FrameRenderer, background, centre_visible, draw_discs, to_uint8
from mocapflow.synth.subjects import sample_subject
from models.body import REFERENCE_STATURE_M, default_body_model

SPEC = CohortSpec(
    n_videos=4,
    seed=7,
    seconds=1.0,
    fps=15.0,
    width=640,
    height=480,
    dropped_fraction=0.2,
    n_corrupt=2,
    distance_m_range=(3.0, 4.0),
)
SECOND_SPEC = dataclasses.replace(
    SPEC, n_videos=1, seed=3, seconds=6.0, fps=5.0, width=320, height=240, n_second_person=1, dropped_fraction=0.0,
    n_corrupt=0, motions=("arm_raise",), distance_m_range=(3.0, 3.5),
)  # fmt: skip


@pytest.fixture(scope="module")
def fk():
    return FrameFk(default_body_model())


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, fk):
    out = tmp_path_factory.mktemp("cohort_a")
    done = []
    entries = generate_cohort(out, SPEC, on_video_done=done.append, fk=fk)
    assert done == entries[: SPEC.n_videos]
    return out, entries


@pytest.fixture(scope="module")
def second(tmp_path_factory, fk):
    out = tmp_path_factory.mktemp("cohort_second")
    return generate_cohort(out, SECOND_SPEC, fk=fk)[0]


def good(entries):
    return [e for e in entries if not e.corrupt]


def decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1].astype(np.float64))  # BGR -> RGB
    cap.release()
    return frames


_PALETTE_BG = np.vstack([MARKER_COLORS.astype(np.float64), [[BACKGROUND_GREY] * 3]])


def nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """Per pixel: index of the nearest palette colour, or len(palette) for the background grey."""
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, and |p|^2 does not change the argmin
    d = (_PALETTE_BG**2).sum(axis=1) - 2.0 * rgb @ _PALETTE_BG.T
    return d.argmin(axis=-1)


def blobs(labels: np.ndarray, j: int) -> np.ndarray:
    """Centroids [n, 2] (u, v) of the connected segments of colour ``j``."""
    n, _, _, centroids = cv2.connectedComponentsWithStats((labels == j).astype(np.uint8))
    return centroids[1:]


def measure_disc(rgb: np.ndarray, j: int, seed_uv: np.ndarray, half: int = 6) -> tuple[np.ndarray, float]:
    """Colour-weighted centroid (u, v) and radius of the disc of colour ``j`` around ``seed_uv``.

    Weight = the pixel's position on the line from the background grey to the disc colour (its coverage),
    for pixels close to that line.
    """
    bg = np.full(3, BACKGROUND_GREY)
    d = MARKER_COLORS[j].astype(np.float64) - bg
    u0, v0 = int(round(seed_uv[0])), int(round(seed_uv[1]))
    y0, x0 = max(v0 - half, 0), max(u0 - half, 0)
    win = rgb[y0 : v0 + half + 1, x0 : u0 + half + 1] - bg
    a = (win @ d) / (d @ d)
    off_line = np.linalg.norm(win - a[..., None] * d, axis=-1) > 0.25 * np.linalg.norm(d)
    a = np.where(off_line, 0.0, np.clip(a, 0.0, 1.0))
    ys, xs = np.mgrid[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]]
    total = a.sum()
    return np.array([(a * xs).sum() / total, (a * ys).sum() / total]), math.sqrt(total / math.pi)


def isolated_visible(gt, t: int, gap_px: float = 4.0) -> list[int]:
    """Markers of the main subject whose GT says visible and whose disc is clear of every other disc."""
    f = gt.intrinsics.fx
    uv = np.vstack([gt.kp2d_px[t], gt.second_kp2d_px[t]]).astype(np.float64)
    z = np.concatenate([gt.kp3d_mm[t, :, 2], gt.second_kp3d_mm[t, :, 2]]) / 1000.0
    r = f * DISC_RADIUS_M / z
    keep = []
    for j in range(len(MARKER_SITES)):
        if not gt.visible[t, j]:
            continue
        dist = np.linalg.norm(uv - uv[j], axis=1)
        dist[j] = np.inf
        clear = ~(dist <= r[j] + r + gap_px)  # NaN (absent second person) counts as clear
        if clear.all():
            keep.append(j)
    return keep


# -------------------------------------------------------------------------------------------------------------
# palette and rendering primitives
# -------------------------------------------------------------------------------------------------------------


def test_palette_covers_the_body_with_distinct_colours():
    model = default_body_model()
    assert len(MARKER_SITES) >= 25 and len(set(MARKER_SITES)) == len(MARKER_SITES)
    assert set(MARKER_SITES) <= set(model.site_names)
    for name in ("head", "thor", "pelv", "lasis", "rasis", "lknem", "rknem"):
        assert name in MARKER_SITES
    for side in "lr":
        for part in ("sho", "elb", "wri", "han", "hip", "kne", "ank", "hee", "toe"):
            assert side + part in MARKER_SITES
    assert MARKER_COLORS.shape == (len(MARKER_SITES), 3) and MARKER_COLORS.dtype == np.uint8
    c = MARKER_COLORS.astype(float)
    pairwise = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(len(c)) * 1e9
    assert pairwise.min() >= 60  # RGB distance between any two marker colours
    assert np.linalg.norm(c - BACKGROUND_GREY, axis=1).min() >= 80  # and to the background
    edges = marker_edges()
    assert all(0 <= a < len(MARKER_SITES) and 0 <= b < len(MARKER_SITES) and a != b for a, b in edges)
    assert {i for e in edges for i in e} == set(range(len(MARKER_SITES)))  # every marker is on the skeleton
    assert 0.025 <= DISC_RADIUS_M <= 0.035


def test_disc_area_and_centroid_follow_depth():
    intr = Intrinsics.from_fov(800, 100, 60.0)  # fx = 693 px: radii of 10.4 and 5.2 px
    img = np.zeros((100, 800, 3), np.float32)
    centres = np.array([[150.3, 40.7], [540.6, 55.2]])
    depths = np.array([2.0, 4.0])
    radii = intr.fx * DISC_RADIUS_M / depths
    draw_discs(img, centres, radii, depths, [[255, 0, 0], [0, 255, 0]])
    for k in range(2):
        alpha = img[:, :, k] / 255.0
        ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
        r_meas = math.sqrt(alpha.sum() / math.pi)
        assert r_meas == pytest.approx(intr.fx * DISC_RADIUS_M / depths[k], rel=0.01)
        centroid = [(alpha * xs).sum() / alpha.sum(), (alpha * ys).sum() / alpha.sum()]
        assert centroid == pytest.approx(centres[k], abs=0.01)
    assert r_meas < radii[0] / 1.9  # twice as deep, half the radius


def test_near_disc_occludes_far_disc():
    uv = np.array([[20.0, 20.0], [23.0, 20.0]])
    radii = np.array([5.0, 5.0])
    for near in (0, 1):
        depth = np.array([2.0, 3.0]) if near == 0 else np.array([3.0, 2.0])
        img = np.zeros((40, 40, 3), np.float32)
        draw_discs(img, uv, radii, depth, [[255, 0, 0], [0, 0, 255]])
        between = img[20, 21]  # inside both discs
        assert between[0 if near == 0 else 2] == pytest.approx(255.0)
        vis = centre_visible(uv, radii, depth, 40, 40)
        assert vis[near] and not vis[1 - near]
    # out of the image, or behind the camera: not visible
    vis = centre_visible([[-1.0, 5.0], [5.0, 5.0], [30.0, 30.0]], [2.0, 2.0, 2.0], [2.0, -1.0, 2.0], 40, 20)
    assert vis.tolist() == [False, False, False]


def test_frame_renderer_equals_rendering_the_whole_frame():
    bg = background(120, 80, BACKGROUND_GREY, texture_amplitude=15.0, rng=np.random.default_rng(3))
    rng = np.random.default_rng(4)
    uv, radii, depth = rng.uniform([0, 0], [120, 80], (12, 2)), rng.uniform(1, 6, 12), rng.uniform(2, 5, 12)
    colors = MARKER_COLORS[:12]
    full = bg.copy()
    draw_discs(full, uv, radii, depth, colors)
    assert np.array_equal(FrameRenderer(bg)(uv, radii, depth, colors), to_uint8(full))
    assert np.array_equal(FrameRenderer(bg)(uv[:0], radii[:0], depth[:0], colors[:0]), to_uint8(bg))


def test_noise_and_texture_are_reproducible_and_of_the_asked_size():
    bg = background(160, 120, BACKGROUND_GREY, texture_amplitude=15.0, rng=np.random.default_rng(1))
    again = background(160, 120, BACKGROUND_GREY, texture_amplitude=15.0, rng=np.random.default_rng(1))
    assert np.array_equal(bg, again)
    assert np.abs(bg - BACKGROUND_GREY).max() == pytest.approx(15.0, abs=0.01)
    assert np.array_equal(bg[:, :, 0], bg[:, :, 2])  # grey: no chroma
    flat = np.full((200, 200, 3), 100.0, np.float32)
    noisy = to_uint8(flat, 8.0, np.random.default_rng(2)).astype(float)
    assert noisy.std() == pytest.approx(8.0, rel=0.05)


# -------------------------------------------------------------------------------------------------------------
# subjects and motions
# -------------------------------------------------------------------------------------------------------------


def zero_pose_stature(fk, body_scale) -> float:
    zero = np.zeros((1, fk.model.n_dofs))
    y, y1 = fk(zero, body_scale)[0, :, 1], fk(zero)[0, :, 1]
    return REFERENCE_STATURE_M * (y.max() - y.min()) / (y1.max() - y1.min())


def test_subjects_vary_in_stature_and_proportions_the_groups_cannot_express(fk):
    model = fk.model
    rng = np.random.default_rng(11)
    subjects = [sample_subject(fk, rng, f"s{i}") for i in range(30)]
    statures = np.array([zero_pose_stature(fk, s.body_scale) for s in subjects])
    assert statures.min() >= 1.5 - 1e-4 and statures.max() <= 1.95 + 1e-4
    assert statures.max() - statures.min() > 0.25
    assert np.allclose(statures, [s.stature_m for s in subjects], atol=1e-4)
    names = model.body_names
    s = subjects[0].body_scale
    assert s.shape == (len(model.bodies), 3)
    # left and right differ; axes differ; the best one-factor-per-group fit leaves a residual of several %
    assert not np.allclose(s[names.index("femur_l")], s[names.index("femur_r")], rtol=0.005)
    assert np.abs(s[:, 0] - s[:, 1]).max() > 0.02
    groups = np.array([b.scale_group for b in model.bodies])
    group_mean = np.array([s[groups == g].mean() for g in range(len(model.scale_groups))])
    assert np.abs(s / group_mean[groups][:, None] - 1).max() > 0.03
    offsets = np.linalg.norm(subjects[0].site_offset, axis=1)
    assert offsets.shape == (len(model.sites),)
    assert offsets.min() >= 0.003 - 1e-9 and offsets.max() <= 0.010 + 1e-9


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_pelvis_angles_turn_the_body_to_its_heading_then_tilt_it_anatomically(fk):
    model = fk.model
    rng = np.random.default_rng(9)
    n = 6
    heading, tilt, lst, axial = (rng.uniform(-a, a, n) for a in (2.8, 0.4, 0.2, 0.2))
    angles = _pelvis_angles(model, heading, tilt, lst, axial)
    q = np.zeros((n, model.n_dofs))
    for name, values in zip(("pelvis_tilt", "pelvis_list", "pelvis_rotation"), angles, strict=True):
        q[:, model.dof_index(name)] = values
    pelvis_sites = [i for i, s in enumerate(model.sites) if model.bodies[s.body].name == "pelvis"]
    local = np.array([model.sites[i].pos for i in pelvis_sites])
    world = fk(q)[:, pelvis_sites]
    for k in range(n):
        expected = _rot("y", heading[k]) @ _rot("z", tilt[k]) @ _rot("x", lst[k]) @ _rot("y", axial[k])
        assert np.allclose(world[k], local @ expected.T, atol=1e-5)


@pytest.mark.parametrize("name", MOTIONS)
def test_motions_are_smooth_inside_the_limits_and_on_the_ground(fk, name):
    model = fk.model
    fps, n = 30.0, 240
    rng = np.random.default_rng(5)
    subject = sample_subject(fk, rng, "s")
    q = generate_motion(fk, name, subject, n, fps, rng).q
    assert q.shape == (n, model.n_dofs)
    assert (q >= model.lower).all() and (q <= model.upper).all()
    hinge = np.array([d.kind == "hinge" for d in model.dofs])
    assert np.abs(np.diff(q[:, hinge], axis=0)).max() < 0.25  # rad per frame: no jumps
    assert np.abs(np.diff(q[:, hinge], n=2, axis=0)).max() < 0.15
    sites = fk(q, subject.body_scale, subject.site_offset)
    feet = sites[:, foot_site_indices(model)]
    assert np.abs(feet[:, :, 1].min(axis=1)).max() < 1e-4  # lowest foot site on the floor in every frame

    def deg(dof: str) -> np.ndarray:
        return np.degrees(q[:, model.dof_index(dof)])

    pelvis = sites[:, model.site_index("mhip")]
    if name == "walking":
        assert np.ptp(pelvis[:, [0, 2]], axis=0).max() > 0.8  # walks somewhere
        assert np.ptp(deg("hip_flexion_r")) > 25 and np.ptp(deg("knee_angle_l")) > 40
        # it walks the way it faces: pelvis velocity along the pelvis's forward axis (asis ahead of the hips)
        vel = np.gradient(pelvis[:, [0, 2]], 1 / fps, axis=0)
        fwd = sites[:, model.site_index(["lasis", "rasis"])].mean(1) - sites[
            :, model.site_index(["lhip", "rhip"])
        ].mean(1)
        fwd = fwd[:, [0, 2]] / np.linalg.norm(fwd[:, [0, 2]], axis=1, keepdims=True)
        speed = np.linalg.norm(vel, axis=1)
        moving = speed > 0.5
        assert moving.sum() > n / 4
        assert ((vel[moving] * fwd[moving]).sum(1) / speed[moving]).min() > 0.9
    else:
        assert np.ptp(feet[:, :, [0, 2]].mean(axis=1), axis=0).max() < 1e-3  # feet stay put
    if name in ("sit_to_stand", "squat"):
        assert np.ptp(deg("knee_angle_r")) > 60 and np.ptp(pelvis[:, 1]) > 0.25
    if name == "arm_raise":
        raised = np.max([deg("arm_flex_r"), deg("arm_flex_l"), -deg("arm_add_r"), -deg("arm_add_l")], axis=0)
        assert raised.max() > 100


# -------------------------------------------------------------------------------------------------------------
# the cohort on disk
# -------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_ground_truth_and_frames(cohort, tmp_path, fk):
    out_a, entries_a = cohort
    entries_b = generate_cohort(tmp_path, SPEC, fk=fk)
    assert len(entries_b) == len(entries_a) == SPEC.n_videos + SPEC.n_corrupt
    for a, b in zip(entries_a, entries_b, strict=True):
        assert a.video.name == b.video.name
        assert a.video.read_bytes() == b.video.read_bytes()
        if a.corrupt:
            continue
        assert a.gt.read_bytes() == b.gt.read_bytes()
        gt_a, gt_b = read_ground_truth(a.gt), read_ground_truth(b.gt)
        assert gt_a.meta == gt_b.meta
        for name in ("q", "kp2d_px", "kp3d_mm", "visible", "second_kp2d_px"):
            assert np.array_equal(getattr(gt_a, name), getattr(gt_b, name), equal_nan=True)
        frames_a, frames_b = decode(a.video), decode(b.video)
        assert len(frames_a) == SPEC.n_frames and all(
            np.array_equal(x, y) for x, y in zip(frames_a, frames_b, strict=True)
        )


def test_another_seed_gives_another_cohort(cohort, tmp_path, fk):
    _, entries = cohort
    other = generate_cohort(tmp_path, dataclasses.replace(SPEC, seed=8, n_videos=1, n_corrupt=0), fk=fk)[0]
    first = good(entries)[0]
    assert other.motion == first.motion
    gt_a, gt_b = read_ground_truth(first.gt), read_ground_truth(other.gt)
    assert np.abs(gt_a.q - gt_b.q).max() > 0.05
    assert gt_a.meta["subject"]["body_scale"] != gt_b.meta["subject"]["body_scale"]
    assert np.abs(decode(first.video)[0] - decode(other.video)[0]).max() > 100


def test_decoded_disc_centroids_match_the_ground_truth(cohort):
    _, entries = cohort
    errors = []
    for entry in good(entries):
        gt = read_ground_truth(entry.gt)
        for t, rgb in enumerate(decode(entry.video)):
            if gt.blank[t]:
                continue
            labels = nearest_colour(rgb)
            for j in isolated_visible(gt, t):
                found = blobs(labels, j)
                assert len(found), f"{entry.video.name} frame {t}: no {MARKER_SITES[j]} disc found"
                seed = found[np.argmin(np.linalg.norm(found - gt.kp2d_px[t, j], axis=1))]
                centre, _ = measure_disc(rgb, j, seed)
                errors.append(np.linalg.norm(centre - gt.kp2d_px[t, j]))
    errors = np.asarray(errors)
    assert len(errors) > 150
    assert errors.max() < 0.5, f"worst disc centroid is {errors.max():.2f} px from its ground truth"


def test_decoded_disc_radius_follows_depth(second):
    gt = read_ground_truth(second.gt)
    f = gt.intrinsics.fx
    measured, expected = [], []
    for t, rgb in enumerate(decode(second.video)):
        labels = nearest_colour(rgb)
        for kp2d, kp3d, vis in (
            (gt.kp2d_px, gt.kp3d_mm, gt.visible),
            (gt.second_kp2d_px, gt.second_kp3d_mm, gt.second_visible),
        ):
            for j in np.flatnonzero(vis[t]):
                others = np.vstack([gt.kp2d_px[t], gt.second_kp2d_px[t]])
                r = f * DISC_RADIUS_M * 1000.0 / kp3d[t, j, 2]
                dist = np.linalg.norm(others - kp2d[t, j], axis=1)
                if (np.nan_to_num(dist, nan=np.inf) < 2 * r + 6).sum() > 1:  # itself only
                    continue
                found = blobs(labels, j)
                seed = found[np.argmin(np.linalg.norm(found - kp2d[t, j], axis=1))]
                measured.append(measure_disc(rgb, j, seed)[1])
                expected.append(r)
    measured, expected = np.asarray(measured), np.asarray(expected)
    assert expected.max() / expected.min() > 1.3  # discs at clearly different depths
    assert np.median(np.abs(measured - expected)) < 0.15
    assert np.corrcoef(measured, expected)[0, 1] > 0.9


def test_ground_truth_table_is_complete_and_consistent(cohort, fk):
    out, entries = cohort
    model = fk.model
    marker_idx = model.site_index(list(MARKER_SITES))
    j = len(MARKER_SITES)
    for entry in good(entries):
        table = pq.read_table(entry.gt)
        assert table.num_rows == SPEC.n_frames
        assert table.schema.field("kp2d_px").type == pa.list_(pa.list_(pa.float32(), 2), j)
        assert table.schema.field("kp3d_mm").type == pa.list_(pa.list_(pa.float32(), 3), j)
        assert table.schema.field("visible").type == pa.list_(pa.bool_(), j)
        for dof in model.dof_names:
            assert table.schema.field(dof).type == pa.float64()
        gt = read_ground_truth(entry.gt)
        meta = gt.meta
        assert meta["joint_names"] == list(MARKER_SITES) and meta["motion"] == entry.motion
        assert meta["seed"] == SPEC.seed and meta["fps"] == SPEC.fps
        assert meta["units"]["pelvis_tx"] == "m" and meta["units"]["knee_angle_r"] == "rad"
        intr = Intrinsics.from_json((out / entry.camera.name).read_text())
        assert intr == gt.intrinsics and (intr.width, intr.height) == (SPEC.width, SPEC.height)
        # the 3D keypoints follow from q, the recorded subject and the extrinsics alone
        subject = meta["subject"]
        assert subject["body_names"] == model.body_names and subject["site_names"] == model.site_names
        world = fk(gt.q, np.array(subject["body_scale"]), np.array(subject["site_offset_m"]))[:, marker_idx]
        cam_mm = gt.extrinsics.apply(world) * 1000.0
        assert np.abs(cam_mm - gt.kp3d_mm).max() < 0.05
        assert np.abs(project(gt.kp3d_mm, intr) - gt.kp2d_px).max() < 1e-3
        # the subject is fully in frame, 3-6 m away
        assert (gt.box[:, :2] >= 0).all() and (gt.box[:, 2] <= SPEC.width - 1).all()
        assert (gt.box[:, 3] <= SPEC.height - 1).all()
        assert 3000 <= np.median(gt.kp3d_mm[:, :, 2]) <= 6500
        assert (gt.q >= model.lower).all() and (gt.q <= model.upper).all()
        stature = zero_pose_stature(fk, np.array(subject["body_scale"]))
        assert 1.5 - 1e-4 <= stature <= 1.95 + 1e-4 and stature == pytest.approx(entry.stature_m, abs=1e-4)


def test_dropped_frames_show_background_only(cohort):
    _, entries = cohort
    for entry in good(entries):
        gt = read_ground_truth(entry.gt)
        assert gt.blank.sum() == round(SPEC.dropped_fraction * SPEC.n_frames)
        assert not gt.visible[gt.blank].any()
        frames = decode(entry.video)
        for t in np.flatnonzero(gt.blank):
            assert (nearest_colour(frames[t]) == len(MARKER_COLORS)).all()  # no pixel looks like a marker
            assert np.abs(frames[t] - BACKGROUND_GREY).mean() < 0.5
        shown = np.flatnonzero(~gt.blank)[0]
        assert np.abs(frames[shown] - BACKGROUND_GREY).max() > 100


def test_corrupt_files_do_not_decode_and_are_flagged(cohort):
    out, entries = cohort
    corrupt = [e for e in entries if e.corrupt]
    assert sorted(e.corrupt for e in corrupt) == ["garbage", "truncated"]
    for entry in corrupt:
        assert entry.video.suffix == ".mp4" and entry.video.stat().st_size > 1000
        cap = cv2.VideoCapture(str(entry.video))
        assert not (cap.isOpened() and cap.read()[0]), f"{entry.video.name} decoded"
        cap.release()
    with (out / "cohort.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == SPEC.n_videos + SPEC.n_corrupt
    flagged = {r["video"]: r for r in rows if r["corrupt"]}
    assert set(flagged) == {e.video.name for e in corrupt}
    assert all(r["gt"] == "" and "corrupt" in r["flags"] for r in flagged.values())
    for r in rows:
        assert (out / r["video"]).is_file()
        if not r["corrupt"]:
            assert (out / r["gt"]).is_file() and (out / r["camera"]).is_file()
            assert r["motion"] in MOTIONS and r["subject_id"]
    assert pq.read_table(out / "cohort.parquet").num_rows == len(rows)


def test_second_person_enters_with_a_second_set_of_discs(second):
    gt = read_ground_truth(second.gt)
    assert second.second_person and gt.meta["flags"]["second_person"]
    present = gt.second_present
    assert not present[0] and present.any()  # enters after the start: in view for less time than the subject
    t = int(np.argmax(gt.second_visible.sum(axis=1)))
    labels = nearest_colour(decode(second.video)[t])
    doubled = 0
    for j in range(len(MARKER_SITES)):
        if not (gt.visible[t, j] and gt.second_visible[t, j]):
            continue
        found = blobs(labels, j)
        near_main = len(found) and np.linalg.norm(found - gt.kp2d_px[t, j], axis=1).min() < 1.5
        near_second = len(found) and np.linalg.norm(found - gt.second_kp2d_px[t, j], axis=1).min() < 1.5
        doubled += bool(near_main and near_second)
    assert doubled >= 12
    # the two people's boxes rarely overlap in the image
    r = gt.intrinsics.fx * DISC_RADIUS_M * 1000.0 / gt.second_kp3d_mm[..., 2]
    lo = (gt.second_kp2d_px - r[..., None]).min(axis=1)
    hi = (gt.second_kp2d_px + r[..., None]).max(axis=1)
    overlap = (
        (lo[:, 0] < gt.box[:, 2])
        & (hi[:, 0] > gt.box[:, 0])
        & (lo[:, 1] < gt.box[:, 3])
        & (hi[:, 1] > gt.box[:, 1])
    )
    assert overlap[present].mean() < 0.5


def test_crossing_second_person_passes_in_front_of_the_subject(tmp_path):
    (entry,) = generate_cohort(
        tmp_path,
        CohortSpec(
            n_videos=1,
            seed=5,
            seconds=1.0,
            fps=10.0,
            n_second_person=1,
            second_person_path="crossing",
            motions=("squat",),
        ),
    )
    gt = read_ground_truth(entry.gt)
    assert "crossing" in entry.flags and gt.meta["second_subject"]["path"] == "crossing"
    assert gt.second_present.all()  # already in view at the start: a 1-2 s clip shows the whole crossing
    depth = np.median(gt.kp3d_mm[..., 2], axis=1)
    depth2 = np.median(gt.second_kp3d_mm[..., 2], axis=1)
    assert np.all((depth - depth2 > 350) & (depth - depth2 < 750))  # 0.4-0.7 m nearer the camera (+ motion)
    side = np.sign(np.median(gt.second_kp2d_px[..., 0], axis=1) - np.median(gt.kp2d_px[..., 0], axis=1))
    assert side[0] == -side[-1] != 0  # on one side of the subject at the start, on the other at the end


def test_spec_refuses_what_it_cannot_make():
    with pytest.raises(ValueError, match="second_person_path"):
        CohortSpec(n_videos=1, second_person_path="sideways")
    with pytest.raises(ValueError, match="even"):
        CohortSpec(n_videos=1, width=321)
    with pytest.raises(ValueError, match="n_second_person"):
        CohortSpec(n_videos=1, n_second_person=2)
    with pytest.raises(ValueError, match="motions"):
        CohortSpec(n_videos=1, motions=("dance",))


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_writes_playable_videos_with_ground_truth(tmp_path, restore_logging):
    from mocapflow.cli import app

    args = ["synth", "--out", str(tmp_path), "--videos", "4", "--seconds", "1", "--fps", "10"]
    result = CliRunner().invoke(app, [*args, "--width", "320", "--height", "240", "--seed", "3"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "cohort.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert sorted(r["motion"] for r in rows) == sorted(MOTIONS)
    for r in rows:
        cap = cv2.VideoCapture(str(tmp_path / r["video"]))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
        n_read = 0
        while cap.read()[0]:
            n_read += 1
        assert n_read == 10
        gt = pq.read_table(tmp_path / r["gt"])
        assert gt.num_rows == 10
        assert json.loads(gt.schema.metadata[b"intrinsics"]) == json.loads(
            (tmp_path / r["camera"]).read_text()
        )
