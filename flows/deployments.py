"""The deployments `mocapflow serve` serves (and prefect.yaml declares for `prefect deploy`).

- ``nightly-cohort``: process-cohort on a cron schedule with a timezone (settings ``nightly_cron``, ``timezone``),
  scanning ``nightly_prefix``; paused (schedule inactive) until a prefix is set; unchanged videos cost nothing.
- ``adhoc-video`` / ``adhoc-cohort``: runs from the UI with typed forms.
- ``backfill``: resumable reprocessing on the Ray cluster.

`serve` and `prefect deploy` read the same settings: :func:`nightly_spec` is what both use, and prefect.yaml calls
it as a build step (:func:`nightly_step`) so its schedule, timezone, prefix and paused state come from the settings
(``MOCAPFLOW_NIGHTLY_CRON``, ``MOCAPFLOW_TIMEZONE``, ``MOCAPFLOW_NIGHTLY_PREFIX``) read when deploying.

What the UI's form shows comes from the flows' parameter types (flows/params.py), so `serve` and `prefect deploy`
give the same schema, generated when they deploy: every option with the deploy-time settings as its value (the
deployments' default ``options``) and as its default, the model set as a choice of the sets installed under
``modelsets_dir`` plus the built-in ones (built on first use) or a free folder / s3:// prefix, and the source inline
as one of videos / manifest / prefix (tabs). Each deployment runs at most ``deployment_concurrency_limit`` runs at
once (the rest wait): with a local Ray each run would start its own on the same CPUs; with ``ray_address`` set every
run joins that one cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mocapflow.settings import Settings, load_settings

NIGHTLY = "nightly-cohort"


def options_defaults(settings: Settings) -> dict[str, Any]:
    """The run options a deployment's form shows and a run without options uses: the settings read now."""
    from flows.params import RunOptions

    return RunOptions.from_settings(settings).model_dump(mode="json")


def nightly_spec(settings: Settings) -> dict[str, Any]:
    """The nightly deployment's schedule and parameters from the settings (paused while no prefix is set)."""
    active = bool(settings.nightly_prefix)
    options = options_defaults(settings)
    return {
        "cron": settings.nightly_cron,
        "timezone": settings.timezone,
        "active": active,
        "paused": not active,
        "prefix": settings.nightly_prefix,
        **(
            {"source": {"prefix": settings.nightly_prefix}} if active else {}
        ),  # no source until a prefix is set
        "options": options,
        "concurrency_limit": settings.deployment_concurrency_limit,
        "parameters": {"source": {"prefix": settings.nightly_prefix}, "options": options}
        if active
        else {"options": options},
        "description": f"Nightly cohort at '{settings.nightly_cron}' ({settings.timezone}) over "
        f"{settings.nightly_prefix or '<set MOCAPFLOW_NIGHTLY_PREFIX>'}",
    }


def nightly_step() -> dict[str, Any]:
    """prefect.yaml build step: :func:`nightly_spec` of the settings read now (``prefect deploy`` time)."""
    return nightly_spec(load_settings())


def enter_project() -> dict[str, str]:
    """prefect.yaml pull step: work from the folder holding the installed ``flows`` package, where every
    ``flows/<module>.py`` entrypoint resolves (a checkout, a Docker image's /app, or site-packages)."""
    import flows

    root = str(Path(flows.__file__).resolve().parents[1])
    os.chdir(root)
    return {"directory": root}


def build_deployments(settings: Settings) -> list[Any]:
    """RunnerDeployments for `serve` (settings read by the caller, when serving starts)."""
    from prefect.schedules import Cron

    from flows.cohort import backfill, process_cohort, process_video

    nightly = nightly_spec(settings)
    common = {"concurrency_limit": settings.deployment_concurrency_limit}
    options = {"options": nightly["options"]}
    deployments = [
        process_cohort.to_deployment(
            name=NIGHTLY,
            schedule=Cron(nightly["cron"], timezone=nightly["timezone"]),
            parameters=nightly["parameters"],
            paused=nightly["paused"],  # nothing to scan until a prefix is set
            tags=["mocapflow", "nightly"],
            description=nightly["description"],
            **common,
        ),
        process_video.to_deployment(
            name="adhoc-video",
            tags=["mocapflow", "adhoc"],
            parameters=options,
            description="One video.",
            **common,
        ),
        process_cohort.to_deployment(
            name="adhoc-cohort",
            tags=["mocapflow", "adhoc"],
            parameters=options,
            description="A cohort: videos, a manifest or a prefix.",
            **common,
        ),
        backfill.to_deployment(
            name="backfill",
            tags=["mocapflow", "backfill"],
            parameters=options,
            description="Resumable reprocessing of a large dataset (ledger per backfill name).",
            **common,
        ),
    ]
    return deployments
