"""The synthetic cohort: marker videos of varied subjects and motions, each with ground truth and camera sidecar.

Per video ``<stem>`` in the output folder: ``<stem>.mp4`` (H.264, yuv420p), ``<stem>.gt.parquet`` (see
:mod:`mocapflow.synth.groundtruth`) and ``<stem>.camera.json`` (the intrinsics); plus optional corrupt files, and
the manifest ``cohort.csv`` / ``cohort.parquet`` (one row per file, paths relative to the output folder).
Everything is a function of the seed: independent random streams per subject and per video (motion, camera,
second person, pixels), so the same seed gives the same ground truth and the same decoded frames.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from mocapflow.camera import image_radius, project
from mocapflow.synth.groundtruth import GroundTruth, build_table, to_parquet_bytes
from mocapflow.synth.kinematics import FrameFk
from mocapflow.synth.motions import MOTIONS, generate_motion
from mocapflow.synth.palette import (
    BACKGROUND_GREY,
    DISC_RADIUS_M,
    MARKER_COLORS,
    MARKER_SITES,
    TEXTURE_AMPLITUDE,
    marker_edges,
)
from mocapflow.synth.render import (
    DEFAULT_CRF,
    FrameRenderer,
    background,
    centre_visible,
    draw_discs,
    h264_writer,
    to_uint8,
)
from mocapflow.synth.scene import crossing_path, place_camera, second_person_path
from mocapflow.synth.subjects import STATURE_RANGE_M, Subject, sample_subject

logger = logging.getLogger(__name__)

MANIFEST_CSV = "cohort.csv"
MANIFEST_PARQUET = "cohort.parquet"
CORRUPT_KINDS = ("truncated", "garbage")
SECOND_PERSON_PATHS = ("behind", "crossing")
STYLES = ("markers", "humanoid")

# SeedSequence entropy tags: independent streams for the cohort plan, the subjects and the videos
_PLAN, _SUBJECT, _VIDEO, _CORRUPT = 0, 1, 2, 3


@dataclass(frozen=True)
class CohortSpec:
    """What to generate. ``n_corrupt`` files come in addition to the ``n_videos`` good ones."""

    n_videos: int
    seed: int = 0
    seconds: float = 5.0
    fps: float = 30.0
    width: int = 640
    height: int = 480
    noise_sigma: float = 0.0  # Gaussian image noise, grey levels
    n_second_person: int = 0  # how many of the videos show a second person
    # how the second person walks: "behind" (1-2.5 m behind the subject, in and out of one side of the image) or
    # "crossing" (across the image 0.4-0.7 m in front of the subject, passing it at mid-clip, similar size)
    second_person_path: str = "behind"
    dropped_fraction: float = 0.0  # fraction of frames of every video that are blank (background only)
    n_corrupt: int = 0
    textured: bool = False
    motions: tuple[str, ...] = MOTIONS  # video i shows motions[i % len(motions)]
    n_subjects: int | None = None  # video i shows subject i % n_subjects; None = a new subject per video
    stature_range_m: tuple[float, float] = STATURE_RANGE_M
    hfov_deg_range: tuple[float, float] = (50.0, 65.0)
    distance_m_range: tuple[float, float] = (3.0, 6.0)
    crf: int = DEFAULT_CRF
    style: str = (
        "markers"  # "markers": coloured discs; "humanoid": a clothed 3D body (mocapflow.synth.humanoid)
    )

    def __post_init__(self) -> None:
        problems = []
        if self.n_videos < 0 or self.n_corrupt < 0:
            problems.append(f"n_videos ({self.n_videos}) and n_corrupt ({self.n_corrupt}) must be >= 0")
        if not 0 <= self.n_second_person <= self.n_videos:
            problems.append(
                f"n_second_person must be in 0..n_videos ({self.n_videos}), got {self.n_second_person}"
            )
        if not (self.fps > 0 and self.seconds > 0) or self.n_frames < 2:
            problems.append(f"need fps > 0 and at least 2 frames, got fps={self.fps}, seconds={self.seconds}")
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            problems.append(f"frame size must be even and >= 16 px (yuv420p), got {self.width}x{self.height}")
        if self.second_person_path not in SECOND_PERSON_PATHS:
            problems.append(
                f"second_person_path must be one of {SECOND_PERSON_PATHS}, got {self.second_person_path!r}"
            )
        if not 0.0 <= self.dropped_fraction <= 1.0:
            problems.append(f"dropped_fraction must be in [0, 1], got {self.dropped_fraction}")
        if self.noise_sigma < 0:
            problems.append(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        unknown = [m for m in self.motions if m not in MOTIONS]
        if not self.motions or unknown:
            problems.append(f"motions must be a non-empty subset of {MOTIONS}, got {self.motions}")
        if self.n_subjects is not None and self.n_subjects < 1:
            problems.append(f"n_subjects must be >= 1 or None, got {self.n_subjects}")
        for name in ("stature_range_m", "hfov_deg_range", "distance_m_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                problems.append(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if not 0 <= self.crf <= 51:
            problems.append(f"crf must be in 0..51, got {self.crf}")
        if self.style not in STYLES:
            problems.append(f"style must be one of {STYLES}, got {self.style!r}")
        elif self.style == "humanoid" and self.n_second_person:
            problems.append("the humanoid style has no second person yet; use n_second_person=0")
        if problems:
            raise ValueError("invalid CohortSpec: " + "; ".join(problems))

    @property
    def n_frames(self) -> int:
        return int(round(self.fps * self.seconds))


@dataclass(frozen=True)
class CohortEntry:
    """One file of the cohort. ``gt``/``camera`` are None for corrupt files."""

    video: Path
    gt: Path | None
    camera: Path | None
    subject_id: str
    motion: str
    index: int
    n_frames: int
    fps: float
    width: int
    height: int
    stature_m: float
    second_person: bool = False
    textured: bool = False
    noise_sigma: float = 0.0
    dropped_fraction: float = 0.0
    corrupt: str = ""  # "" for a good video, else one of CORRUPT_KINDS
    flags: tuple[str, ...] = field(default=())

    def to_row(self, root: Path) -> dict[str, Any]:
        """Manifest row: paths relative to ``root`` (POSIX), flags joined by ``;``."""
        row = asdict(self)
        for key in ("video", "gt", "camera"):
            p = getattr(self, key)
            row[key] = "" if p is None else Path(os.path.relpath(p, root)).as_posix()
        row["flags"] = ";".join(self.flags)
        return row


@dataclass(frozen=True)
class _VideoPlan:
    index: int
    stem: str
    motion: str
    subject_index: int
    second_person: bool


def _plan(spec: CohortSpec) -> list[_VideoPlan]:
    rng = np.random.default_rng([spec.seed, _PLAN])
    second = (
        set(rng.choice(spec.n_videos, size=spec.n_second_person, replace=False).tolist())
        if spec.n_videos
        else set()
    )
    n_subjects = spec.n_subjects or spec.n_videos
    plans = []
    for i in range(spec.n_videos):
        motion = spec.motions[i % len(spec.motions)]
        subject = i % n_subjects
        plans.append(_VideoPlan(i, f"v{i:03d}_{motion}_s{subject:03d}", motion, subject, i in second))
    return plans


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flags(spec: CohortSpec, second: bool) -> tuple[str, ...]:
    flags = []
    if second:
        flags.append("second_person")
        if spec.second_person_path == "crossing":
            flags.append("crossing")
    if spec.noise_sigma > 0:
        flags.append("noise")
    if spec.dropped_fraction > 0:
        flags.append("dropped_frames")
    if spec.textured:
        flags.append("textured")
    if spec.style == "humanoid":
        flags.append("humanoid")
    return tuple(flags)


@dataclass(frozen=True, eq=False)
class _Person:
    subject: Subject
    q: NDArray[np.float64]
    cam_m: NDArray[np.float64]  # [T, J, 3] marker centres in the camera frame


def _markers_world(
    fk: FrameFk, q: NDArray[np.float64], subject: Subject, marker_idx: list[int]
) -> NDArray[np.float64]:
    return fk(q, subject.body_scale, subject.site_offset)[:, marker_idx]


def _render_video(
    out: Path, spec: CohortSpec, plan: _VideoPlan, subject: Subject, fk: FrameFk
) -> CohortEntry:
    t_start = time.perf_counter()
    ss = np.random.SeedSequence([spec.seed, _VIDEO, plan.index])
    rng_motion, rng_camera, rng_second, rng_pixels = (np.random.default_rng(s) for s in ss.spawn(4))
    n, w, h = spec.n_frames, spec.width, spec.height
    model = fk.model
    marker_idx = model.site_index(list(MARKER_SITES))

    motion = generate_motion(fk, plan.motion, subject, n, spec.fps, rng_motion)
    world = _markers_world(fk, motion.q, subject, marker_idx)
    layout = place_camera(
        world,
        motion.facing_yaw,
        rng_camera,
        width=w,
        height=h,
        hfov_deg_range=spec.hfov_deg_range,
        distance_m_range=spec.distance_m_range,
        disc_radius_m=DISC_RADIUS_M,
        side_view=plan.motion == "walking",
    )
    intr, extr = layout.intrinsics, layout.extrinsics
    main = _Person(subject, motion.q, extr.apply(world))

    second: _Person | None = None
    second_meta: dict[str, Any] | None = None
    if plan.second_person:
        subject2 = sample_subject(
            fk, rng_second, f"{subject.subject_id}_b", stature_range_m=spec.stature_range_m
        )
        if spec.second_person_path == "crossing":
            path = crossing_path(main.cam_m, extr, rng_second, spec.seconds)
        else:
            path = second_person_path(main.cam_m, intr, extr, rng_second, spec.seconds, DISC_RADIUS_M)
        motion2 = generate_motion(fk, "walking", subject2, n, spec.fps, rng_second, walk_path=path)
        world2 = _markers_world(fk, motion2.q, subject2, marker_idx)
        second = _Person(subject2, motion2.q, extr.apply(world2))
        second_meta = {
            **subject2.to_dict(model),
            "motion": "walking",
            "motion_params": motion2.params,
            "path": spec.second_person_path,
        }

    # projection, image radii and centre visibility of every disc (both people together)
    people = [main] if second is None else [main, second]
    cam = np.concatenate([p.cam_m for p in people], axis=1)  # [T, J*P, 3]
    uv = project(cam, intr)
    radius = image_radius(DISC_RADIUS_M, cam[..., 2], intr)
    colors = np.concatenate([MARKER_COLORS.astype(np.float32)] * len(people), axis=0)
    visible = np.stack([centre_visible(uv[f], radius[f], cam[f, :, 2], w, h) for f in range(n)])
    n_blank = int(round(spec.dropped_fraction * n))
    blank = np.zeros(n, bool)
    blank[rng_pixels.choice(n, size=n_blank, replace=False)] = True
    visible[blank] = False

    # pixels
    tex = TEXTURE_AMPLITUDE if spec.textured else 0.0
    render = FrameRenderer(background(w, h, BACKGROUND_GREY, texture_amplitude=tex, rng=rng_pixels))
    nothing = np.empty((0, 2)), np.empty(0), np.empty(0), np.empty((0, 3))
    video = out / f"{plan.stem}.mp4"
    with h264_writer(video, w, h, spec.fps, crf=spec.crf) as write:
        for f in range(n):
            discs = nothing if blank[f] else (uv[f], radius[f], cam[f, :, 2], colors)
            write(render(*discs, noise_sigma=spec.noise_sigma, rng=rng_pixels))

    # ground truth
    j = len(MARKER_SITES)
    r_main = radius[:, :j, None]
    box = np.concatenate([(uv[:, :j] - r_main).min(axis=1), (uv[:, :j] + r_main).max(axis=1)], axis=1)
    if second is not None and second_meta is not None:
        in_image = (
            (uv[:, j:, 0] >= -0.5)
            & (uv[:, j:, 0] < w - 0.5)
            & (uv[:, j:, 1] >= -0.5)
            & (uv[:, j:, 1] < h - 0.5)
        )
        second_present = in_image.any(axis=1) & ~blank
        second_uv, second_mm, second_vis = uv[:, j:], second.cam_m * 1000.0, visible[:, j:]
        second_meta["overlap_fraction"] = _overlap_fraction(box, uv[:, j:], radius[:, j:], second_present)
    else:
        second_present = np.zeros(n, bool)
        second_uv = np.full((n, j, 2), np.nan)
        second_mm = np.full((n, j, 3), np.nan)
        second_vis = np.zeros((n, j), bool)
    flags = _flags(spec, plan.second_person)
    meta: dict[str, Any] = {
        "video": video.name,
        "fps": float(spec.fps),
        "width": w,
        "height": h,
        "n_frames": n,
        "intrinsics": intr.to_dict(),
        "extrinsics": extr.to_dict(),
        "camera": layout.params,
        "joint_names": list(MARKER_SITES),
        "joint_edges": [list(e) for e in marker_edges()],
        "marker_colors": MARKER_COLORS.tolist(),
        "disc_radius_m": DISC_RADIUS_M,
        "dof_names": list(model.dof_names),
        "units": {
            **{d.name: ("m" if d.kind == "slide" else "rad") for d in model.dofs},
            "time_s": "s",
            "kp2d_px": "px",
            "kp3d_mm": "mm (camera frame)",
            "box": "px",
        },
        "model_name": model.name,
        "subject": subject.to_dict(model),
        "motion": plan.motion,
        "motion_params": motion.params,
        "seed": spec.seed,
        "video_index": plan.index,
        "flags": {
            "second_person": plan.second_person,
            "noise_sigma": spec.noise_sigma,
            "dropped_fraction": spec.dropped_fraction,
            "textured": spec.textured,
            "crf": spec.crf,
        },
        "second_subject": second_meta,
    }
    gt = GroundTruth(
        meta=meta,
        q=motion.q,
        kp2d_px=uv[:, :j].astype(np.float32),
        kp3d_mm=(main.cam_m * 1000.0).astype(np.float32),
        visible=visible[:, :j],
        box=box.astype(np.float32),
        blank=blank,
        second_present=second_present,
        second_kp2d_px=second_uv.astype(np.float32),
        second_kp3d_mm=second_mm.astype(np.float32),
        second_visible=second_vis,
    )
    gt_path = out / f"{plan.stem}.gt.parquet"
    camera_path = out / f"{plan.stem}.camera.json"
    _write_atomic(gt_path, to_parquet_bytes(build_table(gt)))
    _write_atomic(camera_path, intr.to_json().encode())
    logger.info("wrote %s (%s, %d frames, %.1f s)", video.name, plan.motion, n, time.perf_counter() - t_start)
    return CohortEntry(
        video=video,
        gt=gt_path,
        camera=camera_path,
        subject_id=subject.subject_id,
        motion=plan.motion,
        index=plan.index,
        n_frames=n,
        fps=float(spec.fps),
        width=w,
        height=h,
        stature_m=subject.stature_m,
        second_person=plan.second_person,
        textured=spec.textured,
        noise_sigma=spec.noise_sigma,
        dropped_fraction=spec.dropped_fraction,
        flags=flags,
    )


def _overlap_fraction(
    main_box: NDArray[np.float64],
    uv2: NDArray[np.float64],
    r2: NDArray[np.float64],
    present: NDArray[np.bool_],
) -> float:
    """Fraction of the frames with the second person in view where its disc box intersects the main subject's."""
    if not present.any():
        return 0.0
    lo2, hi2 = (uv2 - r2[..., None]).min(axis=1), (uv2 + r2[..., None]).max(axis=1)
    overlap = (lo2[:, 0] < main_box[:, 2]) & (hi2[:, 0] > main_box[:, 0])
    overlap &= (lo2[:, 1] < main_box[:, 3]) & (hi2[:, 1] > main_box[:, 1])
    return float(overlap[present].mean())


