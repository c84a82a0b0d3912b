"""Leases for concurrent runs (mocapflow/leases.py): the store's conditional writes, the lease rules, and two
concurrent cohort runs that compute each video once, on a local folder and on S3 (moto), one of them taking over
a crashed run's stale lease.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infra.s3server import S3Server
from mocapflow.leases import Lease, LeaseLost, Leases, LeaseStats, lease_key
from mocapflow.store import Store

pytestmark = pytest.mark.timeout(900)


class Clock:
    """A wall clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/store", s3.storage_options())


def test_conditional_writes(store: Store) -> None:
    key = "leases/x.json"
    tag = store.create_bytes(key, b"one")
    assert tag is not None and store.create_bytes(key, b"two") is None
    assert store.get_bytes_tagged(key) == (b"one", tag)
    new = store.replace_bytes(key, b"three", tag)
    assert new is not None and new != tag
    assert store.replace_bytes(key, b"four", tag) is None  # a stale version is not overwritten ...
    assert store.delete_if(key, tag) is False  # ... nor deleted
    assert store.get_bytes(key) == b"three"
    assert store.delete_if(key, new) is True
    assert store.get_bytes_tagged(key) is None and store.list("leases") == []
    assert store.replace_bytes(key, b"five", new) is None and not store.exists(key)


def test_lease_rules(store: Store) -> None:
    clock = Clock()
    a = Leases(store, "run-a", duration_s=60, clock=clock)
    b = Leases(store, "run-b", duration_s=60, clock=clock)
    key = lease_key("keypoints/model=m/video=v/params=p")
    assert key == "leases/keypoints/model=m/video=v/params=p.json"

    mine, holder = a.acquire(key, "pose v")
    assert mine is not None and holder is None and mine.owner == "run-a"
    other, holder = b.acquire(key)
    assert other is None and holder is not None and holder.owner == "run-a" and holder.token == mine.token
    assert a.current(key).expires == clock.now + 60  # the object in the store says who and until when

    clock.now += 50
    mine = a.renew(mine)  # a renewal moves the expiry ...
    clock.now += 50
    assert b.acquire(key)[0] is None  # ... so 100 s after it was taken it is still a's

    clock.now += 61  # run a died: nobody renews
    taken, holder = b.acquire(key)
    assert taken is not None and holder is None and taken.owner == "run-b"
    with pytest.raises(LeaseLost):
        a.renew(mine)
    a.release(mine)  # a late release of the old lease leaves the new holder alone
    assert a.current(key).token == taken.token
    b.release(taken)
    assert a.current(key) is None


def test_an_unreadable_lease_object_counts_as_expired(store: Store) -> None:
    key = lease_key("fits/model=m/video=v/fit=f")
    store.put_bytes(key, b"not json")
    taken, _ = Leases(store, "run-a").acquire(key)
    assert taken is not None and Leases(store, "run-b").current(key).token == taken.token


@pytest.mark.parametrize("expired", [False, True], ids=["free", "expired"])
def test_of_many_racing_runs_exactly_one_gets_the_lease(store: Store, expired: bool) -> None:
    key = lease_key("keypoints/model=m/video=race/params=p")
    if expired:  # a crashed run's lease: everyone races to take it over
        stale = Lease(key, "crashed", "t0", "h", 1, 0.0, time.time() - 5)
        store.put_bytes(key, stale.to_json())
    go = threading.Barrier(8)

    def race(i: int) -> Lease | None:
        leases = Leases(Store(store.root, store._options), f"run-{i}")
        go.wait()
        return leases.acquire(key)[0]

    with ThreadPoolExecutor(8) as pool:
        won = [lease for lease in pool.map(race, range(8)) if lease is not None]
    assert len(won) == 1
    assert Leases(store, "x").current(key).token == won[0].token


