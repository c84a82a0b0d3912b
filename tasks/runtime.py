"""What one flow run shares between its tasks: settings, the store, the model set, and (lazily) Ray and the pose pool.

Ray and the pose actors start only when a task first needs them, so a rerun whose every stage is already in the
store starts no actor and loads no model.
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
    _pool: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    pose_calls: int = 0
    fit_calls: int = 0

    @classmethod
    def start(cls, settings: Settings) -> FlowRuntime:
        return cls(settings, resolve_model_set(settings), Store.from_settings(settings))

    def ensure_ray(self) -> None:
        from infra.ray_cluster import ensure_ray

        ensure_ray(self.settings, prefect_api_url=current_prefect_api_url())

    def pose_pool(self) -> Any:
        """The PosePool, started on first use: ``settings.pose_actors`` actors anywhere, or by default on each
        live node as many as leave ``fit_cpus`` for the fits there (:func:`tasks.pose_ray.plan_pose_actors`)."""
        with self._lock:
            if self._pool is None:
                from tasks.pose_ray import PosePool, live_nodes, plan_pose_actors

                self.ensure_ray()
                s = self.settings
                if s.pose_actors:
                    self._pool = PosePool(s, n_actors=s.pose_actors)
                else:
                    nodes = live_nodes()
                    plan = plan_pose_actors(nodes, s.pose_cpus, s.fit_cpus)
                    if plan:
                        self._pool = PosePool(s, nodes=list(plan))
                    else:
                        # no node has CPUs for a pose actor AND a fit: a full-size actor would keep every fit
                        # waiting until the pose stage ends (and the flow waits for fits before it sends more
                        # videos to the pose stage); one actor asks Ray for what a fit leaves and shares CPUs
                        room = max((n.cpus for n in nodes), default=0) - s.fit_cpus
                        logger.warning(
                            "no node has %d CPUs for a pose actor and %d for a fit: one pose actor with %d threads "
                            "reserving %d CPUs, sharing CPUs with the fits",
                            s.pose_cpus,
                            s.fit_cpus,
                            s.pose_cpus,
                            max(0, room),
                        )
                        self._pool = PosePool(s, n_actors=1, reserve_cpus=max(0, room))
                    logger.info(
                        "pose actors per node: %s",
                        {n.node_id[:8]: plan.count(n.node_id) for n in nodes},
                    )
                logger.info(
                    "started %d pose actors x %d CPUs", self._pool.n_actors, self._pool.cpus_per_actor
                )
            return self._pool

    def release_pose_pool(self) -> None:
        """Stop the pose actors (their CPUs go to the fits) once no pose work is left."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
                logger.info("pose work done; pose actors stopped")

    def count(self, stage: str) -> None:
        with self._lock:
            setattr(self, f"{stage}_calls", getattr(self, f"{stage}_calls") + 1)

    def close(self) -> None:
        self.release_pose_pool()
