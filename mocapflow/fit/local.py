"""Fits in this process (``mocapflow fit``, ``mocapflow validate fit``): pinned to ``settings.fit_cpus`` CPUs.

:func:`pin_for_fit` must run before anything initialises JAX (it imports no JAX itself); :func:`fit_many` then fits
each keypoints table and writes its outputs, one bad input failing alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mocapflow.settings import Settings

logger = logging.getLogger(__name__)


def pin_for_fit(settings: Settings) -> None:
    """Lease and pin CPUs and set XLA's thread flags and compilation cache, as the Ray fit task does
    (``tasks/fit_ray.py``). The lease is held until the process ends."""
    from mocapflow.cpus import lease_cpus
    from mocapflow.fit.runtime import configure_jax_cache, xla_flags

    lease = lease_cpus(settings.fit_cpus, pin=settings.pin_cpus)
    os.environ["XLA_FLAGS"] = xla_flags(lease.threads, os.environ.get("XLA_FLAGS", ""))
    configure_jax_cache(settings.jax_cache_dir, min_compile_seconds=0.0)


def fit_many(
    keypoints: list[str],
    settings: Settings,
    max_iters: int | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Fit each keypoints table (URI) into ``settings``' store; returns (the fit summaries, how many failed).

    Call :func:`pin_for_fit` first. A fit already committed under the same key is skipped (its summary says so).
    """
    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.run import fit_keypoints
    from mocapflow.store import Store

    options = FitOptions.from_settings(settings, max_iters=max_iters)
    store = Store.from_settings(settings)
    done: list[dict[str, Any]] = []
    failed = 0
    for uri in keypoints:
        try:
            summary = fit_keypoints(uri, store, options, settings.storage_options())
        except Exception as e:  # one bad input fails alone, clearly; the others go on
            failed += 1
            logger.debug("fit of %s failed", uri, exc_info=True)
            if on_error is not None:
                on_error(uri, e)
            continue
        done.append(summary)
        if on_result is not None:
            on_result(uri, summary)
    return done, failed
