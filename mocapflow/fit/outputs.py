"""What a fit leaves behind, as pure functions from a :class:`FitResult` to tables, bytes and text.

- ``angles.parquet``: frame, time_s, ``observed``, ``interpolated``, ``span``, one column per DOF (degrees for
  hinges, metres for slides; units in the schema metadata). One row per frame of the keypoints table's range.
  ``observed``: the frame had enough usable keypoints (:mod:`mocapflow.fit.spans` states the rule);
  ``interpolated``: not observed but inside a span (a gap of at most ``max_gap_s``, bridged by the smooth fit);
  ``span``: the span number, -1 for frames in longer gaps, whose angles are NaN (never invented). The schema
  metadata ``fit`` holds whether the optimiser converged, its final relative loss change, the observed fraction
  and the spans' times.
  ``dof_support``: per frame, each DOF's support (in the order of the DOF columns): the highest confidence among
  the keypoints it moves (:mod:`mocapflow.fit.spans`); the metadata's ``fit.weak_dofs`` lists the DOFs whose median
  support is below 0.5, weakly observed (their angles come from doubted keypoints and the priors: legs out of the
  picture, say). The plot draws them dotted; the run summary names them.
- ``residuals.parquet``: per frame the mean 2D reprojection error (px), mean root-relative 3D error (mm) and the
  number of keypoints used (NaN / 0 where not fitted).
- ``scales.json``: scale per group and per body, per-keypoint offsets (mm) and the fit's figures.
- ``angles.mot``: the angles as an OpenSim motion file holding only the rows of spans (observed frames and the
  bridged short gaps between them). Time is not uniform across a long gap (OpenSim's Storage allows it); the header
  line ``mocapflow_spans=t0-t1;t2-t3`` lists the spans, ``mocapflow_observed_fraction`` the observed fraction and
  ``mocapflow_weak_dofs`` the weakly observed DOFs (comma-separated, ``none`` if none).
- ``angles.png``: hips, knees, ankles, shoulders and elbows over time (ground truth overlaid when given); long gaps
  are shaded grey (no curve), bridged gaps light yellow.
- ``subject.osim`` and ``markers.trc``: the body model scaled to the subject (an OpenSim model whose coordinates
  are the DOFs, so ``angles.mot`` plays on it) and its virtual markers on the observed frames (OpenSim's IK input).

Both tables end with a ``source`` column (the video's URI when its keypoints were computed) and ``subject_id`` (a
cohort manifest's, else null); their schema metadata carries the same plus ``mocapflow.table``. Layout
(:func:`mocapflow.store.fit_key`): one folder per kind, so each reads as one dataset without filters —
``fits/angles/model=<id>/video=<sha256>/fit=<hash>/angles.parquet``, ``fits/residuals/...``, ``fits/mot/...``,
``fits/osim/...``, ``fits/trc/...``, ``fits/scales/...``, ``fits/plots/...``; the commit marker ``_SUCCESS.json``
sits beside ``angles.parquet`` and is written last (``angles.parquet`` just before it).

The root DOFs (pelvis translations and tilt/list/rotation) are in the world frame the fit estimated (floor at
y = 0, Y against gravity; ``camera_pose`` in the angles metadata and scales.json) unless ``world_frame`` is off.

:func:`write_fit` puts each into the store in one put and writes ``_SUCCESS.json`` last.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from mocapflow.fit.osim import markers_trc, model_osim
from mocapflow.fit.spans import WEAK_SUPPORT, span_bounds
from mocapflow.store import Store, WriteReport, fit_key, fit_prefix

if TYPE_CHECKING:
    from mocapflow.fit.fitting import FitOptions, FitResult
    from mocapflow.keypoints import KeypointsMeta

logger = logging.getLogger(__name__)

# 3: source / subject_id columns and metadata, one folder per output kind; 4: dof_support, fit.weak_dofs
FIT_SCHEMA_VERSION = 4
OBSERVED_RULE = (
    "a frame is observed when at least max(4, observed_fraction x the mapped keypoints) have confidence > 0 and a "
    "finite 2D position; unobserved runs up to max_gap_s inside a span are bridged (interpolated), longer ones are "
    "not fitted (NaN)"
)
SUPPORT_RULE = (
    f"a DOF's support is the highest confidence among the usable keypoints it moves; weakly observed: median over "
    f"the observed frames below {WEAK_SUPPORT}"
)
ANGLES, RESIDUALS, SCALES, MOT, PNG, OSIM, TRC = (
    "angles.parquet",
    "residuals.parquet",
    "scales.json",
    "angles.mot",
    "angles.png",
    "subject.osim",  # the body model scaled to this subject; angles.mot plays on it (mocapflow.fit.osim)
    "markers.trc",  # virtual markers on observed frames, for OpenSim's own inverse kinematics
)
FIT_OUTPUTS = (ANGLES, RESIDUALS, SCALES, MOT, PNG, OSIM, TRC)


def output_uris(store: Store, prefix: str) -> dict[str, str]:
    """Where each output of the fit committed at ``prefix`` lives (file name -> URI)."""
    return {name: store.uri(fit_key(prefix, name)) for name in FIT_OUTPUTS}


PLOT_DOFS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hip flexion", ("hip_flexion_r", "hip_flexion_l")),
    ("hip adduction", ("hip_adduction_r", "hip_adduction_l")),
    ("knee", ("knee_angle_r", "knee_angle_l")),
    ("ankle", ("ankle_angle_r", "ankle_angle_l")),
    ("shoulder flexion", ("arm_flex_r", "arm_flex_l")),
    ("shoulder adduction", ("arm_add_r", "arm_add_l")),
    ("elbow", ("elbow_flex_r", "elbow_flex_l")),
)


def dof_units(result: FitResult) -> dict[str, str]:
    return {d.name: ("deg" if d.kind == "hinge" else "m") for d in result.model.dofs}


def angles_in_units(result: FitResult) -> NDArray[np.float64]:
    """[N, D]: degrees for hinges, metres for slides."""
    hinge = np.array([d.kind == "hinge" for d in result.model.dofs])
    return np.where(hinge[None], np.rad2deg(result.q), result.q)


def _meta(result: FitResult, table: str, extra: Mapping[str, Any]) -> dict[bytes, bytes]:
    values = {
        "mocapflow.fit_schema_version": FIT_SCHEMA_VERSION,
        "mocapflow.table": table,
        "source": result.meta.source,
        "subject_id": result.meta.subject_id,
        "video_sha256": result.meta.video_sha256,
        "keypoints_model_id": result.meta.model_id,
        "keypoints_model_name": result.meta.model_name,
        "body_model": result.model.name,
        "fps": result.meta.fps,
        "fit_params": result.options.to_params(),
        **extra,
    }
    return {k.encode(): json.dumps(v, sort_keys=True).encode() for k, v in values.items()}


def span_times(result: FitResult) -> list[tuple[float, float]]:
    """(first, last) time (s) of each span."""
    return [(float(result.time_s[a]), float(result.time_s[b])) for a, b in span_bounds(result.span)]


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask, bool).astype(np.int8), [0]]))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True)
    )


def fit_status(result: FitResult) -> dict[str, Any]:
    """What a reader needs to trust the angles: convergence, observed fraction, spans (JSON-ready)."""
    info = result.info
    return {
        "converged": bool(info.converged),
        "rel_loss_change": _finite_or_none(info.rel_change),
        "iterations": int(info.iterations),
        "observed_fraction": round(result.observed_fraction, 6),
        "observed_frames": int(result.observed.sum()),
        "interpolated_frames": int(result.interpolated.sum()),
        "unfitted_frames": int((~result.fitted).sum()),
        "frames": len(result.frames),
        "max_gap_s": result.options.max_gap_s,
        "spans_s": [[round(a, 6), round(b, 6)] for a, b in span_times(result)],
        "observed_rule": OBSERVED_RULE,
        "weak_dofs": result.weak_dofs,
        "support_rule": SUPPORT_RULE,
    }


def angles_table(result: FitResult) -> pa.Table:
    """frame, time_s, observed, interpolated, span and one float64 column per DOF (NaN outside spans); ``units``
    and ``fit`` (:func:`fit_status`) in the schema metadata."""
    values = angles_in_units(result)
    columns: dict[str, pa.Array] = {
        "frame": pa.array(result.frames.astype(np.int32), pa.int32()),
        "time_s": pa.array(result.time_s.astype(np.float64), pa.float64()),
        "observed": pa.array(result.observed.astype(bool), pa.bool_()),
        "interpolated": pa.array(result.interpolated.astype(bool), pa.bool_()),
        "span": pa.array(result.span.astype(np.int32), pa.int32()),
    }
    for i, name in enumerate(result.model.dof_names):
        columns[name] = pa.array(values[:, i], pa.float64())
    support = (
        np.full((len(result.frames), result.model.n_dofs), np.nan, np.float32)
        if result.dof_support is None
        else np.asarray(result.dof_support, np.float32)
    )
    columns["dof_support"] = pa.FixedSizeListArray.from_arrays(pa.array(support.ravel()), result.model.n_dofs)
    columns.update(_source_columns(result))
    return pa.table(columns).replace_schema_metadata(
        _meta(
            result,
            "angles",
            {"units": dof_units(result), "fit": fit_status(result), "camera_pose": result.camera_pose},
        )
    )


def _source_columns(result: FitResult) -> dict[str, pa.Array]:
    """``source`` and ``subject_id`` repeated on every row, so a dataset of many videos can be grouped by them."""
    n = len(result.frames)
    return {
        "source": pa.array([result.meta.source] * n, pa.string()),
        "subject_id": pa.array([result.meta.subject_id] * n, pa.string()),
    }


def residuals_table(result: FitResult) -> pa.Table:
    """Per-frame means of the 2D (px) and root-relative 3D (mm) residuals; NaN where no keypoint was usable."""
    return pa.table(
        {
            "frame": pa.array(result.frames.astype(np.int32), pa.int32()),
            "time_s": pa.array(result.time_s, pa.float64()),
            "residual_2d_px": pa.array(result.residual_2d_px, pa.float64()),
            "residual_3d_mm": pa.array(result.residual_3d_mm, pa.float64()),
            "n_keypoints": pa.array(result.n_valid.astype(np.int32), pa.int32()),
            **_source_columns(result),
        }
    ).replace_schema_metadata(
        _meta(result, "residuals", {"units": {"residual_2d_px": "px", "residual_3d_mm": "mm"}})
    )


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def scales_document(result: FitResult) -> dict[str, Any]:
    """Body scales, keypoint offsets and the fit's figures (JSON-ready, no NaN)."""
    m = result.model
    body = m.group_matrix @ result.group_scale
    info = result.info
    return {
        "body_model": m.name,
        "group_scale": dict(zip(m.scale_groups, map(float, result.group_scale), strict=True)),
        "body_scale": dict(zip(m.body_names, map(float, result.body_scale), strict=True)),
        "group_scale_of_body": dict(zip(m.body_names, map(float, body), strict=True)),
        "keypoint_offset_mm": {
            name: [round(float(v) * 1000.0, 3) for v in off]
            for name, off in zip(result.keypoint_names, result.offset_m, strict=True)
        },
        "camera_pose": result.camera_pose,
        "fit": {
            **fit_status(result),
            "seconds": result.seconds,
            "optimiser_seconds": info.seconds,
            "final_loss": _finite_or_none(info.final_loss),
            "loss_terms": {k: _finite_or_none(v) for k, v in result.loss_terms.items()},
            "keypoint_noise_mm": _finite_or_none(result.noise_mm),
            "keypoint_noise_2d_ref_px": _finite_or_none(result.noise_2d_ref_px),
            "keypoint_noise_axes_mm": [_finite_or_none(float(v)) for v in result.noise_axes_mm],
            "depth_weight": _finite_or_none(result.depth_weight),
            "smooth_weight": result.smooth_weight,
            "w2d": _finite_or_none(result.w2d),
            "prior_weight": _finite_or_none(result.prior_weight),
            "knots_per_second": _finite_or_none(result.knots_per_second),
            "outlier_reweighting": [asdict(r) for r in result.robust],
            "preprocessing": result.preprocessing,
            "median_residual_2d_px": _finite_or_none(float(np.nanmedian(result.residual_2d_px)))
            if np.isfinite(result.residual_2d_px).any()
            else None,
            "median_residual_3d_mm": _finite_or_none(float(np.nanmedian(result.residual_3d_mm)))
            if np.isfinite(result.residual_3d_mm).any()
            else None,
        },
    }


