"""The fitting loss: confidence-weighted root-relative 3D Huber + 2D reprojection Huber + regularisers.

Masking rule: a keypoint pulls only where its confidence is > 0, its observation is finite and its frame is real
(not bucket padding). Observations are replaced by 0 with ``jnp.where`` *before* any arithmetic, so NaN never
reaches a value or a gradient. Each observation pulls with its confidence (3D: a power of it, see
:data:`CONF_POWER_3D`) times a robust weight in [0, 1] (``robust2d`` / ``robust3d``, 1 until the fit reweights its
outliers: :mod:`mocapflow.fit.robust`).
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from mocapflow.fit.kinematics import site_positions, transforms
from mocapflow.fit.params import FitParams, Limits
from mocapflow.fit.sites import WORLD_TO_CAMERA
from models.body import BodyModel

DELTA_3D_CM = 10.0
# Inside the fit, 2D residuals are in px of a reference camera: the video's px x F_REF_PX / its focal length, so the
# same view of the same body costs the same at any resolution (its Huber delta, its first weight against 3D and the
# robust reweighting's floor are then resolution-free). F_REF_PX is the focal length of a 640 px wide image with a
# 55 deg horizontal field of view, the default camera of a 640x480 video. In the video's own px, the fit of a
# still-photo clip and of the same keypoints at half resolution differed by a median 4.9 deg per DOF (messi_pan;
# 3.6 cameraman_pan); in reference px by 0.03 and 0.00.
F_REF_PX = 320.0 / math.tan(math.radians(27.5))
DELTA_2D_PX = 50.0  # reference px
# A keypoint's 3D error grows much faster than its 2D error as its confidence falls (a partly hidden keypoint is
# still placed well in the image, but its depth is a guess: on the markers set the median depth error is 4 cm at
# confidence > 0.9 and 20-35 cm below 0.7), so 3D observations pull with conf ** CONF_POWER_3D, 2D ones with conf.
CONF_POWER_3D = 4.0

# Monocular depth is the least trusted part of a 3D keypoint: its x and y repeat what the 2D keypoint says (more
# precisely), its depth is the model's guess. In the 3D loss the camera-depth component of each residual is scaled
# by DEPTH_WEIGHT_3D (reported residuals are not). On BlazePose keypoints of a still photo (2000 steps, limbs
# initialised on one depth branch) the median per-DOF SD was 5.9 deg at 1.0, 6.0 at 0.6 and 4.0 at 0.3; without a
# consistent initial branch 0.3 let legs flip between depth branches (SD 23 deg). Since FIT_VERSION 14 this is the
# least a fit gives the depth: the factor is set per video from the keypoints' own noise per axis, up to 1 for depth
# as precise as x and y (mocapflow.fit.fitting.depth_weight_for_noise).
DEPTH_WEIGHT_3D = 0.3

# Weak pose prior: every non-root hinge is pulled towards a neutral standing pose by a Gaussian of width
# PRIOR_SIGMA_DEG (per DOF-name prefix; PRIOR_SIGMA_DEFAULT_DEG otherwise), weighted by PRIOR_WEIGHT per frame.
# It costs little where the keypoints decide (a 1-sigma deviation of one DOF weighs as much as a 0.3 cm mean 3D
# residual) but fixes what they cannot: the long-axis rotations of a straight limb, and the gimbal of the shoulder's
# flexion-adduction-rotation sequence near 90 deg of abduction, where flexion and rotation turn about one axis and
# only their sum is observed. Measured on real BlazePose keypoints of a still photo (mocapflow.fit.metamorphic).
PRIOR_WEIGHT = 0.3
PRIOR_SIGMA_DEFAULT_DEG = 60.0
PRIOR_SIGMA_DEG: dict[str, float] = {
    "arm_rot": 30.0,
    "hip_rotation": 25.0,
    "pro_sup": 30.0,
    "subtalar": 10.0,
    "mtp": 15.0,
    "wrist": 30.0,
    "lumbar": 20.0,
    "neck": 30.0,
}
# The legs' sagittal DOFs keep the prior's own weight when the fit strengthens it (FitOptions.prior_spread_power):
# standing is no centre for them in the movements labs record (a squat, a sit-to-stand flex hips, knees and ankles
# far from it), and the keypoints observe them well from most views. With them strengthened too, the humanoid
# renders' knees were 4-7 deg further off in the squats and sit-to-stands (mocapflow.fit.fitting's docstring).
PRIOR_FIXED_PREFIXES: tuple[str, ...] = ("hip_flexion", "knee_angle", "ankle_angle")


class LossWeights(eqx.Module):
    """Term weights (arrays, so changing them does not recompile)."""

    w3d: Float[Array, ""]
    w2d: Float[Array, ""]
    scale: Float[Array, ""]
    body: Float[Array, ""]
    offset: Float[Array, ""]
    smooth: Float[Array, ""]
    prior: Float[Array, ""]
    depth3d: Float[Array, ""]  # the camera-depth component's factor in the 3D residual (DEPTH_WEIGHT_3D)
    # the pose prior's weight on the PRIOR_FIXED_PREFIXES DOFs (``prior`` is the rest's)
    prior_fixed: Float[Array, ""]

    @classmethod
    def make(
        cls,
        w3d: float = 1.0,
        w2d: float = 0.1,
        scale: float = 0.1,
        body: float = 1.0,
        offset: float = 0.05,
        smooth: float = 1.0,
        prior: float | None = None,
        depth3d: float | None = None,
    ) -> LossWeights:
        """``prior`` None: :data:`PRIOR_WEIGHT` (on every DOF the prior pulls until the fit strengthens it);
        ``depth3d`` None: :data:`DEPTH_WEIGHT_3D`."""
        prior = PRIOR_WEIGHT if prior is None else prior
        depth3d = DEPTH_WEIGHT_3D if depth3d is None else depth3d
        return cls(
            *(
                jnp.asarray(v, jnp.float32)
                for v in (w3d, w2d, scale, body, offset, smooth, prior, depth3d, prior)
            )
        )


class FitData(eqx.Module):
    """One video's observations, padded to its frame bucket (all arrays; shapes fix the compiled code)."""

    kp2d: Float[Array, "T J 2"]  # px, NaN where missing
    kp3d: Float[Array, "T J 3"]  # camera-frame mm, NaN where missing
    conf: Float[Array, "T J"]  # confidence, 0 where missing
    robust2d: Float[Array, "T J"]  # robust weight of each 2D observation (1: full, 0: an outlier)
    robust3d: Float[Array, "T J"]  # robust weight of each 3D observation
    frame_mask: Float[Array, " T"]  # 1 for real frames, 0 for padding
    basis: Float[Array, "T K"]  # B-spline basis (a [T, 1] placeholder for per-frame trajectories)
    site_index: tuple[int, ...] = eqx.field(static=True)  # body-model site of each keypoint column
    intrinsics: Float[Array, " 4"]  # fx, fy, cx, cy (px): the camera recorded in the keypoints table
    offset_projection: Float[Array, "3J 3J"]  # removes joint-angle-like parts of the offsets (sites.py)
    limits: Limits
    weights: LossWeights

    @property
    def n_frames(self) -> int:
        return int(self.kp2d.shape[0])


