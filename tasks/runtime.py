"""What one flow run shares between its tasks: settings, the store, the model set, and (lazily) Ray and the pose pool.

Ray and the pose actors start only when a task first needs them, so a rerun whose every stage is already in the
store starts no actor and loads no model; a run in a process that served an earlier run may find that run's pose
actors still up, models loaded (:mod:`tasks.pose_pools`).

Where fits run (:meth:`FlowRuntime.run_fit`): a pose actor holds its CPUs for its life, and with a bounded number of
videos in flight it idles between videos whenever the fits (most of the compute) are behind: a 2-CPU node ran its
fits on one CPU while the pose actor's CPU idled. So the run keeps at most as many fits on Ray as the CPUs the
pool leaves (``fit_cpus`` each), and sends the next fit to a pose actor of its pool that has no video to do
(:meth:`tasks.pose_ray.PosePool.borrow`: videos come first); the pool stays the run's while its fits use it.
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
FIT_POLL_S = 0.2  # a fit waiting for a CPU looks again this often for a pose actor with nothing to do


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
    _fit_cond: threading.Condition = field(init=False, repr=False)
    # fits this run keeps on Ray at once (None: not known yet)
    _ray_slots: int | None = field(default=None, repr=False)
    _ray_fits: int = field(default=0, repr=False)
    _actor_fits: int = field(default=0, repr=False)
    _fits_waiting: int = field(default=0, repr=False)
    _pose_done: bool = field(default=False, repr=False)
    pose_calls: int = 0
    fit_calls: int = 0
    fits_on_pose_actors: int = 0  # fits this run ran on its pose actors (between their videos)
    pose_pool_reused: bool | None = None  # None: this run needed no pose actor

    def __post_init__(self) -> None:
        self._fit_cond = threading.Condition(self._lock)

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
                self._ray_slots = None  # the pool's CPUs are not Ray's to give to fits any more
            return self._lease.pool

    def pose_work_done(self) -> None:
        """Every video's pose stage is done: the pool goes (:meth:`_release_if_unused`) once no fit of this run runs
        on its actors or waits for a CPU."""
        with self._lock:
            self._pose_done = True
            self._release_if_unused()

    def _release_if_unused(self) -> None:
        """Lock held. The pool stays up ``settings.pose_pool_idle_s`` for the next run (0: its actors stop now and
        their CPUs go to Ray's fits)."""
        if self._lease is not None and self._pose_done and not (self._actor_fits or self._fits_waiting):
            self._lease.release(self.settings.pose_pool_idle_s)
            self._lease = None
            self._ray_slots = None
            self._fit_cond.notify_all()

    def run_fit(self, keypoints_uri: str, thumbnail: bool = False) -> dict[str, Any]:
        """Fit one keypoints table on the first free CPU: a Ray fit task while this run has fewer on Ray than the
        CPUs the pool leaves, else a pose actor of the run's pool with no video to do (module docstring); the
        fit's summary (:func:`tasks.fit_ray.fit_task`). Raises Ray's errors (the caller maps them)."""
        import ray

        from tasks.fit_ray import submit_fit

        self.ensure_ray()
        pool, slot = self._fit_slot()
        try:
            if pool is None:
                ref = submit_fit(keypoints_uri, self.settings, thumbnail=thumbnail)
            else:
                ref = pool.fit_on(slot, keypoints_uri, self.settings, thumbnail)
            return ray.get(ref)
        finally:
            with self._lock:
                if pool is None:
                    self._ray_fits -= 1
                else:
                    pool.give_back(slot)
                    self._actor_fits -= 1
                self._release_if_unused()
                self._fit_cond.notify_all()

    def _fit_slot(self) -> tuple[Any, int]:
        """(None, 0) for a fit on Ray, or (pool, slot) for one on a borrowed pose actor; waits for either."""
        with self._lock:
            self._fits_waiting += 1
            try:
                while True:
                    if self._ray_fits < self._ray_fit_slots():
                        self._ray_fits += 1
                        return None, 0
                    pool = self._lease.pool if self._lease is not None else None
                    if pool is not None and self.settings.fits_on_pose_actors:
                        slot = pool.borrow()
                        if slot is not None:
                            self._actor_fits += 1
                            self.fits_on_pose_actors += 1
                            return pool, slot
                    self._fit_cond.wait(FIT_POLL_S)
            finally:
                self._fits_waiting -= 1

    def _ray_fit_slots(self) -> int:
        """Lock held. Fits this run keeps on Ray at once: the cluster's CPUs less those its pool holds, per fit."""
        if not self.settings.fits_on_pose_actors:
            return 1 << 30  # every fit goes to Ray at once (Ray queues them)
        if self._ray_slots is None:
            import ray

            cpus = float(ray.cluster_resources().get("CPU", 0))
            if self._lease is not None:
                pool = self._lease.pool
                cpus -= pool.alive * pool.reserve_cpus
            self._ray_slots = max(1, int(cpus // self.settings.fit_cpus))
        return self._ray_slots

    def count(self, stage: str) -> None:
        with self._lock:
            setattr(self, f"{stage}_calls", getattr(self, f"{stage}_calls") + 1)

    def close(self) -> None:
        with self._lock:
            self._pose_done = True
            self._actor_fits = self._fits_waiting = 0  # the run is over: nothing of it runs on the pool now
            self._release_if_unused()
