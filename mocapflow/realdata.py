"""Real footage and photos of people that ship inside registry packages, and the clips made from them (pure core).

Nothing here is committed or downloaded from anywhere but the package registries: :func:`fetch_realdata` takes each
file out of the package that ships it (Debian's ``opencv-doc`` by ``apt-get download`` + ``dpkg-deb``; scikit-image
from the installed package, else its wheel by ``pip download``), checks it against the sha256 in :data:`SOURCES`
and caches it under ``<cache_dir>/realdata/files``. It is a setup step (``make realdata``,
``mocapflow realdata``); nothing fetches at run time.

Clips (:data:`CLIPS`) are what the real-footage suite runs: a real video (whole, or a span of it re-encoded as H.264
at crf 12) or a still photo made into a video by a slow pan and zoom (:func:`crop_windows`,
a smooth crop-window path over the photo, resampled to 640x480 at 30 fps, H.264). :func:`derived_video` makes the
mirrored, half-resolution and time-reversed variants of any video for metamorphic checks, and a plain re-encode
(``copy``: the same frames through the same encoder, the generation loss every variant also has). Every file made
here is deterministic and cached under a name that carries the hash of what made it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_HTML = "usr/share/doc/opencv-doc/opencv4/html"


class RealDataError(RuntimeError):
    """Real data cannot be fetched or made; the message names the file or package and what to do."""


@dataclass(frozen=True)
class Source:
    """One file inside a registry package, with the sha256 recorded on the first fetch."""

    name: str  # file name in the cache
    registry: Literal["debian", "pypi"]
    package: str
    member: str  # path inside the package (Debian: data tree; PyPI: inside the wheel)
    sha256: str
    shows: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "vtest.avi",
            "debian",
            "opencv-doc",
            f"{OPENCV_DATA}/vtest.avi",
            "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
            "pedestrians on a campus walkway filmed from a first floor, 768x576, 10 fps, 79.5 s (795 frames); "
            "people ~80-130 px tall",
        ),
        Source(
            "messi5.jpg",
            "debian",
            "opencv-doc",
            f"{OPENCV_DATA}/messi5.jpg",
            "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
            "a footballer kicking a ball, whole body filling the frame, crowd behind, 548x342",
        ),
        Source(
            "basketball1.png",
            "debian",
            "opencv-doc",
            f"{OPENCV_DATA}/basketball1.png",
            "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
            "two men passing a basketball in an office, greyscale, 640x480: one whole body on the left, one cut "
            "at the hips on the right (first of an optical-flow pair)",
        ),
        Source(
            "basketball2.png",
            "debian",
            "opencv-doc",
            f"{OPENCV_DATA}/basketball2.png",
            "b3047772e0dc6c9d83c26f64894ca1a897f799f855c5574ac24b2ef934c2978e",
            "the next frame of basketball1.png",
        ),
        Source(
            "person_multi_det.jpg",
            "debian",
            "opencv-doc",
            f"{OPENCV_HTML}/person_multi_det.jpg",
            "ea8da5e7c7edbf13f4d3a88caf442c91c9af867b02e02d6ee1017dd8b958a4a5",
            "a street basketball court with ~15 people 40-150 px tall, detection boxes and plot axes drawn on "
            "it, 416x416",
        ),
        Source(
            "astronaut.png",
            "pypi",
            "scikit-image",
            "skimage/data/astronaut.png",
            "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            "an astronaut's portrait, head to waist, facing the camera, 512x512",
        ),
        Source(
            "camera.png",
            "pypi",
            "scikit-image",
            "skimage/data/camera.png",
            "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
            "the cameraman: a man behind a camera on a tripod, head to thighs, greyscale, 512x512",
        ),
    )
}


# -- fetching -------------------------------------------------------------------------------------------------


def realdata_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "realdata"


def files_dir(cache_dir: Path) -> Path:
    return realdata_dir(cache_dir) / "files"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, source: Source) -> bool:
    return path.is_file() and sha256_file(path) == source.sha256


def _put(data: bytes, dest: Path, source: Source, origin: str) -> None:
    """Write ``data`` to ``dest`` atomically after checking its sha256 against the catalogue."""
    got = hashlib.sha256(data).hexdigest()
    if got != source.sha256:
        raise RealDataError(
            f"{source.member} from {origin} has sha256 {got}, the catalogue expects {source.sha256}: the package "
            f"{source.package!r} changed; check the file and update mocapflow.realdata.SOURCES"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, dest)
    logger.info("fetched %s from %s", dest.name, origin)


def _run(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise RealDataError(
            f"cannot {what}: {cmd[0]} is not installed; fetch on a Debian-based machine or copy the files "
            f"listed in mocapflow.realdata.SOURCES into the cache by hand (fetch_realdata(from_dir=...))"
        ) from e


def _apt_download(package: str, tmp: Path) -> Path:
    """``apt-get download package`` into ``tmp`` (after one ``apt-get update`` if root and the package is unknown)."""
    proc = _run(["apt-get", "download", package], tmp, f"download Debian package {package}")
    if proc.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        logger.info(
            "apt-get download %s failed (%s); running apt-get update once", package, proc.stderr.strip()
        )
        _run(["apt-get", "update"], tmp, "update the apt package lists")
        proc = _run(["apt-get", "download", package], tmp, f"download Debian package {package}")
    debs = sorted(tmp.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise RealDataError(
            f"apt-get download {package} failed: {proc.stderr.strip()[-400:]}; run `apt-get update` (as root) "
            "and retry, or copy the files into the cache by hand (fetch_realdata(from_dir=...))"
        )
    return debs[0]


def _from_deb(deb: Path, wanted: dict[str, Source], dest_dir: Path) -> None:
    """Stream the package's data tree (``dpkg-deb --fsys-tarfile``) and keep only the wanted members."""
    members = {f"./{s.member}": s for s in wanted.values()} | {s.member: s for s in wanted.values()}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found: set[str] = set()
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                source = members.get(info.name)
                if source is None or not info.isfile():
                    continue
                f = tar.extractfile(info)
                assert f is not None
                _put(f.read(), dest_dir / source.name, source, f"Debian package {deb.name}")
                found.add(source.name)
    finally:
        proc.stdout.close()
        proc.wait()
    missing = sorted(set(wanted) - found)
    if missing:
        raise RealDataError(
            f"Debian package {deb.name} does not contain {missing}; the package changed: update "
            "mocapflow.realdata.SOURCES"
        )