def huber_norm(r: Float[Array, "*batch C"], delta: float) -> Float[Array, "*batch"]:
    """Huber of the Euclidean norm of ``r`` (quadratic below ``delta``, linear above); smooth at r = 0."""
    n2 = jnp.sum(r * r, axis=-1)
    linear = delta * (jnp.sqrt(jnp.maximum(n2, delta * delta)) - 0.5 * delta)
    return jnp.where(n2 <= delta * delta, 0.5 * n2, linear)


def joint_values(params: FitParams, data: FitData) -> Float[Array, "T D"]:
    """Joint values per frame (radians / metres), inside the limits."""
    return data.limits.to_q(params.trajectory.values(data.basis))


def effective_offset(params: FitParams, data: FitData) -> Float[Array, "J 3"]:
    """The offsets the kinematics use: the parameters without their joint-rotation component."""
    return (data.offset_projection @ params.offset.reshape(-1)).reshape(params.offset.shape)


def predict_camera_m(params: FitParams, data: FitData, model: BodyModel) -> Float[Array, "T J 3"]:
    """Camera-frame positions (m) of the sites behind each keypoint column, every frame."""
    q = joint_values(params, data)
    scale = params.body_scale(jnp.asarray(model.group_matrix, q.dtype))
    body_scale = jnp.broadcast_to(scale[:, None], (len(model.bodies), 3))
    sites = site_positions(model, q, body_scale, effective_offset(params, data), data.site_index)
    return sites @ jnp.asarray(WORLD_TO_CAMERA.T, q.dtype)


