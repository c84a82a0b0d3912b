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


def test_pose_prior_leaves_the_root_free(model) -> None:
    sigma = prior_sigma_rad(model)
    for d in ("pelvis_tx", "pelvis_tilt", "pelvis_rotation"):
        assert sigma[model.dof_index(d)] == 0.0
    assert sigma[model.dof_index("arm_rot_r")] < sigma[model.dof_index("knee_angle_r")]
    assert np.all(sigma[[model.dof_index(d) for d in ("knee_angle_l", "elbow_flex_r", "hip_flexion_l")]] > 0)


@pytest.mark.parametrize("kps", [2.0, 4.0, 8.0])
def test_trajectory_cutoff_is_half_the_knot_rate(kps: float) -> None:
    """A sinusoid at the stated cut-off keeps half its amplitude through the fit's spline basis; one at
    half of it passes, one at twice it is mostly removed."""
    from mocapflow.fit.basis import bspline_basis
    from mocapflow.fit.loss import trajectory_cutoff_hz

    fps, n = 30.0, 600
    basis = bspline_basis(n, fps, kps).astype(np.float64)
    proj = basis @ np.linalg.pinv(basis)
    t = np.arange(n) / fps
    mid = slice(100, 500)

    def gain(f: float) -> float:
        g = [np.std((proj @ np.sin(2 * np.pi * f * t + p))[mid]) / np.std(np.sin(2 * np.pi * f * t + p)[mid])
             for p in (0.0, 0.5 * np.pi)]  # fmt: skip
        return float(np.mean(g))

    fc = trajectory_cutoff_hz(kps)
    assert gain(fc) == pytest.approx(0.5, abs=0.08)
    assert gain(0.5 * fc) > 0.97
    assert gain(2.0 * fc) < 0.2
