"""The pose stage on a local Ray (num_cpus=2) writing to S3 on loopback: model reuse, threads, failure isolation.

Most tests run a tiny estimator registered here (an ONNX Runtime Identity graph, no TensorFlow: actors start fast);
one runs the real ``markers`` set (TensorFlow detector + ONNX backbone) to check both runtimes' threads and accuracy.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from infra.ray_cluster import ensure_ray, shutdown_ray, worker_env  # noqa: E402
from infra.s3server import S3Server  # noqa: E402
from mocapflow.camera import Intrinsics  # noqa: E402
from mocapflow.keypoints import read_arrays  # noqa: E402
from mocapflow.pose.pipeline import PoseParams, PoseResult  # noqa: E402
from mocapflow.settings import Settings  # noqa: E402
from mocapflow.store import Store  # noqa: E402
from models.modelset import ModelSet, read_local, write_manifest  # noqa: E402
from models.runtime import FrameDetections, PoseEstimator, ThreadConfig, ort_session  # noqa: E402
from tasks.pose_ray import PoseFailure, PosePool  # noqa: E402

W, H, FPS = 96, 64, 10.0
PREFECT_URL = "http://127.0.0.1:9/api"  # never contacted: only checks that workers receive it
CRASH_LEVEL = 250  # a frame of this grey level makes the crashing estimator kill its process


class TinyEstimator(PoseEstimator):
    """One person whose hip x is the frame's grey level; runs every frame through an ORT Identity session."""

    def __init__(self, model_set: ModelSet, threads: ThreadConfig) -> None:
        super().__init__(model_set, threads)
        self.session = ort_session(model_set.path("backbone"), threads)

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        (levels,) = self.session.run(
            None, {"x": frames.reshape(len(frames), -1).mean(axis=1).astype(np.float32)}
        )
        if np.any(np.abs(levels - CRASH_LEVEL) < 2):
            os._exit(3)  # a native crash, as a broken decoder or model might cause
        out = []
        for level in levels:
            cx = float(level) / 4 + 10
            kp2d = np.array([[[cx, 12.0], [cx, 30.0], [cx, 48.0]]], np.float32)
            out.append(
                FrameDetections(
                    boxes=np.array([[cx - 8, 8, cx + 8, 52]], np.float32),
                    scores=np.array([0.9], np.float32),
                    kp2d=kp2d,
                    kp3d=np.concatenate([kp2d, np.full((1, 3, 1), 3000.0, np.float32)], axis=-1),
                    conf=np.ones((1, 3), np.float32),
                )
            )
        return out


def make_model_set(root: Path, name: str = "tiny") -> ModelSet:
    import onnx
    from onnx import TensorProto, helper

    root.mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "backbone.onnx"))
    files = {"backbone": {"path": "backbone.onnx"}}
    write_manifest(
        root,
        name=name,
        kind="markers",
        version="1",
        joint_names=["head", "hip", "feet"],
        joint_edges=[[0, 1], [1, 2]],
        input_resolution=[64, 64],
        files=files,
    )
    return read_local(root)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    shutdown_ray()
    ensure_ray(Settings(), prefect_api_url=PREFECT_URL, num_cpus=2)
    yield
    shutdown_ray()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, write_flat_video) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray-videos")
    paths: dict[str, Path] = {}
    for i in range(5):
        paths[f"ok{i}"] = root / f"ok{i}.mp4"
        write_flat_video(paths[f"ok{i}"], [40 + 10 * i + j for j in range(6 + i)])
    paths["empty"] = root / "empty.mp4"
    paths["empty"].write_bytes(b"")
    paths["corrupt"] = root / "corrupt.mp4"
    paths["corrupt"].write_bytes(paths["ok0"].read_bytes()[:300])
    paths["crash"] = root / "crash.mp4"
    write_flat_video(paths["crash"], [100, 100, CRASH_LEVEL])
    return paths


def settings_for(s3: S3Server, bucket: str, model_root: Path, **kw: object) -> Settings:
    return Settings(
        storage_root=f"s3://{bucket}/out",
        model_set=str(model_root),
        cache_dir=model_root.parent / "cache",
        **s3.settings_overrides(),
        **kw,
    )


