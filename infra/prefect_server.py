"""A real Prefect server (`prefect server start`) in a child process, on a free loopback port, for tests.

    with PrefectServer(home=tmp_path) as server:
        env = {**os.environ, **server.client_env()}   # PREFECT_API_URL for processes that talk to it

Unlike Prefect's temporary server, this one runs the server's own services (the scheduler that turns deployment
schedules into flow runs, late runs, ...), so what a scheduled deployment does can be observed end to end. Its
database is SQLite under ``home`` (a fresh folder per server: nothing is shared with the user's Prefect home).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from infra.s3server import free_port

logger = logging.getLogger(__name__)


class PrefectServer:
    """Start `prefect server start --host H --port P` on ``start()``/``__enter__``; stop it on ``stop()``/``__exit__``.

    ``env`` adds server settings (e.g. ``PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS``). The UI is told the same
    port (``PREFECT_SERVER_API_PORT``), or it would call port 4200.
    """

    def __init__(
        self,
        home: str | Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 180.0,
    ) -> None:
        self.home = Path(home)
        self.host = host
        self.port = port
        self.extra_env = dict(env or {})
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def api_url(self) -> str:
        if self.port is None:
            raise RuntimeError("PrefectServer is not started; use `with PrefectServer(...) as server:`")
        return f"http://{self.host}:{self.port}/api"

    def client_env(self) -> dict[str, str]:
        """Environment for a process that should talk to this server."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_HOME": str(self.home),
        }

    def start(self) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            **self.extra_env,
        }
        env.pop("PREFECT_API_URL", None)
        self._log = tempfile.TemporaryFile()
        cmd = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        self._proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"prefect server on port {self.port} exited at start: {tail}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2.0):
                    logger.info("Prefect server ready at %s (pid %d)", self.api_url, self._proc.pid)
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"prefect server on port {self.port} not ready after {self.timeout_s} s: {tail}")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call to the server's REST API (``path`` below ``/api``)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return "(no output)"
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-chars:] or "(no output)"

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
