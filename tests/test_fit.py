"""The fitting stage: parameterisation, kinematics, loss masking, recovery on a clean clip, compile reuse, outputs."""

from __future__ import annotations

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from mocapflow.fit import optimise
from mocapflow.fit.basis import (
    bspline_basis,
    bucket_frames,
    knot_offset,
    knots_for_bandwidth,
    motion_bandwidth_hz,
    n_control_points,
)
from mocapflow.fit.clip import gait_clip, keypoints_of, keypoints_table
from mocapflow.fit.fitting import (
    FitOptions,
    FitResult,
    balanced_w2d,
    depth_weight_for_noise,
    estimate_noise_mm,
    fit_arrays,
    fit_body_model,
    initial_params,
    prepare,
)
from mocapflow.fit.init import refine_rotation_2d, robust_kabsch, weighted_kabsch
from mocapflow.fit.kinematics import site_positions
from mocapflow.fit.loss import CONF_POWER_3D, DEPTH_WEIGHT_3D, total_loss
from mocapflow.fit.outputs import (
    MOT,
    OSIM,
    PNG,
    SCALES,
    TRC,
    angles_table,
    fit_key_prefix,
    mot_text,
    read_mot,
    write_fit,
)
from mocapflow.fit.params import Limits, bounded_mask, q_to_x
from mocapflow.fit.robust import RobustOptions, geman_mcclure_weights, reweight
from mocapflow.fit.run import fit_keypoints, read_keypoints
from mocapflow.fit.runtime import jax_cache_folder, xla_flags
from mocapflow.fit.sites import map_keypoints
from mocapflow.store import SUCCESS, Store, fit_key, keypoints_key, keypoints_prefix
from models.body import default_body_model, forward_kinematics

# markers that a lab marker set or a pose model would give (a subset of the body-model sites)
NAMES = (
    "rhip", "lhip", "rasis", "lasis", "pelv", "rkne", "lkne", "rknem", "lknem", "rank", "lank", "rhee", "lhee",
    "rtoe", "ltoe", "rsho", "lsho", "relb", "lelb", "relbm", "lelbm", "rwri", "lwri", "rhan", "lhan", "thor",
    "clavicle", "head", "nose",
)  # fmt: skip
CLIP_FRAMES = 48
CLIP_ITERS = 1200


@pytest.fixture(scope="module")
def model():
    return fit_body_model()


@pytest.fixture(scope="module")
def clip(model):
    return gait_clip(model, CLIP_FRAMES)


@pytest.fixture(scope="module")
def clean_fit(model, clip) -> FitResult:
    """A fit left in the level-camera frame it is optimised in (its q rebuilds the optimiser's parameters)."""
    meta, arrays = keypoints_of(clip, NAMES)
    return fit_arrays(meta, arrays, FitOptions(max_iters=CLIP_ITERS, world_frame=False), model)


def test_bounded_parameterisation_stays_inside_the_limits(model):
    limits = Limits.of(model)
    bounded = bounded_mask(model)
    x = jnp.asarray(np.random.default_rng(0).normal(0, 50, (200, model.n_dofs)), jnp.float32)
    q = np.asarray(limits.to_q(x))
    assert np.all(q[:, bounded] >= model.lower[bounded] - 1e-6)
    assert np.all(q[:, bounded] <= model.upper[bounded] + 1e-6)
    # free DOFs: root translations and the full-turn pelvis rotation pass through unchanged
    free = [model.dof_names[i] for i in np.flatnonzero(~bounded)]
    assert sorted(free) == sorted(["pelvis_tx", "pelvis_ty", "pelvis_tz", "pelvis_rotation"])
    np.testing.assert_array_equal(q[:, ~bounded], np.asarray(x)[:, ~bounded])
    # the inverse: interior values come back; values beyond a limit land just inside it
    knee = model.dof_index("knee_angle_r")
    inside = model.lower + 0.3 * (model.upper - model.lower)
    back = np.asarray(limits.to_q(jnp.asarray(q_to_x(inside, model))))
    np.testing.assert_allclose(back, inside, atol=1e-5)
    over = model.zero_pose().copy()
    over[knee] = math.radians(170.0)  # beyond the 140 degree limit
    clipped = np.asarray(limits.to_q(jnp.asarray(q_to_x(over, model))))[knee]
    assert model.upper[knee] - math.radians(0.5) < clipped < model.upper[knee]


def test_batched_kinematics_match_the_body_model(model):
    rng = np.random.default_rng(1)
    q = rng.uniform(model.lower, model.upper, (3, model.n_dofs)).clip(-3, 3)
    scale = rng.uniform(0.8, 1.2, (len(model.bodies), 3))
    offset = rng.normal(0, 0.02, (len(model.sites), 3))
    ours = np.asarray(jax.jit(lambda a, b, o: site_positions(model, a, b, o))(q, scale, offset))
    for t in range(len(q)):  # the reference, one pose at a time, eagerly
        ref = np.asarray(
            forward_kinematics(model, jnp.asarray(q[t]), jnp.asarray(scale), jnp.asarray(offset))
        )
        np.testing.assert_allclose(ours[t], ref, atol=2e-6)


