"""Scene layout: where the camera stands and where a second person walks."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.camera import Extrinsics, Intrinsics, image_radius, project
from mocapflow.synth.motions import MIN_HEADING, WalkPath, yaw_forward

logger = logging.getLogger(__name__)

_MAX_HFOV_DEG = 100.0
_START_OUTSIDE_M = 0.9  # second person: pelvis starts this far outside the image edge (at its depth)
_ENTERS_AT_M = 0.4  # ... and its leading hand reaches the edge when the pelvis is this far outside


@dataclass(frozen=True)
class CameraLayout:
    intrinsics: Intrinsics
    extrinsics: Extrinsics
    params: dict[str, Any]


def discs_in_frame(
    points_cam_m: NDArray[np.float64], intrinsics: Intrinsics, disc_radius_m: float, margin_px: float
) -> bool:
    """Whether every disc (centre and rim) lies inside the image with ``margin_px`` to spare."""
    z = points_cam_m[..., 2]
    if not (z > 0.1).all():
        return False
    uv = project(points_cam_m, intrinsics)
    r = image_radius(disc_radius_m, z, intrinsics)
    lo = (uv - r[..., None]).reshape(-1, 2).min(axis=0)
    hi = (uv + r[..., None]).reshape(-1, 2).max(axis=0)
    w, h = intrinsics.width, intrinsics.height
    return bool(
        lo[0] >= margin_px
        and lo[1] >= margin_px
        and hi[0] <= w - 1 - margin_px
        and hi[1] <= h - 1 - margin_px
    )


def place_camera(
    points_world: NDArray[np.float64],
    facing_yaw: float,
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    hfov_deg_range: tuple[float, float],
    distance_m_range: tuple[float, float],
    disc_radius_m: float,
    side_view: bool,
    margin_frac: float = 0.04,
) -> CameraLayout:
    """A camera that sees every disc of ``points_world`` [T, N, 3] in every frame.

    It looks at the centre of the motion's bounding box from a random horizontal distance in ``distance_m_range``,
    a height of 0.8-1.7 m and an azimuth relative to ``facing_yaw`` (``side_view``: 55-125 degrees to either side,
    else within 70 degrees of the front), with a little aim jitter and roll. If the discs do not fit, the camera
    backs off up to the far end of the distance range, then widens its field of view.
    """
    lo, hi = points_world.reshape(-1, 3).min(axis=0), points_world.reshape(-1, 3).max(axis=0)
    centre = 0.5 * (lo + hi)
    if side_view:
        rel = math.radians(float(rng.uniform(55.0, 125.0))) * float(rng.choice([-1.0, 1.0]))
    else:
        rel = math.radians(float(rng.uniform(-70.0, 70.0)))
    yaw = facing_yaw + rel
    out_xz = yaw_forward(yaw)
    height_m = float(rng.uniform(0.8, 1.7))
    target = centre + rng.uniform(-0.08, 0.08, size=3)
    roll = float(rng.uniform(-3.0, 3.0))
    hfov = float(rng.uniform(*hfov_deg_range))
    dist = float(rng.uniform(*distance_m_range))
    margin = margin_frac * width
    while True:
        intr = Intrinsics.from_fov(width, height, hfov)
        eye = np.array([centre[0] + dist * out_xz[0], height_m, centre[2] + dist * out_xz[1]])
        extr = Extrinsics.look_at(eye, target, roll_deg=roll)
        if discs_in_frame(extr.apply(points_world), intr, disc_radius_m, margin):
            break
        if dist < distance_m_range[1]:
            dist = min(dist + 0.1, distance_m_range[1])
        elif hfov < _MAX_HFOV_DEG:
            hfov += 1.0
        else:
            raise ValueError(
                f"the motion does not fit a {width}x{height} image from {distance_m_range[1]} m with a "
                f"{_MAX_HFOV_DEG} degree lens; widen distance_m_range"
            )
    params = {
        "hfov_deg": hfov,
        "distance_m": dist,
        "height_m": height_m,
        "azimuth_rel_deg": math.degrees(rel),
        "roll_deg": roll,
        "eye_world_m": eye.tolist(),
        "target_world_m": target.tolist(),
    }
    return CameraLayout(intr, extr, params)


def second_person_path(
    main_cam_m: NDArray[np.float64],
    intrinsics: Intrinsics,
    extrinsics: Extrinsics,
    rng: np.random.Generator,
    clip_s: float,
    disc_radius_m: float,
) -> WalkPath:
    """A walk in from beside the image, to a point next to the main subject's image area, and back out.

    The second person walks 1-2.5 m behind the main subject (camera depth), along the image's horizontal axis, on
    the side with more free image space, 0.6-1.8 m into the view and back out. It starts from rest 0.9 m outside
    the image, timed so that it reaches the image edge at 10-35 % of the clip, whatever the clip's length (not in
    view at first, in view for a while). If the free space is narrow, it still comes 0.6 m into view (and may
    overlap the main subject then). The heading is kept MIN_HEADING away from 0 and pi (the walk may then run
    up to that much off the image axis).
    """
    w = intrinsics.width
    z = main_cam_m[..., 2]
    uv = project(main_cam_m, intrinsics)
    r = image_radius(disc_radius_m, z, intrinsics)
    umin, umax = float((uv[..., 0] - r).min()), float((uv[..., 0] + r).max())
    depth = float(np.median(z)) + float(rng.uniform(1.0, 2.5))
    left_space, right_space = umin, (w - 1) - umax
    left = left_space > right_space if abs(left_space - right_space) > 1 else bool(rng.integers(2))
    out = -1.0 if left else 1.0  # camera-x direction pointing out of the image on the chosen side

    def cam_x(u: float) -> float:
        return (u - intrinsics.cx) * depth / intrinsics.fx

    x_edge = cam_x(-0.5 if left else w - 0.5)
    x_a = x_edge + out * _START_OUTSIDE_M
    x_b = cam_x((umin - 8) if left else (umax + 8)) - out * 0.45
    inside = -out * (x_b - x_edge)
    x_b = x_edge - out * float(np.clip(inside, 0.6, float(rng.uniform(1.0, 1.8))))
    a_w, b_w = (extrinsics.R.T @ (np.array([x, 0.0, depth]) - extrinsics.t) for x in (x_a, x_b))
    d = np.array([b_w[0] - a_w[0], b_w[2] - a_w[2]])
    length = float(np.linalg.norm(d))
    heading = math.atan2(-d[1], d[0])
    clamped = math.copysign(min(max(abs(heading), MIN_HEADING), math.pi - MIN_HEADING), heading)
    speed = float(rng.uniform(1.0, 1.4))
    accel = 0.5
    # from rest, the cosine speed ramp covers speed * accel / 2 metres in accel seconds, then full speed
    to_edge = _START_OUTSIDE_M - _ENTERS_AT_M
    travel_s = accel + (to_edge - speed * accel / 2) / speed
    enter_s = float(rng.uniform(0.1, 0.35)) * clip_s
    return WalkPath(
        start_xz=(float(a_w[0]), float(a_w[2])),
        heading=clamped,
        length_m=length,
        speed_mps=speed,
        start_s=enter_s - travel_s,
        legs=2,
        accel_s=accel,
    )


def crossing_path(
    main_cam_m: NDArray[np.float64],
    extrinsics: Extrinsics,
    rng: np.random.Generator,
    clip_s: float,
) -> WalkPath:
    """A walk across the image in front of the main subject, passing it at mid-clip at a similar image size.

    The second person walks 0.4-0.7 m nearer the camera than the main subject's median depth (so it covers the
    subject while they overlap, at 1.1-1.3x its image size), along the image's horizontal axis from a random side,
    at 1.5-1.9 m/s (a brisk walk), already at full speed at t = 0, and its pelvis passes the subject's mid-clip pelvis position
    (camera x) at 40-60 % of the clip. With a short clip it starts and ends inside the image.
    """
    z = main_cam_m[..., 2]
    depth = float(np.median(z)) - float(rng.uniform(0.4, 0.7))
    mid = main_cam_m[main_cam_m.shape[0] // 2].mean(axis=0)  # mean of the subject's markers at mid-clip
    x_c = float(mid[0]) * depth / float(mid[2])  # same image column at the walker's depth
    out = float(rng.choice([-1.0, 1.0]))  # the walk goes along camera -x (out=-1) or +x
    speed = float(rng.uniform(1.5, 1.9))
    accel = 0.5
    meet_s = float(rng.uniform(0.4, 0.6)) * clip_s
    # already under way at t = 0: the ramp (speed * accel / 2 m) ends at t = 0, then full speed
    before = speed * accel / 2 + speed * meet_s
    x_a = x_c - out * before
    length = before + speed * (clip_s - meet_s) + 1.0  # still walking when the clip ends
    x_b = x_a + out * length
    a_w, b_w = (extrinsics.R.T @ (np.array([x, 0.0, depth]) - extrinsics.t) for x in (x_a, x_b))
    d = np.array([b_w[0] - a_w[0], b_w[2] - a_w[2]])
    heading = math.atan2(-d[1], d[0])
    clamped = math.copysign(min(max(abs(heading), MIN_HEADING), math.pi - MIN_HEADING), heading)
    return WalkPath(
        start_xz=(float(a_w[0]), float(a_w[2])),
        heading=clamped,
        length_m=float(np.linalg.norm(d)),
        speed_mps=speed,
        start_s=-accel,
        legs=1,
        accel_s=accel,
    )