def mot_text(result: FitResult, name: str = "mocapflow") -> str:
    """OpenSim .mot of the spans' rows only: header (name, version=1, nRows, nColumns, inDegrees=yes,
    ``mocapflow_spans``, ``mocapflow_observed_fraction``, ``mocapflow_weak_dofs``, endheader), then tab-separated ``time`` and one column per
    DOF (degrees; slides in metres, as OpenSim expects). Frames in gaps longer than ``max_gap_s`` have no row."""
    keep = result.fitted
    values = angles_in_units(result)[keep]
    names = ["time", *result.model.dof_names]
    spans = ";".join(f"{a:.6f}-{b:.6f}" for a, b in span_times(result))
    lines = [
        name,
        "version=1",
        f"nRows={values.shape[0]}",
        f"nColumns={len(names)}",
        "inDegrees=yes",
        f"mocapflow_spans={spans}",
        f"mocapflow_observed_fraction={result.observed_fraction:.6f}",
        f"mocapflow_weak_dofs={','.join(result.weak_dofs) or 'none'}",
        "endheader",
        "\t".join(names),
    ]
    for t, row in zip(result.time_s[keep], values, strict=True):
        lines.append("\t".join([f"{t:.6f}", *(f"{v:.6f}" for v in row)]))
    return "\n".join(lines) + "\n"


