"""A run's report in Prefect: the summary table and committed manifest, keyed artifacts, plots a browser can open.

Artifact keys (lowercase letters, digits, dashes; the Artifacts page lists keyed artifacts only, one history per key):
- ``<scope>-summary``: the run's table, where ``scope`` separates deployments: the deployment's name
  (``nightly-cohort``, ``adhoc-cohort``, ``adhoc-video``, ``backfill-<name>``) or, outside a deployment, the flow kind
  (``cohort``, ``video``, ``backfill-<name>``);
- ``video-<file name>-<6 hex of the URI's hash>``: one per video (its history across runs and deployments), with the
  joint-angle plot inline;
- ``<scope>-progress``: videos finished, while the run works.

Plots: on s3:// a presigned HTTPS URL (valid ``PLOT_URL_SECONDS``), on a local store the plot itself scaled to
``mocapflow.report.THUMB_WIDTH`` px as a JPEG ``data:`` URI (~50 kB; a browser never opens file:// links from an http page); the
full-size PNG's URI is in the markdown either way.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pyarrow as pa
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from mocapflow.report import (
    FAILED,
    LOW_COVERAGE,
    SUMMARY_SCHEMA,
    RunFailed,
    artifact_key,
    plot_thumbnail,
    table_rows,
    video_markdown,
    video_name,
)
from mocapflow.store import Store, run_prefix

logger = logging.getLogger(__name__)

COMMITTED = "_COMMITTED"
PLOT_URL_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


def plot_link(store: Store, plot_uri: str | None, thumbnail: bytes | None = None) -> str | None:
    """A URL a browser opens for a plot in ``store``: presigned https for s3://, a data: JPEG for a local folder
    (``thumbnail``: the JPEG made where the fit ran; else it is made here from the PNG)."""
    if not plot_uri or not plot_uri.startswith(store.root + "/"):
        return None
    key = plot_uri[len(store.root) + 1 :]
    try:
        if not store.is_local:
            return str(store.fs.url(store.path(key), expires=PLOT_URL_SECONDS))
        jpeg = thumbnail if thumbnail is not None else plot_thumbnail(store.get_bytes(key))
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    except Exception as e:  # noqa: BLE001 - a plot link is a convenience: the URI stays in the report
        logger.warning("no browser link for %s: %s", plot_uri, e)
        return None


class Progress:
    """A keyed progress artifact: videos finished of the run's total. Updated at most every ``every_s`` seconds (and
    at the last video): one API call per finished video was a per-video cost of a backfill of thousands."""

    def __init__(self, scope: str, total: int, every_s: float = 2.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.every_s = every_s
        self._shown = time.monotonic()
        self.id = create_progress_artifact(
            0.0, key=artifact_key(scope, "progress"), description=f"{scope}: videos finished of {total}"
        )

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.done >= self.total or now - self._shown >= self.every_s:
            self._shown = now
            update_progress_artifact(self.id, 100.0 * self.done / self.total)


def publish_video(
    store: Store,
    row: dict[str, Any],
    scope: str,
    run_id: str,
    min_coverage: float,
    thumbnail: bytes | None = None,
) -> None:
    """The video's keyed markdown artifact (its report, the plot inline), made as soon as its row is final: a run
    of many videos does not make them all at its end."""
    create_markdown_artifact(
        video_markdown(row, min_coverage, plot_link(store, row["plot_uri"], thumbnail)),
        key=artifact_key("video", video_name(row["video"]), unique=row["video"]),
        description=f"{video_name(row['video'])}: {row['status']} ({scope} run {run_id})",
    )


def publish(
    store: Store,
    run_id: str,
    scope: str,
    kind: str,
    rows: list[dict[str, Any]],
    seconds: float,
    model: dict[str, str],
) -> str:
    """Summary table to the store (committed last with ``_COMMITTED``), then the summary artifact (the per-video
    artifacts are made as each video finishes: :func:`publish_video`)."""
    table = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
    prefix = run_prefix(run_id)
    report = store.write_table(f"{prefix}/summary.parquet", table)
    failed = sum(r["status"] == FAILED for r in rows)
    low = sum(r["status"] == LOW_COVERAGE for r in rows)
    store.commit(
        prefix,
        {
            "kind": kind,
            "scope": scope,
            "videos": len(rows),
            "failed": failed,
            "low_coverage": low,
            "seconds": seconds,
            "summary": report.to_dict(),
            **model,
        },
        marker=COMMITTED,
    )
    create_table_artifact(
        key=artifact_key(scope, "summary"),
        table=table_rows(rows),
        description=f"{scope} run {run_id}: {len(rows) - failed - low} of {len(rows)} videos ok, "
        f"{low} with low subject coverage, {failed} failed; summary at {report.uri}",
    )
    return report.uri


_ENGINE_MESSAGE = "Engine execution exited with unexpected exception"


class _NoTracebackForRunFailed(logging.Filter):
    """Drops the engine's ERROR traceback for a run that ended Failed with :class:`RunFailed` (some videos failed):
    its state message already says which and why; a worker's engine re-raises the final state's data and logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, RunFailed) and record.getMessage().startswith(_ENGINE_MESSAGE))


def quiet_partial_failures() -> None:
    """Install the filter on Prefect's flow-run logger (once per process; called when a run starts)."""
    run_logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, _NoTracebackForRunFailed) for f in run_logger.filters):
        run_logger.addFilter(_NoTracebackForRunFailed())
