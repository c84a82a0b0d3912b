"""The anatomical world frame (mocapflow.fit.world) on synthetic ground truth with known camera extrinsics.

A fit places the body in the level-camera frame; the ground truth's world pose seen through the truth's extrinsics
is what a perfect fit would return, so the world frame estimated from it must give back the camera's pitch, roll
and height, feet on the floor and the truth's pelvis tilt/list.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mocapflow.camera import Extrinsics
from mocapflow.fit.sites import WORLD_TO_CAMERA
from mocapflow.fit.world import ROOT_DOFS, apply_root, foot_sites, to_world_frame
from mocapflow.synth.kinematics import FrameFk
from mocapflow.synth.motions import generate_motion
from mocapflow.synth.subjects import sample_subject
from models.body import default_body_model

FPS = 30.0
PITCH_TOL_DEG = 4.0
FIT_PITCH_TOL_DEG = 6.0  # a real fit adds its foot-angle errors (a few degrees) to the synthetic feet' tilt
GRAVITY_TOL_DEG = 8.0
HEIGHT_TOL_M = 0.3


@pytest.fixture(scope="module")
def fk() -> FrameFk:
    return FrameFk(default_body_model())


def _truth(fk: FrameFk, motion: str, seed: int, pitch_deg: float, height_m: float, roll_deg: float):
    rng = np.random.default_rng(seed)
    subject = sample_subject(fk, rng, f"s{seed}")
    m = generate_motion(fk, motion, subject, 90, FPS, rng)
    sites = fk(m.q, subject.body_scale, subject.site_offset)
    centre = sites.reshape(-1, 3).mean(0)
    yaw = m.facing_yaw + np.deg2rad(rng.uniform(-60, 60))
    out = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    dist = 4.0
    eye = np.array([centre[0] + dist * out[0], height_m, centre[2] + dist * out[2]])
    target_y = height_m - dist * np.tan(np.deg2rad(pitch_deg))
    target = np.array([centre[0], target_y, centre[2]])
    return m.q, subject, Extrinsics.look_at(eye, target, roll_deg=roll_deg)


def _as_fit(model, q_world: np.ndarray, extr: Extrinsics) -> np.ndarray:
    """The joint values a perfect fit returns: root pose in the level-camera frame (x_cam = W x_fit)."""
    idx = [model.dof_index(d) for d in ROOT_DOFS]
    r_fit = WORLD_TO_CAMERA.T @ extr.R  # world -> fit frame
    p = q_world[:, idx[:3]] @ r_fit.T + WORLD_TO_CAMERA.T @ extr.t
    rot = Rotation.from_matrix(r_fit) * Rotation.from_euler("ZXY", q_world[:, idx[3:]])
    q = q_world.copy()
    q[:, idx[:3]] = p
    q[:, idx[3:]] = rot.as_euler("ZXY")
    return q


def _pitch_deg(extr: Extrinsics) -> float:
    return float(np.degrees(-np.arcsin(extr.R[2, 1])))


@pytest.mark.parametrize(
    ("motion", "seed", "pitch", "height", "roll"),
    [
        ("walking", 1, 12.0, 1.5, 2.0),
        ("squat", 2, -5.0, 0.9, -3.0),
        ("arm_raise", 3, 25.0, 2.2, 0.0),
        ("sit_to_stand", 4, 8.0, 1.2, 1.0),
    ],
)
def test_camera_pose_and_floor_from_a_perfect_fit(
    fk: FrameFk, motion: str, seed: int, pitch: float, height: float, roll: float
) -> None:
    model = fk.model
    q_true, subject, extr = _truth(fk, motion, seed, pitch, height, roll)
    assert abs(_pitch_deg(extr) - pitch) < 1.0  # the scene is what the parameters say
    q_fit = _as_fit(model, q_true, extr)
    body_scale = subject.body_scale
    sites_fit = fk(q_fit, body_scale)
    root, cam = to_world_frame(q=q_fit, model=model, fps=FPS, sites=sites_fit)
    # Tolerances: the synthetic feet are not flat on the floor (per-joint noise lifts a heel or a whole foot by up
    # to 5 cm while the other foot carries the body), so the floor's tilt is known to a few degrees: gravity within
    # GRAVITY_TOL_DEG, pitch within PITCH_TOL_DEG, height within HEIGHT_TOL_M (4 deg at 4 m is 0.28 m).
    assert cam["pitch_deg"] == pytest.approx(pitch, abs=PITCH_TOL_DEG), cam
    assert cam["height_m"] == pytest.approx(height, abs=HEIGHT_TOL_M), cam
    r_true, r_est = extr.R, np.asarray(cam["R_world_to_camera"])
    up_err = np.degrees(np.arccos(np.clip(r_true[:, 1] @ r_est[:, 1], -1.0, 1.0)))  # world up in camera axes
    assert up_err < GRAVITY_TOL_DEG, cam
    # the body stands on the floor: lowest foot site ~0 in every frame, pelvis at standing height or below
    q_w = apply_root(q_fit, model, root)
    sites = fk(q_w, body_scale)
    lowest = sites[:, foot_sites(model), 1].min(axis=1)
    assert np.median(np.abs(lowest)) < 0.02
    assert np.all(lowest > -0.05)
    # anatomical pelvis: the truth's orientation up to one constant rotation about the vertical (the heading)
    idx = [model.dof_index(d) for d in ROOT_DOFS[3:]]
    rel = Rotation.from_euler("ZXY", root[:, 3:]) * Rotation.from_euler("ZXY", q_true[:, idx]).inv()
    tilt_off = np.degrees(np.arccos(np.clip(rel.apply([0.0, 1.0, 0.0])[:, 1], -1, 1)))
    assert tilt_off.max() < GRAVITY_TOL_DEG + 0.5
    heading = np.degrees(rel.as_euler("YXZ")[:, 0])
    assert np.ptp(np.unwrap(np.radians(heading))) < np.radians(2.5)
    ity = model.dof_index("pelvis_ty")
    np.testing.assert_allclose(root[:, 1], q_true[:, ity], atol=0.05)


@pytest.mark.slow
def test_world_frame_of_real_fits_of_synthetic_keypoints() -> None:
    """Fits (not the truth) of exact synthetic markers: the camera's pitch and height come back from the fitted
    body, and the fitted feet stand on the estimated floor. With both feet flat all video long (squat, arm raise)
    the floor's tilt is the fitted feet's tilt, so a fitted ankle angle a few degrees off tilts it too: each video
    within 2 x FIT_PITCH_TOL_DEG, their median within FIT_PITCH_TOL_DEG."""
    from mocapflow.fit.fitting import FitOptions, fit_arrays, fit_body_model
    from mocapflow.fit.validate import ValidationSpec, keypoints_from_truth, truth_videos

    model = fit_body_model()
    fk = FrameFk(model)
    pitch_err, height_err = {}, {}
    for video in truth_videos(ValidationSpec(n_videos=4, seconds=2.0, seed=3), model):
        meta, arrays = keypoints_from_truth(video)
        result = fit_arrays(meta, arrays, FitOptions(max_iters=1500), model)
        root, cam = to_world_frame(result)
        pitch_err[video.name] = cam["pitch_deg"] - _pitch_deg(video.extrinsics)
        height_err[video.name] = cam["height_m"] - video.extrinsics.centre[1]  # the truth's floor is y = 0
        sites = fk(apply_root(result.q, model, root), result.body_scale)
        lowest = sites[:, foot_sites(model), 1].min(axis=1)
        assert np.median(np.abs(lowest)) < 0.03, video.name
    logging.getLogger(__name__).info("pitch errors %s, height errors %s", pitch_err, height_err)
    errs = np.abs(list(pitch_err.values()))
    assert np.median(errs) < FIT_PITCH_TOL_DEG and errs.max() < 2 * FIT_PITCH_TOL_DEG, pitch_err
    assert np.median(np.abs(list(height_err.values()))) < HEIGHT_TOL_M, height_err
