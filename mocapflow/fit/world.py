"""An anatomical world frame for a fit: floor, gravity and heading estimated from the fitted body itself.

The fit places the body in a *level-camera* frame (:data:`~mocapflow.fit.sites.WORLD_TO_CAMERA`: origin at the
camera centre, X along the optical axis, Y up in the image), so its pelvis translations are camera-relative (the
body stands ~1.5 m "below" a camera held at chest height) and its pelvis tilt and list contain the camera's pitch and
roll. This module estimates the rigid transform from that frame to a world frame in which

- **Y is up (against gravity)**: from the foot contacts when they span the floor (the plane through the sole
  points that are lowest and still: two flat feet, or the footprints of a walk), else from the trunk (mid-hip -> mid-shoulder, median over
  frames) constrained to be perpendicular to the line of contacts when the contacts lie along a line (a walk);
- **the floor is y = 0**: the median over frames of the lowest foot site (at least one foot is on the ground in
  walking, standing, squatting), the convention the synthetic ground truth uses (lowest foot site on y = 0);
- **X is the walking direction** when the pelvis travels (principal horizontal direction of its track), else the
  subject's mean facing; its sign makes the subject face +X in the first observed frame; Z = X x Y (OpenSim);
- the horizontal origin is the mean pelvis position over the observed frames.

The transform is applied to the root DOFs only (translations and the pelvis tilt/list/rotation, whose rotation is
``Rz(tilt) Rx(list) Ry(rotation)``, i.e. scipy's intrinsic "ZXY"); joint angles do not change. The camera's pose in
that world is returned as a JSON-ready dict (:func:`to_world_frame`). Pure numpy/scipy; the fitted sites come from
the fit's own evaluation, or (called on joint values alone) from its compiled kinematics
(:func:`mocapflow.fit.kinematics.posed_sites`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from mocapflow.fit.sites import WORLD_TO_CAMERA
from models.body import BodyModel

logger = logging.getLogger(__name__)

ROOT_DOFS = ("pelvis_tx", "pelvis_ty", "pelvis_tz", "pelvis_tilt", "pelvis_list", "pelvis_rotation")
UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class WorldOptions:
    """How the world frame is estimated.

    A sole point (:func:`sole_sites`) is on the floor in a frame when it is within ``contact_band_m`` of that
    frame's lowest sole point and slower than ``contact_speed_mps``. The contacts span the floor plane when their
    second principal extent (full width, 4 sigma) is at least ``plane_min_extent_m`` (two flat feet side by side
    give ~0.4 m), a line when only the first reaches ``line_min_extent_m``. The pelvis must travel
    ``walk_min_travel_m`` (full width of its horizontal track) for the walking direction to define X.
    """

    contact_band_m: float = 0.02
    first_band_m: float = 0.15
    plane_prior_deg: float = 3.0
    trunk_prior_deg: float = 8.0
    camera_roll_sd_deg: float = 5.0
    camera_pitch_sd_deg: float = 30.0
    contact_speed_mps: float = 0.25
    plane_min_extent_m: float = 0.25
    line_min_extent_m: float = 0.5
    walk_min_travel_m: float = 0.5


def foot_sites(model: BodyModel) -> list[int]:
    """Sites on the bodies of the "foot" scale group (heels, toes, metatarsals)."""
    if "foot" not in model.scale_groups:
        raise ValueError(f"body model {model.name!r} has no 'foot' scale group; cannot find the floor")
    g = model.scale_groups.index("foot")
    feet = {i for i, b in enumerate(model.bodies) if b.scale_group == g}
    return [i for i, s in enumerate(model.sites) if s.body in feet]


def _site(model: BodyModel, name: str) -> int:
    return int(model.site_index(name))


def fitted_sites(
    model: BodyModel, q: NDArray[np.floating], body_scale: NDArray[np.floating] | None = None
) -> NDArray[np.float64]:
    """Every site [N, S, 3] (m) of the fitted pose, in the fit's (level-camera) frame (the fit's compiled kinematics,
    one program per frame bucket)."""
    from mocapflow.fit.kinematics import posed_sites

    return posed_sites(model, q, body_scale)


def root_rotations(model: BodyModel, q: NDArray[np.floating]) -> Rotation:
    """The pelvis orientations [N] of joint values ``q`` (tilt, list, rotation = intrinsic Z, X, Y)."""
    idx = [model.dof_index(n) for n in ROOT_DOFS[3:]]
    return Rotation.from_euler("ZXY", np.asarray(q, np.float64)[:, idx])


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _up_from_trunk(sites: NDArray[np.float64], model: BodyModel) -> NDArray[np.float64]:
    hips = sites[:, [_site(model, "rhip"), _site(model, "lhip")]].mean(1)
    shoulders = sites[:, [_site(model, "rsho"), _site(model, "lsho")]].mean(1)
    axis = shoulders - hips
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return _unit(np.median(axis, axis=0))


def sole_sites(model: BodyModel, tolerance_m: float = 0.003) -> list[int]:
    """Foot sites within ``tolerance_m`` of the lowest foot site in the zero pose (heels and toe tips: the sole)."""
    from mocapflow.fit.kinematics import zero_pose_sites

    feet = foot_sites(model)
    y = zero_pose_sites(model)[feet, 1]
    return [s for s, h in zip(feet, y, strict=True) if h <= y.min() + tolerance_m]


def _contacts(
    sole: NDArray[np.float64], up: NDArray[np.float64], fps: float, options: WorldOptions
) -> NDArray[np.float64]:
    """Sole points [K, 3] on the floor: within ``contact_band_m`` of their frame's lowest sole point (along ``up``)
    and slower than ``contact_speed_mps``; all frames' lowest points if fewer than 3 qualify."""
    heights = sole @ up  # [N, F]
    if len(sole) > 1:
        speed = np.linalg.norm(np.gradient(sole, axis=0), axis=-1) * fps
    else:
        speed = np.zeros(heights.shape)
    low = heights <= heights.min(axis=1, keepdims=True) + options.contact_band_m
    on = low & (speed < options.contact_speed_mps)
    if on.sum() >= 3:
        return sole[on]
    return sole[np.arange(len(sole)), np.argmin(heights, axis=1)]


