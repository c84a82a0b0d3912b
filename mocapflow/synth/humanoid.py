"""A rendered humanoid for ground truth on the real-weights path: an independent skeleton with solid, shaded flesh.

Why: the marker videos are drawn from the fitter's own kinematic tree and sites, so they measure the fit only where
it cannot fail. This module draws the same motions (the same DOF trajectories of :mod:`mocapflow.synth.motions`)
as a clothed 3D humanoid that a real pose model (BlazePose) finds, from body proportions and joint centres that
are NOT the fitter's model (:func:`models.body.default_body_model`; nothing here reads its geometry).

**The skeleton** (:class:`HumanoidBody`) is built from segment lengths as fractions of stature taken from published
anthropometry, not from the fitter's table: de Leva (1996, J Biomech 29:1223) joint-centre lengths (thigh, shank,
upper arm, forearm: averages of his male and female values), hip joint centres by Harrington et al. (2007,
J Biomech 40:595: 0.33 x inter-ASIS width + 7.3 mm to each side), the inter-ASIS width, shoulder (glenohumeral)
breadth, malleolus height and foot length from Drillis & Contini's proportions (1966, as tabled by Winter). Each
subject draws its own factors (a common build, per segment +-4 %, left and right independently +-1.5 %) and flesh
girths, skin, hair, clothing and shoe colours from its own random stream. The lumbar, neck and shoulder joint centres
sit at their own places (L5/S1 behind and above the hip centres, C7/T1, glenohumeral joints below the acromia).

**What the "true" joint angles are.** Every segment has an anatomical frame that, in the zero pose (standing,
arms hanging, palms facing the thighs, feet flat and forward), is parallel to the world frame (X forward, Y up,
Z to the subject's right), with the mechanical axis of each long segment (hip centre -> knee centre, knee ->
ankle, shoulder -> elbow, elbow -> wrist) along its -Y. A joint's DOF values rotate the child frame relative to
the parent frame about the parent-fixed axes below, applied in the order listed (intrinsic, like OpenSim's custom
joints); ``m`` = +1 on the right, -1 on the left. These are the ISB/OpenSim-style definitions the fitter reports
too, so the true value of a DOF is the DOF value that drove the humanoid (the ``q`` columns of the ground truth):

======================  ==========================================================================
joint                   rotation sequence (parent-fixed axes, applied left to right)
======================  ==========================================================================
pelvis (root)           translate (tx, ty, tz) of the hip-centre midpoint; tilt Z, list X, rotation Y
hip                     flexion Z, adduction m*X, rotation m*Y
knee                    knee_angle about -Z (flexion positive)
ankle, subtalar, mtp    ankle_angle Z; subtalar m*X; mtp Z
lumbar, neck            extension Z, bending X, rotation Y
shoulder                arm_flex Z, arm_add m*X, arm_rot m*Y
elbow, forearm, wrist   elbow_flex Z; pro_sup m*Y; wrist_flex Z, wrist_dev m*X
======================  ==========================================================================

Because the proportions, joint-centre placement and surface differ from the fitter's model, a fit that matches
the pose model's landmarks recovers these angles only as well as a real markerless pipeline would: the error left
is the pose model's plus the model mismatch, which is what the real-weights validation measures. The pelvis
translation columns hold this humanoid's own root (hip-centre midpoint, placed so the lowest shoe sole touches
y = 0), not the fitter's.

**Ground truth** (same :class:`~mocapflow.synth.groundtruth.GroundTruth` tables as the marker videos) holds the 33
BlazePose landmarks as this humanoid defines them: joint centres for shoulders, elbows, wrists, hips, knees and
ankles; surface points for the face (nose tip, eye centres and corners, ear centres, mouth corners), heels (back
of the shoe sole), foot index (shoe tip) and hands (index and pinky knuckles, thumb tip). A landmark is ``visible``
when it is in the image and no surface lies in front of it by more than its own depth below the skin
(:data:`LANDMARK_DEPTH_M`, + 2 cm). ``box`` surrounds the rendered body's pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.camera import Extrinsics, Intrinsics
from mocapflow.synth.raycast import (
    FrameBuffers,
    Light,
    Primitive,
    downsample,
    ellipsoid,
    pixel_rays,
    rasterise,
    round_cone,
    shade,
)
from models.blazepose.skeleton import JOINT_NAMES

logger = logging.getLogger(__name__)

HUMANOID_NAME = "mocapflow-humanoid-1"
SIDES = (("r", 1.0), ("l", -1.0))

# Mean fractions of stature (see the module docstring for the sources); per-subject factors multiply them.
PROPORTIONS: dict[str, float] = {
    "thigh": 0.2283,  # hip joint centre -> knee joint centre (de Leva 1996: M 422.2/1741, F 368.5/1735)
    "shank": 0.2492,  # knee joint centre -> ankle joint centre (de Leva: M 434.0/1741, F 432.3/1735)
    "upper_arm": 0.1602,  # shoulder joint centre -> elbow joint centre (de Leva: M 281.7/1741, F 275.1/1735)
    "forearm": 0.1534,  # elbow -> wrist joint centre (de Leva: M 268.9/1741, F 264.3/1735)
    "hand": 0.108,  # wrist -> tip of the middle finger (Drillis & Contini)
    "foot": 0.152,  # heel -> toe tip (Drillis & Contini)
    "ankle_height": 0.039,  # sole -> ankle joint centre (Drillis & Contini)
    "inter_asis": 0.134,  # inter-ASIS width; hip centres by Harrington et al. 2007
    "shoulder_breadth": 0.259,  # bi-acromial breadth (Drillis & Contini)
    "trunk": 0.3044,  # hip-centre midpoint -> neck joint (de Leva's trunk, cervicale -> mid-hip: M 531.9/1741, F 529.3/1735)
    "lumbar_up": 0.066,  # hip-centre midpoint -> L5/S1 joint centre
}

# Colour palettes (RGB): skin from light to dark, hair, clothing, shoes.
SKIN = ((247, 219, 190), (236, 192, 150), (224, 172, 120), (198, 134, 90), (150, 98, 62), (100, 66, 44))
HAIR = ((24, 20, 18), (62, 42, 28), (112, 78, 44), (190, 160, 100), (160, 158, 152), (130, 60, 30))
SHIRT = (
    (178, 40, 44),
    (40, 74, 160),
    (52, 122, 66),
    (226, 224, 216),
    (214, 178, 62),
    (118, 120, 128),
    (112, 62, 142),
    (38, 128, 132),
    (222, 122, 44),
    (38, 38, 44),
)
TROUSERS = ((48, 70, 112), (34, 34, 38), (168, 148, 108), (92, 92, 98), (30, 40, 72), (100, 72, 46))
SHOES = ((226, 226, 222), (30, 30, 32), (92, 56, 32), (168, 40, 40), (110, 110, 114))

BLAZEPOSE_NAMES: tuple[str, ...] = JOINT_NAMES  # the ground truth names its landmarks as BlazePose does

# How deep below the skin each landmark lies (m): joint centres are inside the limb, face points on the skin.
LANDMARK_DEPTH_M: dict[str, float] = {
    "shoulder": 0.06,
    "elbow": 0.045,
    "wrist": 0.035,
    "hip": 0.11,
    "knee": 0.06,
    "ankle": 0.045,
    "pinky": 0.015,
    "index": 0.015,
    "thumb": 0.012,
    "heel": 0.01,
    "foot_index": 0.01,
}
VISIBILITY_TOLERANCE_M = 0.02

# The joints of the humanoid: segment, parent, DOFs as (name, parent-fixed axis) in the order applied.
Axis = tuple[float, float, float]


def _joints() -> list[tuple[str, str | None, list[tuple[str, Axis]]]]:
    x, y, z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
    joints: list[tuple[str, str | None, list[tuple[str, Axis]]]] = [
        ("pelvis", None, [("pelvis_tilt", z), ("pelvis_list", x), ("pelvis_rotation", y)]),
        ("torso", "pelvis", [("lumbar_extension", z), ("lumbar_bending", x), ("lumbar_rotation", y)]),
        ("head", "torso", [("neck_extension", z), ("neck_bending", x), ("neck_rotation", y)]),
    ]
    for s, m in SIDES:
        mx, my = (m, 0.0, 0.0), (0.0, m, 0.0)
        joints += [
            (f"femur_{s}", "pelvis", [(f"hip_flexion_{s}", z), (f"hip_adduction_{s}", mx), (f"hip_rotation_{s}", my)]),
            (f"tibia_{s}", f"femur_{s}", [(f"knee_angle_{s}", (0.0, 0.0, -1.0))]),
            (f"talus_{s}", f"tibia_{s}", [(f"ankle_angle_{s}", z)]),
            (f"calcn_{s}", f"talus_{s}", [(f"subtalar_angle_{s}", mx)]),
            (f"toes_{s}", f"calcn_{s}", [(f"mtp_angle_{s}", z)]),
            (f"humerus_{s}", "torso", [(f"arm_flex_{s}", z), (f"arm_add_{s}", mx), (f"arm_rot_{s}", my)]),
            (f"ulna_{s}", f"humerus_{s}", [(f"elbow_flex_{s}", z)]),
            (f"radius_{s}", f"ulna_{s}", [(f"pro_sup_{s}", my)]),
            (f"hand_{s}", f"radius_{s}", [(f"wrist_flex_{s}", z), (f"wrist_dev_{s}", mx)]),
        ]  # fmt: skip
    return joints


JOINTS = _joints()
SEGMENTS: tuple[str, ...] = tuple(j[0] for j in JOINTS)
DOF_NAMES: tuple[str, ...] = (
    "pelvis_tx",
    "pelvis_ty",
    "pelvis_tz",
    *(d for _, _, dofs in JOINTS for d, _ in dofs),
)


@dataclass(frozen=True, eq=False)
class HumanoidBody:
    """One humanoid: joint offsets (m, parent frame at the zero pose), flesh sizes (m) and colours (RGB)."""

    subject_id: str
    stature_m: float
    offsets: dict[str, tuple[float, float, float]]  # segment -> its joint centre in the parent's frame
    dims: dict[str, float]  # lengths, girths and head sizes (m)
    colors: dict[str, tuple[int, int, int]]
    style: dict[str, bool]  # short_sleeves, shorts, long_hair

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "model_name": HUMANOID_NAME,
            "stature_m": self.stature_m,
            "joint_offsets_m": {k: [round(float(v), 6) for v in xyz] for k, xyz in self.offsets.items()},
            "dims_m": {k: round(float(v), 6) for k, v in self.dims.items()},
            "colors": {k: list(v) for k, v in self.colors.items()},
            "style": dict(self.style),
        }


def _jitter_color(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    c = np.asarray(rgb, float) * rng.uniform(1 - amount, 1 + amount) + rng.uniform(-8, 8, 3)
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))  # type: ignore[return-value]


def sample_humanoid(rng: np.random.Generator, subject_id: str, stature_m: float) -> HumanoidBody:
    """Draw a humanoid of ``stature_m`` (vertex of the head at ``stature_m`` in the zero pose, soles on y = 0)."""
    if not 1.0 < stature_m < 2.5:
        raise ValueError(f"stature_m must be a human stature in metres (1-2.5), got {stature_m}")
    h = float(stature_m)

    def f(sd: float) -> float:
        return 1.0 + sd * float(np.clip(rng.standard_normal(), -2.5, 2.5))

    build = float(rng.uniform(0.9, 1.15))  # girth factor
    g = build * h / 1.75
    d: dict[str, float] = {}
    for seg in ("thigh", "shank", "upper_arm", "forearm", "hand", "foot"):
        common = f(0.04)
        for s, _ in SIDES:
            d[f"{seg}_{s}"] = PROPORTIONS[seg] * h * common * f(0.015)
    d["ankle_height"] = PROPORTIONS["ankle_height"] * h * f(0.05)
    inter_asis = PROPORTIONS["inter_asis"] * h * f(0.06)
    d["hip_half_width"] = 0.33 * inter_asis + 0.0073
    d["shoulder_half_width"] = 0.5 * PROPORTIONS["shoulder_breadth"] * h * f(0.05) - 0.035 * h / 1.75
    d["trunk"] = PROPORTIONS["trunk"] * h * f(0.03)
    d["lumbar_up"] = PROPORTIONS["lumbar_up"] * h * f(0.05)
    d["shoulder_below_c7"] = 0.045 * h * f(0.1)
    leg = max(d["thigh_r"] + d["shank_r"], d["thigh_l"] + d["shank_l"])  # the longer leg stands on the floor
    hip_height = d["ankle_height"] + leg
    vertex_above_neck = h - (hip_height + d["trunk"])
    head_semi_y = 0.118 * (h / 1.75) * f(0.04)
    d |= {
        "head_semi_x": 0.098 * (h / 1.75) * f(0.04),
        "head_semi_y": head_semi_y,
        "head_semi_z": 0.077 * (h / 1.75) * f(0.04),
        "head_centre_y": vertex_above_neck - head_semi_y,
        "thigh_r0": 0.082 * g,
        "thigh_r1": 0.053 * g,
        "shank_r0": 0.050 * g,
        "shank_r1": 0.033 * g,
        "calf": 0.052 * g,
        "upper_arm_r0": 0.045 * g,
        "upper_arm_r1": 0.035 * g,
        "forearm_r0": 0.036 * g,
        "forearm_r1": 0.025 * g,
        "waist_half_width": 0.135 * g,
        "chest_half_width": 0.16 * g,
        "chest_half_depth": 0.11 * g,
        "hips_half_width": max(0.16 * g, d["hip_half_width"] + 0.07 * g),
        "neck_r": 0.048 * g,
        "foot_half_width": 0.045 * h / 1.75,
    }
    offsets: dict[str, tuple[float, float, float]] = {
        "pelvis": (0.0, 0.0, 0.0),
        "torso": (-0.045 * h / 1.75, d["lumbar_up"], 0.0),
        "head": (0.012 * h / 1.75, d["trunk"] - d["lumbar_up"], 0.0),
    }
    sho_y = d["trunk"] - d["lumbar_up"] - d["shoulder_below_c7"]
    heel_back = 0.2 * 0.5 * (d["foot_r"] + d["foot_l"])
    for s, m in SIDES:
        offsets |= {
            f"femur_{s}": (-0.004, 0.0, m * d["hip_half_width"]),
            f"tibia_{s}": (0.0, -d[f"thigh_{s}"], 0.0),
            f"talus_{s}": (0.0, -d[f"shank_{s}"], 0.0),
            f"calcn_{s}": (-0.012, -0.45 * d["ankle_height"], 0.0),
            f"toes_{s}": (0.74 * d[f"foot_{s}"] - heel_back, -0.4 * d["ankle_height"], 0.0),
            f"humerus_{s}": (0.012 * h / 1.75, sho_y, m * d["shoulder_half_width"]),
            f"ulna_{s}": (0.0, -d[f"upper_arm_{s}"], 0.0),
            f"radius_{s}": (0.0, 0.0, 0.0),
            f"hand_{s}": (0.0, -d[f"forearm_{s}"], 0.0),
        }
    d["heel_back"] = heel_back
    skin = SKIN[int(rng.integers(len(SKIN)))]
    colors = {
        "skin": _jitter_color(rng, skin, 0.04),
        "hair": _jitter_color(rng, HAIR[int(rng.integers(len(HAIR)))], 0.1),
        "shirt": _jitter_color(rng, SHIRT[int(rng.integers(len(SHIRT)))], 0.08),
        "trousers": _jitter_color(rng, TROUSERS[int(rng.integers(len(TROUSERS)))], 0.08),
        "shoes": _jitter_color(rng, SHOES[int(rng.integers(len(SHOES)))], 0.05),
    }
    colors["lips"] = tuple(int(v) for v in np.clip(np.asarray(skin) * np.array([0.85, 0.55, 0.55]), 0, 255))  # type: ignore[assignment]
    style = {
        "short_sleeves": bool(rng.random() < 0.5),
        "shorts": bool(rng.random() < 0.25),
        "long_hair": bool(rng.random() < 0.35),
    }
    return HumanoidBody(subject_id, h, offsets, d, colors, style)


# ------------------------------------------------------------------------------------------------------------------
# kinematics
# ------------------------------------------------------------------------------------------------------------------


def _axis_rotation(axis: Axis, angle: NDArray[np.float64]) -> NDArray[np.float64]:
    """Right-handed rotations [T, 3, 3] by ``angle`` [T] about the unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k[None] + (1 - c) * (k @ k)[None]


