"""The pose stage on Ray: one actor per k CPUs holds the models, a pool feeds it videos.

Each :class:`PoseWorker` leases and pins k CPUs, sizes ONNX Runtime and TensorFlow to k intra-op threads and one
inter-op thread, and opens its estimator once; every video it processes reuses it. :class:`PosePool` sends videos to
idle actors and yields results as they finish; a video that fails becomes a :class:`PoseFailure` naming the video
and the cause, and the other videos go on.

Placement: each actor can be bound to a node (:func:`plan_pose_actors` leaves every node CPUs for the fits, so that
pose actors, which hold their CPUs for their whole life, never starve the fits). Ray never restarts a pose actor
(``max_restarts=0``): the pool decides. An actor that dies on a live node (a crash, out of memory) is replaced on the
same node; an actor whose node died is retired (the pool shrinks; a replacement would wait for CPUs that are gone
and, elsewhere, take the CPUs the fits need), unless it was the last one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import ray
from ray.exceptions import ActorUnschedulableError, RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mocapflow.camera import Intrinsics
from mocapflow.cpus import current_affinity, lease_cpus
from mocapflow.errors import is_transient
from mocapflow.pose.pipeline import PoseParams, PoseResult, run_pose
from mocapflow.settings import Settings
from mocapflow.store import Store
from models.modelset import ModelSet, resolve
from models.runtime import PoseEstimator, ThreadConfig, configure_tensorflow, open_estimator, session_threads

logger = logging.getLogger(__name__)

# the pool replaces dead actors itself, where there is room (class docstring); Ray's own restart would wait for the
# dead actor's CPUs on any node, for ever if its node is gone
DEFAULT_MAX_RESTARTS = 0
DEFAULT_MAX_TASK_RETRIES = 0
# times :meth:`PosePool.map` sends a video again after its actor died under it (a video that kills every actor it
# runs on fails after this many deaths)
DEFAULT_VIDEO_RETRIES = 1
ACTOR_DIED, NODE_LOST = "actor died", "node lost"  # how an actor died under a video (PosePool._collect)
VideoProgress = Callable[[str, int, int], None]
Estimator = Callable[[ModelSet, ThreadConfig], PoseEstimator]


@dataclass(frozen=True)
class PoseFailure:
    """A video the pose stage could not process, and why. ``transient``: a retry may succeed (I/O, a dead actor)."""

    video: str
    error: str
    message: str
    transient: bool = False

    def __str__(self) -> str:
        return self.message if self.video in self.message else f"{self.video}: {self.error}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PoseOutcome = PoseResult | PoseFailure


@dataclass(frozen=True)
class NodeCpus:
    """A live Ray node and its logical CPUs."""

    node_id: str
    cpus: int


def plan_pose_actors(nodes: Iterable[NodeCpus], cpus_per_actor: int, fit_cpus: int) -> list[str]:
    """One node id per pose actor: on each node as many actors as fit once ``fit_cpus`` are left for the fits.

    Pose actors hold their CPUs for their whole life and fits are Ray tasks that need ``fit_cpus`` CPUs on ONE node;
    a node full of pose actors runs no fit, and when the other nodes are lost the fits would wait for the pose stage
    to end. Nodes too small for an actor and a fit get none; an empty plan means no node can spare the CPUs (the
    caller then starts one unplaced actor).
    """
    if cpus_per_actor < 1 or fit_cpus < 0:
        raise ValueError(f"cpus_per_actor must be >= 1 and fit_cpus >= 0, got {cpus_per_actor}, {fit_cpus}")
    plan: list[str] = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        plan += [node.node_id] * max(0, (node.cpus - fit_cpus) // cpus_per_actor)
    return plan


def live_nodes() -> list[NodeCpus]:
    """The cluster's live nodes with CPUs, from Ray's node table (Ray must be initialised)."""
    return [
        NodeCpus(n["NodeID"], int(n.get("Resources", {}).get("CPU", 0)))
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1
    ]


def _uses_tensorflow(model_set: ModelSet) -> bool:
    """Model sets with a detector run it under TensorFlow (ARCHITECTURE.md "Folders")."""
    return "detector" in model_set.manifest.files


def _ort_sessions(obj: object, depth: int = 2) -> dict[str, Any]:
    """ONNX Runtime sessions held by ``obj`` or its attributes (name -> session)."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return {}
    found: dict[str, Any] = {}
    for name, value in vars(obj).items() if hasattr(obj, "__dict__") else []:
        if isinstance(value, ort.InferenceSession):
            found[name] = value
        elif depth > 1 and hasattr(value, "__dict__") and not isinstance(value, type):
            found.update({f"{name}.{k}": v for k, v in _ort_sessions(value, depth - 1).items()})
    return found


