"""The deployments `mocapflow serve` serves (and prefect.yaml declares for `prefect deploy`).

- ``nightly-cohort``: process-cohort on a cron schedule with a timezone (settings ``nightly_cron``, ``timezone``),
  scanning ``nightly_prefix``; unchanged videos cost nothing.
- ``adhoc-video`` / ``adhoc-cohort``: runs from the UI with typed forms.
- ``backfill``: resumable reprocessing on the Ray cluster.
"""

from __future__ import annotations

from typing import Any

from flows.cohort import backfill, process_cohort, process_video
from mocapflow.settings import Settings

NIGHTLY = "nightly-cohort"


def build_deployments(settings: Settings) -> list[Any]:
    """RunnerDeployments for `serve` (settings read by the caller, when serving starts)."""
    from prefect.schedules import Cron

    nightly_params: dict[str, Any] = {}
    if settings.nightly_prefix:
        nightly_params = {"source": {"prefix": settings.nightly_prefix}}
    return [
        process_cohort.to_deployment(
            name=NIGHTLY,
            schedule=Cron(settings.nightly_cron, timezone=settings.timezone),
            parameters=nightly_params,
            paused=not settings.nightly_prefix,  # nothing to scan until a prefix is set
            tags=["mocapflow", "nightly"],
            description=f"Nightly cohort at '{settings.nightly_cron}' ({settings.timezone}) over "
            f"{settings.nightly_prefix or '<set MOCAPFLOW_NIGHTLY_PREFIX>'}",
        ),
        process_video.to_deployment(name="adhoc-video", tags=["mocapflow", "adhoc"]),
        process_cohort.to_deployment(name="adhoc-cohort", tags=["mocapflow", "adhoc"]),
        backfill.to_deployment(name="backfill", tags=["mocapflow", "backfill"]),
    ]
