"""Fit one committed keypoints table from storage and write the fit's outputs to a store."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from mocapflow.fit.fitting import FitOptions, fit_body_model, fit_table
from mocapflow.fit.outputs import fit_key_prefix, write_fit
from mocapflow.keypoints import validate_table
from mocapflow.store import SUCCESS, Store

logger = logging.getLogger(__name__)


def read_keypoints(uri: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The keypoints table at ``uri`` (a local path or s3:// URI of ``keypoints.parquet``), if it is committed."""
    folder, sep, name = uri.rstrip("/").rpartition("/")
    if not sep or not name.endswith(".parquet"):
        raise ValueError(f"{uri!r} is not the URI of a keypoints .parquet file (…/keypoints.parquet)")
    src = Store(folder, storage_options)
    if not src.exists(SUCCESS):
        raise FileNotFoundError(
            f"{uri}: no {SUCCESS} beside it, so the pose stage did not finish writing it; rerun the pose stage "
            "for this video"
        )
    table = src.read_table(name)
    validate_table(table)
    return table


def _median(x: np.ndarray) -> float | None:
    return float(np.nanmedian(x)) if np.isfinite(x).any() else None


def fit_keypoints(
    uri: str,
    store: Store,
    options: FitOptions,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read, fit and write one video; a fit already committed under the same key is skipped unless ``overwrite``.

    Returns a JSON-ready summary (prefix, URIs, rows, bytes, iterations, whether the optimiser converged and its
    final relative loss change, the observed fraction of frames and the number of spans, seconds, residuals).
    """
    t0 = time.perf_counter()
    table = read_keypoints(uri, storage_options)
    meta = validate_table(table)
    model = fit_body_model()
    prefix = fit_key_prefix(meta, options, model.name)
    if not overwrite and store.is_committed(prefix):
        logger.info("fit of %s already committed at %s; skipping", uri, store.uri(prefix))
        return {
            "keypoints_uri": uri,
            "video_sha256": meta.video_sha256,
            "prefix": prefix,
            "uri": store.uri(prefix),
            "skipped": True,
            "seconds": time.perf_counter() - t0,
        }
    result = fit_table(table, options, model)
    prefix, reports = write_fit(store, result, inputs={"keypoints_uri": uri})
    return {
        "keypoints_uri": uri,
        "video_sha256": meta.video_sha256,
        "prefix": prefix,
        "uri": store.uri(prefix),
        "skipped": False,
        "objects": [r.to_dict() for r in reports],
        "rows": len(result.frames),
        "bytes": sum(r.bytes for r in reports),
        "iterations": result.info.iterations,
        "converged": result.info.converged,
        "rel_loss_change": result.info.rel_change if np.isfinite(result.info.rel_change) else None,
        "observed_fraction": result.observed_fraction,
        "spans": result.n_spans,
        "fit_seconds": result.seconds,
        "seconds": time.perf_counter() - t0,
        "median_residual_2d_px": _median(result.residual_2d_px),
        "median_residual_3d_mm": _median(result.residual_3d_mm),
    }