def _weights(
    conf: Float[Array, "T J"],
    robust: Float[Array, "T J"],
    obs: Float[Array, "T J C"],
    frame_mask: Float[Array, " T"],
    conf_power: float = 1.0,
):
    valid = (conf > 0) & (robust > 0) & jnp.all(jnp.isfinite(obs), axis=-1) & (frame_mask[:, None] > 0)
    safe_obs = jnp.where(valid[..., None], obs, 0.0)
    w = jnp.where(valid, conf**conf_power * robust, 0.0)
    return valid, safe_obs, w


def residuals_3d_cm(
    pred_m: Float[Array, "T J 3"], data: FitData
) -> tuple[Float[Array, "T J 3"], Float[Array, "T J"]]:
    """Root-relative 3D residuals (cm) and their weights: both sets centred per frame on their weighted mean."""
    valid, obs, w = _weights(data.conf, data.robust3d, data.kp3d, data.frame_mask, CONF_POWER_3D)
    pred = pred_m * 1000.0
    wn = w[..., None]
    n = jnp.maximum(jnp.sum(wn, axis=1, keepdims=True), 1e-6)
    pred_c = pred - jnp.sum(pred * wn, axis=1, keepdims=True) / n
    obs_c = obs - jnp.sum(obs * wn, axis=1, keepdims=True) / n
    return jnp.where(valid[..., None], pred_c - obs_c, 0.0) / 10.0, w


def loss_3d(pred_m: Float[Array, "T J 3"], data: FitData) -> Float[Array, ""]:
    """Root-relative 3D Huber (cm, delta 10), the camera-depth component scaled by ``weights.depth3d``
    (:data:`DEPTH_WEIGHT_3D` by default)."""
    r_cm, w = residuals_3d_cm(pred_m, data)
    one = jnp.ones((), r_cm.dtype)
    r_cm = r_cm * jnp.stack([one, one, data.weights.depth3d.astype(r_cm.dtype)])
    return jnp.sum(w * huber_norm(r_cm, DELTA_3D_CM)) / jnp.maximum(jnp.sum(w), 1e-6)


def project_px(
    points_m: Float[Array, "*batch 3"], intrinsics: Float[Array, " 4"]
) -> Float[Array, "*batch 2"]:
    """Pinhole projection; depths are floored at 1 cm so points behind the camera stay finite."""
    z = jnp.maximum(points_m[..., 2], 0.01)
    u = intrinsics[0] * points_m[..., 0] / z + intrinsics[2]
    v = intrinsics[1] * points_m[..., 1] / z + intrinsics[3]
    return jnp.stack([u, v], axis=-1)


def residuals_2d_px(
    pred_m: Float[Array, "T J 3"], data: FitData
) -> tuple[Float[Array, "T J 2"], Float[Array, "T J"]]:
    """2D reprojection residuals (px) through the recorded intrinsics, and their weights."""
    valid, obs, w = _weights(data.conf, data.robust2d, data.kp2d, data.frame_mask)
    return jnp.where(valid[..., None], project_px(pred_m, data.intrinsics) - obs, 0.0), w


def reference_px_per_px(intrinsics: Any) -> Any:
    """The factor from the video's px to reference px (:data:`F_REF_PX` / the mean focal length)."""
    return 2.0 * F_REF_PX / (intrinsics[0] + intrinsics[1])


