"""Forward kinematics over a batch of frames, laid out so that XLA compiles it quickly and runs it fast on CPU.

Same maths as :func:`models.body.forward_kinematics` (tests check they agree), vectorised over bodies instead of
unrolled body by body: bodies are sorted by tree depth; every body's local transform (fixed offset and rotation,
then its DOFs in slots) is computed for all bodies at once, then world transforms level by level. Index selections
are constant one-hot matrix products rather than gathers (whose scatter-add gradients are slow on CPU). The traced
program has a few hundred operations whatever the size of the tree, so a forward+backward pass compiles in seconds.

Outside the optimiser, every use of the kinematics on joint values from numpy (the initial pose's translation, the
world frame of a finished fit when its sites are not at hand) goes through :func:`posed_sites`: one compiled program
per frame bucket (:func:`~mocapflow.fit.basis.bucket_frames`), never Python-level per-call compilation or op-by-op
execution. The zero pose's sites (a constant of the model) are computed once per model in numpy
(:func:`zero_pose_sites`). Inside jitted code the same functions are traced into the caller's program.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from numpy.typing import NDArray

from mocapflow.fit.basis import bucket_frames
from models.body import BodyModel, body_scale_xyz, quat_to_matrix

_TRACES = {"sites": 0}  # how often the jitted FK of posed_sites was traced in this process (tests count them)


def trace_count() -> int:
    """How many times :func:`posed_sites`'s compiled program has been traced in this process."""
    return _TRACES["sites"]


@dataclass(frozen=True)
class _Layout:
    """Constant arrays describing the tree, bodies in depth order (numpy; built at trace time)."""

    order: np.ndarray  # [B] original body index of each sorted (depth-order) position
    local_order: np.ndarray  # [B] original body index of each local-transform position (most DOFs first)
    to_sorted: np.ndarray  # [B_local, B_sorted] one-hot permutation from local order to depth order
    slot_len: list[int]  # per slot: how many bodies (a prefix of local order) have a DOF in it
    bounds: list[tuple[int, int]]  # [start, end) of each depth level in sorted order
    parent_onehot: list[np.ndarray]  # per level > 0: [n_prev, n_level] parent selection
    pos: np.ndarray  # [B, 3] local order
    fixed: np.ndarray  # [B, 3, 3] local order
    parent_scale_sel: np.ndarray  # [B, B_orig] local order: row = one-hot of the parent (zero row for roots)
    slot_sel: list[np.ndarray]  # per slot: [D, n_k] one-hot q -> slot value
    hinge_k: list[np.ndarray | None]  # per slot: [n_k, 3, 3] skew of the hinge axis (0 elsewhere)
    slide_axis: list[np.ndarray | None]  # per slot: [n_k, 3] slide axis (0 elsewhere)
    anchor: list[np.ndarray | None]  # per slot: [n_k, 3] hinge anchor in the body frame
    site_sel: np.ndarray  # [S, B] one-hot sorted body of each site
    site_body: np.ndarray  # [S] original body index
    site_pos: np.ndarray  # [S, 3]