def read_mot(text: str) -> tuple[dict[str, str], list[str], NDArray[np.float64]]:
    """Parse a .mot file: (header key=value pairs plus ``name``, column names, values [nRows, nColumns])."""
    lines = text.splitlines()
    try:
        end = lines.index("endheader")
    except ValueError:
        raise ValueError("not an OpenSim .mot file: no 'endheader' line") from None
    header: dict[str, str] = {"name": lines[0]} if lines else {}
    for line in lines[1:end]:
        key, sep, value = line.partition("=")
        if sep:
            header[key.strip()] = value.strip()
    columns = lines[end + 1].split("\t")
    rows = [list(map(float, line.split("\t"))) for line in lines[end + 2 :] if line.strip()]
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
    if "nRows" in header and int(header["nRows"]) != data.shape[0]:
        raise ValueError(f".mot header says nRows={header['nRows']} but there are {data.shape[0]} rows")
    if "nColumns" in header and int(header["nColumns"]) != data.shape[1]:
        raise ValueError(
            f".mot header says nColumns={header['nColumns']} but there are {data.shape[1]} columns"
        )
    return header, columns, data


def plot_png(
    result: FitResult,
    truth: Mapping[str, NDArray[np.floating]] | None = None,
    panels: Sequence[tuple[str, Sequence[str]]] = PLOT_DOFS,
    dpi: int = 100,
) -> bytes:
    """PNG of the main joint angles (degrees) over time; ``truth`` maps DOF names to radians per frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas: no display, no global state
    from matplotlib.figure import Figure

    values = angles_in_units(result)
    weak = result.weak_dofs
    fig = Figure(figsize=(10, 2.0 * len(panels)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, dofs) in zip(axes, panels, strict=True):
        for dof, colour in zip(dofs, ("tab:red", "tab:blue"), strict=False):
            if dof not in result.model.dof_names:
                continue
            i = result.model.dof_index(dof)
            if dof in weak:
                label, style = f"{dof} fit, weakly observed ({weak[dof]:.2f})", ":"
            else:
                label, style = f"{dof} fit", "-"
            ax.plot(result.time_s, values[:, i], color=colour, lw=1.2, ls=style, label=label)
            if truth is not None and dof in truth:
                true = np.rad2deg(np.asarray(truth[dof], np.float64))[: len(result.time_s)]
                ax.plot(result.time_s[: len(true)], true, color=colour, lw=1.0, ls="--", label=f"{dof} truth")
        half = 0.5 / result.meta.fps
        for mask, colour, alpha in ((~result.fitted, "0.5", 0.35), (result.interpolated, "gold", 0.35)):
            for a, b in _runs(mask):
                ax.axvspan(result.time_s[a] - half, result.time_s[b] + half, color=colour, alpha=alpha, lw=0)
        ax.set_ylabel(f"{title} (deg)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(
        f"{result.meta.label}: fitted joint angles; observed {result.observed_fraction:.0%} of "
        f"frames\ngrey: not observed for more than {result.options.max_gap_s:g} s (not fitted), "
        "yellow: short gap bridged by the fit"
        + ("\ndotted: weakly observed (the keypoints it moves are doubted by the pose model)" if weak else "")
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def fit_params(meta: KeypointsMeta, options: FitOptions, body_model: str) -> dict[str, Any]:
    """Everything the fit's content key depends on besides the video and the keypoints model."""
    return {
        "fit": options.to_params(),
        "keypoints_params": meta.params,
        "body_model": body_model,
        "outputs": FIT_SCHEMA_VERSION,
    }


