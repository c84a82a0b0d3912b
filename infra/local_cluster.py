"""A real multi-node Ray cluster on this machine, for tests and benchmarks: one ``ray start --head`` plus worker nodes
started with ``ray start --address`` on loopback, each with its own CPU count and custom resources.

    with LocalRayCluster(head_cpus=2, workers=[WorkerNode(cpus=2, resources={"node2": 1})]) as cluster:
        env = {**os.environ, **cluster.client_env()}   # MOCAPFLOW_RAY_ADDRESS and the auth token for drivers
        ...
        cluster.kill_worker(0)                          # SIGKILL that node's raylet (a node lost mid-run)

Token authentication (Ray >= 2.59 enables it for local clusters): every node and every driver gets the same
``RAY_AUTH_MODE=token`` / ``RAY_AUTH_TOKEN``; a node started without it fails to join with ``InvalidAuthToken``.
On exit every process of this cluster, and only of this cluster, is stopped.

Every node of the cluster uses its own Ray temp folder (``--temp-dir``, removed on stop): `ray start` writes its
"current cluster" pointer there, not in /tmp/ray, so a local ``ray.init()`` elsewhere on the host (another test,
another user) never tries to join this cluster, nor a dead one if this process is killed before it can stop it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from infra.s3server import free_port

logger = logging.getLogger(__name__)

SLOW_START = "timed out during startup"  # Ray's message when a node's raylet did not register within 30 s


@dataclass(frozen=True)
class WorkerNode:
    """A worker node's logical CPUs and custom resources (e.g. ``{"node2": 1}`` to target it)."""

    cpus: int = 1
    resources: dict[str, float] = field(default_factory=dict)