def test_worker_env_carries_prefect_api_url() -> None:
    assert worker_env(None) == {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
    assert worker_env("http://127.0.0.1:4200/api")["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


def test_a_local_ray_started_in_a_thread_outlives_the_thread() -> None:
    """A flow starts Ray on first use inside a task-runner thread; Ray's GCS and raylet die with the thread that
    started them (PR_SET_PDEATHSIG), so a second run in the same process (a served deployment) found a dead cluster
    and Ray ended the process. Started from a short-lived thread, the cluster must still run tasks afterwards."""
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import threading, time
        import ray
        from infra.ray_cluster import ensure_ray
        from mocapflow.settings import Settings

        errors = []

        def ask():
            try:
                ensure_ray(Settings(), num_cpus=1)
            except Exception as e:
                errors.append(repr(e))

        # three task threads of a run ask at once (a pose task and two fits): one ray.init, no error
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads: t.start()
        for t in threads: t.join()
        print("errors", errors)
        time.sleep(3)  # the raylet is SIGKILLed as the thread ends, if it was started from it

        @ray.remote(num_cpus=1)
        def two():
            return 2

        print("result", ray.get(two.remote(), timeout=45))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "result 2" in out.stdout and "errors []" in out.stdout, out.stdout[-1000:] + out.stderr[-2000:]
    # Ray's warning that it set no SIGTERM handler off the main thread is by design there: not shown to the user
    assert "SIGTERM handler" not in out.stderr + out.stdout


def test_ensure_ray_is_idempotent_and_workers_get_the_environment(ray_cluster: None) -> None:
    assert ensure_ray(Settings(), prefect_api_url=PREFECT_URL)["CPU"] == 2

    @ray.remote(num_cpus=0)
    def env() -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")}

    assert ray.get(env.remote()) == {
        "PREFECT_API_URL": PREFECT_URL,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # a Ray this process started: Ctrl-C (which also stops the local GCS) must not wait ~60 s in Ray's excepthook
    from ray._private import worker as ray_worker

    assert ray_worker.custom_excepthook is not sys.excepthook


def test_pool_reuses_models_and_isolates_bad_videos(
    ray_cluster: None, videos: dict[str, Path], s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    make_model_set(tmp_path / "tiny")
    settings = settings_for(s3_server, s3_bucket, tmp_path / "tiny", pose_cpus=1)
    good = [str(videos[f"ok{i}"]) for i in range(5)]
    bad = [str(videos["empty"]), str(videos["corrupt"])]
    progress: dict[str, tuple[int, int]] = {}
    with PosePool(settings, open_model=TinyEstimator) as pool:
        assert pool.n_actors == 2  # 2 cluster CPUs // 1 CPU per actor
        outcomes = list(
            pool.map(
                [*good[:2], *bad, *good[2:]],
                PoseParams(batch_size=4),
                on_progress=lambda v, d, t: progress.__setitem__(v, (d, t)),
                poll_s=0.05,
            )
        )
        infos = pool.info()

    results = {o.video: o for o in outcomes if isinstance(o, PoseResult)}
    failures = {o.video: o for o in outcomes if isinstance(o, PoseFailure)}
    assert sorted(results) == sorted(good) and sorted(failures) == sorted(bad)
    assert failures[bad[0]].error == "VideoError" and "empty" in failures[bad[0]].message
    assert failures[bad[1]].error == "VideoError" and "not a decodable video" in failures[bad[1]].message
    for video, failure in failures.items():
        assert video in str(failure) and not failure.transient

    store = Store.from_settings(settings)
    for i, video in enumerate(good):
        r = results[video]
        assert r.video_sha256 == hashlib.sha256(Path(video).read_bytes()).hexdigest()
        assert r.frames == 6 + i and progress[video] == (6 + i, 6 + i)
        _, a = read_arrays(store.read_table(r.key))
        expected_x = (40 + 10 * i + np.arange(6 + i)) / 4 + 10
        np.testing.assert_allclose(a["kp2d_px"][:, 1, 0], expected_x, atol=0.3)  # lossless video: levels +-1

    # models loaded once per actor however many videos it processed; threads = the actor's 1 CPU
    assert len({i["pid"] for i in infos}) == 2
    assert [i["loads"] for i in infos] == [1, 1]
    assert sum(i["videos"] for i in infos) == len(good)
    for info in infos:
        assert info["ort_sessions"]["session"]["intra_op_num_threads"] == 1
        assert info["ort_sessions"]["session"]["inter_op_num_threads"] == 1
        assert info["ort_sessions"]["session"]["allow_spinning"] is False
        assert info["tensorflow"] is None  # no detector in this model set: TensorFlow is never loaded
        if info["pinned"] is not None:
            assert info["affinity"] == info["pinned"] and len(info["pinned"]) == 1


def test_markers_actor_with_two_cpus_runs_two_threads_and_loads_once(
    ray_cluster: None,
    markers_model_set: ModelSet,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    from mocapflow.pose.validate import compare_with_truth
    from mocapflow.synth import CohortSpec, generate_cohort, read_ground_truth

    entries = generate_cohort(tmp_path / "cohort", CohortSpec(n_videos=2, seconds=0.5, seed=3))
    settings = settings_for(s3_server, s3_bucket, markers_model_set.root, pose_cpus=2, ort_spinning=True)
    with PosePool(settings) as pool:
        assert pool.n_actors == 1
        outcomes = pool.run([str(e.video) for e in entries], PoseParams.from_settings(settings))
        (info,) = pool.info()
    assert all(isinstance(o, PoseResult) for o in outcomes), outcomes
    assert (info["loads"], info["videos"], info["cpus"], info["model_id"]) == (1, 2, 2, markers_model_set.id)
    (session,) = info["ort_sessions"].values()
    assert session["intra_op_num_threads"] == 2 and session["inter_op_num_threads"] == 1
    assert session["allow_spinning"] is True
    assert info["tensorflow"] == {"intra_op_parallelism_threads": 2, "inter_op_parallelism_threads": 1}
    if info["pinned"] is not None:
        assert info["affinity"] == info["pinned"] and len(info["pinned"]) == 2
    # what the actor wrote to S3 is the subject's keypoints (the sidecar intrinsics were used)
    store = Store.from_settings(settings)
    by_video = {o.video: o for o in outcomes if isinstance(o, PoseResult)}
    for e in entries:
        assert e.gt is not None
        truth = read_ground_truth(e.gt)
        table = store.read_table(by_video[str(e.video)].key)
        meta, _ = read_arrays(table)
        assert meta.intrinsics == truth.intrinsics
        assert np.median(compare_with_truth(table, truth).err2d_px) <= 1.0


def test_a_crashing_video_fails_alone_and_its_actor_is_replaced(
    ray_cluster: None, videos: dict[str, Path], s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    make_model_set(tmp_path / "tiny")
    settings = settings_for(s3_server, s3_bucket, tmp_path / "tiny", pose_cpus=1)
    order = [str(videos["crash"]), *(str(videos[f"ok{i}"]) for i in range(3))]
    local = ray.get_runtime_context().get_node_id()
    # bound to this (live) node, as the flow's pools are: a dead actor is replaced there
    with PosePool(settings, nodes=[local], open_model=TinyEstimator) as pool:
        outcomes = pool.run(order, PoseParams())
        # the crashing video is sent once more (an actor may die of something else), then fails
        assert (pool.replaced, pool.requeued, pool.retired) == (2, 1, 0)
        (info,) = pool.info()
    (failure,) = [o for o in outcomes if isinstance(o, PoseFailure)]
    assert failure.video == order[0] and "died" in failure.message and order[0] in str(failure)
    assert failure.transient
    assert sorted(o.video for o in outcomes if isinstance(o, PoseResult)) == sorted(order[1:])
    assert (info["loads"], info["videos"]) == (1, 3)


def test_an_actor_whose_node_is_gone_is_retired_and_its_video_goes_to_another(
    ray_cluster: None, videos: dict[str, Path], s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    make_model_set(tmp_path / "tiny")
    settings = settings_for(s3_server, s3_bucket, tmp_path / "tiny", pose_cpus=1)
    local = ray.get_runtime_context().get_node_id()
    # a node id no live node has: Ray refuses to schedule an actor bound to it (hard affinity)
    gone = "ab" * (len(local) // 2)
    good = [str(videos[f"ok{i}"]) for i in range(3)]
    with PosePool(settings, nodes=[gone, local], open_model=TinyEstimator) as pool:
        outcomes = pool.run(good, PoseParams())
        assert (pool.retired, pool.replaced, pool.alive) == (1, 0, 1)
        assert pool.requeued >= 1  # the video sent to the failed actor went to the live one
        (info,) = pool.info()
    assert sorted(o.video for o in outcomes if isinstance(o, PoseResult)) == sorted(good), outcomes
    assert info["videos"] == len(good)


def test_pose_actors_are_planned_per_node_leaving_cpus_for_fits() -> None:
    from tasks.pose_ray import NodeCpus, plan_pose_actors

    two = [NodeCpus("b", 2), NodeCpus("a", 2)]
    assert plan_pose_actors(two, cpus_per_actor=1, fit_cpus=1) == ["a", "b"]
    assert plan_pose_actors([NodeCpus("a", 8)], cpus_per_actor=2, fit_cpus=1) == ["a"] * 3
    # a node too small for an actor and a fit gets no actor; none anywhere gives an empty plan
    assert plan_pose_actors([NodeCpus("a", 1), NodeCpus("b", 4)], 1, 1) == ["b"] * 3
    assert plan_pose_actors([NodeCpus("a", 1)], 1, 1) == []
    assert plan_pose_actors([NodeCpus("a", 4)], 1, 0) == ["a"] * 4
    with pytest.raises(ValueError):
        plan_pose_actors(two, 0, 1)


class TinyPool(PosePool):
    """The flow's pool with the tiny estimator (FlowRuntime starts the pool itself)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **{**kwargs, "open_model": TinyEstimator})  # type: ignore[arg-type]


def test_the_flow_pool_always_leaves_a_cpu_for_a_fit(
    ray_cluster: None, s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.pose_pools import registry
    from tasks.runtime import FlowRuntime

    monkeypatch.setattr("tasks.pose_ray.PosePool", TinyPool)
    model_set = make_model_set(tmp_path / "tiny")
    local = ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=1)
    def a_fit_sized_task() -> str:
        return ray.get_runtime_context().get_node_id()

    # pose_cpus=1: one actor bound to the node (2 CPUs - 1 for fits); pose_cpus=2: no node has room for an actor
    # and a fit, so one 2-thread actor reserves only the CPU a fit leaves
    for pose_cpus, nodes, reserved in ((1, [local], 1), (2, [None], 1)):
        settings = settings_for(s3_server, s3_bucket, model_set.root, pose_cpus=pose_cpus)
        rt = FlowRuntime(settings, model_set, Store.from_settings(settings))
        try:
            pool = rt.pose_pool()
            assert (pool.nodes, pool.reserve_cpus, pool.cpus_per_actor) == (nodes, reserved, pose_cpus)
            (info,) = pool.info()  # the actor is up and holds its CPUs...
            assert info["cpus"] == pose_cpus
            assert ray.get(a_fit_sized_task.remote(), timeout=120) == local  # ...and a fit still runs
        finally:
            rt.close()
    registry().shutdown_all()  # the last pool idles in the process's registry (pose_pool_idle_s)


# -- pools that outlive a run (tasks/pose_pools.py) -------------------------------------------------------------


def _actor_ids(pool: PosePool) -> list[str]:
    return [a._actor_id.hex() for a in pool.actors if a is not None]


def _dead(pool_actors: list[object], within_s: float = 60.0) -> bool:
    """Every actor is gone within ``within_s`` (a pool's shutdown kills its actors asynchronously: one may still
    answer a ping just after the pool left the registry)."""
    from ray.exceptions import GetTimeoutError, RayActorError

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            ray.get([a.ping.remote() for a in pool_actors], timeout=10)  # type: ignore[attr-defined]
        except RayActorError:
            return True
        except GetTimeoutError:
            pass
        time.sleep(0.5)
    return False


def _tiny(s3: S3Server, bucket: str, root: Path, name: str = "tiny") -> tuple[ModelSet, Settings]:
    """A tiny model set under ``root`` and settings for one 1-CPU actor per pool that use it."""
    model_set = make_model_set(root, name=name)
    return model_set, settings_for(s3, bucket, model_set.root, pose_cpus=1)


@pytest.fixture
def registry() -> Iterator[object]:
    from tasks.pose_pools import PoolRegistry

    reg = PoolRegistry()
    yield reg
    reg.shutdown_all()


def test_a_second_run_reuses_the_live_pool_and_an_idle_pool_is_stopped(
    ray_cluster: None,
    videos: dict[str, Path],
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    registry,
) -> None:
    model_set, settings = _tiny(s3_server, s3_bucket, tmp_path / "tiny")
    first = registry.acquire(settings, model_set, TinyEstimator)
    assert not first.reused
    r1 = first.pool.process_one(str(videos["ok0"]), PoseParams())
    ids = _actor_ids(first.pool)
    first.release(idle_s=60)
    assert registry.live() == [first.pool]  # idle, not stopped

    # the next run writes elsewhere: the store travels with each call, not with the actor
    elsewhere = settings.model_copy(update={"storage_root": f"s3://{s3_bucket}/second-run"})
    other = Store.from_settings(elsewhere)
    second = registry.acquire(elsewhere, model_set, TinyEstimator)
    assert second.reused and second.pool is first.pool and _actor_ids(second.pool) == ids
    r2 = second.pool.process_one(
        str(videos["ok1"]), PoseParams(), store=other, storage_options=elsewhere.storage_options()
    )
    assert isinstance(r1, PoseResult) and isinstance(r2, PoseResult), (r1, r2)
    assert r2.uri.startswith(f"s3://{s3_bucket}/second-run/") and other.is_committed(r2.key.rsplit("/", 1)[0])
    infos = second.pool.info()
    assert [i["loads"] for i in infos] == [1] and sum(i["videos"] for i in infos) == 2  # models loaded once
    assert registry.started == 1

    # released with a short idle time: the reaper stops the actors
    actors = list(second.pool.actors)
    second.release(idle_s=0.5)
    deadline = time.monotonic() + 30
    while registry.live() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert registry.live() == []
    assert _dead(actors)


def test_a_changed_model_set_or_a_dead_actor_gets_a_new_pool(
    ray_cluster: None, videos: dict[str, Path], s3_server: S3Server, s3_bucket: str, tmp_path: Path, registry
) -> None:
    tiny, settings = _tiny(s3_server, s3_bucket, tmp_path / "tiny")
    lease = registry.acquire(settings, tiny, TinyEstimator)
    old = list(lease.pool.actors)
    lease.release(idle_s=60)

    # another model set (another content id): a new pool; the idle one is stopped (its CPUs)
    other, other_settings = _tiny(s3_server, s3_bucket, tmp_path / "tiny2", name="tiny2")
    lease2 = registry.acquire(other_settings, other, TinyEstimator)
    assert not lease2.reused and registry.live() == [lease2.pool] and _dead(old)
    (info,) = lease2.pool.info()
    assert info["model_id"] == other.id != tiny.id
    lease2.release(idle_s=60)

    # an actor of the idle pool died (killed, out of memory): the next run gets a pool whose actors all live
    ray.kill(lease2.pool.actors[0], no_restart=True)
    lease3 = registry.acquire(other_settings, other, TinyEstimator)
    assert not lease3.reused and lease3.pool is not lease2.pool
    assert isinstance(lease3.pool.process_one(str(videos["ok0"]), PoseParams()), PoseResult)
    lease3.release(idle_s=0)  # 0: stopped at once, as a run that owned its pool did
    assert registry.live() == []


def test_concurrent_runs_share_one_pool(
    ray_cluster: None, videos: dict[str, Path], s3_server: S3Server, s3_bucket: str, tmp_path: Path, registry
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model_set, settings = _tiny(s3_server, s3_bucket, tmp_path / "tiny")
    a = registry.acquire(settings, model_set, TinyEstimator)
    b = registry.acquire(settings, model_set, TinyEstimator)
    assert b.pool is a.pool and b.reused
    work = [(lease, str(videos[f"ok{i}"])) for i, lease in enumerate([a, b, a, b])]
    with ThreadPoolExecutor(4) as ex:
        outcomes = list(ex.map(lambda lv: lv[0].pool.process_one(lv[1], PoseParams()), work))
    assert all(isinstance(o, PoseResult) for o in outcomes), outcomes
    a.release(idle_s=60)
    assert registry.live() == [b.pool]  # still held by the other run

    # a third run with another model set while the pool is held: a pool of its own; the first pool, once released,
    # stops at once (the newer pool may be waiting for its CPUs)
    other, other_settings = _tiny(s3_server, s3_bucket, tmp_path / "tiny2", name="tiny2")
    c = registry.acquire(other_settings, other, TinyEstimator)
    assert not c.reused and c.pool is not b.pool
    b.release(idle_s=60)
    assert registry.live() == [c.pool]
    assert isinstance(c.pool.process_one(str(videos["ok4"]), PoseParams()), PoseResult)
    c.release(idle_s=0)
    assert registry.live() == []


def test_an_idle_pose_actor_fits_like_a_fit_worker_and_videos_come_first(
    ray_cluster: None, videos: dict[str, Path], tmp_path: Path, gait_keypoints
) -> None:
    """A fit borrowed by a pose actor (tasks/runtime.FlowRuntime.run_fit) writes the same outputs as the fit task on
    a Ray worker; a borrowed actor is not lent twice, and none is lent while a video waits for an actor."""
    from mocapflow.store import fit_key
    from tasks.fit_ray import submit_fit

    model_set = make_model_set(tmp_path / "tiny")
    uri = gait_keypoints(
        tmp_path / "in",
        30,
        ("rhip", "lhip", "rasis", "lasis", "rkne", "lkne", "rank", "lank", "rsho", "lsho", "relb", "lelb"),
    )
    common = {"model_set": str(model_set.root), "cache_dir": tmp_path / "cache", "fit_max_iters": 40}
    on_actor = Settings(storage_root=str(tmp_path / "actor"), pose_cpus=1, **common)
    on_worker = Settings(storage_root=str(tmp_path / "worker"), fit_cpus=1, **common)
    with PosePool(on_actor, n_actors=1, open_model=TinyEstimator) as pool:
        (info,) = pool.info()
        slot = pool.borrow()
        assert slot == 0 and pool.borrow() is None  # one actor, lent once
        ref = pool.fit_on(slot, uri, on_actor, thumbnail=True)
        reference = ray.get(submit_fit(uri, on_worker), timeout=600)
        summary = ray.get(ref, timeout=600)
        pool.give_back(slot)

        assert summary["worker"]["pid"] == info["pid"] and summary["worker"]["pose_actor"]
        assert summary["worker"]["threads"] == 1 and summary["iterations"] == reference["iterations"] == 40
        assert summary["prefix"] == reference["prefix"]
        key = fit_key(summary["prefix"], "angles.parquet")
        angles = Store(str(tmp_path / "actor")).read_table(key)
        expected = Store(str(tmp_path / "worker")).read_table(key)
        assert angles.column_names == expected.column_names
        for name in angles.column_names:
            a, b = angles[name].to_numpy(zero_copy_only=False), expected[name].to_numpy(zero_copy_only=False)
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)
        assert summary["thumbnail"][:2] == b"\xff\xd8" and "thumbnail" not in reference  # a JPEG, asked for

        # a video waiting for an actor comes first: nothing is lent meanwhile
        pool._wanted += 1
        try:
            assert pool.borrow() is None
        finally:
            pool._wanted -= 1
        assert pool.borrow() == 0
        pool.give_back(0)
        assert isinstance(pool.process_one(str(videos["ok0"]), PoseParams()), PoseResult)
