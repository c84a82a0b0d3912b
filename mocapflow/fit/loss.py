"""The fitting loss: confidence-weighted root-relative 3D Huber + 2D reprojection Huber + regularisers.

Masking rule: a keypoint pulls only where its confidence is > 0, its observation is finite and its frame is real
(not bucket padding). Observations are replaced by 0 with ``jnp.where`` *before* any arithmetic, so NaN never
reaches a value or a gradient.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from mocapflow.fit.kinematics import site_positions
from mocapflow.fit.params import FitParams, Limits
from mocapflow.fit.sites import WORLD_TO_CAMERA
from models.body import BodyModel

DELTA_3D_CM = 10.0
DELTA_2D_PX = 50.0


class LossWeights(eqx.Module):
    """Term weights (arrays, so changing them does not recompile)."""

    w3d: Float[Array, ""]
    w2d: Float[Array, ""]
    scale: Float[Array, ""]
    body: Float[Array, ""]
    offset: Float[Array, ""]
    smooth: Float[Array, ""]

    @classmethod
    def make(
        cls,
        w3d: float = 1.0,
        w2d: float = 0.1,
        scale: float = 0.1,
        body: float = 1.0,
        offset: float = 0.05,
        smooth: float = 1.0,
    ) -> LossWeights:
        return cls(*(jnp.asarray(v, jnp.float32) for v in (w3d, w2d, scale, body, offset, smooth)))


class FitData(eqx.Module):
    """One video's observations, padded to its frame bucket (all arrays; shapes fix the compiled code)."""

    kp2d: Float[Array, "T J 2"]  # px, NaN where missing
    kp3d: Float[Array, "T J 3"]  # camera-frame mm, NaN where missing
    conf: Float[Array, "T J"]  # confidence, 0 where missing
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


def _weights(conf: Float[Array, "T J"], obs: Float[Array, "T J C"], frame_mask: Float[Array, " T"]):
    valid = (conf > 0) & jnp.all(jnp.isfinite(obs), axis=-1) & (frame_mask[:, None] > 0)
    safe_obs = jnp.where(valid[..., None], obs, 0.0)
    w = jnp.where(valid, conf, 0.0)
    return valid, safe_obs, w


def loss_3d(pred_m: Float[Array, "T J 3"], data: FitData) -> Float[Array, ""]:
    """Root-relative 3D Huber (cm, delta 10): both sets centred on their mean valid keypoint per frame."""
    valid, obs, w = _weights(data.conf, data.kp3d, data.frame_mask)
    pred = pred_m * 1000.0
    v = valid[..., None].astype(pred.dtype)
    n = jnp.maximum(jnp.sum(v, axis=1, keepdims=True), 1.0)
    pred_c = pred - jnp.sum(pred * v, axis=1, keepdims=True) / n
    obs_c = obs - jnp.sum(obs * v, axis=1, keepdims=True) / n
    r_cm = jnp.where(valid[..., None], pred_c - obs_c, 0.0) / 10.0
    return jnp.sum(w * huber_norm(r_cm, DELTA_3D_CM)) / jnp.maximum(jnp.sum(w), 1e-6)


def project_px(
    points_m: Float[Array, "*batch 3"], intrinsics: Float[Array, " 4"]
) -> Float[Array, "*batch 2"]:
    """Pinhole projection; depths are floored at 1 cm so points behind the camera stay finite."""
    z = jnp.maximum(points_m[..., 2], 0.01)
    u = intrinsics[0] * points_m[..., 0] / z + intrinsics[2]
    v = intrinsics[1] * points_m[..., 1] / z + intrinsics[3]
    return jnp.stack([u, v], axis=-1)


def loss_2d(pred_m: Float[Array, "T J 3"], data: FitData) -> Float[Array, ""]:
    """2D reprojection Huber (px, delta 50) through the recorded intrinsics."""
    valid, obs, w = _weights(data.conf, data.kp2d, data.frame_mask)
    r = jnp.where(valid[..., None], project_px(pred_m, data.intrinsics) - obs, 0.0)
    return jnp.sum(w * huber_norm(r, DELTA_2D_PX)) / jnp.maximum(jnp.sum(w), 1e-6)


def smoothness(q: Float[Array, "T D"], frame_mask: Float[Array, " T"]) -> Float[Array, ""]:
    """Mean squared second difference of the joint values over triples of real frames."""
    acc = q[2:] - 2.0 * q[1:-1] + q[:-2]
    m = frame_mask[2:] * frame_mask[1:-1] * frame_mask[:-2]
    return jnp.sum(m[:, None] * acc * acc) / jnp.maximum(jnp.sum(m) * q.shape[1], 1.0)


def loss_terms(params: FitParams, data: FitData, model: BodyModel) -> dict[str, Float[Array, ""]]:
    """Every term, unweighted, plus ``total`` (weighted sum)."""
    pred = predict_camera_m(params, data, model)
    q = joint_values(params, data)
    w = data.weights
    terms = {
        "3d": loss_3d(pred, data),
        "2d": loss_2d(pred, data),
        "scale": jnp.sum((params.group_scale() - 1.0) ** 2),
        "body": jnp.sum(params.log_body**2),
        "offset": jnp.mean(jnp.sum((100.0 * params.offset) ** 2, axis=-1)),
        "smooth": smoothness(q, data.frame_mask),
    }
    terms["total"] = (
        w.w3d * terms["3d"]
        + w.w2d * terms["2d"]
        + w.scale * terms["scale"]
        + w.body * terms["body"]
        + w.offset * terms["offset"]
        + w.smooth * terms["smooth"]
    )
    return terms


def total_loss(params: FitParams, data: FitData, model: BodyModel) -> Float[Array, ""]:
    return loss_terms(params, data, model)["total"]
