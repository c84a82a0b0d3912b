"""CPU leases: pin a worker process to k CPUs that no other mocapflow worker on the node holds.

Ray accounts for CPUs but does not give a task specific core ids, so N workers that each size their thread pools
to "all cores" oversubscribe the node (DESIGN.md "Threads"). A lease takes an exclusive ``flock`` on one lock file
per CPU under a node-local folder, pins the process to those CPUs (``os.sched_setaffinity``) and releases the locks
when the process ends or the lease is closed. The kernel drops flocks of dead processes, so a crashed worker never
leaks its CPUs. Where affinity cannot be set (not Linux, or a restricted container) the lease still reports its
thread count and pins nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"mocapflow-cpus-{os.getuid()}"


@dataclass
class CpuLease:
    """k CPUs held by this process; ``cpus`` is None when nothing could be pinned."""

    threads: int
    cpus: list[int] | None
    _files: list[IO[bytes]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for f in self._files:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            finally:
                f.close()
        self._files.clear()

    def __enter__(self) -> CpuLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_cpus(k: int, pin: bool = True, lock_dir: Path | None = None) -> CpuLease:
    """Take k free CPUs of this process's allowed set, pin to them, and return the lease.

    If fewer than k CPUs are free (more workers than cores on the node), nothing is pinned (the OS balances a crowded
    node better than CPUs shared by pinning) and a warning is logged. Thread pools are sized to k in every case.
    """
    if k < 1:
        raise ValueError(f"a CPU lease needs k >= 1, got {k}")
    if not pin or not hasattr(os, "sched_setaffinity"):
        return CpuLease(k, None)
    allowed = _initial_affinity()
    k_eff = min(k, len(allowed))
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    files: list[IO[bytes]] = []
    chosen: list[int] = []
    for cpu in allowed:
        if len(chosen) == k_eff:
            break
        f = _try_lock(lock_dir / f"cpu{cpu}.lock")
        if f is not None:
            files.append(f)
            chosen.append(cpu)
    if len(chosen) < k_eff:
        # A crowded node (more pinned workers than CPUs, or other Ray clusters on it): pinning to a CPU that other
        # workers are pinned to as well serialises them there while another CPU may idle (measured by
        # `mocapflow bench`: two actors of one pool ended on the same CPU and ran at half the speed of one unpinned
        # process). The OS balances such a node better: run unpinned, threads still sized to k.
        for f in files:
            f.close()
        logger.info(  # the planned fallback of a small or shared node, not a fault (and not for the terminal)
            "only %d of %d CPUs free on this node; running unpinned with %d threads", len(chosen), k_eff, k
        )
        with contextlib.suppress(OSError):  # a reused worker may still be pinned by its previous lease
            os.sched_setaffinity(0, allowed)
        return CpuLease(k, None)
    try:
        os.sched_setaffinity(0, chosen)
    except OSError as e:
        logger.warning("could not pin to CPUs %s (%s); running unpinned with %d threads", chosen, e, k)
        for f in files:
            f.close()
        return CpuLease(k, None)
    logger.debug("pinned pid %d to CPUs %s", os.getpid(), chosen)
    return CpuLease(k_eff, chosen, files)


@functools.cache
def _initial_affinity() -> list[int]:
    """The CPUs this process was allowed before its first lease pinned it (a reused worker leases again)."""
    return sorted(os.sched_getaffinity(0))


def _try_lock(path: Path) -> IO[bytes] | None:
    f = open(path, "ab")  # noqa: SIM115 - held for the lease's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def current_affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
