"""Stability pieces of the fit: limb initialisation with depth-flip hypotheses (fit.init) and the pose prior
(fit.loss). Pure and fast."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mocapflow.fit.init import _axis_rotation, _limb_ik, initial_limbs
from mocapflow.fit.loss import prior_sigma_rad
from mocapflow.fit.sites import WORLD_TO_CAMERA, map_keypoints
from models.body import BLAZEPOSE_TO_SITE, default_body_model, forward_kinematics

LIMBS = (("femur_r", "tibia_r"), ("femur_l", "tibia_l"), ("humerus_r", "ulna_r"), ("humerus_l", "ulna_l"))


@pytest.fixture(scope="module")
def model():
    return default_body_model()


def test_limb_ik_recovers_random_limb_angles(model) -> None:
    rng = np.random.default_rng(0)
    down = np.array([0.0, -1.0, 0.0])
    for prox, dist in LIMBS:
        dofs = list(model.bodies[model.body_names.index(prox)].dofs)
        hinge = model.bodies[model.body_names.index(dist)].dofs[0]
        idx = [*dofs, hinge]
        axes = [np.asarray(model.dofs[i].axis, float) for i in idx]
        for _ in range(100):
            x = rng.uniform(0.8 * model.lower[idx], 0.8 * model.upper[idx])
            x[3] = max(x[3], np.deg2rad(20.0))  # the long-axis rotation is only observed with a bent hinge
            r = _axis_rotation(axes[0], x[0]) @ _axis_rotation(axes[1], x[1]) @ _axis_rotation(axes[2], x[2])
            y, cost = _limb_ik(dofs, hinge, model, r @ down, r @ _axis_rotation(axes[3], x[3]) @ down)
            assert cost < 1e-9
            np.testing.assert_allclose(y, x, atol=1e-6)


def test_initial_limbs_keep_one_depth_branch(model) -> None:
    """A constant pose seen for 40 frames; in a fifth of them the model put the knee and the elbow on the wrong side
    of the hip / shoulder in depth (mirrored, same image). The initial angles stay with the majority."""
    names = list(BLAZEPOSE_TO_SITE)
    kmap = map_keypoints(names, model)
    q0 = np.zeros(model.n_dofs)
    truth = {"hip_flexion_r": 40.0, "knee_angle_r": 60.0, "hip_flexion_l": 10.0, "knee_angle_l": 20.0,
             "arm_flex_r": 50.0, "elbow_flex_r": 70.0, "arm_flex_l": -20.0, "elbow_flex_l": 30.0,
             "hip_adduction_r": -5.0, "arm_add_l": -30.0}  # fmt: skip
    for d, v in truth.items():
        q0[model.dof_index(d)] = np.deg2rad(v)
    q0[model.dof_index("pelvis_tx")] = 3.0  # 3 m in front of the camera, facing away from it
    sites = np.asarray(forward_kinematics(model, jnp.asarray(q0, jnp.float32)), np.float64)
    cam = sites[list(kmap.site_index)] @ WORLD_TO_CAMERA.T * 1000.0
    n = 40
    kp3d = np.repeat(cam[None], n, axis=0)
    rng = np.random.default_rng(1)
    kp3d += rng.normal(0.0, 5.0, kp3d.shape)
    col = {kmap.names[j]: j for j in range(len(kmap))}
    for t in range(0, n, 5):  # mirror the knee's and elbow's depth about the hip's / shoulder's
        for joint, parent in (("right_knee", "right_hip"), ("left_elbow", "left_shoulder")):
            kp3d[t, col[joint], 2] = 2 * kp3d[t, col[parent], 2] - kp3d[t, col[joint], 2]
    conf = np.ones(kp3d.shape[:2])
    q = np.zeros((n, model.n_dofs))
    out = initial_limbs(model, q, np.asarray(kmap.site_index), kp3d, conf, window_frames=4)
    for d, v in truth.items():
        got = np.degrees(out[:, model.dof_index(d)])
        assert np.abs(got - v).max() < 6.0, (d, v, got)


@pytest.mark.parametrize("error_m", [0.4, -0.4])
def test_an_elbow_placed_far_off_in_depth_does_not_bend_the_initial_arm(model, error_m: float) -> None:
    """A partly hidden elbow keypoint whose depth is 40 cm off in every frame (its image position right): the
    initial elbow angle follows the arm's segment lengths, not the impossible 3D (117 deg for a 20 deg elbow in the
    demo before; the fit ended at 60 for the whole video)."""
    names = list(BLAZEPOSE_TO_SITE)
    kmap = map_keypoints(names, model)
    q0 = np.zeros(model.n_dofs)
    truth = {"arm_flex_l": 5.0, "elbow_flex_l": 20.0, "arm_flex_r": 10.0, "elbow_flex_r": 30.0}
    for d, v in truth.items():
        q0[model.dof_index(d)] = np.deg2rad(v)
    q0[model.dof_index("pelvis_tx")] = 3.0
    q0[model.dof_index("pelvis_rotation")] = np.deg2rad(90.0)  # side view: the arms hang in the image plane
    sites = np.asarray(forward_kinematics(model, jnp.asarray(q0, jnp.float32)), np.float64)
    cam = sites[list(kmap.site_index)] @ WORLD_TO_CAMERA.T * 1000.0
    n = 30
    rng = np.random.default_rng(2)
    kp3d = np.repeat(cam[None], n, axis=0) + rng.normal(0.0, 5.0, (n, *cam.shape))
    col = {kmap.names[j]: j for j in range(len(kmap))}
    kp3d[:, col["left_elbow"], 2] += error_m * 1000.0
    conf = np.ones(kp3d.shape[:2])
    conf[:, col["left_elbow"]] = 0.35
    q = np.zeros((n, model.n_dofs))
    q[:, model.dof_index("pelvis_rotation")] = np.deg2rad(90.0)
    out = initial_limbs(model, q, np.asarray(kmap.site_index), kp3d, conf, window_frames=4)
    for d, v in truth.items():
        got = np.degrees(out[:, model.dof_index(d)])
        assert np.abs(got - v).max() < 10.0, (d, v, got)


def test_pose_prior_leaves_the_root_free(model) -> None:
    sigma = prior_sigma_rad(model)
    for d in ("pelvis_tx", "pelvis_tilt", "pelvis_rotation"):
        assert sigma[model.dof_index(d)] == 0.0
    assert sigma[model.dof_index("arm_rot_r")] < sigma[model.dof_index("knee_angle_r")]
    assert np.all(sigma[[model.dof_index(d) for d in ("knee_angle_l", "elbow_flex_r", "hip_flexion_l")]] > 0)


def test_the_legs_sagittal_prior_keeps_its_own_weight(model) -> None:
    """The pose prior is two terms: hip flexion, knee and ankle angle in ``prior_fixed`` (weighted by
    ``FitOptions.prior`` always: standing is no centre for a squat), every other DOF in ``prior`` (the weight the fit
    strengthens by the systematic 3D spread); together they are the whole prior."""
    import jax.numpy as jnp

    from mocapflow.fit.loss import LossWeights, pose_prior, prior_sigma_rad

    neutral = np.asarray(model.zero_pose())
    mask = jnp.ones(4)

    def terms(**deg: float) -> tuple[float, float]:
        q = np.tile(neutral, (4, 1))
        for name, v in deg.items():
            q[:, model.dof_index(name)] += np.deg2rad(v)
        strengthened, fixed = pose_prior(jnp.asarray(q, jnp.float32), mask, model)
        return float(strengthened), float(fixed)

    legs = terms(hip_flexion_r=80.0, knee_angle_l=100.0, ankle_angle_r=20.0)
    assert legs[0] == 0.0 and legs[1] > 1.0
    rest = terms(arm_rot_r=30.0, hip_adduction_l=15.0, elbow_flex_r=90.0, lumbar_extension=10.0)
    assert rest[1] == 0.0 and rest[0] > 1.0
    both = terms(knee_angle_l=100.0, arm_rot_r=30.0)
    sigma = prior_sigma_rad(model)
    expected = sum(
        (np.deg2rad(v) / sigma[model.dof_index(d)]) ** 2
        for d, v in (("knee_angle_l", 100.0), ("arm_rot_r", 30.0))
    )
    assert sum(both) == pytest.approx(expected, rel=1e-4)
    weights = LossWeights.make(prior=0.7)
    assert float(weights.prior_fixed) == pytest.approx(0.7)


@pytest.mark.parametrize("kps", [2.0, 4.0, 8.0])
def test_trajectory_cutoff_is_half_the_knot_rate(kps: float) -> None:
    """A sinusoid at the stated cut-off keeps ~0.64 of its amplitude through the fit's spline basis (-4 dB, averaged
    over its phase against the knots); one at half of it passes, one at twice it is removed."""
    from mocapflow.fit.basis import bspline_basis
    from mocapflow.fit.loss import trajectory_cutoff_hz

    fps, n = 30.0, 600
    basis = bspline_basis(n, fps, kps).astype(np.float64)
    proj = basis @ np.linalg.pinv(basis)
    t = np.arange(n) / fps
    mid = slice(100, 500)

    def gain(f: float) -> float:  # averaged over the sinusoid's phase against the knots
        g = [np.std((proj @ np.sin(2 * np.pi * f * t + p))[mid]) / np.std(np.sin(2 * np.pi * f * t + p)[mid])
             for p in np.linspace(0.0, np.pi, 16, endpoint=False)]  # fmt: skip
        return float(np.mean(g))

    fc = trajectory_cutoff_hz(kps)
    assert gain(fc) == pytest.approx(0.64, abs=0.06)  # -4 dB
    assert gain(0.5 * fc) > 0.97
    assert gain(2.0 * fc) < 0.2


# -- keypoint preprocessing (mocapflow.fit.swap, mocapflow.fit.preprocess) --------------------------------------------


@pytest.fixture(scope="module")
def walk(model):
    """A synthetic side-view walk (legs cross in the image every step), ground truth only."""
    from mocapflow.fit.validate import ValidationSpec, truth_videos

    video = truth_videos(ValidationSpec(n_videos=1, seconds=3.0, seed=0), model)[0]
    assert video.motion == "walking"
    return video


def _walking_keypoints(model, video, seed: int, noise: bool):
    """Dense mapped keypoint arrays (2D px, 3D camera mm, conf) of the walk, exact or noisy, and the site names."""
    from mocapflow.fit.validate import keypoints_from_truth

    kw = {"noise_2d_px": 4.0, "noise_3d_mm": 50.0, "seed": seed} if noise else {}
    meta, arrays = keypoints_from_truth(video, **kw)
    kmap = map_keypoints(meta.joint_names, model)
    cols = list(kmap.keypoint_index)
    names = [model.sites[s].name for s in kmap.site_index]
    return (
        arrays["kp2d_px"][:, cols].astype(np.float64),
        arrays["kp3d_mm"][:, cols].astype(np.float64),
        arrays["conf"][:, cols].astype(np.float64),
        names,
    )


@pytest.mark.parametrize(("seed", "noise"), [(0, False), (1, True), (2, True)])
def test_planted_left_right_swaps_are_found_and_undone(model, walk, seed: int, noise: bool) -> None:
    """A side-view walk (clean and noisy) with left/right labels swapped in random frames and groups (legs, arms,
    face; single frames and runs of up to 6): every planted swap is found and undone, nothing else is touched.
    With noise (4 px, 50 mm) the face's sides (eyes ~12 px apart) are not identifiable: legs and arms only."""
    from mocapflow.fit.swap import GROUPS, SwapReport, apply_swaps, side_pairs, undo_swaps

    kp2d, kp3d, conf, names = _walking_keypoints(model, walk, seed, noise)
    pairs = side_pairs(names)
    assert {GROUPS[g] for g in pairs.group} == set(GROUPS)
    t_n = len(conf)
    rng = np.random.default_rng(100 + seed)
    planted = np.zeros((t_n, len(GROUPS)), bool)
    for g in range(len(GROUPS)):
        for start in rng.choice(np.arange(2, t_n - 8), 4, replace=False):
            planted[start : start + rng.integers(1, 7), g] = True
    s2, s3, sc = apply_swaps([kp2d, kp3d, conf], pairs, SwapReport(planted))
    assert not np.allclose(s2, kp2d)  # the planted swaps change the labels
    u2, u3, uc, report = undo_swaps(s2, s3, sc, names)
    groups = [0, 1] if noise else [0, 1, 2]
    cols = [c for g in groups for side in pairs.columns(g) for c in side]
    np.testing.assert_array_equal(report.swapped[:, groups], planted[:, groups])
    np.testing.assert_array_equal(u2[:, cols], kp2d[:, cols])
    np.testing.assert_array_equal(u3[:, cols], kp3d[:, cols])
    # the unswapped track is left as it is
    _, _, _, clean = undo_swaps(kp2d, kp3d, conf, names)
    assert not clean.swapped[:, groups].any()


