"""Which errors a retry may fix, decided by exception type, and a short retry loop for storage reads and writes.

:func:`is_transient` is the one classifier every stage uses (the store, video reads, the Prefect tasks' retry
condition, the pose actor pool). Transient: network and object-store trouble (``ConnectionError``,
``TimeoutError``, other ``OSError`` except the "no such file / permission / invalid" kinds; botocore's connection,
timeout and closed-connection errors; aiohttp's connection errors; S3 throttling, ``SlowDown`` and 5xx answers,
as botocore ``ClientError`` codes or HTTP status), and a Ray actor, worker or node that died. Permanent: bad input
(``ValueError``: a bad video, camera file or table), missing objects, denied access, and anything unknown.
An exception with a boolean ``transient`` attribute (StoreError, StageError) says so itself; Ray's task wrapper is
judged by the error it carries; an explicit ``raise ... from cause`` chain is followed.

Classes are looked up in ``sys.modules``: an exception of a library that was never imported cannot exist, so this
pure-core module imports neither Ray nor botocore nor aiohttp.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

PERMANENT_ERRNOS = frozenset(
    {
        errno.EINVAL,
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.EEXIST,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
    }
)
# botocore ClientError codes a retry may fix (throttling, server-side trouble); 5xx and 429 status codes also count
TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        "EC2ThrottledException",
    }
)
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
_RAY_DEATHS = (
    "RayActorError",  # ActorDiedError, ActorUnavailableError
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "ObjectLostError",  # OwnerDiedError, ObjectFetchTimedOutError, ...
)


def _classes(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes of ``module`` if it is loaded (else none: no instance can exist)."""
    mod = sys.modules.get(module)
    if mod is None:
        return ()
    return tuple(c for n in names if isinstance(c := getattr(mod, n, None), type))


def _http_transient(status: object) -> bool:
    return isinstance(status, int) and (status >= 500 or status == 429)


def _client_error_transient(e: BaseException) -> bool:
    """botocore ``ClientError``: by its error code, else by the HTTP status of the answer."""
    response = getattr(e, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    if code in TRANSIENT_S3_CODES:
        return True
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if status is None and code.isdigit():
        status = int(code)
    return _http_transient(status)


def is_transient(exc: BaseException | None, _depth: int = 0) -> bool:
    """True if retrying the operation that raised ``exc`` may succeed (see the module docstring)."""
    if exc is None or _depth > 10:
        return False
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    ray_task = _classes("ray.exceptions", "RayTaskError")
    if ray_task and isinstance(exc, ray_task):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException) and cause is not exc:
            return is_transient(cause, _depth + 1)
        return False
    if isinstance(exc, _classes("ray.exceptions", *_RAY_DEATHS)):
        return True
    client_error = _classes("botocore.exceptions", "ClientError")
    if client_error:
        if isinstance(exc, client_error):
            return _client_error_transient(exc)
        if isinstance(exc.__cause__, client_error):  # s3fs translates ClientErrors into OSErrors, cause kept
            return _client_error_transient(exc.__cause__)
    response_error = _classes("aiohttp", "ClientResponseError")
    if response_error and isinstance(exc, response_error):
        return _http_transient(getattr(exc, "status", None))
    if isinstance(exc, _PERMANENT_TYPES):
        return False
    network = (
        ConnectionError,
        TimeoutError,
        *_classes("botocore.exceptions", "ConnectionError", "HTTPClientError"),
        *_classes("aiohttp", "ClientConnectionError", "ClientPayloadError"),
    )
    if isinstance(exc, network):
        return True
    if isinstance(exc, OSError):
        return exc.errno not in PERMANENT_ERRNOS
    return is_transient(exc.__cause__, _depth + 1)


# -- a short retry loop for one storage operation ------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff for one I/O operation (a read, a write, a video download).

    Waits ``first_delay_s * 2**k`` (capped at ``max_delay_s``, with up to 50 % jitter) between attempts; the default
    rides out an object store that is unreachable for ~15 s without re-running a whole stage. Stage-level retries
    (Prefect task retries) come on top of this for longer outages.
    """

    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 8.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay_s, self.first_delay_s * 2**attempt)
        return base * (1.0 + 0.5 * random.random())


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def retry_transient(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, repeated while it raises a transient error (:func:`is_transient`), up to ``policy.attempts`` times.

    ``what`` names the operation and its object in the log ("read s3://bucket/video.mp4"); the last error is raised
    unchanged, and permanent errors at once.
    """
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as e:
            if attempt + 1 >= policy.attempts or not is_transient(e):
                raise
            wait = policy.delay(attempt)
            logger.warning(
                "%s failed (%s: %s); retry %d/%d in %.1f s",
                what,
                type(e).__name__,
                one_line(e),
                attempt + 1,
                policy.attempts - 1,
                wait,
            )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# -- error messages -----------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def root_cause(exc: BaseException) -> BaseException:
    """The error inside Ray's task wrappers (``RayTaskError.cause``), or ``exc`` itself."""
    seen = 0
    while seen < 10:
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or cause is exc:
            break
        exc, seen = cause, seen + 1
    return exc


def one_line(exc: BaseException, limit: int = 400) -> str:
    """A one-line message for ``exc``: the root cause's own message (no traceback, no colour codes), shortened."""
    cause = root_cause(exc)
    text = _ANSI.sub("", str(cause)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if cause is exc and len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
        lines = lines[-1:]  # a formatted traceback: its last line is the error
    msg = " ".join(lines) or type(cause).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."
