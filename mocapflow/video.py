"""Video probing and batched decoding (OpenCV's FFmpeg backend: the fastest decoder here).

Local paths (or ``file://``) are read in place; remote URIs (``s3://`` ...) are copied to a local temp file first.
A bad video (empty, truncated, not a video, no frames) raises :class:`VideoError` naming the file and the problem;
a remote video that cannot be read for a while (network, object store) raises :class:`VideoReadError`, a transient
error the orchestration layer retries, after the download itself was retried (:mod:`mocapflow.errors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from mocapflow.errors import DEFAULT_RETRY, RetryPolicy, is_transient, one_line, retry_transient

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class VideoError(ValueError):
    """This video cannot be used; the message names the file and what is wrong with it. Retrying will not help."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video. ``n_frames`` is the container's count (``duration_s = n_frames/fps``);
    ``width``/``height`` are those of the decoded frames."""

    uri: str
    fps: float
    width: int
    height: int
    n_frames: int
    duration_s: float
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class VideoReadError(OSError):
    """A remote video could not be read from storage after the I/O retries; a later retry of the stage may succeed."""

    transient = True


def _download(uri: str, storage_options: dict[str, Any] | None, dst_path: str) -> tuple[str, int]:
    """Copy ``uri`` to ``dst_path`` (overwritten: a retry starts over); returns (sha256, size)."""
    import fsspec

    h = hashlib.sha256()
    size = 0
    with fsspec.open(uri, "rb", **(storage_options or {})) as src, open(dst_path, "wb") as dst:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return h.hexdigest(), size


@contextlib.contextmanager
def local_copy(
    uri: str,
    storage_options: dict[str, Any] | None = None,
    hash_local: bool = True,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Iterator[tuple[str, str | None, int]]:
    """Yield ``(local_path, sha256, size_bytes)`` for ``uri``; a remote file is copied to a temp file (removed after).

    The sha256 of a local file is computed only if ``hash_local`` (else None). VideoError if there is no such file.
    A download that fails with a transient error (:func:`mocapflow.errors.is_transient`: the store unreachable,
    throttled, a 5xx) starts over under ``retry``; if it still fails, :class:`VideoReadError` names the video.
    """
    if _is_local(uri):
        path = uri.removeprefix("file://")
        if not os.path.isfile(path):
            raise VideoError(f"video {uri}: no such file")
        yield path, (_sha256_file(path) if hash_local else None), os.path.getsize(path)
        return
    suffix = os.path.splitext(uri.rsplit("/", 1)[-1])[1][:16]
    fd, tmp = tempfile.mkstemp(prefix="mocapflow-video-", suffix=suffix)
    os.close(fd)
    try:
        try:
            sha, size = retry_transient(
                lambda: _download(uri, storage_options, tmp), f"read video {uri}", retry
            )
        except FileNotFoundError as e:
            raise VideoError(f"video {uri}: no such file") from e
        except Exception as e:
            if not is_transient(e):
                raise
            raise VideoReadError(
                f"video {uri}: cannot read it from storage ({type(e).__name__}: {one_line(e)}); "
                "check that the object store is reachable, then retry"
            ) from e
        logger.debug("copied %s to %s (%d bytes)", uri, tmp, size)
        yield tmp, sha, size
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _open(path: str, uri: str, size: int, threads: int | None) -> cv2.VideoCapture:
    if size == 0:
        raise VideoError(f"video {uri}: the file is empty (0 bytes); re-export or re-upload it")
    params: list[int] = []
    if threads is not None:
        params = [cv2.CAP_PROP_N_THREADS, int(threads)]
    # OpenCV's own warnings about a file it cannot open repeat, in its words, the VideoError raised below
    cv2.utils.logging.setLogLevel(min(cv2.utils.logging.getLogLevel(), cv2.utils.logging.LOG_LEVEL_ERROR))
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise VideoError(
            f"video {uri}: not a decodable video (FFmpeg cannot open it: truncated, corrupt or not a video file); "
            "check the file or re-export it"
        )
    return cap


def probe(
    uri: str,
    storage_options: dict[str, Any] | None = None,
    count_frames: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> VideoInfo:
    """Size, frame rate, frame count and content hash of a video; decodes its first frame to prove it is usable.

    ``count_frames=True`` counts frames by decoding the whole video instead of trusting the container; ``retry``
    governs the download of a remote video (:func:`local_copy`).
    """
    with local_copy(uri, storage_options, retry=retry) as (path, sha, size):
        cap = _open(path, uri, size, threads=1)
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise VideoError(f"video {uri}: no frames (the container opens but no frame decodes)")
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if count_frames or n <= 0:
                n = 1
                while cap.grab():
                    n += 1
        finally:
            cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise VideoError(
            f"video {uri}: no valid frame rate (got {fps}); re-export it with a constant frame rate"
        )
    height, width = first.shape[:2]
    assert sha is not None
    info = VideoInfo(uri, fps, int(width), int(height), n, n / fps, sha, size)
    logger.debug("probed %s: %dx%d, %d frames at %.3f fps", uri, width, height, n, fps)
    return info


def check_duration(info: VideoInfo, min_video_s: float) -> None:
    """VideoError if the video is shorter than ``min_video_s`` seconds (setting ``min_video_s``)."""
    if info.duration_s < min_video_s:
        raise VideoError(
            f"video {info.uri}: {info.duration_s:.2f} s long ({info.n_frames} frames at {info.fps:g} fps), shorter "
            f"than min_video_s={min_video_s:g} s: too short to fit a motion; give a longer clip"
        )


def downscaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most ``max_side`` (aspect kept, sizes rounded; None or a
    small enough frame: unchanged). Example: ``downscaled_size(3840, 2160, 1920) == (1920, 1080)``."""
    if max_side is None or max(width, height) <= max_side:
        return int(width), int(height)
    s = max_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def iter_batches(
    uri: str,
    batch_size: int,
    storage_options: dict[str, Any] | None = None,
    threads: int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> Iterator[NDArray[np.uint8]]:
    """Decode ``uri`` into batches of RGB frames, uint8 ``[n, H, W, 3]`` with ``n <= batch_size`` (last may be short).

    ``threads`` caps FFmpeg's decoder threads (None: FFmpeg's default). ``frame_size`` = (width, height) resizes each frame
    as it is decoded (area interpolation; see :func:`downscaled_size`), so a batch never holds full-size frames of a
    huge video. Each yielded array is new (safe to keep).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with local_copy(uri, storage_options, hash_local=False) as (path, _sha, size):
        cap = _open(path, uri, size, threads)
        try:
            total = 0
            buf: NDArray[np.uint8] | None = None
            shape: tuple[int, ...] = ()
            out_shape: tuple[int, ...] = ()
            k = 0
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                if buf is None:
                    shape = bgr.shape
                    if len(shape) != 3 or shape[2] != 3:
                        raise VideoError(
                            f"video {uri}: decoded frames have shape {shape}, expected H x W x 3"
                        )
                    out_shape = shape if frame_size is None else (int(frame_size[1]), int(frame_size[0]), 3)
                    buf = np.empty((batch_size, *out_shape), np.uint8)
                elif bgr.shape != shape:
                    raise VideoError(
                        f"video {uri}: frame {total} has size {bgr.shape[:2]}, earlier frames {shape[:2]}; "
                        "the frame size must not change"
                    )
                if out_shape != shape:
                    bgr = cv2.resize(bgr, (out_shape[1], out_shape[0]), interpolation=cv2.INTER_AREA)
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=buf[k])
                k += 1
                total += 1
                if k == batch_size:
                    yield buf
                    buf = np.empty((batch_size, *out_shape), np.uint8)
                    k = 0
            if total == 0:
                raise VideoError(f"video {uri}: no frames (the container opens but no frame decodes)")
            if k and buf is not None:
                yield buf[:k].copy()
        finally:
            cap.release()
