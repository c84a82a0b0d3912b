"""One humanoid video of the synthetic cohort (``CohortSpec(style="humanoid")``) and its ground truth.

The motion is the marker video's motion for the same seed and index (same random streams: motion, camera,
pixels), so a humanoid cohort and a marker cohort of one seed show the same joint trajectories. The body is a
:class:`~mocapflow.synth.humanoid.HumanoidBody` drawn once per subject from its own stream, with the subject's
stature; the pelvis translation is re-placed for it (its soles on the floor). The camera sees every landmark, the
head and the soles with a margin; a back wall stands 1-3 m behind the farthest point of the motion.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mocapflow.camera import project
from mocapflow.synth.groundtruth import GroundTruth, build_table, to_parquet_bytes
from mocapflow.synth.humanoid import (
    BLAZEPOSE_NAMES,
    HUMANOID_NAME,
    HumanoidRenderer,
    body_parts,
    landmark_depths,
    landmark_visibility,
    landmarks_world,
    place_on_floor,
    pose,
    sample_humanoid,
    silhouette_box,
    sole_points,
)
from mocapflow.synth.motions import generate_motion
from mocapflow.synth.render import h264_writer, to_uint8
from mocapflow.synth.scene import place_camera
from models.blazepose.skeleton import JOINT_EDGES

if TYPE_CHECKING:
    from mocapflow.synth.cohort import CohortEntry, CohortSpec, _VideoPlan
    from mocapflow.synth.kinematics import FrameFk
    from mocapflow.synth.subjects import Subject

logger = logging.getLogger(__name__)

# SeedSequence tags shared with mocapflow.synth.cohort (_VIDEO) and this module's own (_HUMANOID)
_VIDEO, _HUMANOID = 2, 4
SUPERSAMPLE = 2
_EXTENT_MARGIN_M = (
    0.12  # the camera keeps every landmark, head top and sole this far (as a disc) inside the image
)


def render_humanoid_video(
    out: Path, spec: CohortSpec, plan: _VideoPlan, subject: Subject, fk: FrameFk
) -> CohortEntry:
    """Render ``plan``'s video as a humanoid into ``out`` with its ``.gt.parquet`` and ``.camera.json``."""
    from mocapflow.synth.cohort import CohortEntry, _flags, _write_atomic

    t_start = time.perf_counter()
    streams = np.random.SeedSequence([spec.seed, _VIDEO, plan.index]).spawn(5)
    rng_motion, rng_camera, _rng_second, rng_pixels, rng_room = (np.random.default_rng(s) for s in streams)
    n, w, h = spec.n_frames, spec.width, spec.height
    model = fk.model
    dof_names = list(model.dof_names)
    body = sample_humanoid(
        np.random.default_rng([spec.seed, _HUMANOID, plan.subject_index]),
        subject.subject_id,
        subject.stature_m,
    )
    motion = generate_motion(fk, plan.motion, subject, n, spec.fps, rng_motion)
    q = place_on_floor(body, motion.q, dof_names, keep_horizontal=plan.motion == "walking")
    p = pose(body, q, dof_names)
    lm_world = landmarks_world(body, p)
    d = body.dims
    vertex = p.point("head", (0.018, d["head_centre_y"] + d["head_semi_y"], 0.0))
    extent = np.concatenate([lm_world, vertex[:, None], sole_points(body, p)], axis=1)
    layout = place_camera(
        extent,
        motion.facing_yaw,
        rng_camera,
        width=w,
        height=h,
        hfov_deg_range=spec.hfov_deg_range,
        distance_m_range=spec.distance_m_range,
        disc_radius_m=_EXTENT_MARGIN_M,
        side_view=plan.motion == "walking",
    )
    intr, extr = layout.intrinsics, layout.extrinsics
    forward = extr.R[2].copy()
    forward[1] = 0.0
    forward /= np.linalg.norm(forward)
    farthest = float(((extent.reshape(-1, 3) - extr.centre) @ forward).max())
    wall = farthest + float(rng_room.uniform(1.0, 3.0))
    renderer = HumanoidRenderer.create(
        body, intr, extr, rng_room, wall_distance_m=wall, supersample=SUPERSAMPLE
    )
    parts = body_parts(body)

    lm_cam = extr.apply(lm_world)
    uv = project(lm_cam, intr)
    depths = landmark_depths(body)
    n_blank = int(round(spec.dropped_fraction * n))
    blank = np.zeros(n, bool)
    blank[rng_pixels.choice(n, size=n_blank, replace=False)] = True
    visible = np.zeros((n, len(BLAZEPOSE_NAMES)), bool)
    box = np.full((n, 4), np.nan, np.float32)
    video = out / f"{plan.stem}.mp4"
    with h264_writer(video, w, h, spec.fps, crf=spec.crf) as write:
        for f in range(n):
            img, buf = renderer.render(None if blank[f] else p, f, parts)
            if buf is not None:
                visible[f] = landmark_visibility(lm_cam[f], depths, buf, intr, SUPERSAMPLE)
                box[f] = silhouette_box(buf, SUPERSAMPLE)
            write(to_uint8(img, spec.noise_sigma, rng_pixels))

    j = len(BLAZEPOSE_NAMES)
    meta: dict[str, Any] = {
        "video": video.name,
        "fps": float(spec.fps),
        "width": w,
        "height": h,
        "n_frames": n,
        "intrinsics": intr.to_dict(),
        "extrinsics": extr.to_dict(),
        "camera": layout.params,
        "joint_names": list(BLAZEPOSE_NAMES),
        "joint_edges": [list(e) for e in JOINT_EDGES],
        "marker_colors": [],
        "disc_radius_m": None,
        "dof_names": dof_names,
        "units": {
            **{dof.name: ("m" if dof.kind == "slide" else "rad") for dof in model.dofs},
            "time_s": "s",
            "kp2d_px": "px",
            "kp3d_mm": "mm (camera frame)",
            "box": "px",
        },
        "model_name": HUMANOID_NAME,
        "subject": body.to_dict(),
        "motion": plan.motion,
        "motion_params": motion.params,
        "seed": spec.seed,
        "video_index": plan.index,
        "flags": {
            "second_person": False,
            "noise_sigma": spec.noise_sigma,
            "dropped_fraction": spec.dropped_fraction,
            "textured": True,
            "crf": spec.crf,
            "style": "humanoid",
        },
        "second_subject": None,
        "style": "humanoid",
        "room": renderer.room.params,
        "light_world": renderer.light_world.tolist(),
        "supersample": SUPERSAMPLE,
        "truth_convention": (
            "q holds the DOF values that drove the humanoid; angles follow the joint definitions in "
            "mocapflow/synth/humanoid.py (segment frames parallel to the world at the zero pose, long-segment "
            "mechanical axes along -Y); pelvis translations are the humanoid's hip-centre midpoint"
        ),
    }
    gt = GroundTruth(
        meta=meta,
        q=q,
        kp2d_px=uv.astype(np.float32),
        kp3d_mm=(lm_cam * 1000.0).astype(np.float32),
        visible=visible,
        box=box,
        blank=blank,
        second_present=np.zeros(n, bool),
        second_kp2d_px=np.full((n, j, 2), np.nan, np.float32),
        second_kp3d_mm=np.full((n, j, 3), np.nan, np.float32),
        second_visible=np.zeros((n, j), bool),
    )
    gt_path = out / f"{plan.stem}.gt.parquet"
    camera_path = out / f"{plan.stem}.camera.json"
    _write_atomic(gt_path, to_parquet_bytes(build_table(gt)))
    _write_atomic(camera_path, intr.to_json().encode())
    logger.info(
        "wrote %s (humanoid, %s, %d frames, %.1f s)",
        video.name,
        plan.motion,
        n,
        time.perf_counter() - t_start,
    )
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
        second_person=False,
        textured=True,
        noise_sigma=spec.noise_sigma,
        dropped_fraction=spec.dropped_fraction,
        flags=_flags(spec, False),
    )