def test_swap_detection_is_the_same_played_backwards(model, walk) -> None:
    from mocapflow.fit.swap import SwapReport, apply_swaps, detect_swaps, side_pairs

    kp2d, kp3d, conf, names = _walking_keypoints(model, walk, 3, True)
    pairs = side_pairs(names)
    planted = np.zeros((len(conf), 3), bool)
    planted[10:13, 0] = planted[40, 1] = planted[60:70, 2] = True
    s2, s3, sc = apply_swaps([kp2d, kp3d, conf], pairs, SwapReport(planted))
    fwd = detect_swaps(s2, s3, sc, pairs).swapped
    bwd = detect_swaps(s2[::-1], s3[::-1], sc[::-1], pairs).swapped[::-1]
    np.testing.assert_array_equal(fwd, bwd)


def test_lowpass_cutoff_and_time_symmetry() -> None:
    """The keypoint low-pass: -6 dB at its cut-off, slow motion kept, fast jitter removed, the same result for the
    track played backwards (zero-phase, non-causal), gaps not bridged."""
    from mocapflow.fit.preprocess import lowpass

    fps, n = 30.0, 300
    t = np.arange(n) / fps

    def gain(f: float) -> float:
        x = np.sin(2 * np.pi * f * t)[:, None, None]
        y = lowpass(x, np.ones((n, 1), bool), fps, 6.0)
        mid = slice(60, 240)
        return float(np.std(y[mid]) / np.std(x[mid]))

    assert gain(6.0) == pytest.approx(0.5, abs=0.03)
    assert gain(1.0) > 0.99
    assert gain(12.0) < 0.1
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2, 3))
    ok = np.ones((n, 2), bool)
    ok[100:103, 0] = False
    x[100:103, 0] = np.nan
    y = lowpass(x, ok, fps, 6.0)
    np.testing.assert_allclose(lowpass(x[::-1], ok[::-1], fps, 6.0)[::-1], y, atol=1e-9)
    assert np.isnan(y[100:103, 0]).all() and np.isfinite(y[:, 1]).all()


