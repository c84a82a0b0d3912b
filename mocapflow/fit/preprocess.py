"""Keypoints made consistent over time before a fit: left/right swaps undone, optionally a zero-phase low-pass.

Run on the dense, mapped keypoint arrays of one video (``prepare`` in :mod:`mocapflow.fit.fitting`, after the
keypoint noise that sets the fit's smoothness weight is measured on the raw keypoints), in this order:

1. **Left/right swaps** (:mod:`mocapflow.fit.swap`): frames where the pose model exchanged the left and right
   labels of the legs, arms or face are relabelled.
2. **Rigid-distance outliers** (:func:`rigid_outliers`): keypoints on one rigid body of the model keep their
   distances. In each frame, of a body's visible keypoints the largest set whose 3D distances all agree with their
   medians over the video is kept; the others lose their 3D in that frame (their 2D stays). In the demo's squat,
   partly hidden pelvis markers placed 16-35 cm off in depth with confidence 1 tilted the pelvis +30 deg and put the
   hips 40-60 deg off the truth for half a second: the fit explained them by moving the body, so their residuals
   never marked them as outliers.
3. **Low-pass** (:func:`lowpass`): a zero-phase 2nd-order Butterworth filter (forward-backward, Gustafsson's initial
   conditions: the same output for the track played backwards) at ``cutoff_hz`` over each run of consecutive
   usable frames of each keypoint, 2D and 3D (camera frame; the fit takes 3D root-relative). ``cutoff_hz``
   is the filter's -6 dB point (forward-backward doubles the attenuation of the -3 dB design); 6 Hz is the common
   choice for human movement (Winter, *Biomechanics and Motor Control of Human Movement*).

Pure numpy/scipy; every step is a function of the whole track (non-causal).

Measured on the metamorphic suite (BlazePose on still-photo clips, ``mocapflow validate metamorphic``): the 6 Hz
low-pass lowered the still-photo SD on astronaut_pan (0.79 -> 0.56 deg) and basketball_pan (2.11 -> 1.97) but
raised it on messi_pan (3.64 -> 4.15), where nothing was swapped: the fitted trajectories already keep motion only
up to knots/2 (4 Hz), and a filtered input shifts the fit's 2D/3D balance (measured from residual spreads). So it is
off by default (``fit_lowpass_hz``). A per-limb depth-branch choice over time (Viterbi over the four
mirrored-depth hypotheses of thigh/shank, upper arm/forearm) was tried here too and dropped: on messi_pan it raised
the input's own knee-angle SD (left 8.6 -> 10.6 deg). Dropping keypoints whose 2D position lies outside the
image (messi_pan's right foot leaves the frame) was measured and not kept: messi_pan still/mirror/half/reverse
3.64/6.47/3.12/2.42 -> 3.63/6.27/3.33/2.27 deg, basketball_pan 2.11/4.05/3.67/1.20 -> 2.04/3.88/3.49/1.27.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.fit.swap import SwapReport, undo_swaps

logger = logging.getLogger(__name__)

MIN_RUN_FRAMES = 8  # shorter runs of usable frames are left unfiltered
# rigid-distance outliers: two keypoints of one body agree when their distance is within the larger of
# RIGID_REL x its median and RIGID_NOISE x the keypoint noise x sqrt(2) (the noise of a difference)
RIGID_REL = 0.2
RIGID_NOISE = 4.0
RIGID_MIN_FRAMES = 5  # a pair seen together in fewer frames has no reference distance
RIGID_MAX_KEYPOINTS = 8  # bodies with more keypoints are not checked (the search is over subsets)


@dataclass(frozen=True)
class PreprocessReport:
    """What preprocessing changed (for logs and the fit's metadata)."""

    swaps: SwapReport | None = None
    cutoff_hz: float | None = None
    rigid_outliers_3d: int = 0  # 3D observations dropped by rigid_outliers

    def summary(self) -> dict[str, Any]:
        return {
            "swapped_frames": self.swaps.frames_swapped if self.swaps is not None else {},
            "lowpass_cutoff_hz": self.cutoff_hz,
            "rigid_outliers_3d": self.rigid_outliers_3d,
        }


def rigid_outliers(
    kp3d: NDArray[np.floating], conf: NDArray[np.floating], body_of: Sequence[int], noise_mm: float
) -> NDArray[np.bool_]:
    """[T, J] True where a keypoint's 3D is off its rigid body (module docstring, step 2). Per body with 3 to
    :data:`RIGID_MAX_KEYPOINTS` keypoints and per frame: the largest subset of the visible keypoints whose pairwise
    distances all agree with the pairs' medians (tolerance: :data:`RIGID_REL`, :data:`RIGID_NOISE`); when exactly
    one subset of that size exists and it leaves some visible keypoints out, those are outliers (two equally good
    subsets, or fewer than two keypoints agreeing, decide nothing)."""
    from itertools import combinations

    kp3d = np.asarray(kp3d, np.float64)
    n_frames, n_kp = kp3d.shape[:2]
    ok = (np.asarray(conf) > 0) & np.isfinite(kp3d).all(-1)
    out = np.zeros((n_frames, n_kp), bool)
    noise_tol = RIGID_NOISE * np.sqrt(2.0) * (noise_mm if np.isfinite(noise_mm) else 0.0)
    bodies = np.asarray(body_of)
    for body in np.unique(bodies):
        cols = np.flatnonzero(bodies == body)
        k = len(cols)
        if not 3 <= k <= RIGID_MAX_KEYPOINTS:
            continue
        vis = ok[:, cols]  # [T, k]
        agree = np.zeros((n_frames, k, k), bool)  # pairs seen together whose distance agrees
        for a, b in combinations(range(k), 2):
            both = vis[:, a] & vis[:, b]
            if both.sum() < RIGID_MIN_FRAMES:
                continue
            d = np.linalg.norm(kp3d[:, cols[a]] - kp3d[:, cols[b]], axis=-1)
            ref = float(np.median(d[both]))
            agree[:, a, b] = agree[:, b, a] = both & (np.abs(d - ref) <= max(RIGID_REL * ref, noise_tol))
        best_size = np.zeros(n_frames, int)
        n_best = np.zeros(n_frames, int)
        best = np.zeros((n_frames, k), bool)
        for size in range(2, k + 1):
            for subset in combinations(range(k), size):
                ok_t = vis[:, list(subset)].all(axis=1)
                for a, b in combinations(subset, 2):
                    ok_t &= agree[:, a, b]
                bigger, tie = ok_t & (size > best_size), ok_t & (size == best_size)
                n_best = np.where(bigger, 1, np.where(tie, n_best + 1, n_best))
                best_size = np.where(bigger, size, best_size)
                member = np.zeros(k, bool)
                member[list(subset)] = True
                best = np.where(bigger[:, None], member[None], best)
        decided = (n_best == 1) & (best_size >= 2)
        out[:, cols] = decided[:, None] & vis & ~best
    return out


def lowpass(
    values: NDArray[np.floating], ok: NDArray[np.bool_], fps: float, cutoff_hz: float
) -> NDArray[np.float64]:
    """Zero-phase Butterworth low-pass (module docstring, step 2) of ``values`` [T, J, C] over each run of
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
    cutoff_hz: float | None = None,
    noise_mm: float = float("nan"),
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], PreprocessReport]:
    """The steps of the module docstring on one video's dense, mapped arrays (kp2d [T, J, 2] px, kp3d
    [T, J, 3] camera mm, conf [T, J]; ``site_index``: the body-model site of each column). ``cutoff_hz`` None or 0:
    no low-pass; ``noise_mm``: the keypoints' noise (per coordinate), which widens the rigid-distance tolerance.
    Returns float32 arrays and what changed."""
    names = [model.sites[s].name for s in site_index]
    report_swaps = None
    if swaps:
        kp2d, kp3d, conf, report_swaps = undo_swaps(kp2d, kp3d, conf, names)
    has3d = bool(np.isfinite(kp3d).any())
    n_rigid = 0
    if has3d:
        off = rigid_outliers(kp3d, conf, [model.sites[s].body for s in site_index], noise_mm)
        n_rigid = int(off.sum())
        if n_rigid:
            kp3d = np.where(off[..., None], np.nan, kp3d)
            logger.debug("%d 3D keypoints off their rigid bodies dropped (2D kept)", n_rigid)
    if cutoff_hz:
        ok2 = (conf > 0) & np.isfinite(kp2d).all(-1)
        kp2d = lowpass(kp2d, ok2, fps, cutoff_hz)
        if has3d:
            ok3 = (conf > 0) & np.isfinite(kp3d).all(-1)
            kp3d = lowpass(kp3d, ok3, fps, cutoff_hz)
    report = PreprocessReport(report_swaps, cutoff_hz or None, n_rigid)
    return (
        np.asarray(kp2d, np.float32),
        np.asarray(kp3d, np.float32),
        np.asarray(conf, np.float32),
        report,
    )