@dataclass(frozen=True, eq=False)
class Pose:
    """World rotation [T, 3, 3] and origin [T, 3] of every segment (m)."""

    rot: dict[str, NDArray[np.float64]]
    origin: dict[str, NDArray[np.float64]]

    def point(self, segment: str, local: ArrayLike3) -> NDArray[np.float64]:
        """A point fixed in ``segment`` (its frame, m) in world coordinates [T, 3]."""
        return self.origin[segment] + self.rot[segment] @ np.asarray(local, float)


ArrayLike3 = tuple[float, float, float] | NDArray[np.float64]


def pose(body: HumanoidBody, q: NDArray[np.float64], dof_names: list[str] | tuple[str, ...]) -> Pose:
    """Forward kinematics of the humanoid for DOF values ``q`` [T, D] named ``dof_names`` (radians / metres)."""
    q = np.atleast_2d(np.asarray(q, float))
    index = {n: i for i, n in enumerate(dof_names)}
    missing = [n for n in DOF_NAMES if n not in index]
    if missing:
        raise ValueError(f"the humanoid needs DOFs {missing}; pass q with all of {DOF_NAMES}")
    n = q.shape[0]
    rot: dict[str, NDArray[np.float64]] = {}
    origin: dict[str, NDArray[np.float64]] = {}
    for seg, parent, dofs in JOINTS:
        if parent is None:
            r = np.repeat(np.eye(3)[None], n, axis=0)
            o = q[:, [index["pelvis_tx"], index["pelvis_ty"], index["pelvis_tz"]]].copy()
        else:
            r = rot[parent]
            o = origin[parent] + r @ np.asarray(body.offsets[seg], float)
        for name, axis in dofs:
            r = r @ _axis_rotation(axis, q[:, index[name]])
        rot[seg], origin[seg] = r, o
    return Pose(rot, origin)


