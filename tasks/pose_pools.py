"""Pose pools that outlive a flow run: one registry per process, so that a process serving many runs (``mocapflow
serve``, a Prefect worker, ``mocapflow bench``) starts the pose actors and loads the models once, not per run.

A run asks :func:`acquire` for a pool and gets a :class:`PoolLease`. The registry keys each pool by what makes two
runs' pools interchangeable (:class:`PoolKey`): the Ray cluster and session, the model set's content id, the settings
that change what an actor loads or how many CPUs it holds, and the actors' placement on the live nodes. A run whose
key matches a live pool gets that pool (no actor starts, no model loads); otherwise it gets a new one, after the
registry has stopped the idle pools of other keys (they would hold CPUs the new actors wait for).

When a run's pose work is done it releases its lease (:meth:`PoolLease.release`). A pool that no run holds is
stopped ``settings.pose_pool_idle_s`` seconds later by a reaper thread (0: at once, as a run that owns its pool
did), and every pool is stopped when the process exits. While a pool idles its actors keep their CPUs (Ray
reserves an actor's CPUs for its life): the fits of the run that left it get only the CPUs the placement plan left
them (``fit_cpus`` per node), where a released pool would give the fits every CPU.

Several runs in one process may hold the same pool at once: their pose tasks share its actors through
:meth:`tasks.pose_ray.PosePool.process_one` (a thread-safe queue of idle actors), each video on one actor. No run sees
another's failures: an actor that died is replaced by the pool (in a run, on the video that met it; between runs,
when the next run finds the idle pool with a dead actor, the whole pool is started again).

Not done: Ray named (detached) actors that would let separate processes share one pool. A detached actor outlives
every driver, so on a shared cluster nothing would stop an idle pool whose process is gone (its CPUs held for ever),
and two drivers' pools would each hand the same actors out as idle.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mocapflow.settings import Settings
from models.modelset import ModelSet

logger = logging.getLogger(__name__)

PING_TIMEOUT_S = (
    10.0  # an idle pool's actors answer in milliseconds; one still loading its models is not dead
)


@dataclass(frozen=True)
class PoolKey:
    """What two runs' pools must share to be one pool."""

    cluster: tuple[str, str]  # (GCS address, Ray session): a restarted Ray is another cluster
    model_id: str  # the model set's content hash
    actor: tuple[tuple[str, Any], ...]  # settings an actor loads its models with, or that size its CPUs
    nodes: tuple[str | None, ...]  # actor i bound to nodes[i] (None: anywhere)
    reserve_cpus: int  # CPUs each actor asks Ray for
    open_model: Any = None  # a test's estimator opener (None: the model set's own)


# settings that change what a pose actor loads or how many CPUs it holds (the rest travel with each call)
ACTOR_SETTINGS = (
    "pose_cpus",
    "pin_cpus",
    "ort_spinning",
    "test_time_augmentation",
    "max_people",
    "scan_interval_frames",
    "mirror_average",
    "max_scan_interval_frames",
    "backtrack_frames",
)


def _cluster() -> tuple[str, str]:
    import ray

    ctx = ray.get_runtime_context()
    return str(ctx.gcs_address), str(ctx.get_session_name())


def pool_plan(settings: Settings) -> tuple[list[str | None], int]:
    """(node per actor, CPUs each actor reserves) for the run's settings on the live cluster.

    ``settings.pose_actors`` actors anywhere, or by default on each live node as many as leave ``fit_cpus`` for the
    fits there (:func:`tasks.pose_ray.plan_pose_actors`); where no node has room for an actor and a fit, one actor
    that reserves only what a fit leaves and shares CPUs with the fits."""
    from tasks.pose_ray import live_nodes, plan_pose_actors

    s = settings
    if s.pose_actors:
        return [None] * s.pose_actors, s.pose_cpus
    nodes = live_nodes()
    plan = plan_pose_actors(nodes, s.pose_cpus, s.fit_cpus)
    if plan:
        return list(plan), s.pose_cpus
    # no node has CPUs for a pose actor AND a fit: a full-size actor would keep every fit waiting until the pose
    # stage ends (and the flow waits for fits before it sends more videos to the pose stage)
    room = max(0, max((n.cpus for n in nodes), default=0) - s.fit_cpus)
    logger.warning(
        "no node has %d CPUs for a pose actor and %d for a fit: one pose actor with %d threads reserving %d CPUs, "
        "sharing CPUs with the fits",
        s.pose_cpus,
        s.fit_cpus,
        s.pose_cpus,
        room,
    )
    return [None], room


