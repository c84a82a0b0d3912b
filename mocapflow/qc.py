"""Pictures people look at: joint angles against ground truth, a QC GIF, and the QC video of a fitted subject.

Pure functions that return PNG / GIF / MP4 bytes; callers write them through the store in one put.

The QC video (:func:`qc_video_mp4`) is the subject's skeleton over every frame of the video, H.264 / yuv420p MP4
(plays in browsers and common players). Frames the fit did not observe are marked, never drawn as if measured: a
red border and "NOT OBSERVED" where the frame is outside every span (its angles are NaN), an amber border and
"BRIDGED (not observed)" where the fit bridged a short gap. Keypoints are drawn only where the pose stage found them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

MAIN_DOFS = (
    "hip_flexion_r",
    "hip_flexion_l",
    "knee_angle_r",
    "knee_angle_l",
    "ankle_angle_r",
    "ankle_angle_l",
    "arm_flex_r",
    "arm_flex_l",
    "elbow_flex_r",
    "elbow_flex_l",
)


def angles_vs_truth_png(
    time_s: NDArray[np.floating],
    fitted_deg: Mapping[str, NDArray[np.floating]],
    truth_deg: Mapping[str, NDArray[np.floating]] | None = None,
    dofs: Sequence[str] = MAIN_DOFS,
    title: str = "",
) -> bytes:
    """A grid of the main joint angles over time (fit solid, ground truth dashed) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    dofs = [d for d in dofs if d in fitted_deg]
    ncols = 2
    nrows = max(1, (len(dofs) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 1.9 * nrows + 0.6), sharex=True, squeeze=False)
    for ax, dof in zip(axes.flat, dofs, strict=False):
        ax.plot(time_s, fitted_deg[dof], color="tab:blue", lw=1.6, label="fit")
        if truth_deg is not None and dof in truth_deg:
            err = np.nanmedian(np.abs(np.asarray(fitted_deg[dof]) - np.asarray(truth_deg[dof])))
            ax.plot(time_s, truth_deg[dof], color="black", lw=1.0, ls="--", label="truth")
            ax.set_title(f"{dof}  (median |err| {err:.1f} deg)", fontsize=9)
        else:
            ax.set_title(dof, fontsize=9)
        ax.set_ylabel("deg", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(dofs) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    if truth_deg is not None:
        axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def draw_skeleton(
    frame: NDArray[np.uint8],
    kp2d: NDArray[np.floating],
    conf: NDArray[np.floating],
    edges: Sequence[Sequence[int]],
    min_conf: float = 0.3,
) -> NDArray[np.uint8]:
    """The frame (RGB) with confident keypoints and the edges between them drawn over it."""
    out = np.ascontiguousarray(frame.copy())
    ok = np.isfinite(kp2d).all(axis=-1) & (conf >= min_conf)
    pts = np.where(ok[:, None], kp2d, 0).round().astype(np.int32)
    for a, b in edges:
        if ok[a] and ok[b]:
            cv2.line(out, tuple(map(int, pts[a])), tuple(map(int, pts[b])), (255, 255, 255), 2, cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        cv2.circle(out, tuple(map(int, pts[j])), 3, (255, 40, 40), -1, cv2.LINE_AA)
    return out


OBSERVED, BRIDGED, NOT_OBSERVED = 1, 2, 0
_MARKS = {
    NOT_OBSERVED: ((230, 30, 30), "NOT OBSERVED"),
    BRIDGED: ((255, 170, 0), "BRIDGED (not observed)"),
}


def frame_states(
    n_frames: int, frames: NDArray[np.integer], observed: NDArray[np.bool_], interpolated: NDArray[np.bool_]
) -> NDArray[np.int8]:
    """Per video frame: OBSERVED, BRIDGED (interpolated by the fit) or NOT_OBSERVED, from an angles table's
    ``frame``, ``observed`` and ``interpolated`` columns; frames the table does not hold are NOT_OBSERVED."""
    states = np.full(n_frames, NOT_OBSERVED, np.int8)
    frames = np.asarray(frames, np.int64)
    ok = (frames >= 0) & (frames < n_frames)
    states[frames[ok & np.asarray(observed, bool)]] = OBSERVED
    states[frames[ok & np.asarray(interpolated, bool)]] = BRIDGED
    return states


def qc_frame(
    frame: NDArray[np.uint8],
    kp2d: NDArray[np.floating],
    conf: NDArray[np.floating],
    edges: Sequence[Sequence[int]],
    state: int,
    label: str,
) -> NDArray[np.uint8]:
    """One QC frame (RGB): skeleton, a caption line, and a coloured border and text when not observed."""
    out = draw_skeleton(frame, kp2d, conf, edges)
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 900.0)
    thick = max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, h - th - base - 16), (tw + 20, h), (0, 0, 0), -1)
    cv2.putText(
        out, label, (10, h - base - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA
    )
    if state in _MARKS:
        colour, text = _MARKS[state]
        border = max(4, min(w, h) // 60)
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), colour, 2 * border)
        big = 2.2 * scale
        cv2.putText(
            out,
            text,
            (border + 8, border + int(40 * scale) + 10),
            cv2.FONT_HERSHEY_SIMPLEX,
            big,
            (0, 0, 0),
            3 * thick + 2,
            cv2.LINE_AA,
        )
        cv2.putText(
            out,
            text,
            (border + 8, border + int(40 * scale) + 10),
            cv2.FONT_HERSHEY_SIMPLEX,
            big,
            colour,
            3 * thick,
            cv2.LINE_AA,
        )
    return out


