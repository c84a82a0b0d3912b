"""A small numpy ray caster for solid primitives: ellipsoids and round cones, z-buffered, Lambert shaded.

Every pixel casts a ray from the camera centre (pinhole, :class:`mocapflow.camera.Intrinsics`; pixel centres at
integer coordinates). Each primitive is intersected analytically inside its own conservative image box, and the
nearest hit per pixel wins (a z-buffer on the ray distance), so interpenetrating primitives meet at their true
intersection curves. A frame is rendered ``supersample`` times larger along each axis and averaged down
(``cv2.INTER_AREA``), which anti-aliases edges.

Primitives (camera frame, metres):

- **ellipsoid** ``(centre [3], axes [3, 3] (columns: unit local axes), semi [3])``;
- **round cone** ``(a [3], b [3], ra, rb)``: the convex hull of the spheres (a, ra) and (b, rb), i.e. two spheres
  joined by the cone tangent to both (a capsule when ra == rb). For a cone radius slope ``k = (rb - ra) / L`` the
  lateral surface is ``rho(x) = (ra + k x) / sqrt(1 - k^2)`` at axial distance ``x`` from ``a``, valid for
  ``x`` in ``[-ra k, L - rb k]`` (the two tangent circles); outside that range the spheres are the surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from mocapflow.camera import Intrinsics

_NEAR_M = 0.05


@dataclass(frozen=True, eq=False)
class Primitive:
    """One solid in the camera frame. ``kind`` is "ellipsoid" or "cone"; ``albedo`` RGB in 0..255."""

    kind: str
    p: NDArray[np.float64]  # ellipsoid centre, or cone end a
    q: NDArray[np.float64]  # ellipsoid axes [3, 3] (columns), or cone end b
    size: NDArray[np.float64]  # ellipsoid semi-axes [3], or cone radii (ra, rb)
    albedo: NDArray[np.float32]
    shininess: float = 0.0  # 0: matte; >0: a weak Blinn-Phong highlight (shoes, hair, eyes)
    label: int = 0  # a caller's id, kept in the label buffer

    def bounding_sphere(self) -> tuple[NDArray[np.float64], float]:
        if self.kind == "ellipsoid":
            return self.p, float(np.max(self.size))
        return 0.5 * (self.p + self.q), 0.5 * float(np.linalg.norm(self.q - self.p)) + float(
            np.max(self.size)
        )


def ellipsoid(
    centre: NDArray[np.float64],
    axes: NDArray[np.float64],
    semi: tuple[float, float, float] | NDArray[np.float64],
    albedo: NDArray[np.float32] | tuple[float, float, float],
    *,
    shininess: float = 0.0,
    label: int = 0,
) -> Primitive:
    return Primitive(
        "ellipsoid",
        np.asarray(centre, np.float64),
        np.asarray(axes, np.float64),
        np.asarray(semi, np.float64),
        np.asarray(albedo, np.float32),
        shininess,
        label,
    )


def round_cone(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    ra: float,
    rb: float,
    albedo: NDArray[np.float32] | tuple[float, float, float],
    *,
    shininess: float = 0.0,
    label: int = 0,
) -> Primitive:
    return Primitive(
        "cone",
        np.asarray(a, np.float64),
        np.asarray(b, np.float64),
        np.array([ra, rb], np.float64),
        np.asarray(albedo, np.float32),
        shininess,
        label,
    )


def pixel_rays(intr: Intrinsics, supersample: int = 1) -> NDArray[np.float32]:
    """Unit ray directions [H*s, W*s, 3] (camera frame) through the centres of the supersampled pixels."""
    s = int(supersample)
    h, w = intr.height * s, intr.width * s
    # supersampled pixel (i, j) has its centre at ((j + 0.5) / s - 0.5, (i + 0.5) / s - 0.5) in image px
    u = (np.arange(w) + 0.5) / s - 0.5
    v = (np.arange(h) + 0.5) / s - 0.5
    x = ((u - intr.cx) / intr.fx)[None, :].repeat(h, 0)
    y = ((v - intr.cy) / intr.fy)[:, None].repeat(w, 1)
    d = np.stack([x, y, np.ones_like(x)], axis=-1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d.astype(np.float32)


def _sphere_hit(d: NDArray[np.float32], c: NDArray[np.float64], r: float) -> NDArray[np.float32]:
    """Distance along unit rays ``d`` [n, 3] from the origin to the sphere (c, r); inf where missed."""
    b = d @ c.astype(np.float32)
    disc = b * b - np.float32(c @ c - r * r)
    with np.errstate(invalid="ignore"):
        t = b - np.sqrt(disc)
    return np.where((disc >= 0) & (t > _NEAR_M), t, np.inf).astype(np.float32)


def intersect(prim: Primitive, d: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Ray distance [n] (inf where missed) and unit outward normal [n, 3] of ``prim`` for unit rays ``d`` [n, 3]."""
    t, side = hit_distance(prim, d)
    return t, surface_normal(prim, d, np.where(np.isfinite(t), t, 0.0).astype(np.float32), side)


