"""An object-store outage at each stage of a cohort run: the cohort completes and every video is computed once.

The videos and the store are on S3 (moto on loopback) behind :class:`infra.faults.TcpGate`. The outage starts when
the stage does (a wrapper around the stage's entry point closes the gate; a timer opens it ``OUTAGE_S`` later), so
the test waits for no fixed time: discovery (listing the prefix), probe (downloading each video), pose (the Ray pose
actor downloads the video and writes its tables), fit (the Ray fit task reads the keypoints and writes its outputs),
summary (the run's summary table and commit marker). For the client a closed gate is a stopped server: new
connections are refused and open ones are cut; moto itself keeps its objects, which an in-memory server could not
across a restart. The per-operation retries (mocapflow/errors.py, ~15 s) ride it out, so no stage is re-run: each
video's keypoints and fit are computed once (``pose_calls``/``fit_calls``) and written under one key each.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.faults import TcpGate
from infra.s3server import S3Server

pytestmark = pytest.mark.timeout(900)

OUTAGE_S = 6.0
STAGES = ("discovery", "probe", "pose", "fit", "summary")


@pytest.fixture(scope="module")
def outage_api(prefect_api: str) -> Iterator[str]:
    """The module's Prefect server, with Ray started from the main thread once for every run of the module."""
    from infra.ray_cluster import ensure_ray, shutdown_ray
    from mocapflow.settings import Settings

    ensure_ray(Settings(), prefect_api_url=prefect_api)
    yield prefect_api
    shutdown_ray()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from mocapflow.synth import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, CohortSpec(n_videos=2, seed=7, seconds=1.0, motions=("squat", "arm_raise")))
    return sorted(out.glob("*.mp4"))


