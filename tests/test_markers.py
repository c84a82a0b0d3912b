"""The markers model set: pure pre/post functions, the built detector and backbone, the estimator on a real
synthetic H.264 video (ground truth from mocapflow.synth), and the build's manifest and determinism."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mocapflow.camera import Extrinsics, Intrinsics, image_radius, project
from mocapflow.synth.palette import (
    BACKGROUND_GREY,
    DISC_RADIUS_M,
    MARKER_COLORS,
    MARKER_SITES,
    marker_edges,
)
from mocapflow.synth.render import background, centre_visible, draw_discs, to_uint8
from models.markers import prepost

# ---------------------------------------------------------------------------------------------------------------
# helpers: people made of marker discs, drawn with the synth renderer (raw frames, no codec)


def _zero_pose_sites() -> np.ndarray:
    """Marker sites [J, 3] (m, world, Y up) of the default body model standing in the zero pose at the origin."""
    import jax.numpy as jnp

    from models.body import default_body_model, forward_kinematics, standing_pelvis_height

    model = default_body_model()
    idx = model.site_index(list(MARKER_SITES))
    sites = np.asarray(forward_kinematics(model, jnp.zeros(model.n_dofs)))[idx]
    sites[:, 1] += standing_pelvis_height(model)
    return sites


@pytest.fixture(scope="module")
def zero_pose() -> np.ndarray:
    return _zero_pose_sites()


def _place(sites: np.ndarray, x: float, z: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return sites @ rot.T + np.array([x, 0.0, z])


def _scene(
    people_world: list[np.ndarray], seed: int = 0
) -> tuple[np.ndarray, Intrinsics, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 640x480 frame of the people's discs -> (frame, K, uv [P, J, 2], cam mm [P, J, 3], radius px [P, J],
    visible [P, J])."""
    k = Intrinsics.from_fov(640, 480, 55.0)
    e = Extrinsics.look_at([4.0, 1.1, 0.0], [0.0, 0.9, 0.0])
    cam = np.stack([e.apply(p) for p in people_world])  # [P, J, 3] m
    uv = project(cam, k)
    r = image_radius(DISC_RADIUS_M, cam[..., 2], k)
    img = background(640, 480, BACKGROUND_GREY)

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, *a.shape[2:])

    colors = np.tile(MARKER_COLORS.astype(np.float32), (len(people_world), 1))
    draw_discs(img, flat(uv), flat(r), flat(cam[..., 2]), colors)
    vis = centre_visible(flat(uv), flat(r), flat(cam[..., 2]), 640, 480).reshape(r.shape)
    frame = to_uint8(img, 2.0, np.random.default_rng(seed))
    return frame, k, uv, cam * 1000.0, r, vis


# ---------------------------------------------------------------------------------------------------------------
# pure pre/post-processing


def test_crop_affine_maps_box_into_crop_centre_with_margin() -> None:
    boxes = np.array([[100.0, 50.0, 180.0, 350.0], [10.0, 20.0, 30.0, 25.0]])
    affine, scale = prepost.crop_affines(boxes, size=256, margin=0.1)
    # box 0: longer side 300 px, plus 10 % on each side -> 360 px mapped to 256
    assert scale[0] == pytest.approx(256 / 360)
    # box 1 is smaller than the minimum crop side
    assert scale[1] == pytest.approx(256 / prepost.MIN_BOX_SIDE_PX)
    centre = prepost.apply_affines(affine, np.array([[[140.0, 200.0]], [[20.0, 22.5]]]))
    np.testing.assert_allclose(centre[:, 0], [[127.5, 127.5], [127.5, 127.5]], atol=1e-9)
    # the box's top edge lands at the margin: 0.1 * 300 px * scale
    top = prepost.apply_affines(affine[:1], np.array([[[140.0, 50.0]]]))[0, 0, 1]
    assert top == pytest.approx(127.5 - 150 * 256 / 360)


def test_affine_inverse_round_trip() -> None:
    rng = np.random.default_rng(1)
    boxes = np.sort(rng.uniform(0, 600, (5, 2, 2)), axis=1).reshape(5, 4)[:, [0, 2, 1, 3]]
    affine, _ = prepost.crop_affines(boxes)
    pts = rng.uniform(-50, 700, (5, 7, 2))
    back = prepost.apply_affines(prepost.invert_affines(affine), prepost.apply_affines(affine, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_warp_crops_puts_a_spot_where_the_affine_says() -> None:
    """A smooth spot at a sub-pixel position: its intensity centroid in the crop equals the affine image."""
    h, w = 240, 320
    spot = np.array([201.3, 97.6])
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 200.0 * np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * 3.0**2))
    frame = np.repeat(np.clip(blob, 0, 255).astype(np.float32)[None, :, :, None], 3, axis=3)
    frames = np.rint(frame).astype(np.uint8)
    box = np.array([[150.0, 40.0, 260.0, 170.0]])
    affine, scale = prepost.crop_affines(box, size=128, margin=0.1)
    crop = prepost.warp_crops(frames, np.array([0]), affine, size=128)[0, :, :, 0]
    cy, cx = np.mgrid[0:128, 0:128]
    centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
    expected = scale[0] * (spot - 0.5 * (box[0, :2] + box[0, 2:])) + 63.5
    np.testing.assert_allclose(centroid, expected, atol=0.05)


