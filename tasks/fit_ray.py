"""The fitting stage on Ray: one CPU-pinned task per video, in worker processes that are reused across fits.

Each call leases and pins ``settings.fit_cpus`` CPUs and, in a worker's first fit, sets XLA's thread flags BEFORE
anything imports JAX (JAX sizes its thread pool when its CPU backend initialises). JAX is therefore imported only
inside :func:`fit_task`, never at module top: importing JAX before Ray forks its workers also triggers a fork warning
(ENVIRONMENT.md). Workers are reused (no ``max_calls=1``): a fresh process per fit paid JAX's import and the load of
every compiled function again (~3-5 s CPU, most of a short video's fit). A worker's JAX keeps the thread count of
its first fit, so :func:`submit_fit` puts the thread count in the task's runtime environment: Ray reuses a worker
only for tasks with the same runtime environment, so a worker never serves a fit sized for another count.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from mocapflow.cpus import current_affinity, lease_cpus
from mocapflow.settings import Settings

logger = logging.getLogger(__name__)


def _pin_and_configure(settings: Settings) -> dict[str, Any]:
    """Lease CPUs, pin, and put the XLA thread flags in the environment; must run before JAX initialises."""
    from mocapflow.fit.runtime import xla_flags  # no JAX import

    lease = lease_cpus(settings.fit_cpus, pin=settings.pin_cpus)
    os.environ["XLA_FLAGS"] = xla_flags(lease.threads, os.environ.get("XLA_FLAGS", ""))
    return {"threads": lease.threads, "leased_cpus": lease.cpus, "_lease": lease}


def worker_report(threads: int) -> dict[str, Any]:
    """What this process runs on: pid, CPU affinity, XLA flags, JAX's devices (JAX initialised here)."""
    import jax

    return {
        "pid": os.getpid(),
        "affinity": current_affinity(),
        "threads": threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_devices": jax.device_count(),
        "jax_platform": jax.default_backend(),
    }


def fit_task(
    keypoints_uri: str,
    settings: Settings,
    out_root: str | None = None,
    max_iters: int | None = None,
    thumbnail: bool = False,
) -> dict[str, Any]:
    """Pin, configure JAX, fit one keypoints table and write its outputs; returns the summary plus a worker report.
    ``thumbnail``: also the plot as a small JPEG (``summary["thumbnail"]``), for a run whose report inlines it.

    Plain function (testable without Ray); on Ray it runs as :data:`fit_remote`.
    """
    pinned = _pin_and_configure(settings)
    lease = pinned.pop("_lease")
    try:
        return fit_here(keypoints_uri, settings, pinned["threads"], out_root, max_iters, thumbnail, pinned)
    finally:
        lease.release()


def fit_here(
    keypoints_uri: str,
    settings: Settings,
    threads: int,
    out_root: str | None = None,
    max_iters: int | None = None,
    thumbnail: bool = False,
    worker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fit in this process, on the CPUs it already holds (a pinned fit worker, or a pose actor between its
    videos: :meth:`tasks.pose_ray.PoseWorker.fit`): JAX initialised with ``threads`` threads on its first fit."""
    if "XLA_FLAGS" not in os.environ or "intra_op_parallelism_threads" not in os.environ["XLA_FLAGS"]:
        from mocapflow.fit.runtime import xla_flags  # no JAX import

        os.environ["XLA_FLAGS"] = xla_flags(threads, os.environ.get("XLA_FLAGS", ""))
    report = worker_report(threads)  # initialises JAX (after pinning, where the caller pinned)
    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.run import fit_keypoints
    from mocapflow.fit.runtime import configure_jax_cache
    from mocapflow.store import Store, fit_key

    # every compiled function, not only those that took 0.5 s to compile: a fresh worker per fit then loads
    # all of them (a 5 s video's fit: ~10.5 -> ~8 CPU s in a fresh process, benchmarks/bench_fit.py)
    configure_jax_cache(settings.jax_cache_dir, min_compile_seconds=0.0)
    options = FitOptions.from_settings(settings, max_iters=max_iters)
    store = Store(out_root, settings.storage_options()) if out_root else Store.from_settings(settings)
    summary = fit_keypoints(keypoints_uri, store, options, settings.storage_options())
    summary["worker"] = {**report, **(worker or {})}
    if thumbnail and not summary.get("skipped"):
        from mocapflow.report import plot_thumbnail

        try:
            summary["thumbnail"] = plot_thumbnail(store.get_bytes(fit_key(summary["prefix"], "angles.png")))
        except Exception as e:  # noqa: BLE001 - a thumbnail is a convenience: the run makes it from the PNG
            logger.warning("no thumbnail of the plot of %s: %s", keypoints_uri, e)
    return summary


# a fit whose worker or node died is run again by Ray (a system failure, not the fit's own error: those are raised
# at once); its outputs go to the same content key, so a fit that ran twice is still written once
FIT_SYSTEM_RETRIES = 3
fit_remote = ray.remote(num_cpus=1, max_retries=FIT_SYSTEM_RETRIES)(fit_task)
FIT_THREADS_ENV = "MOCAPFLOW_FIT_WORKER_THREADS"  # only tells Ray's worker pool apart by thread count


def submit_fit(
    keypoints_uri: str,
    settings: Settings,
    out_root: str | None = None,
    max_iters: int | None = None,
    thumbnail: bool = False,
) -> ray.ObjectRef:
    """Submit one fit asking Ray for ``settings.fit_cpus`` CPUs (Ray must be initialised).

    Fits are spread over the nodes (Ray's ``SPREAD`` strategy): independent CPU-bound tasks gain nothing from
    packing onto the driver's node."""
    return fit_remote.options(
        num_cpus=settings.fit_cpus,
        name="fit",
        scheduling_strategy="SPREAD",
        # merged with the job's env_vars by Ray; a worker is reused only by fits with the same thread count
        runtime_env={"env_vars": {FIT_THREADS_ENV: str(settings.fit_cpus)}},
    ).remote(keypoints_uri, settings, out_root, max_iters, thumbnail)
