"""CPU leases: distinct processes get distinct CPUs; a dead holder frees its CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mocapflow.cpus import lease_cpus

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")


def _holder(lock_dir: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from mocapflow.cpus import lease_cpus
        lease = lease_cpus(1, lock_dir=Path({str(lock_dir)!r}))
        print(lease.cpus[0], flush=True)
        sys.stdin.read()
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_leases_in_two_processes_take_different_cpus(tmp_path: Path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    a = _holder(tmp_path)
    cpu_a = int(a.stdout.readline())
    try:
        with lease_cpus(1, lock_dir=tmp_path) as lease:
            assert lease.cpus is not None and lease.cpus != [cpu_a]
            assert sorted(os.sched_getaffinity(0)) == lease.cpus
    finally:
        a.stdin.close()
        a.wait(10)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def test_a_dead_holder_releases_its_cpu(tmp_path: Path):
    allowed = sorted(os.sched_getaffinity(0))
    a = _holder(tmp_path)
    cpu_a = int(a.stdout.readline())
    a.kill()
    a.wait(10)
    try:
        with lease_cpus(len(allowed), lock_dir=tmp_path) as lease:
            assert lease.cpus == allowed and cpu_a in lease.cpus
    finally:
        os.sched_setaffinity(0, allowed)


def test_unpinned_lease_keeps_the_thread_count(tmp_path: Path):
    lease = lease_cpus(3, pin=False, lock_dir=tmp_path)
    assert lease.cpus is None and lease.threads == 3
    with pytest.raises(ValueError, match="k >= 1"):
        lease_cpus(0)