class LocalRayCluster:
    """Start a head node and worker nodes on 127.0.0.1; stop them all on ``stop()`` / ``__exit__``."""

    def __init__(
        self,
        head_cpus: int = 1,
        workers: list[WorkerNode] | None = None,
        dashboard: bool = True,
        env: dict[str, str] | None = None,
        timeout_s: float = 180.0,
        keep_logs: bool = False,
    ) -> None:
        self.head_cpus = head_cpus
        self.workers = list(workers or [WorkerNode()])
        self.dashboard = dashboard
        self.extra_env = dict(env or {})
        self.timeout_s = timeout_s
        self.token = secrets.token_hex(24)
        self.port: int | None = None
        self.dashboard_port: int | None = None
        self.worker_manager_ports: list[int] = []
        self.keep_logs = keep_logs
        self.temp_dir: Path | None = None
        self.start_seconds: float | None = None  # how long start() took (nodes up and joined)
        self._ray = str(Path(sys.executable).with_name("ray"))

    # -- addresses and environments ----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalRayCluster is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        if self.dashboard_port is None:
            raise RuntimeError("LocalRayCluster has no dashboard")
        return f"http://127.0.0.1:{self.dashboard_port}"

    def auth_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def client_env(self) -> dict[str, str]:
        """Environment for a driver process (mocapflow settings + the token)."""
        return {**self.auth_env(), "MOCAPFLOW_RAY_ADDRESS": self.address}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        # a loaded machine can take longer than the default 15 s for a node's agents to register
        slow_start = {"RAY_agent_register_timeout_ms": "120000", "RAY_raylet_start_wait_time_s": "120"}
        return {**env, "RAY_USAGE_STATS_ENABLED": "0", **slow_start, **self.auth_env(), **self.extra_env}

    def _run(self, args: list[str]) -> None:
        proc = subprocess.run(
            [self._ray, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            if SLOW_START in proc.stdout + proc.stderr:
                # `ray start` waits a fixed 30 s (not configurable) for its raylet to register; on a loaded host
                # the raylet often registers later (its own waits are lengthened in _env): start() waits for it
                logger.warning("`ray %s`: the node was slow to register; waiting for it to join", args[1])
                return
            raise RuntimeError(
                f"`ray {' '.join(args[:2])}` failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> LocalRayCluster:
        t0 = time.monotonic()
        self.port = free_port()
        # short: Ray's unix sockets live under it (sun_path has ~107 bytes)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mfray-", dir="/tmp"))
        atexit.register(self.stop)  # a driver that exits without stopping the cluster still stops it
        head = ["start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port)]
        head += ["--temp-dir", str(self.temp_dir)]
        head += ["--num-cpus", str(self.head_cpus), "--disable-usage-stats"]
        if self.dashboard:
            self.dashboard_port = free_port()
            head += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1"]
            head += ["--dashboard-port", str(self.dashboard_port)]
        else:
            head += ["--include-dashboard", "false"]
        try:
            self._run(head)
            for w in self.workers:
                nm_port = free_port()
                self.worker_manager_ports.append(nm_port)
                args = ["start", "--address", self.address, "--node-ip-address", "127.0.0.1"]
                args += ["--temp-dir", str(self.temp_dir)]
                args += ["--num-cpus", str(w.cpus), "--node-manager-port", str(nm_port)]
                if w.resources:
                    args += ["--resources", json.dumps(w.resources)]
                self._run(args)
            self._wait_for_nodes(1 + len(self.workers))
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        logger.info(
            "Ray cluster at %s with %d nodes, up in %.0f s",
            self.address,
            1 + len(self.workers),
            self.start_seconds,
        )
        return self

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes as Ray reports them: [{"node_id", "resources", "alive"}], via a short-lived driver."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "print(json.dumps([{'node_id': n['NodeID'], 'alive': n['Alive'], 'resources': n['Resources']}"
            " for n in ray.nodes()]))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], env=self._env(), capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"could not list the nodes of {self.address}: {proc.stderr[-1500:]}")
        return [n for n in json.loads(proc.stdout.strip().splitlines()[-1]) if n["alive"]]

    def state(self, kind: str) -> list[dict[str, Any]]:
        """Actors or tasks (``kind``) as Ray's state API lists them (the dashboard's), via a short-lived process with
        this cluster's token: [{"name", "class_name", "node_id", "state", "attempt_number", "actor_id"}] (a task
        run again has one row per attempt)."""
        if kind not in ("actors", "tasks"):
            raise ValueError(f"kind must be 'actors' or 'tasks', got {kind!r}")
        code = (
            "import json\n"
            f"from ray.util.state import list_{kind}\n"
            f"rows = list_{kind}(address={self.dashboard_url!r}, limit=10000, raise_on_missing_output=False)\n"
            "keys = ('name', 'class_name', 'node_id', 'state', 'attempt_number', 'actor_id')\n"
            "print(json.dumps([{k: getattr(r, k, None) for k in keys} for r in rows]))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], env=self._env(), capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"could not list the {kind} of {self.address}: {proc.stderr[-1500:]}")
        return list(json.loads(proc.stdout.strip().splitlines()[-1]))

    def _wait_for_nodes(self, n: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if len(self.nodes()) >= n:
                return
            time.sleep(1.0)
        raise TimeoutError(f"Ray cluster at {self.address}: {n} nodes did not join in {self.timeout_s:.0f} s")

    def raylet_pid(self, worker: int) -> int:
        """The pid of worker node ``worker``'s raylet (found by its node-manager port)."""
        import psutil

        flag = f"--node_manager_port={self.worker_manager_ports[worker]}"
        for p in psutil.process_iter(["pid", "name", "cmdline"]):
            cmd = p.info.get("cmdline") or []
            if any(flag == c for c in cmd) and any("raylet" in c for c in cmd[:1]):
                return int(p.info["pid"])
        raise LookupError(f"no raylet with {flag} is running")

    def kill_worker(self, worker: int) -> int:
        """SIGKILL worker node ``worker``'s raylet (its workers die with it): a node lost mid-run."""
        pid = self.raylet_pid(worker)
        os.kill(pid, signal.SIGKILL)
        logger.info("killed the raylet of worker node %d (pid %d)", worker, pid)
        return pid

    def _processes(self) -> list[Any]:
        """Every process of THIS cluster (GCS, raylets, agents, workers): those naming its GCS port. Other Ray
        clusters on the host (other tests, other users) are left alone, unlike `ray stop`."""
        import psutil

        marks = (f":{self.port} ", f"={self.port} ")  # --gcs-address=HOST:PORT, --gcs_server_port=PORT, ...
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info.get("cmdline") or []) + " "
            if p.pid != os.getpid() and any(m in cmd for m in marks):
                found.append(p)
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process of this cluster."""
        import psutil

        if self.port is None:
            return
        procs = self._processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _gone, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        # `ray start` leaves a pointer to this cluster for later `ray.init()` calls; it is in this cluster's own temp
        # folder, but a pointer in the host's /tmp/ray (a cluster started without --temp-dir) would make every later
        # local ray.init() on the host try to join a dead cluster
        pointer = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if pointer.read_text().strip().endswith(f":{self.port}"):
                pointer.unlink()
        if self.temp_dir is not None and not self.keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        logger.info("stopped the Ray cluster at %s (%d processes)", self.address, len(procs))
        self.port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