def _head_surface_x(body: HumanoidBody, y: float, z: float) -> float:
    """Forward (x) coordinate of the face surface at height ``y`` and side ``z`` (head frame, m)."""
    d = body.dims
    best = -1.0
    for cx, cy, ax, ay, az in _head_ellipsoids(body):
        v = 1.0 - ((y - cy) / ay) ** 2 - (z / az) ** 2
        if v > 0:
            best = max(best, cx + ax * math.sqrt(v))
    return best if best > -1.0 else d["head_semi_x"]


def _head_ellipsoids(body: HumanoidBody) -> list[tuple[float, float, float, float, float]]:
    """(cx, cy, ax, ay, az) of the cranium and the jaw in the head frame."""
    d = body.dims
    cy = d["head_centre_y"]
    return [
        (0.018, cy, d["head_semi_x"], d["head_semi_y"], d["head_semi_z"]),
        (0.04, cy - 0.055 * d["head_semi_y"] / 0.118, 0.07, 0.065, 0.062 * d["head_semi_z"] / 0.077),
    ]


def face_points(body: HumanoidBody) -> dict[str, tuple[float, float, float]]:
    """Face feature positions (head frame, m): eye centres and corners, nose tip, mouth corners, ears."""
    d = body.dims
    cy = d["head_centre_y"]
    sy = d["head_semi_y"] / 0.118
    eye_y, eye_z = cy + 0.012 * sy, 0.032 * sy
    pts: dict[str, tuple[float, float, float]] = {}
    for side, m in (("right", 1.0), ("left", -1.0)):
        for suffix, dz in (("_inner", -0.014), ("", 0.0), ("_outer", 0.014)):
            z = m * (eye_z + dz * sy)
            pts[f"{side}_eye{suffix}"] = (_head_surface_x(body, eye_y, z) - 0.002, eye_y, z)
        mz = m * 0.022 * sy
        my = cy - 0.052 * sy
        pts[f"mouth_{side}"] = (_head_surface_x(body, my, mz) - 0.001, my, mz)
        pts[f"{side}_ear"] = (0.005, cy - 0.005, m * (d["head_semi_z"] + 0.004))
    ny = cy - 0.018 * sy
    pts["nose"] = (_head_surface_x(body, ny, 0.0) + 0.02 * sy, ny - 0.004, 0.0)
    return pts


