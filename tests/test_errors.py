"""The one transient-error classifier (mocapflow.errors) on real exception instances of each library, its retry loop,
one-line messages, and an object store that goes away for a few seconds while an s3:// video is probed."""

from __future__ import annotations

import errno
import hashlib
import logging
import threading
import time
from pathlib import Path

import aiohttp
import pytest
import ray.exceptions as rex
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3fs.errors import translate_boto_error

from infra.faults import TcpGate
from infra.s3server import S3Server
from mocapflow.errors import RetryPolicy, is_transient, one_line, retry_transient
from mocapflow.pose.pipeline import CameraError
from mocapflow.store import KeyNotFoundError, Store, StoreError
from mocapflow.video import VideoError, VideoReadError, probe


def client_error(code: str, status: int, op: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


TRANSIENT = {
    "ConnectionRefusedError": ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    "ConnectionResetError": ConnectionResetError(errno.ECONNRESET, "reset"),
    "TimeoutError": TimeoutError("timed out"),
    "OSError EIO": OSError(errno.EIO, "I/O error"),
    "EndpointConnectionError": EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b/k"),
    "ConnectTimeoutError": ConnectTimeoutError(endpoint_url="http://127.0.0.1:9/b/k"),
    "ReadTimeoutError": ReadTimeoutError(endpoint_url="http://127.0.0.1:9/b/k"),
    "ConnectionClosedError": ConnectionClosedError(endpoint_url="http://127.0.0.1:9/b/k"),
    "aiohttp ClientConnectionError": aiohttp.ClientConnectionError("cannot connect"),
    "aiohttp ServerDisconnectedError": aiohttp.ServerDisconnectedError(),
    "aiohttp ServerTimeoutError": aiohttp.ServerTimeoutError("read timeout"),
    "aiohttp 503": aiohttp.ClientResponseError(None, (), status=503),  # type: ignore[arg-type]
    "aiohttp 429": aiohttp.ClientResponseError(None, (), status=429),  # type: ignore[arg-type]
    "S3 SlowDown 503": client_error("SlowDown", 503, "PutObject"),
    "S3 Throttling 400": client_error("Throttling", 400),
    "S3 InternalError 500": client_error("InternalError", 500),
    "S3 unknown code 502": client_error("BadGateway", 502),
    "S3 503 by code only": ClientError({"Error": {"Code": "503", "Message": "Slow Down"}}, "HeadObject"),
    "s3fs-translated SlowDown": translate_boto_error(client_error("SlowDown", 503)),
    "s3fs-translated InternalError": translate_boto_error(client_error("InternalError", 500)),
    "Ray ActorDiedError": rex.ActorDiedError(),
    "Ray ActorUnavailableError": rex.ActorUnavailableError("unavailable", None),
    "Ray WorkerCrashedError": rex.WorkerCrashedError(),
    "Ray NodeDiedError": rex.NodeDiedError("node died"),
    "Ray OwnerDiedError": rex.OwnerDiedError("ab" * 28, None, "call site"),
    "Ray task wrapping a connection error": rex.RayTaskError(
        "pose", "Traceback ...", ConnectionResetError("reset")
    ),
    "StoreError(transient=True)": StoreError("cannot read s3://b/k", transient=True),
    "VideoReadError": VideoReadError("video s3://b/v.mp4: cannot read it"),
}

PERMANENT = {
    "ValueError": ValueError("bad"),
    "VideoError": VideoError("video x.mp4: not a decodable video"),
    "CameraError": CameraError("camera sidecar x.camera.json: missing field fx"),
    "FileNotFoundError": FileNotFoundError(errno.ENOENT, "no such file"),
    "PermissionError": PermissionError(errno.EACCES, "denied"),
    "OSError EINVAL": OSError(errno.EINVAL, "invalid"),
    "KeyNotFoundError": KeyNotFoundError("s3://b/k: no such object"),
    "StoreError(transient=False)": StoreError("cannot write", transient=False),
    "NoCredentialsError": NoCredentialsError(),
    "S3 NoSuchKey 404": client_error("NoSuchKey", 404),
    "S3 AccessDenied 403": client_error("AccessDenied", 403),
    "s3fs-translated NoSuchKey": translate_boto_error(client_error("NoSuchKey", 404)),
    "s3fs-translated AccessDenied": translate_boto_error(client_error("AccessDenied", 403)),
    "s3fs-translated InvalidArgument": translate_boto_error(client_error("InvalidArgument", 400)),
    "aiohttp 404": aiohttp.ClientResponseError(None, (), status=404),  # type: ignore[arg-type]
    "Ray task wrapping a ValueError": rex.RayTaskError("fit", "Traceback ...", ValueError("no person found")),
    "Ray OutOfMemoryError": rex.OutOfMemoryError("killed: out of memory"),
    "Ray TaskCancelledError": rex.TaskCancelledError(),
    "RuntimeError": RuntimeError("bug"),
    "None": None,
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_errors(name: str) -> None:
    assert is_transient(TRANSIENT[name]) is True


@pytest.mark.parametrize("name", sorted(PERMANENT))
def test_permanent_errors(name: str) -> None:
    assert is_transient(PERMANENT[name]) is False


def test_chains_and_ray_dual_classes() -> None:
    try:
        try:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        except EndpointConnectionError as e:
            raise RuntimeError("listing failed") from e
    except RuntimeError as chained:
        assert is_transient(chained)
    wrapped = rex.RayTaskError("pose", "Traceback ...", ConnectionResetError("reset"))
    dual = wrapped.as_instanceof_cause()  # what ray.get raises: a RayTaskError that is also the cause's class
    assert isinstance(dual, ConnectionResetError) and is_transient(dual)
    bad = rex.RayTaskError("fit", "Traceback ...", ValueError("bad input")).as_instanceof_cause()
    assert isinstance(bad, ValueError) and not is_transient(bad)


def test_retry_transient_retries_only_transient_errors() -> None:
    waits: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        return "ok"

    policy = RetryPolicy(attempts=4, first_delay_s=1.0, max_delay_s=8.0)
    assert retry_transient(flaky, "read s3://b/k", policy, sleep=waits.append) == "ok"
    assert calls["n"] == 3 and len(waits) == 2
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 3.0  # 1 s then 2 s, up to 50 % jitter

    def bad() -> None:
        calls["n"] += 1
        raise VideoError("video v.mp4: not a video")

    calls["n"] = 0
    with pytest.raises(VideoError):
        retry_transient(bad, "probe", policy, sleep=waits.append)
    assert calls["n"] == 1

    def down() -> None:
        calls["n"] += 1
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")

    calls["n"] = 0
    with pytest.raises(ConnectionRefusedError):
        retry_transient(down, "read", policy, sleep=lambda s: None)
    assert calls["n"] == 4


def test_one_line_of_a_ray_task_error() -> None:
    cause = ValueError("video s3://lab/a.mp4: no person found in 48 frames")
    err = rex.RayTaskError(
        "fit_task", "Traceback (most recent call last):\n  File ...\n\x1b[36mValueError\x1b[39m: ...", cause
    )
    assert one_line(err) == "video s3://lab/a.mp4: no person found in 48 frames"
    assert one_line(err.as_instanceof_cause()) == "video s3://lab/a.mp4: no person found in 48 frames"
    assert one_line(RuntimeError("\x1b[31mred\x1b[0m\nsecond line")) == "red second line"


def test_probe_of_an_s3_video_rides_out_a_stopped_object_store(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, write_flat_video, caplog: pytest.LogCaptureFixture
) -> None:
    """The S3 endpoint refuses connections when the probe starts and is back 3 s later (a TCP gate in front of moto,
    which would lose its in-memory objects if stopped); the download is retried on EndpointConnectionError and the
    probe succeeds."""
    clip = tmp_path / "clip.mp4"
    write_flat_video(clip, [20, 60, 100, 140, 180, 220])
    data = clip.read_bytes()
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options()).pipe_file(
        f"{s3_bucket}/in/clip.mp4", data
    )
    uri = f"s3://{s3_bucket}/in/clip.mp4"
    outage_s = 3.0
    with TcpGate(s3_server.port) as gate:  # type: ignore[arg-type]
        # botocore retries a refused connection itself for ~7 s (legacy mode); off here, so that a 3-s outage is
        # ridden out by mocapflow's own retry, which also covers outages longer than botocore's budget
        no_boto_retry = {"retries": {"mode": "standard", "max_attempts": 1}}
        opts = {**s3_server.storage_options(), "endpoint_url": gate.url, "config_kwargs": no_boto_retry}
        gate.close()
        reopen = threading.Timer(outage_s, gate.open)
        t0 = time.monotonic()
        reopen.start()
        try:
            with caplog.at_level(logging.WARNING, logger="mocapflow.errors"):
                info = probe(uri, opts, retry=RetryPolicy(attempts=8, max_delay_s=4.0))
        finally:
            reopen.join()
        elapsed = time.monotonic() - t0
        assert gate.connections >= 1  # the successful read went through the gate
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert (info.n_frames, info.width, info.height) == (6, 96, 64)
    assert elapsed >= outage_s
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries and all(uri in m for m in retries)
    assert any("EndpointConnectionError" in m for m in retries), retries


def test_store_reads_and_writes_ride_out_an_outage(s3_server: S3Server, s3_bucket: str) -> None:
    """A Store write and read each meet a 2-s outage of the endpoint and succeed on their own retries."""
    no_boto_retry = {"retries": {"mode": "standard", "max_attempts": 1}}
    with TcpGate(s3_server.port) as gate:  # type: ignore[arg-type]
        opts = {**s3_server.storage_options(), "endpoint_url": gate.url, "config_kwargs": no_boto_retry}
        store = Store(f"s3://{s3_bucket}/root", opts, retry=RetryPolicy(attempts=8, max_delay_s=2.0))
        for op in ("write", "read"):
            gate.close()
            reopen = threading.Timer(2.0, gate.open)
            reopen.start()
            try:
                if op == "write":
                    store.put_json("runs/r1/_COMMITTED", {"ok": True})
                else:
                    assert store.get_json("runs/r1/_COMMITTED") == {"ok": True}
            finally:
                reopen.join()


def test_probe_of_an_unreachable_store_fails_transient_naming_the_video(tmp_path: Path) -> None:
    opts = {
        "key": "k",
        "secret": "s",
        "endpoint_url": "http://127.0.0.1:9",
        "client_kwargs": {"region_name": "us-west-2"},
        "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 1}},
    }
    with pytest.raises(VideoReadError) as err:
        probe("s3://videos/none.mp4", opts, retry=RetryPolicy(attempts=2, first_delay_s=0.1))
    assert "s3://videos/none.mp4" in str(err.value) and "\n" not in str(err.value)
    assert is_transient(err.value)
