"""Synthetic subjects: stature, per-body anisotropic proportions with left/right differences, marker placement.

The fitter scales bodies by the model's scale groups (one factor per group, shared by both sides and all three axes);
a synthetic subject instead has an independent factor per body and per axis, so a fit never sees its own model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.synth.kinematics import FrameFk
from models.body import REFERENCE_STATURE_M, BodyModel

logger = logging.getLogger(__name__)

STATURE_RANGE_M = (1.5, 1.95)


@dataclass(frozen=True, eq=False)
class Subject:
    """One synthetic person: ``body_scale`` [B, 3] per body and axis, ``site_offset`` [S, 3] metres (body frame)."""

    subject_id: str
    body_scale: NDArray[np.float64]
    site_offset: NDArray[np.float64]
    stature_m: float

    def to_dict(self, model: BodyModel) -> dict[str, Any]:
        """JSON-ready description (names beside the arrays, so it reads without the model)."""
        return {
            "subject_id": self.subject_id,
            "stature_m": self.stature_m,
            "body_names": list(model.body_names),
            "body_scale": np.round(self.body_scale, 9).tolist(),
            "site_names": list(model.site_names),
            "site_offset_m": np.round(self.site_offset, 9).tolist(),
        }


def stature(fk: FrameFk, body_scale: NDArray[np.float64] | None) -> float:
    """Stature (m) of a scaled model: the reference stature times the zero-pose height span of its sites
    (lowest foot site to highest head site) relative to the unscaled model's span."""
    zero = np.zeros((2, fk.model.n_dofs))
    y = fk(zero, body_scale)[0, :, 1]
    y1 = fk(zero)[0, :, 1]
    return REFERENCE_STATURE_M * float(y.max() - y.min()) / float(y1.max() - y1.min())


def sample_subject(
    fk: FrameFk,
    rng: np.random.Generator,
    subject_id: str,
    *,
    stature_range_m: tuple[float, float] = STATURE_RANGE_M,
    group_sd: float = 0.05,
    body_sd: float = 0.03,
    axis_sd: float = 0.04,
    offset_range_m: tuple[float, float] = (0.003, 0.010),
) -> Subject:
    """Draw a subject: uniform stature, then group x body x axis proportion factors (truncated normal, 2.5 sd).

    Left and right bodies draw their factors independently, so the sides differ. Every site gets an offset of
    uniform length in ``offset_range_m`` in a uniformly random direction.
    """
    lo, hi = stature_range_m
    if not 0 < lo <= hi:
        raise ValueError(f"stature_range_m must be 0 < low <= high, got {stature_range_m}")

    def factor(sd: float, shape: tuple[int, ...]) -> NDArray[np.float64]:
        return 1.0 + sd * np.clip(rng.standard_normal(shape), -2.5, 2.5)

    model = fk.model
    n_bodies, n_sites = len(model.bodies), len(model.sites)
    target = float(rng.uniform(lo, hi))
    group = factor(group_sd, (len(model.scale_groups),))
    per_body = group[[b.scale_group for b in model.bodies]] * factor(body_sd, (n_bodies,))
    scale = per_body[:, None] * factor(axis_sd, (n_bodies, 3))
    scale *= target / stature(fk, scale)  # stature is linear in a common factor (zero pose, root at origin)

    direction = rng.standard_normal((n_sites, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    offset = direction * rng.uniform(*offset_range_m, size=(n_sites, 1))
    return Subject(subject_id=subject_id, body_scale=scale, site_offset=offset, stature_m=stature(fk, scale))