def _tangent_basis(n: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    e1 = _unit(np.cross(n, a))
    return e1, np.cross(n, e1)


def refine_up_by_contacts(
    sole: NDArray[np.float64], up0: NDArray[np.float64], prior_deg: float, fps: float, options: WorldOptions
) -> NDArray[np.float64]:
    """The up direction near ``up0`` that makes each frame's lowest sole point lie at one height.

    In every frame of standing, walking or squatting a foot is on the floor, so the lowest sole point's height
    (along the true up) is the same in every frame; where the lowest point moves (footprints of a walk, heel and toe
    taking turns) this fixes the tilt of the floor. Minimises the robust spread of those heights plus a Gaussian
    prior of width ``prior_deg`` around ``up0`` (a static contact says nothing: the prior then decides) and a
    prior on the camera (roll ``camera_roll_sd_deg``, pitch ``camera_pitch_sd_deg`` around level): people hold
    cameras nearly level, and a body on one leg or leaning gives no better evidence.
    """
    from scipy.optimize import minimize

    e1, e2 = _tangent_basis(up0)
    if len(sole) > 2:
        still = np.linalg.norm(np.gradient(sole, axis=0), axis=-1) * fps < options.contact_speed_mps
    else:
        still = np.ones(sole.shape[:2], bool)

    def direction(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return _unit(up0 + x[0] * e1 + x[1] * e2)

    def cost(x: NDArray[np.float64]) -> float:
        h = np.where(still, sole @ direction(x), np.inf).min(axis=1)
        h = h[np.isfinite(h)]
        if h.size < 3:
            return float(np.sum(x * x))
        dev = h - np.median(h)
        spread = float(np.mean(np.sqrt(dev * dev + 0.005**2)))  # smooth L1 (m), 5 mm softening
        return spread / 0.01 + float(np.sum(x * x)) / np.radians(prior_deg) ** 2 + camera_prior(direction(x))

    def camera_prior(up: NDArray[np.float64]) -> float:
        # the fit's frame is the level camera's: its +Z is the image's right, +X the optical axis
        roll = np.arcsin(np.clip(up[2], -1.0, 1.0)) / np.radians(options.camera_roll_sd_deg)
        pitch = np.arcsin(np.clip(up[0], -1.0, 1.0)) / np.radians(options.camera_pitch_sd_deg)
        return float(roll * roll + pitch * pitch)

    res = minimize(cost, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-7})
    return direction(res.x)


def estimate_up(
    sites: NDArray[np.float64], model: BodyModel, fps: float, options: WorldOptions
) -> tuple[NDArray[np.float64], str, int]:
    """Gravity's up direction in the fit's frame, how it was found ("feet-plane", "feet-line" or "trunk", each
    refined by :func:`refine_up_by_contacts`), and the number of contact points it used."""
    up = _up_from_trunk(sites, model)
    sole = sites[:, sole_sites(model)]
    method, n_pts, prior = "trunk", 0, options.trunk_prior_deg
    for band in (
        options.first_band_m,
        options.contact_band_m,
    ):  # wide first (the trunk may lean), then narrow
        pts = _contacts(sole, up, fps, replace(options, contact_band_m=band))
        n_pts = len(pts)
        if n_pts < 3:
            break
        centred = pts - pts.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        extent = 4.0 * s / np.sqrt(n_pts)  # full width (4 sigma) along each principal axis
        if extent[1] >= options.plane_min_extent_m:
            up, method, prior = (
                _unit(vt[2] if vt[2] @ up > 0 else -vt[2]),
                "feet-plane",
                options.plane_prior_deg,
            )
        elif extent[0] >= options.line_min_extent_m:
            line = vt[0]
            up, method, prior = _unit(up - (up @ line) * line), "feet-line", options.trunk_prior_deg
    up = refine_up_by_contacts(sole, up, prior, fps, options)
    return up, method, n_pts


def _heading(
    sites: NDArray[np.float64],
    rot: Rotation,
    pelvis: NDArray[np.float64],
    up: NDArray[np.float64],
    options: WorldOptions,
) -> tuple[NDArray[np.float64], str]:
    """World X in the fit's frame: the walking direction, else the mean facing, horizontal; first frame faces +X."""
    facing = rot.apply(np.array([1.0, 0.0, 0.0]))  # pelvis forward per frame
    facing_h = facing - np.outer(facing @ up, up)
    horiz = pelvis - np.outer(pelvis @ up, up)
    centred = horiz - horiz.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    travel = 4.0 * s[0] / np.sqrt(max(len(horiz), 1))
    if travel >= options.walk_min_travel_m:
        x, how = vt[0], "walking"
    else:
        x, how = np.mean(facing_h / np.linalg.norm(facing_h, axis=1, keepdims=True), axis=0), "facing"
        if np.linalg.norm(x) < 1e-6:
            x, how = facing_h[0], "facing"
    x = _unit(x - (x @ up) * up)
    if x @ facing_h[0] < 0:
        x = -x
    return x, how


def _pelvis_angles(rot: Rotation) -> NDArray[np.float64]:
    """Tilt, list, rotation [N, 3] of pelvis orientations, with tilt in [-90, 90] deg (the model's range) and the
    rotation unwrapped over frames (it is a free DOF)."""
    a = rot.as_euler("ZXY")
    flip = np.abs(a[:, 0]) > np.pi / 2  # the equivalent triple (a + pi, pi - b, c + pi)
    a[flip, 0] -= np.sign(a[flip, 0]) * np.pi
    a[flip, 1] = np.pi - a[flip, 1]
    a[flip, 2] += np.pi
    a[:, 1] = (a[:, 1] + np.pi) % (2 * np.pi) - np.pi
    a[:, 2] = np.unwrap((a[:, 2] + np.pi) % (2 * np.pi) - np.pi)
    return a


def to_world_frame(
    fit: Any = None,
    *,
    q: NDArray[np.floating] | None = None,
    model: BodyModel | None = None,
    body_scale: NDArray[np.floating] | None = None,
    observed: NDArray[np.bool_] | None = None,
    fps: float | None = None,
    options: WorldOptions | None = None,
    sites: NDArray[np.floating] | None = None,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """New root DOFs [N, 6] (pelvis tx, ty, tz in m; tilt, list, rotation in rad) in an anatomical world frame, and
    the estimated camera pose.

    Pass a :class:`~mocapflow.fit.fitting.FitResult` (``fit``), or the arrays: ``q`` [N, D] in the fit's frame,
    ``model``, ``body_scale`` [B] (None: 1), ``observed`` [N] (None: all), ``fps`` (None: 30); ``sites`` [N, S, 3]: the fitted sites if already computed
    (else :func:`fitted_sites`). Only observed frames
    inform the estimate; every frame is transformed. The camera pose dict (JSON-ready): ``R_world_to_camera`` and
    ``t_world_to_camera`` (``x_cam = R x_world + t``, OpenCV camera axes), ``centre_m`` (camera centre in the world),
    ``height_m`` (above the floor), ``pitch_deg`` (optical axis below the horizon, + looking down), ``roll_deg``
    (elevation of the image's x axis: the synthetic cameras' ``roll_deg``), ``up_method``, ``heading_method``,
    ``contact_frames``.
    """
    options = options or WorldOptions()
    if fit is not None:
        q = fit.q if q is None else q
        model = fit.model if model is None else model
        body_scale = getattr(fit, "body_scale", None) if body_scale is None else body_scale
        observed = getattr(fit, "observed", None) if observed is None else observed
        fps = getattr(getattr(fit, "meta", None), "fps", None) if fps is None else fps
    if q is None or model is None:
        raise ValueError("to_world_frame needs a fit result or q and model")
    q = np.asarray(q, np.float64)
    n = len(q)
    obs = np.ones(n, bool) if observed is None else np.asarray(observed, bool)
    if not obs.any():
        raise ValueError("to_world_frame: no observed frame; nothing to estimate a floor from")
    fps = 30.0 if fps is None else float(fps)
    missing = [d for d in ROOT_DOFS if d not in model.dof_names]
    if missing:
        raise ValueError(
            f"body model {model.name!r} lacks the root DOFs {missing}; cannot place it in a world frame"
        )
    tr = [model.dof_index(d) for d in ROOT_DOFS[:3]]

    sites = fitted_sites(model, q, body_scale) if sites is None else np.asarray(sites, np.float64)
    s_obs = sites[obs]
    up, up_method, n_contacts = estimate_up(s_obs, model, fps, options)
    rot = root_rotations(model, q)
    x_axis, heading_method = _heading(s_obs, rot[np.flatnonzero(obs)], q[obs][:, tr], up, options)
    z_axis = np.cross(x_axis, up)
    # rows: world axes in the fit's frame, so world = R_fw @ fit
    r_fw = np.stack([x_axis, up, z_axis])
    foot = sites[:, foot_sites(model)] @ r_fw.T
    floor = float(np.median(foot[obs, :, 1].min(axis=1)))
    pelvis_w = q[:, tr] @ r_fw.T
    origin = np.array([pelvis_w[obs, 0].mean(), floor, pelvis_w[obs, 2].mean()])
    t_fw = -origin  # world = r_fw @ fit + t_fw

    root = np.empty((n, 6))
    root[:, :3] = pelvis_w - origin
    root[:, 3:] = _pelvis_angles(Rotation.from_matrix(r_fw) * rot)

    # camera: its centre is the fit frame's origin; its axes are WORLD_TO_CAMERA's rows in the fit frame
    r_wc = WORLD_TO_CAMERA @ r_fw.T  # world -> camera
    centre = t_fw.copy()
    optical = r_wc[2]  # camera z axis in world coordinates
    right = r_wc[0]
    pose = {
        "R_world_to_camera": r_wc.tolist(),
        "t_world_to_camera": (-r_wc @ centre).tolist(),
        "centre_m": centre.tolist(),
        "height_m": float(centre[1]),
        "pitch_deg": float(np.degrees(-np.arcsin(np.clip(optical[1], -1.0, 1.0)))),
        "roll_deg": float(np.degrees(np.arcsin(np.clip(right[1], -1.0, 1.0)))),
        "up_method": up_method,
        "heading_method": heading_method,
        "contact_frames": int(n_contacts),
        "frame": "world: metres, Y up (gravity), floor y = 0, X walking/facing direction, Z to the right",
    }
    logger.debug("world frame: %s", pose)
    return root, pose


def apply_root(q: NDArray[np.floating], model: BodyModel, root: NDArray[np.floating]) -> NDArray[np.float64]:
    """``q`` with its root DOFs replaced by ``root`` [N, 6] (as returned by :func:`to_world_frame`)."""
    out = np.array(q, np.float64, copy=True)
    out[:, [model.dof_index(d) for d in ROOT_DOFS]] = root
    return out