def test_a_flipped_frame_does_not_make_the_initial_heading_spin(model) -> None:
    """A subject facing the camera (heading through 180 deg, where it wraps) turns slowly; in one frame the
    keypoints show the body turned round (a mirror-branch rigid fit). Unwrapping the heading against its predecessor
    carried the flip into the next frame's branch, leaving the rest of the track a full turn away (a 360 deg spin the
    fit then followed: noisy synthetic arm raise 4.7 deg -> 2.0 with the fix). The initial heading follows the turn."""
    from mocapflow.fit.init import initial_pose

    names = list(BLAZEPOSE_TO_SITE)
    kmap = map_keypoints(names, model)
    n, flip = 40, 20
    heading = np.deg2rad(200.0 - np.arange(n))  # 1 deg per frame through 180
    shown = heading.copy()
    shown[flip] = heading[flip - 1] + np.deg2rad(179.0)
    fx, cx, cy = 600.0, 320.0, 240.0
    kp3d, kp2d = np.zeros((n, len(kmap), 3)), np.zeros((n, len(kmap), 2))
    for t in range(n):
        q = np.zeros(model.n_dofs)
        q[model.dof_index("pelvis_tx")] = 4.0
        q[model.dof_index("pelvis_rotation")] = shown[t]
        q[model.dof_index("knee_angle_r")] = np.deg2rad(30.0)
        sites = np.asarray(forward_kinematics(model, jnp.asarray(q, jnp.float32)), np.float64)
        cam = sites[list(kmap.site_index)] @ WORLD_TO_CAMERA.T
        kp3d[t] = cam * 1000.0
        kp2d[t] = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fx * cam[:, 1] / cam[:, 2] + cy], axis=1)
    conf = np.ones((n, len(kmap)))
    q = initial_pose(
        model, np.asarray(kmap.site_index), kp2d, kp3d, conf, (fx, fx, cx, cy), outlier_window_frames=7
    )
    got = q[:, model.dof_index("pelvis_rotation")]
    assert np.abs(np.diff(got)).max() < np.deg2rad(20.0), np.degrees(got).round()
    err = (got - heading + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(np.delete(err, flip)).max() < np.deg2rad(3.0), np.degrees(err).round(1)


def test_pose_prior_grows_with_the_systematic_3d_spread_only() -> None:
    """The pose prior's weight is scaled by the 3D residual spread that white keypoint noise does not explain: exact
    keypoints (spread at its 1 cm floor) and Gaussian noise of any size keep the base weight, a pose model's steady
    3D errors (large spread, little frame-to-frame noise) strengthen it in proportion."""
    from mocapflow.fit.fitting import CHI3_MEDIAN, systematic_spread_cm
    from mocapflow.fit.robust import RobustStats

    def stats(spread_cm: float) -> RobustStats:
        return RobustStats(spread_2d_ref_px=1.0, spread_3d_cm=spread_cm, outliers_2d=0.0, outliers_3d=0.0)

    assert systematic_spread_cm(stats(1.0), noise_mm=0.5) == 1.0  # exact keypoints
    for noise_mm in (10.0, 50.0, 120.0):  # white noise: 1.1 x the spread it predicts
        predicted_cm = CHI3_MEDIAN * noise_mm / 10.0
        assert systematic_spread_cm(stats(1.1 * predicted_cm), noise_mm) == pytest.approx(1.1)
    assert systematic_spread_cm(stats(6.0), noise_mm=3.0) == pytest.approx(6.0)  # steady 6 cm errors
    assert systematic_spread_cm(stats(6.0), noise_mm=float("nan")) == pytest.approx(6.0)
    # the measured median residual norm of Gaussian noise is what CHI3_MEDIAN predicts
    norms = np.linalg.norm(np.random.default_rng(0).normal(0.0, 1.0, (200000, 3)), axis=1)
    assert np.median(norms) == pytest.approx(CHI3_MEDIAN, abs=0.01)


def _rigid_body_track(n: int, rng: np.random.Generator) -> np.ndarray:
    """Four keypoints of one rigid body (a pelvis-sized layout, mm) turning and moving over ``n`` frames."""
    from scipy.spatial.transform import Rotation

    layout = np.array([[-120.0, 0.0, 60.0], [120.0, 0.0, 60.0], [-90.0, -80.0, -20.0], [90.0, -80.0, -20.0]])
    rot = Rotation.from_euler(
        "zyx", np.c_[np.linspace(0, 40, n), np.linspace(0, 90, n), np.zeros(n)], degrees=True
    )
    centre = np.c_[np.linspace(-200, 200, n), np.zeros(n), np.full(n, 3000.0)]
    return np.stack([rot.apply(p) for p in layout], axis=1) + centre[:, None] + rng.normal(0, 3.0, (n, 4, 3))


def test_a_keypoint_off_its_rigid_body_loses_its_3d_in_that_frame_only() -> None:
    """Partly hidden markers placed far off in depth with full confidence (the demo's squat: pelvis markers 16-35 cm
    off tilted the pelvis 30 deg): the keypoints that disagree with the rest of their body are found per frame; a
    frame where two keypoints are off in different ways keeps the two that agree; noise alone flags nothing."""
    from mocapflow.fit.preprocess import rigid_outliers

    rng = np.random.default_rng(4)
    n = 60
    kp3d = _rigid_body_track(n, rng)
    conf = np.ones((n, 4))
    kp3d[10, 0, 2] += 350.0  # one keypoint far too deep
    kp3d[20, 3, 2] -= 250.0  # one too near
    kp3d[30, 1, 2] += 300.0  # two of four off: the two that agree may tie with another pair -> undecided
    kp3d[30, 2, 0] -= 200.0
    off = rigid_outliers(kp3d, conf, [0, 0, 0, 0], noise_mm=3.0)
    expected = np.zeros((n, 4), bool)
    expected[10, 0] = expected[20, 3] = True
    assert not off[30, [0, 3]].any()  # never a good keypoint
    off[30] = False
    np.testing.assert_array_equal(off, expected)
    # a hidden keypoint (confidence 0) is neither judged nor used; a body of two keypoints is never checked
    conf[10, 1] = 0.0
    assert rigid_outliers(kp3d, conf, [0, 0, 0, 0], noise_mm=3.0)[10].tolist() == [True, False, False, False]
    assert not rigid_outliers(kp3d, conf, [0, 0, 1, 1], noise_mm=3.0).any()
    # noisy keypoints (50 mm per coordinate, as validate fit's noisy set): the tolerance follows the noise
    noisy = _rigid_body_track(n, rng) + rng.normal(0, 50.0, (n, 4, 3))
    assert rigid_outliers(noisy, np.ones((n, 4)), [0, 0, 0, 0], noise_mm=50.0).mean() < 0.01


def test_preprocessing_drops_only_the_3d_of_a_rigid_outlier(model) -> None:
    from mocapflow.fit.preprocess import preprocess_keypoints

    pelvis = [i for i, s in enumerate(model.sites) if model.bodies[s.body].name == "pelvis"][:4]
    assert len(pelvis) == 4
    rng = np.random.default_rng(5)
    n = 40
    kp3d = _rigid_body_track(n, rng)
    kp3d[7, 2, 2] += 400.0
    kp2d = rng.uniform(100, 400, (n, 4, 2))
    conf = np.ones((n, 4))
    k2, k3, c, report = preprocess_keypoints(kp2d, kp3d, conf, pelvis, model, 30.0, swaps=False, noise_mm=3.0)
    assert np.isnan(k3[7, 2]).all() and np.isfinite(np.delete(k3.reshape(-1, 3), 7 * 4 + 2, axis=0)).all()
    np.testing.assert_allclose(k2, kp2d, rtol=1e-6)
    assert (c == 1).all() and report.rigid_outliers_3d == 1


def test_the_fit_does_not_depend_on_the_video_resolution(model, walk) -> None:
    """The same noisy keypoints, once in the video's px and once at half resolution (px and focal length halved, 3D
    unchanged): the same view of the same body, so the same joint angles. With the 2D residuals in the video's own
    px the Huber delta, the first 2D weight and the robust floor had meant different fits (this walk: a median 0.34
    deg apart per DOF; real still-photo keypoints: 4.9 deg)."""
    import dataclasses

    from mocapflow.camera import Intrinsics
    from mocapflow.fit.fitting import FitOptions, fit_arrays
    from mocapflow.fit.validate import keypoints_from_truth

    meta, arrays = keypoints_from_truth(walk, noise_2d_px=4.0, noise_3d_mm=50.0, seed=1)
    i = meta.intrinsics
    half_intr = Intrinsics(
        fx=i.fx / 2,
        fy=i.fy / 2,
        cx=(i.cx + 0.5) / 2 - 0.5,
        cy=(i.cy + 0.5) / 2 - 0.5,
        width=i.width // 2,
        height=i.height // 2,
    )
    half_meta = dataclasses.replace(meta, intrinsics=half_intr, width=i.width // 2, height=i.height // 2)
    half_arrays = {**arrays, "kp2d_px": (arrays["kp2d_px"] + 0.5) / 2 - 0.5}
    options = FitOptions(max_iters=600)
    full = fit_arrays(meta, arrays, options, model)
    half = fit_arrays(half_meta, half_arrays, options, model)
    joints = [i for i, d in enumerate(model.dof_names) if not d.startswith("pelvis")]
    diff = np.rad2deg(np.abs(full.q[:, joints] - half.q[:, joints]))
    assert np.median(np.nanmean(diff, axis=0)) < 0.05 and np.nanmax(diff) < 1.0, np.nanmean(diff, axis=0)
