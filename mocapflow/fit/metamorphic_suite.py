"""The metamorphic suite end to end: still-photo videos -> pose keypoints -> fits -> :mod:`mocapflow.fit.metamorphic`.

The videos come from :mod:`mocapflow.realdata`: a slow pan and zoom over a real photo of a person (``clip_video``,
e.g. ``messi_pan``), and the same mirrored, at half resolution, time-reversed and merely re-encoded (``derived_video``;
the last gives the suite's floor, ``reencode_deg``). A pose model
set runs on each (:func:`mocapflow.pose.pipeline.estimate_keypoints`), each is fitted, and the figures compare them.
``mocapflow validate metamorphic`` runs :func:`run_suite`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mocapflow.fit.metamorphic import MetamorphicFigures, metamorphic_figures

logger = logging.getLogger(__name__)

VARIANTS = ("base", "mirror", "half", "reverse", "copy")
DEFAULT_CLIP = "messi_pan"


def variant_videos(clip: str, cache_dir: Path, seconds: float | None = None) -> dict[str, Path]:
    """The videos of the suite: the clip and its mirrored, half-resolution, time-reversed and re-encoded copies
    (cached)."""
    from mocapflow.realdata import clip_video, derived_video

    base = clip_video(clip, cache_dir, seconds=seconds)
    return {"base": base, **{k: derived_video(base, k) for k in VARIANTS[1:]}}


def video_keypoints(path: Path, estimator: Any, fov_deg: float = 55.0) -> Any:
    """The keypoints table of one video of the suite (its intrinsics from ``fov_deg``)."""
    from mocapflow.camera import Intrinsics
    from mocapflow.pose.pipeline import PoseParams, estimate_keypoints
    from mocapflow.video import probe

    info = probe(str(path))
    intr = Intrinsics.from_fov(info.width, info.height, fov_deg)
    return estimate_keypoints(str(path), estimator, intr, PoseParams(), info)


def run_suite(
    cache_dir: Path,
    model_set: Any,
    *,
    clip: str = DEFAULT_CLIP,
    seconds: float | None = None,
    fit_options: Any = None,
    threads: int = 1,
    fov_deg: float = 55.0,
    estimator: Any = None,
) -> tuple[MetamorphicFigures, dict[str, Any]]:
    """The videos of ``clip`` (real data in ``cache_dir``, fetched by ``mocapflow realdata``), keypoints by
    ``model_set`` (a :class:`models.modelset.ModelSet`), fits (``fit_options``:
    :class:`~mocapflow.fit.fitting.FitOptions`), figures. Returns the figures and the fit results by variant.
    ``estimator``: an open pose estimator of ``model_set`` (None: one with the runtime's defaults)."""
    from mocapflow.fit.fitting import fit_table
    from models.runtime import ThreadConfig, open_estimator

    paths = variant_videos(clip, cache_dir, seconds)
    estimator = estimator or open_estimator(model_set, ThreadConfig(threads=threads))
    fits = {}
    for name, path in paths.items():
        table = video_keypoints(path, estimator, fov_deg)
        fits[name] = fit_table(table, fit_options)
        logger.info("metamorphic suite: %s fitted (%d frames)", name, table.num_rows)
    figures = metamorphic_figures(
        fits["base"],
        mirrored=fits["mirror"],
        half=fits["half"],
        reversed_=fits["reverse"],
        reencoded=fits["copy"],
    )
    return figures, fits
