"""The product's flows: one video, a cohort, and a resumable backfill. They wire the tasks in tasks/stages.py.

Per video: probe -> pose (Ray actor pool) -> fit (pinned Ray task), each submitted when the one before finished; at most
``max_videos_in_flight`` videos are submitted at once (a backfill of thousands never holds thousands of futures).
A video whose keypoints and fit are both in the store already (an unchanged video, rerun) runs its probe task only,
which returns both records (:func:`tasks.stages.committed_outputs`); the summary marks it cached.
A video that fails stops its own chain only; only transient I/O is retried (tasks/stages.py).

What a run shows in the Prefect UI: a name saying what runs (deployment or flow, the source, the date), a log line
before the model set is prepared, one per stage start and one per finished video (``[i/n]``), a progress artifact,
and at the end the keyed summary table and one keyed markdown artifact per video with its plot (tasks/publish.py).
Its final state is Completed, or Failed when any video failed, with a message naming the failed and low-coverage
videos; the state's data is the run's summary (a :class:`mocapflow.report.RunFailed` carrying it when Failed: read
it with :func:`run_summary`). The summary table is also written to ``runs/<run_id>/summary.parquet`` (committed last).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.params import CohortSource, RunOptions, Source, forms_from_settings
from mocapflow import report
from mocapflow.discovery import VideoSpec, discover
from mocapflow.report import FAILED, LOW_COVERAGE, OK, RunFailed, coverage_status, video_name
from mocapflow.settings import Settings
from mocapflow.store import KeyNotFoundError, safe_key
from tasks.publish import Progress, publish, publish_video, quiet_partial_failures
from tasks.runtime import BUILT_IN, FlowRuntime
from tasks.stages import fit_video, pose_video, probe_video, read_keypoints_meta

__all__ = ["backfill", "coverage_status", "process_cohort", "process_video", "run_summary"]


def run_summary(state: State) -> dict[str, Any]:
    """The summary of a finished run of these flows (Completed: its data; Failed: the RunFailed's summary)."""
    data = state.result(raise_on_failure=False)
    if isinstance(data, RunFailed):
        return data.summary
    if isinstance(data, dict):
        return data
    raise RuntimeError(f"the run ended without a summary: {state.type.value} {state.message}")


# -- run names --------------------------------------------------------------------------------------------------


def _source_label(value: Any) -> str:
    try:
        src = value if isinstance(value, CohortSource) else CohortSource.model_validate(value)
    except ValueError:
        return "?"
    return src.label()


def _run_date() -> str:
    when = flow_run.scheduled_start_time
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else time.strftime("%Y-%m-%d %H:%M")


def _run_name() -> str:
    """'<deployment or flow> · <source> · <date>', e.g. 'nightly-cohort · s3://lab/in · 2026-12-03 02:00'."""
    params = flow_run.parameters
    who = deployment.name or flow_run.flow_name
    if "video" in params:
        what = video_name(str(params["video"]))
    else:
        what = _source_label(params.get("source"))
        if flow_run.flow_name == "backfill":
            what = f"{params.get('name', 'default')}: {what}"
    return f"{who} · {what} · {_run_date()}"


def _scope(kind: str, backfill_name: str | None = None) -> str:
    """What separates this run's artifact keys: the deployment's name, else the flow kind (+ backfill name)."""
    base = deployment.name or kind
    return f"{base}-{backfill_name}" if backfill_name and backfill_name not in base else base


# -- per-video chains -------------------------------------------------------------------------------------------


def _state_error(fut: PrefectFuture) -> str:
    state = fut.state
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - reported, not raised
        return f"{type(e).__name__}: {e}"
    return state.message or state.name


def _pose_coverage(res: dict[str, Any], rt: FlowRuntime) -> tuple[int | None, float | None]:
    """(frames_detected, coverage) of a pose result; a cached result's come from the committed table's metadata."""
    if res.get("coverage") is not None:
        return res.get("frames_detected"), res["coverage"]
    if not res.get("key"):
        return None, None
    try:
        meta = read_keypoints_meta(rt, res["key"])
    except (OSError, ValueError) as e:  # reported as unknown coverage, never fatal for the run
        get_run_logger().warning("%s: cannot read the subject's coverage: %s", res.get("video"), e)
        return None, None
    return meta.frames_detected, meta.coverage


def _row(
    spec: VideoSpec, chain: list[PrefectFuture], rt: FlowRuntime, committed: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """One summary row from a video's finished stage futures (probe, pose, fit; a chain stops at its first failed
    stage), and its plot's thumbnail (a JPEG made where the fit ran, on a local store)."""
    row = report.empty_row(spec.uri, spec.subject_id)
    thumbnail = None
    results: list[tuple[str, dict[str, Any]]] = []
    for stage, fut in zip(("probe", "pose", "fit"), chain, strict=False):
        fut.wait()  # the local final state, with its data (``.state`` alone may fetch a data-less copy from the API)
        if not fut.state.is_completed():
            report.add_failure(row, stage, _state_error(fut))
            break
        results.append((stage, fut.result()))
    if committed is not None:  # the probe found both outputs in the store
        results += [("pose", committed["pose"]), ("fit", committed["fit"])]
    for stage, res in results:
        if stage == "probe":
            report.add_probe(row, res)
        elif stage == "pose":
            report.add_pose(row, res, *_pose_coverage(res, rt))
        else:
            report.add_fit(row, res)
            thumbnail = res.get("thumbnail")
    row["status"] = coverage_status(row["status"], row["coverage"], rt.settings.min_coverage)
    return row, thumbnail


def _committed_outputs(chain: list[PrefectFuture]) -> dict[str, Any] | None:
    """The pose and fit records a finished probe found committed (:func:`tasks.stages.committed_outputs`)."""
    if len(chain) != 1 or not chain[0].state.is_completed():
        return None
    res = chain[0].result()
    return res.get("committed") if isinstance(res, dict) else None


def _log_row(i: int, n: int, row: dict[str, Any]) -> None:
    logger = get_run_logger()
    name = video_name(row["video"])
    extra = {"mocapflow_row": row}
    if row["status"] == OK:
        times = f"pose {report.fmt(row['pose_s'])} s, fit {report.fmt(row['fit_s'])} s"
        logger.info("[%d/%d] %s: ok (%s)", i, n, name, "cached" if row["cached"] else times, extra=extra)
    elif row["status"] == LOW_COVERAGE:
        logger.warning(
            "[%d/%d] %s: low coverage: subject found in %s of %s frames",
            i,
            n,
            name,
            row["frames_detected"],
            row["frames"],
            extra=extra,
        )
    else:
        logger.error(
            "[%d/%d] %s: failed at %s: %s", i, n, name, row["failed_stage"], row["error"], extra=extra
        )


STAGES = (probe_video, pose_video, fit_video)


def run_videos(
    specs: list[VideoSpec],
    rt: FlowRuntime,
    scope: str,
    run_id: str,
    max_in_flight: int,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """probe -> pose -> fit per video, at most ``max_in_flight`` videos at once; the pose actors run fits between
    videos and stop once every video's pose stage is done and no fit uses them (:class:`tasks.runtime.FlowRuntime`).
    Each video's artifact is made as soon as its row is final. Rows in input order.

    A stage is submitted when the one before it has finished, with that stage's finished future as its input (the
    UI still draws the dependency): a future submitted as the input of another task before it finished cost one
    API read of its task run per video and stage (Prefect looks up whether an input's task is still running), and
    a task thread that waited for it."""
    progress = Progress(scope, len(specs))
    rtq = quote(rt)
    poses_left = len(specs)

    def pose_settled() -> None:
        nonlocal poses_left
        poses_left -= 1
        if poses_left == 0:
            rt.pose_work_done()

    in_flight: dict[Future[Any], tuple[VideoSpec, list[PrefectFuture]]] = {}

    def submit(spec: VideoSpec, chain: list[PrefectFuture]) -> None:
        d, stage = spec.to_dict(), len(chain)
        if stage == 0:
            fut = probe_video.submit(d, rtq)
        elif stage == 1:
            fut = pose_video.submit(d, chain[0], rtq)
        else:
            fut = fit_video.submit(chain[1], rtq, video=spec.uri)
        chain.append(fut)
        in_flight[fut.wrapped_future] = (spec, chain)

    waiting = iter(specs)
    for spec in itertools.islice(waiting, max_in_flight):
        submit(spec, [])
    rows: dict[str, dict[str, Any]] = {}
    while in_flight:
        done, _ = wait_futures(list(in_flight), return_when=FIRST_COMPLETED)
        for finished in done:
            spec, chain = in_flight.pop(finished)
            chain[-1].wait()  # its final state, locally (no API read when it is the next stage's input)
            ok = chain[-1].state.is_completed()
            committed = _committed_outputs(chain)  # both outputs in the store: no pose or fit task
            # this video's pose is done, or will never run
            if len(chain) == 2 or (len(chain) == 1 and (committed is not None or not ok)):
                pose_settled()
            if ok and committed is None and len(chain) < len(STAGES):
                submit(spec, chain)
                continue
            if (nxt := next(waiting, None)) is not None:
                submit(nxt, [])
            row, thumbnail = _row(spec, chain, rt, committed)
            rows[spec.uri] = row
            publish_video(rt.store, row, scope, run_id, rt.settings.min_coverage, thumbnail)
            _log_row(len(rows), len(specs), row)
            if on_row is not None:
                on_row(row)
            progress.advance()
    return [rows[s.uri] for s in specs]


# -- the flows --------------------------------------------------------------------------------------------------


def _cohort(
    source: CohortSource,
    settings: Settings,
    kind: str,
    scope: str,
    max_in_flight: int | None = None,
    select: Callable[[list[VideoSpec]], list[VideoSpec]] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> State:
    t0 = time.perf_counter()
    quiet_partial_failures()
    logger = get_run_logger()
    missing = settings.model_set in BUILT_IN and not (settings.modelsets_dir / settings.model_set).is_dir()
    logger.info(
        "%s: source %s; preparing model set %r%s",
        scope,
        source.label(),
        settings.model_set,
        f" (not built yet: building it into {settings.modelsets_dir} first, about a minute)"
        if missing
        else "",
    )
    rt = FlowRuntime.start(settings)
    try:
        specs = discover(
            source.videos, source.manifest, source.prefix, source.glob, settings.storage_options()
        )
        if select is not None:
            specs = select(specs)
        logger.info(
            "%s: %d videos, model set %s (%s), store %s; Ray %s",
            scope,
            len(specs),
            rt.model_set.manifest.name,
            rt.model_set.id,
            rt.store,
            settings.ray_address or "local (started on first use)",
        )
        run_id = str(flow_run.get_id() or uuid.uuid4())
        rows = run_videos(specs, rt, scope, run_id, max_in_flight or settings.max_videos_in_flight, on_row)
        return _finish(kind, scope, rt, run_id, rows, t0)
    finally:
        rt.close()


def _finish(
    kind: str, scope: str, rt: FlowRuntime, run_id: str, rows: list[dict[str, Any]], t0: float
) -> State:
    model = {"model_set": rt.model_set.manifest.name, "model_id": rt.model_set.id}
    min_cov = rt.settings.min_coverage
    uri = publish(rt.store, run_id, scope, kind, rows, time.perf_counter() - t0, model)
    summary = {
        "run_id": run_id,
        "summary_uri": uri,
        "videos": len(rows),
        "failed": sum(r["status"] == FAILED for r in rows),
        "low_coverage": sum(r["status"] == LOW_COVERAGE for r in rows),
        "pose_calls": rt.pose_calls,
        "fit_calls": rt.fit_calls,
        "fits_on_pose_actors": rt.fits_on_pose_actors,
        "pose_pool_reused": rt.pose_pool_reused,  # None: no pose work; False: this run started the actors
        "rows": rows,
    }
    end = report.outcome(rows, min_cov)
    if end.failed:
        return Failed(message=end.message, data=RunFailed(end.message, summary))
    return Completed(message=end.message, data=summary)


@flow(name="process-video", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=4))
def process_video(video: str, options: RunOptions = RunOptions()) -> State:  # noqa: B008 - pydantic default
    """One video through probe -> pose -> fit."""
    return _cohort(CohortSource(videos=[video]), options.settings(), "video", _scope("video"))


@flow(name="process-cohort", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=16))
def process_cohort(source: Source, options: RunOptions = RunOptions()) -> State:  # noqa: B008
    """Every video of a cohort; unchanged videos (same content, model and parameters) cost nothing."""
    return _cohort(source, options.settings(), "cohort", _scope("cohort"))


@flow(name="backfill", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=16))
def backfill(
    source: Source,
    options: RunOptions = RunOptions(),  # noqa: B008
    name: str = "default",
    only_failed: bool = False,
    max_in_flight: int | None = None,
) -> State:
    """Reprocess a large dataset on the Ray cluster: bounded in flight, resumable, ``only_failed`` reruns failures.

    Every finished video is recorded at once in the backfill's ledger (``backfills/<name>/status/``); outputs are
    content-addressed, so a rerun after an interruption skips every video whose outputs are committed.
    ``max_in_flight`` empty: the setting ``max_videos_in_flight``.
    """
    settings = options.settings()
    from mocapflow.store import Store, params_hash

    store = Store.from_settings(settings)
    ledger = safe_key("backfills", name, "status")

    def status_key(uri: str) -> str:
        return f"{ledger}/{params_hash({'uri': uri})}.json"

    def select(specs: list[VideoSpec]) -> list[VideoSpec]:
        if not only_failed:
            return specs
        keep = []
        for s in specs:
            try:
                if store.get_json(status_key(s.uri))["status"] == FAILED:
                    keep.append(s)
            except KeyNotFoundError:
                continue
        get_run_logger().info("only_failed: %d of %d videos failed last time", len(keep), len(specs))
        return keep

    def record(row: dict[str, Any]) -> None:
        store.put_json(
            status_key(row["video"]), {k: row[k] for k in ("video", "status", "failed_stage", "error")}
        )

    return _cohort(source, settings, "backfill", _scope("backfill", name), max_in_flight, select, record)


# the flows are defined (their import-time schemas keep the built-in defaults): schemas made from now on, for a
# deployment by `serve` or `prefect deploy`, show the settings read then
forms_from_settings()