def landmark_points(body: HumanoidBody) -> dict[str, tuple[str, tuple[float, float, float]]]:
    """BlazePose landmark name -> (segment, point in its frame)."""
    d = body.dims
    out: dict[str, tuple[str, tuple[float, float, float]]] = {
        k: ("head", v) for k, v in face_points(body).items()
    }
    for (s, m), side in zip(SIDES, ("right", "left"), strict=True):
        out[f"{side}_shoulder"] = (f"humerus_{s}", (0.0, 0.0, 0.0))
        out[f"{side}_elbow"] = (f"ulna_{s}", (0.0, 0.0, 0.0))
        out[f"{side}_wrist"] = (f"hand_{s}", (0.0, 0.0, 0.0))
        hand = d[f"hand_{s}"]
        out[f"{side}_index"] = (f"hand_{s}", (0.02, -0.47 * hand, -m * 0.004))
        out[f"{side}_pinky"] = (f"hand_{s}", (-0.025, -0.43 * hand, -m * 0.004))
        out[f"{side}_thumb"] = (f"hand_{s}", (0.05, -0.33 * hand, -m * 0.012))
        out[f"{side}_hip"] = (f"femur_{s}", (0.0, 0.0, 0.0))
        out[f"{side}_knee"] = (f"tibia_{s}", (0.0, 0.0, 0.0))
        out[f"{side}_ankle"] = (f"talus_{s}", (0.0, 0.0, 0.0))
        cal = body.offsets[f"calcn_{s}"]
        sole_y = -d["ankle_height"] - cal[1]  # sole height in the calcaneus frame
        out[f"{side}_heel"] = (f"calcn_{s}", (-d["heel_back"] - cal[0] - 0.004, sole_y + 0.012, 0.0))
        toe = body.offsets[f"toes_{s}"]
        toe_len = d[f"foot_{s}"] - (toe[0] + cal[0] + d["heel_back"])
        out[f"{side}_foot_index"] = (f"toes_{s}", (toe_len - 0.006, sole_y - toe[1] + 0.014, -m * 0.012))
    return {name: out[name] for name in BLAZEPOSE_NAMES}


def landmarks_world(body: HumanoidBody, p: Pose) -> NDArray[np.float64]:
    """The 33 BlazePose landmarks [T, 33, 3] in world metres."""
    pts = landmark_points(body)
    return np.stack([p.point(seg, local) for seg, local in pts.values()], axis=1)


def landmark_depths(body: HumanoidBody) -> NDArray[np.float64]:
    """[33] how far below the skin each landmark lies (m); see :data:`LANDMARK_DEPTH_M`."""
    out = []
    for name in BLAZEPOSE_NAMES:
        key = name.split("_", 1)[1] if name.startswith(("left_", "right_")) else name
        out.append(LANDMARK_DEPTH_M.get(key, 0.0))
    return np.asarray(out, float)


def sole_points(body: HumanoidBody, p: Pose) -> NDArray[np.float64]:
    """Points on the shoe soles [T, 8, 3] (heel, ball edges, toe of each foot), world m."""
    d = body.dims
    pts = []
    for s, _ in SIDES:
        cal = body.offsets[f"calcn_{s}"]
        sole_y = -d["ankle_height"] - cal[1]
        w = d["foot_half_width"]
        pts.append(p.point(f"calcn_{s}", (-d["heel_back"] - cal[0] + 0.03, sole_y, 0.0)))
        toe = body.offsets[f"toes_{s}"]
        pts.append(p.point(f"toes_{s}", (0.0, sole_y - toe[1], 0.7 * w)))
        pts.append(p.point(f"toes_{s}", (0.0, sole_y - toe[1], -0.7 * w)))
        toe_len = d[f"foot_{s}"] - (toe[0] + cal[0] + d["heel_back"])
        pts.append(p.point(f"toes_{s}", (toe_len - 0.03, sole_y - toe[1] + 0.004, 0.0)))
    return np.stack(pts, axis=1)


def place_on_floor(
    body: HumanoidBody,
    q: NDArray[np.float64],
    dof_names: list[str] | tuple[str, ...],
    keep_horizontal: bool,
) -> NDArray[np.float64]:
    """``q`` with the pelvis translation set for this humanoid: lowest sole point on y = 0 in every frame.

    ``keep_horizontal``: keep pelvis_tx/tz (a walking path); otherwise centre the feet on the world origin.
    """
    q = np.array(q, float, copy=True)
    index = {n: i for i, n in enumerate(dof_names)}
    itx, ity, itz = index["pelvis_tx"], index["pelvis_ty"], index["pelvis_tz"]
    q0 = q.copy()
    q0[:, [itx, ity, itz]] = 0.0
    soles = sole_points(body, pose(body, q0, dof_names))
    q[:, ity] = -soles[:, :, 1].min(axis=1)
    if not keep_horizontal:
        q[:, itx] = -soles[:, :, 0].mean(axis=1)
        q[:, itz] = -soles[:, :, 2].mean(axis=1)
    return q


