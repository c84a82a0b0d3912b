"""Leases: concurrent runs of one cohort reserve the work they are doing, so a video is computed once.

Before a stage computes an output (a video's keypoints, its fit) it takes a lease: a small JSON object in the store
under ``leases/<the output's prefix>.json`` naming the run that holds it and when the lease expires (as DataJoint's
``reserve_jobs`` reserves a key in its jobs table). Another run that needs the same output finds the lease live and
waits, polling, until the output is committed (then uses it, doing no work) or the lease is gone (released after a
failure, or expired because its run died: then it takes the lease and computes). While the holder works, a heartbeat
thread renews the lease every third of its duration, so a long stage keeps it and only a dead run's lease expires.
The holder deletes its lease when the stage ends, successfully or not.

Every change of a lease object is atomic in the store (:meth:`mocapflow.store.Store.create_bytes`,
``replace_bytes``, ``delete_if``: S3 conditional writes ``If-None-Match: *`` / ``If-Match: <ETag>``, on a local
folder a hard link and a flock): of two runs that race for a free or expired lease exactly one gets it. After a
create or a takeover the lease is read back and must carry this attempt's random token (a retried request whose first
attempt had succeeded is recognised as ours). A store that ignores the conditions (old S3 implementations) is caught
by that read-back in most races but not all; there two runs may then compute one output twice, which is safe: outputs
are content-addressed and written in one put, so the second write replaces the first with the same result.

Expiry compares wall clocks of different machines: keep ``lease_s`` well above their skew (NTP: milliseconds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from mocapflow.store import Store, check_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

LEASES = "leases"


class LeaseLost(RuntimeError):
    """A renewal found that the lease is no longer ours (it expired and another run took it over)."""


def lease_key(output_prefix: str) -> str:
    """``leases/<output_prefix>.json``: where the lease of the output under ``output_prefix`` lives."""
    return f"{LEASES}/{check_key(output_prefix)}.json"


@dataclass(frozen=True)
class Lease:
    """One lease object: who holds the output at ``key`` and until when (``expires``, seconds since the epoch)."""

    key: str
    owner: str  # the run (a flow run id), for messages
    token: str  # unique per acquisition: the proof a lease object is ours
    host: str
    pid: int
    acquired: float
    expires: float
    what: str = ""
    tag: str = ""  # the store's version tag of the object as we last wrote it (not stored)

    def to_json(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "tag"}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes, tag: str) -> Lease | None:
        """The lease in ``data``; None for an unreadable object (a stranger's file: treated as expired)."""
        try:
            d = json.loads(data)
            return cls(
                key=key,
                owner=str(d["owner"]),
                token=str(d["token"]),
                host=str(d.get("host", "")),
                pid=int(d.get("pid", 0)),
                acquired=float(d["acquired"]),
                expires=float(d["expires"]),
                what=str(d.get("what", "")),
                tag=tag,
            )
        except (ValueError, KeyError, TypeError):
            return None

    def live(self, now: float) -> bool:
        return now < self.expires

    def describe(self, now: float) -> str:
        return f"run {self.owner} on {self.host} (pid {self.pid}), expires in {self.expires - now:.0f} s"


@dataclass
class LeaseStats:
    """What one :meth:`Leases.run_once` did: ``computed`` or ``cached``, and how long it waited for other runs."""

    outcome: str = ""
    waited_s: float = 0.0
    waited_for: str | None = None


class Leases:
    """Take, renew and release leases in ``store`` for the run ``owner``.

    ``duration_s`` is how long a lease lives without renewal (setting ``lease_s``); ``poll_s`` how often a waiting run
    looks again (setting ``lease_poll_s``). ``clock`` is the wall clock (a test may pass another).
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        duration_s: float = 60.0,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if duration_s <= 0 or poll_s <= 0:
            raise ValueError(f"lease duration and poll interval must be > 0, got {duration_s} and {poll_s}")
        self.store = store
        self.owner = owner
        self.duration_s = float(duration_s)
        self.poll_s = float(poll_s)
        self.clock = clock

    @classmethod
    def from_settings(cls, store: Store, owner: str, settings: Any) -> Leases:
        return cls(store, owner, settings.lease_s, settings.lease_poll_s)

    # -- one lease ------------------------------------------------------------------------------------------

    def current(self, key: str) -> Lease | None:
        """The lease object at ``key`` as it is now (None if there is none)."""
        got = self.store.get_bytes_tagged(key)
        if got is None:
            return None
        data, tag = got
        lease = Lease.from_json(key, data, tag)
        if lease is None:
            logger.warning("lease %s is not a lease object; it is taken as expired", self.store.uri(key))
            return Lease(key, "?", "?", "?", 0, 0.0, 0.0, tag=tag)
        return lease

    def _new(self, key: str, what: str) -> Lease:
        now = self.clock()
        return Lease(
            key=key,
            owner=self.owner,
            token=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            acquired=now,
            expires=now + self.duration_s,
            what=what,
        )

    def _confirm(self, lease: Lease) -> Lease | None:
        """The lease as stored if it carries our token (our write landed), else None."""
        now = self.current(lease.key)
        if now is not None and now.token == lease.token:
            return now
        return None

    def acquire(self, key: str, what: str = "") -> tuple[Lease | None, Lease | None]:
        """Try to take the lease at ``key``: ``(ours, None)`` on success, ``(None, holder)`` while another run's lease
        is live. An expired lease is taken over (atomically: only if it is still the version read)."""
        lease = self._new(key, what)
        tag = self.store.create_bytes(key, lease.to_json())
        if tag is not None:
            return replace(lease, tag=tag), None
        mine = self._confirm(lease)  # a retried create whose first attempt had landed
        if mine is not None:
            return mine, None
        held = self.current(key)
        if held is None:  # released meanwhile: try again from the start
            return self.acquire(key, what)
        now = self.clock()
        if held.live(now):
            return None, held
        tag = self.store.replace_bytes(key, lease.to_json(), held.tag)
        if tag is None:
            mine = self._confirm(lease)
            if mine is None:
                return None, self.current(key) or held  # another run took it over first
            tag = mine.tag
        logger.warning(
            "took over the expired lease %s of %s (expired %.0f s ago)",
            self.store.uri(key),
            held.owner,
            now - held.expires,
        )
        return replace(lease, tag=tag), None

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by ``duration_s`` from now; LeaseLost if it is no longer ours."""
        renewed = replace(lease, expires=self.clock() + self.duration_s)
        tag = self.store.replace_bytes(lease.key, renewed.to_json(), lease.tag)
        if tag is None:
            mine = self._confirm(renewed)
            if mine is None:
                raise LeaseLost(f"lease {self.store.uri(lease.key)} is no longer held by run {self.owner}")
            return mine
        return replace(renewed, tag=tag)

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` if it is still ours (a lease another run took over is left to it)."""
        if not self.store.delete_if(lease.key, lease.tag):
            logger.warning("lease %s was not ours any more when released", self.store.uri(lease.key))

    @contextlib.contextmanager
    def hold(self, lease: Lease) -> Iterator[None]:
        """Keep ``lease`` renewed (every third of its duration) while the body runs; release it afterwards."""
        stop = threading.Event()
        state = {"lease": lease}

        def beat() -> None:
            while not stop.wait(self.duration_s / 3):
                try:
                    state["lease"] = self.renew(state["lease"])
                except LeaseLost as e:
                    logger.warning("%s; the work goes on (its output is content-addressed)", e)
                    return
                except Exception as e:  # noqa: BLE001 - a failed renewal is retried at the next beat
                    logger.warning("cannot renew lease %s: %s", self.store.uri(lease.key), e)

        heart = threading.Thread(target=beat, daemon=True, name=f"lease {lease.key}")
        heart.start()
        try:
            yield
        finally:
            stop.set()
            heart.join()
            try:
                self.release(state["lease"])
            except Exception as e:  # noqa: BLE001 - an unreleased lease only expires later
                logger.warning(
                    "cannot release lease %s (it expires by itself): %s", self.store.uri(lease.key), e
                )

    # -- the pattern every stage uses ---------------------------------------------------------------------------

    def run_once(
        self,
        output_prefix: str,
        done: Callable[[], T | None],
        work: Callable[[], T],
        what: str = "",
        stats: LeaseStats | None = None,
    ) -> T:
        """The output under ``output_prefix``: ``done()`` when it is committed (by anyone), else ``work()`` under this
        run's lease. While another live run holds the lease, wait (polling every ``poll_s``) for its result."""
        stats = stats if stats is not None else LeaseStats()
        key = lease_key(output_prefix)
        t0 = time.monotonic()
        told = False
        while True:
            if (result := done()) is not None:
                stats.outcome = "cached"
                break
            lease, holder = self.acquire(key, what)
            if lease is not None:
                try:
                    # the holder may have committed and released between done() and acquire()
                    if (result := done()) is not None:
                        stats.outcome = "cached"
                        self.release(lease)
                        break
                    with self.hold(lease):
                        result = work()
                    stats.outcome = "computed"
                    break
                except BaseException:
                    stats.outcome = "failed"
                    raise
            assert holder is not None
            if not told:
                logger.info(
                    "%s: held by %s; waiting for its result",
                    what or output_prefix,
                    holder.describe(self.clock()),
                )
                told = True
                stats.waited_for = holder.owner
            time.sleep(self.poll_s)
        stats.waited_s = time.monotonic() - t0 if told else 0.0
        if told:
            logger.info("%s: %s after waiting %.1f s", what or output_prefix, stats.outcome, stats.waited_s)
        return result