def fit_key_prefix(meta: KeypointsMeta, options: FitOptions, body_model: str) -> str:
    """``fits/angles/model=<keypoints model id>/video=<sha256>/fit=<hash of fit_params>`` (the commit prefix)."""
    return fit_prefix(meta.video_sha256, meta.model_id, fit_params(meta, options, body_model))


def write_fit(
    store: Store,
    result: FitResult,
    inputs: Mapping[str, Any] | None = None,
    truth: Mapping[str, NDArray[np.floating]] | None = None,
) -> tuple[str, list[WriteReport]]:
    """Write every output of ``result`` (each in its kind's folder, :func:`mocapflow.store.fit_key`), the angles
    table last, then ``_SUCCESS.json`` beside it; return (prefix, reports)."""
    prefix = fit_key_prefix(result.meta, result.options, result.model.name)
    reports = [
        store.write_table(fit_key(prefix, RESIDUALS), residuals_table(result)),
        store.put_json(fit_key(prefix, SCALES), scales_document(result)),
        store.put_bytes(fit_key(prefix, MOT), mot_text(result).encode("utf-8")),
        store.put_bytes(fit_key(prefix, PNG), plot_png(result, truth)),
        store.put_bytes(fit_key(prefix, OSIM), model_osim(result).encode("utf-8")),
        store.put_bytes(fit_key(prefix, TRC), markers_trc(result).encode("utf-8")),
        # the dataset readers see (fits/angles/) gets its file last: a crash before it leaves nothing half-listed
        store.write_table(fit_key(prefix, ANGLES), angles_table(result)),
    ]
    info = {
        "rows": len(result.frames),
        "bytes": sum(r.bytes for r in reports),
        "objects": [r.to_dict() for r in reports],
        "inputs": dict(inputs or {}),
        "video_sha256": result.meta.video_sha256,
        "source": result.meta.source,
        "subject_id": result.meta.subject_id,
        "outputs": output_uris(store, prefix),
        "keypoints_model_id": result.meta.model_id,
        "fit_params": fit_params(result.meta, result.options, result.model.name),
        "iterations": result.info.iterations,
        "converged": result.info.converged,
        "rel_loss_change": _finite_or_none(result.info.rel_change),
        "observed_fraction": result.observed_fraction,
        "seconds": result.seconds,
    }
    reports.append(store.commit(prefix, info))
    return prefix, reports
