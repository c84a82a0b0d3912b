"""Rendering of marker discs and H.264 video writing.

Every marker is a screen-facing disc of fixed physical radius: its image radius is ``f * R / Z``. Discs are drawn far
first, so a nearer disc occludes a farther one, with an anti-aliased edge (a 1 px linear coverage ramp, symmetric
about the exact centre, so a disc's intensity centroid is its projected centre).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

DEFAULT_CRF = 16
DEFAULT_PRESET = "medium"
# x264's output depends on its thread count; a fixed count makes the same seed give the same bytes everywhere.
DEFAULT_ENCODER_THREADS = 2


def background(
    width: int,
    height: int,
    grey: float,
    *,
    texture_amplitude: float = 0.0,
    rng: np.random.Generator | None = None,
) -> NDArray[np.float32]:
    """A neutral grey float32 [H, W, 3] image; with ``texture_amplitude`` > 0 a smooth low-contrast grey texture.

    The texture sums value noise at three scales (bicubic upsampling of random grids), scaled so its peak deviation
    from ``grey`` is ``texture_amplitude`` grey levels; it has no chroma, so it never looks like a marker colour.
    """
    img = np.full((height, width), float(grey), np.float32)
    if texture_amplitude > 0:
        if rng is None:
            raise ValueError("a textured background needs rng (a numpy Generator) so that it is reproducible")
        tex = np.zeros((height, width), np.float32)
        for cell, weight in ((64, 1.0), (16, 0.6), (4, 0.3)):
            gh, gw = max(2, -(-height // cell) + 1), max(2, -(-width // cell) + 1)
            grid = rng.standard_normal((gh, gw)).astype(np.float32)
            tex += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        tex *= texture_amplitude / max(float(np.abs(tex).max()), 1e-6)
        img += tex
    return np.repeat(img[:, :, None], 3, axis=2)


def draw_discs(
    image: NDArray[np.float32],
    centres_px: ArrayLike,
    radii_px: ArrayLike,
    depths: ArrayLike,
    colors: ArrayLike,
) -> None:
    """Draw discs into ``image`` (float32 [H, W, 3], in place), farthest first.

    ``centres_px`` [N, 2] (u, v), ``radii_px`` [N], ``depths`` [N] (camera z; discs with z <= 0 or NaN are skipped),
    ``colors`` [N, 3] RGB in 0..255.
    """
    uv = np.asarray(centres_px, np.float64).reshape(-1, 2)
    r = np.asarray(radii_px, np.float64).reshape(-1)
    z = np.asarray(depths, np.float64).reshape(-1)
    col = np.asarray(colors, np.float32).reshape(-1, 3)
    if not (len(uv) == len(r) == len(z) == len(col)):
        raise ValueError(
            f"draw_discs: {len(uv)} centres, {len(r)} radii, {len(z)} depths, {len(col)} colours"
        )
    h, w = image.shape[:2]
    ok = np.isfinite(uv).all(axis=1) & np.isfinite(r) & (r > 0) & np.isfinite(z) & (z > 0)
    idx = np.flatnonzero(ok)
    for i in idx[np.argsort(-z[idx], kind="stable")]:
        u, v, ri = uv[i, 0], uv[i, 1], r[i]
        x0, x1 = max(int(np.floor(u - ri - 1)), 0), min(int(np.ceil(u + ri + 1)) + 1, w)
        y0, y1 = max(int(np.floor(v - ri - 1)), 0), min(int(np.ceil(v + ri + 1)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float64) - u
        ys = np.arange(y0, y1, dtype=np.float64) - v
        dist = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
        alpha = np.clip(ri + 0.5 - dist, 0.0, 1.0).astype(np.float32)[:, :, None]
        patch = image[y0:y1, x0:x1]
        patch += alpha * (col[i] - patch)


def centre_visible(
    centres_px: ArrayLike, radii_px: ArrayLike, depths: ArrayLike, width: int, height: int
) -> NDArray[np.bool_]:
    """Whether each disc's centre is in the image and covered by no nearer disc (not even its anti-aliased rim)."""
    uv = np.asarray(centres_px, np.float64).reshape(-1, 2)
    r = np.asarray(radii_px, np.float64).reshape(-1)
    z = np.asarray(depths, np.float64).reshape(-1)
    finite = np.isfinite(uv).all(axis=1) & np.isfinite(z) & (z > 0) & np.isfinite(r)
    inside = (
        finite
        & (uv[:, 0] >= -0.5)
        & (uv[:, 0] < width - 0.5)
        & (uv[:, 1] >= -0.5)
        & (uv[:, 1] < height - 0.5)
    )
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(uv[:, None, :] - uv[None, :, :], axis=-1)  # [j, k]
        nearer = z[None, :] < z[:, None]
        covers = nearer & finite[None, :] & (dist < r[None, :] + 0.5)
    return inside & ~covers.any(axis=1)


