"""OpenSim outputs of a fit: the body model scaled to the subject (``.osim``) and its virtual markers (``.trc``).

The ``.osim`` carries the fit's per-body scales and one marker per body-model site (scaled with its body). The ``.trc``
holds those markers' positions from the fitted angles, on observed frames only (frames no one saw are not written),
so OpenSim's own inverse kinematics on the ``.trc`` and the ``.osim`` can be compared with mocapflow's angles, and
the fitted ``.mot`` plays on the ``.osim`` as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from mocapflow.fit.kinematics import posed_sites
from models.opensim_export import osim_text, trc_text

if TYPE_CHECKING:
    from mocapflow.fit.fitting import FitResult


def _rows(result: FitResult) -> NDArray[np.bool_]:
    """Frames written to the .trc: observed ones whose angles are finite."""
    return np.asarray(result.observed, bool) & np.isfinite(result.q).all(axis=1)


def model_osim(result: FitResult, name: str | None = None) -> str:
    """The subject-scaled ``.osim`` for a fit."""
    return osim_text(
        result.model, result.body_scale, name=name or f"mocapflow_{result.meta.video_sha256[:12]}"
    )


def virtual_markers(result: FitResult) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64]]:
    """(marker names, positions [T, S, 3] m in the fit's frame, time_s [T]) on the frames :func:`_rows` keeps."""
    rows = _rows(result)
    q = np.asarray(result.q[rows], np.float64)
    if q.shape[0] == 0:
        return list(result.model.site_names), np.zeros((0, len(result.model.sites), 3)), np.zeros(0)
    pos = posed_sites(result.model, q, np.asarray(result.body_scale))  # the fit's compiled kinematics
    return list(result.model.site_names), pos, np.asarray(result.time_s[rows], np.float64)


def markers_trc(result: FitResult) -> str:
    """The ``.trc`` of the virtual markers (mm, the fit's frame, observed frames only)."""
    names, pos, t = virtual_markers(result)
    return trc_text(names, pos, t, float(result.meta.fps), name="markers.trc")
