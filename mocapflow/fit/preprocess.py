"""Keypoints made consistent over time before a fit: left/right swaps undone, one depth branch per limb, low-pass.

Run on the dense, mapped keypoint arrays of one video (``prepare`` in :mod:`mocapflow.fit.fitting`), in this order:

1. **Left/right swaps** (:mod:`mocapflow.fit.swap`): frames where the pose model exchanged the left and right
   labels of the legs, arms or face are relabelled.
2. **Depth branches** (:func:`consistent_depths`): a monocular model sometimes mirrors a limb segment's camera depth
   about its proximal joint (the knee in front of the hip in one frame, behind it in the next: the image is the
   same). For each limb (thigh + shank, upper arm + forearm) and frame, each of the four branches (as observed, either
   segment's depth mirrored, both) is scored; the track takes the sequence of least total cost (Viterbi): a segment's
   direction changing between consecutive frames costs its change, mirroring an observation costs
   :data:`FLIP_COST` times its 3D weight (confidence ** ``CONF_POWER_3D``), so a confident depth is kept and a
   brief or unconfident excursion to the other branch is brought back. The minimum is global: the same choice for
   the track played backwards.
3. **Low-pass** (:func:`lowpass`): a zero-phase 2nd-order Butterworth filter (forward-backward, Gustafsson's initial
   conditions: the same output for the track played backwards) at ``cutoff_hz`` over each run of consecutive
   usable frames of each keypoint, 2D and 3D (camera frame; the fit takes 3D root-relative). ``cutoff_hz``
   is the filter's -6 dB point (forward-backward doubles the attenuation of the -3 dB design); 6 Hz is the common
   choice for human movement (Winter, *Biomechanics and Motor Control of Human Movement*).

Pure numpy/scipy; every step is a function of the whole track (non-causal).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.fit.swap import SwapReport, undo_swaps

logger = logging.getLogger(__name__)

FLIP_COST = 0.05  # per mirrored segment and frame, x its 3D weight (direction-change units: 2 = reversed)
CONF_POWER = 4.0  # the 3D weight of an observation is conf ** CONF_POWER (as the loss's CONF_POWER_3D)
MIN_RUN_FRAMES = 8  # shorter runs of usable frames are left unfiltered
# (proximal body, distal body, sites of the proximal joint, middle joint, end) per limb
LIMBS: tuple[tuple[str, str, tuple[str, str, str]], ...] = (
    ("femur_r", "tibia_r", ("rhip", "rkne", "rank")),
    ("femur_l", "tibia_l", ("lhip", "lkne", "lank")),
    ("humerus_r", "ulna_r", ("rsho", "relb", "rwri")),
    ("humerus_l", "ulna_l", ("lsho", "lelb", "lwri")),
)


@dataclass(frozen=True)
class PreprocessReport:
    """What preprocessing changed (for logs and the fit's metadata)."""

    swaps: SwapReport | None = None
    depth_flips: dict[str, int] = field(default_factory=dict)  # limb -> frames with a segment mirrored
    cutoff_hz: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "swapped_frames": self.swaps.frames_swapped if self.swaps is not None else {},
            "depth_flipped_frames": dict(self.depth_flips),
            "lowpass_cutoff_hz": self.cutoff_hz,
        }


