"""A short synthetic gait clip straight from the body model: ground truth for unit tests and the fit benchmark.

Independent of :mod:`mocapflow.synth` (no rendering): joint angles are smooth periodic curves, the camera is a
``look_at`` camera, keypoints are the exact site positions (optionally with noise and dropouts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from mocapflow.camera import Extrinsics, Intrinsics, project
from mocapflow.keypoints import KeypointsMeta, build_table
from models.body import BodyModel, forward_kinematics, standing_pelvis_height

# (dof, mean deg, amplitude deg, phase in cycles, harmonic)
_GAIT: tuple[tuple[str, float, float, float, int], ...] = (
    ("hip_flexion_r", 10.0, 25.0, 0.0, 1),
    ("hip_flexion_l", 10.0, 25.0, 0.5, 1),
    ("hip_adduction_r", 2.0, 5.0, 0.1, 1),
    ("hip_adduction_l", 2.0, 5.0, 0.6, 1),
    ("hip_rotation_r", 0.0, 6.0, 0.2, 1),
    ("hip_rotation_l", 0.0, 6.0, 0.7, 1),
    ("knee_angle_r", 30.0, 28.0, 0.15, 1),
    ("knee_angle_l", 30.0, 28.0, 0.65, 1),
    ("ankle_angle_r", 0.0, 12.0, 0.3, 1),
    ("ankle_angle_l", 0.0, 12.0, 0.8, 1),
    ("arm_flex_r", 0.0, 20.0, 0.5, 1),
    ("arm_flex_l", 0.0, 20.0, 0.0, 1),
    ("arm_add_r", -12.0, 4.0, 0.5, 1),
    ("arm_add_l", -12.0, 4.0, 0.0, 1),
    ("arm_rot_r", 5.0, 8.0, 0.3, 1),
    ("arm_rot_l", 5.0, 8.0, 0.8, 1),
    ("elbow_flex_r", 35.0, 15.0, 0.4, 1),
    ("elbow_flex_l", 35.0, 15.0, 0.9, 1),
    ("pelvis_tilt", -3.0, 2.0, 0.0, 2),
    ("pelvis_list", 0.0, 3.0, 0.0, 1),
    ("lumbar_extension", -5.0, 2.0, 0.0, 2),
    ("lumbar_rotation", 0.0, 4.0, 0.5, 1),
)


@dataclass(frozen=True)
class Clip:
    """Ground truth and the camera of a synthetic clip."""

    q: NDArray[np.float64]  # [T, D] radians / metres
    fps: float
    intrinsics: Intrinsics
    extrinsics: Extrinsics
    site_names: tuple[str, ...]
    sites_world_m: NDArray[np.float64]  # [T, S, 3]


def gait_clip(
    model: BodyModel,
    n_frames: int,
    fps: float = 30.0,
    *,
    cadence_hz: float = 0.9,
    yaw_deg: float = 30.0,
    width: int = 640,
    height: int = 480,
    camera_distance_m: float = 4.0,
    body_scale: NDArray[np.floating] | None = None,
    site_offset: NDArray[np.floating] | None = None,
) -> Clip:
    """Walking in place, turning slowly, seen from a camera ``camera_distance_m`` away at chest height."""
    t = np.arange(n_frames) / fps
    q = np.zeros((n_frames, model.n_dofs))
    for name, mean, amp, phase, harmonic in _GAIT:
        if name in model.dof_names:
            w = 2 * np.pi * (harmonic * cadence_hz * t + phase)
            q[:, model.dof_index(name)] = np.deg2rad(mean + amp * np.sin(w))
    q[:, model.dof_index("pelvis_rotation")] = np.deg2rad(yaw_deg + 40.0 * np.sin(2 * np.pi * 0.15 * t))
    q[:, model.dof_index("pelvis_tx")] = 0.2 * np.sin(2 * np.pi * 0.2 * t)
    q[:, model.dof_index("pelvis_ty")] = standing_pelvis_height(model) - 0.03 + 0.02 * np.sin(4 * np.pi * t)
    q = np.clip(q, model.lower, model.upper)
    bs = None if body_scale is None else jnp.asarray(body_scale)
    so = None if site_offset is None else jnp.asarray(site_offset)
    sites = np.asarray(jax.vmap(lambda qq: forward_kinematics(model, qq, bs, so))(jnp.asarray(q)), np.float64)
    intr = Intrinsics.from_fov(width, height, 60.0)
    eye = np.array([camera_distance_m * 0.8, 1.4, camera_distance_m * 0.6])
    extr = Extrinsics.look_at(eye, np.array([0.0, 1.0, 0.0]))
    return Clip(q, fps, intr, extr, tuple(model.site_names), sites)


def observe(
    cam_m: NDArray[np.floating],
    intrinsics: Intrinsics,
    fps: float,
    names: tuple[str, ...],
    *,
    noise_2d_px: float = 0.0,
    noise_3d_mm: float = 0.0,
    drop_frames: float = 0.0,
    zero_conf: float = 0.0,
    seed: int = 0,
    video_sha256: str,
    model_id: str,
) -> tuple[KeypointsMeta, dict[str, NDArray[np.floating]]]:
    """Keypoint arrays of camera-frame points [T, J, 3] (m), as a pose model with the given errors would give.

    2D noise (px) and 3D noise (mm) per coordinate, a fraction ``drop_frames`` of frames and ``zero_conf`` of
    keypoints with confidence 0 (NaN observations); all corruption off gives the exact points.
    """
    rng = np.random.default_rng(seed)
    cam = np.asarray(cam_m, np.float64)
    n, j = cam.shape[:2]
    kp2d = project(cam, intrinsics) + noise_2d_px * rng.standard_normal((n, j, 2))
    kp3d = cam * 1000.0 + noise_3d_mm * rng.standard_normal((n, j, 3))
    conf = np.ones((n, j))
    conf[rng.random((n, j)) < zero_conf] = 0.0
    conf[rng.random(n) < drop_frames] = 0.0
    conf[~np.isfinite(kp2d).all(-1)] = 0.0
    kp2d[conf == 0] = np.nan
    kp3d[conf == 0] = np.nan
    has = (conf > 0).any(axis=1)
    box = np.full((n, 4), np.nan)
    if has.any():
        box[has] = np.concatenate([np.nanmin(kp2d[has], axis=1), np.nanmax(kp2d[has], axis=1)], axis=1)
    meta = KeypointsMeta(
        video_sha256=video_sha256,
        fps=fps,
        width=intrinsics.width,
        height=intrinsics.height,
        n_frames=n,
        intrinsics=intrinsics,
        joint_names=names,
        joint_edges=(),
        model_id=model_id,
        model_name="markers",
        params={"noise_2d_px": noise_2d_px, "noise_3d_mm": noise_3d_mm, "seed": seed},
    )
    arrays = {
        "frame": np.arange(n, dtype=np.int32),
        "time_s": np.arange(n) / fps,
        "kp2d_px": kp2d.astype(np.float32),
        "kp3d_mm": kp3d.astype(np.float32),
        "conf": conf.astype(np.float32),
        "box": box.astype(np.float32),
        "box_score": has.astype(np.float32),
        "track_id": np.where(has, 0, -1).astype(np.int32),
    }
    return meta, arrays


def keypoints_of(
    clip: Clip,
    names: tuple[str, ...] | None = None,
    *,
    noise_2d_px: float = 0.0,
    noise_3d_mm: float = 0.0,
    drop_frames: float = 0.0,
    zero_conf: float = 0.0,
    seed: int = 0,
) -> tuple[KeypointsMeta, dict[str, NDArray[np.floating]]]:
    """Keypoint arrays (and metadata) of the clip's sites ``names`` (default: all) through its camera."""
    names = clip.site_names if names is None else names
    idx = [clip.site_names.index(n) for n in names]
    digest = hashlib.sha256(np.ascontiguousarray(clip.q).tobytes() + repr((names, seed)).encode()).hexdigest()
    return observe(
        clip.extrinsics.apply(clip.sites_world_m[:, idx]),
        clip.intrinsics,
        clip.fps,
        names,
        noise_2d_px=noise_2d_px,
        noise_3d_mm=noise_3d_mm,
        drop_frames=drop_frames,
        zero_conf=zero_conf,
        seed=seed,
        video_sha256=digest,
        model_id=hashlib.sha256(b"mocapflow-fit-clip").hexdigest()[:16],
    )


def keypoints_table(meta: KeypointsMeta, arrays: dict[str, NDArray[np.floating]]) -> pa.Table:
    """The validated Arrow table of :func:`keypoints_of`'s output."""
    return build_table(
        arrays["frame"],
        arrays["time_s"],
        arrays["kp2d_px"],
        arrays["kp3d_mm"],
        arrays["conf"],
        arrays["box"],
        arrays["box_score"],
        arrays["track_id"],
        meta,
    )