def test_backproject_inverts_the_camera_projection() -> None:
    k = Intrinsics(fx=610.0, fy=605.0, cx=321.5, cy=238.0, width=640, height=480)
    rng = np.random.default_rng(2)
    pts = np.column_stack(
        [rng.uniform(-800, 800, 20), rng.uniform(-900, 900, 20), rng.uniform(2000, 7000, 20)]
    )
    back = prepost.backproject(project(pts, k), pts[:, 2], k)
    np.testing.assert_allclose(back, pts, rtol=1e-12, atol=1e-9)


def test_postprocess_maps_back_and_marks_missing_as_nan() -> None:
    k = Intrinsics.from_fov(640, 480, 55.0)
    box = np.array([[200.0, 100.0, 300.0, 400.0]])
    affine, _ = prepost.crop_affines(box)
    uv_img = np.array([[[250.0, 200.0], [260.0, 380.0], [0.0, 0.0]]])
    kp_crop = prepost.apply_affines(affine, uv_img)
    depth = np.array([[3000.0, 4000.0, 5000.0]])
    conf = np.array([[0.9, 0.4, 0.0]])
    uv, xyz, c = prepost.postprocess(kp_crop, depth, conf, affine, k)
    np.testing.assert_allclose(uv[0, :2], uv_img[0, :2], atol=1e-3)
    np.testing.assert_allclose(
        xyz[0, 0], [(250 - k.cx) * 3000 / k.fx, (200 - k.cy) * 3000 / k.fy, 3000], rtol=1e-5
    )
    assert np.isnan(uv[0, 2]).all() and np.isnan(xyz[0, 2]).all() and c[0, 2] == 0.0
    np.testing.assert_allclose(c[0, :2], [0.9, 0.4])


