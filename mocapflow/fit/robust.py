"""Outlier weights for a fit's observations (iteratively reweighted robust fitting).

Monocular keypoints carry gross errors that no noise model of a few centimetres covers: the depth of a partly
hidden marker off by a metre, a limb swapped with its twin, a keypoint on the wrong person. Huber bounds their pull
but does not remove it, and many of them together bend the whole fit. Once the fit has settled on the bulk of the
data, every observation's residual is compared with the spread of all residuals of its kind (2D or 3D), and it is
given a Geman-McClure weight: about 1 well inside the spread, falling as ``(spread / residual)^4`` far outside it.
Repeating this a second time, after the fit has moved away from the outliers, sharpens the split.

The spread is the median residual norm, floored (``floor_2d_px``, ``floor_3d_cm``) so that near-exact keypoints are
never split into inliers and "outliers" that differ by model error alone. 2D residuals are in reference px, as the
2D loss sees them (:func:`mocapflow.fit.loss.reference_px_per_px`).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from numpy.typing import NDArray

from mocapflow.fit.loss import FitData, evaluate, reference_px_per_px
from mocapflow.fit.params import FitParams
from models.body import BodyModel

MIN_WEIGHT = (
    1e-6  # robust weights stay > 0, so a down-weighted observation is still measured at the next reweight
)


@dataclass(frozen=True)
class RobustOptions:
    """``cutoff``: residuals of ``cutoff`` x the spread get weight 1/4; ``floor_*``: the smallest spread used."""

    cutoff: float = 2.5
    floor_2d_px: float = 1.0  # reference px
    floor_3d_cm: float = 1.0

    def __post_init__(self) -> None:
        if self.cutoff <= 0 or self.floor_2d_px <= 0 or self.floor_3d_cm <= 0:
            raise ValueError(f"invalid robust options {self}: cutoff and floors must be > 0")


@dataclass(frozen=True)
class RobustStats:
    """What one reweighting found (for logs and the fit's figures)."""

    spread_2d_ref_px: float  # reference px (mocapflow.fit.loss.F_REF_PX)
    spread_3d_cm: float
    outliers_2d: float  # fraction of valid 2D observations with weight < 0.5
    outliers_3d: float


def observation_residuals(
    params: FitParams, data: FitData, model: BodyModel
) -> tuple[Float[Array, "T J"], Float[Array, "T J"], Float[Array, "T J"], Float[Array, "T J"]]:
    """Residual norms (2D px, 3D cm) of every observation and the weights they currently pull with (from the fit's
    one compiled forward pass, :func:`~mocapflow.fit.loss.evaluate`)."""
    ev = evaluate(params, data, model)
    return ev.residual_2d_px, ev.weight_2d, ev.residual_3d_cm, ev.weight_3d


def geman_mcclure_weights(
    residual: NDArray[np.floating], spread: float, cutoff: float
) -> NDArray[np.float32]:
    """``1 / (1 + (r / (cutoff * spread))^2)^2``, floored at :data:`MIN_WEIGHT`."""
    u = np.asarray(residual, np.float64) / (cutoff * spread)
    return np.maximum(1.0 / (1.0 + u * u) ** 2, MIN_WEIGHT).astype(np.float32)


def _spread(residual: NDArray[np.floating], valid: NDArray[np.bool_], floor: float) -> float:
    return max(float(np.median(residual[valid])), floor) if valid.any() else floor


def reweight(
    params: FitParams, data: FitData, model: BodyModel, options: RobustOptions
) -> tuple[FitData, RobustStats]:
    """New robust weights for ``data`` from the residuals at ``params``."""
    r2, w2, r3, w3 = (np.asarray(a) for a in observation_residuals(params, data, model))
    r2 = r2 * float(reference_px_per_px(np.asarray(data.intrinsics, np.float64)))  # as the 2D loss sees them
    valid2, valid3 = w2 > 0, w3 > 0
    s2 = _spread(r2, valid2, options.floor_2d_px)
    s3 = _spread(r3, valid3, options.floor_3d_cm)
    rob2 = geman_mcclure_weights(r2, s2, options.cutoff)
    rob3 = geman_mcclure_weights(r3, s3, options.cutoff)
    stats = RobustStats(
        spread_2d_ref_px=s2,
        spread_3d_cm=s3,
        outliers_2d=float(np.mean(rob2[valid2] < 0.5)) if valid2.any() else 0.0,
        outliers_3d=float(np.mean(rob3[valid3] < 0.5)) if valid3.any() else 0.0,
    )
    new = eqx.tree_at(lambda d: (d.robust2d, d.robust3d), data, (jnp.asarray(rob2), jnp.asarray(rob3)))
    return new, stats
