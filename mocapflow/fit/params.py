"""Fit parameters as frozen equinox modules: joint trajectories over time, body scales and per-site offsets.

Every DOF is optimised in an unconstrained variable ``x``. Limited DOFs map through ``lower + (upper - lower) *
sigmoid(x)`` so a fit can never leave the joint limits; free DOFs (root translations, full-circle rotations such as
``pelvis_rotation``) are ``q = x`` (radians / metres).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float
from numpy.typing import NDArray

from models.body import BodyModel

_EDGE = 1e-3  # fraction of a DOF's range kept away from its limits when inverting the sigmoid


def bounded_mask(model: BodyModel) -> NDArray[np.bool_]:
    """True for DOFs fitted through the sigmoid: hinges with less than a full turn, slides of non-root bodies."""
    root_dofs = {d for b in model.bodies if b.parent < 0 for d in b.dofs}
    out = np.zeros(model.n_dofs, dtype=bool)
    for i, d in enumerate(model.dofs):
        if d.kind == "hinge":
            out[i] = (d.upper - d.lower) < 2.0 * math.pi - 1e-6
        else:
            out[i] = i not in root_dofs
    return out


class Limits(eqx.Module):
    """Joint limits and which DOFs they bound; maps unconstrained ``x`` to joint values ``q``."""

    lower: Float[Array, " D"]
    upper: Float[Array, " D"]
    bounded: Bool[Array, " D"]

    @classmethod
    def of(cls, model: BodyModel) -> Limits:
        return cls(
            jnp.asarray(model.lower, jnp.float32),
            jnp.asarray(model.upper, jnp.float32),
            jnp.asarray(bounded_mask(model)),
        )

    def to_q(self, x: Float[Array, "*batch D"]) -> Float[Array, "*batch D"]:
        squashed = self.lower + (self.upper - self.lower) * jax.nn.sigmoid(x)
        return jnp.where(self.bounded, squashed, x)


def q_to_x(q: NDArray[np.floating], model: BodyModel) -> NDArray[np.float32]:
    """Inverse of :meth:`Limits.to_q` (numpy); values at or beyond a limit land just inside it."""
    lo, hi, bounded = model.lower, model.upper, bounded_mask(model)
    span = np.where(hi > lo, hi - lo, 1.0)
    frac = np.clip((np.asarray(q, np.float64) - lo) / span, _EDGE, 1.0 - _EDGE)
    x = np.where(bounded, np.log(frac) - np.log1p(-frac), q)
    return x.astype(np.float32)


class Trajectory(eqx.Module):
    """Unconstrained joint variables per frame, ``values(basis) -> x[T, D]``."""

    def values(self, basis: Float[Array, "T K"]) -> Float[Array, "T D"]:
        raise NotImplementedError


class BSplineTrajectory(Trajectory):
    """Cubic B-spline over time: ``x = basis @ coef`` (the basis is data, built by :func:`bspline_basis`)."""

    coef: Float[Array, "K D"]

    def values(self, basis: Float[Array, "T K"]) -> Float[Array, "T D"]:
        return basis @ self.coef


class FrameTrajectory(Trajectory):
    """One free value per frame and DOF (smoothness comes from the loss only)."""

    x: Float[Array, "T D"]

    def values(self, basis: Float[Array, "T K"]) -> Float[Array, "T D"]:
        del basis
        return self.x


class FitParams(eqx.Module):
    """Everything a fit optimises for one video."""

    trajectory: Trajectory
    log_scale: Float[Array, " G"]  # per scale group
    log_body: Float[Array, " B"]  # per-body refinement of its group's scale (regularised toward 0)
    offset: Float[Array, "J 3"]  # per mapped keypoint, metres, in the frame of the body that carries its site

    def group_scale(self) -> Float[Array, " G"]:
        return jnp.exp(self.log_scale)

    def body_scale(self, group_matrix: Float[Array, "B G"]) -> Float[Array, " B"]:
        """Scale of every body: its group's scale times its own refinement."""
        return (group_matrix @ self.group_scale()) * jnp.exp(self.log_body)

    def scaled(self, trajectory: Array | float, scale: Array | float, offset: Array | float) -> FitParams:
        """Each group of leaves multiplied by its factor (used on Adam's updates: per-group step sizes)."""
        return FitParams(
            trajectory=jax.tree.map(lambda a: trajectory * a, self.trajectory),
            log_scale=scale * self.log_scale,
            log_body=scale * self.log_body,
            offset=offset * self.offset,
        )


def init_bspline(
    x_frames: NDArray[np.floating],
    basis: NDArray[np.floating],
    weights: NDArray[np.floating],
    ridge: float = 1e-3,
) -> BSplineTrajectory:
    """Least-squares spline through per-frame values (frames weighted by ``weights``; unused columns stay 0)."""
    w = np.asarray(weights, np.float64)[:, None]
    b = np.asarray(basis, np.float64)
    a = b.T @ (w * b) + ridge * np.eye(b.shape[1])
    coef = np.linalg.solve(a, b.T @ (w * np.asarray(x_frames, np.float64)))
    coef[~np.any(b != 0.0, axis=0)] = 0.0
    return BSplineTrajectory(jnp.asarray(coef, jnp.float32))
