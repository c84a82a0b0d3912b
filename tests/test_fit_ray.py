"""The fitting task on Ray: a fresh worker pins itself to one CPU before JAX starts, then fits and writes."""

from __future__ import annotations

import os

import pytest

from mocapflow.settings import Settings
from mocapflow.store import SUCCESS, Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")

NAMES = (
    "rhip",
    "lhip",
    "rasis",
    "lasis",
    "rkne",
    "lkne",
    "rank",
    "lank",
    "rsho",
    "lsho",
    "relb",
    "lelb",
    "rwri",
)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_fit_task_pins_one_cpu_before_jax_and_writes_the_fit(tmp_path, local_ray, gait_keypoints):
    from tasks.fit_ray import submit_fit

    uri = gait_keypoints(tmp_path / "in", 40, NAMES)
    settings = Settings(
        storage_root=str(tmp_path / "out"), cache_dir=tmp_path / "cache", fit_cpus=1, pin_cpus=True
    )
    summary = ray.get(submit_fit(uri, settings, max_iters=60), timeout=300)

    worker = summary["worker"]
    assert worker["pid"] != os.getpid()
    assert worker["threads"] == 1
    assert worker["affinity"] is not None and len(worker["affinity"]) == 1
    assert worker["affinity"][0] in os.sched_getaffinity(0)
    assert "intra_op_parallelism_threads=1" in worker["xla_flags"].split()
    assert "--xla_cpu_multi_thread_eigen=false" in worker["xla_flags"].split()
    assert worker["jax_devices"] == 1 and worker["jax_platform"] == "cpu"

    out = Store(str(tmp_path / "out"))
    assert out.is_committed(summary["prefix"])
    assert out.get_json(f"{summary['prefix']}/{SUCCESS}")["rows"] == 40
    assert summary["iterations"] == 60
    # the worker configured JAX's persistent compilation cache under the settings' cache folder
    assert any((tmp_path / "cache" / "jax").rglob("*")), "no compilation cache written"


def test_fit_workers_are_reused_with_their_pinning(tmp_path, local_ray, gait_keypoints):
    """A second fit runs in the same worker (JAX already imported, code compiled), still pinned to one CPU."""
    from tasks.fit_ray import submit_fit

    uri = gait_keypoints(tmp_path / "in", 40, NAMES)
    settings = Settings(
        storage_root=str(tmp_path / "out"), cache_dir=tmp_path / "cache", fit_cpus=1, pin_cpus=True
    )
    first = ray.get(submit_fit(uri, settings, max_iters=20), timeout=300)
    second = ray.get(submit_fit(uri, settings, out_root=str(tmp_path / "out2"), max_iters=20), timeout=300)
    assert second["worker"]["pid"] == first["worker"]["pid"]
    assert len(second["worker"]["affinity"]) == 1 and second["worker"]["threads"] == 1