def loss_2d(pred_m: Float[Array, "T J 3"], data: FitData) -> Float[Array, ""]:
    """2D reprojection Huber (reference px, delta 50)."""
    r, w = residuals_2d_px(pred_m, data)
    r = r * reference_px_per_px(data.intrinsics)
    return jnp.sum(w * huber_norm(r, DELTA_2D_PX)) / jnp.maximum(jnp.sum(w), 1e-6)


def trajectory_cutoff_hz(knots_per_second: float) -> float:
    """The cut-off (Hz) of the fitted joint trajectories: half the knot rate (amplitude x0.64 there, -4 dB).

    A least-squares cubic B-spline with uniform knots passes a sinusoid below half its knot rate and removes one
    above it, with a steep transition (measured on :func:`~mocapflow.fit.basis.bspline_basis` at 30 fps, averaged
    over the sinusoid's phase against the knots: gain 0.64 at 1, 2, 4 Hz for 2, 4, 8 knots/s; > 0.99 at half
    that, < 0.01 at twice). At the default 8 knots/s the fit keeps
    motion up to ~4 Hz (gait kinematics are commonly low-passed at 6 Hz); the :func:`smoothness` term lowers it
    further in proportion to the measured keypoint noise. On a still photo everything above 0 Hz is noise: there
    2 knots/s gave a median SD of 3.9 deg against 7.5 at 8 knots/s (before the limb initialisation;
    :mod:`mocapflow.fit.metamorphic`), at the price of flattening real motion above 1 Hz.
    """
    if knots_per_second <= 0:
        raise ValueError(f"knots_per_second must be > 0, got {knots_per_second}")
    return 0.5 * float(knots_per_second)


def smoothness(q: Float[Array, "T D"], frame_mask: Float[Array, " T"]) -> Float[Array, ""]:
    """Mean squared second difference of the joint values over triples of real frames."""
    acc = q[2:] - 2.0 * q[1:-1] + q[:-2]
    m = frame_mask[2:] * frame_mask[1:-1] * frame_mask[:-2]
    return jnp.sum(m[:, None] * acc * acc) / jnp.maximum(jnp.sum(m) * q.shape[1], 1.0)


def prior_sigma_rad(model: BodyModel) -> np.ndarray:
    """Per-DOF width (rad) of the pose prior; 0 for DOFs it leaves free (the root's, slides)."""
    root = {d for b in model.bodies if b.parent < 0 for d in b.dofs}
    out = np.zeros(model.n_dofs)
    for i, d in enumerate(model.dofs):
        if d.kind != "hinge" or i in root:
            continue
        sigma = next((v for k, v in PRIOR_SIGMA_DEG.items() if d.name.startswith(k)), PRIOR_SIGMA_DEFAULT_DEG)
        out[i] = np.deg2rad(sigma)
    return out


def prior_fixed_mask(model: BodyModel) -> np.ndarray:
    """1 for the DOFs whose prior keeps its own weight (:data:`PRIOR_FIXED_PREFIXES`), 0 elsewhere."""
    return np.array([float(d.name.startswith(PRIOR_FIXED_PREFIXES)) for d in model.dofs])


