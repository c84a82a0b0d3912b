"""Metamorphic checks of a fit on real footage: relations that hold without ground truth.

A video made from one still photo (slow pan and zoom) shows a body whose joint angles are constant, so the fitted
angles must be too. The same video mirrored shows the mirror body, so its left angles must equal the original's
right ones and vice versa. The same video at half resolution, or played backwards, shows the same body, so the
fitted angles must agree frame by frame (time-reversed: with the frame order reversed).

Everything here is pure (numpy): it takes fit results (anything with ``q [N, D]``, ``observed [N]`` and
``model.dof_names``; :class:`~mocapflow.fit.fitting.FitResult` is one) or plain ``{dof: degrees[N]}`` mappings, and
returns the figures. Making the videos and running the pose model are the caller's job (a benchmark, a slow test,
``mocapflow validate``).

Figures, all in degrees, each the median over :data:`LIMB_DOFS` (both sides) of a per-DOF value:

- ``still_sd_deg``: standard deviation over the observed frames of the base video;
- ``mirror_deg``: mean absolute difference between the base angles and the mirrored video's angles with left and
  right swapped (the DOFs in :data:`LIMB_DOFS` are defined per side with mirrored axes, so no sign changes);
- ``half_deg``: mean absolute difference from the half-resolution video's angles;
- ``reverse_deg``: mean absolute difference from the time-reversed video's angles, reversed back;
- ``reencode_deg``: mean absolute difference from the same video decoded and encoded again (same frames, same order,
  the encoder the variants are made with). No target: it is the suite's floor. Every variant is such a re-encode,
  so each relation's figure holds this much that is not the relation's: what the pose model makes of pixel changes
  no one can see (on messi_pan 0.74 deg, cameraman_pan 1.20, basketball_pan 0.23, court_pan 1.79; H.264 crf 12).

Targets (issue 11): still <= 2, mirror <= 3, half <= 3, reverse <= 1. Beside the medians over every DOF (what the
targets are read on), ``medians_observed_deg`` leaves out the DOFs the base fit reports weakly observed
(:mod:`mocapflow.fit.spans`: the keypoints they move are doubted by the pose model, e.g. legs out of the picture),
which the outputs already mark as not measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

# Joint-angle DOFs the figures are taken over (hips, knees, ankles, shoulders, elbows), without the side suffix.
LIMB_DOFS: tuple[str, ...] = (
    "hip_flexion",
    "hip_adduction",
    "hip_rotation",
    "knee_angle",
    "ankle_angle",
    "arm_flex",
    "arm_add",
    "arm_rot",
    "elbow_flex",
)
TARGETS_DEG: dict[str, float] = {"still_sd_deg": 2.0, "mirror_deg": 3.0, "half_deg": 3.0, "reverse_deg": 1.0}


class _Fit(Protocol):
    q: NDArray[np.float64]
    observed: NDArray[np.bool_]

    @property
    def model(self) -> Any: ...


Angles = Mapping[str, NDArray[np.floating]]


def limb_dofs(sides: Sequence[str] = ("r", "l")) -> tuple[str, ...]:
    """The per-side DOF names the figures use (``hip_flexion_r``, ...)."""
    return tuple(f"{d}_{s}" for d in LIMB_DOFS for s in sides)


def mirror_name(dof: str) -> str:
    """``..._r`` <-> ``..._l``; other names unchanged."""
    if dof.endswith("_r"):
        return dof[:-2] + "_l"
    if dof.endswith("_l"):
        return dof[:-2] + "_r"
    return dof


def angles_deg(fit: _Fit | Angles, dofs: Sequence[str] | None = None) -> dict[str, NDArray[np.float64]]:
    """``{dof: degrees[N]}`` of a fit result (unobserved frames NaN) or a mapping (taken as degrees already)."""
    dofs = limb_dofs() if dofs is None else dofs
    if isinstance(fit, Mapping):
        return {d: np.asarray(fit[d], np.float64) for d in dofs if d in fit}
    names = list(fit.model.dof_names)
    obs = np.asarray(fit.observed, bool)
    out = {}
    for d in dofs:
        if d in names:
            out[d] = np.where(obs, np.degrees(np.asarray(fit.q)[:, names.index(d)]), np.nan)
    return out


def still_sd(fit: _Fit | Angles, dofs: Sequence[str] | None = None) -> dict[str, float]:
    """Per-DOF standard deviation (deg) over the observed frames."""
    return {
        d: float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
        for d, v in angles_deg(fit, dofs).items()
    }


def paired_difference(
    base: _Fit | Angles,
    other: _Fit | Angles,
    *,
    mirror: bool = False,
    reverse: bool = False,
    dofs: Sequence[str] | None = None,
) -> dict[str, float]:
    """Per-DOF mean absolute difference (deg) between two fits of related videos, over frames both observed.

    ``mirror``: ``other`` is the mirrored video (its left DOFs are compared with the base's right ones);
    ``reverse``: ``other`` is the time-reversed video (its frames are compared in reverse order). The two must
    cover the same number of frames (they come from the same source frames).
    """
    a = angles_deg(base, dofs)
    names = list(a)
    b = angles_deg(other, [mirror_name(d) if mirror else d for d in names])
    out = {}
    for d in names:
        vb = b.get(mirror_name(d) if mirror else d)
        if vb is None:
            continue
        va = a[d]
        if reverse:
            vb = vb[::-1]
        if len(va) != len(vb):
            raise ValueError(
                f"paired fits cover {len(va)} and {len(vb)} frames; metamorphic pairs must come from the same "
                "source frames (same length)"
            )
        diff = np.abs(va - vb)
        out[d] = float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan")
    return out


def _median(values: Mapping[str, float]) -> float:
    v = np.array([x for x in values.values() if np.isfinite(x)])
    return float(np.median(v)) if v.size else float("nan")


@dataclass(frozen=True)
class MetamorphicFigures:
    """Per-DOF figures (deg) of each relation and their medians; a relation not measured is absent."""

    per_dof: dict[str, dict[str, float]] = field(default_factory=dict)  # relation -> dof -> deg
    weak_dofs: tuple[str, ...] = ()  # the base fit's weakly observed DOFs (FitResult.weak_dofs)

    @property
    def medians(self) -> dict[str, float]:
        return {k: _median(v) for k, v in self.per_dof.items()}

    @property
    def medians_observed(self) -> dict[str, float]:
        """The medians without the weakly observed DOFs (the mirror relation also without the DOFs it pairs with
        them)."""
        weak = set(self.weak_dofs)
        paired = weak | {mirror_name(d) for d in weak}
        return {
            k: _median({d: x for d, x in v.items() if d not in (paired if k == "mirror_deg" else weak)})
            for k, v in self.per_dof.items()
        }

    def passed(self, targets: Mapping[str, float] = TARGETS_DEG) -> dict[str, bool]:
        """Relation -> median within its target."""
        return {k: bool(v <= targets[k]) for k, v in self.medians.items() if k in targets}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: medians, targets, pass flags and the per-DOF figures (rounded to 0.01 deg)."""
        return {
            "medians_deg": {k: round(v, 2) for k, v in self.medians.items()},
            "medians_observed_deg": {k: round(v, 2) for k, v in self.medians_observed.items()},
            "weak_dofs": list(self.weak_dofs),
            "targets_deg": {k: TARGETS_DEG[k] for k in self.per_dof if k in TARGETS_DEG},
            "passed": self.passed(),
            "per_dof_deg": {k: {d: round(x, 2) for d, x in v.items()} for k, v in self.per_dof.items()},
        }


def metamorphic_figures(
    base: _Fit | Angles,
    *,
    mirrored: _Fit | Angles | None = None,
    half: _Fit | Angles | None = None,
    reversed_: _Fit | Angles | None = None,
    reencoded: _Fit | Angles | None = None,
    dofs: Sequence[str] | None = None,
) -> MetamorphicFigures:
    """All the relations that were measured (the base video is always a still photo: its SD is always reported)."""
    per: dict[str, dict[str, float]] = {"still_sd_deg": still_sd(base, dofs)}
    if mirrored is not None:
        per["mirror_deg"] = paired_difference(base, mirrored, mirror=True, dofs=dofs)
    if half is not None:
        per["half_deg"] = paired_difference(base, half, dofs=dofs)
    if reversed_ is not None:
        per["reverse_deg"] = paired_difference(base, reversed_, reverse=True, dofs=dofs)
    if reencoded is not None:
        per["reencode_deg"] = paired_difference(base, reencoded, dofs=dofs)
    weak = tuple(d for d in getattr(base, "weak_dofs", {}) if d in per["still_sd_deg"])
    return MetamorphicFigures(per, weak)


def keypoint_angle_deg(
    kp3d: NDArray[np.floating], conf: NDArray[np.floating], joint_names: Sequence[str], a: str, b: str, c: str
) -> NDArray[np.float64]:
    """The angle (deg) at keypoint ``b`` between ``a`` and ``c`` from 3D keypoints [N, J, 3], per frame (NaN if any
    of the three is missing): the input's own variability, to compare the fit's with."""
    idx = [list(joint_names).index(n) for n in (a, b, c)]
    p = np.asarray(kp3d, np.float64)[:, idx]
    ok = (np.asarray(conf)[:, idx] > 0).all(1) & np.isfinite(p).all((1, 2))
    u, v = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.where(ok, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), np.nan)
