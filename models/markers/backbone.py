"""The markers pose backbone as an ONNX graph (opset 17) built with ``onnx.helper`` from the palette.

Inputs: ``crops`` float32 [n, S, S, 3] (RGB 0..255), ``crop_scale`` [n] (crop px per frame px), ``focal_crop_px``
[n] (the camera's fx in crop px = fx * crop_scale), ``box_crop`` [n, 4] (the person's box x0, y0, x1, y1 in crop
px; keypoints are searched inside it). Outputs per crop and keypoint j: ``kp2d_crop`` [n, J, 2] disc centre (crop
px), ``radius_crop`` [n, J] disc radius (crop px), ``depth_mm`` [n, J] = focal_crop_px * R / radius_crop (camera z
of the disc centre), ``conf`` [n, J] in [0, 1]. Back-projection to camera-frame mm is numpy postprocessing
(:func:`models.markers.prepost.postprocess`).

Per keypoint j with palette colour c_j:
1. peak: on the crop averaged over 2x2 blocks, pixels within ``core_dist`` of c_j, box-filtered and masked to the
   person's box; the arg-max is the disc's centre within ~1 px;
2. a (2w+1)^2 window around it is gathered; g = mean of its grey pixels away from the disc (background);
3. each pixel's share of c_j, a = <c - g, c_j - g> / |c_j - g|^2, is linear in the colour, so blur and chroma
   subsampling move it around but keep its sum. A pixel whose colour is far from the segment g..c_j, or that another
   palette colour's segment explains clearly better ("claims"), is not j's;
4. pass 1 (robust centre): a ramp of a (only the core and the half-coverage rim count) -> weighted centroid;
5. pass 2 (radius): a with the background g of a ring just outside the disc, sampled along ``n_rays`` rays from the
   centroid (``GridSample``); ray k's sector area integral(a t dt) = r_k^2 / 2 is kept by blur. Rays that meet
   non-j pixels inside the rim (a neighbour in front, or j in front of a neighbour with a mixed rim) are cut;
   r_k = r + d . e_k is fitted over the uncut rays (least squares, then again without the worst rays), giving the
   radius r and the centroid's offset d (added to the 2D centre: a partly covered disc's centroid is biased);
6. radius bias: H.264 (yuv420p) loses part of the rims, more for chroma-dominated colours; a per-colour constant in
   frame px (:mod:`models.markers.calibration`, measured on rendered calibration videos) is added;
7. confidence: enough mass, a shape that fills its longest chord, enough uncut rays, a fitted radius that agrees
   with the pass-1 mass, and most rays reaching the fitted rim (a partly covered disc does not). Markers that are
   covered, absent or untrustworthy get conf 0 (reported as missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from models.markers.calibration import DEFAULT_RADIUS_BIAS_PX, RADIUS_BIAS_PX

OPSET = 17
INPUT_SIZE = 256


@dataclass(frozen=True)
class BackboneConfig:
    """Constants baked into the graph (tuned on rendered synthetic H.264 videos; see the module docstring)."""

    size: int = INPUT_SIZE
    core_dist: float = 40.0  # RGB distance to the palette colour for a core pixel
    peak_stride: int = 2  # the peak search runs on the crop averaged over peak_stride^2 blocks
    peak_erode: bool = False  # erode the core map 3x3 before the box filter (drops thin colour mixes)
    peak_box: int = 3  # box filter (low-res px) over the core map before the arg-max
    half_window: int = 12  # window is (2 * half_window + 1)^2 crop px around the peak
    grey_range: tuple[float, float] = (15.0, 100.0)  # window pixels usable for the background grey
    grey_chroma: float = 30.0  # max - min channel of a background pixel
    alpha_lo: float = 0.15  # pass 1: share of c_j where a pixel starts to count ...
    alpha_hi: float = 0.85  # ... and counts fully
    gate_lo: float = 0.25  # pass 1: residual / |c_j - g| where the gate starts to close ...
    gate_hi: float = 0.45  # ... and where it is shut
    region_margin: float = 3.0  # px beyond the pass-1 radius that the rays integrate over
    ring_width: float = 4.0  # px of the background ring just outside that region
    gate2_lo: float = 0.45  # pass 2: the same gate, looser (the rim's chroma is off the segment)
    gate2_hi: float = 0.8
    alpha2_range: tuple[float, float] = (-0.1, 1.2)  # pass 2: shares are clipped to this range
    claim_alpha: tuple[float, float] = (0.6, 0.85)  # another colour's share where its claim starts / is full
    claim_margin: tuple[float, float] = (4.0, 12.0)  # its residual advantage (grey levels) over colour j
    n_rays: int = 32
    ray_step: float = 0.25
    foreign_res: tuple[float, float] = (0.3, 0.5)  # residual / |c_j - g| of a pixel that is not j's
    foreign_neg: tuple[float, float] = (
        0.1,
        0.25,
    )  # a negative share (a darker or opposite colour) is foreign
    cut_spread: bool = True  # the rays beside a cut ray are cut too
    rim_margin: float = 1.0  # px beyond the pass-1 radius where foreign pixels cut a ray
    center_ridge: float = 0.05  # ridge on the centre offset fitted from the rays (in rays)
    ray_outlier: tuple[float, float] = (
        0.4,
        1.0,
    )  # ray misfit (crop px) that starts / ends its down-weighting
    # frame px added to the radius per palette colour (H.264 loses part of the rims; see calibration.py)
    radius_bias_px: tuple[tuple[tuple[int, int, int], float], ...] = tuple(RADIUS_BIAS_PX.items())
    default_radius_bias_px: float = DEFAULT_RADIUS_BIAS_PX
    conf_shape_lo: float = 0.6  # mass / chord-disc area giving conf 0 ...
    conf_shape_hi: float = 0.85  # ... and conf 1
    ray_reach: tuple[float, float] = (
        0.75,
        0.92,
    )  # ray length / fitted rim distance: ray incomplete / complete
    conf_rays: tuple[float, float] = (0.5, 0.8)  # share of complete rays giving conf 0 / full
    conf_uncut: tuple[float, float] = (0.15, 0.35)  # share of uncut rays giving conf 0 / full
    conf_floor: float = 0.0  # confidence of a disc found but mostly cut or misshapen (0: reported as missing)
    min_mass: float = 3.0  # crop px^2 giving conf 0 ...
    full_mass: float = 12.0  # ... and full conf


class _Graph:
    """A tiny builder: every method adds one node and returns its output name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, op: str) -> str:
        self._n += 1
        return f"{op.lower()}_{self._n}"

    def const(self, value: NDArray | float | int | list, dtype: type = np.float32) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, *inputs: str, out: str | None = None, n_out: int = 1, **attrs: object) -> str:
        """Add a node; returns its first output (extra outputs get unused names)."""
        name = out or self._name(op)
        outs = [name] + [f"{name}_{i}" for i in range(1, n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=f"n_{name}", **attrs))
        return name

    # shorthands
    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def f(self, x: float) -> str:
        return self.const(x)

    def i64(self, x: list[int] | int) -> str:
        return self.const(x, np.int64)

    def rsum(self, x: str, axes: list[int], keepdims: int = 1) -> str:
        return self.op("ReduceSum", x, self.i64(axes), keepdims=keepdims)

    def clip01(self, x: str) -> str:
        return self.op("Clip", x, self.f(0.0), self.f(1.0))

    def ramp(self, x: str, lo: float, hi: float) -> str:
        """0 below lo, 1 above hi, linear between."""
        return self.clip01(self.mul(self.sub(x, self.f(lo)), self.f(1.0 / (hi - lo))))

    def fcast(self, x: str) -> str:
        return self.op("Cast", x, to=TensorProto.FLOAT)


