"""Where a run's fits go (tasks/runtime.FlowRuntime.run_fit), with stand-ins for Ray and the pose pool: to Ray while
the run has fewer fits there than the CPUs its pool leaves, then to a pose actor with no video to do, else they wait;
the pool is released once the run's pose work is done and no fit uses it or waits."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from mocapflow.settings import Settings  # noqa: E402
from tasks.runtime import FlowRuntime  # noqa: E402


class FakePool:
    def __init__(self, actors: int) -> None:
        self.idle = list(range(actors))
        self.alive, self.reserve_cpus = actors, 1

    def borrow(self) -> int | None:
        return self.idle.pop(0) if self.idle else None

    def give_back(self, slot: int) -> None:
        self.idle.append(slot)

    def fit_on(self, slot: int, uri: str, settings: Settings, thumbnail: bool) -> tuple[str, str]:
        return f"actor{slot}", uri


class FakeLease:
    def __init__(self, pool: FakePool) -> None:
        self.pool, self.released = pool, None

    def release(self, idle_s: float) -> None:
        self.released = idle_s


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> tuple[FlowRuntime, dict[str, threading.Event], list[str]]:
    """A run on a 2-CPU cluster whose 1-actor pool holds one CPU: Ray gets one fit at a time."""
    import tasks.fit_ray

    gates: dict[str, threading.Event] = {}
    started: list[str] = []

    def get(ref: tuple[str, str]) -> dict[str, Any]:
        where, uri = ref
        started.append(f"{uri}@{where}")
        gates.setdefault(uri, threading.Event()).wait(30)
        return {"where": where}

    monkeypatch.setattr(FlowRuntime, "ensure_ray", lambda self: None)
    monkeypatch.setattr(tasks.fit_ray, "submit_fit", lambda uri, s, thumbnail=False: ("ray", uri))
    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    rt = FlowRuntime(Settings(pose_pool_idle_s=0), model_set=None, store=None)  # type: ignore[arg-type]
    rt._lease = FakeLease(FakePool(1))
    return rt, gates, started


def _until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_fits_go_to_ray_up_to_the_free_cpus_then_to_an_idle_pose_actor(runtime) -> None:
    rt, gates, started = runtime
    lease = rt._lease
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda u=u: results.update({u: rt.run_fit(u)})) for u in "abc"]
    for t in threads:
        t.start()
        time.sleep(0.05)
    _until(lambda: len(started) == 2, "two fits running")
    assert started == ["a@ray", "b@actor0"]  # c waits: Ray's one CPU and the one actor are busy
    time.sleep(0.5)
    assert len(started) == 2 and rt._fits_waiting == 1

    rt.pose_work_done()  # every video's pose is done, but a fit runs on the pool and one waits: the pool stays
    assert lease.released is None
    gates["b"] = gates.get("b") or threading.Event()
    gates[
        "b"
    ].set()  # the actor's fit ends: c takes the actor (its video work is done, the pool is still the run's)
    _until(lambda: len(started) == 3, "the third fit started")
    assert started[2] == "c@actor0" and lease.released is None
    for u in "ac":
        gates.setdefault(u, threading.Event()).set()
    for t in threads:
        t.join(10)
    assert {u: r["where"] for u, r in results.items()} == {"a": "ray", "b": "actor0", "c": "actor0"}
    assert lease.released == 0 and rt._lease is None  # released once no fit used it
    assert rt.fits_on_pose_actors == 2


def test_without_fits_on_pose_actors_every_fit_goes_to_ray(runtime) -> None:
    rt, gates, started = runtime
    rt.settings = rt.settings.model_copy(update={"fits_on_pose_actors": False})
    threads = [threading.Thread(target=rt.run_fit, args=(u,)) for u in "ab"]
    for t in threads:
        t.start()
    _until(lambda: len(started) == 2, "both fits sent")
    assert sorted(started) == ["a@ray", "b@ray"]
    rt.pose_work_done()
    assert rt._lease is None  # no fit on the pool: released when the pose work is done
    for u in "ab":
        gates.setdefault(u, threading.Event()).set()
    for t in threads:
        t.join(10)