def test_run_once_waits_for_the_holder_and_uses_its_result(store: Store) -> None:
    """Two runs want one output: one computes (its lease renewed by the heartbeat while the work outlasts the lease
    duration several times), the other waits and takes the committed result; the lease is gone afterwards."""
    prefix = "keypoints/model=m/video=v/params=p"
    calls: list[str] = []
    holding = threading.Event()

    def done() -> str | None:
        return store.get_bytes(f"{prefix}/out").decode() if store.exists(f"{prefix}/out") else None

    def run(owner: str) -> tuple[str, LeaseStats]:
        leases = Leases(Store(store.root, store._options), owner, duration_s=0.6, poll_s=0.05)

        def work() -> str:
            calls.append(owner)
            holding.set()
            time.sleep(2.0)  # > 3 lease durations: only renewals keep the other run waiting
            store.put_bytes(f"{prefix}/out", owner.encode())
            return owner

        stats = LeaseStats()
        return leases.run_once(prefix, done, work, "test", stats), stats

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(run, "run-a")
        assert holding.wait(30)
        second = pool.submit(run, "run-b")
        (r1, s1), (r2, s2) = first.result(), second.result()
    assert calls == ["run-a"] and r1 == r2 == "run-a"
    assert (s1.outcome, s2.outcome) == ("computed", "cached")
    assert s2.waited_for == "run-a" and s2.waited_s > 0.5
    assert store.list("leases") == []


def test_a_failed_holder_releases_and_the_waiter_computes(store: Store) -> None:
    prefix = "keypoints/model=m/video=bad/params=p"
    holding = threading.Event()
    calls: list[str] = []

    def run(owner: str, fail: bool) -> str:
        def work() -> str:
            calls.append(owner)
            holding.set()
            time.sleep(0.5)
            if fail:
                raise ValueError("this run failed")
            store.put_bytes(f"{prefix}/out", b"x")
            return owner

        leases = Leases(Store(store.root, store._options), owner, duration_s=30, poll_s=0.05)
        return leases.run_once(prefix, lambda: None if not store.exists(f"{prefix}/out") else "done", work)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(run, "run-a", True)
        assert holding.wait(30)
        second = pool.submit(run, "run-b", False)
        with pytest.raises(ValueError, match="this run failed"):
            first.result()
        assert second.result() == "run-b"  # not 30 s later: the failed run's lease was released at once
    assert calls == ["run-a", "run-b"] and store.list("leases") == []


# -- two concurrent cohort runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mocapflow.synth import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, CohortSpec(n_videos=2, seed=5, seconds=1.0, motions=("squat", "arm_raise")))
    return out


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _keypoints_prefix(video: str, settings: Any) -> str:
    """The keypoints prefix the pose stage will use for ``video`` (as tasks.stages.pose_video derives it)."""
    from mocapflow.pose.pipeline import PoseParams, resolve_intrinsics
    from mocapflow.store import keypoints_prefix
    from mocapflow.video import probe
    from tasks.runtime import resolve_model_set

    info = probe(video)
    params = PoseParams.from_settings(settings)
    intr = resolve_intrinsics(video, info.width, info.height, params.default_fov_deg)
    model_set = resolve_model_set(settings)
    return keypoints_prefix(info.sha256, model_set.id, params.key_params(intr, model_set.manifest.kind))


