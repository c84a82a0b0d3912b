"""What one flow run shares between its tasks: settings, the store, the model set, and (lazily) Ray and the pose pool.

Ray and the pose actors start only when a task first needs them, so a rerun whose every stage is already in the
store starts no actor and loads no model; a run in a process that served an earlier run may find that run's pose
actors still up, models loaded (:mod:`tasks.pose_pools`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from mocapflow.settings import Settings
from mocapflow.store import Store
from models.modelset import ModelSet, ModelSetError, resolve

logger = logging.getLogger(__name__)

BUILT_IN = ("markers", "blazepose")


def resolve_model_set(settings: Settings, build_missing: bool = True) -> ModelSet:
    """The run's model set; a missing built-in set (markers, blazepose) is built once into ``modelsets_dir``."""
    try:
        return resolve(
            settings.model_set, settings.modelsets_dir, settings.cache_dir, settings.storage_options()
        )
    except ModelSetError:
        if not (build_missing and settings.model_set in BUILT_IN):
            raise
    import importlib

    logger.info(
        "model set %r is not built yet; building it into %s", settings.model_set, settings.modelsets_dir
    )
    builder = importlib.import_module(f"models.{settings.model_set}.build")
    return builder.build(settings.modelsets_dir / settings.model_set, cache_dir=settings.cache_dir)


def current_prefect_api_url() -> str | None:
    """The API URL this process talks to (the temporary server's too), to hand on to Ray workers."""
    try:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        return str(url) if url else None
    except Exception:  # noqa: BLE001 - outside a Prefect context there is simply no URL to pass on
        return None


@dataclass
class FlowRuntime:
    settings: Settings
    model_set: ModelSet
    store: Store
    _lease: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    pose_calls: int = 0
    fit_calls: int = 0
    pose_pool_reused: bool | None = None  # None: this run needed no pose actor

    @classmethod
    def start(cls, settings: Settings) -> FlowRuntime:
        return cls(settings, resolve_model_set(settings), Store.from_settings(settings))

    def ensure_ray(self) -> None:
        from infra.ray_cluster import ensure_ray

        ensure_ray(self.settings, prefect_api_url=current_prefect_api_url())

    def pose_pool(self) -> Any:
        """The run's PosePool, on first use: the process's live pool for this model set and actor settings (left by
        an earlier run, models loaded), else a new one (:mod:`tasks.pose_pools`: ``settings.pose_actors`` actors
        anywhere, or by default on each live node as many as leave ``fit_cpus`` for the fits there)."""
        with self._lock:
            if self._lease is None:
                from tasks import pose_pools

                self.ensure_ray()
                self._lease = pose_pools.acquire(self.settings, self.model_set)
                self.pose_pool_reused = self._lease.reused
            return self._lease.pool

    def release_pose_pool(self) -> None:
        """This run's pose work is done: the pool stays up ``settings.pose_pool_idle_s`` for the next run (0: its
        actors stop now and their CPUs go to the fits)."""
        with self._lock:
            if self._lease is not None:
                self._lease.release(self.settings.pose_pool_idle_s)
                self._lease = None

    def count(self, stage: str) -> None:
        with self._lock:
            setattr(self, f"{stage}_calls", getattr(self, f"{stage}_calls") + 1)

    def close(self) -> None:
        self.release_pose_pool()
