"""Shared fixtures. Other test modules append their own fixtures below; keep this file free of global side effects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.s3server import S3Server


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


@pytest.fixture(scope="session")
def write_flat_video():
    """A writer of lossless H.264 test videos: frame i is a flat grey of ``levels[i]`` (96x64 px, 10 fps)."""

    def write(path: Path, levels: list[int], width: int = 96, height: int = 64, fps: float = 10.0) -> None:
        import imageio.v2 as imageio
        import numpy as np

        writer = imageio.get_writer(
            str(path),
            fps=fps,
            codec="libx264",
            macro_block_size=16,
            ffmpeg_log_level="error",
            output_params=["-qp", "0"],
        )
        try:
            for level in levels:
                writer.append_data(np.full((height, width, 3), level, np.uint8))
        finally:
            writer.close()

    return write
