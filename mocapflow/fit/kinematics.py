"""Forward kinematics over a batch of frames, laid out so that XLA compiles it quickly and runs it fast on CPU.

Same maths as :func:`models.body.forward_kinematics` (tests check they agree), vectorised over bodies instead of
unrolled body by body: bodies are sorted by tree depth; every body's local transform (fixed offset and rotation,
then its DOFs in slots) is computed for all bodies at once, then world transforms level by level. Index selections
are constant one-hot matrix products rather than gathers (whose scatter-add gradients are slow on CPU). The traced
program has a few hundred operations whatever the size of the tree, so a forward+backward pass compiles in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from models.body import BodyModel, quat_to_matrix


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


def _matmul(a: Array, b: Array) -> Array:
    """Batched 3x3 products as broadcast multiply + sum (fuses on CPU; no tiny dot kernels)."""
    return jnp.matmul(a, b)


def _matvec(a: Array, v: Array) -> Array:
    return jnp.matmul(a, v[..., None])[..., 0]


def _sorted_transforms(
    lay: _Layout, q: Float[Array, "T D"], body_scale: Float[Array, "B 3"]
) -> tuple[Array, Array]:
    dtype = q.dtype
    n_t, n_b = q.shape[0], len(lay.order)
    scale_local = body_scale[lay.local_order]  # small gather on per-video parameters only
    has_parent = jnp.asarray(lay.parent_scale_sel.any(axis=1))[:, None]
    parent_scale = jnp.where(has_parent, jnp.asarray(lay.parent_scale_sel, dtype) @ body_scale, 1.0)
    t = jnp.broadcast_to(jnp.asarray(lay.pos, dtype) * parent_scale, (n_t, n_b, 3))
    r = jnp.broadcast_to(jnp.asarray(lay.fixed, dtype), (n_t, n_b, 3, 3))
    eye = jnp.eye(3, dtype=dtype)
    for k, sel in enumerate(lay.slot_sel):
        n_k = lay.slot_len[k]
        qk = q @ jnp.asarray(sel, dtype)  # [T, n_k]
        rk, tk = r[:, :n_k], t[:, :n_k]
        if lay.slide_axis[k] is not None:
            tk = tk + _matvec(rk, jnp.asarray(lay.slide_axis[k], dtype)) * qk[..., None]
        hk = lay.hinge_k[k]
        if hk is not None:
            s = jnp.sin(qk)[..., None, None]
            omc = (1.0 - jnp.cos(qk))[..., None, None]
            rot = eye + s * jnp.asarray(hk, dtype) + omc * jnp.asarray(hk @ hk, dtype)
            new_r = _matmul(rk, rot)
            if lay.anchor[k] is not None:
                a = jnp.asarray(lay.anchor[k], dtype) * scale_local[:n_k]
                tk = tk + _matvec(rk, a) - _matvec(new_r, a)
            rk = new_r
        r = rk if n_k == n_b else jnp.concatenate([rk, r[:, n_k:]], axis=1)
        t = tk if n_k == n_b else jnp.concatenate([tk, t[:, n_k:]], axis=1)
    perm = jnp.asarray(lay.to_sorted, dtype)
    r = jnp.einsum("tbij,bc->tcij", r, perm)
    t = jnp.einsum("tbi,bc->tci", t, perm)
    levels_r, levels_t = [], []
    for d, (s, e) in enumerate(lay.bounds):
        lr, lt = r[:, s:e], t[:, s:e]
        if d > 0:
            sel = jnp.asarray(lay.parent_onehot[d - 1], dtype)
            pr = jnp.einsum("tpij,pc->tcij", levels_r[-1], sel)
            pt = jnp.einsum("tpi,pc->tci", levels_t[-1], sel)
            lr, lt = _matmul(pr, lr), pt + _matvec(pr, lt)
        levels_r.append(lr)
        levels_t.append(lt)
    return jnp.concatenate(levels_r, axis=1), jnp.concatenate(levels_t, axis=1)


def body_transforms(
    model: BodyModel, q: Float[Array, "T D"], body_scale: Float[Array, "B 3"]
) -> tuple[Float[Array, "T B 3 3"], Float[Array, "T B 3"]]:
    """World rotation and origin of every body (original body order) for every frame (``model`` static)."""
    lay = _layout(model)
    r, t = _sorted_transforms(lay, q, body_scale)
    inverse = np.argsort(lay.order)
    return r[:, inverse], t[:, inverse]


def site_positions(
    model: BodyModel,
    q: Float[Array, "T D"],
    body_scale: Float[Array, "B 3"],
    site_offset: Float[Array, "S 3"],
    sites: tuple[int, ...] | None = None,
) -> Float[Array, "T S 3"]:
    """World positions (m) for every frame of ``sites`` (static indices; default all), offsets given per site."""
    lay = _layout(model)
    idx = np.arange(len(lay.site_body)) if sites is None else np.asarray(sites, int)
    r, t = _sorted_transforms(lay, q, body_scale)
    sel = jnp.asarray(lay.site_sel[idx], q.dtype)
    local = jnp.asarray(lay.site_pos[idx], q.dtype) * body_scale[lay.site_body[idx]] + site_offset
    rs = jnp.einsum("tbij,sb->tsij", r, sel)
    ts = jnp.einsum("tbi,sb->tsi", t, sel)
    return ts + _matvec(rs, local)
