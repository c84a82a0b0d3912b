"""Faults on demand for tests: a loopback TCP gate in front of a service (an S3 server, a Prefect server).

    with S3Server() as s3, TcpGate(s3.port) as gate:
        opts = {**s3.storage_options(), "endpoint_url": gate.url}
        gate.close()     # the endpoint refuses connections and open ones are cut: "the object store is down"
        gate.open()      # reachable again, with every object still there

Stopping moto itself would lose its in-memory objects; the gate makes the same outage for a client (connection
refused, connections reset) while the service and its data stay up.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from types import TracebackType

from infra.s3server import free_port

logger = logging.getLogger(__name__)

_BUF = 1 << 16


class TcpGate:
    """Forward connections to ``host:port`` (loopback) on to ``target_host:target_port`` while open."""

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.target = (target_host, int(target_port))
        self.host = host
        self.port = port or free_port(host)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> TcpGate:
        """Accept connections again (on the same port)."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcp-gate").start()
        logger.info("gate %s -> %s:%d open", self.url, *self.target)
        return self

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        logger.info("gate %s closed", self.url)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # closed meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_BUF):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            src.close()

    def __enter__(self) -> TcpGate:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