def test_kinematics_with_anchored_hinges_match():
    """Hinges with an anchor (MJCF joint pos) and a fixed body rotation: the layout handles them too."""
    from models.body import Body, BodyModel, Dof, Site

    model = BodyModel(
        "anchored",
        bodies=(
            Body("root", -1, (0.0, 0.0, 0.0), dofs=(0,)),
            Body("arm", 0, (0.0, 0.5, 0.0), quat=(0.9238795, 0.0, 0.3826834, 0.0), dofs=(1, 2)),
        ),
        dofs=(
            Dof("slide", "slide", (1.0, 0.0, 0.0), -1.0, 1.0),
            Dof("bend", "hinge", (0.0, 0.0, 1.0), -2.0, 2.0, anchor=(0.0, 0.1, 0.0)),
            Dof("twist", "hinge", (0.0, 1.0, 0.0), -2.0, 2.0),
        ),
        sites=(Site("tip", 1, (0.0, 0.4, 0.05)), Site("base", 0, (0.1, 0.0, 0.0))),
    )
    q = jnp.asarray([[0.2, 0.7, -0.4], [-0.5, -1.1, 1.3]])
    scale = jnp.asarray([[1.1, 0.9, 1.0], [0.8, 1.2, 1.05]])
    ours = np.asarray(jax.jit(lambda a, b: site_positions(model, a, b, jnp.zeros((2, 3))))(q, scale))
    for t in range(2):
        np.testing.assert_allclose(ours[t], np.asarray(forward_kinematics(model, q[t], scale)), atol=2e-6)


def test_bspline_basis_is_a_partition_of_unity_and_buckets_pad(model):
    assert [bucket_frames(n) for n in (1, 64, 65, 150, 300, 1000, 1500)] == [64, 64, 96, 160, 320, 1024, 1536]
    basis = bspline_basis(100, fps=30.0, knots_per_second=8.0, n_columns=40)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(basis[:, 33:] == 0.0)  # padding columns are inert
    # a cubic spline reproduces a straight line exactly: coefficients on the line through the knots
    h = 30.0 / 8.0
    centres = knot_offset(100, h) + (np.arange(40) - 1.0) * h
    line = basis @ (0.5 + 0.01 * centres)
    np.testing.assert_allclose(line, 0.5 + 0.01 * np.arange(100), atol=1e-5)
    # knots are symmetric about the middle frame: the time-reversed basis is the column-reversed one
    used = basis[:, : n_control_points(100, h)]
    np.testing.assert_allclose(used[::-1], used[:, ::-1], atol=1e-6)


def test_keypoint_names_map_to_sites(model):
    names = ["left_knee", "rkne", "right_knee", "not_a_joint", "nose"]
    kmap = map_keypoints(names, model)
    # "right_knee" maps to rkne, already taken by the exact name; the unknown name is ignored
    assert kmap.names == ("left_knee", "rkne", "nose")
    assert [model.site_names[i] for i in kmap.site_index] == ["lkne", "rkne", "nose"]
    assert set(kmap.ignored) == {"right_knee", "not_a_joint"}
    with pytest.raises(ValueError, match="names a site"):
        map_keypoints(["foo", "bar"], model)


def _prepared(model, clip, names=NAMES, **corruption):
    meta, arrays = keypoints_of(clip, names, **corruption)
    opts = FitOptions(max_iters=10)
    prep = prepare(meta, arrays, model, opts)
    return prep, initial_params(prep, model, opts)


def test_loss_ignores_masked_and_nan_keypoints(model, clip, clean_fit):
    del clean_fit  # fitted first: its compiled optimiser block has the shapes used below
    prep, params = _prepared(model, clip)
    data = prep.data
    kp2d, kp3d, conf = (np.asarray(a).copy() for a in (data.kp2d, data.kp3d, data.conf))
    conf[3, 5] = 0.0  # masked by confidence, but finite values
    kp2d[7, 2] = np.nan  # NaN with a (wrong) positive confidence
    kp3d[7, 2] = np.nan
    conf[7, 2] = 0.9
    base = eqx.tree_at(
        lambda d: (d.kp2d, d.kp3d, d.conf), data, (jnp.asarray(kp2d), jnp.asarray(kp3d), jnp.asarray(conf))
    )

    # gradients stay finite: a block of Adam steps on this data leaves every parameter finite
    schedule = optimise.Schedule.make(0.03, 200, n_dofs=model.n_dofs)
    stepped, _, losses = optimise.run_block(
        params,
        optimise.init_state(params),
        jnp.asarray(0, jnp.int32),
        base,
        schedule,
        model,
        FitOptions().block_size,
    )
    assert np.all(np.isfinite(np.asarray(losses)))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(stepped))
    assert float(losses[-1]) < float(losses[0])

    loss_fn = jax.jit(lambda p, d: total_loss(p, d, model))

    def with_point(frame, joint, uv, xyz):
        a2, a3 = kp2d.copy(), kp3d.copy()
        a2[frame, joint], a3[frame, joint] = uv, xyz
        return eqx.tree_at(lambda d: (d.kp2d, d.kp3d), base, (jnp.asarray(a2), jnp.asarray(a3)))

    ref = float(loss_fn(params, base))
    assert np.isfinite(ref)
    far = (np.array([1e4, -1e4]), np.array([5e4, 5e4, 5e4]))
    assert float(loss_fn(params, with_point(3, 5, *far))) == ref  # conf 0: no pull, bit for bit
    assert float(loss_fn(params, with_point(7, 2, *far))) > ref + 1.0  # now finite with conf 0.9: pulls
    assert float(loss_fn(params, with_point(4, 5, *far))) > ref + 1.0  # an ordinary keypoint pulls


