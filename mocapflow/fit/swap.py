"""Left/right swap detection: frames where a pose model labelled a left keypoint as right (and vice versa) are found
and relabelled, one choice for the whole track (no frame decides alone).

Monocular pose models (BlazePose most of all, in side views and mirrors) sometimes put the left and right labels of
the legs, the arms or the face the wrong way round for a few frames. A fit then bends the body through itself. The
keypoints are split into groups that swap together (legs with the hips, arms with the shoulders, the face); each
group is, per frame, either as labelled or swapped. The labelling of the whole track is the one of least cost
(Viterbi over the 2^groups states per frame), where the cost is

- continuity: between consecutive usable frames, the mean squared distance each keypoint of a group moves (in units
  of the body's size in that frame), divided by the track's median of it (so noise sets the scale), summed over 2D
  and root-relative 3D when present;
- anatomy (3D only): the hips' left-right axis pointing against the shoulders' (a trunk turned by more than 90
  degrees) costs :data:`ANATOMY_COST` times the cosine's magnitude (not the face's: a head turns further, and on
  the cameraman clip such a check relabelled faces that were not swapped);
- a small price per swapped group and frame (:data:`SWAP_COST`, times the group's confidence): as labelled wins
  ties, so that of the two labellings a continuity cost cannot tell apart (everything swapped in every frame), the
  model's own is kept.

The minimum is global, so the choice is non-causal and the same for the track played backwards (the costs are
symmetric in time). Pure numpy.

Limits (measured): planted swaps in a synthetic side-view walk are all found, clean and with 4 px / 50 mm noise, for
legs and arms; under that noise the face's sides (eyes ~12 px apart) are not identifiable and some face frames are
relabelled spuriously (on ``validate fit``'s noisy videos this moved the median error by at most 0.06 deg). A model
that labels a person as facing the camera in one video and as facing away in most frames of its mirror image
(BlazePose on court_pan's small player) gets each video made consistent, not the two made to agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

GROUPS = ("legs", "arms", "face")
# site-name stems (side prefix removed) of each group; other sided sites go with the face
_LEG_STEMS = (
    "hip", "asis", "psis", "kne", "knem", "innerknee", "thigh", "frontthigh", "ank", "ankm", "shin", "hee", "foo",
    "fifthmetatarsal", "firstmetatarsal", "toe",
)  # fmt: skip
_ARM_STEMS = (
    "sho", "shom", "scapula", "elb", "elbm", "elbinner", "upperarm", "forearm", "wri", "writhumbside",
    "wripinkieside", "han", "thumb", "index", "pinky", "fin",
)  # fmt: skip
SWAP_COST = (
    0.5  # per swapped group and frame, x the group's mean confidence (units of a typical squared step)
)
ANATOMY_COST = 5.0  # x |cos| when the hips' left-right axis points against the shoulders'
_MIN_PAIRS = 1  # a group needs at least this many usable left-right pairs in a frame to count there


@dataclass(frozen=True)
class SidePairs:
    """Left-right pairs of keypoint columns, by group."""

    left: tuple[int, ...]  # column of each pair's left keypoint
    right: tuple[int, ...]  # column of its right counterpart
    group: tuple[int, ...]  # index into GROUPS

    def __len__(self) -> int:
        return len(self.left)

    def columns(self, g: int) -> tuple[list[int], list[int]]:
        idx = [k for k, gg in enumerate(self.group) if gg == g]
        return [self.left[k] for k in idx], [self.right[k] for k in idx]


def _side_stem(name: str) -> tuple[str, str] | None:
    """('l' | 'r', stem) of a site name like ``lkne`` / ``rear`` / ``left_knee``; None if it has no side."""
    for side, prefixes in (("l", ("left_", "l")), ("r", ("right_", "r"))):
        for p in prefixes:
            if name.startswith(p) and len(name) > len(p):
                return side, name[len(p) :]
    return None


def side_pairs(names: Sequence[str]) -> SidePairs:
    """The left-right pairs among keypoint (site) names: ``l<stem>`` with ``r<stem>`` (or ``left_``/``right_``)."""
    index = {n: i for i, n in enumerate(names)}
    left, right, group = [], [], []
    for n, i in index.items():
        ss = _side_stem(n)
        if ss is None or ss[0] != "l":
            continue
        stem = ss[1]
        other = next((index[c] for c in ("r" + stem, "right_" + stem) if c in index and c != n), None)
        if other is None or (n.startswith("left_") and not names[other].startswith("right_")):
            continue
        left.append(i)
        right.append(other)
        group.append(0 if stem in _LEG_STEMS else 1 if stem in _ARM_STEMS else 2)
    return SidePairs(tuple(left), tuple(right), tuple(group))


@dataclass(frozen=True)
class SwapReport:
    """What :func:`detect_swaps` found: per group, the frames it relabelled."""

    swapped: NDArray[np.bool_]  # [T, G] group g of frame t was relabelled

    @property
    def frames_swapped(self) -> dict[str, int]:
        return {g: int(self.swapped[:, k].sum()) for k, g in enumerate(GROUPS)}


def _centred(
    kp: NDArray[np.float64], ok: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Keypoints minus their frame's centroid (over usable ones; swap-invariant) and the frame's size (RMS radius)."""
    n = np.maximum(ok.sum(1), 1)[:, None]
    x = np.where(ok[..., None], kp, 0.0)
    c = x.sum(1) / n
    d = np.where(ok[..., None], kp - c[:, None], np.nan)
    sq = np.where(ok, np.sum(np.nan_to_num(d) ** 2, -1), 0.0).sum(1)
    size = np.sqrt(sq / n[:, 0])
    return d, np.where(ok.any(1) & (size > 0), size, np.nan)