# ------------------------------------------------------------------------------------------------------------------
# flesh: primitives per segment
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """A primitive fixed in a segment frame: ellipsoid (centre, semi, local axes) or cone (a, b, ra, rb)."""

    segment: str
    kind: str
    p: tuple[float, float, float]
    q: tuple[float, float, float]  # ellipsoid semi-axes, or cone end b
    r: tuple[float, float] = (0.0, 0.0)  # cone radii
    color: str = "skin"
    shininess: float = 0.0
    axes: tuple[tuple[float, float, float], ...] | None = (
        None  # ellipsoid local axes (columns) in the segment
    )


_EYE_WHITE = (236, 236, 230)
_IRIS = (52, 36, 26)
_FIXED_COLORS: dict[str, tuple[int, int, int]] = {"eye_white": _EYE_WHITE, "iris": _IRIS}


def body_parts(body: HumanoidBody) -> list[_Part]:
    """The flesh, clothes, shoes, hair and face of ``body`` as primitives in segment frames."""
    d, st = body.dims, body.style
    sy = d["head_semi_y"] / 0.118
    parts: list[_Part] = []
    add = parts.append
    # pelvis and trunk
    hw = d["hips_half_width"]
    add(_Part("pelvis", "ellipsoid", (-0.012, 0.03, 0.0), (0.11 * hw / 0.16, 0.115, hw), color="trousers"))
    for _s, m in SIDES:
        add(_Part("pelvis", "ellipsoid", (-0.05, -0.01, m * 0.065 * hw / 0.16), (0.085, 0.095, 0.085), color="trousers"))  # fmt: skip
    add(_Part("torso", "ellipsoid", (0.05, 0.07, 0.0), (0.105 * hw / 0.16, 0.13, d["waist_half_width"]), color="shirt"))  # fmt: skip
    neck_y = body.offsets["head"][1]
    chest_y = neck_y - 0.17 * sy
    add(_Part("torso", "ellipsoid", (0.045, 0.5 * (0.07 + chest_y), 0.0), (0.1 * hw / 0.16, 0.15, 1.05 * d["waist_half_width"]), color="shirt"))  # fmt: skip
    add(_Part("torso", "ellipsoid", (0.04, chest_y, 0.0), (d["chest_half_depth"], 0.19 * sy, d["chest_half_width"]), color="shirt"))  # fmt: skip
    sho = [body.offsets[f"humerus_{s}"] for s, _ in SIDES]
    top = neck_y - 0.025
    for (x, y, z), (_s, m) in zip(sho, SIDES, strict=True):
        add(_Part("torso", "cone", (x - 0.01, y + 0.02, z - m * 0.02), (0.0, top, m * 0.04), (0.05 * d["neck_r"] / 0.048, 0.055), color="shirt"))  # fmt: skip
        add(_Part("torso", "ellipsoid", (x, y + 0.005, z), (0.052, 0.055, 0.05), color="shirt"))
    # neck and head
    add(_Part("head", "cone", (-0.01, -0.04, 0.0), (0.015, d["head_centre_y"] - 0.07 * sy, 0.0), (d["neck_r"], d["neck_r"] * 0.95)))  # fmt: skip
    for cx, cy, ax, ay, az in _head_ellipsoids(body):
        add(_Part("head", "ellipsoid", (cx, cy, 0.0), (ax, ay, az)))
    hcy = d["head_centre_y"]
    add(_Part("head", "ellipsoid", (0.0, hcy + 0.028 * sy, 0.0), (d["head_semi_x"] + 0.012, d["head_semi_y"] + 0.004, d["head_semi_z"] + 0.011), color="hair", shininess=12.0))  # fmt: skip
    if st["long_hair"]:
        add(_Part("head", "ellipsoid", (-0.045, hcy - 0.06 * sy, 0.0), (0.06, 0.13 * sy, d["head_semi_z"] + 0.006), color="hair", shininess=12.0))  # fmt: skip
    fp = face_points(body)
    for side, m in (("right", 1.0), ("left", -1.0)):
        ex, ey, ez = fp[f"{side}_eye"]
        add(_Part("head", "ellipsoid", (ex - 0.003, ey, ez), (0.007, 0.0075 * sy, 0.0135 * sy), color="eye_white", shininess=30.0))  # fmt: skip
        add(_Part("head", "ellipsoid", (ex + 0.0025, ey, ez), (0.004, 0.0055 * sy, 0.0055 * sy), color="iris", shininess=30.0))  # fmt: skip
        bx = _head_surface_x(body, ey + 0.02 * sy, ez)
        add(_Part("head", "ellipsoid", (bx - 0.001, ey + 0.02 * sy, ez), (0.005, 0.0035 * sy, 0.017 * sy), color="hair"))  # fmt: skip
        ox, oy, oz = fp[f"{side}_ear"]
        add(_Part("head", "ellipsoid", (ox, oy, oz - m * 0.006), (0.02, 0.03 * sy, 0.011)))
    nx, ny, _ = fp["nose"]
    add(
        _Part(
            "head", "ellipsoid", (nx - 0.016 * sy, ny + 0.012 * sy, 0.0), (0.02 * sy, 0.026 * sy, 0.012 * sy)
        )
    )
    mx, my, _ = fp["mouth_right"]
    add(_Part("head", "ellipsoid", (mx - 0.003, my, 0.0), (0.006, 0.007 * sy, 0.024 * sy), color="lips"))
    # legs and feet
    leg_color = "skin" if st["shorts"] else "trousers"
    for s, m in SIDES:
        thigh, shank = d[f"thigh_{s}"], d[f"shank_{s}"]
        add(_Part(f"femur_{s}", "cone", (0.0, 0.0, 0.0), (0.0, -thigh, 0.0), (d["thigh_r0"], d["thigh_r1"]), color="skin" if st["shorts"] else "trousers"))  # fmt: skip
        add(_Part(f"tibia_{s}", "cone", (0.0, 0.0, 0.0), (0.0, -shank, 0.0), (d["shank_r0"], d["shank_r1"]), color=leg_color))  # fmt: skip
        add(_Part(f"tibia_{s}", "ellipsoid", (-0.016, -0.3 * shank, 0.0), (d["calf"], 0.13 * shank / 0.436, d["calf"] * 0.95), color=leg_color))  # fmt: skip
        if st["shorts"]:
            add(_Part(f"femur_{s}", "cone", (0.0, 0.02, 0.0), (0.0, -0.45 * thigh, 0.0), (d["thigh_r0"] + 0.008, 0.7 * d["thigh_r0"] + 0.3 * d["thigh_r1"] + 0.01), color="trousers"))  # fmt: skip
        cal = body.offsets[f"calcn_{s}"]
        sole_y = -d["ankle_height"] - cal[1]
        heel_x = -d["heel_back"] - cal[0]
        toe = body.offsets[f"toes_{s}"]
        ball_x = toe[0]
        w = d["foot_half_width"]
        add(_Part(f"calcn_{s}", "ellipsoid", (0.5 * (heel_x + ball_x) + 0.004, sole_y + 0.036, 0.0), (0.5 * (ball_x - heel_x) + 0.012, 0.036, w), color="shoes", shininess=20.0))  # fmt: skip
        add(_Part(f"calcn_{s}", "cone", (heel_x + 0.045, sole_y + 0.06, 0.0), (ball_x - 0.05, sole_y + 0.035, 0.0), (0.036, 0.03), color="shoes", shininess=20.0))  # fmt: skip
        toe_len = d[f"foot_{s}"] - (toe[0] + cal[0] + d["heel_back"])
        ty = sole_y - toe[1]
        add(_Part(f"toes_{s}", "ellipsoid", (0.5 * toe_len - 0.01, ty + 0.025, -m * 0.004), (0.5 * toe_len + 0.012, 0.025, 0.95 * w), color="shoes", shininess=20.0))  # fmt: skip
        add(_Part(f"talus_{s}", "cone", (0.0, 0.04, 0.0), (0.0, -0.005, 0.0), (d["shank_r1"] + 0.004, 0.038), color="shoes" if not st["shorts"] else "skin"))  # fmt: skip
    # arms and hands
    for s, m in SIDES:
        ua, fa, hand = d[f"upper_arm_{s}"], d[f"forearm_{s}"], d[f"hand_{s}"]
        add(_Part(f"humerus_{s}", "cone", (0.0, 0.0, 0.0), (0.0, -ua, 0.0), (d["upper_arm_r0"], d["upper_arm_r1"]), color="skin" if st["short_sleeves"] else "shirt"))  # fmt: skip
        if st["short_sleeves"]:
            add(_Part(f"humerus_{s}", "cone", (0.0, 0.01, 0.0), (0.0, -0.45 * ua, 0.0), (d["upper_arm_r0"] + 0.01, 0.6 * d["upper_arm_r0"] + 0.4 * d["upper_arm_r1"] + 0.01), color="shirt"))  # fmt: skip
        add(_Part(f"radius_{s}", "cone", (0.0, 0.0, 0.0), (0.0, -fa, 0.0), (d["forearm_r0"], d["forearm_r1"]), color="skin" if st["short_sleeves"] else "shirt"))  # fmt: skip
        if not st["short_sleeves"]:
            add(_Part(f"radius_{s}", "cone", (0.0, -0.8 * fa, 0.0), (0.0, -fa - 0.004, 0.0), (d["forearm_r1"] + 0.002, d["forearm_r1"] - 0.002)))  # fmt: skip
        add(_Part(f"hand_{s}", "ellipsoid", (0.0, -0.26 * hand, 0.0), (0.042 * hand / 0.19, 0.3 * hand, 0.017)))  # fmt: skip
        add(_Part(f"hand_{s}", "ellipsoid", (0.002, -0.66 * hand, -m * 0.003), (0.037 * hand / 0.19, 0.2 * hand, 0.012)))  # fmt: skip
        add(_Part(f"hand_{s}", "cone", (0.025, -0.06 * hand, -m * 0.008), (0.05, -0.33 * hand, -m * 0.012), (0.012, 0.009)))  # fmt: skip
    return parts


