"""The metamorphic suite end to end: still-photo videos -> pose keypoints -> fits -> :mod:`mocapflow.fit.metamorphic`.

From one photo of a person it writes four H.264 videos (a slow pan and zoom over the photo; the same mirrored; at
half resolution; time-reversed), runs a pose estimator on each (:func:`mocapflow.pose.pipeline.estimate_keypoints`),
fits each, and returns the figures. ``mocapflow validate`` can call :func:`run_suite` (the CLI wiring is the lead's).

The video builder here is private and minimal; the real-data module (``mocapflow.realdata``, being written in
parallel) is meant to own derived videos, and this should switch to it when it lands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.fit.metamorphic import MetamorphicFigures, metamorphic_figures

logger = logging.getLogger(__name__)

VARIANTS = ("base", "mirror", "half", "reverse")


@dataclass(frozen=True)
class StillVideoSpec:
    """A slow pan and zoom over a still photo: the crop window shrinks from the whole photo to ``1 / zoom`` of it
    and sweeps ``pan`` of the free width left and right once; output ``size`` (even), ``fps``, ``seconds``."""

    seconds: float = 3.0
    fps: float = 30.0
    size: tuple[int, int] = (544, 340)
    zoom: float = 1.15
    pan: float = 0.4


def still_frames(
    image: NDArray[np.uint8], spec: StillVideoSpec, *, mirror: bool = False, scale: float = 1.0, reverse: bool = False
) -> list[NDArray[np.uint8]]:
    """The frames (RGB uint8) of a pan-and-zoom video over ``image`` (RGB), optionally mirrored, rescaled,
    time-reversed. The same source window is used for every variant, so the variants show the same body."""
    import cv2

    h, w = image.shape[:2]
    ow, oh = spec.size
    n = max(2, int(round(spec.seconds * spec.fps)))
    out = []
    for i in range(n):
        s = i / (n - 1)
        z = 1.0 + (spec.zoom - 1.0) * s
        ww, wh = w / z, h / z
        x0 = (w - ww) * (0.5 + 0.5 * spec.pan * np.sin(2 * np.pi * s))
        y0 = (h - wh) * 0.5
        m = np.array([[ow / ww, 0.0, -x0 * ow / ww], [0.0, oh / wh, -y0 * oh / wh]])
        f = cv2.warpAffine(image, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if mirror:
            f = f[:, ::-1]
        if scale != 1.0:
            size = (int(ow * scale) // 2 * 2, int(oh * scale) // 2 * 2)
            f = cv2.resize(f, size, interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(f))
    return out[::-1] if reverse else out


def write_variants(image: NDArray[np.uint8], folder: Path, spec: StillVideoSpec) -> dict[str, Path]:
    """The four videos of the suite under ``folder`` (``<variant>.mp4``)."""
    from mocapflow.synth.render import h264_writer

    kwargs: dict[str, dict[str, Any]] = {
        "base": {},
        "mirror": {"mirror": True},
        "half": {"scale": 0.5},
        "reverse": {"reverse": True},
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in VARIANTS:
        frames = still_frames(image, spec, **kwargs[name])
        h, w = frames[0].shape[:2]
        path = folder / f"{name}.mp4"
        with h264_writer(path, w, h, spec.fps) as write:
            for f in frames:
                write(f)
        paths[name] = path
    return paths


def run_suite(
    image_path: str | Path,
    folder: Path,
    model_set: Any,
    *,
    spec: StillVideoSpec | None = None,
    fit_options: Any = None,
    threads: int = 1,
    fov_deg: float = 55.0,
) -> tuple[MetamorphicFigures, dict[str, Any]]:
    """Videos from ``image_path`` under ``folder``, keypoints by ``model_set`` (a :class:`models.modelset.ModelSet`),
    fits (``fit_options``: :class:`~mocapflow.fit.fitting.FitOptions`), figures. Returns the figures and the fit
    results by variant."""
    import cv2

    from mocapflow.camera import Intrinsics
    from mocapflow.fit.fitting import fit_table
    from mocapflow.pose.pipeline import PoseParams, estimate_keypoints
    from models.runtime import ThreadConfig, open_estimator

    spec = spec or StillVideoSpec()
    bgr = cv2.imread(str(image_path))
    if bgr is None:
        raise FileNotFoundError(f"cannot read the still photo {image_path}; give a JPEG or PNG of a person")
    paths = write_variants(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), folder, spec)
    estimator = open_estimator(model_set, ThreadConfig(threads=threads))
    fits = {}
    for name, path in paths.items():
        from mocapflow.video import probe

        info = probe(str(path))
        table = estimate_keypoints(str(path), estimator, Intrinsics.from_fov(info.width, info.height, fov_deg), PoseParams(), info)
        fits[name] = fit_table(table, fit_options)
        logger.info("metamorphic suite: %s fitted (%d frames)", name, table.num_rows)
    figures = metamorphic_figures(
        fits["base"], mirrored=fits["mirror"], half=fits["half"], reversed_=fits["reverse"]
    )
    return figures, fits
