"""Frame buckets and the cubic B-spline basis over time (numpy; built once per video, outside JIT)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def bucket_frames(n_frames: int) -> int:
    """Padded frame count: a multiple of 32 below 256 frames (at least 64), then of 1/8 of the power of two below.

    Videos whose lengths fall in one bucket share compiled code; padding wastes at most 32 frames or 12.5 %
    (every padded frame costs as much per optimiser step as a real one: a 5 s video at 30 fps pads to 160, not 192).
    """
    if n_frames < 1:
        raise ValueError(f"a fit needs at least one frame, got n_frames={n_frames}")
    if n_frames <= 64:
        return 64
    step = max(32, 2 ** (int(math.floor(math.log2(n_frames))) - 3))
    return int(math.ceil(n_frames / step) * step)


def cardinal_cubic_bspline(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The uniform cubic B-spline centred at 0 (support [-2, 2], integer shifts sum to 1)."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    inner = 2.0 / 3.0 - a**2 + 0.5 * a**3
    outer = (2.0 - a) ** 3 / 6.0
    return np.where(a < 1.0, inner, np.where(a < 2.0, outer, 0.0))


def n_control_points(n_frames: int, knot_spacing_frames: float) -> int:
    """Control points covering frames 0..n_frames-1 (one extra on each side for the cubic's support)."""
    return int(math.ceil((n_frames - 1) / knot_spacing_frames - 1e-9)) + 3


def knot_offset(n_frames: int, knot_spacing_frames: float) -> float:
    """Frame of control point 1 (in (-h, 0]): the knots of :func:`bspline_basis` centred on the frame range."""
    k = n_control_points(n_frames, knot_spacing_frames)
    return 0.5 * ((n_frames - 1) - (k - 3) * knot_spacing_frames)


def bspline_basis(
    n_frames: int, fps: float, knots_per_second: float, n_columns: int | None = None
) -> NDArray[np.float32]:
    """Basis matrix [n_frames, K]: ``values = basis @ coef`` samples a cubic B-spline at every frame.

    Knots are uniform in time (``knots_per_second``), spaced ``h = fps / kps`` frames and laid out symmetrically about
    the middle frame: control point k sits at frame ``o + (k - 1) h`` with ``o = ((n - 1) - (K - 3) h) / 2`` (in
    (-h, 0]), so the time-reversed video gets the mirrored knots (a fit of it is the reversed fit, not a fit through
    differently placed knots).
    ``n_columns`` pads with all-zero columns (inert control points) so that videos of one frame bucket and fps share
    a shape.
    """
    if fps <= 0 or knots_per_second <= 0:
        raise ValueError(f"fps ({fps}) and knots_per_second ({knots_per_second}) must be > 0")
    h = fps / knots_per_second
    k = n_control_points(n_frames, h)
    n_columns = k if n_columns is None else n_columns
    if n_columns < k:
        raise ValueError(f"n_columns={n_columns} is fewer than the {k} control points {n_frames} frames need")
    t = np.arange(n_frames, dtype=np.float64)[:, None]
    centres = knot_offset(n_frames, h) + (np.arange(k, dtype=np.float64) - 1.0) * h
    basis = np.zeros((n_frames, n_columns))
    basis[:, :k] = cardinal_cubic_bspline((t - centres[None, :]) / h)
    return basis.astype(np.float32)


# Human movement in video: the joint trajectories' content above this is taken as keypoint noise (gait kinematics are
# commonly low-passed at ~6 Hz: Winter, Biomechanics and Motor Control of Human Movement, 4th ed., ch. 2)
NOISE_BAND_HZ = 8.0
SNR_FLOOR = 3.0


def motion_bandwidth_hz(
    kp2d: NDArray[np.floating], conf: NDArray[np.floating], fps: float, energy: float = 0.995
) -> float:
    """The frequency (Hz) below which ``energy`` of the keypoints' movement power lies, noise removed; NaN if unknown.

    ``kp2d`` [T, J, 2] px (NaN where missing), ``conf`` [T, J]. The tracks are the image keypoints relative to their
    per-frame mean (the subject's motion across the image is not a joint motion), over the keypoints usable in at
    least 80 % of the frames, gaps filled linearly, each series detrended and Hann-windowed. The white-noise floor is
    the median power above :data:`NOISE_BAND_HZ` (where human movement has next to nothing) and is subtracted from
    every frequency before the cumulative power is taken.

    A peak above the band counts too: BlazePose's landmarks on a still photo oscillate with the crop from frame to
    frame (a peak at ~15 Hz, 3x the floor), which reads as up to 15 Hz of movement and the most knots. Counting
    only frequencies below the band was measured (``FIT_VERSION`` 13, ``validate metamorphic``): humanoid renders and
    four clips unchanged (their knots stay 7-8 from their movement below 8 Hz); court_pan's base / mirror / half /
    reverse / re-encode 8 / 7 / 8 / 8 / 2 knots/s -> 3 / 7 / 8 / 2 / 2, its still SD 2.63 -> 2.53 but half
    resolution 1.65 -> 2.27. Not kept.
    """
    kp = np.asarray(kp2d, np.float64)
    ok = (np.asarray(conf) > 0) & np.isfinite(kp).all(-1)
    n = kp.shape[0]
    if n < 16 or fps <= 2 * NOISE_BAND_HZ:
        return float("nan")
    keep = ok.mean(axis=0) >= 0.8
    if keep.sum() < 4:
        return float("nan")
    t = np.arange(n, dtype=np.float64)
    series = []
    for j in np.flatnonzero(keep):
        for c in range(kp.shape[2]):
            series.append(np.interp(t, t[ok[:, j]], kp[ok[:, j], j, c]))
    x = np.asarray(series).reshape(-1, kp.shape[2], n)  # [K, C, T]
    x = x - x.mean(axis=0, keepdims=True)  # relative to the per-frame mean of the kept keypoints
    x = x.reshape(-1, n)
    a = np.vstack([t, np.ones(n)]).T
    x = x - (a @ np.linalg.lstsq(a, x.T, rcond=None)[0]).T
    power = (np.abs(np.fft.rfft(x * np.hanning(n), axis=1)) ** 2).sum(axis=0)
    freq = np.fft.rfftfreq(n, 1.0 / fps)
    high = freq > NOISE_BAND_HZ
    floor = float(np.median(power[high])) if high.any() else 0.0
    # only frequencies where the movement clearly stands out of the noise count (3x the floor: above it a white
    # floor alone exceeds that in < 5 % of bins for the ~100 summed series here)
    signal = np.where(power > SNR_FLOOR * floor, power - floor, 0.0)
    signal[0] = 0.0
    total = signal.sum()
    if total <= 0:
        return 0.0
    cum = np.cumsum(signal) / total
    return float(freq[int(np.searchsorted(cum, energy))])


def knots_for_bandwidth(bandwidth_hz: float, lowest: float, highest: float) -> float:
    """Knots per second that keep ``bandwidth_hz`` (gain > 0.97 up to a quarter of the knot rate, see
    :func:`mocapflow.fit.loss.trajectory_cutoff_hz`), whole knots, within [lowest, highest]; ``highest`` if unknown."""
    if not np.isfinite(bandwidth_hz):
        return float(highest)
    return float(min(max(math.ceil(4.0 * bandwidth_hz), lowest), highest))