def test_select_detections_drops_padding_and_weak_boxes() -> None:
    boxes = np.arange(16, dtype=np.float32).reshape(4, 4)
    b, s = prepost.select_detections(boxes, np.array([0.9, 0.05, 0.5, 0.0]), min_score=0.1)
    np.testing.assert_allclose(s, [0.9, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(b, boxes[[0, 2]])


# ---------------------------------------------------------------------------------------------------------------
# the built model set


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory):
    from models.markers.build import build

    return build(tmp_path_factory.mktemp("modelsets") / "markers", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def estimator(model_set):
    from models.runtime import ThreadConfig, open_estimator

    return open_estimator(model_set, ThreadConfig(threads=2))


def test_manifest_describes_the_markers_set(model_set) -> None:
    m = model_set.manifest
    assert m.kind == "markers" and m.has_3d
    assert m.joint_names == list(MARKER_SITES)
    assert [tuple(e) for e in m.joint_edges] == marker_edges()
    assert m.input_resolution == [256, 256]
    assert m.extra["disc_radius_m"] == DISC_RADIUS_M
    assert (model_set.root / "detector" / "saved_model.pb").is_file()
    assert (model_set.root / "backbone.onnx").is_file()
    assert len(model_set.id) == 16


def test_backbone_is_an_opset17_onnx_graph(model_set) -> None:
    import onnx

    model = onnx.load(str(model_set.path("backbone")))
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    assert [i.name for i in model.graph.input] == ["crops", "crop_scale", "focal_crop_px", "box_crop"]
    onnx.checker.check_model(model)


def test_estimator_reports_its_threads(estimator) -> None:
    info = estimator.session_threads()
    assert info["onnxruntime"]["intra_op_num_threads"] == 2
    assert info["onnxruntime"]["inter_op_num_threads"] == 1
    assert set(info["tensorflow"]) == {"intra_op_parallelism_threads", "inter_op_parallelism_threads"}


def _inside(box: np.ndarray, uv: np.ndarray, r: np.ndarray) -> bool:
    return bool(
        (uv[:, 0] - r >= box[0] - 1).all()
        and (uv[:, 0] + r <= box[2] + 1).all()
        and (uv[:, 1] - r >= box[1] - 1).all()
        and (uv[:, 1] + r <= box[3] + 1).all()
    )


def test_detector_finds_one_person(estimator, zero_pose) -> None:
    frame, _, uv, _, r, _ = _scene([_place(zero_pose, 0.0, 0.0, 0.4)])
    ((boxes, scores),) = estimator.detect(frame[None])
    assert len(boxes) == 1 and scores[0] > 0.9
    assert _inside(boxes[0], uv[0], r[0])


def test_detector_finds_two_people(estimator, zero_pose) -> None:
    people = [_place(zero_pose, 0.0, -0.9, 0.3), _place(zero_pose, 0.5, 0.9, -0.2)]
    frame, _, uv, _, r, _ = _scene(people, seed=1)
    ((boxes, scores),) = estimator.detect(frame[None])
    assert len(boxes) == 2 and (scores > 0.9).all()
    for p in range(2):  # each person's discs lie inside exactly one box
        inside = [_inside(b, uv[p], r[p]) for b in boxes]
        assert sum(inside) == 1


def test_detector_finds_nobody_on_an_empty_frame(estimator) -> None:
    frame = to_uint8(background(640, 480, BACKGROUND_GREY), 3.0, np.random.default_rng(0))
    ((boxes, scores),) = estimator.detect(frame[None])
    assert len(boxes) == 0 and len(scores) == 0


def test_estimator_on_a_raw_frame(estimator, zero_pose) -> None:
    """Uncompressed discs: centres within a fraction of a pixel, depths within 2 %."""
    frame, k, uv, mm, _, vis = _scene([_place(zero_pose, 0.0, 0.0, 0.4)], seed=3)
    (det,) = estimator(frame[None], k)
    assert det.n == 1
    ok = vis[0] & (det.conf[0] > 0.5)
    assert ok.sum() >= 0.8 * vis[0].sum()
    err2 = np.linalg.norm(det.kp2d[0][ok] - uv[0][ok], axis=1)
    assert np.median(err2) < 0.3
    dz = np.abs(det.kp3d[0][ok, 2] - mm[0][ok, 2]) / mm[0][ok, 2]
    assert np.median(dz) < 0.02


def test_estimator_rejects_intrinsics_of_another_size(estimator) -> None:
    frames = np.zeros((1, 480, 640, 3), np.uint8)
    with pytest.raises(ValueError, match="640x480"):
        estimator(frames, Intrinsics.from_fov(1280, 720, 55.0))


# ---------------------------------------------------------------------------------------------------------------
# accuracy on a real synthetic H.264 video with ground truth


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mocapflow.synth.cohort import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    (entry,) = generate_cohort(out, CohortSpec(n_videos=1, seed=11, seconds=1.5, motions=("squat",)))
    return entry.video


def test_estimator_accuracy_on_synthetic_h264_video(estimator, synth_video: Path) -> None:
    """Over the visible markers the estimator is confident about (conf >= 0.5; they must be >= 85 % of the visible
    ones): median 2D error <= 1 px, median root-relative 3D error <= 60 mm (both sets centred on their mean
    keypoint per frame); covered markers get low confidence."""
    from mocapflow.synth.groundtruth import read_ground_truth
    from mocapflow.video import iter_batches

    gt = read_ground_truth(synth_video.with_name(synth_video.name.replace(".mp4", ".gt.parquet")))
    k = gt.intrinsics
    dets = [d for batch in iter_batches(str(synth_video), 16) for d in estimator(batch, k)]
    assert len(dets) == len(gt.visible)
    err2, err3, dz, conf_occ, n_vis, n_used = [], [], [], [], 0, 0
    for f, det in enumerate(dets):
        assert det.n == 1, f"frame {f}: {det.n} people found, expected 1"
        vis = gt.visible[f]
        used = vis & (det.conf[0] >= 0.5)
        n_vis += int(vis.sum())
        n_used += int(used.sum())
        err2 += list(np.linalg.norm(det.kp2d[0][used] - gt.kp2d_px[f][used], axis=1))
        p, g = det.kp3d[0][used].astype(np.float64), gt.kp3d_mm[f][used].astype(np.float64)
        err3 += list(np.linalg.norm((p - p.mean(axis=0)) - (g - g.mean(axis=0)), axis=1))
        dz += list(p[:, 2] - g[:, 2])
        in_image = (gt.kp2d_px[f] >= 0).all(axis=1) & (gt.kp2d_px[f] < [k.width, k.height]).all(axis=1)
        conf_occ += list(det.conf[0][~vis & in_image])
    assert n_used >= 0.85 * n_vis, f"confident on {n_used} of {n_vis} visible markers"
    assert np.median(err2) <= 1.0
    assert np.median(err3) <= 60.0
    assert np.median(np.abs(dz)) <= 150.0  # absolute depth: the disc radius alone fixes the scale
    assert conf_occ, "the video should have covered markers"
    assert np.mean(np.asarray(conf_occ) < 0.5) >= 0.8


# ---------------------------------------------------------------------------------------------------------------
# build determinism


def test_backbone_graph_is_deterministic() -> None:
    from models.markers.backbone import BackboneConfig, build_backbone

    a = build_backbone(MARKER_COLORS, 30.0, BackboneConfig()).SerializeToString(deterministic=True)
    b = build_backbone(MARKER_COLORS, 30.0, BackboneConfig()).SerializeToString(deterministic=True)
    assert a == b


@pytest.mark.slow
def test_building_twice_gives_the_same_model_set_id(model_set, tmp_path: Path) -> None:
    from models.markers.build import build

    again = build(tmp_path / "markers", tmp_path / "cache")
    assert again.id == model_set.id