def _subtree(model: Any, body: str) -> set[int]:
    names = model.body_names
    root = names.index(body)
    out = {root}
    changed = True
    while changed:
        changed = False
        for i, b in enumerate(model.bodies):
            if i not in out and b.parent in out:
                out.add(i)
                changed = True
    return out


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def consistent_depths(
    kp3d: NDArray[np.floating],
    conf: NDArray[np.floating],
    site_names: Sequence[str],
    site_bodies: Sequence[int],
    model: Any,
    flip_cost: float = FLIP_COST,
) -> tuple[NDArray[np.float64], dict[str, int]]:
    """``kp3d`` [T, J, 3] (camera frame, depth = last axis) with each limb on one depth branch over time (module
    docstring, step 2); returns it and, per limb, the number of frames where a segment was mirrored."""
    out = np.array(kp3d, np.float64, copy=True)
    conf = np.asarray(conf, np.float64)
    valid = (conf > 0) & np.isfinite(out).all(-1)
    names = list(site_names)
    flips: dict[str, int] = {}
    hyps = np.array([(1, 1), (-1, 1), (1, -1), (-1, -1)], np.float64)  # depth sign of (segment 1, segment 2)
    for prox, dist, joints in LIMBS:
        if (
            prox not in model.body_names
            or dist not in model.body_names
            or not all(j in names for j in joints)
        ):
            continue
        c0, c1, c2 = (names.index(j) for j in joints)
        sub1, sub2 = _subtree(model, prox), _subtree(model, dist)
        moved1 = [k for k, b in enumerate(site_bodies) if b in sub1 and k != c0]  # follow the middle joint
        moved2 = [k for k, b in enumerate(site_bodies) if b in sub2 and k not in (c0, c1)]  # follow the end
        ok = valid[:, [c0, c1, c2]].all(1)
        rows = np.flatnonzero(ok)
        if rows.size < 3:
            continue
        p = out[rows][:, [c0, c1, c2]]
        v1, v2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 1]  # [R, 3]
        # segment directions under each branch [H, R, 3]
        s1 = np.broadcast_to(v1, (4, *v1.shape)).copy()
        s2 = np.broadcast_to(v2, (4, *v2.shape)).copy()
        s1[..., 2] *= hyps[:, 0, None]
        s2[..., 2] *= hyps[:, 1, None]
        u1, u2 = _unit(s1), _unit(s2)
        w = conf[rows][:, [c1, c2]] ** CONF_POWER  # [R, 2]
        unary = flip_cost * ((hyps[:, None, :] < 0) * w[None]).sum(-1)  # [H, R]
        # Viterbi over consecutive usable frames
        cost = unary[:, 0].copy()
        back = np.zeros((rows.size, 4), np.int64)
        for k in range(1, rows.size):
            step = np.linalg.norm(u1[:, None, k - 1] - u1[None, :, k], axis=-1) + np.linalg.norm(
                u2[:, None, k - 1] - u2[None, :, k], axis=-1
            )  # [previous branch, branch]
            total = cost[:, None] + step
            back[k] = np.argmin(total, axis=0)
            cost = total[back[k], np.arange(4)] + unary[:, k]
        path = np.zeros(rows.size, np.int64)
        path[-1] = int(np.argmin(cost))
        for k in range(rows.size - 1, 0, -1):
            path[k - 1] = back[k, path[k]]
        for k in np.flatnonzero(path):
            t = rows[k]
            f1, f2 = hyps[path[k]]
            if f1 < 0:
                out[t, moved1, 2] += -2.0 * v1[k, 2]
            if f2 < 0:
                out[t, moved2, 2] += -2.0 * v2[k, 2]
        flips[prox] = int((path > 0).sum())
    return out, flips


def lowpass(
    values: NDArray[np.floating], ok: NDArray[np.bool_], fps: float, cutoff_hz: float
) -> NDArray[np.float64]:
    """Zero-phase Butterworth low-pass (module docstring, step 3) of ``values`` [T, J, C] over each run of
    consecutive ``ok`` [T, J] frames of each keypoint (runs shorter than :data:`MIN_RUN_FRAMES` unchanged)."""
    from scipy.signal import butter, filtfilt

    out = np.array(values, np.float64, copy=True)
    if cutoff_hz <= 0 or cutoff_hz >= 0.5 * fps:
        return out
    # one pass is at -3 dB at cutoff_hz; forward-backward squares the magnitude response: -6 dB there
    b, a = butter(2, cutoff_hz / (0.5 * fps))
    for j in range(out.shape[1]):
        good = ok[:, j] & np.isfinite(out[:, j]).all(-1)
        edges = np.flatnonzero(np.diff(np.r_[0, good.astype(np.int8), 0]))
        for s, e in zip(edges[::2], edges[1::2], strict=True):
            if e - s >= MIN_RUN_FRAMES:
                out[s:e, j] = filtfilt(b, a, out[s:e, j], axis=0, method="gust")
    return out


def preprocess_keypoints(
    kp2d: NDArray[np.floating],
    kp3d: NDArray[np.floating],
    conf: NDArray[np.floating],
    site_index: Sequence[int],
    model: Any,
    fps: float,
    *,
    swaps: bool = True,
    depth_branches: bool = True,
    cutoff_hz: float | None = 6.0,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], PreprocessReport]:
    """The three steps of the module docstring on one video's dense, mapped arrays (kp2d [T, J, 2] px, kp3d
    [T, J, 3] camera mm, conf [T, J]; ``site_index``: the body-model site of each column). ``cutoff_hz`` None or 0:
    no low-pass. Returns float32 arrays and what changed."""
    names = [model.sites[s].name for s in site_index]
    bodies = [model.sites[s].body for s in site_index]
    report_swaps = None
    if swaps:
        kp2d, kp3d, conf, report_swaps = undo_swaps(kp2d, kp3d, conf, names)
    flips: dict[str, int] = {}
    has3d = bool(np.isfinite(kp3d).any())
    if depth_branches and has3d:
        kp3d, flips = consistent_depths(kp3d, conf, names, bodies, model)
        if any(flips.values()):
            logger.info("limb depths brought onto one branch (frames per limb): %s", flips)
    if cutoff_hz:
        ok2 = (conf > 0) & np.isfinite(kp2d).all(-1)
        kp2d = lowpass(kp2d, ok2, fps, cutoff_hz)
        if has3d:
            ok3 = (conf > 0) & np.isfinite(kp3d).all(-1)
            kp3d = lowpass(kp3d, ok3, fps, cutoff_hz)
    report = PreprocessReport(report_swaps, flips, cutoff_hz or None)
    return (
        np.asarray(kp2d, np.float32),
        np.asarray(kp3d, np.float32),
        np.asarray(conf, np.float32),
        report,
    )
