"""Image <-> model-input geometry: letterbox and rotated-crop affines, bilinear sampling, point mapping.

Conventions: image points are pixel-centre coordinates (0, 0 = centre of the top-left pixel). A model input of
size S has its own pixel-centre grid; a matrix ``M`` [2, 3] maps input-pixel coordinates to image coordinates
(``image = M[:, :2] @ p + M[:, 2]``). Model outputs given in "input units" (0 .. S edge to edge, as BlazePose's
landmarks and MediaPipe's normalised coordinates times S) are input pixels plus 0.5.

A region of interest (ROI) is ``[cx, cy, size, rotation]``: centre px, side px of a square, rotation in radians
(positive turns the crop's axes clockwise on screen, i.e. from +x towards +y in image coordinates).
"""

from __future__ import annotations

import math

import numpy as np


def normalize_radians(angle: np.ndarray | float) -> np.ndarray:
    """Wrap to [-pi, pi)."""
    return (np.asarray(angle, np.float64) + math.pi) % (2 * math.pi) - math.pi


def roi_from_alignment(
    center: np.ndarray, scale_point: np.ndarray, expand: float = 1.25, target_angle: float = math.pi / 2
) -> np.ndarray:
    """ROIs [m, 4] from alignment keypoints [m, 2] px (MediaPipe AlignmentPointsRects + RectTransformation).

    The square is centred on ``center`` with side ``2 * |scale_point - center| * expand``; its rotation turns the
    centre->scale-point direction to ``target_angle`` (pi/2 = straight up in the crop).
    """
    c = np.asarray(center, np.float64).reshape(-1, 2)
    d = np.asarray(scale_point, np.float64).reshape(-1, 2) - c
    size = 2.0 * np.hypot(d[:, 0], d[:, 1]) * expand
    rotation = normalize_radians(target_angle - np.arctan2(-d[:, 1], d[:, 0]))
    return np.stack([c[:, 0], c[:, 1], size, rotation], axis=1)


def roi_matrix(roi: np.ndarray, size: int) -> np.ndarray:
    """Matrix [2, 3] from the pixels of a ``size`` x ``size`` crop of ``roi`` to image px."""
    cx, cy, side, rot = (float(v) for v in roi)
    k = side / size
    r = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) * k
    half = (size - 1) / 2.0
    t = np.array([cx, cy]) - r @ np.array([half, half])
    return np.concatenate([r, t[:, None]], axis=1)


def letterbox_matrix(width: int, height: int, size: int) -> np.ndarray:
    """Matrix [2, 3] from the pixels of a ``size`` square that letterboxes a ``width`` x ``height`` image to image px.

    The image is scaled by ``size / max(width, height)`` and centred; the rest is padding.
    """
    k = size / max(width, height)
    pad_x = (size - width * k) / 2.0
    pad_y = (size - height * k) / 2.0
    return np.array(
        [[1 / k, 0.0, (0.5 - pad_x) / k - 0.5], [0.0, 1 / k, (0.5 - pad_y) / k - 0.5]], dtype=np.float64
    )


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points [..., 2] with a [2, 3] matrix."""
    p = np.asarray(points, np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(matrix[:, :2])
    return np.concatenate([a, (-a @ matrix[:, 2])[:, None]], axis=1)


def input_units_to_image(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Model outputs in input units (0 .. S, edge to edge) [..., 2] -> image px."""
    return apply_affine(matrix, np.asarray(points, np.float64) - 0.5)


