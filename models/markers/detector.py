"""The markers person detector as a TensorFlow graph (a ``tf.Module`` saved as a SavedModel).

Signature ``serving_default(image uint8 [H, W, 3] RGB, any size) -> {"boxes": float32 [K, 4], "scores": float32 [K]}``
with K = ``DetectorConfig.max_people`` fixed: people sorted by score, unused rows padded with score 0 and box 0.
Boxes are x0, y0, x1, y1 in px with pixel edges (the outermost marker pixels lie inside them).

The graph, in plain TF ops:
1. foreground: a pixel is marker-like when it is nearer to some palette colour than to every background grey
   (``grey_range``) and within ``color_radius`` of that colour;
2. typical disc radius of the frame: sqrt(marker pixels / (pi * colours present));
3. coarse grid (``stride`` px cells, max-pool), dilated by ``dilation_radii`` typical radii so that one person's
   discs merge into one blob while people further apart stay separate;
4. connected components by iterated 3x3 max-pool label propagation in a ``tf.while_loop``;
5. per component: box of its marker pixels (``tf.math.unsorted_segment_min/max``), score = fraction of the palette's
   colours present; components with too few pixels or colours are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray


@dataclass(frozen=True)
class DetectorConfig:
    """Detector constants baked into the graph."""

    max_people: int = 8
    stride: int = 8  # coarse grid cell (px) for connected components
    color_radius: float = 70.0  # RGB distance to a palette colour for a marker pixel
    grey_range: tuple[float, float] = (20.0, 95.0)  # background greys a marker pixel must be farther from
    dilation_radii: float = 7.0  # coarse dilation in typical disc radii
    min_dilation_px: float = 8.0
    max_dilation_px: float = 160.0
    min_pixels: int = 30  # marker pixels of a component
    min_colors: int = 4  # distinct palette colours of a component
    # pixels nearer than this to a background grey are never markers (palette colours are >= 104 from the greys)
    candidate_grey_dist: float = 40.0


def _foreground(image: tf.Tensor, palette: tf.Tensor, cfg: DetectorConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """image uint8 [H, W, 3] -> (marker pixels (y, x) int32 [P, 2], their nearest palette index int32 [P]).

    Only pixels away from every background grey are compared with the palette (a few percent of a frame).
    """
    c = tf.cast(image, tf.float32)
    grey = tf.clip_by_value(tf.reduce_mean(c, axis=2, keepdims=True), cfg.grey_range[0], cfg.grey_range[1])
    d2_grey = tf.reduce_sum(tf.square(c - grey), axis=2)
    cand = tf.cast(tf.where(d2_grey > cfg.candidate_grey_dist**2), tf.int32)  # [Q, 2]
    cc = tf.gather_nd(c, cand)
    # ||c - p||^2 = ||c||^2 - 2 c.p + ||p||^2, one matmul for all palette colours
    d2 = (
        tf.reduce_sum(cc * cc, axis=1, keepdims=True)
        - 2.0 * tf.matmul(cc, palette, transpose_b=True)
        + tf.reduce_sum(palette * palette, axis=1)[None, :]
    )
    d2_min = tf.reduce_min(d2, axis=1)
    fg = (d2_min < tf.gather_nd(d2_grey, cand)) & (d2_min < cfg.color_radius**2)
    keep = tf.where(fg)[:, 0]
    nearest = tf.argmin(d2, axis=1, output_type=tf.int32)
    return tf.gather(cand, keep), tf.gather(nearest, keep)


def _max3(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.max_pool2d(x, ksize=3, strides=1, padding="SAME")


def _components(mask: tf.Tensor) -> tf.Tensor:
    """bool [h, w] -> float32 labels [h, w] (0 = background), equal within 8-connected components."""
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]
    m = tf.cast(mask, tf.float32)[None, :, :, None]
    init = tf.reshape(tf.range(1, h * w + 1, dtype=tf.float32), [1, h, w, 1]) * m

    def step(labels: tf.Tensor) -> tf.Tensor:
        for _ in range(4):  # a few propagation steps per convergence check
            labels = _max3(labels) * m
        return labels

    def cond(prev: tf.Tensor, cur: tf.Tensor) -> tf.Tensor:
        return tf.reduce_any(tf.not_equal(prev, cur))

    def body(prev: tf.Tensor, cur: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return cur, step(cur)

    _, labels = tf.while_loop(cond, body, (init, step(init)), maximum_iterations=h * w)
    return labels[0, :, :, 0]


def _dilate(mask: tf.Tensor, cells: tf.Tensor) -> tf.Tensor:
    """bool [h, w] grown by ``cells`` (int32 scalar) with repeated 3x3 max-pools."""
    x = tf.cast(mask, tf.float32)[None, :, :, None]
    _, x = tf.while_loop(lambda i, _x: i < cells, lambda i, x_: (i + 1, _max3(x_)), (tf.constant(0), x))
    return x[0, :, :, 0] > 0.5


def detect(image: tf.Tensor, palette: tf.Tensor, cfg: DetectorConfig) -> dict[str, tf.Tensor]:
    """The detector graph for one frame (see the module docstring)."""
    n_colors = palette.shape[0]
    fg_idx, fg_color = _foreground(image, palette, cfg)  # [P, 2] (y, x), [P]
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    s = cfg.stride

    # typical disc radius of the frame from marker area and the number of colours present
    n_fg = tf.shape(fg_idx)[0]
    present = tf.math.unsorted_segment_max(tf.ones_like(fg_color), fg_color, n_colors)
    n_present = tf.reduce_sum(tf.maximum(present, 0))
    r_typ = tf.sqrt(tf.cast(n_fg, tf.float32) / (math.pi * tf.cast(tf.maximum(n_present, 1), tf.float32)))
    dil_px = tf.clip_by_value(cfg.dilation_radii * r_typ, cfg.min_dilation_px, cfg.max_dilation_px)
    cells = tf.cast(tf.math.ceil(dil_px / s), tf.int32)

    # coarse grid, dilation, connected components
    hc, wc = (h + s - 1) // s, (w + s - 1) // s
    coarse = tf.scatter_nd(fg_idx // s, tf.ones([n_fg], tf.float32), tf.stack([hc, wc])) > 0.5
    labels = _components(_dilate(coarse, cells))

    # per-component statistics over marker pixels
    lab = tf.gather_nd(labels, fg_idx // s)
    uniq, seg = tf.unique(lab)
    n_comp = tf.shape(uniq)[0]
    ys, xs = tf.cast(fg_idx[:, 0], tf.float32), tf.cast(fg_idx[:, 1], tf.float32)
    x0 = tf.math.unsorted_segment_min(xs, seg, n_comp) - 0.5
    y0 = tf.math.unsorted_segment_min(ys, seg, n_comp) - 0.5
    x1 = tf.math.unsorted_segment_max(xs, seg, n_comp) + 0.5
    y1 = tf.math.unsorted_segment_max(ys, seg, n_comp) + 0.5
    count = tf.math.unsorted_segment_sum(tf.ones_like(xs), seg, n_comp)
    colors = tf.math.unsorted_segment_max(tf.one_hot(fg_color, n_colors), seg, n_comp)  # [C, J]
    n_col = tf.reduce_sum(colors, axis=1)
    score = n_col / float(n_colors)
    keep = (count >= cfg.min_pixels) & (n_col >= cfg.min_colors)
    score = tf.where(keep, score, tf.zeros_like(score))
    boxes = tf.stack([x0, y0, x1, y1], axis=1)

    # top K by (score, pixel count), padded with zeros
    k = cfg.max_people
    rank = tf.where(keep, n_col + count / (count + 1000.0), tf.zeros_like(n_col))  # colours, then size
    rank = tf.concat([rank, tf.fill([k], -1.0)], axis=0)
    boxes = tf.concat([boxes, tf.zeros([k, 4])], axis=0)
    score = tf.concat([score, tf.zeros([k])], axis=0)
    _, top = tf.math.top_k(rank, k=k, sorted=True)
    score = tf.gather(score, top)
    boxes = tf.gather(boxes, top) * tf.cast(score > 0, tf.float32)[:, None]
    return {"boxes": tf.ensure_shape(boxes, [k, 4]), "scores": tf.ensure_shape(score, [k])}


class MarkerDetector(tf.Module):
    """SavedModel wrapper: constants only, no variables."""

    def __init__(self, palette: NDArray[np.uint8], cfg: DetectorConfig) -> None:
        super().__init__(name="marker_detector")
        self._palette = np.asarray(palette, np.float32)
        self._cfg = cfg

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return detect(image, tf.constant(self._palette), self._cfg)
