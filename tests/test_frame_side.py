"""``max_frame_side``: frames larger than the setting are downscaled as they are decoded; keypoints come back in the
original pixels and the models see the scaled intrinsics of the same camera (mocapflow/pose/pipeline.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mocapflow.camera import Intrinsics
from mocapflow.keypoints import read_arrays
from mocapflow.pose.pipeline import (
    PoseParams,
    detections_to_original,
    estimate_keypoints,
    scale_intrinsics,
)
from mocapflow.video import downscaled_size, iter_batches, probe
from models.runtime import FrameDetections


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((3840, 2160), 1920, (1920, 1080)),
        ((2160, 3840), 1920, (1080, 1920)),  # portrait
        ((1920, 1080), 1920, (1920, 1080)),  # at the limit: untouched
        ((4000, 3000), 1000, (1000, 750)),
        ((3840, 2160), None, (3840, 2160)),
    ],
)
def test_downscaled_size(size: tuple[int, int], max_side: int | None, expected: tuple[int, int]) -> None:
    assert downscaled_size(*size, max_side) == expected


def test_scaled_intrinsics_project_where_the_resized_image_has_the_point() -> None:
    big = Intrinsics(fx=3100.0, fy=3050.0, cx=1900.2, cy=1090.7, width=3840, height=2160)
    small = scale_intrinsics(big, 1920, 1080)
    assert scale_intrinsics(big, 3840, 2160) == big
    # the default camera of a 4K video, scaled, is the default camera of its 1080p version
    hd = scale_intrinsics(Intrinsics.from_fov(3840, 2160, 60), 1920, 1080)
    assert hd.to_dict() == pytest.approx(Intrinsics.from_fov(1920, 1080, 60).to_dict())
    rng = np.random.default_rng(0)
    pts = rng.uniform([-800, -500, 2000], [800, 500, 6000], (50, 3))

    def project(k: Intrinsics) -> np.ndarray:
        return np.stack([k.fx * pts[:, 0] / pts[:, 2] + k.cx, k.fy * pts[:, 1] / pts[:, 2] + k.cy], -1)

    on_small = project(small)
    n, joints = 1, 50
    dets = FrameDetections(
        boxes=np.array([[10.0, 20.0, 300.0, 400.0]], np.float32),
        scores=np.ones(n, np.float32),
        kp2d=on_small[None].astype(np.float32),
        kp3d=pts[None].astype(np.float32),
        conf=np.ones((n, joints), np.float32),
    )
    back = detections_to_original(dets, 0.5, 0.5)
    np.testing.assert_allclose(
        back.kp2d[0], project(big), atol=2e-3
    )  # the same ray, in the big image's pixels
    np.testing.assert_array_equal(back.kp3d, dets.kp3d)  # 3D (camera mm) is not touched
    np.testing.assert_allclose(back.boxes[0], [20.5, 40.5, 600.5, 800.5])


def test_key_params_name_the_limit_only_for_videos_it_downscales() -> None:
    params = PoseParams(max_frame_side=1920)
    assert "max_frame_side" not in params.key_params(Intrinsics.from_fov(1920, 1080, 55), "blazepose")
    assert params.key_params(Intrinsics.from_fov(3840, 2160, 55), "blazepose")["max_frame_side"] == 1920
    assert "max_frame_side" not in PoseParams(max_frame_side=None).key_params(
        Intrinsics.from_fov(3840, 2160, 55), "blazepose"
    )
    with pytest.raises(ValueError, match="max_frame_side"):
        PoseParams(max_frame_side=10)


@pytest.fixture(scope="module")
def hd_and_4k(tmp_path_factory: pytest.TempPathFactory, write_h264: Any) -> tuple[Path, Path]:
    """A synthetic marker video at 1920x1080 and the same frames upscaled to 3840x2160 (one pixel -> 2x2)."""
    from mocapflow.synth import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("frame_side")
    generate_cohort(
        out, CohortSpec(n_videos=1, seed=3, seconds=0.34, width=1920, height=1080, motions=("squat",))
    )
    (hd,) = sorted(out.glob("*.mp4"))
    frames = np.concatenate(list(iter_batches(str(hd), 16)))
    big = [np.repeat(np.repeat(f, 2, axis=0), 2, axis=1) for f in frames]
    uhd = out / "uhd.mp4"
    write_h264(uhd, big, probe(str(hd)).fps)
    return hd, uhd


def test_a_4k_video_gives_the_1080p_keypoints_in_its_own_pixels(
    hd_and_4k: tuple[Path, Path], markers_model_set: Any
) -> None:
    from models.runtime import ThreadConfig, open_estimator

    hd, uhd = hd_and_4k
    estimator = open_estimator(markers_model_set, ThreadConfig(threads=1))
    params = PoseParams(max_frame_side=1920, batch_size=8)
    k_hd = Intrinsics.from_fov(1920, 1080, 55.0)
    k_4k = Intrinsics.from_fov(3840, 2160, 55.0)
    meta_hd, a_hd = read_arrays(estimate_keypoints(str(hd), estimator, k_hd, params))
    meta_4k, a_4k = read_arrays(estimate_keypoints(str(uhd), estimator, k_4k, params))

    assert (meta_4k.width, meta_4k.height) == (
        3840,
        2160,
    ) and meta_4k.intrinsics == k_4k  # the video's own camera
    assert meta_4k.params["max_frame_side"] == 1920 and "max_frame_side" not in meta_hd.params
    # the same markers found: the 4K file is its own H.264 encoding, so a marker at the detection threshold may flip
    seen_hd, seen_4k = a_hd["conf"] > 0, a_4k["conf"] > 0
    assert seen_hd.mean() > 0.5 and (seen_hd == seen_4k).mean() > 0.97, (seen_hd == seen_4k).mean()
    seen = seen_hd & seen_4k
    expected = (a_hd["kp2d_px"] + 0.5) * 2.0 - 0.5  # the 1080p keypoints scaled to 4K pixels
    err = np.linalg.norm(a_4k["kp2d_px"] - expected, axis=-1)[seen]
    assert np.median(err) < 0.5 and err.max() < 3.0, (np.median(err), err.max())
    # same camera, same 3D: the markers model's depth comes from marker radii, which move with sub-pixel
    # differences (the 4K file's chroma is subsampled at its own size), so 3D agrees to about a per cent of depth
    d3 = np.linalg.norm(a_4k["kp3d_mm"] - a_hd["kp3d_mm"], axis=-1)[seen] / a_hd["kp3d_mm"][..., 2][seen]
    assert np.median(d3) < 0.01 and d3.max() < 0.05, (np.median(d3), d3.max())
    assert (
        np.nanmax(a_4k["kp2d_px"][..., 0]) > 1920 or np.nanmax(a_4k["kp2d_px"][..., 1]) > 1080
    )  # really 4K pixels
    width_4k = float(np.nanmedian(a_4k["box"][:, 2] - a_4k["box"][:, 0]))
    assert math.isclose(
        width_4k, 2 * float(np.nanmedian(a_hd["box"][:, 2] - a_hd["box"][:, 0])), rel_tol=0.02
    )