def pose_prior(
    q: Float[Array, "T D"], frame_mask: Float[Array, " T"], model: BodyModel
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean over real frames of ``sum_d ((q_d - neutral_d) / sigma_d)^2`` (neutral: 0 clipped into the limits),
    split into (the DOFs the fit may strengthen the prior on, the :func:`prior_fixed_mask` ones)."""
    sigma = prior_sigma_rad(model)
    inv = jnp.asarray(np.where(sigma > 0, 1.0 / np.where(sigma > 0, sigma, 1.0), 0.0), q.dtype)
    neutral = jnp.asarray(model.zero_pose(), q.dtype)
    z = (q - neutral) * inv
    per_dof = jnp.sum(frame_mask[:, None] * z * z, axis=0) / jnp.maximum(jnp.sum(frame_mask), 1.0)
    fixed = jnp.asarray(prior_fixed_mask(model), q.dtype)
    return jnp.sum(per_dof * (1.0 - fixed)), jnp.sum(per_dof * fixed)


def loss_terms(params: FitParams, data: FitData, model: BodyModel) -> dict[str, Float[Array, ""]]:
    """Every term, unweighted, plus ``total`` (weighted sum)."""
    pred = predict_camera_m(params, data, model)
    return _terms(pred, joint_values(params, data), params, data, model)


def _terms(
    pred: Float[Array, "T J 3"], q: Float[Array, "T D"], params: FitParams, data: FitData, model: BodyModel
) -> dict[str, Float[Array, ""]]:
    w = data.weights
    prior, prior_fixed = pose_prior(q, data.frame_mask, model)
    terms = {
        "3d": loss_3d(pred, data),
        "2d": loss_2d(pred, data),
        "scale": jnp.sum((params.group_scale() - 1.0) ** 2),
        "body": jnp.sum(params.log_body**2),
        "offset": jnp.mean(jnp.sum((100.0 * params.offset) ** 2, axis=-1)),
        "smooth": smoothness(q, data.frame_mask),
        "prior": prior,
        "prior_fixed": prior_fixed,
    }
    terms["total"] = (
        w.w3d * terms["3d"]
        + w.w2d * terms["2d"]
        + w.scale * terms["scale"]
        + w.body * terms["body"]
        + w.offset * terms["offset"]
        + w.smooth * terms["smooth"]
        + w.prior * terms["prior"]
        + w.prior_fixed * terms["prior_fixed"]
    )
    return terms


def total_loss(params: FitParams, data: FitData, model: BodyModel) -> Float[Array, ""]:
    return loss_terms(params, data, model)["total"]


class Evaluation(eqx.Module):
    """Everything the fit reads at one set of parameters outside the optimiser (:func:`evaluate`), packed frames."""

    q: Float[Array, "T D"]  # joint values
    terms: dict[str, Float[Array, ""]]  # loss_terms
    residual_2d_px: Float[Array, "T J"]  # residual norms of every observation ...
    weight_2d: Float[Array, "T J"]  # ... and the weights they pull with (0: not used)
    residual_3d_cm: Float[Array, "T J"]
    weight_3d: Float[Array, "T J"]
    # every body-model site (m, no keypoint offsets) in the fit's level-camera frame
    sites: Float[Array, "T S 3"]
    group_scale: Float[Array, " G"]
    body_scale: Float[Array, " B"]  # group scale x per-body refinement
    offset: Float[Array, "J 3"]  # the offsets the kinematics use (effective_offset)


_EVAL_TRACES = [0]


def evaluate_trace_count() -> int:
    """How many times :func:`evaluate` has been traced in this process (tests count recompilations)."""
    return _EVAL_TRACES[0]


@eqx.filter_jit
def evaluate(params: FitParams, data: FitData, model: BodyModel) -> Evaluation:
    """One compiled forward pass for every use outside the optimiser (the outlier reweighting, the final values,
    residuals and loss terms, the sites the world frame is estimated from): the kinematics computed once, its
    program compiled once per frame bucket."""
    _EVAL_TRACES[0] += 1
    q = joint_values(params, data)
    scale = params.body_scale(jnp.asarray(model.group_matrix, q.dtype))
    tf = transforms(model, q, jnp.broadcast_to(scale[:, None], (len(model.bodies), 3)))
    offset = effective_offset(params, data)
    pred = tf.sites(offset, data.site_index) @ jnp.asarray(WORLD_TO_CAMERA.T, q.dtype)
    r2, w2 = residuals_2d_px(pred, data)
    r3, w3 = residuals_3d_cm(pred, data)
    return Evaluation(
        q=q,
        terms=_terms(pred, q, params, data, model),
        residual_2d_px=jnp.linalg.norm(r2, axis=-1),
        weight_2d=w2,
        residual_3d_cm=jnp.linalg.norm(r3, axis=-1),
        weight_3d=w3,
        sites=tf.sites(jnp.zeros((len(model.sites), 3), q.dtype)),
        group_scale=params.group_scale(),
        body_scale=scale,
        offset=offset,
    )
