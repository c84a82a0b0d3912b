"""The probe index: an unchanged video (same size and ETag / mtime) is not read again; a changed one is."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

import mocapflow.probeindex as probeindex
from infra.s3server import S3Server
from mocapflow.store import Store


def _no_probe(*args: object, **kwargs: object) -> None:
    raise AssertionError("the video was probed (downloaded and hashed) again")


def test_local_video_is_probed_once_until_it_changes(
    tmp_path: Path, write_flat_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "v.mp4"
    write_flat_video(video, [10, 20, 30, 40, 50])
    store = Store(str(tmp_path / "store"))
    first, indexed = probeindex.probe_indexed(str(video), store)
    assert not indexed and first.n_frames == 5
    with monkeypatch.context() as m:
        m.setattr(probeindex, "probe", _no_probe)
        again, indexed = probeindex.probe_indexed(str(video), store)
    assert indexed and again == first
    write_flat_video(video, [90, 80, 70, 60, 50, 40])  # replaced: another size and mtime
    changed, indexed = probeindex.probe_indexed(str(video), store)
    assert not indexed and changed.sha256 != first.sha256 and changed.n_frames == 6


def test_s3_video_is_keyed_by_its_etag(
    tmp_path: Path, write_flat_video, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = s3_server.storage_options()
    local = tmp_path / "v.mp4"
    write_flat_video(local, [10, 20, 30])
    uri = f"s3://{s3_bucket}/videos/v.mp4"
    fs = fsspec.filesystem("s3", **opts)
    fs.put(str(local), uri)
    store = Store(f"s3://{s3_bucket}/store", opts)
    first, indexed = probeindex.probe_indexed(uri, store, opts)
    assert not indexed
    with monkeypatch.context() as m:
        m.setattr(probeindex, "probe", _no_probe)
        assert probeindex.probe_indexed(uri, store, opts) == (first, True)
    write_flat_video(local, [200, 100, 50])  # same size class, other content: a new ETag
    fs.put(str(local), uri)
    second, indexed = probeindex.probe_indexed(uri, store, opts)
    assert not indexed and second.sha256 != first.sha256
