"""A real S3 endpoint on loopback for tests and the demo: moto's server (``moto_server``) in a child process.

    with S3Server() as s3:
        s3.make_bucket("cohort")
        store = Store("s3://cohort", s3.storage_options())

moto keeps everything in memory; stopping the server forgets every bucket. Region us-west-2 (moto rejects bucket
creation with a location constraint in us-east-1).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials; these are not secrets


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class S3Server:
    """Start ``moto_server -H host -p port`` on ``start()``/``__enter__``, stop it on ``stop()``/``__exit__``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        region: str = "us-west-2",
        timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.region = region
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("S3Server is not started; use `with S3Server() as s3:` or call start()")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> S3Server:
        if self.running:
            return self
        fixed = self.port is not None
        for _attempt in range(1 if fixed else 3):
            port = self.port if fixed else free_port(self.host)
            assert port is not None
            if self._launch(port):
                self.port = port
                logger.info("moto S3 server ready at %s (pid %d)", self.endpoint_url, self._proc.pid)  # type: ignore[union-attr]
                return self
        raise RuntimeError(f"moto S3 server did not start on {self.host}: {self._log_tail()}")

    def _launch(self, port: int) -> bool:
        self._close_log()
        self._log = tempfile.TemporaryFile()
        # moto with atomic conditional writes, as S3 has (infra/moto_child.py)
        cmd = [sys.executable, "-m", "infra.moto_child", self.host, str(port)]
        self._proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.timeout_s
        url = f"http://{self.host}:{port}/moto-api/"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:  # exited: port taken or moto missing
                return False
            try:
                with urllib.request.urlopen(url, timeout=1.0):
                    return True
            except urllib.error.HTTPError:
                return True  # it answers HTTP: ready
            except OSError:
                time.sleep(0.05)
        self._terminate()
        raise TimeoutError(
            f"moto S3 server on port {port} not ready after {self.timeout_s} s: {self._log_tail()}"
        )

    def stop(self) -> None:
        self._terminate()
        self._close_log()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _log_tail(self) -> str:
        if self._log is None:
            return "(no output)"
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clients ------------------------------------------------------------------------------------------

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this endpoint (what ``Settings.storage_options()`` gives with the same values)."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
        }

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``mocapflow.settings.Settings`` pointing at this endpoint (storage_root not set)."""
        return {
            "s3_endpoint_url": self.endpoint_url,
            "s3_key": ACCESS_KEY,
            "s3_secret": SECRET_KEY,
            "s3_region": self.region,
        }

    def pyarrow_filesystem(self) -> Any:
        """``pyarrow.fs.S3FileSystem`` for this endpoint (plain HTTP)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=f"{self.host}:{self.port}",
            scheme="http",
            region=self.region,
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists); return ``s3://name``."""
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())
        with contextlib.suppress(FileExistsError):
            fs.mkdir(name, region_name=self.region)
        return f"s3://{name}"

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset endpoint)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass


def _main() -> None:  # pragma: no cover - manual use: `python -m infra.s3server`
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with S3Server(port=int(sys.argv[1]) if len(sys.argv) > 1 else None) as s3:
        logger.info("endpoint %s (key/secret %r); Ctrl-C stops it", s3.endpoint_url, ACCESS_KEY)
        with contextlib.suppress(KeyboardInterrupt):
            while s3.running:
                time.sleep(1)


if __name__ == "__main__":
    _main()