def _solve3(g: _Graph, m: tuple[tuple[str, str, str], ...], b: tuple[str, str, str]) -> tuple[str, str, str]:
    """Solve the symmetric 3x3 systems m x = b elementwise (Cramer's rule); entries are equal-shaped tensors."""

    def det3(a: tuple[tuple[str, str, str], ...]) -> str:
        t0 = g.mul(a[0][0], g.sub(g.mul(a[1][1], a[2][2]), g.mul(a[1][2], a[2][1])))
        t1 = g.mul(a[0][1], g.sub(g.mul(a[1][0], a[2][2]), g.mul(a[1][2], a[2][0])))
        t2 = g.mul(a[0][2], g.sub(g.mul(a[1][0], a[2][1]), g.mul(a[1][1], a[2][0])))
        return g.add(g.sub(t0, t1), t2)

    det = det3(m)
    out = []
    for col in range(3):
        mc = tuple(tuple(b[r] if c == col else m[r][c] for c in range(3)) for r in range(3))
        out.append(g.div(det3(mc), det))
    return out[0], out[1], out[2]


def build_backbone(
    palette: NDArray[np.uint8], disc_radius_mm: float, cfg: BackboneConfig, debug: tuple[str, ...] = ()
) -> onnx.ModelProto:
    """The backbone graph for ``palette`` (uint8 [J, 3] RGB) and discs of physical radius ``disc_radius_mm``.

    ``debug``: names of intermediate tensors (``ray_len``, ``ray_ok``, ``mass1``, ...) to add as extra outputs.
    """
    pal = np.asarray(palette, np.float32)
    n_j = pal.shape[0]
    size, hw = cfg.size, cfg.size * cfg.size
    w = cfg.half_window
    side = 2 * w + 1
    n_win = side * side
    g = _Graph()

    # ---- 1. core maps and peaks on the whole crop (at 1/peak_stride resolution) ------------------------------
    x = g.op("Reshape", "crops", g.i64([-1, hw, 3]))  # [n, HW, 3]
    ps = cfg.peak_stride
    low = size // ps
    if ps > 1:
        nchw = g.op("Transpose", "crops", perm=[0, 3, 1, 2])
        pooled = g.op("AveragePool", nchw, kernel_shape=[ps, ps], strides=[ps, ps])
        xl = g.op("Reshape", g.op("Transpose", pooled, perm=[0, 2, 3, 1]), g.i64([-1, low * low, 3]))
    else:
        xl = x
    xx = g.rsum(g.mul(xl, xl), [2])  # [n, hw, 1]
    xp = g.op("MatMul", xl, g.const(pal.T))  # [n, hw, J]
    d2 = g.add(g.sub(xx, g.mul(xp, g.f(2.0))), g.const((pal * pal).sum(axis=1)))
    core = g.fcast(g.op("Less", d2, g.f(cfg.core_dist**2)))  # [n, hw, J]
    core = g.op("Reshape", g.op("Transpose", core, perm=[0, 2, 1]), g.i64([-1, n_j, low, low]))
    if cfg.peak_erode:  # thin colour mixes along other discs' rims drop out
        inv = g.sub(g.f(1.0), core)
        core = g.sub(g.f(1.0), g.op("MaxPool", inv, kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    k = cfg.peak_box
    score = g.op("AveragePool", core, kernel_shape=[1, k], pads=[0, k // 2, 0, k // 2])
    score = g.op("AveragePool", score, kernel_shape=[k, 1], pads=[k // 2, 0, k // 2, 0])

    grid = (np.arange(low, dtype=np.float32) * ps + (ps - 1) / 2.0).astype(
        np.float32
    )  # crop px of low-res cells
    gx = g.const(grid.reshape(1, 1, 1, low))
    gy = g.const(grid.reshape(1, 1, low, 1))
    box = g.op("Reshape", "box_crop", g.i64([-1, 4, 1, 1]))

    def box_col(i: int) -> str:
        return g.op("Slice", box, g.i64([i]), g.i64([i + 1]), g.i64([1]))

    inside = g.mul(
        g.mul(g.fcast(g.op("GreaterOrEqual", gx, box_col(0))), g.fcast(g.op("LessOrEqual", gx, box_col(2)))),
        g.mul(g.fcast(g.op("GreaterOrEqual", gy, box_col(1))), g.fcast(g.op("LessOrEqual", gy, box_col(3)))),
    )  # [n, 1, low, low]
    score = g.op("Reshape", g.mul(score, inside), g.i64([-1, n_j, low * low]))
    peak = g.op("ArgMax", score, axis=2, keepdims=1)  # [n, J, 1] int64
    present = g.fcast(g.op("Greater", g.op("ReduceMax", score, axes=[2], keepdims=1), g.f(0.0)))  # [n, J, 1]
    py = g.op("Div", peak, g.i64(low))
    px = g.sub(peak, g.mul(py, g.i64(low)))
    if ps > 1:
        py = g.add(g.mul(py, g.i64(ps)), g.i64(ps // 2))
        px = g.add(g.mul(px, g.i64(ps)), g.i64(ps // 2))

    # ---- 2. gather windows around the peaks ------------------------------------------------------------------
    off = np.arange(-w, w + 1, dtype=np.int64)
    dy = np.repeat(off, side).reshape(1, 1, n_win)
    dx = np.tile(off, side).reshape(1, 1, n_win)
    wy_raw = g.add(py, g.const(dy, np.int64))  # [n, J, P]
    wx_raw = g.add(px, g.const(dx, np.int64))
    wy = g.op("Clip", wy_raw, g.i64(0), g.i64(size - 1))
    wx = g.op("Clip", wx_raw, g.i64(0), g.i64(size - 1))
    valid = g.mul(g.fcast(g.op("Equal", wy, wy_raw)), g.fcast(g.op("Equal", wx, wx_raw)))  # [n, J, P]
    flat = g.add(g.mul(wy, g.i64(size)), wx)
    idx = g.op("Expand", g.op("Reshape", flat, g.i64([-1, n_j * n_win, 1])), g.i64([1, 1, 3]))
    win = g.op("Reshape", g.op("GatherElements", x, idx, axis=1), g.i64([-1, n_j, n_win, 3]))  # [n, J, P, 3]

    # ---- 3. pass 1: background grey of the window, hard-ish disc weights, centroid ---------------------------
    pal_c = g.const(pal.reshape(1, n_j, 1, 3))
    diff = g.sub(win, pal_c)
    core_w = g.mul(
        g.fcast(g.op("Less", g.rsum(g.mul(diff, diff), [3], keepdims=0), g.f(cfg.core_dist**2))), valid
    )
    r_core = g.op("Sqrt", g.mul(g.rsum(core_w, [2]), g.f(1.0 / math.pi)))  # [n, J, 1]
    dxf = g.const(dx.astype(np.float32))
    dyf = g.const(dy.astype(np.float32))
    lum = g.op("ReduceMean", win, axes=[3], keepdims=0)  # [n, J, P]
    chroma = g.sub(g.op("ReduceMax", win, axes=[3], keepdims=0), g.op("ReduceMin", win, axes=[3], keepdims=0))
    greyish = g.mul(
        g.mul(
            g.fcast(g.op("Greater", lum, g.f(cfg.grey_range[0]))),
            g.fcast(g.op("Less", lum, g.f(cfg.grey_range[1]))),
        ),
        g.mul(g.fcast(g.op("Less", chroma, g.f(cfg.grey_chroma))), valid),
    )  # [n, J, P] pixels that may be background

    def background(weights: str, fallback: str | float) -> str:
        """Mean grey level of the greyish pixels among ``weights`` [n, J, P] -> [n, J, 1]."""
        bw = g.mul(greyish, weights)
        fb = fallback if isinstance(fallback, str) else g.f(fallback)
        eps = g.f(1e-3)
        return g.div(g.add(g.rsum(g.mul(bw, lum), [2]), g.mul(fb, eps)), g.add(g.rsum(bw, [2]), eps))

    pal_sum = pal.sum(axis=1)
    own = g.const(np.eye(n_j, dtype=np.float32).reshape(1, n_j, 1, n_j))

    def disc_fraction(grey: str) -> tuple[str, str]:
        """(alpha, residual / |c_j - g|), both [n, J, P, 1], for background grey [n, J, 1]: the pixel as a mix
        alpha * c_j + (1 - alpha) * g (linear in the colour, so blur and chroma subsampling keep its sum)."""
        grey4 = g.op("Unsqueeze", grey, g.i64([3]))  # [n, J, 1, 1]
        dj = g.sub(pal_c, grey4)  # [n, J, 1, 3]
        dj2 = g.rsum(g.mul(dj, dj), [3])
        cg = g.sub(win, grey4)  # [n, J, P, 3]
        alpha = g.div(g.rsum(g.mul(cg, dj), [3]), dj2)
        res = g.sub(cg, g.mul(alpha, dj))
        return alpha, g.op("Sqrt", g.div(g.rsum(g.mul(res, res), [3]), dj2))

    def claims(grey: str) -> str:
        """[n, J, P, 1]: how surely each pixel belongs to another palette colour's disc: its mix with the grey
        (share >= ``claim_alpha``) explains the pixel better, by ``claim_margin`` grey levels, than j's mix."""
        gk = g.op("Unsqueeze", grey, g.i64([3]))  # [n, J, 1, 1]
        g2x3 = g.mul(g.mul(gk, gk), g.f(3.0))
        cg = g.sub(win, gk)
        cc = g.rsum(g.mul(cg, cg), [3])  # [n, J, P, 1]
        # <c - g, p_k - g> = <c, p_k> - g sum(p_k) - g sum(c) + 3 g^2       [n, J, P, K]
        dots = g.sub(g.op("MatMul", win, g.const(pal.T)), g.mul(gk, g.const(pal_sum.reshape(1, 1, 1, n_j))))
        dots = g.add(g.sub(dots, g.mul(gk, g.rsum(win, [3]))), g2x3)
        dk2 = g.add(
            g.sub(
                g.const((pal * pal).sum(axis=1).reshape(1, 1, 1, n_j)),
                g.mul(g.mul(gk, g.f(2.0)), g.const(pal_sum.reshape(1, 1, 1, n_j))),
            ),
            g2x3,
        )  # |p_k - g|^2  [n, J, 1, K]
        ak = g.clip01(g.div(dots, dk2))  # share on the segment g..p_k
        res2 = g.add(g.sub(cc, g.mul(g.mul(ak, dots), g.f(2.0))), g.mul(g.mul(ak, ak), dk2))
        res_k = g.op("Sqrt", g.op("Max", res2, g.f(0.0)))  # [n, J, P, K]
        res_j = g.rsum(g.mul(res_k, own), [3])  # [n, J, P, 1]
        claim = g.mul(
            g.ramp(ak, cfg.claim_alpha[0], cfg.claim_alpha[1]),
            g.ramp(g.sub(res_j, res_k), cfg.claim_margin[0], cfg.claim_margin[1]),
        )
        return g.op("ReduceMax", g.mul(claim, g.sub(g.f(1.0), own)), axes=[3], keepdims=1)

    def flat(t: str) -> str:
        return g.op("Reshape", t, g.i64([-1, n_j, n_win]))

    rr0 = g.add(g.mul(dxf, dxf), g.mul(dyf, dyf))  # [1, 1, P]
    excl = g.add(r_core, g.f(2.5))
    grey1 = background(g.fcast(g.op("Greater", rr0, g.mul(excl, excl))), 50.0)
    alpha1, res1 = disc_fraction(grey1)

    claim = claims(grey1)
    mine = g.mul(flat(g.sub(g.f(1.0), claim)), valid)  # [n, J, P]
    gate1 = g.sub(g.f(1.0), g.ramp(res1, cfg.gate_lo, cfg.gate_hi))
    w1 = g.mul(flat(g.mul(g.ramp(alpha1, cfg.alpha_lo, cfg.alpha_hi), gate1)), mine)  # [n, J, P]
    mass1 = g.rsum(w1, [2])  # [n, J, 1]
    safe = g.op("Max", mass1, g.f(1e-6))
    cx = g.div(g.rsum(g.mul(w1, dxf), [2]), safe)
    cy = g.div(g.rsum(g.mul(w1, dyf), [2]), safe)
    kp_x, kp_y = g.add(g.fcast(px), cx), g.add(g.fcast(py), cy)  # pass-1 centroid [n, J, 1]

    # ---- 4. pass 2: disc fraction with the background of a ring around the centroid, sampled along rays ---------
    ex, ey = g.sub(dxf, cx), g.sub(dyf, cy)
    dist = g.op("Sqrt", g.add(g.mul(ex, ex), g.mul(ey, ey)))  # [n, J, P] from the centroid
    rho = g.add(g.op("Sqrt", g.mul(mass1, g.f(1.0 / math.pi))), g.f(cfg.region_margin))  # [n, J, 1]
    ring = g.mul(
        g.fcast(g.op("Greater", dist, g.add(rho, g.f(1.0)))),
        g.fcast(g.op("Less", dist, g.add(rho, g.f(1.0 + cfg.ring_width)))),
    )
    grey2 = background(ring, grey1)
    alpha2, res2 = disc_fraction(grey2)
    gate2 = g.sub(g.f(1.0), g.ramp(res2, cfg.gate2_lo, cfg.gate2_hi))
    a2 = g.op("Clip", alpha2, g.f(cfg.alpha2_range[0]), g.f(cfg.alpha2_range[1]))
    a2 = g.mul(flat(g.mul(a2, gate2)), mine)  # [n, J, P]
    # pixels that are not j's (another colour's, or a mix with one): a ray that meets them inside j's rim is cut
    foreign = g.op(
        "Max",
        claim,
        g.ramp(res2, cfg.foreign_res[0], cfg.foreign_res[1]),
        g.ramp(g.op("Neg", alpha2), cfg.foreign_neg[0], cfg.foreign_neg[1]),
    )  # [n, J, P, 1]
    two = g.op("Concat", g.op("Unsqueeze", a2, g.i64([3])), foreign, axis=3)  # [n, J, P, 2]
    two_img = g.op("Reshape", g.op("Transpose", two, perm=[0, 1, 3, 2]), g.i64([-1, 2, side, side]))

    # rays from the centroid: ray k's integral of the disc fraction is the disc's edge distance in direction k
    n_rays, step = cfg.n_rays, cfg.ray_step
    n_t = int(math.ceil(w / step))
    theta = 2.0 * math.pi * np.arange(n_rays) / n_rays
    t = step * np.arange(n_t, dtype=np.float32)
    ray_x = (np.cos(theta)[:, None] * t[None, :]).astype(np.float32)  # [R, T]
    ray_y = (np.sin(theta)[:, None] * t[None, :]).astype(np.float32)
    to_norm = 2.0 / (side - 1)
    cxn = g.op("Reshape", g.mul(g.add(cx, g.f(float(w))), g.f(to_norm)), g.i64([-1, 1, 1, 1]))
    cyn = g.op("Reshape", g.mul(g.add(cy, g.f(float(w))), g.f(to_norm)), g.i64([-1, 1, 1, 1]))
    gxn = g.add(g.sub(cxn, g.f(1.0)), g.const((ray_x * to_norm).reshape(1, n_rays, n_t, 1)))
    gyn = g.add(g.sub(cyn, g.f(1.0)), g.const((ray_y * to_norm).reshape(1, n_rays, n_t, 1)))
    samples = g.op(
        "GridSample",
        two_img,
        g.op("Concat", gxn, gyn, axis=3),
        align_corners=1,
        mode="bilinear",
        padding_mode="zeros",
    )  # [n*J, 2, R, T]
    samples = g.op("Reshape", samples, g.i64([-1, n_j, 2, n_rays, n_t]))
    f_rays = g.op("Squeeze", g.op("Slice", samples, g.i64([1]), g.i64([2]), g.i64([2])), g.i64([2]))
    samples = g.op("Squeeze", g.op("Slice", samples, g.i64([0]), g.i64([1]), g.i64([2])), g.i64([2]))
    rho4 = g.op("Unsqueeze", rho, g.i64([3]))  # [n, J, 1, 1]
    # sector area of ray k: integral of fraction * t dt = r_k^2 / 2 (blur moves mass along the ray but keeps it)
    t_w = (t * step).astype(np.float32)
    t_w[-1] /= 2.0
    t_mask = g.clip01(g.sub(g.add(rho4, g.f(0.5)), g.const(t.reshape(1, 1, 1, n_t))))
    ray_m = g.rsum(
        g.mul(g.mul(samples, t_mask), g.const(t_w.reshape(1, 1, 1, n_t))), [3], keepdims=0
    )  # [n,J,R]
    ray_len = g.op("Sqrt", g.op("Max", g.mul(ray_m, g.f(2.0)), g.f(0.0)))
    # rays that meet foreign pixels inside j's rim (r1 + 1) are replaced by the median ray, then a trimmed mean
    r1_4 = g.op("Unsqueeze", g.op("Sqrt", g.mul(mass1, g.f(1.0 / math.pi))), g.i64([3]))  # [n, J, 1, 1]
    rim_mask = g.fcast(
        g.op("LessOrEqual", g.const(t.reshape(1, 1, 1, n_t)), g.add(r1_4, g.f(cfg.rim_margin)))
    )
    cut = g.op("ReduceMax", g.mul(f_rays, rim_mask), axes=[3], keepdims=0)  # [n, J, R]
    if cfg.cut_spread:  # the rays beside a cut ray graze the same neighbour
        wrap = g.op(
            "Concat",
            g.op("Slice", cut, g.i64([n_rays - 1]), g.i64([n_rays]), g.i64([2])),
            cut,
            g.op("Slice", cut, g.i64([0]), g.i64([1]), g.i64([2])),
            axis=2,
        )
        cut = g.op("MaxPool", wrap, kernel_shape=[3])  # [n, J, R]
    ray_ok = g.sub(g.f(1.0), g.ramp(cut, 0.3, 0.6))
    n_ok = g.op("ReduceSum", ray_ok, g.i64([2]), keepdims=1)
    ok_frac = g.mul(n_ok, g.f(1.0 / n_rays))  # [n, J, 1]

    # fit r_k = r + d . e_k over the uncut rays (the disc's radius and the centroid's offset from its centre),
    # least squares with a small ridge on d, then once more without the rays it fits worst
    cos_t = g.const(np.cos(theta).astype(np.float32).reshape(1, 1, n_rays))
    sin_t = g.const(np.sin(theta).astype(np.float32).reshape(1, 1, n_rays))

    def fit(wts: str) -> tuple[str, str, str]:
        def sw(x: str) -> str:
            return g.rsum(g.mul(wts, x), [2])

        s0 = g.add(g.rsum(wts, [2]), g.f(1e-3))
        sc, ss = sw(cos_t), sw(sin_t)
        scc = g.add(sw(g.mul(cos_t, cos_t)), g.f(cfg.center_ridge))
        sss = g.add(sw(g.mul(sin_t, sin_t)), g.f(cfg.center_ridge))
        scs = sw(g.mul(cos_t, sin_t))
        b0, bc, bs = sw(ray_len), sw(g.mul(ray_len, cos_t)), sw(g.mul(ray_len, sin_t))
        return _solve3(g, ((s0, sc, ss), (sc, scc, scs), (ss, scs, sss)), (b0, bc, bs))

    taps = {
        "ray_len": ray_len,
        "ray_ok": ray_ok,
        "mass1": mass1,
        "grey1": grey1,
        "grey2": grey2,
        "a2": a2,
        "mine": mine,
        "alpha2": flat(alpha2),
        "gate2": flat(gate2),
        "win": g.op("Reshape", win, g.i64([-1, n_j, n_win * 3])),
    }
    r_fit, dxr, dyr = fit(ray_ok)
    err = g.op("Abs", g.sub(ray_len, g.add(r_fit, g.add(g.mul(dxr, cos_t), g.mul(dyr, sin_t)))))
    r_fit, dxr, dyr = fit(g.mul(ray_ok, g.sub(g.f(1.0), g.ramp(err, cfg.ray_outlier[0], cfg.ray_outlier[1]))))
    r_med = r_fit
    g.op("Concat", g.add(kp_x, dxr), g.add(kp_y, dyr), axis=2, out="kp2d_crop")  # [n, J, 2]

    # ---- 5. radius, depth, confidence ------------------------------------------------------------------------
    scale = g.op("Reshape", "crop_scale", g.i64([-1, 1, 1]))
    table = dict(cfg.radius_bias_px)
    bias = [table.get(tuple(int(v) for v in c), cfg.default_radius_bias_px) for c in np.asarray(palette)]
    radius = g.add(r_med, g.mul(scale, g.const(np.asarray(bias, np.float32).reshape(1, n_j, 1))))  # frame px
    radius = g.op("Max", radius, g.f(0.25))
    g.op("Squeeze", radius, g.i64([2]), out="radius_crop")
    focal = g.op("Reshape", "focal_crop_px", g.i64([-1, 1, 1]))
    depth = g.div(g.mul(focal, g.f(disc_radius_mm)), radius)
    g.op("Squeeze", depth, g.i64([2]), out="depth_mm")
    win_img = g.op("Reshape", w1, g.i64([-1, n_j, side, side]))
    chord = g.op(
        "Max",
        g.op("ReduceMax", g.rsum(win_img, [3], keepdims=0), axes=[2], keepdims=1),
        g.op("ReduceMax", g.rsum(win_img, [2], keepdims=0), axes=[2], keepdims=1),
    )  # [n, J, 1] longest row or column chord
    chord_area = g.op("Max", g.mul(g.mul(chord, chord), g.f(math.pi / 4.0)), g.f(1e-6))
    shape_ok = g.ramp(g.div(mass1, chord_area), cfg.conf_shape_lo, cfg.conf_shape_hi)
    enough = g.ramp(mass1, cfg.min_mass, cfg.full_mass)
    # completeness: the share of rays that reach the fitted rim (a disc in front of a neighbour is complete even
    # where its rays were cut; a partly covered disc is not)
    model_len = g.add(r_fit, g.add(g.mul(dxr, cos_t), g.mul(dyr, sin_t)))
    reach = g.div(ray_len, g.op("Max", model_len, g.f(0.25)))
    complete = g.op("ReduceMean", g.ramp(reach, cfg.ray_reach[0], cfg.ray_reach[1]), axes=[2], keepdims=1)
    # ... and enough uncut rays to trust the fit, and a fitted radius that agrees with the pass-1 mass
    agree = g.div(r_fit, g.op("Max", g.op("Sqrt", g.mul(mass1, g.f(1.0 / math.pi))), g.f(0.25)))
    sane = g.mul(g.ramp(agree, 0.5, 0.8), g.sub(g.f(1.0), g.ramp(agree, 1.6, 2.2)))
    trusted = g.mul(sane, g.ramp(ok_frac, cfg.conf_uncut[0], cfg.conf_uncut[1]))
    quality = g.mul(g.mul(shape_ok, trusted), g.ramp(complete, cfg.conf_rays[0], cfg.conf_rays[1]))
    conf = g.mul(g.mul(enough, present), g.op("Max", quality, g.f(cfg.conf_floor)))
    g.op("Squeeze", conf, g.i64([2]), out="conf")

    debug_outputs = []
    for name in debug:
        g.op("Identity", taps[name], out=f"debug_{name}")
        debug_outputs.append(
            helper.make_tensor_value_info(f"debug_{name}", TensorProto.FLOAT, ["n", n_j, f"d_{name}"])
        )
    graph = helper.make_graph(
        g.nodes,
        "markers_backbone",
        inputs=[
            helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["n", size, size, 3]),
            helper.make_tensor_value_info("crop_scale", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("focal_crop_px", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("box_crop", TensorProto.FLOAT, ["n", 4]),
        ],
        outputs=[
            helper.make_tensor_value_info("kp2d_crop", TensorProto.FLOAT, ["n", n_j, 2]),
            helper.make_tensor_value_info("radius_crop", TensorProto.FLOAT, ["n", n_j]),
            helper.make_tensor_value_info("depth_mm", TensorProto.FLOAT, ["n", n_j]),
            helper.make_tensor_value_info("conf", TensorProto.FLOAT, ["n", n_j]),
            *debug_outputs,
        ],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="mocapflow.models.markers",
        producer_version="1",
    )
    model.ir_version = 8  # opset 17's IR version; keeps the file loadable by older runtimes
    onnx.checker.check_model(model, full_check=True)
    return model