def _lr_axis(
    p: NDArray[np.float64], cols: tuple[list[int], list[int]], ok: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Per frame, the unit mean (left - right) vector of a group's usable pairs [T, 3] (NaN if none)."""
    li, ri = cols
    if not li:
        return np.full((p.shape[0], 3), np.nan)
    v = p[:, li] - p[:, ri]
    use = ok[:, li] & ok[:, ri]
    s = np.where(use[..., None], v, 0.0).sum(1)
    norm = np.linalg.norm(s, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((use.any(1)[:, None]) & (norm > 0), s / norm, np.nan)


def detect_swaps(
    kp2d: NDArray[np.floating],
    kp3d: NDArray[np.floating] | None,
    conf: NDArray[np.floating],
    pairs: SidePairs,
) -> SwapReport:
    """The least-cost labelling of the track (module docstring): which groups of which frames to swap."""
    t_n = conf.shape[0]
    n_g = len(GROUPS)
    swapped = np.zeros((t_n, n_g), bool)
    if len(pairs) == 0 or t_n == 0:
        return SwapReport(swapped)
    conf = np.asarray(conf, np.float64)
    views: list[
        tuple[NDArray[np.float64], NDArray[np.float64]]
    ] = []  # (centred / size [T, J, c], usable [T, J])
    for kp in (kp2d, kp3d):
        if kp is None:
            continue
        kp = np.asarray(kp, np.float64)
        ok = (conf > 0) & np.isfinite(kp).all(-1)
        if ok.sum() == 0:
            continue
        d, size = _centred(kp, ok)
        views.append((np.where(np.isfinite(size)[:, None, None], d / size[:, None, None], np.nan), ok))
    if not views:
        return SwapReport(swapped)
    groups = [g for g in range(n_g) if pairs.columns(g)[0]]
    states = np.array([[(s >> k) & 1 for k in range(n_g)] for s in range(2**n_g)], bool)  # [S, G]
    # only states that leave groups without pairs as labelled
    states = (
        states[~states[:, [g for g in range(n_g) if g not in groups]].any(1)] if len(groups) < n_g else states
    )
    n_s = len(states)

    # per frame and group: usable? and the keypoints of the group under each of its two labellings
    usable = np.zeros((t_n, n_g), bool)
    for g in groups:
        li, ri = pairs.columns(g)
        n_ok = sum(((ok[:, li] & ok[:, ri]).sum(1)) for _, ok in views)
        usable[:, g] = n_ok >= _MIN_PAIRS
    frames = np.flatnonzero(usable.any(1))
    if frames.size < 2:
        return SwapReport(swapped)

    def group_points(t: int, g: int, swap: bool) -> list[tuple[NDArray[np.float64], NDArray[np.bool_]]]:
        li, ri = pairs.columns(g)
        order = ri + li if swap else li + ri
        return [(d[t, order], ok[t, order]) for d, ok in views]

    # each view's typical squared step between consecutive usable frames (as labelled): its motion and noise
    step_scale = []
    for d, ok in views:
        both = ok[frames[:-1]] & ok[frames[1:]]
        sq = np.sum((d[frames[1:]] - d[frames[:-1]]) ** 2, -1)
        per_frame = np.where(both, np.nan_to_num(sq), 0.0).sum(1) / np.maximum(both.sum(1), 1)
        use = both.any(1)
        step_scale.append(max(float(np.median(per_frame[use])) if use.any() else 1.0, 1e-6))

    def move(a: list, b: list) -> float:
        """Mean squared distance between two frames' labelled group points (usable in both), in units of each
        view's typical squared step, summed over the views."""
        total = 0.0
        for (pa, oa), (pb, ob), scale in zip(a, b, step_scale, strict=True):
            both = oa & ob
            if both.any():
                total += float(np.mean(np.sum((pa[both] - pb[both]) ** 2, -1))) / scale
        return total

    # unary costs [T, S]
    unary = np.zeros((t_n, n_s))
    mean_conf = np.zeros((t_n, n_g))
    for g in groups:
        li, ri = pairs.columns(g)
        mean_conf[:, g] = conf[:, li + ri].mean(1)
    unary += SWAP_COST * (states[None].astype(float) * mean_conf[:, None, :]).sum(-1)
    if kp3d is not None:
        p3 = np.asarray(kp3d, np.float64)
        ok3 = (conf > 0) & np.isfinite(p3).all(-1)
        axes = [_lr_axis(p3, pairs.columns(g), ok3) for g in range(n_g)]
        ref = 1  # the shoulders' axis: the hips' is checked against it
        for g in (0,):  # the face turns further than the hips: continuity alone decides it
            if g not in groups or ref not in groups:
                continue
            cos = np.nan_to_num(np.sum(axes[g] * axes[ref], -1))  # [T]
            flipped = states[:, g] ^ states[:, ref]  # [S]: relative orientation reversed by the state
            signed = np.where(flipped[None], -cos[:, None], cos[:, None])
            unary += ANATOMY_COST * np.maximum(0.0, -signed)

    # Viterbi over the usable frames (consecutive usable frames are neighbours)
    cost = unary[frames[0]].copy()
    back = np.zeros((frames.size, n_s), np.int64)
    for k in range(1, frames.size):
        t0, t1 = frames[k - 1], frames[k]
        pair_cost = np.zeros((n_s, n_s))  # [previous state, state]
        for g in groups:
            if not (usable[t0, g] and usable[t1, g]):
                continue
            same = move(group_points(t0, g, False), group_points(t1, g, False))
            cross = move(group_points(t0, g, False), group_points(t1, g, True))
            differs = states[:, None, g] ^ states[None, :, g]
            pair_cost += np.where(differs, cross, same)
        total = cost[:, None] + pair_cost
        back[k] = np.argmin(total, axis=0)
        cost = total[back[k], np.arange(n_s)] + unary[t1]
    path = np.zeros(frames.size, np.int64)
    path[-1] = int(np.argmin(cost))
    for k in range(frames.size - 1, 0, -1):
        path[k - 1] = back[k, path[k]]
    swapped[frames] = states[path]
    swapped &= usable
    return SwapReport(swapped)


def apply_swaps(
    arrays: Sequence[NDArray[np.floating]], pairs: SidePairs, report: SwapReport
) -> list[NDArray[np.floating]]:
    """Each array [T, J, ...] with the swapped groups' left and right columns exchanged in the swapped frames."""
    out = [np.array(a, copy=True) for a in arrays]
    for g in range(len(GROUPS)):
        rows = np.flatnonzero(report.swapped[:, g])
        if rows.size == 0:
            continue
        li, ri = pairs.columns(g)
        for a, src in zip(out, arrays, strict=True):
            a[np.ix_(rows, li)] = np.asarray(src)[np.ix_(rows, ri)]
            a[np.ix_(rows, ri)] = np.asarray(src)[np.ix_(rows, li)]
    return out


def undo_swaps(
    kp2d: NDArray[np.floating],
    kp3d: NDArray[np.floating],
    conf: NDArray[np.floating],
    names: Sequence[str],
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating], SwapReport]:
    """Find (:func:`detect_swaps`) and undo left/right swaps; returns the relabelled arrays and what was found."""
    pairs = side_pairs(names)
    has3d = bool(np.isfinite(kp3d).any())
    report = detect_swaps(kp2d, kp3d if has3d else None, conf, pairs)
    if report.swapped.any():
        logger.info("left/right swaps undone (frames per group): %s", report.frames_swapped)
    kp2d, kp3d, conf = apply_swaps([kp2d, kp3d, conf], pairs, report)
    return kp2d, kp3d, conf, report
