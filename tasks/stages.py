"""Prefect tasks: probe, pose, fit, publish. Each wraps core functions; flows wire them.

Only I/O gets retries (STYLE.md #6): exponential backoff with jitter when the error is transient
(:func:`mocapflow.errors.is_transient`: object store, network, a dead actor); a bad video fails once, clearly.
Caching is the store itself: a stage's output lives under a key derived from (video sha256, model-set id,
parameters, the stage's code version) and is trusted only once its ``_SUCCESS.json`` exists; a task whose committed
output is already there returns the committed record in a ``Cached`` state and does no work, on a local folder and
on s3:// alike.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from mocapflow.camera import Intrinsics
from mocapflow.discovery import VideoSpec
from mocapflow.errors import is_transient, one_line, retry_transient
from mocapflow.leases import Leases, LeaseStats
from mocapflow.probeindex import probe_indexed
from mocapflow.store import SUCCESS, KeyNotFoundError, keypoints_key, keypoints_prefix
from mocapflow.video import check_duration
from tasks.runtime import FlowRuntime

if TYPE_CHECKING:
    from mocapflow.keypoints import KeypointsMeta

logger = logging.getLogger(__name__)

RETRIES = 3


class StageError(RuntimeError):
    """A stage failed for one video; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - we only classify it
        return is_transient(e)
    return False


_io_retries = {
    "cache_policy": NO_CACHE,  # the store is the cache (module docstring); Prefect need not hash the inputs
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_if_transient,
}


def _video_of(params: dict[str, Any]) -> str:
    spec, pose = (
        params.get("spec"),
        params.get("pose"),
    )  # ``pose`` may still be a future when the name is made
    uri = params.get("video") or (spec.get("uri") if isinstance(spec, dict) else None)
    uri = uri or (pose.get("video") if isinstance(pose, dict) else None) or "?"
    return posixpath.basename(str(uri).rstrip("/")) or str(uri)


def _task_name(stage: str) -> Any:
    """Task run names like 'pose walk_01.mp4' (the video's file name; its URI is in the logs and artifacts)."""

    def name() -> str:
        from prefect.runtime import task_run

        return f"{stage} {_video_of(task_run.parameters)}"

    return name


def _started(stage: str, video: str, what: str = "") -> None:
    get_run_logger().info("%s %s: started%s", stage, posixpath.basename(video.rstrip("/")), what)


def _cached(record: dict[str, Any], what: str) -> Completed:
    return Completed(name="Cached", message=f"{what} already in the store", data={**record, "cached": True})


def _leased(
    rt: FlowRuntime,
    prefix: str,
    committed: Callable[[], dict[str, Any] | None],
    compute: Callable[[], dict[str, Any]],
    what: str,
    kind: str,
) -> Any:
    """The stage's output under ``prefix``: committed already (a ``Cached`` state), else computed under this run's
    lease, or, while another live run holds the lease, that run's result once it lands (:mod:`mocapflow.leases`)."""
    from prefect.runtime import flow_run

    owner = str(flow_run.get_id() or f"pid-{os.getpid()}")
    stats = LeaseStats()
    result = Leases.from_settings(rt.store, owner, rt.settings).run_once(
        prefix, committed, compute, what, stats
    )
    if stats.outcome == "cached":
        if stats.waited_for is not None:
            return Completed(
                name="Cached",
                message=f"{kind} computed by run {stats.waited_for} (waited {stats.waited_s:.0f} s)",
                data={**result, "cached": True, "waited_for": stats.waited_for},
            )
        return _cached(result, kind)
    return result


def _committed(rt: FlowRuntime, prefix: str) -> dict[str, Any] | None:
    try:
        return rt.store.get_json(f"{prefix}/{SUCCESS}")
    except KeyNotFoundError:
        return None