def _corrupt_file(out: Path, spec: CohortSpec, k: int) -> CohortEntry:
    """A file named like a video that no decoder can read: a truncated mp4 (no index) or random bytes."""
    rng = np.random.default_rng([spec.seed, _CORRUPT, k])
    kind = CORRUPT_KINDS[k % len(CORRUPT_KINDS)]
    path = out / f"c{k:03d}_{kind}.mp4"
    if kind == "garbage":
        data = rng.bytes(int(rng.integers(20_000, 200_000)))
    else:
        # a real H.264 mp4 of random discs, cut before its index (the moov box is written at the end)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            full = Path(tmp) / "full.mp4"
            bg = background(spec.width, spec.height, BACKGROUND_GREY)
            n_frames = min(spec.n_frames, 30)
            with h264_writer(full, spec.width, spec.height, spec.fps, crf=spec.crf) as write:
                for _ in range(n_frames):
                    img = bg.copy()
                    m = len(MARKER_COLORS)
                    uv = rng.uniform((0, 0), (spec.width, spec.height), size=(m, 2))
                    draw_discs(img, uv, rng.uniform(3, 8, m), rng.uniform(1, 2, m), MARKER_COLORS)
                    write(to_uint8(img))
            data = full.read_bytes()
        data = data[: int(len(data) * rng.uniform(0.3, 0.7))]
    _write_atomic(path, data)
    return CohortEntry(
        video=path,
        gt=None,
        camera=None,
        subject_id="",
        motion="",
        index=spec.n_videos + k,
        n_frames=0,
        fps=float(spec.fps),
        width=spec.width,
        height=spec.height,
        stature_m=float("nan"),
        corrupt=kind,
        flags=("corrupt", kind),
    )


