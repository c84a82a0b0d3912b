"""Accuracy of the fit on fresh synthetic ground truth (``mocapflow validate fit``).

Ground truth comes from :mod:`mocapflow.synth` without rendering video: a subject (anisotropic per-body scales,
marker offsets), a motion and a camera per video; the markers are projected through the recorded camera into
keypoints tables. ``clean`` tables hold the exact markers; ``noisy`` ones add 2D noise (px), 3D noise (mm, per
coordinate), dropped frames and keypoints with confidence 0. Joint-angle errors are computed against the true
DOF values on the metric joints (hips, knees, ankles, shoulders, elbows; both sides).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mocapflow.camera import Extrinsics, Intrinsics
from mocapflow.fit.clip import observe
from mocapflow.fit.fitting import FitOptions, FitResult, fit_arrays, fit_body_model
from mocapflow.fit.metamorphic import LIMB_DOFS
from mocapflow.keypoints import KeypointsMeta
from models.body import BodyModel

logger = logging.getLogger(__name__)

# hips, knees, ankles, shoulders, elbows, right then left (the metamorphic suite takes its figures over the same)
METRIC_DOFS: tuple[str, ...] = tuple(f"{name}_{side}" for side in ("r", "l") for name in LIMB_DOFS)


@dataclass(frozen=True)
class ValidationSpec:
    """The synthetic set and the corruption of its noisy copy."""

    n_videos: int = 4
    seconds: float = 4.0
    fps: float = 30.0
    seed: int = 0
    width: int = 640
    height: int = 480
    noise_2d_px: float = 4.0
    noise_3d_mm: float = 50.0
    dropped_frames: float = 0.05
    zero_conf_keypoints: float = 0.10

    def __post_init__(self) -> None:
        if self.n_videos < 1 or self.seconds <= 0 or self.fps <= 0:
            raise ValueError(f"invalid validation spec {self}: need videos >= 1, seconds > 0, fps > 0")

    def corruption(self) -> dict[str, float]:
        """The noisy copy's corruption, as :func:`keypoints_from_truth` takes it."""
        return {
            "noise_2d_px": self.noise_2d_px,
            "noise_3d_mm": self.noise_3d_mm,
            "dropped_frames": self.dropped_frames,
            "zero_conf_keypoints": self.zero_conf_keypoints,
        }

    def video_seed(self, k: int) -> int:
        """The corruption's random seed of the set's video ``k``."""
        return self.seed * 1000 + k


@dataclass(frozen=True, eq=False)
class TruthVideo:
    """One synthetic video's ground truth (no pixels)."""

    name: str
    motion: str
    q: NDArray[np.float64]  # [T, D]
    markers_cam_m: NDArray[np.float64]  # [T, J, 3]
    marker_names: tuple[str, ...]
    intrinsics: Intrinsics
    extrinsics: Extrinsics
    fps: float


def truth_videos(spec: ValidationSpec, model: BodyModel) -> list[TruthVideo]:
    """Subjects, motions and cameras from :mod:`mocapflow.synth`, one independent random stream per video."""
    from mocapflow.synth import DISC_RADIUS_M, MARKER_SITES, MOTIONS
    from mocapflow.synth.kinematics import FrameFk
    from mocapflow.synth.motions import generate_motion
    from mocapflow.synth.scene import place_camera
    from mocapflow.synth.subjects import sample_subject

    fk = FrameFk(model)
    n_frames = int(round(spec.seconds * spec.fps))
    marker_idx = model.site_index(list(MARKER_SITES))
    videos = []
    for i in range(spec.n_videos):
        rng_subject, rng_motion, rng_camera = (
            np.random.default_rng(s) for s in np.random.SeedSequence([spec.seed, 7001, i]).spawn(3)
        )
        motion_name = MOTIONS[i % len(MOTIONS)]
        subject = sample_subject(fk, rng_subject, f"val{i:03d}")
        motion = generate_motion(fk, motion_name, subject, n_frames, spec.fps, rng_motion)
        world = fk(motion.q, subject.body_scale, subject.site_offset)[:, marker_idx]
        layout = place_camera(
            world,
            motion.facing_yaw,
            rng_camera,
            width=spec.width,
            height=spec.height,
            hfov_deg_range=(50.0, 65.0),
            distance_m_range=(3.0, 6.0),
            disc_radius_m=DISC_RADIUS_M,
            side_view=motion_name == "walking",
        )
        videos.append(
            TruthVideo(
                name=f"val{i:03d}_{motion_name}",
                motion=motion_name,
                q=motion.q,
                markers_cam_m=layout.extrinsics.apply(world),
                marker_names=tuple(MARKER_SITES),
                intrinsics=layout.intrinsics,
                extrinsics=layout.extrinsics,
                fps=spec.fps,
            )
        )
    return videos