@task(name="probe", task_run_name=_task_name("probe"), **_io_retries)
def probe_video(spec: dict[str, Any], rt: FlowRuntime) -> dict[str, Any]:
    """Metadata and content hash of one video (fails clearly for an empty or undecodable file, or a video whose
    manifest row could not be used, e.g. a bad camera file)."""
    if spec.get("error"):
        raise StageError(f"{spec['uri']}: {spec['error']}")
    _started("probe", spec["uri"])
    t0 = time.perf_counter()
    # an unchanged video (same size and ETag/mtime) is not downloaded and hashed again (mocapflow/probeindex.py)
    info, indexed = probe_indexed(spec["uri"], rt.store, rt.settings.storage_options())
    check_duration(info, rt.settings.min_video_s)
    result = {**info.to_dict(), "seconds": time.perf_counter() - t0, "indexed": indexed}
    if (done := committed_outputs(rt, spec, result)) is None:
        return result
    return Completed(
        message="keypoints and fit already in the store: no pose or fit task",
        data={**result, "committed": done},
    )


def committed_outputs(rt: FlowRuntime, spec: dict[str, Any], info: dict[str, Any]) -> dict[str, Any] | None:
    """The records the pose and fit tasks would return from the store (``{"pose": ..., "fit": ...}``) when this
    video's keypoints and fit, for this run's model set and options, are both committed; else None. A rerun then
    runs one task per unchanged video, not three (each Prefect task run costs the flow and its server ~0.1 s).
    Anything unexpected here only means the stages run as usual, and report it there."""
    try:
        pose_record, pose_prefix, _ = _pose_target(rt, spec, info)
        if (pose := _pose_committed(rt, pose_record, pose_prefix)) is None:
            return None
        meta = read_keypoints_meta(rt, pose["key"])
        pose = {**pose, "cached": True, "frames_detected": meta.frames_detected, "coverage": meta.coverage}
        fit_record, fit_prefix = _fit_target(rt, pose, meta)
        if (fit := _fit_committed(rt, fit_record, fit_prefix)) is None:
            return None
    except Exception as e:  # noqa: BLE001 - the pose and fit tasks meet (and report) the same trouble
        logger.debug("%s: no committed-outputs shortcut: %s", spec.get("uri"), e)
        return None
    return {"pose": pose, "fit": {**fit, "cached": True}}


def read_keypoints_meta(rt: FlowRuntime, key: str) -> KeypointsMeta:
    """A committed keypoints table's metadata, from its Parquet schema (no table read)."""
    import pyarrow.parquet as pq

    from mocapflow.keypoints import KeypointsMeta

    with rt.store.fs.open(rt.store.path(key), "rb") as f:
        return KeypointsMeta.from_metadata(pq.read_schema(f).metadata)


def _pose_target(
    rt: FlowRuntime, spec: dict[str, Any], info: dict[str, Any]
) -> tuple[dict[str, Any], str, Intrinsics]:
    """The keypoints table's record (video, key, URI), its store prefix and the camera it is computed with, for
    this run's model set and pose parameters."""
    from mocapflow.pose.pipeline import PoseParams, resolve_intrinsics

    video = VideoSpec.from_dict(spec)
    params = PoseParams.from_settings(rt.settings)
    intr = resolve_intrinsics(
        video.uri,
        info["width"],
        info["height"],
        params.default_fov_deg,
        video.intrinsics,
        rt.settings.storage_options(),
    )
    key_params = params.key_params(intr, rt.model_set.manifest.kind)
    key = keypoints_key(info["sha256"], rt.model_set.id, key_params)
    record = {
        "video": video.uri,
        "video_sha256": info["sha256"],
        "model_id": rt.model_set.id,
        "key": key,
        "uri": rt.store.uri(key),
    }
    return record, keypoints_prefix(info["sha256"], rt.model_set.id, key_params), intr