class Outage:
    """Close ``gate`` the first time ``start()`` is called; open it again ``seconds`` later."""

    def __init__(self, gate: TcpGate, seconds: float) -> None:
        self.gate = gate
        self.seconds = seconds
        self.started = threading.Event()
        self.ended = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.started.is_set():
                return
            self.started.set()
        self.gate.close()

        def reopen() -> None:
            self.gate.open()
            self.ended.set()

        threading.Timer(self.seconds, reopen).start()

    def wrap(self, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.start()
            return fn(*args, **kwargs)

        return wrapped


def _hook(stage: str, outage: Outage, mp: pytest.MonkeyPatch) -> None:
    """Start the outage when ``stage`` starts (the driver-side entry point of the stage)."""
    import flows.cohort
    import tasks.pose_ray
    import tasks.runtime
    import tasks.stages

    if stage == "discovery":
        mp.setattr(flows.cohort, "discover", outage.wrap(flows.cohort.discover))
    elif stage == "probe":
        mp.setattr(tasks.stages, "probe_indexed", outage.wrap(tasks.stages.probe_indexed))
    elif stage == "pose":  # the actor's download and writes happen during the outage
        mp.setattr(tasks.pose_ray.PosePool, "process_one", outage.wrap(tasks.pose_ray.PosePool.process_one))
    elif (
        stage == "fit"
    ):  # the fit's reads and writes (on a Ray fit worker or a pose actor) happen during the outage
        mp.setattr(tasks.runtime.FlowRuntime, "run_fit", outage.wrap(tasks.runtime.FlowRuntime.run_fit))
    elif stage == "summary":
        mp.setattr(flows.cohort, "publish", outage.wrap(flows.cohort.publish))
    else:
        raise ValueError(stage)


# one stage in the default suite (the pose stage: the outage hits a Ray actor's download and writes); the others
# run with `make test-slow`
@pytest.mark.parametrize(
    "stage", [s if s == "pose" else pytest.param(s, marks=pytest.mark.slow) for s in STAGES]
)
def test_an_outage_at_each_stage_loses_nothing(
    stage: str,
    cohort: list[Path],
    markers_model_set: Any,
    outage_api: str,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    import s3fs

    from flows.cohort import process_cohort
    from flows.params import CohortSource, RunOptions
    from mocapflow.store import Store

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    for v in cohort:
        fs.put_file(str(v), f"{s3_bucket}/videos/{v.name}")
    with TcpGate(s3_server.port) as gate, pytest.MonkeyPatch.context() as mp:
        env = {
            "MOCAPFLOW_MODELS_DIR": str(markers_model_set.root.parent),
            "MOCAPFLOW_MODEL_SET": "markers",
            "MOCAPFLOW_FIT_MAX_ITERS": "200",
            "MOCAPFLOW_S3_ENDPOINT_URL": gate.url,  # every client of the run, Ray's workers included, goes through it
            "MOCAPFLOW_S3_KEY": "testing",
            "MOCAPFLOW_S3_SECRET": "testing",
            "PREFECT_API_URL": outage_api,
        }
        for k, v in env.items():
            mp.setenv(k, v)
        outage = Outage(gate, OUTAGE_S)
        _hook(stage, outage, mp)
        state = process_cohort(
            CohortSource(prefix=f"s3://{s3_bucket}/videos", glob="*.mp4"),
            RunOptions(storage_root=f"s3://{s3_bucket}/store"),
            return_state=True,
        )
        assert outage.started.is_set(), f"the {stage} stage never started"
        assert outage.ended.wait(OUTAGE_S + 5)
    summary = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert [r["status"] for r in summary["rows"]] == ["ok", "ok"]
    assert summary["pose_calls"] == 2 and summary["fit_calls"] == 2  # no stage was re-run
    store = Store(f"s3://{s3_bucket}/store", s3_server.storage_options())
    keys = store.list("")
    assert len([k for k in keys if k.endswith("/keypoints.parquet")]) == 2
    assert len([k for k in keys if k.endswith("/angles.parquet")]) == 2
    assert len([k for k in keys if k.startswith("runs/") and k.endswith("/_COMMITTED")]) == 1
    assert not [k for k in keys if k.startswith("leases/")]


def test_a_paused_object_store_holds_a_write_until_it_resumes(tmp_path: Path) -> None:
    """moto SIGSTOPped for OUTAGE_S: connections are accepted by the kernel but nothing answers (unlike a refused
    connection); a table written meanwhile lands once the server resumes, whole, and reads back equal."""
    import os
    import signal
    import time

    import pyarrow as pa

    from mocapflow.store import Store

    with S3Server() as s3:
        s3.make_bucket("paused")
        store = Store("s3://paused/store", s3.storage_options())
        store.put_bytes("warm.txt", b"x")  # the client's connections are open before the pause
        table = pa.table({"frame": list(range(1000)), "x": [float(i) / 7 for i in range(1000)]})
        pid = s3._proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        timer = threading.Timer(OUTAGE_S, os.kill, (pid, signal.SIGCONT))
        timer.start()
        try:
            t0 = time.monotonic()
            report = store.write_table("keypoints/t.parquet", table)
            waited = time.monotonic() - t0
        finally:
            timer.join()
            os.kill(pid, signal.SIGCONT)
        assert waited >= OUTAGE_S - 0.5  # it really waited for the server
        assert report.rows == 1000 and store.read_table("keypoints/t.parquet").equals(table)


S3RVER = Path.home() / ".cache" / "mocapflow" / "s3rver" / "node_modules" / ".bin" / "s3rver"


@pytest.mark.skipif(
    not S3RVER.is_file(),
    reason="s3rver not installed: npm install --prefix ~/.cache/mocapflow/s3rver s3rver@3.7.1",
)
def test_a_second_s3_implementation_on_disk_holds_byte_identical_tables_across_a_restart(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """The same keypoints table written through the store to moto and to s3rver (another S3 implementation, on
    disk) is byte-identical in both, and s3rver still serves the same bytes after it was stopped and restarted."""
    import subprocess
    import time

    import numpy as np

    from infra.s3server import free_port
    from mocapflow.camera import Intrinsics
    from mocapflow.keypoints import KeypointsMeta, build_table
    from mocapflow.store import Store

    n, j = 30, 5
    rng = np.random.default_rng(0)
    meta = KeypointsMeta(
        video_sha256="ab" * 32,
        fps=30.0,
        width=640,
        height=480,
        n_frames=n,
        intrinsics=Intrinsics.from_fov(640, 480, 55.0),
        joint_names=tuple(f"j{i}" for i in range(j)),
        joint_edges=((0, 1), (1, 2)),
        model_id="0123456789abcdef",
        model_name="markers",
        params={},
    )
    table = build_table(
        np.arange(n, dtype=np.int32),
        None,
        rng.uniform(0, 400, (n, j, 2)).astype(np.float32),
        rng.uniform(-500, 3000, (n, j, 3)).astype(np.float32),
        rng.uniform(0.1, 1, (n, j)).astype(np.float32),
        np.tile(np.array([10, 20, 200, 400], np.float32), (n, 1)),
        np.ones(n, np.float32),
        np.zeros(n, np.int32),
        meta,
    )
    key = "keypoints/model=0123456789abcdef/video=ab/params=x/keypoints.parquet"
    moto = Store(f"s3://{s3_bucket}/store", s3_server.storage_options())
    moto.write_table(key, table)

    data_dir, port = tmp_path / "s3rver", free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                str(S3RVER),
                "-d",
                str(data_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-s",
                "--configure-bucket",
                "cohort",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
            time.sleep(0.1)
        proc.kill()
        raise RuntimeError("s3rver did not start")

    opts = {"key": "S3RVER", "secret": "S3RVER", "endpoint_url": f"http://127.0.0.1:{port}"}
    proc = start()
    try:
        Store("s3://cohort/store", opts).write_table(key, table)
    finally:
        proc.terminate()
        proc.wait(10)
    proc = start()  # on disk: the object outlives the server process
    try:
        again = Store("s3://cohort/store", opts)
        assert again.get_bytes(key) == moto.get_bytes(key)
        assert again.read_table(key).equals(table)
    finally:
        proc.terminate()
        proc.wait(10)