def qc_video_mp4(
    batches: Iterable[NDArray[np.uint8]],
    kp2d: NDArray[np.floating],
    conf: NDArray[np.floating],
    edges: Sequence[Sequence[int]],
    states: NDArray[np.int8],
    fps: float,
    title: str = "",
    max_side: int = 960,
) -> bytes:
    """H.264 (yuv420p, faststart) MP4 of every frame with the subject drawn over it (:func:`qc_frame`).

    ``batches``: RGB frames uint8 [n, H, W, 3] in order (:func:`mocapflow.video.iter_batches`); ``kp2d``/``conf``:
    the keypoints table's rows (one per frame); ``states``: :func:`frame_states`. Frames are scaled so that the
    longer side is at most ``max_side`` (even sizes, as yuv420p needs). Encoded by the ffmpeg binary that
    imageio-ffmpeg ships.
    """
    import os
    import tempfile

    import imageio_ffmpeg

    writer = None
    size: tuple[int, int] | None = None
    t = 0
    with tempfile.TemporaryDirectory(prefix="mocapflow-qc-") as tmp:
        path = os.path.join(tmp, "qc.mp4")
        try:
            for batch in batches:
                for frame in batch:
                    if t < len(kp2d):
                        k, c = kp2d[t], conf[t]
                    else:  # a frame the keypoints table does not hold: nothing measured
                        k, c = np.full((len(kp2d[0]), 2), np.nan), np.zeros(len(kp2d[0]))
                    state = int(states[t]) if t < len(states) else NOT_OBSERVED
                    label = f"{title}  frame {t}  {t / fps:.2f} s".strip()
                    img = qc_frame(frame, k, c, edges, state, label)
                    if size is None:
                        h, w = img.shape[:2]
                        f = min(1.0, max_side / max(h, w))
                        size = (max(2, int(w * f) // 2 * 2), max(2, int(h * f) // 2 * 2))
                        writer = imageio_ffmpeg.write_frames(
                            path,
                            size,
                            fps=fps,
                            codec="libx264",
                            pix_fmt_in="rgb24",
                            pix_fmt_out="yuv420p",
                            macro_block_size=2,
                            output_params=["-movflags", "+faststart", "-crf", "23", "-preset", "veryfast"],
                            ffmpeg_log_level="error",
                        )
                        writer.send(None)
                    if (img.shape[1], img.shape[0]) != size:
                        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                    writer.send(np.ascontiguousarray(img))
                    t += 1
        finally:
            if writer is not None:
                writer.close()
        if t == 0:
            raise ValueError("qc_video_mp4: the video has no frames")
        with open(path, "rb") as fh:
            return fh.read()


def qc_gif(
    frames: Sequence[NDArray[np.uint8]] | NDArray[np.uint8],
    kp2d: NDArray[np.floating],
    conf: NDArray[np.floating],
    edges: Sequence[Sequence[int]],
    fps: float,
    every: int = 2,
    scale: float = 0.5,
) -> bytes:
    """An animated GIF of every ``every``-th frame with the tracked skeleton, downscaled by ``scale``."""
    import imageio.v3 as iio

    picked = []
    for t in range(0, min(len(frames), len(kp2d)), every):
        img = draw_skeleton(np.asarray(frames[t]), kp2d[t], conf[t], edges)
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        picked.append(img)
    if not picked:
        raise ValueError("qc_gif: no frames to draw")
    buf = io.BytesIO()
    iio.imwrite(buf, np.stack(picked), extension=".gif", duration=1000.0 * every / fps, loop=0)
    return buf.getvalue()