def image_to_input_units(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Image px [..., 2] -> input units (0 .. S, edge to edge)."""
    return apply_affine(invert_affine(matrix), points) + 0.5


def sample_affine(image: np.ndarray, matrix: np.ndarray, size: int, border: str = "replicate") -> np.ndarray:
    """Bilinear ``size`` x ``size`` resampling of ``image`` [H, W, C] where output pixel p reads image at M p.

    ``border``: "replicate" repeats the edge pixels, "zero" reads zeros outside the image. Returns float32
    [size, size, C] in the image's value range.
    """
    if border not in ("replicate", "zero"):
        raise ValueError(f"border must be 'replicate' or 'zero', got {border!r}")
    h, w, c = image.shape
    jj, ii = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    src = apply_affine(matrix, np.stack([jj.ravel(), ii.ravel()], axis=-1))
    # keep far-away points finite and small; any point beyond the border reads the border value anyway
    x = np.clip(src[:, 0], -2.0, w + 1.0)
    y = np.clip(src[:, 1], -2.0, h + 1.0)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    x0i = x0.astype(np.intp)
    y0i = y0.astype(np.intp)
    flat = image.reshape(h * w, c)
    out = np.zeros((size * size, c), np.float32)
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi = x0i + dx
        yi = y0i + dy
        if border == "zero":
            weight = weight * ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
        idx = np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)
        out += flat[idx] * weight[:, None]
    return out.reshape(size, size, c)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int, border: str = "replicate") -> np.ndarray:
    """``sample_affine`` by OpenCV (bilinear, 1/32-px fixed point): uint8 [size, size, C], ~20x faster.

    The per-frame path uses this one; ``sample_affine`` stays as the plain-numpy definition it is tested against.
    """
    import cv2

    if border not in ("replicate", "zero"):
        raise ValueError(f"border must be 'replicate' or 'zero', got {border!r}")
    return cv2.warpAffine(
        image,
        np.asarray(matrix, np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def square_matrix(x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """Matrix [2, 3] from the pixels of a ``size`` x ``size`` input to image px, for the square region whose first
    pixel is (x0, y0) and whose side is ``side`` px (its edges at x0 - 0.5 .. x0 - 0.5 + side, and y likewise).

    A letterbox is the region of side max(W, H) centred on the image (``letterbox_matrix``).
    """
    k = side / size
    return np.array([[k, 0.0, x0 + 0.5 * k - 0.5], [0.0, k, y0 + 0.5 * k - 0.5]], dtype=np.float64)


def tile_starts(length: int, tile: int, min_overlap: int) -> np.ndarray:
    """Start px of the fewest tiles of side ``tile`` that cover ``length`` px with >= ``min_overlap`` px between
    neighbours, evenly spread from 0 to ``length - tile`` (a single tile, centred, when ``tile >= length``)."""
    if tile <= min_overlap:
        raise ValueError(f"tile ({tile} px) must be larger than its overlap ({min_overlap} px)")
    if tile >= length:
        return np.array([(length - tile) / 2.0])
    n = math.ceil((length - min_overlap) / (tile - min_overlap))
    n = max(n, 2)
    return np.linspace(0.0, length - tile, n)


def detection_regions(width: int, height: int, tile: int, overlap: float = 0.25) -> np.ndarray:
    """Square regions [r, 3] (x0, y0, side px) the detector is run on to acquire people of every size.

    Row 0 is the whole frame, letterboxed. Then a pyramid of tilings: tiles of side ``tile``, ``2 tile``, ``4 tile``,
    ... while a tile is smaller than the frame's longer side; neighbouring tiles overlap by ``overlap`` x tile.
    The detector finds a person whose body is >= ~60-75 px tall in its 224 px input, so a tile of side T finds
    people down to ~0.3 T px tall (module ``runtime`` docs give the measured figure), and each coarser level picks
    up the people too big for, or cut by, the finer tiles.
    """
    if tile < 32:
        raise ValueError(f"tile must be >= 32 px, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    side = max(width, height)
    regions = [((width - side) / 2.0, (height - side) / 2.0, float(side))]
    t = tile
    while t < side:
        o = int(round(overlap * t))
        for y0 in tile_starts(height, t, o):
            for x0 in tile_starts(width, t, o):
                regions.append((float(x0), float(y0), float(t)))
        t *= 2
    return np.asarray(regions, np.float64)