def _from_pypi(package: str, wanted: dict[str, Source], dest_dir: Path, tmp: Path) -> None:
    """From the installed distribution when it is importable, else from its wheel (``pip download --no-deps``)."""
    top = next(iter(wanted.values())).member.split("/", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))).parent
        if all((root / s.member).is_file() for s in wanted.values()):
            for s in wanted.values():
                _put((root / s.member).read_bytes(), dest_dir / s.name, s, f"installed package {package}")
            return
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(tmp),
        package,
    ]
    proc = _run(cmd, tmp, f"download the {package} wheel")
    wheels = sorted(tmp.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RealDataError(f"pip download {package} failed: {proc.stderr.strip()[-400:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        for s in wanted.values():
            _put(z.read(s.member), dest_dir / s.name, s, f"wheel {wheels[0].name}")


def fetch_realdata(
    cache_dir: Path, names: Iterable[str] | None = None, from_dir: Path | None = None
) -> dict[str, Path]:
    """Make sure every catalogued file (or those in ``names``) is in the cache with its recorded sha256.

    Idempotent: files already there and verified are not fetched again. ``from_dir`` is a folder that may already
    hold some of the files (checked like any other origin); the rest come from their packages. Returns name -> path.
    """
    wanted_names = list(SOURCES) if names is None else list(names)
    unknown = [n for n in wanted_names if n not in SOURCES]
    if unknown:
        raise RealDataError(f"no real-data file named {unknown}; known: {sorted(SOURCES)}")
    dest_dir = files_dir(cache_dir)
    missing = {n: SOURCES[n] for n in wanted_names if not _verified(dest_dir / n, SOURCES[n])}
    if from_dir is not None:
        for n, s in list(missing.items()):
            p = Path(from_dir) / n
            if p.is_file() and sha256_file(p) == s.sha256:
                _put(p.read_bytes(), dest_dir / n, s, str(p))
                del missing[n]
    by_package: dict[tuple[str, str], dict[str, Source]] = {}
    for n, s in missing.items():
        by_package.setdefault((s.registry, s.package), {})[n] = s
    for (registry, package), wanted in by_package.items():
        with tempfile.TemporaryDirectory(prefix="mocapflow-realdata-") as t:
            tmp = Path(t)
            if registry == "debian":
                _from_deb(_apt_download(package, tmp), wanted, dest_dir)
            else:
                _from_pypi(package, wanted, dest_dir, tmp)
    return {n: dest_dir / n for n in wanted_names}


def source_path(name: str, cache_dir: Path) -> Path:
    """The cached, verified file ``name``; RealDataError telling how to fetch it if it is not there."""
    if name not in SOURCES:
        raise RealDataError(f"no real-data file named {name!r}; known: {sorted(SOURCES)}")
    p = files_dir(cache_dir) / name
    if not _verified(p, SOURCES[name]):
        raise RealDataError(
            f"real-data file {name} is not in {files_dir(cache_dir)} (or fails its sha256); fetch it first: "
            "`make realdata` or `mocapflow realdata`"
        )
    return p


# -- pan and zoom over a still photo -------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A crop window in a photo: centre (fractions of width and height) and size (fraction of the largest window
    of the output's aspect that fits in the photo)."""

    cx: float
    cy: float
    size: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.cx <= 1.0 and 0.0 <= self.cy <= 1.0 and 0.0 < self.size <= 1.0):
            raise ValueError(f"window centre must be in [0, 1] and size in (0, 1], got {self}")


def crop_windows(
    photo_w: int, photo_h: int, out_w: int, out_h: int, start: Window, end: Window, n_frames: int
) -> NDArray[np.float64]:
    """Crop windows ``[n, 4]`` = (cx, cy, w, h) in photo px on a smooth path from ``start`` to ``end``.

    Windows keep the output's aspect; the size follows a geometric (constant-ratio) zoom and the centre a linear
    pan, both on a cosine ease (zero speed at both ends); each centre is clamped so the window stays in the photo.
    Coordinates follow the project's convention: pixel centres at integers, the photo spans [-0.5, W - 0.5].
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    aspect = out_w / out_h
    full_h = min(float(photo_h), photo_w / aspect)
    s = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, n_frames)) if n_frames > 1 else np.zeros(1)
    h = full_h * np.exp((1 - s) * np.log(start.size) + s * np.log(end.size))
    w = h * aspect
    cx = ((1 - s) * start.cx + s * end.cx) * photo_w - 0.5
    cy = ((1 - s) * start.cy + s * end.cy) * photo_h - 0.5
    cx = np.clip(cx, w / 2 - 0.5, photo_w - 0.5 - w / 2)
    cy = np.clip(cy, h / 2 - 0.5, photo_h - 0.5 - h / 2)
    return np.stack([cx, cy, w, h], axis=-1)


def window_matrix(window: NDArray[np.float64], out_w: int, out_h: int) -> NDArray[np.float64]:
    """The 2x3 affine from output px to photo px of one window (for ``cv2.warpAffine`` with WARP_INVERSE_MAP)."""
    cx, cy, w, h = (float(v) for v in window)
    sx, sy = w / out_w, h / out_h
    # output pixel u (centre at u) covers photo x in [x0 + u * sx, x0 + (u + 1) * sx], x0 = cx - w / 2
    return np.array([[sx, 0.0, cx - w / 2 + 0.5 * sx], [0.0, sy, cy - h / 2 + 0.5 * sy]])


def render_windows(
    photo: NDArray[np.uint8], windows: NDArray[np.float64], out_w: int, out_h: int
) -> Iterator[NDArray[np.uint8]]:
    """Frames ``[out_h, out_w, 3]`` of the photo seen through each window (bilinear, edge pixels replicated)."""
    for win in windows:
        yield cv2.warpAffine(
            photo,
            window_matrix(win, out_w, out_h),
            (out_w, out_h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )


# -- clips ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A clip of the real-footage suite: a real video (``frames`` None = all of it) or a pan and zoom on a photo."""

    name: str
    source: str  # a key of SOURCES
    shows: str
    frames: int | None = None  # video clips: N frames from first_frame (None: the whole video, as it is)
    first_frame: int = 0
    start: Window | None = None  # still clips: the path
    end: Window | None = None
    seconds: float = 3.0
    fps: float = 30.0
    width: int = 640
    height: int = 480

    @property
    def is_still(self) -> bool:
        return self.start is not None


CLIPS: dict[str, Clip] = {
    c.name: c
    for c in (
        Clip(
            "vtest_8s",
            "vtest.avi",
            "8 s (frames 160-239) of vtest.avi: pedestrians filmed from above, people ~80-130 px tall",
            frames=80,
            first_frame=160,
        ),
        Clip("vtest", "vtest.avi", "all 79.5 s of vtest.avi (795 frames)"),
        Clip(
            "messi_pan",
            "messi5.jpg",
            "pan and zoom over a footballer kicking a ball (whole body)",
            start=Window(0.42, 0.5, 1.0),
            end=Window(0.5, 0.52, 0.85),
        ),
        Clip(
            "astronaut_pan",
            "astronaut.png",
            "pan and zoom over an astronaut's portrait (head to waist)",
            start=Window(0.5, 0.5, 1.0),
            end=Window(0.45, 0.4, 0.8),
        ),
        Clip(
            "basketball_pan",
            "basketball1.png",
            "pan and zoom over two men passing a basketball (one whole body, one cut at the hips)",
            start=Window(0.5, 0.5, 1.0),
            end=Window(0.3, 0.55, 0.75),
        ),
        Clip(
            "cameraman_pan",
            "camera.png",
            "pan and zoom over the cameraman (head to thighs, greyscale)",
            start=Window(0.5, 0.5, 1.0),
            end=Window(0.42, 0.45, 0.8),
        ),
        Clip(
            "court_pan",
            "person_multi_det.jpg",
            "pan and zoom over a street basketball court with many people 40-150 px tall (annotations drawn)",
            start=Window(0.5, 0.5, 1.0),
            end=Window(0.62, 0.55, 0.7),
        ),
    )
}
# The suite's default clips: everything but the long full vtest.avi.
DEFAULT_CLIPS: tuple[str, ...] = tuple(n for n in CLIPS if n != "vtest")


def clips_dir(cache_dir: Path) -> Path:
    return realdata_dir(cache_dir) / "clips"


def _recipe_hash(recipe: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_video(
    path: Path,
    frames: Iterable[NDArray[np.uint8]],
    width: int,
    height: int,
    fps: float,
    *,
    crf: int = 12,
    preset: str = "medium",
    threads: int = 2,
) -> None:
    """H.264 (libx264, yuv420p; by default crf 12, preset medium, 2 encoder threads: the same bytes everywhere) by
    imageio-ffmpeg's ffmpeg, written to a hidden partial file and renamed into place."""
    import imageio_ffmpeg

    if width % 2 or height % 2:
        raise ValueError(f"{path}: yuv420p needs an even frame size, got {width}x{height}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(partial),
        (width, height),
        fps=fps,
        codec="libx264",
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-preset", preset, "-threads", str(threads), "-f", "mp4"],
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(partial, path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise


def _read_image_rgb(path: Path) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # greyscale photos come back as 3 equal channels
    if bgr is None:
        raise RealDataError(f"cannot read image {path}; fetch it again (`mocapflow realdata`)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def clip_video(name: str, cache_dir: Path, seconds: float | None = None, fetch: bool = False) -> Path:
    """The video file of clip ``name``, made (and cached) on first use from its fetched source.

    ``seconds`` shortens a still clip's pan and zoom (same path, fewer frames; e.g. a 1 s clip for a quick test).
    With ``fetch`` the source is fetched if missing; otherwise a missing source is an error telling how to fetch.
    """
    if name not in CLIPS:
        raise RealDataError(f"no clip named {name!r}; known: {sorted(CLIPS)}")
    clip = CLIPS[name]
    src = (
        fetch_realdata(cache_dir, [clip.source])[clip.source]
        if fetch
        else source_path(clip.source, cache_dir)
    )
    if not clip.is_still:
        if clip.frames is None:
            return src
        recipe = {"clip": asdict(clip), "sha256": SOURCES[clip.source].sha256, "v": 3}
        out = clips_dir(cache_dir) / f"{name}-{_recipe_hash(recipe)}.mp4"
        if not out.is_file():
            frames, fps = _decode_range(src, clip.first_frame, clip.frames)
            h, w = frames[0].shape[:2]
            write_video(out, frames, w, h, fps)
            logger.info("cut clip %s (%d frames from %d) at %s", name, len(frames), clip.first_frame, out)
        return out
    seconds = clip.seconds if seconds is None else seconds
    n = max(1, round(seconds * clip.fps))
    recipe = {"clip": asdict(clip), "frames": n, "sha256": SOURCES[clip.source].sha256, "v": 3}
    out = clips_dir(cache_dir) / f"{name}-{n}f-{_recipe_hash(recipe)}.mp4"
    if not out.is_file():
        photo = _read_image_rgb(src)
        assert clip.start is not None and clip.end is not None
        windows = crop_windows(
            photo.shape[1], photo.shape[0], clip.width, clip.height, clip.start, clip.end, n
        )
        write_video(
            out, render_windows(photo, windows, clip.width, clip.height), clip.width, clip.height, clip.fps
        )
        logger.info("made clip %s (%d frames) at %s", name, n, out)
    return out


# -- derived variants for metamorphic checks -------------------------------------------------------------------

DerivedKind = Literal["mirror", "half", "reverse", "copy"]
DERIVED_KINDS: tuple[str, ...] = ("mirror", "half", "reverse", "copy")


def _decode_range(
    src: Path, first: int = 0, count: int | None = None
) -> tuple[list[NDArray[np.uint8]], float]:
    """RGB frames ``first .. first + count - 1`` of a video (all from ``first`` if count is None) and its fps."""
    from mocapflow.video import iter_batches, probe

    fps = probe(str(src)).fps
    frames: list[NDArray[np.uint8]] = []
    i = 0
    for batch in iter_batches(str(src), 32):
        for f in batch:
            if i >= first and (count is None or len(frames) < count):
                frames.append(f)
            i += 1
        if count is not None and len(frames) == count:
            break
    if not frames or (count is not None and len(frames) < count):
        raise RealDataError(f"{src} has {i} frames; cannot take {count} from frame {first}")
    return frames, fps


def derived_video(src: Path, kind: str, out_dir: Path | None = None) -> Path:
    """A variant of video ``src``: ``mirror`` (horizontal flip), ``half`` (half width and height, area
    resampling), ``reverse`` (frames in reverse order), ``copy`` (the same frames in the same order: what decoding and
    encoding again alone change); same frame rate, H.264 (crf 12).

    Cached in ``out_dir`` (default: beside ``src``) as ``<stem>.<kind>-<hash of src>.mp4``; decodes the whole
    video into memory (meant for clips of seconds, not hours).
    """
    if kind not in DERIVED_KINDS:
        raise ValueError(f"derived video kind must be one of {DERIVED_KINDS}, got {kind!r}")
    src = Path(src)
    out = (out_dir or src.parent) / f"{src.stem}.{kind}-{sha256_file(src)[:12]}.mp4"
    if out.is_file():
        return out
    frames, fps = _decode_range(src)
    h, w = frames[0].shape[:2]
    if kind == "mirror":
        out_frames: Iterable[NDArray[np.uint8]] = (np.ascontiguousarray(f[:, ::-1]) for f in frames)
        size = (w, h)
    elif kind == "half":
        size = (w // 2 - (w // 2) % 2, h // 2 - (h // 2) % 2)
        out_frames = (cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames)
    elif kind == "reverse":
        out_frames, size = reversed(frames), (w, h)
    else:
        out_frames, size = iter(frames), (w, h)
    write_video(out, out_frames, size[0], size[1], fps)
    logger.info("made %s variant of %s at %s", kind, src, out)
    return out


def catalogue() -> list[dict[str, object]]:
    """The catalogue as plain dicts (for reports): each clip with its source file and package."""
    rows: list[dict[str, object]] = []
    for c in CLIPS.values():
        s = SOURCES[c.source]
        rows.append(
            {
                "clip": c.name,
                "shows": c.shows,
                "file": s.name,
                "package": f"{s.registry}:{s.package}",
                "member": s.member,
                "sha256": s.sha256,
                "kind": "still pan-zoom" if c.is_still else "video",
            }
        )
    return rows