def pool_key(settings: Settings, model_set: ModelSet, open_model: Any = None) -> PoolKey:
    """The key of the pool a run with these settings needs now (Ray must be initialised)."""
    nodes, reserve = pool_plan(settings)
    return PoolKey(
        cluster=_cluster(),
        model_id=model_set.id,
        actor=tuple((name, getattr(settings, name)) for name in ACTOR_SETTINGS),
        nodes=tuple(nodes),
        reserve_cpus=reserve,
        open_model=open_model,
    )


@dataclass
class _Entry:
    key: PoolKey
    pool: Any  # tasks.pose_ray.PosePool
    users: int = 0
    idle_since: float | None = None
    idle_s: float = 0.0
    runs: int = 0  # leases handed out so far (1: started for the first run)
    serial: int = 0  # order of creation in the registry


@dataclass
class PoolLease:
    """A run's hold on a pool; :meth:`release` once (idempotent) when the run's pose work is done."""

    pool: Any
    reused: bool  # the pool was already live (no actor started, no model loaded for this run)
    _registry: PoolRegistry = field(repr=False)
    _entry: _Entry = field(repr=False)
    _released: bool = field(default=False, repr=False)

    def release(self, idle_s: float) -> None:
        if not self._released:
            self._released = True
            self._registry._release(self._entry, idle_s)


