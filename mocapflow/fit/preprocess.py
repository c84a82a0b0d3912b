"""Keypoints made consistent over time before a fit: left/right swaps undone, optionally a zero-phase low-pass.

Run on the dense, mapped keypoint arrays of one video (``prepare`` in :mod:`mocapflow.fit.fitting`, after the
keypoint noise that sets the fit's smoothness weight is measured on the raw keypoints), in this order:

1. **Left/right swaps** (:mod:`mocapflow.fit.swap`): frames where the pose model exchanged the left and right
   labels of the legs, arms or face are relabelled.
2. **Low-pass** (:func:`lowpass`): a zero-phase 2nd-order Butterworth filter (forward-backward, Gustafsson's initial
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


@dataclass(frozen=True)
class PreprocessReport:
    """What preprocessing changed (for logs and the fit's metadata)."""

    swaps: SwapReport | None = None
    cutoff_hz: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "swapped_frames": self.swaps.frames_swapped if self.swaps is not None else {},
            "lowpass_cutoff_hz": self.cutoff_hz,
        }


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
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], PreprocessReport]:
    """The steps of the module docstring on one video's dense, mapped arrays (kp2d [T, J, 2] px, kp3d
    [T, J, 3] camera mm, conf [T, J]; ``site_index``: the body-model site of each column). ``cutoff_hz`` None or 0:
    no low-pass. Returns float32 arrays and what changed."""
    names = [model.sites[s].name for s in site_index]
    report_swaps = None
    if swaps:
        kp2d, kp3d, conf, report_swaps = undo_swaps(kp2d, kp3d, conf, names)
    has3d = bool(np.isfinite(kp3d).any())
    if cutoff_hz:
        ok2 = (conf > 0) & np.isfinite(kp2d).all(-1)
        kp2d = lowpass(kp2d, ok2, fps, cutoff_hz)
        if has3d:
            ok3 = (conf > 0) & np.isfinite(kp3d).all(-1)
            kp3d = lowpass(kp3d, ok3, fps, cutoff_hz)
    report = PreprocessReport(report_swaps, cutoff_hz or None)
    return (
        np.asarray(kp2d, np.float32),
        np.asarray(kp3d, np.float32),
        np.asarray(conf, np.float32),
        report,
    )
