"""Synthetic motions: smooth joint trajectories inside the body model's limits, with pelvis translation.

Each motion is written in anatomical terms (degrees; the pelvis as heading + anatomical tilt/list/axial rotation),
varied per video by the random generator, then turned into the model's coordinates (radians/metres), clipped to its
joint limits and placed on the ground: the pelvis height puts the lowest foot site on y = 0, and the horizontal
position follows the walking path or keeps the feet where they stand.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.synth.kinematics import FrameFk
from mocapflow.synth.subjects import Subject
from models.body import BodyModel

logger = logging.getLogger(__name__)

MOTIONS: tuple[str, ...] = ("walking", "sit_to_stand", "squat", "arm_raise")

_LIMIT_MARGIN_DEG = 0.5
MIN_HEADING = 0.3  # rad; walking headings keep this far from 0 and pi (turns go through 0, never through pi)
_FINE_DT = 1e-3  # s, time step of the walking schedule's integration


@dataclass(frozen=True)
class WalkPath:
    """Back-and-forth walking along a straight line on the ground.

    ``start_xz``: pelvis (x, z) at the start of the first leg. ``heading``: world yaw (rad, about +Y, 0 = +X) of
    the first leg, with MIN_HEADING <= |heading| <= pi - MIN_HEADING so that the turns (always through 0) stay
    inside the pelvis rotation range. ``start_s``: when the first leg starts (standing still before; negative:
    already under way at t = 0). ``legs``: legs to walk (None: back and forth until the clip ends), standing
    still after the last one. Speed ramps up and down over ``accel_s``; a turn in place takes ``turn_s``.
    """

    start_xz: tuple[float, float]
    heading: float
    length_m: float
    speed_mps: float
    start_s: float = 0.0
    legs: int | None = None
    accel_s: float = 0.5
    turn_s: float = 1.0

    def __post_init__(self) -> None:
        if not MIN_HEADING - 1e-9 <= abs(self.heading) <= math.pi - MIN_HEADING + 1e-9:
            raise ValueError(
                f"WalkPath.heading must satisfy {MIN_HEADING} <= |heading| <= pi - {MIN_HEADING} rad (so that the"
                f" return heading is inside the pelvis rotation range too), got {self.heading}"
            )
        if self.length_m <= 0 or self.speed_mps <= 0:
            raise ValueError(
                f"WalkPath needs length_m > 0 and speed_mps > 0, got {self.length_m}, {self.speed_mps}"
            )

    @property
    def return_heading(self) -> float:
        return self.heading + math.pi if self.heading < 0 else self.heading - math.pi

    def direction(self) -> NDArray[np.float64]:
        """World (x, z) unit vector of the first leg."""
        return yaw_forward(self.heading)


@dataclass(frozen=True, eq=False)
class Motion:
    """Joint trajectories ``q`` [T, D] (model units) and what the camera placement needs to know."""

    name: str
    q: NDArray[np.float64]
    facing_yaw: float  # world yaw the subject mostly faces (walking: the path's axis)
    params: dict[str, Any] = field(default_factory=dict)


def yaw_forward(yaw: float | NDArray[np.float64]) -> NDArray[np.float64]:
    """World (x, z) direction the body's +X points to after a rotation by ``yaw`` about +Y."""
    yaw = np.asarray(yaw, dtype=np.float64)
    return np.stack([np.cos(yaw), -np.sin(yaw)], axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# small smooth building blocks
# ---------------------------------------------------------------------------------------------------------------


def _smoothstep(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Minimum-jerk step 0 -> 1 on [0, 1] (zero velocity and acceleration at both ends)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


def _step(x: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    return _smoothstep((x - a) / (b - a))


def _bump(x: NDArray[np.float64], c: float, w: float) -> NDArray[np.float64]:
    return np.exp(-0.5 * ((x - c) / w) ** 2)


def _pbump(phase: NDArray[np.float64], c: float, w: float) -> NDArray[np.float64]:
    """Periodic bump on the gait cycle (phase in cycles)."""
    d = np.mod(phase - c + 0.5, 1.0) - 0.5
    return np.exp(-0.5 * (d / w) ** 2)


def _cos(phase: NDArray[np.float64], shift: float = 0.0) -> NDArray[np.float64]:
    return np.cos(2.0 * np.pi * (phase - shift))


def _cycles(
    t: NDArray[np.float64],
    rng: np.random.Generator,
    hold_low: tuple[float, float],
    up: tuple[float, float],
    hold_high: tuple[float, float],
    down: tuple[float, float],
) -> NDArray[np.float64]:
    """Progress p(t) in [0, 1]: repeated hold-low, rise, hold-high, fall with random durations and start."""
    ranges = (hold_low, up, hold_high, down)
    starts: list[float] = []
    kinds: list[int] = []
    first = int(rng.integers(4))
    cursor = -rng.uniform(*ranges[first])  # begin part-way through a random segment
    k = first
    while cursor <= t[-1] + 1e-9:
        starts.append(cursor)
        kinds.append(k)
        cursor += rng.uniform(*ranges[k])
        k = (k + 1) % 4
    starts.append(cursor)
    idx = np.searchsorted(np.asarray(starts), t, side="right") - 1
    s0, s1 = np.asarray(starts)[idx], np.asarray(starts)[idx + 1]
    x = (t - s0) / (s1 - s0)
    kind = np.asarray(kinds)[idx]
    return np.select(
        [kind == 0, kind == 1, kind == 2],
        [np.zeros_like(t), _smoothstep(x), np.ones_like(t)],
        default=1.0 - _smoothstep(x),
    )


def _smooth_noise(
    t: NDArray[np.float64], rng: np.random.Generator, amplitude: NDArray[np.float64]
) -> NDArray[np.float64]:
    """[T, n] sums of three random sinusoids (0.1-0.7 Hz) per column, peak about ``amplitude`` [n]."""
    n = len(amplitude)
    freq = rng.uniform(0.1, 0.7, size=(3, n))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(3, n))
    weight = rng.uniform(0.3, 1.0, size=(3, n))
    weight /= weight.sum(axis=0, keepdims=True)
    waves = np.sin(2.0 * np.pi * freq[None] * t[:, None, None] + phase[None])  # [T, 3, n]
    return (waves * weight[None]).sum(axis=1) * amplitude[None]


# ---------------------------------------------------------------------------------------------------------------
# anatomical pose tracks (degrees), one function per motion
# ---------------------------------------------------------------------------------------------------------------

Track = dict[str, NDArray[np.float64]]


def _standing(t: NDArray[np.float64], rng: np.random.Generator) -> Track:
    """A relaxed standing posture with per-video variation (pelvis entries are anatomical, relative to heading)."""
    one = np.ones_like(t)
    tr: Track = {"pelvis_tilt": -rng.uniform(2, 8) * one, "lumbar_extension": rng.uniform(-5, 3) * one}
    tr["neck_extension"] = rng.uniform(-5, 5) * one
    for s in "rl":
        tr[f"hip_flexion_{s}"] = rng.uniform(0, 5) * one
        tr[f"hip_adduction_{s}"] = rng.uniform(-4, 2) * one
        tr[f"hip_rotation_{s}"] = rng.uniform(-8, 8) * one
        tr[f"knee_angle_{s}"] = rng.uniform(2, 6) * one
        tr[f"arm_flex_{s}"] = rng.uniform(-5, 8) * one
        tr[f"arm_add_{s}"] = -rng.uniform(6, 14) * one
        tr[f"arm_rot_{s}"] = rng.uniform(-15, 15) * one
        tr[f"elbow_flex_{s}"] = rng.uniform(8, 25) * one
        tr[f"pro_sup_{s}"] = rng.uniform(-20, 40) * one
        tr[f"wrist_flex_{s}"] = rng.uniform(-10, 10) * one
    return tr


def _flat_feet(tr: Track) -> None:
    """Ankle angles that keep each foot flat: foot pitch = tilt + hip flexion - knee + ankle = 0."""
    for s in "rl":
        tr[f"ankle_angle_{s}"] = tr[f"knee_angle_{s}"] - tr[f"hip_flexion_{s}"] - tr["pelvis_tilt"]


def _blend(tr: Track, name: str, target: NDArray[np.float64], gain: NDArray[np.float64]) -> None:
    base = tr.get(name, np.zeros_like(gain))
    tr[name] = base + gain * (target - base)


def _walking_track(
    t: NDArray[np.float64], rng: np.random.Generator, path: WalkPath, stature_m: float
) -> tuple[Track, NDArray[np.float64], NDArray[np.float64], dict[str, Any]]:
    """Gait driven by the path: phase advances with distance walked, amplitude with speed; turns in place."""
    along, heading, gain, distance = _walk_schedule(t, path)
    stride = stature_m * rng.uniform(0.70, 0.80) * (path.speed_mps / 1.1) ** 0.4
    phi = rng.uniform() + distance / stride
    arm = rng.uniform(12, 25) * min(1.3, path.speed_mps / 1.1)
    tr = _standing(t, rng)
    pattern: Track = {
        "pelvis_tilt": tr["pelvis_tilt"] + 2.0 * np.cos(4 * np.pi * phi),
        "pelvis_list": 4.0 * _cos(phi, 0.15),
        "pelvis_rotation": 5.0 * _cos(phi),
        "lumbar_rotation": -4.0 * _cos(phi),
        "lumbar_bending": -2.0 * _cos(phi, 0.15),
    }
    for s, half in (("r", 0.0), ("l", 0.5)):
        p = phi + half
        pattern[f"hip_flexion_{s}"] = 10 + 20 * _cos(p, 0.97)
        pattern[f"hip_adduction_{s}"] = 4 * _cos(p, 0.15)
        pattern[f"hip_rotation_{s}"] = tr[f"hip_rotation_{s}"] + 5 * _cos(p, 0.3)
        pattern[f"knee_angle_{s}"] = 5 + 15 * _pbump(p, 0.15, 0.07) + 55 * _pbump(p, 0.72, 0.11)
        pattern[f"ankle_angle_{s}"] = (
            3 - 7 * _pbump(p, 0.06, 0.04) + 8 * _pbump(p, 0.42, 0.12) - 20 * _pbump(p, 0.63, 0.06)
        )
        pattern[f"subtalar_angle_{s}"] = 4 * _cos(p, 0.1)
        pattern[f"mtp_angle_{s}"] = 25 * _pbump(p, 0.55, 0.06)
        # arms swing against the leg of the same side
        pattern[f"arm_flex_{s}"] = 5 + arm * _cos(p + 0.5, 0.97)
        pattern[f"elbow_flex_{s}"] = tr[f"elbow_flex_{s}"] + 8 * (1 + _cos(p + 0.5, 0.97))
    _flat_feet(tr)  # the standing posture between walks
    for name, target in pattern.items():
        _blend(tr, name, target, gain)
    xz = np.asarray(path.start_xz)[None, :] + along[:, None] * path.direction()[None, :]
    params = {
        "stride_m": stride,
        "arm_swing_deg": arm,
        "speed_mps": path.speed_mps,
        "path_length_m": path.length_m,
    }
    return tr, heading, xz, params


def _walk_schedule(
    t: NDArray[np.float64], path: WalkPath
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Along-path position (m), heading (rad), speed gain (0..1) and distance walked (m) at times ``t``."""
    t0 = min(0.0, path.start_s)
    fine = np.arange(t0, t[-1] + 2 * _FINE_DT, _FINE_DT)
    speed = np.zeros_like(fine)
    sign = np.ones_like(fine)
    heading = np.full_like(fine, path.heading)
    headings = (path.heading, path.return_heading)
    walk_s = path.length_m / path.speed_mps + path.accel_s
    a = path.accel_s
    cursor, leg = path.start_s, 0
    while cursor < fine[-1] and (path.legs is None or leg < path.legs):
        tau = fine - cursor
        walking = (tau >= 0) & (tau < walk_s)
        ramp = np.minimum(np.minimum(tau, walk_s - tau) / a, 1.0)
        speed[walking] = path.speed_mps * 0.5 * (1 - np.cos(np.pi * np.clip(ramp[walking], 0.0, 1.0)))
        sign[tau >= 0] = 1.0 if leg % 2 == 0 else -1.0
        heading[tau >= 0] = headings[leg % 2]
        cursor += walk_s
        leg += 1
        if path.legs is not None and leg >= path.legs:
            break
        tau = fine - cursor
        turning = tau >= 0
        turn = _smoothstep(tau[turning] / path.turn_s)
        h0, h1 = headings[(leg - 1) % 2], headings[leg % 2]
        heading[turning] = h0 + (h1 - h0) * turn
        cursor += path.turn_s
    step = speed * _FINE_DT
    along = np.concatenate([[0.0], np.cumsum(sign * step)[:-1]])
    distance = np.concatenate([[0.0], np.cumsum(step)[:-1]])
    # the ramp integrates to slightly more or less than the leg length on the fine grid: stay on the segment
    along = np.clip(along, 0.0, path.length_m)

    def at(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(t, fine, x)

    return at(along), at(heading), at(speed) / path.speed_mps, at(distance)


def _sit_to_stand_track(t: NDArray[np.float64], rng: np.random.Generator) -> tuple[Track, dict[str, Any]]:
    """Repeated sit-to-stand and back: thigh, shank and trunk in world sagittal angles, feet flat."""
    p = _cycles(t, rng, hold_low=(0.4, 1.0), up=(1.2, 1.8), hold_high=(0.4, 1.0), down=(1.5, 2.2))
    thigh, shank0, shank_bump = rng.uniform(75, 90), rng.uniform(0, 10), rng.uniform(5, 12)
    tilt_sit, tilt_stand, lean = rng.uniform(0, 10), -rng.uniform(2, 8), rng.uniform(15, 28)
    tr = _standing(t, rng)
    stand = _step(p, 0.3, 1.0)
    lean_p = _bump(p, 0.3, 0.15)
    a_thigh = thigh * (1 - stand)
    a_shank = -shank0 * (1 - _step(p, 0.2, 1.0)) - shank_bump * _bump(p, 0.3, 0.15)
    tr["pelvis_tilt"] = tilt_sit * (1 - stand) + tilt_stand * stand - lean * lean_p
    for s in "rl":
        tr[f"hip_flexion_{s}"] = a_thigh - tr["pelvis_tilt"]
        tr[f"knee_angle_{s}"] = a_thigh - a_shank + tr[f"knee_angle_{s}"] * stand
        tr[f"arm_flex_{s}"] = tr[f"arm_flex_{s}"] + 35 * lean_p
        tr[f"hip_adduction_{s}"] = tr[f"hip_adduction_{s}"] - 6 * (1 - stand)
    tr["lumbar_extension"] = tr["lumbar_extension"] - 5 * (1 - stand) - rng.uniform(5, 15) * lean_p
    tr["neck_extension"] = tr["neck_extension"] + 0.4 * lean * lean_p
    _flat_feet(tr)
    params = {"seat_thigh_deg": thigh, "trunk_lean_deg": lean}
    return tr, params


def _squat_track(t: NDArray[np.float64], rng: np.random.Generator) -> tuple[Track, dict[str, Any]]:
    """Repeated squats with arms reaching forward, feet flat."""
    p = _cycles(t, rng, hold_low=(0.3, 1.0), up=(1.0, 1.6), hold_high=(0.2, 0.6), down=(1.0, 1.6))
    thigh, shank, lean = rng.uniform(70, 90), rng.uniform(18, 27), rng.uniform(8, 18)
    reach = rng.uniform(60, 90)
    tr = _standing(t, rng)
    tr["pelvis_tilt"] = tr["pelvis_tilt"] - lean * p
    for s in "rl":
        tr[f"hip_flexion_{s}"] = thigh * p - tr["pelvis_tilt"]
        tr[f"knee_angle_{s}"] = tr[f"knee_angle_{s}"] * (1 - p) + (thigh + shank) * p
        tr[f"hip_adduction_{s}"] = tr[f"hip_adduction_{s}"] - 8 * p
        tr[f"hip_rotation_{s}"] = tr[f"hip_rotation_{s}"] - 8 * p
        tr[f"arm_flex_{s}"] = tr[f"arm_flex_{s}"] * (1 - p) + reach * p
        tr[f"elbow_flex_{s}"] = tr[f"elbow_flex_{s}"] * (1 - p) + 10 * p
    tr["lumbar_extension"] = tr["lumbar_extension"] - 10 * p
    tr["neck_extension"] = tr["neck_extension"] + 0.5 * lean * p
    _flat_feet(tr)
    return tr, {"squat_thigh_deg": thigh, "shank_lean_deg": shank, "trunk_lean_deg": lean}


def _arm_raise_track(t: NDArray[np.float64], rng: np.random.Generator) -> tuple[Track, dict[str, Any]]:
    """Arms raised forward (flexion) or sideways (abduction), both or one side, a new choice each cycle."""
    tr = _standing(t, rng)
    p = _cycles(t, rng, hold_low=(0.3, 0.8), up=(1.0, 1.6), hold_high=(0.2, 0.6), down=(1.0, 1.6))
    # cycle index: a new cycle starts whenever p leaves 0
    rising = np.concatenate([[0], (np.diff((p > 1e-6).astype(int)) > 0).astype(int)])
    cycle = np.cumsum(rising)
    n_cycles = int(cycle[-1]) + 1
    kinds = rng.integers(2, size=n_cycles)  # 0 flexion, 1 abduction
    sides = rng.integers(3, size=n_cycles)  # 0 both, 1 right, 2 left
    peak = rng.uniform(110, 165, size=n_cycles)
    for s, side_code in (("r", 1), ("l", 2)):
        active = p * ((sides[cycle] == 0) | (sides[cycle] == side_code))
        flex = active * (kinds[cycle] == 0) * peak[cycle]
        abd = active * (kinds[cycle] == 1) * peak[cycle]
        tr[f"arm_flex_{s}"] = tr[f"arm_flex_{s}"] * (1 - active) + flex
        tr[f"arm_add_{s}"] = tr[f"arm_add_{s}"] * (1 - active) - abd
        tr[f"elbow_flex_{s}"] = tr[f"elbow_flex_{s}"] * (1 - 0.6 * active)
    tr["lumbar_extension"] = tr["lumbar_extension"] + 4 * p
    _flat_feet(tr)
    return tr, {"cycles": n_cycles, "peak_deg": [float(x) for x in peak]}


# ---------------------------------------------------------------------------------------------------------------
# anatomical tracks -> model coordinates
# ---------------------------------------------------------------------------------------------------------------


def _axis_rotation(axis: NDArray[np.float64], angle: NDArray[np.float64]) -> NDArray[np.float64]:
    """Right-handed rotations [T, 3, 3] by ``angle`` [T] about the unit ``axis``."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k[None] + (1 - c) * (k @ k)[None]


def _pelvis_angles(
    model: BodyModel,
    heading: NDArray[np.float64],
    tilt: NDArray[np.float64],
    lst: NDArray[np.float64],
    axial: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Model pelvis (tilt, list, rotation) whose rotation equals heading-then-anatomical tilt/list/axial (rad).

    The model applies its pelvis hinges in world order (tilt about Z, list about X, rotation about Y), so for a
    subject not facing +X the anatomical angles are re-expressed by a Z-X-Y Euler decomposition.
    """
    names = ("pelvis_tilt", "pelvis_list", "pelvis_rotation")
    axes = [np.asarray(model.dofs[model.dof_index(n)].axis, float) for n in names]
    expected = [np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])]
    if not all(np.allclose(a / np.linalg.norm(a), e) for a, e in zip(axes, expected, strict=True)):
        raise ValueError(
            f"{model.name}: pelvis hinge axes {axes} are not Z, X, Y; the motion generator needs them"
        )
    z, x, y = expected
    r = (
        _axis_rotation(y, heading)
        @ _axis_rotation(z, tilt)
        @ _axis_rotation(x, lst)
        @ _axis_rotation(y, axial)
    )
    b = np.arcsin(np.clip(r[:, 2, 1], -1.0, 1.0))
    a = np.arctan2(-r[:, 0, 1], r[:, 1, 1])
    c = np.arctan2(-r[:, 2, 0], r[:, 2, 2])
    return a, b, np.unwrap(c)


def _track_to_q(
    model: BodyModel,
    t: NDArray[np.float64],
    rng: np.random.Generator,
    tr: Track,
    heading: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Anatomical degrees (+ heading in rad) -> q [T, D] radians, with smooth per-joint noise, inside the limits."""
    unknown = sorted(set(tr) - set(model.dof_names))
    if unknown:
        raise ValueError(f"{model.name}: the motion uses DOFs the model lacks: {unknown}")
    pelvis = ("pelvis_tilt", "pelvis_list", "pelvis_rotation")
    n = len(t)
    deg = np.zeros((n, model.n_dofs))
    for name, values in tr.items():
        deg[:, model.dof_index(name)] = values
    hinge = np.array([d.kind == "hinge" for d in model.dofs])
    span = np.degrees(model.upper - model.lower)
    amplitude = np.where(hinge, np.minimum(3.0, 0.04 * span), 0.0) * rng.uniform(0.5, 1.0, model.n_dofs)
    deg += _smooth_noise(t, rng, amplitude)
    heading = heading + np.radians(_smooth_noise(t, rng, np.array([2.0]))[:, 0])
    q = np.where(hinge[None], np.radians(deg), 0.0)
    ip = [model.dof_index(nm) for nm in pelvis]
    q[:, ip[0]], q[:, ip[1]], q[:, ip[2]] = _pelvis_angles(model, heading, *(q[:, i] for i in ip))
    margin = np.where(hinge, np.radians(_LIMIT_MARGIN_DEG), 0.0)
    lo, hi = model.lower + margin, model.upper - margin
    outside = (q < lo) | (q > hi)
    if outside.any():
        worst = np.argmax(np.maximum(lo - q, q - hi).max(axis=0))
        logger.debug(
            "clipping %d joint samples to the limits (most: %s)", int(outside.sum()), model.dof_names[worst]
        )
    return np.clip(q, lo, hi)


def foot_site_indices(model: BodyModel) -> list[int]:
    """Sites on the bodies of the model's "foot" scale group (used to put the feet on the ground)."""
    if "foot" not in model.scale_groups:
        raise ValueError(f"{model.name}: no 'foot' scale group; cannot tell which sites touch the ground")
    g = model.scale_groups.index("foot")
    feet = {i for i, b in enumerate(model.bodies) if b.scale_group == g}
    return [i for i, s in enumerate(model.sites) if s.body in feet]


def _place(
    fk: FrameFk,
    q: NDArray[np.float64],
    subject: Subject,
    path_xz: NDArray[np.float64] | None,
) -> NDArray[np.float64]:
    """Pelvis translation: lowest foot site on y = 0; horizontally the path, or the feet kept at the origin."""
    model = fk.model
    itx, ity, itz = (model.dof_index(n) for n in ("pelvis_tx", "pelvis_ty", "pelvis_tz"))
    q = q.copy()
    q[:, [itx, ity, itz]] = 0.0
    sites = fk(q, subject.body_scale, subject.site_offset)
    foot = sites[:, foot_site_indices(model)]  # [T, F, 3]; translation adds to every site
    q[:, ity] = -foot[:, :, 1].min(axis=1)
    if path_xz is None:
        q[:, itx] = -foot[:, :, 0].mean(axis=1)
        q[:, itz] = -foot[:, :, 2].mean(axis=1)
    else:
        q[:, itx], q[:, itz] = path_xz[:, 0], path_xz[:, 1]
    lo, hi = model.lower, model.upper
    if ((q < lo) | (q > hi)).any():
        raise ValueError("pelvis translation left the model's range; shorten the walking path")
    return q


def default_walk_path(rng: np.random.Generator, stature_m: float) -> WalkPath:
    """A short back-and-forth walk centred on the origin, already under way at t = 0."""
    heading = float(rng.uniform(MIN_HEADING, math.pi - MIN_HEADING) * rng.choice([-1.0, 1.0]))
    length = float(rng.uniform(1.2, 2.0))
    speed = float(rng.uniform(0.8, 1.3) * stature_m / 1.75)
    start = -0.5 * length * yaw_forward(heading)
    walk_s = length / speed + 0.5
    return WalkPath(
        start_xz=(float(start[0]), float(start[1])),
        heading=heading,
        length_m=length,
        speed_mps=speed,
        start_s=-float(rng.uniform(0.0, walk_s)),
    )


def generate_motion(
    fk: FrameFk,
    name: str,
    subject: Subject,
    n_frames: int,
    fps: float,
    rng: np.random.Generator,
    *,
    walk_path: WalkPath | None = None,
) -> Motion:
    """Joint trajectories [n_frames, D] of motion ``name`` (one of :data:`MOTIONS`) for ``subject``."""
    model = fk.model
    if name not in MOTIONS:
        raise ValueError(f"unknown motion {name!r}; choose one of {MOTIONS}")
    if n_frames < 2 or fps <= 0:
        raise ValueError(f"need at least 2 frames and fps > 0, got n_frames={n_frames}, fps={fps}")
    t = np.arange(n_frames) / fps
    path_xz = None
    if name == "walking":
        path = walk_path or default_walk_path(rng, subject.stature_m)
        tr, heading, path_xz, params = _walking_track(t, rng, path, subject.stature_m)
        facing = path.heading
        params["walk_path"] = {
            "start_xz": list(path.start_xz),
            "heading_rad": path.heading,
            "length_m": path.length_m,
            "start_s": path.start_s,
            "legs": path.legs,
        }
    else:
        if walk_path is not None:
            raise ValueError(f"walk_path is only for walking, not {name!r}")
        facing = float(rng.uniform(-math.pi / 2, math.pi / 2))
        heading = np.full_like(t, facing)
        make = {"sit_to_stand": _sit_to_stand_track, "squat": _squat_track, "arm_raise": _arm_raise_track}[
            name
        ]
        tr, params = make(t, rng)
    q = _track_to_q(model, t, rng, tr, heading)
    q = _place(fk, q, subject, path_xz)
    params = {k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in params.items()}
    return Motion(name=name, q=q, facing_yaw=float(facing), params=params)
