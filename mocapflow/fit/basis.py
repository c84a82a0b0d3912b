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


def bspline_basis(
    n_frames: int, fps: float, knots_per_second: float, n_columns: int | None = None
) -> NDArray[np.float32]:
    """Basis matrix [n_frames, K]: ``values = basis @ coef`` samples a cubic B-spline at every frame.

    Knots are uniform in time (``knots_per_second``); control point k sits at frame ``(k - 1) * fps / kps``.
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
    centres = (np.arange(k, dtype=np.float64) - 1.0) * h
    basis = np.zeros((n_frames, n_columns))
    basis[:, :k] = cardinal_cubic_bspline((t - centres[None, :]) / h)
    return basis.astype(np.float32)