def _pose_committed(rt: FlowRuntime, record: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    if (done := _committed(rt, prefix)) is None:
        return None
    return {
        **record,
        "rows": done.get("rows"),
        "bytes": done.get("bytes"),
        "seconds": 0.0,
        "frames": done.get("rows"),
    }


@task(name="pose", task_run_name=_task_name("pose"), **_io_retries)
def pose_video(spec: dict[str, Any], info: dict[str, Any], rt: FlowRuntime) -> dict[str, Any]:
    """Keypoints table of one video: from the store when committed, else from the pose actor pool."""
    from mocapflow.pose.pipeline import PoseParams
    from tasks.pose_ray import PoseFailure

    video = VideoSpec.from_dict(spec)
    record, prefix, intr = _pose_target(rt, spec, info)

    def compute() -> dict[str, Any]:
        rt.count("pose")
        _started(
            "pose",
            video.uri,
            f" (model set {rt.model_set.manifest.name}; pose actors start on first use or are reused)",
        )
        outcome = rt.pose_pool().process_one(
            video.uri,
            PoseParams.from_settings(rt.settings),
            intr,
            video.subject_id,
            rt.store,
            rt.settings.storage_options(),
        )
        if isinstance(outcome, PoseFailure):
            raise StageError(str(outcome), transient=outcome.transient)
        return {**outcome.to_dict(), "cached": False}

    return _leased(
        rt,
        prefix,
        lambda: _pose_committed(rt, record, prefix),
        compute,
        f"pose {video.uri}",
        "keypoints",
    )


ROM_DOFS = (("hip", "hip_flexion"), ("knee", "knee_angle"), ("ankle", "ankle_angle"), ("elbow", "elbow_flex"))


def fit_prefix_for(rt: FlowRuntime, keypoints_key: str, meta: KeypointsMeta | None = None) -> str:
    """The fit's content key, from the keypoints table's metadata (read here unless given) and the run's fit
    options."""
    from mocapflow.fit.fitting import FitOptions, fit_body_model
    from mocapflow.fit.outputs import fit_key_prefix

    if meta is None:
        meta = retry_transient(
            lambda: read_keypoints_meta(rt, keypoints_key),
            f"read the schema of {rt.store.uri(keypoints_key)}",
        )
    return fit_key_prefix(meta, FitOptions.from_settings(rt.settings), fit_body_model().name)


def angles_summary(rt: FlowRuntime, prefix: str) -> str:
    """Range of motion of the main joints, e.g. 'ROM deg R/L: hip 41/40, knee 88*/90*, ...; * weakly observed' (a
    star marks a DOF the fit lists in ``fit.weak_dofs``: its keypoints doubted by the pose model)."""
    import json

    import numpy as np

    from mocapflow.store import fit_key

    table = rt.store.read_table(fit_key(prefix, "angles.parquet"))
    fit_meta = json.loads((table.schema.metadata or {}).get(b"fit", b"{}"))
    weak = fit_meta.get("weak_dofs") or {}
    parts = []
    for label, dof in ROM_DOFS:
        roms = [
            f"{np.nanmax(v) - np.nanmin(v):.0f}" + ("*" if f"{dof}_{side}" in weak else "")
            for side in "rl"  # frames in long gaps are NaN (not fitted)
            if f"{dof}_{side}" in table.column_names
            and np.isfinite(v := table[f"{dof}_{side}"].to_numpy(zero_copy_only=False)).any()
        ]
        if roms:
            parts.append(f"{label} " + "/".join(roms))
    starred = any("*" in p for p in parts)
    return "ROM deg R/L: " + ", ".join(parts) + ("; * weakly observed" if starred else "")


def _thumbnail(rt: FlowRuntime, prefix: str) -> bytes | None:
    """A committed fit's plot as the small JPEG a local store's report inlines (None on s3://: a presigned URL).
    Made here, in the task's thread (OpenCV releases the GIL), not in the flow's thread at the end of the run."""
    if not rt.store.is_local:
        return None
    from mocapflow.report import plot_thumbnail
    from mocapflow.store import fit_key

    try:
        return plot_thumbnail(rt.store.get_bytes(fit_key(prefix, "angles.png")))
    except Exception as e:  # noqa: BLE001 - a thumbnail is a convenience: the report keeps the plot's URI
        logger.warning("no thumbnail of %s: %s", rt.store.uri(prefix), e)
        return None


def fit_failure(video: str, exc: BaseException) -> StageError:
    """A fit error from Ray (a 1 kB traceback with colour codes, naming the keypoints by hash) as one line naming
    the video's source; transient only if the cause is (a dead worker, storage trouble)."""
    return StageError(f"{video}: fit failed: {one_line(exc)}", transient=is_transient(exc))


def _fit_target(
    rt: FlowRuntime, pose: dict[str, Any], meta: KeypointsMeta | None = None
) -> tuple[dict[str, Any], str]:
    """The fit's record (video, prefix, URIs of its outputs) and its store prefix, for this run's fit options
    (``meta``: the keypoints table's metadata, if already read)."""
    from mocapflow.fit.outputs import output_uris
    from mocapflow.store import fit_key

    prefix = fit_prefix_for(rt, pose["key"], meta)
    record = {
        "video": pose["video"],
        "prefix": prefix,
        "uri": rt.store.uri(prefix),
        "plot_uri": rt.store.uri(fit_key(prefix, "angles.png")),
        "outputs": output_uris(rt.store, prefix),
    }
    return record, prefix


def _fit_committed(rt: FlowRuntime, record: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    from mocapflow.store import fit_key

    if not rt.store.is_committed(prefix):
        return None
    figures = rt.store.get_json(fit_key(prefix, "scales.json")).get("fit", {})
    return {
        **record,
        "residual_2d_px": figures.get("median_residual_2d_px"),
        "residual_3d_mm": figures.get("median_residual_3d_mm"),
        "converged": figures.get("converged"),
        "rel_loss_change": figures.get("rel_loss_change"),
        "observed_fraction": figures.get("observed_fraction"),
        "seconds": 0.0,
        "angles_summary": angles_summary(rt, prefix),
        "thumbnail": _thumbnail(rt, prefix),
    }


@task(name="fit", task_run_name=_task_name("fit"), **_io_retries)
def fit_video(pose: dict[str, Any], rt: FlowRuntime, video: str | None = None) -> dict[str, Any]:
    """Joint angles of one video: from the store when committed, else a pinned JAX fit on Ray (``video``: its URI,
    for the task run's name)."""
    record, prefix = _fit_target(rt, pose)
    return _leased(
        rt,
        prefix,
        lambda: _fit_committed(rt, record, prefix),
        lambda: _fit(rt, pose, prefix, record),
        f"fit {pose['video']}",
        "fit",
    )


def _fit(rt: FlowRuntime, pose: dict[str, Any], prefix: str, record: dict[str, Any]) -> dict[str, Any]:
    from ray.exceptions import RayError

    rt.count("fit")
    _started("fit", pose["video"], f" (at most {rt.settings.fit_max_iters} steps)")
    t0 = time.perf_counter()
    try:
        # on a Ray fit worker or a pose actor with no video to do; the plot's thumbnail made there (local store)
        result = rt.run_fit(pose["uri"], thumbnail=rt.store.is_local)
    except RayError as e:
        raise fit_failure(pose["video"], e) from None
    if result["prefix"] != prefix:
        raise StageError(f"{pose['video']}: the fit wrote {result['prefix']}, expected {prefix}")
    return {
        **record,
        "seconds": result["seconds"],
        "wall_seconds": time.perf_counter() - t0,
        "residual_2d_px": result.get("median_residual_2d_px"),
        "residual_3d_mm": result.get("median_residual_3d_mm"),
        "iterations": result.get("iterations"),
        "converged": result.get("converged"),
        "rel_loss_change": result.get("rel_loss_change"),
        "observed_fraction": result.get("observed_fraction"),
        "angles_summary": angles_summary(rt, prefix),
        "thumbnail": result.get("thumbnail"),
        "cached": False,
    }