def _color(body: HumanoidBody, name: str) -> NDArray[np.float32]:
    rgb = _FIXED_COLORS.get(name) or body.colors[name]
    return np.asarray(rgb, np.float32)


def primitives(
    body: HumanoidBody, p: Pose, frame: int, extr: Extrinsics, parts: list[_Part] | None = None
) -> list[Primitive]:
    """The humanoid's primitives in the camera frame for one frame of pose ``p``."""
    parts = parts if parts is not None else body_parts(body)
    rc = extr.R
    out: list[Primitive] = []
    for k, part in enumerate(parts):
        r = p.rot[part.segment][frame]
        o = p.origin[part.segment][frame]
        to_cam = rc @ r
        t_cam = rc @ o + extr.t
        albedo = _color(body, part.color)
        if part.kind == "ellipsoid":
            axes = np.eye(3) if part.axes is None else np.asarray(part.axes, float)
            out.append(
                ellipsoid(
                    to_cam @ np.asarray(part.p) + t_cam,
                    to_cam @ axes,
                    part.q,
                    albedo,
                    shininess=part.shininess,
                    label=k,
                )  # fmt: skip
            )
        else:
            a = to_cam @ np.asarray(part.p) + t_cam
            b = to_cam @ np.asarray(part.q) + t_cam
            out.append(round_cone(a, b, part.r[0], part.r[1], albedo, shininess=part.shininess, label=k))
    return out


# ------------------------------------------------------------------------------------------------------------------
# the room: a textured floor and a back wall
# ------------------------------------------------------------------------------------------------------------------


def _hash_noise(ix: NDArray[np.int64], iz: NDArray[np.int64], seed: int) -> NDArray[np.float32]:
    """Deterministic pseudo-random values in [0, 1) per integer lattice point (an integer hash)."""
    h = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iz.astype(np.uint64) * np.uint64(19349663))
    h ^= np.uint64(seed * 83492791 % (2**32))
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return ((h & np.uint64(0xFFFFFF)).astype(np.float32)) / np.float32(0x1000000)


def value_noise(x: NDArray[np.float64], z: NDArray[np.float64], seed: int) -> NDArray[np.float32]:
    """Smooth value noise in [0, 1) on the plane (lattice spacing 1)."""
    fx, fz = np.floor(x), np.floor(z)
    tx, tz = (x - fx).astype(np.float32), (z - fz).astype(np.float32)
    tx, tz = tx * tx * (3 - 2 * tx), tz * tz * (3 - 2 * tz)
    ix, iz = fx.astype(np.int64), fz.astype(np.int64)
    v00, v10 = _hash_noise(ix, iz, seed), _hash_noise(ix + 1, iz, seed)
    v01, v11 = _hash_noise(ix, iz + 1, seed), _hash_noise(ix + 1, iz + 1, seed)
    return (v00 * (1 - tx) + v10 * tx) * (1 - tz) + (v01 * (1 - tx) + v11 * tx) * tz


