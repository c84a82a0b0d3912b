"""CPU leases: pin a worker process to k CPUs that no other mocapflow worker on the node holds.

Ray accounts for CPUs but does not give a task specific core ids, so N workers that each size their thread pools
to "all cores" oversubscribe the node (DESIGN.md "Threads"). A lease takes an exclusive ``flock`` on one lock file
per CPU under a node-local folder, pins the process to those CPUs (``os.sched_setaffinity``) and releases the locks
when the process ends or the lease is closed. The kernel drops flocks of dead processes, so a crashed worker never
leaks its CPUs. Where affinity cannot be set (not Linux, or a restricted container) the lease still reports its
thread count and pins nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

MAX_SHARERS = 64  # lock levels per CPU (level 0 = the CPU's own lock)


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

    If fewer than k CPUs are free (more workers than cores), the lease shares: it takes the CPUs with the fewest
    holders (one lock level per sharer) and logs a warning. Thread pools are sized to k in every case.
    """
    if k < 1:
        raise ValueError(f"a CPU lease needs k >= 1, got {k}")
    if not pin or not hasattr(os, "sched_setaffinity"):
        return CpuLease(k, None)
    allowed = sorted(os.sched_getaffinity(0))
    k_eff = min(k, len(allowed))
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    files: list[IO[bytes]] = []
    chosen: list[int] = []
    shared = 0
    # level 0: a CPU of its own; level j > 0: the j-th sharer of a CPU. Taking the lowest free level first spreads
    # the workers of a crowded node evenly over its CPUs (before: every sharer pinned to the first k CPUs, so two
    # actors of one pool could share CPU 0 while CPU 1 was only the other helpers').
    for level in range(MAX_SHARERS):
        for cpu in allowed:
            if len(chosen) == k_eff:
                break
            if cpu in chosen:
                continue
            f = _try_lock(lock_dir / (f"cpu{cpu}.lock" if level == 0 else f"cpu{cpu}.share{level}.lock"))
            if f is not None:
                files.append(f)
                chosen.append(cpu)
                shared += level > 0
        if len(chosen) == k_eff:
            break
    if len(chosen) < k_eff:  # more sharers than MAX_SHARERS per CPU: share the first CPUs without locks
        for f in files:
            f.close()
        files, chosen = [], allowed[:k_eff]
    if shared or not files:
        logger.warning("not enough free CPUs on this node; sharing CPUs %s with other workers", chosen)
    try:
        os.sched_setaffinity(0, chosen)
    except OSError as e:
        logger.warning("could not pin to CPUs %s (%s); running unpinned with %d threads", chosen, e, k)
        for f in files:
            f.close()
        return CpuLease(k, None)
    logger.debug("pinned pid %d to CPUs %s", os.getpid(), chosen)
    return CpuLease(k_eff, chosen, files)


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