def write_manifest(out: Path, entries: list[CohortEntry]) -> tuple[Path, Path]:
    """``cohort.csv`` and ``cohort.parquet`` in ``out``: one row per entry."""
    rows = [e.to_row(out) for e in entries]
    names = [f for f in CohortEntry.__dataclass_fields__]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, parquet_path = out / MANIFEST_CSV, out / MANIFEST_PARQUET
    _write_atomic(csv_path, buf.getvalue().encode())
    table = pa.Table.from_pylist(rows) if rows else pa.table({n: pa.array([], pa.string()) for n in names})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _write_atomic(parquet_path, sink.getvalue().to_pybytes())
    return csv_path, parquet_path


def generate_cohort(
    out: str | Path,
    spec: CohortSpec,
    on_video_done: Callable[[CohortEntry], None] | None = None,
    *,
    fk: FrameFk | None = None,
) -> list[CohortEntry]:
    """Write the cohort described by ``spec`` into folder ``out``; return its entries (good videos, then corrupt).

    ``on_video_done`` is called after each good video (not for the corrupt files). ``fk``: the body model's
    frame FK to reuse (saves its compilation); default :func:`models.body.default_body_model`.
    """
    from models.body import default_body_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fk = fk or FrameFk(default_body_model())
    model = fk.model
    missing = [s for s in MARKER_SITES if s not in model.site_names]
    if missing:
        raise ValueError(
            f"body model {model.name!r} lacks marker sites {missing}; update mocapflow/synth/palette.py"
        )
    subjects: dict[int, Subject] = {}
    entries: list[CohortEntry] = []
    for plan in _plan(spec):
        if plan.subject_index not in subjects:
            rng = np.random.default_rng([spec.seed, _SUBJECT, plan.subject_index])
            subjects[plan.subject_index] = sample_subject(
                fk, rng, f"s{plan.subject_index:03d}", stature_range_m=spec.stature_range_m
            )
        if spec.style == "humanoid":
            from mocapflow.synth.humanoid_video import render_humanoid_video

            entry = render_humanoid_video(out, spec, plan, subjects[plan.subject_index], fk)
        else:
            entry = _render_video(out, spec, plan, subjects[plan.subject_index], fk)
        entries.append(entry)
        if on_video_done is not None:
            on_video_done(entry)
    entries.extend(_corrupt_file(out, spec, k) for k in range(spec.n_corrupt))
    write_manifest(out, entries)
    return entries
