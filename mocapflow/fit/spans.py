"""Which frames were observed, which gaps a fit may bridge, and the packed frame layout a fit runs on (numpy).

Rule (the one every fit output follows):

- A frame is **observed** when at least ``max(min_keypoints, ceil(min_fraction * J))`` of its J mapped keypoints are
  usable (confidence > 0 and a finite 2D position). A frame with fewer keypoints does not pin the body: its values
  would come from the smoothness prior and the neighbouring frames.
- A **span** runs from an observed frame to an observed frame with no run of unobserved frames longer than
  ``max_gap_frames`` inside it. Unobserved frames inside a span are **bridged** (fitted as part of a smooth
  trajectory, marked ``interpolated``). Frames outside every span (long gaps, before the first and after the last
  observed frame) are not fitted: their angles are NaN.
- Each span gets its own trajectory (its own B-spline control points), so no curve runs through a long gap.
- A DOF's **support** in a frame is the highest confidence among the usable keypoints it moves: those on the
  bodies below it in the kinematic tree, and those on its own body away from its joint centre (a keypoint at the
  centre does not move when the DOF turns). A DOF whose median support over the observed frames is below
  :data:`WEAK_SUPPORT` is **weakly observed**: its angle comes from keypoints the pose model itself doubts (legs
  out of the picture, a limb hidden behind the body) and from the fit's priors, not from what the video shows.
  The fit still gives it a value (the body needs one); every output says which DOFs these are.

The fit runs on a **packed** layout: the spans' frames one after another, one separator frame (no observations,
frame mask 0) between consecutive spans so that no smoothness term couples two spans, then bucket padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from mocapflow.fit.basis import bspline_basis, bucket_frames, n_control_points

if TYPE_CHECKING:
    from models.body import BodyModel


def observed_frames(
    kp2d: NDArray[np.floating], conf: NDArray[np.floating], min_fraction: float, min_keypoints: int
) -> NDArray[np.bool_]:
    """[T] True where at least ``max(min_keypoints, ceil(min_fraction * J))`` keypoints are usable."""
    usable = (np.asarray(conf) > 0) & np.isfinite(np.asarray(kp2d)).all(-1)
    need = max(int(min_keypoints), math.ceil(min_fraction * usable.shape[1] - 1e-9), 1)
    return usable.sum(axis=1) >= min(need, usable.shape[1])


# below this median support a DOF is weakly observed (a pose model's confidence: a keypoint it finds less likely
# seen than not; BlazePose's legs out of the picture get 0.03-0.4)
WEAK_SUPPORT = 0.5
# a keypoint this close to its body's joint centre (m) does not observe the body's own DOFs
_ON_AXIS_M = 0.02


def dof_support(
    model: BodyModel, site_index: Sequence[int], kp2d: NDArray[np.floating], conf: NDArray[np.floating]
) -> NDArray[np.float32]:
    """[T, D] support of every DOF in every frame (see the module docstring); 0 where no keypoint observes it."""
    usable = np.where(np.isfinite(np.asarray(kp2d)).all(-1), np.nan_to_num(np.asarray(conf, np.float64)), 0.0)
    n_bodies = len(model.bodies)
    below = np.eye(n_bodies, dtype=bool)  # below[b, c]: body c is b or under it
    for c in range(n_bodies - 1, -1, -1):  # parents come before children
        p = model.bodies[c].parent
        if p >= 0:
            below[p] |= below[c]
    out = np.zeros((usable.shape[0], model.n_dofs), np.float32)
    for b, body in enumerate(model.bodies):
        cols = [
            j
            for j, s in enumerate(site_index)
            if below[b, model.sites[s].body]
            and (model.sites[s].body != b or np.linalg.norm(model.sites[s].pos) > _ON_AXIS_M)
        ]
        if cols and body.dofs:
            out[:, list(body.dofs)] = usable[:, cols].max(axis=1, keepdims=True)
    return out


def weak_dofs(
    support: NDArray[np.floating], observed: NDArray[np.bool_], dof_names: Sequence[str]
) -> dict[str, float]:
    """``{dof: median support over the observed frames}`` of the weakly observed DOFs (median < WEAK_SUPPORT)."""
    obs = np.asarray(observed, bool)
    if not obs.any():
        return {}
    med = np.median(np.asarray(support)[obs], axis=0)
    return {name: round(float(m), 3) for name, m in zip(dof_names, med, strict=True) if m < WEAK_SUPPORT}


def span_ids(observed: NDArray[np.bool_], max_gap_frames: int) -> NDArray[np.int32]:
    """[T] span number (0, 1, ...) of every frame, -1 for frames no span covers (see the module docstring)."""
    obs = np.asarray(observed, bool)
    out = np.full(obs.shape, -1, np.int32)
    idx = np.flatnonzero(obs)
    if idx.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(idx) - 1 > max_gap_frames)  # unobserved run after idx[b] is too long
    starts = np.concatenate([idx[:1], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], idx[-1:]])
    for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
        out[s : e + 1] = k
    return out


def span_bounds(span: NDArray[np.integer]) -> list[tuple[int, int]]:
    """[(first, last)] dense frame rows of each span, in order."""
    s = np.asarray(span)
    return [
        (int(np.flatnonzero(s == k)[0]), int(np.flatnonzero(s == k)[-1]))
        for k in range(int(s.max()) + 1 if s.size else 0)
    ]


@dataclass(frozen=True)
class PackedLayout:
    """Where each dense frame sits in the packed arrays the optimiser sees."""

    rows: NDArray[np.int64]  # [M] dense row of each packed row (-1: separator or bucket padding)
    n_bucket: int  # packed rows including padding
    bounds: tuple[tuple[int, int], ...]  # dense (first, last) row of each span

    @property
    def mask(self) -> NDArray[np.float32]:
        """[n_bucket] 1 for rows that carry a dense frame, 0 for separators and padding."""
        return (self.rows >= 0).astype(np.float32)

    def pack(self, dense: NDArray, fill: float) -> NDArray:
        """Dense [T, ...] -> packed [n_bucket, ...], ``fill`` in separators and padding."""
        out = np.full((self.n_bucket, *dense.shape[1:]), fill, dtype=dense.dtype)
        ok = self.rows >= 0
        out[ok] = dense[self.rows[ok]]
        return out

    def unpack(self, packed: NDArray, n_dense: int, fill: float = np.nan) -> NDArray:
        """Packed [n_bucket, ...] -> dense [n_dense, ...], ``fill`` on frames no span covers."""
        out = np.full((n_dense, *packed.shape[1:]), fill, dtype=np.result_type(packed.dtype, type(fill)))
        ok = self.rows >= 0
        out[self.rows[ok]] = packed[ok]
        return out


def pack_spans(span: NDArray[np.integer]) -> PackedLayout:
    """Spans one after another, one separator row between consecutive spans, padded to :func:`bucket_frames`."""
    bounds = span_bounds(span)
    if not bounds:
        raise ValueError("no span to fit: no frame is observed")
    pieces: list[NDArray[np.int64]] = []
    for k, (s, e) in enumerate(bounds):
        if k:
            pieces.append(np.array([-1], np.int64))
        pieces.append(np.arange(s, e + 1, dtype=np.int64))
    rows = np.concatenate(pieces)
    nb = bucket_frames(len(rows))
    return PackedLayout(np.concatenate([rows, np.full(nb - len(rows), -1, np.int64)]), nb, tuple(bounds))


def span_basis(layout: PackedLayout, fps: float, knots_per_second: float) -> NDArray[np.float32]:
    """Block-diagonal cubic B-spline basis [n_bucket, K]: each span its own control points, none shared.

    K is padded with inert columns: to the single-span count of the bucket when that is enough (so one-span videos
    of a bucket share compiled code, as before spans existed), else to a multiple of 16.
    """
    h = fps / knots_per_second
    sizes = [e - s + 1 for s, e in layout.bounds]
    needed = sum(n_control_points(n, h) for n in sizes)
    base = n_control_points(layout.n_bucket, h)
    k_total = base if needed <= base else int(math.ceil(needed / 16) * 16)
    basis = np.zeros((layout.n_bucket, k_total), np.float32)
    row, col = 0, 0
    for n in sizes:
        b = bspline_basis(n, fps, knots_per_second)
        basis[row : row + n, col : col + b.shape[1]] = b
        row += n + 1  # the separator row stays all zero
        col += b.shape[1]
    return basis