def test_fit_on_clean_keypoints_recovers_hip_and_knee_angles(model, clip, clean_fit):
    for dof in ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l", "hip_adduction_r"):
        err = np.rad2deg(np.abs(clean_fit.angle(dof) - clip.q[:, model.dof_index(dof)]))
        assert np.median(err) < 3.0, (dof, np.median(err))
        assert err.max() < 8.0, (dof, err.max())
    # the gait really moved the knee over a wide range, so this is not a trivial match
    assert np.ptp(np.rad2deg(clip.q[:, model.dof_index("knee_angle_r")])) > 40
    np.testing.assert_allclose(clean_fit.group_scale, 1.0, atol=0.05)
    assert np.nanmedian(clean_fit.residual_3d_mm) < 10.0


def _waving_keypoints(
    freqs_hz: tuple[float, ...], noise_px: float, seed: int, n: int = 120, fps: float = 30.0
):
    """12 image keypoints [n, 12, 2]: fixed positions moved by sinusoids at ``freqs_hz`` (random phases and
    directions per keypoint, 20 px each), plus white noise; a drifting whole-body offset that must not count."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    kp = np.tile(rng.uniform(100, 400, (1, 12, 2)), (n, 1, 1))
    for f in freqs_hz:
        phase = rng.uniform(0, 2 * np.pi, (12, 1))
        direction = rng.normal(size=(12, 2))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        kp += (
            20.0 * np.sin(2 * np.pi * f * t[None, :, None] + phase[..., None]).transpose(1, 0, 2) * direction
        )
    kp += (3.0 * t)[:, None, None]  # the subject walks across the image: not joint motion
    return kp + rng.normal(0.0, noise_px, kp.shape), np.ones((n, 12))


@pytest.mark.parametrize("noise_px", [0.0, 4.0])
def test_motion_bandwidth_finds_the_fastest_movement_and_sizes_the_knots(noise_px):
    slow, conf = _waving_keypoints((0.5,), noise_px, seed=1)
    fast, _ = _waving_keypoints((0.5, 1.5), noise_px, seed=2)
    bw_slow = motion_bandwidth_hz(slow, conf, 30.0)
    bw_fast = motion_bandwidth_hz(fast, conf, 30.0)
    assert 0.25 <= bw_slow <= 1.0, bw_slow
    assert 1.25 <= bw_fast <= 2.0, bw_fast
    assert knots_for_bandwidth(bw_slow, 2.0, 8.0) < knots_for_bandwidth(bw_fast, 2.0, 8.0) <= 8.0
    # a still subject: only noise -> the fewest knots; unknown (too few frames) -> the most
    still, _ = _waving_keypoints((), 4.0, seed=3)
    assert knots_for_bandwidth(motion_bandwidth_hz(still, conf, 30.0), 2.0, 8.0) == 2.0
    assert knots_for_bandwidth(motion_bandwidth_hz(still[:10], conf[:10], 30.0), 2.0, 8.0) == 8.0
    # missing keypoints (NaN, confidence 0) are filled, not read as motion
    holes = fast.copy()
    holes[::7, 3] = np.nan
    conf_holes = conf.copy()
    conf_holes[::7, 3] = 0.0
    assert abs(motion_bandwidth_hz(holes, conf_holes, 30.0) - bw_fast) <= 0.5


def test_adaptive_knots_keep_one_basis_shape_per_bucket(model):
    meta, arrays = keypoints_of(gait_clip(model, 90, cadence_hz=0.25), NAMES)
    preps = [prepare(meta, arrays, model, FitOptions(adaptive_knots=a)) for a in (False, True)]
    assert preps[0].knots_per_second == 8.0
    assert preps[1].knots_per_second < 8.0
    assert preps[0].data.basis.shape == preps[1].data.basis.shape


def test_videos_in_one_frame_bucket_share_one_compilation(model):
    names = NAMES[:17]  # a keypoint count no other test uses, so the first video must compile
    opts = FitOptions(max_iters=40, block_size=40)
    before = optimise.trace_count("block")
    for n_frames in (40, 57):  # both pad to the 64-frame bucket
        prep, params = _prepared(model, gait_clip(model, n_frames), names)
        assert prep.n_bucket == 64 and len(prep.frames) == n_frames
        fitted, _, info = optimise.optimise(
            params,
            prep.data,
            model,
            max_iters=opts.max_iters,
            learning_rate=opts.learning_rate,
            block_size=40,
        )
        assert info.iterations == 40 and np.isfinite(info.final_loss)
    assert optimise.trace_count("block") - before == 1


def test_optimise_reweights_at_the_given_steps_without_recompiling(model, clip, clean_fit):
    del clean_fit  # its compiled block (shapes, block size) is the one reused here
    prep, params = _prepared(model, clip)
    calls: list[float] = []

    def count(p, d):
        calls.append(float(total_loss(p, d, model)))  # called with the current parameters and data
        return eqx.tree_at(lambda x: x.robust3d, d, 0.5 * d.robust3d)

    before = optimise.trace_count("block")
    _, data, info = optimise.optimise(
        params,
        prep.data,
        model,
        max_iters=1000,
        learning_rate=0.03,
        block_size=FitOptions().block_size,
        reweight_at=(150, 400, 2000),  # 150: before the block starting at 200; 2000 is beyond max_iters
        reweight=count,
    )
    assert len(calls) == 2 and calls[1] < calls[0]  # the second call sees parameters fitted further
    np.testing.assert_allclose(np.asarray(data.robust3d), 0.25)  # the returned data is the reweighted one
    assert info.iterations >= 600  # no early stop before the block after the last reweighting
    assert optimise.trace_count("block") == before


def test_a_second_video_of_a_bucket_compiles_nothing(model):
    """Every use of the kinematics in a fit (initial pose, outlier reweighting, final evaluation, world frame,
    virtual markers) runs compiled programs keyed by the frame bucket: once one video of a bucket is fitted, a
    second one (another length and motion in the same bucket) compiles nothing at all (XLA compilations counted
    by JAX's own monitoring events)."""
    from mocapflow.fit.kinematics import trace_count
    from mocapflow.fit.osim import virtual_markers

    opts = FitOptions(max_iters=30, block_size=10)
    videos = [keypoints_of(gait_clip(model, n, cadence_hz=c), NAMES) for n, c in ((70, 0.9), (85, 0.5))]
    first = fit_arrays(*videos[0], opts, model)
    assert first.camera_pose.get("up_method")  # the world frame ran (not the level-camera fallback)
    virtual_markers(first)
    compiles: list[float] = []

    def listener(event: str, seconds: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    traces = trace_count()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = fit_arrays(*videos[1], opts, model)
        virtual_markers(second)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert second.camera_pose.get("up_method") and len(second.frames) == 85
    assert compiles == [] and trace_count() == traces


def test_geman_mcclure_weights_and_noise_balance():
    w = geman_mcclure_weights(np.array([0.0, 2.5, 25.0, 1e9]), spread=1.0, cutoff=2.5)
    np.testing.assert_allclose(w[:3], [1.0, 0.25, 1.0 / 101.0**2], rtol=1e-5)
    assert w[3] > 0  # floored: a down-weighted observation is still measured at the next reweighting
    # 2D keypoints 10x more precise (per unit) than the 3D ones get 100x the 3D weight
    assert balanced_w2d(1.0, noise_3d_mm=50.0, noise_2d_ref_px=0.5) == pytest.approx(100.0)
    # exact keypoints: both noises at their floors
    assert balanced_w2d(2.0, noise_3d_mm=0.0, noise_2d_ref_px=0.0) == pytest.approx(2.0)
    assert np.isnan(balanced_w2d(1.0, noise_3d_mm=float("nan"), noise_2d_ref_px=1.0))
    with pytest.raises(ValueError, match="cutoff"):
        RobustOptions(cutoff=0.0)


def test_2d_weight_is_balanced_by_the_white_noise_measured_before_the_fit(model, clip):
    """The 2D weight follows the keypoints' own frame-to-frame noise (2D in reference px, 3D in cm), not the fit's
    residual spreads: a pose model's steady 3D errors (the same offset in every frame) leave it where it was, while
    the residual spreads they widen had raised it 1.8x (and with it the pull of the pose model's 2D errors)."""
    from mocapflow.fit.loss import F_REF_PX
    from mocapflow.fit.outputs import scales_document

    meta, arrays = keypoints_of(clip, NAMES)
    rng = np.random.default_rng(0)
    arrays["kp2d_px"] += rng.normal(0.0, 3.0, arrays["kp2d_px"].shape)
    arrays["kp3d_mm"] += rng.normal(0.0, 30.0, arrays["kp3d_mm"].shape)
    opts = FitOptions(max_iters=CLIP_ITERS, world_frame=False)
    fit = fit_arrays(meta, arrays, opts, model)
    assert fit.noise_2d_ref_px == pytest.approx(3.0 * F_REF_PX / meta.intrinsics.fx, rel=0.3)
    assert fit.noise_mm == pytest.approx(30.0, rel=0.3)
    assert fit.w2d == pytest.approx(balanced_w2d(1.0, fit.noise_mm, fit.noise_2d_ref_px), rel=1e-5)
    assert scales_document(fit)["fit"]["keypoint_noise_2d_ref_px"] == pytest.approx(fit.noise_2d_ref_px)
    steady = arrays["kp3d_mm"] + rng.normal(0.0, 60.0, (1, *arrays["kp3d_mm"].shape[1:]))
    offset = fit_arrays(meta, {**arrays, "kp3d_mm": steady}, opts, model)
    assert offset.robust[0].spread_3d_cm > 1.5 * fit.robust[0].spread_3d_cm  # the residuals did widen
    assert offset.w2d == pytest.approx(fit.w2d, rel=0.1)
    unbalanced = fit_arrays(meta, arrays, dataclasses.replace(opts, balance_noise=False), model)
    assert unbalanced.w2d == pytest.approx(FitOptions().w2d)


def test_pose_prior_weighs_in_by_the_systematic_3d_spread(model, clip, clean_fit):
    """By default (``prior_spread_power`` 1), 3D keypoints steadily off their joints (as a pose model's are) raise the
    prior's weight, white noise of the same size does not; exact keypoints and the rule off (0) keep the prior's own
    weight. The weight a fit ended with is recorded (``FitResult.prior_weight``, scales.json)."""
    from mocapflow.fit.outputs import scales_document

    assert clean_fit.prior_weight == pytest.approx(FitOptions().prior, rel=1e-5)
    meta, arrays = keypoints_of(clip, NAMES)
    rng = np.random.default_rng(1)
    opts = FitOptions(max_iters=CLIP_ITERS, world_frame=False)
    assert opts.prior_spread_power == 1.0
    shape = arrays["kp3d_mm"].shape
    steady = arrays["kp3d_mm"] + rng.normal(0.0, 60.0, (1, *shape[1:]))  # the same offset in every frame
    fit = fit_arrays(meta, {**arrays, "kp3d_mm": steady}, opts, model)
    assert fit.prior_weight > 3.0 * FitOptions().prior
    recorded = scales_document(fit)["fit"]
    assert recorded["prior_weight"] == pytest.approx(fit.prior_weight)
    assert recorded["w2d"] == pytest.approx(fit.w2d)
    white = fit_arrays(
        meta, {**arrays, "kp3d_mm": arrays["kp3d_mm"] + rng.normal(0.0, 60.0, shape)}, opts, model
    )
    assert white.prior_weight < 1.5 * FitOptions().prior
    off = fit_arrays(
        meta,
        {**arrays, "kp3d_mm": steady},
        dataclasses.replace(opts, prior_spread_power=0.0),
        model,
    )
    assert off.prior_weight == pytest.approx(FitOptions().prior, rel=1e-5)


def test_reweighting_finds_gross_depth_errors(model, clip, clean_fit):
    """At the clean fit's parameters, keypoints whose depth is off by 40 cm get weights near 0, the rest near 1."""
    meta, arrays = keypoints_of(clip, NAMES)
    rng = np.random.default_rng(5)
    bad = rng.random(arrays["conf"].shape) < 0.1
    arrays["kp3d_mm"][bad, 2] += 400.0
    prep = prepare(meta, arrays, model, FitOptions(max_iters=CLIP_ITERS))
    params = clean_fit_params(clean_fit, np.asarray(prep.data.basis))
    n = len(prep.frames)
    once, _ = reweight(params, prep.data, model, RobustOptions())
    w_once = np.asarray(once.robust3d)[:n]
    # the outliers also shift every frame's centre, so the first pass only separates them ...
    assert np.median(w_once[bad]) < 0.05 < 0.5 < np.median(w_once[~bad])
    # ... and the second, centred without them, leaves the inliers at full weight
    twice, stats = reweight(params, once, model, RobustOptions())
    w3 = np.asarray(twice.robust3d)[:n]
    assert np.median(w3[bad]) < 0.05 and np.median(w3[~bad]) > 0.9
    assert stats.outliers_3d == pytest.approx(bad.mean(), abs=0.03)
    w2 = np.asarray(twice.robust2d)[:n]
    assert np.median(w2) > 0.9  # the 2D keypoints were not touched: they are inliers


def clean_fit_params(result: FitResult, basis: np.ndarray):
    """The parameters of a finished fit, rebuilt from its result (per-frame joint values as a B-spline on ``basis``,
    the one the fit being tested prepared: its knots are sized to its keypoints' motion)."""
    from mocapflow.fit.params import FitParams, init_bspline

    n = len(result.frames)
    nb = bucket_frames(n)
    x = q_to_x(result.q, result.model)
    x = np.concatenate([x, np.repeat(x[-1:], nb - n, axis=0)])
    return FitParams(
        trajectory=init_bspline(x, basis, np.concatenate([np.ones(n), np.full(nb - n, 1e-3)])),
        log_scale=jnp.log(jnp.asarray(result.group_scale, jnp.float32)),
        log_body=jnp.asarray(
            np.log(result.body_scale / (result.model.group_matrix @ result.group_scale)), jnp.float32
        ),
        offset=jnp.zeros((len(result.keypoint_names), 3), jnp.float32),
    )


def test_fit_with_gross_depth_errors_still_recovers_the_angles(model, clip):
    """15 % of the 3D keypoints 0.3-1.5 m too deep (what partly hidden markers give): outliers stop pulling."""
    meta, arrays = keypoints_of(clip, NAMES, seed=11)
    rng = np.random.default_rng(11)
    bad = rng.random(arrays["conf"].shape) < 0.15
    arrays["kp3d_mm"][bad, 2] += rng.uniform(300.0, 1500.0, bad.sum())
    result = fit_arrays(meta, arrays, FitOptions(max_iters=CLIP_ITERS), model)
    for dof in ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l"):
        err = np.rad2deg(np.abs(result.angle(dof) - clip.q[:, model.dof_index(dof)]))
        assert np.median(err) < 3.0, (dof, np.median(err))
    assert len(result.robust) == len(FitOptions().robust_at)
    # every planted outlier is caught; with monocular depth down-weighted in the loss (mocapflow.fit.loss), inliers
    # near the spread are flagged too (30 % flagged for 15 % planted on this clip): bound it at 2.5x the planted share
    assert bad.mean() - 0.03 < result.robust[-1].outliers_3d < 2.5 * bad.mean()
    # the reported residuals still count the outliers (~15 % of points ~0.9 m off), the 2D ones stay small
    assert np.nanmedian(result.residual_3d_mm) > 50.0 and np.nanmedian(result.residual_2d_px) < 2.0


def test_a_video_shorter_than_the_smoothing_window_fits(model):
    """Noisy keypoints smooth the initial pelvis track over up to +-0.45 s: half a second of video (shorter than
    that window, as in a backfill of short clips) gets one row per frame, not a shape error."""
    short = gait_clip(model, 15)
    meta, arrays = keypoints_of(short, NAMES, noise_2d_px=3.0, noise_3d_mm=50.0, seed=3)
    result = fit_arrays(meta, arrays, FitOptions(max_iters=200), model)
    assert len(result.frames) == 15 and np.all(np.isfinite(result.angle("knee_angle_r")))


def test_robust_rigid_fit_and_2d_refinement():
    rng = np.random.default_rng(2)
    src = rng.normal(0.0, 0.12, (7, 3))  # a body's sites (m)
    angle = np.deg2rad(35.0)
    axis = np.array([0.3, 0.9, 0.2]) / np.linalg.norm([0.3, 0.9, 0.2])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    r_true = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    t_true = np.array([4.0, 0.1, -0.2])  # world: 4 m in front of the level camera
    dst = src @ r_true.T + t_true
    noisy = dst.copy()
    noisy[[1, 4]] += np.array([0.6, 0.0, 0.0])  # two depths (world X = camera z) off by 60 cm ...
    conf = np.array([1.0, 0.6, 1.0, 1.0, 0.6, 1.0, 1.0])  # ... where the pose model was less sure

    def err(r):
        return np.degrees(np.arccos(np.clip((np.trace(r.T @ r_true) - 1) / 2, -1, 1)))

    w = conf**CONF_POWER_3D
    plain, _ = weighted_kabsch(src, noisy, conf)
    robust, t = robust_kabsch(src, noisy, w)
    assert err(plain) > 10.0 and err(weighted_kabsch(src, noisy, w)[0]) > 3.0 and err(robust) < 1.0
    np.testing.assert_allclose(t, t_true, atol=0.01)
    one = dst.copy()
    one[3] += np.array([0.5, 0.0, 0.0])  # one gross error at full confidence
    assert err(robust_kabsch(src, one, np.ones(7))[0]) < 1.0 < err(weighted_kabsch(src, one, np.ones(7))[0])
    # exact 2D through a camera improves a rotation that noisy depths put 10 degrees off
    from mocapflow.fit.sites import WORLD_TO_CAMERA

    intr = (500.0, 500.0, 320.0, 240.0)
    cam = dst @ WORLD_TO_CAMERA.T
    uv = np.stack([500.0 * cam[:, 0] / cam[:, 2] + 320.0, 500.0 * cam[:, 1] / cam[:, 2] + 240.0], axis=1)
    tilt = np.deg2rad(10.0)
    off = r_true @ np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    refined = refine_rotation_2d(src, uv, off, t_true, intr)
    assert err(off) > 9.0 and err(refined) < 0.5


def test_schedule_warms_up_then_decays_to_the_final_ratio():
    s = optimise.Schedule.make(0.02, max_iters=1000, warmup=100, final_ratio=1e-4)
    lr = [float(s(jnp.asarray(k))) for k in (0, 49, 99, 100, 550, 1000)]
    np.testing.assert_allclose(lr[:3], [0.02 * 1 / 100, 0.02 * 50 / 100, 0.02], rtol=1e-5)
    np.testing.assert_allclose(lr[3:], [0.02, 0.02 * 1e-2, 0.02 * 1e-4], rtol=1e-4)


def test_noise_estimate_tracks_the_added_noise(model, clip):
    for sigma in (0.0, 20.0):
        meta, arrays = keypoints_of(clip, NAMES, noise_3d_mm=sigma, seed=3)
        est = estimate_noise_mm(arrays["kp3d_mm"], arrays["kp2d_px"], arrays["conf"])
        if sigma == 0:
            assert est < 2.0
        else:
            assert 0.8 * sigma < est < 1.3 * sigma


def test_depth_is_weighted_by_the_keypoints_own_noise_per_axis(model, clip):
    """The 3D depth factor is (x/y noise over depth noise)^2 of the keypoints' white noise, within [0.3, 1]: depth as
    noisy as x and y (the synthetic set's noise) pulls as much, a monocular model's noisier depth keeps 0.3, a fixed
    ``FitOptions.depth_weight`` wins."""
    assert depth_weight_for_noise((50.0, 50.0, 50.0)) == pytest.approx(1.0)
    assert depth_weight_for_noise((20.0, 20.0, 30.0)) == pytest.approx(4.0 / 9.0)
    assert depth_weight_for_noise((4.0, 4.0, 12.0)) == pytest.approx(DEPTH_WEIGHT_3D)  # 1/9, floored
    # exact keypoints: every axis at the noise floor
    assert depth_weight_for_noise((0.0, 0.0, 0.0)) == pytest.approx(1.0)
    assert depth_weight_for_noise((1.0, float("nan"), 1.0)) == pytest.approx(DEPTH_WEIGHT_3D)
    meta, arrays = keypoints_of(clip, NAMES)
    rng = np.random.default_rng(5)
    opts = FitOptions(world_frame=False)
    noisy = arrays["kp3d_mm"] + rng.normal(0.0, 30.0, arrays["kp3d_mm"].shape)
    deep = arrays["kp3d_mm"] + rng.normal(0.0, 1.0, arrays["kp3d_mm"].shape) * np.array([10.0, 10.0, 40.0])
    weights = {}
    for name, kp3d, o in (
        ("isotropic", noisy, opts),
        ("deep", deep, opts),
        ("fixed", noisy, dataclasses.replace(opts, depth_weight=0.5)),
    ):
        prep = prepare(meta, {**arrays, "kp3d_mm": kp3d}, model, o)
        assert prep.noise_axes_mm[0] == pytest.approx(30.0 if name != "deep" else 10.0, rel=0.25)
        weights[name] = float(prep.data.weights.depth3d)
    assert weights["isotropic"] > 0.75
    assert weights["deep"] == pytest.approx(DEPTH_WEIGHT_3D)
    assert weights["fixed"] == pytest.approx(0.5)


def test_mot_file_parses_back_to_the_angles_table(model, clean_fit):
    header, columns, values = read_mot(mot_text(clean_fit, name="gait"))
    assert header["name"] == "gait" and header["version"] == "1" and header["inDegrees"] == "yes"
    assert int(header["nRows"]) == CLIP_FRAMES and int(header["nColumns"]) == model.n_dofs + 1
    table = angles_table(clean_fit)
    assert columns == ["time", *model.dof_names]
    np.testing.assert_allclose(values[:, 0], table.column("time_s").to_numpy(), atol=1e-6)
    for i, name in enumerate(model.dof_names):
        np.testing.assert_allclose(values[:, i + 1], table.column(name).to_numpy(), atol=1e-5)
    # hinges in degrees, slides in metres (independently from the radians of the result)
    knee = model.dof_index("knee_angle_r")
    np.testing.assert_allclose(values[:, knee + 1], np.degrees(clean_fit.q[:, knee]), atol=1e-5)
    units = json.loads(table.schema.metadata[b"units"])
    assert units["knee_angle_r"] == "deg" and units["pelvis_tx"] == "m"


class _RecordingStore(Store):
    """A local store that records the order of its puts."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    def put_bytes(self, key, data):
        self.puts.append(key)
        return super().put_bytes(key, data)


def test_outputs_go_through_the_store_with_success_last(tmp_path, clean_fit):
    store = _RecordingStore(str(tmp_path / "store"))
    prefix, reports = write_fit(store, clean_fit, inputs={"keypoints_uri": "x"})
    assert prefix == fit_key_prefix(clean_fit.meta, clean_fit.options, clean_fit.model.name)
    part = f"model={clean_fit.meta.model_id}/video={clean_fit.meta.video_sha256}/fit="
    assert prefix.startswith(f"fits/angles/{part}")
    names = [k.rsplit("/", 1)[1] for k in store.puts]
    # the angles table (what dataset readers list) just before the commit marker, which is last
    assert names[-2:] == ["angles.parquet", SUCCESS] and len(set(store.puts)) == len(store.puts) == 8
    assert set(names) == {"angles.parquet", "residuals.parquet", SCALES, MOT, PNG, OSIM, TRC, SUCCESS}
    folders = {k.rsplit("/", 1)[1]: k.split("/")[1] for k in store.puts}
    assert folders == {
        "angles.parquet": "angles",
        SUCCESS: "angles",
        "residuals.parquet": "residuals",
        SCALES: "scales",
        MOT: "mot",
        PNG: "plots",
        OSIM: "osim",
        TRC: "trc",
    }
    assert all(f"/{part}" in k for k in store.puts)
    success = store.get_json(f"{prefix}/{SUCCESS}")
    assert success["rows"] == CLIP_FRAMES
    assert success["bytes"] == sum(r.bytes for r in reports[:-1])
    assert success["outputs"][MOT] == store.uri(fit_key(prefix, MOT))
    angles = pq.read_table(tmp_path / "store" / prefix / "angles.parquet")
    assert angles.num_rows == CLIP_FRAMES and "knee_angle_r" in angles.column_names
    assert angles.column_names[-2:] == ["source", "subject_id"]
    png = store.get_bytes(fit_key(prefix, PNG))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    scales = store.get_json(fit_key(prefix, SCALES))
    assert set(scales["group_scale"]) == set(clean_fit.model.scale_groups)
    assert set(scales["keypoint_offset_mm"]) == set(NAMES)


def test_each_fit_table_kind_reads_as_one_dataset_with_its_source(tmp_path, clean_fit):
    """fits/angles/ (and fits/residuals/) hold one kind of table each: pyarrow.dataset, DuckDB and pandas read every
    video's rows without filters, each row naming its source video (and the manifest's subject id)."""

    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    store = Store(str(tmp_path / "store"))
    videos = {"s3://clinic/day1/p01.mp4": ("1" * 64, "P01"), "/data/p02.mp4": ("2" * 64, None)}
    for source, (sha, subject) in videos.items():
        meta = dataclasses.replace(clean_fit.meta, video_sha256=sha, source=source, subject_id=subject)
        write_fit(store, dataclasses.replace(clean_fit, meta=meta))
    root = tmp_path / "store" / "fits"
    angles = ds.dataset(root / "angles", format="parquet").to_table()
    assert angles.num_rows == 2 * CLIP_FRAMES
    counts = angles.group_by(["source", "subject_id"]).aggregate([("frame", "count")]).to_pylist()
    assert sorted((c["source"], c["subject_id"], c["frame_count"]) for c in counts) == sorted(
        (s, subject, CLIP_FRAMES) for s, (_sha, subject) in videos.items()
    )
    hive = ds.dataset(root / "angles", format="parquet", partitioning="hive").to_table(
        columns=["video", "source"]
    )
    assert {(r["video"], r["source"]) for r in hive.to_pylist()} == {
        (sha, s) for s, (sha, _) in videos.items()
    }
    by_duck = duckdb.sql(
        f"SELECT source, count(*) AS n, max(knee_angle_r) AS knee FROM read_parquet('{root}/angles/**/*.parquet') "
        "GROUP BY source ORDER BY source"
    ).fetchall()
    assert [(s, n) for s, n, _ in by_duck] == sorted((s, CLIP_FRAMES) for s in videos)
    assert all(np.isfinite(knee) for _, _, knee in by_duck)
    residuals = pd.read_parquet(root / "residuals")
    assert len(residuals) == 2 * CLIP_FRAMES and set(residuals["source"]) == set(videos)
    md = pq.read_schema(next((root / "angles").rglob("angles.parquet"))).metadata
    assert json.loads(md[b"mocapflow.table"]) == "angles" and json.loads(md[b"source"]) in videos
    # the non-table outputs live in their own folders, one file per fit
    assert len(list((root / "mot").rglob("*.mot"))) == len(list((root / "osim").rglob("*.osim"))) == 2


def test_fit_keypoints_reads_only_committed_tables(tmp_path, model, clip):
    meta, arrays = keypoints_of(clip, NAMES)
    src = Store(str(tmp_path / "in"))
    key = keypoints_key(meta.video_sha256, meta.model_id, meta.params)
    src.write_table(key, keypoints_table(meta, arrays))
    with pytest.raises(FileNotFoundError, match="rerun the pose stage"):
        read_keypoints(src.uri(key))
    src.commit(keypoints_prefix(meta.video_sha256, meta.model_id, meta.params), {"rows": CLIP_FRAMES})
    out = Store(str(tmp_path / "out"))
    opts = FitOptions(max_iters=40)  # the clean fit's shapes and block size: no new compilation
    first = fit_keypoints(src.uri(key), out, opts)
    assert not first["skipped"] and first["rows"] == CLIP_FRAMES
    assert out.is_committed(first["prefix"])
    again = fit_keypoints(src.uri(key), out, opts)  # same inputs, same key: nothing to do
    assert again["skipped"] and again["prefix"] == first["prefix"]


def test_runtime_helpers_are_pure(tmp_path):
    assert xla_flags(1) == "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    flags = xla_flags(3, "--xla_dump_to=/tmp/x intra_op_parallelism_threads=8")
    assert flags.split() == [
        "--xla_dump_to=/tmp/x",
        "--xla_cpu_multi_thread_eigen=true",
        "intra_op_parallelism_threads=3",
    ]
    folder = jax_cache_folder(tmp_path)
    assert folder.parent == tmp_path and folder.name and "/" not in folder.name
    with pytest.raises(ValueError):
        xla_flags(0)


def test_default_model_is_built_once():
    assert fit_body_model() is fit_body_model()
    assert default_body_model() is not default_body_model()  # why fit_body_model caches it


@pytest.mark.slow
def test_validate_fit_meets_the_accuracy_targets(tmp_path):
    """``mocapflow validate fit --seeds 5 --json``: 5 fresh synthetic sets (4 videos of 4 s, clean and noisy each) in
    a fresh pinned process (~5-10 min). Targets of issue #11: the median over seeds of each seed's median error
    <= 2.0 deg; every clean video <= 3.0 deg. Noisy videos: see the docstring of ``tests/test_fit_outputs.py``'s
    fast check: a depth-ambiguous view now and then reaches 5-7 deg, so their bound only catches gross failures."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "MOCAPFLOW_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mocapflow"), "validate", "fit", "--seeds", "5", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [p["seed"] for p in summary["per_seed"]] == [0, 1, 2, 3, 4]
    assert summary["median_deg"] <= 2.0
    for run in summary["runs"]:
        assert run["mjae_clean_deg"] <= 1.6
        assert len(run["videos"]) == 2 * run["spec"]["n_videos"]
        for video in run["videos"]:
            assert video["mjae_deg"] <= (3.0 if video["kind"] == "clean" else 8.0), video
