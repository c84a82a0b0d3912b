"""The body model: a kinematic tree of rigid bodies with hinge/slide DOFs, joint limits, scale groups and sites.

Written here from anthropometric proportions (segment lengths as fractions of stature, e.g. Winter's tables) for a
1.75 m adult; the joint set follows the origin's 40-DOF model (OpenSim-like names). Conventions (docs/ARCHITECTURE.md):
world metres, Y up, X forward, Z to the subject's right; angles in radians.

A body's scale scales its own frame's geometry: the sites on it and its children's joint offsets. The fitter scales
bodies by 8 groups (:meth:`BodyModel.group_to_body_scale`); the synthetic cohort uses anisotropic per-body scales that
the 8 groups cannot represent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from numpy.typing import ArrayLike

DofKind = Literal["hinge", "slide"]


@dataclass(frozen=True)
class Dof:
    name: str
    kind: DofKind
    axis: tuple[float, float, float]
    lower: float
    upper: float
    anchor: tuple[float, float, float] = (0.0, 0.0, 0.0)  # hinge centre in the body frame (MJCF joint pos)


@dataclass(frozen=True)
class Body:
    name: str
    parent: int  # index into BodyModel.bodies, -1 for the root
    pos: tuple[float, float, float]  # joint centre in the parent frame, at scale 1
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # fixed rotation (w, x, y, z)
    dofs: tuple[int, ...] = ()  # indices into BodyModel.dofs, applied in order
    scale_group: int = 0


@dataclass(frozen=True)
class Site:
    name: str
    body: int
    pos: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class BodyModel:
    """Immutable kinematic tree; hashable by identity so it can be closed over by ``jax.jit``."""

    name: str
    bodies: tuple[Body, ...]
    dofs: tuple[Dof, ...]
    sites: tuple[Site, ...]
    scale_groups: tuple[str, ...] = field(default=("all",))

    def __post_init__(self) -> None:
        for i, b in enumerate(self.bodies):
            if not -1 <= b.parent < i:
                raise ValueError(
                    f"body {b.name!r}: parent {b.parent} must come before it (topological order)"
                )
            if not 0 <= b.scale_group < len(self.scale_groups):
                raise ValueError(f"body {b.name!r}: scale group {b.scale_group} out of range")
        used = [d for b in self.bodies for d in b.dofs]
        if sorted(used) != list(range(len(self.dofs))):
            raise ValueError("every DOF must belong to exactly one body")
        for names, what in ((self.dof_names, "DOF"), (self.site_names, "site"), (self.body_names, "body")):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {what} names")
        for d in self.dofs:
            if not d.lower <= d.upper:
                raise ValueError(f"DOF {d.name!r}: lower limit above upper")

    @cached_property
    def dof_names(self) -> list[str]:
        return [d.name for d in self.dofs]

    @cached_property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    @cached_property
    def body_names(self) -> list[str]:
        return [b.name for b in self.bodies]

    @cached_property
    def lower(self) -> np.ndarray:
        return np.array([d.lower for d in self.dofs])

    @cached_property
    def upper(self) -> np.ndarray:
        return np.array([d.upper for d in self.dofs])

    @property
    def n_dofs(self) -> int:
        return len(self.dofs)

    def dof_index(self, name: str) -> int:
        try:
            return self.dof_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name}: no DOF named {name!r}") from None

    def site_index(self, names: str | Sequence[str]) -> int | list[int]:
        def one(n: str) -> int:
            try:
                return self.site_names.index(n)
            except ValueError:
                raise KeyError(f"{self.name}: no site named {n!r}") from None

        return one(names) if isinstance(names, str) else [one(n) for n in names]

    @cached_property
    def group_matrix(self) -> np.ndarray:
        """[B, G] one-hot: which scale group each body belongs to."""
        m = np.zeros((len(self.bodies), len(self.scale_groups)))
        m[np.arange(len(self.bodies)), [b.scale_group for b in self.bodies]] = 1.0
        return m

    def group_to_body_scale(self, group_scale: Float[Array, "... G"]) -> Float[Array, "... B"]:
        return group_scale @ jnp.asarray(self.group_matrix.T)

    def zero_pose(self) -> np.ndarray:
        return np.clip(np.zeros(self.n_dofs), self.lower, self.upper)

    # constant arrays for FK (numpy, built once)
    @cached_property
    def _consts(self) -> dict[str, np.ndarray]:
        axes = np.array([np.asarray(d.axis, float) / np.linalg.norm(d.axis) for d in self.dofs]).reshape(
            -1, 3
        )
        k = np.zeros((len(self.dofs), 3, 3))
        k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
        k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = axes[:, 2], -axes[:, 1], axes[:, 0]
        return {
            "axes": axes,
            "K": k,
            "K2": k @ k,
            "body_pos": np.array([b.pos for b in self.bodies], float).reshape(-1, 3),
            "body_rot": np.array([quat_to_matrix(b.quat) for b in self.bodies]).reshape(-1, 3, 3),
            "site_body": np.array([s.body for s in self.sites], int),
            "site_pos": np.array([s.pos for s in self.sites], float).reshape(-1, 3),
        }


def quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def body_scale_xyz(model: BodyModel, body_scale: ArrayLike | None) -> np.ndarray:
    """Per-body scale factors as numpy ``[n_bodies, 3]`` (float64) from None (ones), ``[n_bodies]`` (uniform per
    body) or ``[n_bodies, 3]``; ValueError for any other shape. (Traced JAX code uses ``_as_body_scale``.)"""
    n = len(model.bodies)
    if body_scale is None:
        return np.ones((n, 3))
    s = np.asarray(body_scale, np.float64)
    if s.shape == (n,):
        return np.repeat(s[:, None], 3, axis=1)
    if s.shape == (n, 3):
        return s
    raise ValueError(f"body_scale must have shape ({n},) or ({n}, 3), got {s.shape}")


def _as_body_scale(model: BodyModel, body_scale: Array | None) -> Array:
    n = len(model.bodies)
    if body_scale is None:
        return jnp.ones((n, 3))
    s = jnp.asarray(body_scale)
    if s.shape == (n,):
        return jnp.broadcast_to(s[:, None], (n, 3))
    if s.shape == (n, 3):
        return s
    raise ValueError(f"body_scale must have shape ({n},) or ({n}, 3), got {s.shape}")


def body_frames(
    model: BodyModel, q: Float[Array, " D"], body_scale: Array | None = None
) -> tuple[Float[Array, "B 3 3"], Float[Array, "B 3"]]:
    """World rotation and origin of every body for one pose (unrolled over the static tree)."""
    c = model._consts
    s = _as_body_scale(model, body_scale)
    q = jnp.asarray(q)
    rots: list[Array] = []
    origins: list[Array] = []
    eye = jnp.eye(3)
    for i, b in enumerate(model.bodies):
        if b.parent < 0:
            r, t = jnp.asarray(c["body_rot"][i]), jnp.asarray(c["body_pos"][i])
        else:
            rp, tp = rots[b.parent], origins[b.parent]
            t = tp + rp @ (c["body_pos"][i] * s[b.parent])
            r = rp @ c["body_rot"][i]
        for d in b.dofs:
            dof = model.dofs[d]
            if dof.kind == "slide":
                t = t + r @ (c["axes"][d] * q[d])
            else:
                rot = eye + jnp.sin(q[d]) * c["K"][d] + (1.0 - jnp.cos(q[d])) * c["K2"][d]
                if any(dof.anchor):
                    a = jnp.asarray(dof.anchor) * s[i]
                    t = t + r @ a - (r @ rot) @ a
                r = r @ rot
        rots.append(r)
        origins.append(t)
    return jnp.stack(rots), jnp.stack(origins)


def forward_kinematics(
    model: BodyModel,
    q: Float[Array, " D"],
    body_scale: Float[Array, " B"] | Float[Array, "B 3"] | None = None,
    site_offset: Float[Array, "S 3"] | None = None,
) -> Float[Array, "S 3"]:
    """World positions (m) of every site for one pose. jit- and vmap-able; ``model`` is static."""
    c = model._consts
    s = _as_body_scale(model, body_scale)
    rots, origins = body_frames(model, q, s)
    local = jnp.asarray(c["site_pos"]) * s[c["site_body"]]
    if site_offset is not None:
        local = local + site_offset
    return origins[c["site_body"]] + jnp.einsum("sij,sj->si", rots[c["site_body"]], local)


def make_fk(model: BodyModel):
    """A jitted FK over frames: (q [T,D], body_scale, site_offset) -> sites [T,S,3]."""

    def fk(
        q: Float[Array, "T D"], body_scale: Array | None = None, site_offset: Array | None = None
    ) -> Array:
        return jax.vmap(lambda qq: forward_kinematics(model, qq, body_scale, site_offset))(q)

    return jax.jit(fk)


# ----------------------------------------------------------------------------------------------------------------
# The default 40-DOF human model
# ----------------------------------------------------------------------------------------------------------------

SCALE_GROUPS = ("pelvis", "thigh", "shank", "foot", "torso", "head", "upper_arm", "forearm")
REFERENCE_STATURE_M = 1.75

_D = np.deg2rad


class _Builder:
    def __init__(self) -> None:
        self.bodies: list[Body] = []
        self.dofs: list[Dof] = []
        self.sites: list[Site] = []

    def body(
        self, name: str, parent: str | None, pos: Sequence[float], group: str, dofs: Sequence[Dof]
    ) -> None:
        start = len(self.dofs)
        self.dofs.extend(dofs)
        pidx = -1 if parent is None else [b.name for b in self.bodies].index(parent)
        self.bodies.append(
            Body(
                name,
                pidx,
                tuple(map(float, pos)),
                dofs=tuple(range(start, len(self.dofs))),
                scale_group=SCALE_GROUPS.index(group),
            )
        )

    def site(self, name: str, body: str, pos: Sequence[float]) -> None:
        self.sites.append(Site(name, [b.name for b in self.bodies].index(body), tuple(map(float, pos))))


def _hinge(name: str, axis: Sequence[float], lo_deg: float, hi_deg: float) -> Dof:
    return Dof(name, "hinge", tuple(map(float, axis)), float(_D(lo_deg)), float(_D(hi_deg)))


def default_body_model() -> BodyModel:
    """The 40-DOF human at 1.75 m stature (segment lengths as fractions of stature)."""
    H = REFERENCE_STATURE_M
    thigh, shank = 0.245 * H, 0.246 * H  # hip-knee, knee-ankle
    upper_arm, forearm = 0.172 * H, 0.150 * H  # shoulder-elbow, elbow-wrist
    hip_half_width = 0.05 * H
    lumbar_up = 0.055 * H
    neck_up = 0.27 * H  # lumbar joint -> C7/neck joint
    shoulder_up, shoulder_half_width = 0.235 * H, 0.105 * H
    b = _Builder()
    b.body(
        "pelvis",
        None,
        (0, 0, 0),
        "pelvis",
        [
            Dof("pelvis_tx", "slide", (1, 0, 0), -20.0, 20.0),
            Dof("pelvis_ty", "slide", (0, 1, 0), -2.0, 3.0),
            Dof("pelvis_tz", "slide", (0, 0, 1), -20.0, 20.0),
            _hinge("pelvis_tilt", (0, 0, 1), -90, 90),
            _hinge("pelvis_list", (1, 0, 0), -90, 90),
            _hinge("pelvis_rotation", (0, 1, 0), -180, 180),
        ],
    )
    for side, m in (("r", 1.0), ("l", -1.0)):
        b.body(
            f"femur_{side}",
            "pelvis",
            (0, 0, m * hip_half_width),
            "thigh",
            [
                _hinge(f"hip_flexion_{side}", (0, 0, 1), -30, 120),
                _hinge(f"hip_adduction_{side}", (m, 0, 0), -50, 30),
                _hinge(f"hip_rotation_{side}", (0, m, 0), -40, 40),
            ],
        )
        b.body(
            f"tibia_{side}",
            f"femur_{side}",
            (0, -thigh, 0),
            "shank",
            [_hinge(f"knee_angle_{side}", (0, 0, -1), 0, 140)],
        )
        b.body(
            f"talus_{side}",
            f"tibia_{side}",
            (0, -shank, 0),
            "foot",
            [_hinge(f"ankle_angle_{side}", (0, 0, 1), -50, 30)],
        )
        b.body(
            f"calcn_{side}",
            f"talus_{side}",
            (-0.01, -0.04, 0),
            "foot",
            [_hinge(f"subtalar_angle_{side}", (m, 0, 0), -20, 20)],
        )
        b.body(
            f"toes_{side}",
            f"calcn_{side}",
            (0.17, -0.02, 0.01 * m),
            "foot",
            [_hinge(f"mtp_angle_{side}", (0, 0, 1), -30, 60)],
        )
    b.body(
        "torso",
        "pelvis",
        (-0.03, lumbar_up, 0),
        "torso",
        [
            _hinge("lumbar_extension", (0, 0, 1), -90, 30),
            _hinge("lumbar_bending", (1, 0, 0), -30, 30),
            _hinge("lumbar_rotation", (0, 1, 0), -40, 40),
        ],
    )
    b.body(
        "head",
        "torso",
        (0.01, neck_up, 0),
        "head",
        [
            _hinge("neck_extension", (0, 0, 1), -60, 60),
            _hinge("neck_bending", (1, 0, 0), -40, 40),
            _hinge("neck_rotation", (0, 1, 0), -70, 70),
        ],
    )
    for side, m in (("r", 1.0), ("l", -1.0)):
        b.body(
            f"humerus_{side}",
            "torso",
            (0, shoulder_up, m * shoulder_half_width),
            "upper_arm",
            [
                _hinge(f"arm_flex_{side}", (0, 0, 1), -90, 180),
                _hinge(f"arm_add_{side}", (m, 0, 0), -180, 30),
                _hinge(f"arm_rot_{side}", (0, m, 0), -90, 90),
            ],
        )
        b.body(
            f"ulna_{side}",
            f"humerus_{side}",
            (0, -upper_arm, 0),
            "forearm",
            [_hinge(f"elbow_flex_{side}", (0, 0, 1), 0, 150)],
        )
        b.body(
            f"radius_{side}",
            f"ulna_{side}",
            (0, 0, 0),
            "forearm",
            [_hinge(f"pro_sup_{side}", (0, m, 0), -90, 90)],
        )
        b.body(
            f"hand_{side}",
            f"radius_{side}",
            (0, -forearm, 0),
            "forearm",
            [
                _hinge(f"wrist_flex_{side}", (0, 0, 1), -70, 70),
                _hinge(f"wrist_dev_{side}", (m, 0, 0), -25, 35),
            ],
        )

    # sites: names follow MeTRAbs bml_movi_87 where a counterpart exists; BlazePose's face/hand points otherwise
    b.site("mhip", "pelvis", (0, 0, 0))
    b.site("pelv", "pelvis", (-0.02, 0.06, 0))
    for side, m in (("r", 1.0), ("l", -1.0)):

        def z(v: Sequence[float], mm: float = m) -> tuple[float, float, float]:
            return (float(v[0]), float(v[1]), mm * float(v[2]))

        b.site(f"{side}hip", "pelvis", z((0, 0, hip_half_width)))
        b.site(f"{side}asis", "pelvis", z((0.06, 0.08, 0.12)))
        b.site(f"{side}psis", "pelvis", z((-0.12, 0.09, 0.045)))
        b.site(f"{side}kne", f"femur_{side}", (0, -thigh, 0))
        b.site(f"{side}knem", f"femur_{side}", z((0, -thigh, 0.05)))
        b.site(f"{side}innerknee", f"femur_{side}", z((0, -thigh, -0.05)))
        b.site(f"{side}thigh", f"femur_{side}", z((0.02, -0.5 * thigh, 0.075)))
        b.site(f"{side}frontthigh", f"femur_{side}", z((0.08, -0.45 * thigh, 0.01)))
        b.site(f"{side}ank", f"tibia_{side}", (0, -shank, 0))
        b.site(f"{side}ankm", f"tibia_{side}", z((0, -shank, 0.037)))
        b.site(f"{side}shin", f"tibia_{side}", z((0.045, -0.45 * shank, 0.01)))
        b.site(f"{side}hee", f"calcn_{side}", (-0.055, -0.025, 0))
        b.site(f"{side}foo", f"calcn_{side}", z((0.13, -0.02, 0.005)))
        b.site(f"{side}fifthmetatarsal", f"calcn_{side}", z((0.14, -0.02, 0.04)))
        b.site(f"{side}firstmetatarsal", f"calcn_{side}", z((0.165, -0.02, -0.025)))
        b.site(f"{side}toe", f"toes_{side}", z((0.055, -0.005, -0.005)))
        b.site(f"{side}sho", "torso", z((0, shoulder_up, shoulder_half_width)))
        b.site(f"{side}shom", "torso", z((0, shoulder_up + 0.04, shoulder_half_width + 0.01)))
        b.site(f"{side}scapula", "torso", z((-0.11, shoulder_up - 0.1, 0.09)))
        b.site(f"{side}elb", f"humerus_{side}", (0, -upper_arm, 0))
        b.site(f"{side}elbm", f"humerus_{side}", z((0, -upper_arm, 0.04)))
        b.site(f"{side}elbinner", f"humerus_{side}", z((0, -upper_arm, -0.035)))
        b.site(f"{side}upperarm", f"humerus_{side}", z((0, -0.5 * upper_arm, 0.05)))
        b.site(f"{side}forearm", f"radius_{side}", z((0.0, -0.45 * forearm, 0.04)))
        b.site(f"{side}wri", f"radius_{side}", (0, -forearm, 0))
        b.site(f"{side}writhumbside", f"radius_{side}", z((0.03, -forearm, 0)))
        b.site(f"{side}wripinkieside", f"radius_{side}", z((-0.03, -forearm, 0)))
        b.site(f"{side}han", f"hand_{side}", (0, -0.08, 0))
        b.site(f"{side}thumb", f"hand_{side}", z((0.05, -0.07, -0.01)))
        b.site(f"{side}index", f"hand_{side}", z((0.025, -0.17, 0)))
        b.site(f"{side}pinky", f"hand_{side}", z((-0.03, -0.15, 0)))
        b.site(f"{side}fin", f"hand_{side}", (0, -0.18, 0))
        b.site(f"{side}eye", "head", z((0.075, 0.11, 0.032)))
        b.site(f"{side}eye_inner", "head", z((0.08, 0.11, 0.017)))
        b.site(f"{side}eye_outer", "head", z((0.07, 0.11, 0.047)))
        b.site(f"{side}ear", "head", z((0.0, 0.095, 0.075)))
        b.site(f"{side}mouth", "head", z((0.088, 0.05, 0.025)))
        b.site(f"{side}fronthead", "head", z((0.08, 0.17, 0.045)))
        b.site(f"{side}backhead", "head", z((-0.08, 0.16, 0.045)))
    b.site("head", "head", (0.02, 0.12, 0))
    b.site("nose", "head", (0.105, 0.085, 0))
    b.site("thor", "torso", (-0.02, 0.6 * neck_up, 0))
    b.site("sternum", "torso", (0.1, 0.7 * neck_up, 0))
    b.site("clavicle", "torso", (0.06, neck_up - 0.02, 0))
    b.site("backneck", "torso", (-0.07, neck_up, 0))
    b.site("upperback", "torso", (-0.12, 0.65 * neck_up, 0))
    b.site("umbilicus", "torso", (0.11, 0.02, 0))
    return BodyModel("mocapflow-human-40", tuple(b.bodies), tuple(b.dofs), tuple(b.sites), SCALE_GROUPS)


# Standing height of the zero pose: pelvis origin above the ground (ankle height + shank + thigh) at scale 1.
def standing_pelvis_height(model: BodyModel, body_scale: Array | None = None) -> float:
    """Pelvis height that puts the lowest foot site on the ground (y = 0) in the zero pose."""
    sites = np.asarray(forward_kinematics(model, jnp.zeros(model.n_dofs), body_scale))
    return float(-sites[:, 1].min())


# BlazePose's 33 landmarks -> body-model sites (subject's left = "l").
BLAZEPOSE_TO_SITE: dict[str, str] = {
    "nose": "nose",
    "left_eye_inner": "leye_inner",
    "left_eye": "leye",
    "left_eye_outer": "leye_outer",
    "right_eye_inner": "reye_inner",
    "right_eye": "reye",
    "right_eye_outer": "reye_outer",
    "left_ear": "lear",
    "right_ear": "rear",
    "mouth_left": "lmouth",
    "mouth_right": "rmouth",
    "left_shoulder": "lsho",
    "right_shoulder": "rsho",
    "left_elbow": "lelb",
    "right_elbow": "relb",
    "left_wrist": "lwri",
    "right_wrist": "rwri",
    "left_pinky": "lpinky",
    "right_pinky": "rpinky",
    "left_index": "lindex",
    "right_index": "rindex",
    "left_thumb": "lthumb",
    "right_thumb": "rthumb",
    "left_hip": "lhip",
    "right_hip": "rhip",
    "left_knee": "lkne",
    "right_knee": "rkne",
    "left_ankle": "lank",
    "right_ankle": "rank",
    "left_heel": "lhee",
    "right_heel": "rhee",
    "left_foot_index": "ltoe",
    "right_foot_index": "rtoe",
}
