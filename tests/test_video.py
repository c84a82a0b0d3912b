"""Video probing and decoding on tiny H.264 files written here, plus empty, garbage, truncated and frameless files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.s3server import S3Server
from mocapflow.video import VideoError, iter_batches, probe

N, H, W, FPS = 12, 48, 64, 10.0


def expected_frames() -> np.ndarray:
    """Solid colours, a different one per frame (exact under yuv420 chroma subsampling)."""
    frames = np.zeros((N, H, W, 3), np.uint8)
    for i in range(N):
        frames[i] = [(i * 20) % 256, 255 - i * 20, 100]
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, write_h264: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    ok = root / "ok.mp4"
    write_h264(ok, expected_frames(), FPS)
    faststart = root / "faststart.mp4"
    write_h264(faststart, expected_frames(), FPS, ["-movflags", "+faststart"])
    data = faststart.read_bytes()
    paths = {"ok": ok}
    paths["empty"] = root / "empty.mp4"
    paths["empty"].write_bytes(b"")
    paths["garbage"] = root / "garbage.mp4"
    paths["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths["truncated"] = root / "truncated.mp4"  # moov atom (at the end) cut off
    ok_bytes = ok.read_bytes()
    paths["truncated"].write_bytes(ok_bytes[: len(ok_bytes) // 2])
    paths["frameless"] = root / "frameless.mp4"  # header intact, every frame cut off
    paths["frameless"].write_bytes(data[: data.find(b"mdat") - 4])
    return paths


def test_probe(videos: dict[str, Path]) -> None:
    path = videos["ok"]
    info = probe(str(path))
    assert (info.width, info.height, info.n_frames) == (W, H, N)
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(N / FPS)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == os.path.getsize(path)
    assert info.uri == str(path)
    counted = probe(f"file://{path}", count_frames=True)
    assert counted.n_frames == N and counted.sha256 == info.sha256


@pytest.mark.parametrize("batch_size", [1, 5, 12, 50])
def test_iter_batches(videos: dict[str, Path], batch_size: int) -> None:
    batches = list(iter_batches(str(videos["ok"]), batch_size))
    sizes = [b.shape[0] for b in batches]
    assert sizes == [batch_size] * (N // batch_size) + ([N % batch_size] if N % batch_size else [])
    frames = np.concatenate(batches)
    assert frames.dtype == np.uint8 and frames.shape == (N, H, W, 3)
    assert all(b.flags.c_contiguous for b in batches)
    # RGB order and content: lossless H.264 in yuv420 is within a few grey levels of the source
    diff = np.abs(frames.astype(int) - expected_frames().astype(int))
    assert diff.max() <= 3
    assert batches[0] is not batches[-1] or len(batches) == 1


def test_batches_are_independent_arrays(videos: dict[str, Path]) -> None:
    it = iter_batches(str(videos["ok"]), 4)
    first = next(it)
    kept = first.copy()
    rest = list(it)
    np.testing.assert_array_equal(first, kept)  # later batches did not overwrite it
    assert len(rest) == 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "the file is empty"),
        ("garbage", "not a decodable video"),
        ("truncated", "not a decodable video"),
        ("frameless", "no frames"),
    ],
)
def test_bad_videos_fail_clearly(
    videos: dict[str, Path], name: str, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = str(videos[name])
    with pytest.raises(VideoError, match=message) as info:
        probe(path)
    assert path in str(info.value)
    with pytest.raises(VideoError, match=message):
        next(iter_batches(path, 4))
    assert "[ WARN" not in capfd.readouterr().err  # OpenCV's own warnings stay out of the user's terminal


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such file"):
        probe(str(tmp_path / "nope.mp4"))
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(str(tmp_path / "nope.mp4"), 0))


def test_remote_video_is_copied_and_cleaned(
    videos: dict[str, Path],
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    fs.put_file(str(videos["ok"]), f"{s3_bucket}/clinic/a b.mp4")
    fs.put_file(str(videos["garbage"]), f"{s3_bucket}/clinic/bad.mp4")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the local copies go
    uri = f"s3://{s3_bucket}/clinic/a b.mp4"
    opts = s3_server.storage_options()

    info = probe(uri, opts)
    local = probe(str(videos["ok"]))
    assert (info.sha256, info.size_bytes, info.n_frames, info.width) == (
        local.sha256,
        local.size_bytes,
        local.n_frames,
        local.width,
    )
    assert info.uri == uri
    remote_frames = np.concatenate(list(iter_batches(uri, 5, opts)))
    np.testing.assert_array_equal(remote_frames, np.concatenate(list(iter_batches(str(videos["ok"]), 5))))
    with pytest.raises(VideoError, match="not a decodable video") as err:
        probe(f"s3://{s3_bucket}/clinic/bad.mp4", opts)
    assert f"s3://{s3_bucket}/clinic/bad.mp4" in str(err.value)
    with pytest.raises(VideoError, match="no such file"):
        probe(f"s3://{s3_bucket}/clinic/missing.mp4", opts)
    assert list(tmp_path.iterdir()) == []  # every temp copy removed