class PoolRegistry:
    """The process's live pose pools (module docstring). Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._entries: dict[PoolKey, _Entry] = {}
        self._clock = clock
        self._reaper: threading.Thread | None = None
        self._closed = False
        self.started = 0  # pools started by this registry (tests, diagnostics)
        # False: a released pool stops at once, whatever its idle time (one_run_per_process)
        self.keep_idle = True

    # -- public -------------------------------------------------------------------------------------------------

    def acquire(self, settings: Settings, model_set: ModelSet, open_model: Any = None) -> PoolLease:
        """The live pool for the run's key, or a new one (Ray must be initialised)."""
        from tasks.pose_ray import PosePool

        key = pool_key(settings, model_set, open_model)
        with self._lock:
            self._closed = False
            entry = self._entries.get(key)
            if entry is not None and entry.users == 0 and not _responsive(entry):
                logger.warning("the idle pose pool has a dead actor; starting its actors again")
                self._stop(entry)
                entry = None
            reused = entry is not None
            if entry is None:
                for other in [e for e in self._entries.values() if e.users == 0]:
                    logger.info("stopping an idle pose pool of another model set or placement (its CPUs)")
                    self._stop(other)
                pool = PosePool(
                    settings,
                    nodes=list(key.nodes),
                    reserve_cpus=key.reserve_cpus,
                    open_model=open_model,
                )
                self.started += 1
                entry = self._entries[key] = _Entry(key, pool, serial=self.started)
                logger.info(
                    "started %d pose actors x %d CPUs (model set %s)",
                    pool.n_actors,
                    pool.cpus_per_actor,
                    model_set.manifest.name,
                )
            else:
                logger.info(
                    "reusing the live pose pool: %d actors, models loaded (model set %s)",
                    entry.pool.alive,
                    model_set.manifest.name,
                )
            entry.users += 1
            entry.runs += 1
            entry.idle_since = None
            return PoolLease(entry.pool, reused, self, entry)

    def live(self) -> list[Any]:
        """The pools alive now (held or idle)."""
        with self._lock:
            return [e.pool for e in self._entries.values()]

    def shutdown_all(self) -> None:
        """Stop every pool (the process exits, or Ray is about to stop)."""
        with self._lock:
            self._closed = True
            for entry in list(self._entries.values()):
                self._stop(entry)
            self._wake.notify_all()

    def reap(self) -> int:
        """Stop the pools idle longer than their idle time; returns how many were stopped."""
        with self._lock:
            return self._reap_locked()

    # -- internals ----------------------------------------------------------------------------------------------

    def _release(self, entry: _Entry, idle_s: float) -> None:
        with self._lock:
            entry.users -= 1
            if entry.users > 0 or self._entries.get(entry.key) is not entry:
                return
            # a pool started after this one (another model set, or the nodes changed) may be waiting for the CPUs
            # this one holds, and is the one the next run of its kind gets
            superseded = any(e.serial > entry.serial for e in self._entries.values())
            if idle_s <= 0 or not self.keep_idle or superseded:
                self._stop(entry)
                logger.info("pose work done; pose actors stopped")
                return
            entry.idle_since, entry.idle_s = self._clock(), idle_s
            logger.info("pose work done; the pose actors stay up %.0f s for the next run", idle_s)
            self._start_reaper()
            self._wake.notify_all()

    def _reap_locked(self) -> int:
        now, stopped = self._clock(), 0
        for entry in list(self._entries.values()):
            if entry.users == 0 and entry.idle_since is not None and now - entry.idle_since >= entry.idle_s:
                logger.info("pose pool idle for %.0f s: stopping its actors", now - entry.idle_since)
                self._stop(entry)
                stopped += 1
        return stopped

    def _next_deadline(self) -> float | None:
        due = [
            e.idle_since + e.idle_s
            for e in self._entries.values()
            if e.users == 0 and e.idle_since is not None
        ]
        return min(due) if due else None

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap_loop, name="mocapflow-pose-pool-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_loop(self) -> None:
        with self._lock:
            while not self._closed:
                self._reap_locked()
                deadline = self._next_deadline()
                if deadline is None and not self._entries:
                    self._reaper = None
                    return
                self._wake.wait(timeout=None if deadline is None else max(0.05, deadline - self._clock()))

    def _stop(self, entry: _Entry) -> None:
        """Stop a pool's actors (if its Ray is still the one running) and forget it. Lock held."""
        self._entries.pop(entry.key, None)
        if _ray_is(entry.key.cluster):
            entry.pool.shutdown()
        else:  # Ray was stopped or restarted: its actors are gone with it
            entry.pool.actors = []


def _ray_is(cluster: tuple[str, str]) -> bool:
    import ray

    if not ray.is_initialized():
        return False
    try:
        return _cluster() == cluster
    except Exception:  # noqa: BLE001 - a Ray shutting down has no runtime context to compare
        return False


def _responsive(entry: _Entry) -> bool:
    """False if an actor of the idle pool is dead (answers a ping with an actor error) or was retired."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    pool = entry.pool
    if not _ray_is(entry.key.cluster) or not pool.actors or pool.alive < pool.n_actors:
        return False
    refs = [a.ping.remote() for a in pool.actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PING_TIMEOUT_S)
    for ref in ready:
        try:
            ray.get(ref, timeout=0)
        except GetTimeoutError:
            continue
        except RayError:
            return False
    return bool(refs)


_registry: PoolRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> PoolRegistry:
    """The process's registry, made on first use; every pool in it is stopped when the process exits."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = PoolRegistry()
            atexit.register(_shutdown_at_exit)
        return _registry


def _shutdown_at_exit() -> None:
    if _registry is not None:
        with contextlib.suppress(Exception):  # noqa: BLE001 - the process is exiting; Ray may be gone already
            _registry.shutdown_all()


def one_run_per_process() -> None:
    """This process runs one flow run and exits (``mocapflow run``): no later run would reuse its pool, and an idle
    pool would only keep CPUs from the run's own fits, so a pool stops as soon as the run's pose work is done."""
    registry().keep_idle = False


def acquire(settings: Settings, model_set: ModelSet, open_model: Any = None) -> PoolLease:
    """A lease on the process's pool for this run (:meth:`PoolRegistry.acquire`)."""
    return registry().acquire(settings, model_set, open_model)