def _skew(axis: np.ndarray) -> np.ndarray:
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    return np.stack(
        [np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2
    )


@functools.cache
def _layout(model: BodyModel) -> _Layout:
    n_b = len(model.bodies)
    depth = np.zeros(n_b, int)
    for i, b in enumerate(model.bodies):
        depth[i] = 0 if b.parent < 0 else depth[b.parent] + 1
    order = np.argsort(depth, kind="stable")
    rank = np.argsort(order)  # sorted position of each original body
    sizes = np.bincount(depth)
    ends = np.cumsum(sizes)
    bounds = [(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]
    parents = np.array([model.bodies[o].parent for o in order])
    n_dofs_of = np.array([len(b.dofs) for b in model.bodies])
    local_order = np.argsort(-n_dofs_of, kind="stable")
    to_sorted = np.zeros((n_b, n_b))
    to_sorted[np.argsort(local_order)[order], np.arange(n_b)] = 1.0
    parent_onehot = []
    for d in range(1, len(bounds)):
        (ps, pe), (s, e) = bounds[d - 1], bounds[d]
        m = np.zeros((pe - ps, e - s))
        m[rank[parents[s:e]] - ps, np.arange(e - s)] = 1.0
        parent_onehot.append(m)
    parent_scale_sel = np.zeros((n_b, n_b))
    for i, o in enumerate(local_order):
        p = model.bodies[o].parent
        if p >= 0:
            parent_scale_sel[i, p] = 1.0
    n_slots = max(1, int(n_dofs_of.max()))
    slot_sel, hinge_k, slide_axis, anchor, slot_len = [], [], [], [], []
    for k in range(n_slots):
        n_k = int(np.sum(n_dofs_of > k))
        sel = np.zeros((model.n_dofs, n_k))
        hk = np.zeros((n_k, 3, 3))
        sa = np.zeros((n_k, 3))
        an = np.zeros((n_k, 3))
        for i, o in enumerate(local_order[:n_k]):
            dofs = model.bodies[o].dofs
            dof = model.dofs[dofs[k]]
            sel[dofs[k], i] = 1.0
            axis = np.asarray(dof.axis, float) / np.linalg.norm(dof.axis)
            if dof.kind == "hinge":
                hk[i] = _skew(axis)
                an[i] = dof.anchor
            else:
                sa[i] = axis
        slot_len.append(n_k)
        slot_sel.append(sel)
        hinge_k.append(hk if hk.any() else None)
        slide_axis.append(sa if sa.any() else None)
        anchor.append(an if an.any() else None)
    site_body = np.array([s.body for s in model.sites], int)
    site_sel = np.zeros((len(site_body), n_b))
    site_sel[np.arange(len(site_body)), rank[site_body]] = 1.0
    return _Layout(
        order=order,
        local_order=local_order,
        to_sorted=to_sorted,
        slot_len=slot_len,
        bounds=bounds,
        parent_onehot=parent_onehot,
        pos=np.array([model.bodies[o].pos for o in local_order], float).reshape(n_b, 3),
        fixed=np.array([quat_to_matrix(model.bodies[o].quat) for o in local_order]).reshape(n_b, 3, 3),
        parent_scale_sel=parent_scale_sel,
        slot_sel=slot_sel,
        hinge_k=hinge_k,
        slide_axis=slide_axis,
        anchor=anchor,
        site_sel=site_sel,
        site_body=site_body,
        site_pos=np.array([s.pos for s in model.sites], float).reshape(-1, 3),
    )


def _matvec(a: Array, v: Array, xp: ModuleType = jnp) -> Array:
    return xp.matmul(a, v[..., None])[..., 0]


def _sorted_transforms(
    lay: _Layout, q: Float[Array, "T D"], body_scale: Float[Array, "B 3"], xp: ModuleType = jnp
) -> tuple[Array, Array]:
    """World rotations and origins of every body in depth order. ``xp``: ``jax.numpy`` (traced, the fit) or
    ``numpy`` (the same maths on host arrays, for constants of the model such as the zero pose)."""
    dtype = q.dtype
    n_t, n_b = q.shape[0], len(lay.order)
    scale_local = body_scale[lay.local_order]  # small gather on per-video parameters only
    has_parent = xp.asarray(lay.parent_scale_sel.any(axis=1))[:, None]
    parent_scale = xp.where(has_parent, xp.asarray(lay.parent_scale_sel, dtype) @ body_scale, 1.0)
    t = xp.broadcast_to(xp.asarray(lay.pos, dtype) * parent_scale, (n_t, n_b, 3))
    r = xp.broadcast_to(xp.asarray(lay.fixed, dtype), (n_t, n_b, 3, 3))
    eye = xp.eye(3, dtype=dtype)
    for k, sel in enumerate(lay.slot_sel):
        n_k = lay.slot_len[k]
        qk = q @ xp.asarray(sel, dtype)  # [T, n_k]
        rk, tk = r[:, :n_k], t[:, :n_k]
        if lay.slide_axis[k] is not None:
            tk = tk + _matvec(rk, xp.asarray(lay.slide_axis[k], dtype), xp) * qk[..., None]
        hk = lay.hinge_k[k]
        if hk is not None:
            s = xp.sin(qk)[..., None, None]
            omc = (1.0 - xp.cos(qk))[..., None, None]
            rot = eye + s * xp.asarray(hk, dtype) + omc * xp.asarray(hk @ hk, dtype)
            new_r = xp.matmul(rk, rot)
            if lay.anchor[k] is not None:
                a = xp.asarray(lay.anchor[k], dtype) * scale_local[:n_k]
                tk = tk + _matvec(rk, a, xp) - _matvec(new_r, a, xp)
            rk = new_r
        r = rk if n_k == n_b else xp.concatenate([rk, r[:, n_k:]], axis=1)
        t = tk if n_k == n_b else xp.concatenate([tk, t[:, n_k:]], axis=1)
    perm = xp.asarray(lay.to_sorted, dtype)
    r = xp.einsum("tbij,bc->tcij", r, perm)
    t = xp.einsum("tbi,bc->tci", t, perm)
    levels_r, levels_t = [], []
    for d, (s, e) in enumerate(lay.bounds):
        lr, lt = r[:, s:e], t[:, s:e]
        if d > 0:
            sel = xp.asarray(lay.parent_onehot[d - 1], dtype)
            pr = xp.einsum("tpij,pc->tcij", levels_r[-1], sel)
            pt = xp.einsum("tpi,pc->tci", levels_t[-1], sel)
            lr, lt = xp.matmul(pr, lr), pt + _matvec(pr, lt, xp)
        levels_r.append(lr)
        levels_t.append(lt)
    return xp.concatenate(levels_r, axis=1), xp.concatenate(levels_t, axis=1)


def body_transforms(
    model: BodyModel, q: Float[Array, "T D"], body_scale: Float[Array, "B 3"]
) -> tuple[Float[Array, "T B 3 3"], Float[Array, "T B 3"]]:
    """World rotation and origin of every body (original body order) for every frame (``model`` static)."""
    lay = _layout(model)
    r, t = _sorted_transforms(lay, q, body_scale)
    inverse = np.argsort(lay.order)
    return r[:, inverse], t[:, inverse]


class Transforms(eqx.Module):
    """Every body's world rotation and origin for every frame (depth order), and the body scales that made them:
    computed once, then any set of sites is read off them (:meth:`sites`)."""

    r: Float[Array, "T B 3 3"]
    t: Float[Array, "T B 3"]
    body_scale: Float[Array, "B 3"]
    model: BodyModel = eqx.field(static=True)

    def sites(
        self, site_offset: Float[Array, "S 3"], sites: tuple[int, ...] | None = None
    ) -> Float[Array, "T S 3"]:
        """World positions (m) for every frame of ``sites`` (static indices; default all), offsets given per site."""
        lay = _layout(self.model)
        idx = np.arange(len(lay.site_body)) if sites is None else np.asarray(sites, int)
        dtype = self.t.dtype
        sel = jnp.asarray(lay.site_sel[idx], dtype)
        local = jnp.asarray(lay.site_pos[idx], dtype) * self.body_scale[lay.site_body[idx]] + site_offset
        rs = jnp.einsum("tbij,sb->tsij", self.r, sel)
        ts = jnp.einsum("tbi,sb->tsi", self.t, sel)
        return ts + _matvec(rs, local)


def transforms(model: BodyModel, q: Float[Array, "T D"], body_scale: Float[Array, "B 3"]) -> Transforms:
    """The body transforms of joint values ``q`` (traced inside the caller's jitted code)."""
    r, t = _sorted_transforms(_layout(model), q, body_scale)
    return Transforms(r, t, body_scale, model)


def site_positions(
    model: BodyModel,
    q: Float[Array, "T D"],
    body_scale: Float[Array, "B 3"],
    site_offset: Float[Array, "S 3"],
    sites: tuple[int, ...] | None = None,
) -> Float[Array, "T S 3"]:
    """World positions (m) for every frame of ``sites`` (static indices; default all), offsets given per site."""
    return transforms(model, q, body_scale).sites(site_offset, sites)


@eqx.filter_jit
def _posed_sites(
    model: BodyModel,
    q: Float[Array, "T D"],
    body_scale: Float[Array, "B 3"],
    site_offset: Float[Array, "S 3"],
) -> Float[Array, "T S 3"]:
    _TRACES["sites"] += 1
    return site_positions(model, q, body_scale, site_offset)


def posed_sites(
    model: BodyModel,
    q: NDArray[np.floating],
    body_scale: NDArray[np.floating] | None = None,
    site_offset: NDArray[np.floating] | None = None,
) -> NDArray[np.float64]:
    """Every site [T, S, 3] (m, the model's world axes) for joint values ``q`` [T, D] (numpy in and out).

    ``body_scale`` [B] or [B, 3] (None: 1), ``site_offset`` [S, 3] (None: 0). Frames are padded to their bucket
    (:func:`~mocapflow.fit.basis.bucket_frames`), so videos of one bucket share one compiled program.
    """
    q32 = np.asarray(q, np.float32)
    if q32.ndim != 2 or q32.shape[1] != model.n_dofs:
        raise ValueError(f"joint values must have shape (frames, {model.n_dofs}), got {q32.shape}")
    n = len(q32)
    if n == 0:
        return np.zeros((0, len(model.sites), 3))
    padded = np.zeros((bucket_frames(n), model.n_dofs), np.float32)
    padded[:n] = q32
    offset = np.zeros((len(model.sites), 3), np.float32) if site_offset is None else site_offset
    out = _posed_sites(
        model,
        jnp.asarray(padded),
        jnp.asarray(body_scale_xyz(model, body_scale), jnp.float32),
        jnp.asarray(offset, jnp.float32),
    )
    return np.asarray(out, np.float64)[:n]


@functools.cache
def zero_pose_sites(model: BodyModel) -> NDArray[np.float64]:
    """Every site [S, 3] (m) in the zero pose (joint values clipped into their limits) at unit scale: the same maths
    in numpy (float32, as in the fit), once per model."""
    lay = _layout(model)
    q = np.asarray(model.zero_pose(), np.float32)[None]
    r, t = _sorted_transforms(lay, q, np.ones((len(model.bodies), 3), np.float32), xp=np)
    local = lay.site_pos.astype(np.float32)
    sites = np.einsum("sb,bi->si", lay.site_sel, t[0]) + np.einsum("sb,bij,sj->si", lay.site_sel, r[0], local)
    out = sites.astype(np.float64)
    out.setflags(write=False)  # shared by every caller
    return out