@dataclass(frozen=True, eq=False)
class Room:
    """Static background of one video: colour, ray distance and floor coordinates per supersampled pixel."""

    color: NDArray[np.float32]  # [H*s, W*s, 3]
    depth: NDArray[np.float32]  # [H*s, W*s]
    floor_xz: NDArray[np.float32]  # [H*s, W*s, 2] world (x, z) of floor pixels (NaN elsewhere)
    params: dict[str, Any]


def build_room(
    rays: NDArray[np.float32], extr: Extrinsics, rng: np.random.Generator, wall_distance_m: float
) -> Room:
    """A floor (wooden planks or tiles) on y = 0 and a painted wall ``wall_distance_m`` ahead of the camera."""
    d_world = rays @ extr.R.astype(np.float32)  # camera ray -> world direction (R^T d)
    eye = extr.centre
    fwd = extr.R[2].copy()
    fwd[1] = 0.0
    fwd /= max(np.linalg.norm(fwd), 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d_world[..., 1] < -1e-6, -eye[1] / d_world[..., 1], np.inf)
        denom = d_world @ fwd.astype(np.float32)
        t_wall = np.where(denom > 1e-6, (wall_distance_m - 0.0) / denom, np.inf)
    floor = t_floor < t_wall
    depth = np.minimum(t_floor, t_wall).astype(np.float32)
    hit = eye[None, None, :] + np.where(np.isfinite(depth), depth, 0.0)[..., None] * d_world
    seed = int(rng.integers(2**31))
    color = np.zeros(rays.shape, np.float32)
    # floor
    kind = "planks" if rng.random() < 0.6 else "tiles"
    angle = float(rng.uniform(0, np.pi))
    ca, sa = math.cos(angle), math.sin(angle)
    fx, fz = hit[..., 0][floor], hit[..., 2][floor]
    u, v = ca * fx + sa * fz, -sa * fx + ca * fz
    if kind == "planks":
        base = np.asarray(
            rng.choice([(150, 108, 70), (186, 146, 100), (120, 84, 56), (200, 176, 140)]), np.float32
        )
        width, length = float(rng.uniform(0.14, 0.2)), float(rng.uniform(1.0, 1.8))
        row = np.floor(v / width)
        shift = _hash_noise(row.astype(np.int64), np.zeros_like(row, np.int64), seed + 1) * length
        col = np.floor((u + shift) / length)
        tint = 0.82 + 0.3 * _hash_noise(row.astype(np.int64), col.astype(np.int64), seed + 2)
        grain = 0.92 + 0.08 * np.sin(
            2 * np.pi * (v / width * 3.0 + 2.0 * value_noise(u * 2.0, v * 8.0, seed + 3))
        )
        fu = np.abs(((u + shift) / length) - np.round((u + shift) / length)) * length
        fv = np.abs((v / width) - np.round(v / width)) * width
        seam = np.where((fv < 0.004) | (fu < 0.004), 0.55, 1.0)
        shade_f = tint * grain * seam
    else:
        base = np.asarray(
            rng.choice([(200, 200, 196), (170, 160, 150), (120, 124, 130), (214, 206, 186)]), np.float32
        )
        size = float(rng.uniform(0.3, 0.6))
        tint = 0.9 + 0.14 * _hash_noise(
            np.floor(u / size).astype(np.int64), np.floor(v / size).astype(np.int64), seed + 4
        )
        mottle = 0.93 + 0.1 * value_noise(u * 6.0, v * 6.0, seed + 5)
        fu = np.abs(u / size - np.round(u / size)) * size
        fv = np.abs(v / size - np.round(v / size)) * size
        seam = np.where((fu < 0.005) | (fv < 0.005), 0.6, 1.0)
        shade_f = tint * mottle * seam
    color[floor] = base[None, :] * shade_f[:, None].astype(np.float32)
    # wall: paint with a low-contrast mottle and a skirting board
    wall = ~floor & np.isfinite(depth)
    wall_rgb = np.asarray(rng.choice([(214, 210, 198), (190, 200, 206), (222, 214, 190), (176, 186, 170), (200, 190, 196)]), np.float32)  # fmt: skip
    wx, wy, wz = hit[..., 0][wall], hit[..., 1][wall], hit[..., 2][wall]
    along = wx * fwd[2] - wz * fwd[0]
    mottle = (
        0.92
        + 0.1 * value_noise(along * 1.5, wy * 1.5, seed + 6)
        + 0.03 * value_noise(along * 9.0, wy * 9.0, seed + 7)
    )
    light_fall = 1.0 - 0.12 * np.clip(wy / 3.0, 0, 1)
    wcol = wall_rgb[None, :] * (mottle * light_fall)[:, None]
    skirting = wy < 0.1
    wcol[skirting] = np.asarray((235, 235, 230), np.float32) * 0.85
    color[wall] = wcol
    color[~np.isfinite(depth)] = wall_rgb * 0.9
    floor_xz = np.full(rays.shape[:2] + (2,), np.nan, np.float32)
    floor_xz[floor] = np.stack([fx, fz], axis=-1)
    params = {"floor": kind, "floor_angle_rad": angle, "wall_distance_m": wall_distance_m}
    return Room(color, depth, floor_xz, params)