def to_uint8(
    image: NDArray[np.float32], noise_sigma: float = 0.0, rng: np.random.Generator | None = None
) -> NDArray[np.uint8]:
    """Round to uint8, adding Gaussian noise of ``noise_sigma`` grey levels (per pixel and channel) first."""
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("image noise needs rng (a numpy Generator) so that it is reproducible")
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class FrameRenderer:
    """Renders frames of discs over one fixed background (float32 [H, W, 3]).

    Without noise only the region around the discs is computed in float and rounded; the rest of the frame is
    the background rounded once, which gives the same pixels as rounding the whole frame.
    """

    def __init__(self, background: NDArray[np.float32]) -> None:
        self.background = np.asarray(background, np.float32)
        self.background_u8 = to_uint8(self.background)

    def __call__(
        self,
        centres_px: ArrayLike,
        radii_px: ArrayLike,
        depths: ArrayLike,
        colors: ArrayLike,
        *,
        noise_sigma: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> NDArray[np.uint8]:
        if noise_sigma > 0:
            img = self.background.copy()
            draw_discs(img, centres_px, radii_px, depths, colors)
            return to_uint8(img, noise_sigma, rng)
        frame = self.background_u8.copy()
        uv = np.asarray(centres_px, np.float64).reshape(-1, 2)
        r = np.asarray(radii_px, np.float64).reshape(-1)
        ok = np.isfinite(uv).all(axis=1) & np.isfinite(r)
        if not ok.any():
            return frame
        h, w = frame.shape[:2]
        x0 = int(np.clip(np.floor((uv[ok, 0] - r[ok]).min()) - 2, 0, w))
        x1 = int(np.clip(np.ceil((uv[ok, 0] + r[ok]).max()) + 3, 0, w))
        y0 = int(np.clip(np.floor((uv[ok, 1] - r[ok]).min()) - 2, 0, h))
        y1 = int(np.clip(np.ceil((uv[ok, 1] + r[ok]).max()) + 3, 0, h))
        if x0 >= x1 or y0 >= y1:
            return frame
        region = self.background[y0:y1, x0:x1].copy()
        draw_discs(region, uv - np.array([x0, y0]), r, depths, colors)
        frame[y0:y1, x0:x1] = to_uint8(region)
        return frame


@contextmanager
def h264_writer(
    path: Path,
    width: int,
    height: int,
    fps: float,
    *,
    crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
    threads: int = DEFAULT_ENCODER_THREADS,
) -> Iterator[Callable[[NDArray[np.uint8]], None]]:
    """Context manager yielding ``write(frame uint8 [H, W, 3] RGB)``; the file appears at ``path`` only when complete.

    H.264 (libx264, yuv420p, BT.601 tags) by the ffmpeg binary that ships in the imageio-ffmpeg wheel, fed raw
    frames on a pipe (a plain ``subprocess.Popen``: no ``preexec_fn``, so no fork hooks run in a JAX process).
    Written to a hidden partial file beside ``path`` and renamed into place, so an interrupted run never leaves a
    truncated video under the final name.
    """
    import imageio_ffmpeg

    if width % 2 or height % 2:
        raise ValueError(
            f"{path}: yuv420p needs an even frame size, got {width}x{height}; use even width/height"
        )
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    rate = Fraction(fps).limit_denominator(100_000)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{int(width)}x{int(height)}", "-framerate", str(rate),
        "-i", "-", "-an",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(int(crf)), "-preset", preset,
        "-threads", str(int(threads)),
        "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
        "-color_range", "tv",
        "-f", "mp4", str(partial),
    ]  # fmt: skip
    shape = (int(height), int(width), 3)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        assert proc.stdin is not None

        def failure(what: str) -> RuntimeError:
            log.seek(0)
            return RuntimeError(f"{path}: ffmpeg {what}: {log.read().decode(errors='replace').strip()}")

        def write(frame: NDArray[np.uint8]) -> None:
            if frame.shape != shape or frame.dtype != np.uint8:
                raise ValueError(f"{path}: frame must be uint8 {shape}, got {frame.dtype} {frame.shape}")
            try:
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())  # type: ignore[union-attr]
            except BrokenPipeError:
                proc.wait()
                raise failure(f"exited with code {proc.returncode}") from None

        try:
            yield write
            proc.stdin.close()
            if proc.wait() != 0:
                raise failure(f"exited with code {proc.returncode}")
            os.replace(partial, path)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            partial.unlink(missing_ok=True)
            raise
    logger.debug("wrote %s", path)