def tensorflow_threads() -> dict[str, int] | None:
    """TF's intra/inter op threads in this process, or None if TF was never imported here."""
    if "tensorflow" not in sys.modules:
        return None
    tf = sys.modules["tensorflow"]
    return {
        "intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


@contextlib.contextmanager
def startup_output_captured(capture: bool = True) -> Iterator[None]:
    """While models load, send this process's stderr (fd 2) to a temp file: TensorFlow's start-up lines (absl's
    pre-init notice, oneDNN, XNNPACK, deprecation warnings) come from C++ and no log level governs them. The capture
    is logged at DEBUG afterwards, or at ERROR if loading failed, so nothing needed for a diagnosis is lost."""
    if not capture:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                logger.log(logging.ERROR if failed else logging.DEBUG, "model start-up output:\n%s", text)


class PoseWorker:
    """Holds one estimator for its lifetime; ``process`` runs the pose stage on one video.

    ``open_model`` replaces :func:`models.runtime.open_estimator` (tests register a tiny estimator this way).
    """

    def __init__(self, settings: Settings, cpus: int, open_model: Estimator | None = None) -> None:
        self.settings = settings
        self.lease = lease_cpus(cpus, pin=settings.pin_cpus)
        self.threads = ThreadConfig(self.lease.threads, settings.ort_spinning)
        self.model_set = resolve(
            settings.model_set, settings.modelsets_dir, settings.cache_dir, settings.storage_options()
        )
        self._open_model = open_model or partial(
            open_estimator, **PoseParams.from_settings(settings).estimator_options()
        )
        self.loads = 0
        self.videos = 0
        self.fits = 0
        self.store = Store.from_settings(settings)
        with startup_output_captured(not settings.verbose):
            if _uses_tensorflow(self.model_set):
                configure_tensorflow(self.threads)
            self.estimator = self._load()

    def _load(self) -> PoseEstimator:
        t0 = time.perf_counter()
        estimator = self._open_model(self.model_set, self.threads)
        self.loads += 1
        logger.info(
            "pid %d: loaded model set %s (%s) with %d threads in %.2f s",
            os.getpid(),
            self.model_set.manifest.name,
            self.model_set.id,
            self.threads.threads,
            time.perf_counter() - t0,
        )
        return estimator

    def process(
        self,
        video_uri: str,
        params: PoseParams,
        intrinsics: Intrinsics | None = None,
        progress: Any | None = None,
        subject_id: str | None = None,
        store: Store | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> PoseResult:
        """Run the pose stage on one video; ``progress`` is an optional progress-board actor handle;
        ``subject_id`` (a cohort manifest's) goes into the tables' metadata. ``store`` and ``storage_options``
        (reading the video): the calling run's, where the actor serves runs with other stores (default: the store
        and options of the settings the actor was started with)."""

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress.update.remote(video_uri, done, total)

        result = run_pose(
            video_uri,
            self.estimator,
            store or self.store,
            params,
            intrinsics=intrinsics,
            storage_options=self.settings.storage_options() if storage_options is None else storage_options,
            decode_threads=self.threads.threads,
            on_progress=report,
            subject_id=subject_id,
        )
        self.videos += 1
        return result

    def fit(
        self, keypoints_uri: str, settings: Settings, thumbnail: bool = False, out_root: str | None = None
    ) -> dict[str, Any]:
        """Fit one keypoints table here, on this actor's CPUs, while the pool has no video for it
        (:meth:`PosePool.borrow`): the fitting stage's own code (:func:`tasks.fit_ray.fit_here`), JAX sized to this
        actor's threads and CPUs (it is pinned already). JAX loads on the first fit (~1 GB less free memory)."""
        from tasks.fit_ray import fit_here

        summary = fit_here(
            keypoints_uri,
            settings,
            self.threads.threads,
            out_root,
            thumbnail=thumbnail,
            worker={"leased_cpus": self.lease.cpus, "pose_actor": True},
        )
        self.fits += 1
        return summary

    def ping(self) -> int:
        """This actor's pid: answers at once when the actor is idle (a pool checks an idle actor is alive)."""
        return os.getpid()

    def info(self) -> dict[str, Any]:
        """Who this actor is and how its threads are set (for tests and diagnostics)."""
        return {
            "pid": os.getpid(),
            "loads": self.loads,
            "videos": self.videos,
            "fits": self.fits,
            "cpus": self.threads.threads,
            "affinity": current_affinity(),
            "pinned": self.lease.cpus,
            "model_set": self.model_set.manifest.name,
            "model_id": self.model_set.id,
            "output_params": self.estimator.output_params(),
            "ort_sessions": {name: session_threads(s) for name, s in _ort_sessions(self.estimator).items()},
            "tensorflow": tensorflow_threads(),
        }


class ProgressBoard:
    """A tiny actor where workers post ``(done, total)`` frames per video and the driver reads them."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[int, int]] = {}

    def update(self, video: str, done: int, total: int) -> None:
        self._state[video] = (done, total)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return dict(self._state)


def _failure(video: str, e: BaseException) -> PoseFailure:
    if isinstance(e, RayTaskError):
        cause = e.cause if isinstance(e.cause, BaseException) else e
        message = str(cause) if cause is not e else str(e).splitlines()[-1]
        return PoseFailure(video, type(cause).__name__, message, is_transient(cause))
    if isinstance(e, RayActorError):
        message = f"{video}: the pose actor died while processing it (crash, out of memory or its node lost)"
        return PoseFailure(video, type(e).__name__, message, transient=True)
    if isinstance(e, ActorUnschedulableError):
        message = f"{video}: the pose actor could not start: its node is gone"
        return PoseFailure(video, type(e).__name__, message, transient=True)
    return PoseFailure(video, type(e).__name__, f"{video}: {e}", transient=True)


class PosePool:
    """Pose actors with ``cpus_per_actor`` CPUs each; ``nodes`` binds actor i to node ``nodes[i]`` (None: anywhere).

    Without ``nodes``, ``n_actors`` unplaced actors (default: ``settings.pose_actors`` or the cluster's CPUs //
    ``cpus_per_actor``). Ray must be running (:func:`infra.ray_cluster.ensure_ray`).
    """

    def __init__(
        self,
        settings: Settings,
        n_actors: int | None = None,
        cpus_per_actor: int | None = None,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_task_retries: int = DEFAULT_MAX_TASK_RETRIES,
        open_model: Estimator | None = None,
        nodes: list[str | None] | None = None,
        video_retries: int = DEFAULT_VIDEO_RETRIES,
        reserve_cpus: int | None = None,
    ) -> None:
        self.settings = settings
        self.cpus_per_actor = cpus_per_actor or settings.pose_cpus
        # CPUs each actor asks Ray for; fewer than it runs threads on only where no node has room for an actor
        # and a fit (FlowRuntime.pose_pool): sharing CPUs with the fits beats fits that wait for the pose stage
        self.reserve_cpus = self.cpus_per_actor if reserve_cpus is None else reserve_cpus
        cluster = int(ray.cluster_resources().get("CPU", 0))
        if nodes:
            self.nodes = list(nodes)
        else:
            n = n_actors or settings.pose_actors or max(1, cluster // self.cpus_per_actor)
            self.nodes = [None] * n
        self.n_actors = len(self.nodes)
        if self.n_actors * self.reserve_cpus > cluster:
            logger.warning(
                "%d actors x %d CPUs exceed the cluster's %d CPUs; some will wait for CPUs",
                self.n_actors,
                self.cpus_per_actor,
                cluster,
            )
        self._open_model = open_model
        self.video_retries = video_retries
        self._actor_class = ray.remote(PoseWorker)
        self._actor_options = {
            "num_cpus": self.reserve_cpus,
            "max_restarts": max_restarts,
            "max_task_retries": max_task_retries,
        }
        self.actors: list[Any] = [self._new_actor(node) for node in self.nodes]
        self.replaced = 0
        self.retired = 0
        self.requeued = 0
        self._lock = threading.Lock()
        self._idle: queue.Queue[int] = queue.Queue()
        for slot in range(self.n_actors):
            self._idle.put(slot)
        self._wanted = 0  # process_one calls waiting for an idle actor: they come before borrowers
        self._wanted_lock = threading.Lock()

    def _new_actor(self, node: str | None) -> Any:
        options: dict[str, Any] = dict(self._actor_options)
        if node is not None:
            # hard affinity: the actor runs on this node or, if the node is gone, fails (the pool then retires it)
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        return self._actor_class.options(**options).remote(
            self.settings, self.cpus_per_actor, self._open_model
        )

    @property
    def alive(self) -> int:
        """Actors in service (not retired)."""
        return sum(a is not None for a in self.actors)

    def info(self) -> list[dict[str, Any]]:
        """Each actor's :meth:`PoseWorker.info`."""
        return ray.get([a.info.remote() for a in self.actors if a is not None])

    def map(
        self,
        videos: Iterable[str],
        params: PoseParams,
        intrinsics: Mapping[str, Intrinsics] | None = None,
        on_progress: VideoProgress | None = None,
        poll_s: float = 0.5,
    ) -> Iterator[PoseOutcome]:
        """Process every video on the pool; yield a PoseResult or PoseFailure for each, as they finish.

        A video whose actor died under it is sent again (up to ``video_retries`` times) to another actor."""
        queue = list(videos)
        queue.reverse()
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote() if on_progress else None
        idle = [slot for slot, a in enumerate(self.actors) if a is not None]
        pending: dict[Any, tuple[str, int]] = {}
        seen: dict[str, tuple[int, int]] = {}
        deaths: dict[str, int] = {}
        try:
            while queue or pending:
                while queue and idle:
                    slot, video = idle.pop(0), queue.pop()
                    ref = self.actors[slot].process.remote(
                        video, params, (intrinsics or {}).get(video), board
                    )
                    pending[ref] = (video, slot)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s if board else None)
                if board is not None and on_progress is not None:
                    for video, (n, total) in ray.get(board.snapshot.remote()).items():
                        if seen.get(video) != (n, total):
                            seen[video] = (n, total)
                            on_progress(video, n, total)
                for ref in done:
                    video, slot = pending.pop(ref)
                    outcome, death = self._collect(ref, video, slot)
                    if self.actors[slot] is not None:
                        idle.append(slot)
                    # a node lost is not the video's fault; an actor that died on a live node may have been
                    # killed by the video: sent again only ``video_retries`` times
                    if death == NODE_LOST or (
                        death == ACTOR_DIED and deaths.get(video, 0) < self.video_retries
                    ):
                        if death == ACTOR_DIED:
                            deaths[video] = deaths.get(video, 0) + 1
                        self._requeue(video, death)
                        queue.append(video)  # next out
                        continue
                    yield outcome
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except (RayError, ValueError, TypeError) as e:  # already finished, or not cancellable
                    logger.debug("could not cancel %s: %s", pending[ref][0], e)
            if board is not None:
                ray.kill(board)

    def _collect(self, ref: Any, video: str, slot: int) -> tuple[PoseOutcome, str | None]:
        """The outcome of one call, and whether its actor died under it: None, ``ACTOR_DIED`` (its node lives: the
        actor is replaced there) or ``NODE_LOST`` (its node is gone: the actor is retired)."""
        try:
            return ray.get(ref), None
        except (RayActorError, ActorUnschedulableError) as e:  # the latter: bound to a node that is gone
            return _failure(video, e), self._actor_died(slot, video)
        except RayError as e:
            return _failure(video, e), None

    def _requeue(self, video: str, death: str) -> None:
        with self._lock:
            self.requeued += 1
        why = "its node is gone" if death == NODE_LOST else "its pose actor died"
        logger.warning("%s: %s; sending it to another pose actor", video, why)

    def _actor_died(self, slot: int, video: str) -> str:
        """Replace the dead actor of ``slot`` on its node if the node is alive, else retire it (class docstring).

        Returns ``NODE_LOST`` if its node is gone, else ``ACTOR_DIED``. Ray may report the actor dead a few seconds
        before the node: then its replacement, bound to that node, fails in turn and is retired."""
        with self._lock:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(self.actors[slot], no_restart=True)
            node = self.nodes[slot]
            last = all(a is None for i, a in enumerate(self.actors) if i != slot)
            node_alive = node is None or node in {n.node_id for n in live_nodes()}
            if node is not None:
                replace = node_alive or last
                if not node_alive:
                    self.nodes[slot] = None  # the last actor: anywhere
                why = "its node is alive" if node_alive else "its node is gone and it was the last actor"
            else:
                replace = last or ray.available_resources().get("CPU", 0.0) >= self.reserve_cpus
                why = "the cluster has CPUs free for it"
            if replace:
                logger.warning("pose actor %d died on %s; replacing it (%s)", slot, video, why)
                self.actors[slot] = self._new_actor(self.nodes[slot])
                self.replaced += 1
            else:
                # its node died (or the cluster lost the CPUs): a replacement would wait for them for ever, or
                # take the CPUs the fits need; the pool shrinks instead
                logger.warning("pose actor %d died on %s with its node's CPUs; retiring it", slot, video)
                self.actors[slot] = None
                self.retired += 1
            return ACTOR_DIED if node_alive else NODE_LOST

    def process_one(
        self,
        video: str,
        params: PoseParams,
        intrinsics: Intrinsics | None = None,
        subject_id: str | None = None,
        store: Store | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> PoseOutcome:
        """One video on the next idle actor, waiting for one if all are busy. Thread-safe: the flow's task threads
        (of one run or of several runs sharing the pool, :mod:`tasks.pose_pools`) each hand one video to the pool
        (do not mix with a concurrent :meth:`map`). ``store``, ``storage_options``: the calling run's
        (:meth:`PoseWorker.process`).

        A video whose actor's node is gone goes to another actor at once (not the video's fault); one whose actor
        died on a live node comes back as a transient :class:`PoseFailure` (the caller's retry sends it again)."""
        # each node lost retires one actor, the last one is replaced anywhere
        for _ in range(self.n_actors + 1):
            with self._wanted_lock:
                self._wanted += 1
            try:
                slot = self._idle.get()
            finally:
                with self._wanted_lock:
                    self._wanted -= 1
            try:
                ref = self.actors[slot].process.remote(
                    video, params, intrinsics, None, subject_id, store, storage_options
                )
                outcome, death = self._collect(ref, video, slot)
            finally:
                if self.actors[slot] is not None:  # a retired slot never comes back
                    self._idle.put(slot)
            if death != NODE_LOST:
                break
            self._requeue(video, death)
        return outcome

    def borrow(self) -> int | None:
        """An idle actor's slot for other work (a fit: :meth:`fit_on`), or None when every actor is busy or a video
        waits for one (videos come first). Give it back with :meth:`give_back`."""
        with self._wanted_lock:
            if self._wanted:
                return None
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                return None

    def give_back(self, slot: int) -> None:
        if self.actors and self.actors[slot] is not None:  # a stopped pool or a retired slot: gone
            self._idle.put(slot)

    def fit_on(self, slot: int, keypoints_uri: str, settings: Settings, thumbnail: bool = False) -> Any:
        """Start a fit on the borrowed actor ``slot`` (:meth:`PoseWorker.fit`); returns its ObjectRef. An actor that
        dies under it fails the call with a RayActorError (transient: the fit is retried); the pool replaces the
        actor when its next video finds it dead."""
        return self.actors[slot].fit.remote(keypoints_uri, settings, thumbnail)

    def run(self, videos: Iterable[str], params: PoseParams, **kwargs: Any) -> list[PoseOutcome]:
        """:meth:`map`, collected into a list (in finishing order)."""
        return list(self.map(videos, params, **kwargs))

    def shutdown(self) -> None:
        for a in self.actors:
            if a is not None:
                with contextlib.suppress(RayError, ValueError):  # an actor whose node is gone
                    ray.kill(a, no_restart=True)
        self.actors = []

    def __enter__(self) -> PosePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