# ------------------------------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HumanoidRenderer:
    """Renders frames of one humanoid in one room from one static camera."""

    body: HumanoidBody
    intrinsics: Intrinsics
    extrinsics: Extrinsics
    room: Room
    rays: NDArray[np.float32]
    light_world: NDArray[np.float64]  # unit, towards the light
    supersample: int
    room_lo: NDArray[np.float32]  # the empty room at the output resolution

    @classmethod
    def create(
        cls,
        body: HumanoidBody,
        intr: Intrinsics,
        extr: Extrinsics,
        rng: np.random.Generator,
        *,
        wall_distance_m: float,
        supersample: int = 2,
    ) -> HumanoidRenderer:
        rays = pixel_rays(intr, supersample)
        room = build_room(rays, extr, rng, wall_distance_m)
        az = float(rng.uniform(0, 2 * np.pi))
        el = math.radians(float(rng.uniform(40, 70)))
        light = np.array([math.cos(el) * math.cos(az), math.sin(el), math.cos(el) * math.sin(az)])
        # keep the key light on the camera's side of the subject, so faces are not all in shadow
        to_cam = extr.centre.copy()
        to_cam[1] = 0.0
        to_cam /= max(np.linalg.norm(to_cam), 1e-9)
        if light[[0, 2]] @ to_cam[[0, 2]] < 0:
            light[[0, 2]] *= -1
        return cls(body, intr, extr, room, rays, light, supersample, downsample(room.color, supersample))

    def buffers(self, p: Pose, frame: int, parts: list[_Part] | None = None) -> FrameBuffers:
        prims = primitives(self.body, p, frame, self.extrinsics, parts)
        return rasterise(prims, self.rays, self.intrinsics, self.supersample, self.room.depth)

    def shadow(self, p: Pose, frame: int) -> tuple[tuple[int, int, int, int], NDArray[np.float32]] | None:
        """Soft shadow of the body on the floor: (x0, y0, x1, y1) of a supersampled region and its factor there.

        Blobs at the segments' origins, cast along the light onto the floor, wider and fainter with height;
        evaluated on the 1x pixel grid and repeated to the supersampled one (a shadow this soft needs no more).
        """
        s = self.supersample
        fxz = self.room.floor_xz[s // 2 :: s, s // 2 :: s]
        blobs = []
        for seg, r in (("pelvis", 0.17), ("torso", 0.2), ("head", 0.11)):
            blobs.append((p.origin[seg][frame] + p.rot[seg][frame] @ np.array([0.0, 0.1, 0.0]), r))
        for side, _ in SIDES:
            for seg, r in ((f"femur_{side}", 0.09), (f"tibia_{side}", 0.06), (f"calcn_{side}", 0.07), (f"toes_{side}", 0.05)):  # fmt: skip
                blobs.append((p.origin[seg][frame], r))
        centres = np.array([c for c, _ in blobs])
        ground = centres - (centres[:, 1:2] / self.light_world[1]) * self.light_world[None, :]
        lo = ground[:, [0, 2]].min(axis=0) - 0.6
        hi = ground[:, [0, 2]].max(axis=0) + 0.6
        with np.errstate(invalid="ignore"):
            region = (
                (fxz[..., 0] >= lo[0])
                & (fxz[..., 0] <= hi[0])
                & (fxz[..., 1] >= lo[1])
                & (fxz[..., 1] <= hi[1])
            )
        if not region.any():
            return None
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub = fxz[r0:r1, c0:c1]
        ok = region[r0:r1, c0:c1]
        f = np.ones(sub.shape[:2], np.float32)
        for (c, r), gnd in zip(blobs, ground, strict=True):
            height = max(float(c[1]), 0.0)
            sigma = r + 0.15 * height
            strength = 0.45 * math.exp(-height / 1.5)
            with np.errstate(invalid="ignore"):
                d2 = (sub[..., 0] - gnd[0]) ** 2 + (sub[..., 1] - gnd[2]) ** 2
                f *= np.where(ok, 1.0 - strength * np.exp(-0.5 * d2 / sigma**2), 1.0).astype(np.float32)
        return (c0 * s, r0 * s, c1 * s, r1 * s), np.repeat(np.repeat(f, s, axis=0), s, axis=1)

    def render(self, p: Pose | None, frame: int, parts: list[_Part] | None = None) -> tuple[NDArray[np.float32], FrameBuffers | None]:  # fmt: skip
        """Float RGB [H, W, 3] of frame ``frame`` (``p`` None: the empty room) and the supersampled buffers."""
        if p is None:
            return self.room_lo.copy(), None
        light = Light(
            direction=self.extrinsics.R @ self.light_world, up=self.extrinsics.R @ np.array([0.0, 1.0, 0.0])
        )
        buf = self.buffers(p, frame, parts)
        shadow = self.shadow(p, frame)
        # recompute only the region that changed (body and shadow), aligned to whole output pixels
        s = self.supersample
        boxes = [buf.roi] + ([shadow[0]] if shadow is not None else [])
        boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        out = self.room_lo.copy()
        if not boxes:
            return out, buf
        x0 = min(b[0] for b in boxes) // s * s
        y0 = min(b[1] for b in boxes) // s * s
        x1 = -(-max(b[2] for b in boxes) // s) * s
        y1 = -(-max(b[3] for b in boxes) // s) * s
        img = self.room.color[y0:y1, x0:x1].copy()
        if shadow is not None:
            (sx0, sy0, sx1, sy1), f = shadow
            img[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] *= f[..., None]
        bx0, by0, bx1, by1 = buf.roi
        body = buf.label >= 0
        if body.any():
            region = img[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
            region[body] = shade(buf, self.rays[by0:by1, bx0:bx1], light, body)
        out[y0 // s : y1 // s, x0 // s : x1 // s] = downsample(img, s)
        return out, buf


def landmark_visibility(
    lm_cam: NDArray[np.float64],
    depths_below_skin: NDArray[np.float64],
    buf: FrameBuffers,
    intr: Intrinsics,
    supersample: int,
) -> NDArray[np.bool_]:
    """[J] landmark in the image and no surface in front of it by more than its depth below the skin + 2 cm."""
    s = supersample
    z = lm_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr.fx * lm_cam[:, 0] / z + intr.cx
        v = intr.fy * lm_cam[:, 1] / z + intr.cy
    inside = (z > 0) & (u >= -0.5) & (u < intr.width - 0.5) & (v >= -0.5) & (v < intr.height - 0.5)
    vis = np.zeros(len(lm_cam), bool)
    dist = np.linalg.norm(lm_cam, axis=-1)
    x0, y0, x1, y1 = buf.roi
    for j in np.flatnonzero(inside):
        col = min(int(np.floor((u[j] + 0.5) * s)), intr.width * s - 1)
        row = min(int(np.floor((v[j] + 0.5) * s)), intr.height * s - 1)
        if not (x0 <= col < x1 and y0 <= row < y1):
            vis[j] = True  # nothing of the body is rendered there, so nothing covers it
            continue
        vis[j] = buf.depth[row - y0, col - x0] >= dist[j] - depths_below_skin[j] - VISIBILITY_TOLERANCE_M
    return vis


def silhouette_box(buf: FrameBuffers, supersample: int) -> NDArray[np.float32]:
    """(x0, y0, x1, y1) px around the body's pixels (pixel-centre coordinates); NaN when none is in view."""
    mask = buf.label >= 0
    if not mask.any():
        return np.full(4, np.nan, np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    s = supersample
    ox, oy = buf.roi[:2]
    x0, x1 = (ox + cols[0] + 0.5) / s - 0.5, (ox + cols[-1] + 0.5) / s - 0.5
    y0, y1 = (oy + rows[0] + 0.5) / s - 0.5, (oy + rows[-1] + 0.5) / s - 0.5
    return np.array([x0, y0, x1, y1], np.float32)