def hit_distance(
    prim: Primitive, d: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.bool_] | None]:
    """Ray distance [n] (inf where missed); for a cone also whether the hit is on the lateral surface."""
    if prim.kind == "ellipsoid":
        m = prim.q.astype(np.float32)
        s = prim.size.astype(np.float32)
        o = (m.T @ (-prim.p)).astype(np.float32) / s
        dl = (d @ m) / s
        a = (dl * dl).sum(-1)
        b = 2.0 * (dl @ o)
        c = np.float32(o @ o - 1.0)
        disc = b * b - 4.0 * a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2.0 * a)
        return np.where((disc >= 0) & (t > _NEAR_M), t, np.inf).astype(np.float32), None
    if prim.kind != "cone":
        raise ValueError(f"unknown primitive kind {prim.kind!r}; use 'ellipsoid' or 'cone'")
    a3, b3 = prim.p, prim.q
    ra, rb = float(prim.size[0]), float(prim.size[1])
    length = float(np.linalg.norm(b3 - a3))
    w = (b3 - a3) / max(length, 1e-12)
    k = float(np.clip((rb - ra) / max(length, 1e-12), -0.95, 0.95))
    g = 1.0 / (1.0 - k * k)
    dw = d @ w.astype(np.float32)
    da = d @ a3.astype(np.float32)
    xo = float(-a3 @ w)  # axial coordinate of the camera centre
    aa = float(a3 @ a3)
    qa = 1.0 - dw * dw * np.float32(1.0 + g * k * k)
    qb = -2.0 * da - dw * np.float32(2.0 * xo + g * (2.0 * ra * k + 2.0 * k * k * xo))
    qc = np.float32(aa - xo * xo - g * (ra * ra + 2.0 * ra * k * xo + k * k * xo * xo))
    disc = qb * qb - 4.0 * qa * qc
    lo, hi = -ra * k, length - rb * k
    t = np.full(len(d), np.inf, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(disc)
        for sign in (-1.0, 1.0):
            tc = (-qb + sign * root) / (2.0 * qa)
            x = tc * dw + xo
            ok = (disc >= 0) & (np.abs(qa) > 1e-9) & (tc > _NEAR_M) & (x >= lo) & (x <= hi)
            t = np.where(ok & (tc < t), tc, t)
    caps = np.minimum(_sphere_hit(d, a3, ra), _sphere_hit(d, b3, rb))
    return np.minimum(t, caps), t <= caps


def surface_normal(
    prim: Primitive, d: NDArray[np.float32], t: NDArray[np.float32], side: NDArray[np.bool_] | None
) -> NDArray[np.float32]:
    """Unit outward normals [n, 3] at the hits ``t`` [n] (finite) of rays ``d``."""
    hit = t[:, None] * d
    if prim.kind == "ellipsoid":
        m = prim.q.astype(np.float32)
        s = prim.size.astype(np.float32)
        n = (((hit - prim.p.astype(np.float32)) @ m) / (s * s)) @ m.T
    else:
        a3, b3 = prim.p.astype(np.float32), prim.q.astype(np.float32)
        ra, rb = float(prim.size[0]), float(prim.size[1])
        length = float(np.linalg.norm(b3 - a3))
        w = (b3 - a3) / max(length, 1e-12)
        k = float(np.clip((rb - ra) / max(length, 1e-12), -0.95, 0.95))
        rel = hit - a3
        x = rel @ w
        radial = rel - x[:, None] * w[None, :]
        radial /= np.maximum(np.linalg.norm(radial, axis=-1, keepdims=True), 1e-9)
        n_side = -k * w[None, :] + np.float32(np.sqrt(1.0 - k * k)) * radial
        n_cap = np.where((x < 0.5 * length)[:, None], rel, hit - b3)
        n = np.where(side[:, None], n_side, n_cap) if side is not None else n_cap
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    return n.astype(np.float32)


def image_box(
    centre: NDArray[np.float64], radius: float, intr: Intrinsics, supersample: int
) -> tuple[int, int, int, int] | None:
    """Conservative pixel box (x0, y0, x1, y1, exclusive ends) of a sphere in the supersampled image."""
    x, y, z = (float(v) for v in centre)
    if z - radius <= _NEAR_M:
        if z + radius <= _NEAR_M:
            return None
        s = supersample
        return 0, 0, intr.width * s, intr.height * s
    zs = (z - radius, z + radius)
    us = [intr.fx * xx / zz + intr.cx for xx in (x - radius, x + radius) for zz in zs]
    vs = [intr.fy * yy / zz + intr.cy for yy in (y - radius, y + radius) for zz in zs]
    s = supersample
    x0 = max(int(np.floor((min(us) + 0.5) * s)) - 1, 0)
    x1 = min(int(np.ceil((max(us) + 0.5) * s)) + 1, intr.width * s)
    y0 = max(int(np.floor((min(vs) + 0.5) * s)) - 1, 0)
    y1 = min(int(np.ceil((max(vs) + 0.5) * s)) + 1, intr.height * s)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


@dataclass
class Light:
    """A directional key light plus hemispheric ambient, all in the camera frame.

    ``direction``: unit vector from the surface towards the light; ``up``: world up in the camera frame (the
    ambient term is brighter on surfaces facing up, like light from the sky and the ceiling).
    """

    direction: NDArray[np.float64]
    up: NDArray[np.float64]
    ambient: float = 0.38
    diffuse: float = 0.72
    specular: float = 0.25


@dataclass
class FrameBuffers:
    """Supersampled buffers over a region of one frame: ray distance, normal, albedo, shininess, label per pixel."""

    depth: NDArray[np.float32]
    normal: NDArray[np.float32] = field(repr=False)
    albedo: NDArray[np.float32] = field(repr=False)
    shininess: NDArray[np.float32] = field(repr=False)
    label: NDArray[np.int32] = field(repr=False)
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 of these buffers in the supersampled image


def rasterise(
    prims: list[Primitive],
    rays: NDArray[np.float32],
    intr: Intrinsics,
    supersample: int,
    depth: NDArray[np.float32] | None = None,
) -> FrameBuffers:
    """Z-buffer the primitives over ``depth`` (ray distances of the background; inf: nothing). Label -1 = none.

    Only the union of the primitives' image boxes is computed; ``FrameBuffers.roi`` says where it lies.
    """
    h, w = rays.shape[:2]
    boxes = [image_box(*p.bounding_sphere(), intr, supersample) for p in prims]
    found = [b for b in boxes if b is not None]
    if not found:
        x0 = y0 = x1 = y1 = 0
    else:
        x0, y0 = min(b[0] for b in found), min(b[1] for b in found)
        x1, y1 = max(b[2] for b in found), max(b[3] for b in found)
    rh, rw = y1 - y0, x1 - x0
    zbuf = np.full((rh, rw), np.inf, np.float32) if depth is None else depth[y0:y1, x0:x1].astype(np.float32)
    normal = np.zeros((rh, rw, 3), np.float32)
    albedo = np.zeros((rh, rw, 3), np.float32)
    shin = np.zeros((rh, rw), np.float32)
    label = np.full((rh, rw), -1, np.int32)
    side_buf = np.zeros((rh, rw), bool)
    for k, (prim, box) in enumerate(zip(prims, boxes, strict=True)):
        if box is None:
            continue
        bx0, by0, bx1, by1 = box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0
        d = rays[box[1] : box[3], box[0] : box[2]].reshape(-1, 3)
        t, side = hit_distance(prim, d)
        zs = zbuf[by0:by1, bx0:bx1]
        win = (t < zs.reshape(-1)).reshape(zs.shape)
        if not win.any():
            continue
        zs[win] = t.reshape(zs.shape)[win]
        label[by0:by1, bx0:bx1][win] = k
        if side is not None:
            side_buf[by0:by1, bx0:bx1][win] = side.reshape(zs.shape)[win]
    # normals and materials once per pixel, for the primitive that won it
    flat = label.reshape(-1)
    won = np.flatnonzero(flat >= 0)
    order = won[np.argsort(flat[won], kind="stable")]
    counts = np.bincount(flat[won], minlength=len(prims))
    final = np.full_like(flat, -1)
    start = 0
    for k, prim in enumerate(prims):
        if counts[k] == 0:
            continue
        pix = order[start : start + counts[k]]
        start += counts[k]
        rows, cols = np.divmod(pix, rw)
        d = rays[rows + y0, cols + x0]
        side = side_buf[rows, cols] if prim.kind == "cone" else None
        normal[rows, cols] = surface_normal(prim, d, zbuf[rows, cols], side)
        albedo[rows, cols] = prim.albedo
        shin[rows, cols] = prim.shininess
        final[pix] = prim.label
    label = final.reshape(rh, rw)
    return FrameBuffers(zbuf, normal, albedo, shin, label, (x0, y0, x1, y1))


def shade(
    buf: FrameBuffers, rays: NDArray[np.float32], light: Light, mask: NDArray[np.bool_]
) -> NDArray[np.float32]:
    """Lambert + hemispheric ambient (+ a weak Blinn-Phong highlight where shininess > 0) on ``mask`` pixels.

    Returns RGB float32 [n, 3] (0..255) for the pixels of ``mask``, in row-major order.
    """
    n = buf.normal[mask]
    alb = buf.albedo[mask]
    ldir = light.direction.astype(np.float32)
    lam = np.clip(n @ ldir, 0.0, None)
    hemi = 0.75 + 0.25 * (n @ light.up.astype(np.float32))
    out = alb * (light.ambient * hemi + light.diffuse * lam)[:, None]
    shin = buf.shininess[mask]
    if (shin > 0).any():
        view = -rays[mask]
        half = ldir[None, :] + view
        half /= np.maximum(np.linalg.norm(half, axis=-1, keepdims=True), 1e-9)
        spec = np.clip((n * half).sum(-1), 0.0, None) ** np.maximum(shin, 1.0)
        out += (255.0 * light.specular * spec * (shin > 0))[:, None]
    return out.astype(np.float32)


def downsample(image: NDArray[np.float32], supersample: int) -> NDArray[np.float32]:
    """Average ``supersample`` x ``supersample`` blocks (the inverse of the ray grid of :func:`pixel_rays`)."""
    if supersample == 1:
        return image
    h, w = image.shape[0] // supersample, image.shape[1] // supersample
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
