"""Shared fixtures. Other test modules append their own fixtures below; keep this file free of global side effects."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from infra.s3server import S3Server


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers) each worker gets its own temp folder, inherited by the
    Ray clusters, servers and children it starts: CPU leases (``mocapflow.cpus``, node-local lock files under the
    temp folder) are then per worker, so one worker's pinned fits never make another's pinning tests fall back."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        own = Path(tempfile.gettempdir()) / f"mf-{worker}"
        own.mkdir(exist_ok=True)
        os.environ["TMPDIR"] = str(own)
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real moto S3 endpoint on loopback for the whole session (in memory; gone when the session ends)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on ``s3_server``; returns its name (use ``f"s3://{name}"``)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.make_bucket(name)
    return name


from models.modelset import ModelSet  # noqa: E402 - appended fixtures keep the file's head untouched


@pytest.fixture(scope="session")
def markers_model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    """The ``markers`` model set, built once per session into a temp folder (its ``root`` works as ``model_set``)."""
    from models.markers.build import build

    return build(tmp_path_factory.mktemp("modelsets") / "markers")


def write_lossless_h264(path: Path, frames: Iterable[Any], fps: float, extra: Sequence[str] = ()) -> None:
    """Lossless H.264 (``-qp 0``) from RGB uint8 frames; ``extra``: more ffmpeg output options."""
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        str(path),
        fps=fps,
        codec="libx264",
        macro_block_size=16,
        ffmpeg_log_level="error",
        output_params=["-qp", "0", *extra],
    )
    try:
        for f in frames:
            writer.append_data(f)
    finally:
        writer.close()


@pytest.fixture(scope="session")
def write_h264():
    """:func:`write_lossless_h264`, for test modules (conftest is not imported by name)."""
    return write_lossless_h264


@pytest.fixture(scope="session")
def write_flat_video():
    """A writer of lossless H.264 test videos: frame i is a flat grey of ``levels[i]`` (96x64 px, 10 fps)."""

    def write(path: Path, levels: list[int], width: int = 96, height: int = 64, fps: float = 10.0) -> None:
        import numpy as np

        write_lossless_h264(path, (np.full((height, width, 3), level, np.uint8) for level in levels), fps)

    return write


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """Prefect's temporary test server for one test module; its API URL (set for the module's flow runs)."""
    import httpx

    from infra.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # Prefect picks a free port, then starts its server there; in between, a process of the other xdist worker (a
    # Ray or S3 server) may take the port, and Prefect's health check then reads that process's non-HTTP reply
    # (httpx.RemoteProtocolError "illegal request line") instead of retrying. One more start picks another port.
    for attempt in range(2):
        harness = prefect_test_harness(server_startup_timeout=180)
        try:
            harness.__enter__()
        except httpx.RemoteProtocolError:
            if attempt:
                raise
            continue
        break
    try:
        yield str(PREFECT_API_URL.value())
    finally:
        harness.__exit__(None, None, None)


def committed_gait_keypoints(root: Path, frames: int, names: Sequence[str]) -> str:
    """A committed keypoints table of the fit's own synthetic gait clip (``frames`` frames, landmarks ``names``) in a
    local store at ``root``; its URI."""
    from mocapflow.fit.clip import gait_clip, keypoints_of, keypoints_table
    from mocapflow.store import Store, keypoints_key, keypoints_prefix
    from models.body import default_body_model

    meta, arrays = keypoints_of(gait_clip(default_body_model(), frames), tuple(names))
    store = Store(str(root))
    key = keypoints_key(meta.video_sha256, meta.model_id, meta.params)
    store.write_table(key, keypoints_table(meta, arrays))
    store.commit(keypoints_prefix(meta.video_sha256, meta.model_id, meta.params), {"rows": frames})
    return store.uri(key)


@pytest.fixture(scope="session")
def gait_keypoints():
    """:func:`committed_gait_keypoints`, for test modules."""
    return committed_gait_keypoints
