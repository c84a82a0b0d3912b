"""The child process of :class:`infra.s3server.S3Server`: moto's S3 server, with S3's atomic conditional writes.

moto (5.x) checks ``If-None-Match: *`` / ``If-Match`` and then writes, with no lock, in a threaded server: two runs
racing to create one lease could both succeed (seen under load: 2 of 8 racing runs got the same lease), which S3
never allows. Here every mutating request (PUT, POST, DELETE) runs alone, so a condition and its write are one
step; reads stay concurrent. ``python -m infra.moto_child HOST PORT``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

MUTATING = frozenset({"PUT", "POST", "DELETE"})


def writes_one_at_a_time(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that runs ``app``'s mutating requests one at a time (the response body read inside the lock)."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in MUTATING:
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return wrapped


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto's own server does (its presigned URLs)
    app = writes_one_at_a_time(DomainDispatcherApplication(create_backend_app))
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
