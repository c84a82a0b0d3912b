"""Start or connect to Ray from settings, with the environment its workers need.

Workers get their environment through ``runtime_env={"env_vars": ...}`` (ENVIRONMENT.md): PREFECT_API_URL when the
driver has one (without it, every worker that touches Prefect starts its own temporary server), Prefect's analytics
off, and quiet TensorFlow logs. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mocapflow.settings import Settings

logger = logging.getLogger(__name__)

NAMESPACE = "mocapflow"


def worker_env(prefect_api_url: str | None = None) -> dict[str, str]:
    """Environment variables for every Ray worker of this job."""
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    return env


def quiet_worker_env(verbose: bool = False) -> dict[str, str]:
    """Log levels for workers: TensorFlow's C++ INFO/WARNING lines off unless ``verbose`` (errors always show).

    TensorFlow prints a few start-up lines that no log level governs (absl's pre-init notice, oneDNN, XNNPACK);
    the pose worker captures those while its models load (:func:`tasks.pose_ray.startup_output_captured`).
    """
    if verbose:
        return {"TF_CPP_MIN_LOG_LEVEL": "0"}
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}


_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropRayNotice(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice (printed on every start; enabled is the safe default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_TOKEN_NOTICE)


def quiet_ray_notices(verbose: bool = False) -> None:
    """Unless ``verbose``: no token-auth notice and no "Ray deduplicates logs by default" notice in this driver.

    Called when a run starts (never at import). The dedup notice is a once-per-process message: marking it as
    already shown keeps deduplication itself on.
    """
    token_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if verbose:  # a verbose run shows the notice again, even after a quiet run in the same process
        for f in [f for f in token_logger.filters if isinstance(f, _DropRayNotice)]:
            token_logger.removeFilter(f)
        return
    from ray.util.debug import log_once

    log_once("log_dedup_warning")
    if not any(isinstance(f, _DropRayNotice) for f in token_logger.filters):
        token_logger.addFilter(_DropRayNotice())


def local_cpus() -> int:
    """CPUs this driver process may use (its affinity set, not the host's core count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_INIT_LOCK = threading.Lock()


def ensure_ray(
    settings: Settings, prefect_api_url: str | None = None, num_cpus: int | None = None
) -> dict[str, Any]:
    """Connect to ``settings.ray_address`` or start Ray locally (``num_cpus`` default: this process's CPUs).

    Idempotent: if Ray is already initialised in this process, it is reused as it is (a differing
    PREFECT_API_URL is logged, not applied). Returns the cluster's resources.
    """
    with _INIT_LOCK:  # a run's task threads (a pose task, fits) may all ask first at once: one ray.init
        return _ensure_ray(settings, prefect_api_url, num_cpus)


def _ensure_ray(settings: Settings, prefect_api_url: str | None, num_cpus: int | None) -> dict[str, Any]:
    import ray

    env = {**worker_env(prefect_api_url), **quiet_worker_env(settings.verbose)}
    quiet_ray_notices(settings.verbose)
    if ray.is_initialized():
        current = ray.get_runtime_context().runtime_env.get("env_vars", {}) or {}
        if prefect_api_url and current.get("PREFECT_API_URL") != prefect_api_url:
            logger.warning(
                "Ray is already running without PREFECT_API_URL=%s for its workers; restart the driver to apply it",
                prefect_api_url,
            )
        return dict(ray.cluster_resources())
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "namespace": NAMESPACE,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if settings.ray_address:
        logger.info("connecting to Ray at %s", settings.ray_address)
        ray.init(address=settings.ray_address, **kwargs)
    else:
        cpus = num_cpus or local_cpus()
        logger.info("starting a local Ray with %d CPUs", cpus)

        def start() -> None:
            with warnings.catch_warnings():
                # Ray starts its GCS and raylet with subprocess (fork + exec: no Python runs in the child), which
                # JAX's fork hook reports as a deadlock risk when JAX is already loaded in this driver (the demo's
                # synthesis).
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)

        _from_a_thread_that_lives(start)
        _restore_excepthook()
    return dict(ray.cluster_resources())


def _from_a_thread_that_lives(start: Callable[[], None]) -> None:
    """Run ``start`` (a local ``ray.init``) in a thread that lives as long as this process.

    Ray starts its GCS and raylet with ``PR_SET_PDEATHSIG`` = SIGKILL (ray._private.services), which Linux sends when
    the *thread* that started them exits. A flow starts Ray on first use, inside one of Prefect's task-runner threads;
    when the run ended and that thread pool closed, the local cluster was killed, and the next run in the same
    process (a served deployment, a test session) hung for 60 s on the dead GCS, then Ray ended the whole process.
    From the main thread it runs in place; from any other, in a daemon thread that then waits for ever.
    """
    if threading.current_thread() is threading.main_thread():
        start()
        return
    done = threading.Event()
    failure: list[BaseException] = []

    def owner() -> None:
        try:
            start()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            failure.append(e)
        finally:
            done.set()
        if not failure:
            threading.Event().wait()  # the cluster's processes die with this thread

    # Ray warns that it set no SIGTERM handler off the main thread: here that is by design (the process's own
    # handlers stay), so the warning is kept out of the user's terminal
    ray_worker_log = logging.getLogger("ray._private.worker")
    quiet = _DropMessage("SIGTERM handler is not set")
    ray_worker_log.addFilter(quiet)
    try:
        threading.Thread(target=owner, name="mocapflow-ray-owner", daemon=True).start()
        done.wait()
    finally:
        ray_worker_log.removeFilter(quiet)
    if failure:
        raise failure[0]


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _restore_excepthook() -> None:
    """Undo Ray's driver excepthook for a Ray this process started itself.

    ``import ray`` replaces ``sys.excepthook`` with one that first records the driver's uncaught exception in the GCS
    (for the dashboard's job view). An operator's Ctrl-C reaches the whole process group, so a local GCS is already
    gone when the KeyboardInterrupt reaches that hook, and it waits about 60 s for it before the driver exits.
    A local Ray here has no dashboard to show the record, so the previous hook is put back.
    """
    import sys

    from ray._private import worker as ray_worker

    if sys.excepthook is getattr(ray_worker, "custom_excepthook", None):
        sys.excepthook = getattr(ray_worker, "normal_excepthook", sys.__excepthook__)


def cluster_cpus() -> int:
    """Whole CPUs in the running Ray cluster."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def shutdown_ray() -> None:
    """Stop (or disconnect from) Ray if it is running."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