def keypoints_from_truth(
    video: TruthVideo,
    *,
    noise_2d_px: float = 0.0,
    noise_3d_mm: float = 0.0,
    dropped_frames: float = 0.0,
    zero_conf_keypoints: float = 0.0,
    seed: int = 0,
) -> tuple[KeypointsMeta, dict[str, NDArray[Any]]]:
    """Keypoint arrays of the markers through the recorded camera; all corruption off gives exact markers."""
    cam = video.markers_cam_m
    digest = hashlib.sha256(
        np.ascontiguousarray(cam).tobytes() + repr((noise_2d_px, noise_3d_mm, seed)).encode()
    ).hexdigest()
    return observe(
        cam,
        video.intrinsics,
        video.fps,
        video.marker_names,
        noise_2d_px=noise_2d_px,
        noise_3d_mm=noise_3d_mm,
        drop_frames=dropped_frames,
        zero_conf=zero_conf_keypoints,
        seed=seed,
        video_sha256=digest,
        model_id=hashlib.sha256(b"mocapflow-validate-groundtruth").hexdigest()[:16],
    )


def angle_errors_deg(
    result: FitResult, q_true: NDArray[np.floating], dofs: tuple[str, ...] = METRIC_DOFS
) -> NDArray[np.float64]:
    """Absolute errors [n, len(dofs)] in degrees over the fitted frames (observed or bridged; frames in long gaps
    have no angles to compare), frames aligned by frame number."""
    idx = [result.model.dof_index(d) for d in dofs]
    fitted = result.fitted
    truth = np.asarray(q_true)[result.frames[fitted]][:, idx]
    diff = result.q[fitted][:, idx] - truth
    diff = (diff + np.pi) % (2 * np.pi) - np.pi
    return np.rad2deg(np.abs(diff))


def validate_fit(
    spec: ValidationSpec | None = None,
    options: FitOptions | None = None,
    on_video: Callable[[str, str, float], None] | None = None,
) -> dict[str, Any]:
    """Fit clean and noisy keypoints of a fresh synthetic set; return the summary (JSON-ready)."""
    spec = spec or ValidationSpec()
    options = options or FitOptions()
    model = fit_body_model()
    videos = truth_videos(spec, model)
    errors: dict[str, list[NDArray[np.float64]]] = {"clean": [], "noisy": []}
    per_video: list[dict[str, Any]] = []
    seconds: list[float] = []
    for k, video in enumerate(videos):
        for kind in ("clean", "noisy"):
            corruption = {} if kind == "clean" else spec.corruption()
            meta, arrays = keypoints_from_truth(video, seed=spec.video_seed(k), **corruption)
            result = fit_arrays(meta, arrays, options, model)
            err = angle_errors_deg(result, video.q)
            errors[kind].append(err)
            seconds.append(result.seconds)
            per_video.append(
                {
                    "video": video.name,
                    "kind": kind,
                    "mjae_deg": float(np.median(err)),
                    "iterations": result.info.iterations,
                    "converged": result.info.converged,
                    "rel_loss_change": float(result.info.rel_change)
                    if np.isfinite(result.info.rel_change)
                    else None,
                    "fitted_fraction": float(np.mean(result.fitted)),
                    "seconds": result.seconds,
                }
            )
            if on_video is not None:
                on_video(video.name, kind, float(np.median(err)))
    summary: dict[str, Any] = {
        "mjae_clean_deg": float(np.median(np.concatenate(errors["clean"]))),
        "mjae_noisy_deg": float(np.median(np.concatenate(errors["noisy"]))),
        "mjae_deg": float(np.median(np.concatenate(errors["clean"] + errors["noisy"]))),
        "worst_video_deg": max(v["mjae_deg"] for v in per_video),
        "fit_seconds_per_video": float(np.mean(seconds)),
    }
    for kind in ("clean", "noisy"):
        allerr = np.concatenate(errors[kind])
        summary[f"rmse_{kind}_deg"] = {
            d: float(np.sqrt(np.mean(allerr[:, i] ** 2))) for i, d in enumerate(METRIC_DOFS)
        }
    summary["videos"] = per_video
    summary["spec"] = asdict(spec)
    summary["fit_options"] = options.to_params()
    return summary


def validate_fit_seeds(
    spec: ValidationSpec | None = None,
    options: FitOptions | None = None,
    n_seeds: int = 5,
    on_video: Callable[[str, str, float], None] | None = None,
) -> dict[str, Any]:
    """:func:`validate_fit` for seeds ``spec.seed .. spec.seed + n_seeds - 1`` (fresh subjects, motions, cameras and
    noise each): per seed the median error over all its videos (clean and noisy) and its worst video; over all
    seeds the median of those medians and the worst video."""
    spec = spec or ValidationSpec()
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    runs = [validate_fit(replace(spec, seed=spec.seed + k), options, on_video) for k in range(n_seeds)]
    per_seed = [
        {
            "seed": r["spec"]["seed"],
            "mjae_deg": r["mjae_deg"],
            "mjae_clean_deg": r["mjae_clean_deg"],
            "mjae_noisy_deg": r["mjae_noisy_deg"],
            "worst_video_deg": r["worst_video_deg"],
            "worst_video": max(r["videos"], key=lambda v: v["mjae_deg"])["video"],
        }
        for r in runs
    ]
    return {
        "median_deg": float(np.median([p["mjae_deg"] for p in per_seed])),
        "worst_video_deg": max(p["worst_video_deg"] for p in per_seed),
        "per_seed": per_seed,
        "fit_seconds_per_video": float(np.mean([r["fit_seconds_per_video"] for r in runs])),
        "runs": runs,
    }