# the local-folder variant repeats the S3 one through the flows (the lease rules run on both stores above)
@pytest.mark.parametrize("storage", [pytest.param("local", marks=pytest.mark.slow), "s3"])
def test_two_concurrent_runs_compute_each_video_once(
    storage: str, cohort: Path, markers_model_set: Any, prefect_api: str, tmp_path: Path, request: Any
) -> None:
    from flows.cohort import process_cohort
    from flows.params import CohortSource, RunOptions
    from infra.ray_cluster import ensure_ray

    env = {
        "MOCAPFLOW_MODELS_DIR": str(markers_model_set.root.parent),
        "MOCAPFLOW_MODEL_SET": "markers",
        "MOCAPFLOW_FIT_MAX_ITERS": "200",
        "MOCAPFLOW_LEASE_S": "20",
        "MOCAPFLOW_LEASE_POLL_S": "0.5",
        "PREFECT_API_URL": prefect_api,
    }
    if storage == "local":
        root = str(tmp_path / "store")
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        root = f"s3://{request.getfixturevalue('s3_bucket')}/store"
        env.update(
            MOCAPFLOW_S3_ENDPOINT_URL=s3.endpoint_url,
            MOCAPFLOW_S3_KEY="testing",
            MOCAPFLOW_S3_SECRET="testing",
        )
    handler = _Lines()
    lease_log = logging.getLogger("mocapflow.leases")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        options = RunOptions(storage_root=root)
        settings = options.settings()
        store = Store.from_settings(settings)
        ensure_ray(settings, prefect_api_url=prefect_api)  # one Ray for both runs, started before they are

        # a crashed run left a lease on the first video's keypoints, expired 5 s ago: it is taken over
        videos = sorted(str(p) for p in cohort.glob("*.mp4"))
        stale_key = lease_key(_keypoints_prefix(videos[0], settings))
        store.put_bytes(
            stale_key, Lease(stale_key, "crashed-run", "t", "h", 1, 0.0, time.time() - 5).to_json()
        )

        source = CohortSource(manifest=str(cohort / "cohort.csv"))
        lease_log.addHandler(handler)
        level = lease_log.level
        lease_log.setLevel(logging.INFO)
        try:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(process_cohort, source, options, return_state=True)
                # the second run starts once the first holds a lease of its own: it meets live leases
                deadline = time.monotonic() + 300
                while not [k for k in store.list("leases") if k != stale_key] and not first.done():
                    assert time.monotonic() < deadline, "the first run took no lease"
                    time.sleep(0.1)
                second = pool.submit(process_cohort, source, options, return_state=True)
                states = [first.result(), second.result()]
        finally:
            lease_log.removeHandler(handler)
            lease_log.setLevel(level)
    summaries = [s.result(raise_on_failure=False) for s in states]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert all(r["status"] == "ok" for summary in summaries for r in summary["rows"])
    # each video's keypoints and fit were computed once over both runs
    assert sum(s["pose_calls"] for s in summaries) == 2
    assert sum(s["fit_calls"] for s in summaries) == 2
    assert any("waiting for its result" in line for line in handler.lines), handler.lines
    assert any("took over the expired lease" in line and "crashed-run" in line for line in handler.lines)
    assert store.list("leases") == []  # released on success
    assert len([k for k in store.list("keypoints") if k.endswith("/keypoints.parquet")]) == 2


def test_the_test_s3_server_makes_a_condition_and_its_write_one_step() -> None:
    """moto checks If-None-Match and then writes without a lock; infra/moto_child runs each mutating request alone,
    as S3 does. A check-then-write app (with a pause between the two) lets several racers win; wrapped, one does."""
    from infra.moto_child import writes_one_at_a_time

    def race(wrap: Any) -> int:
        objects: dict[str, bytes] = {}

        def check_then_write(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            if environ["PATH_INFO"] in objects:
                start_response("412 Precondition Failed", [])
                return [b""]
            time.sleep(0.01)
            objects[environ["PATH_INFO"]] = b"x"
            start_response("200 OK", [])
            return [b""]

        app = wrap(check_then_write)
        go = threading.Barrier(6)
        codes: list[str] = []

        def put(_: int) -> None:
            go.wait()
            app({"REQUEST_METHOD": "PUT", "PATH_INFO": "/b/k"}, lambda status, headers: codes.append(status))

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(put, range(6)))
        return sum(c.startswith("200") for c in codes)

    assert race(lambda app: app) > 1  # moto's way: the race is real
    assert race(writes_one_at_a_time) == 1
