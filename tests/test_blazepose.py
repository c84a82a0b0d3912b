"""BlazePose model set: pure pre/post-processing (no model), then the real pretrained weights on a real photo."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from models.blazepose import JOINT_EDGES, JOINT_NAMES
from models.blazepose.detection import (
    AnchorOptions,
    Detections,
    concat,
    decode_detections,
    inside_region,
    iou,
    ssd_anchors,
    weighted_nms,
)
from models.blazepose.geometry import (
    detection_regions,
    image_to_input_units,
    input_units_to_image,
    letterbox_matrix,
    roi_from_alignment,
    roi_matrix,
    sample_affine,
    square_matrix,
    tile_starts,
    warp_affine,
)
from models.blazepose.landmarks import (
    alignment_boxes,
    camera_translation,
    decode_landmarks,
    decode_world,
    dedupe_people,
    landmark_boxes,
    landmarks_to_image,
    roi_from_landmarks,
)
from models.modelset import ModelSet

if TYPE_CHECKING:
    from models.blazepose.runtime import BlazePoseEstimator


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- anchors ---------------------------------------------------------------------------------------------------


def test_anchor_count_and_layout_for_the_pose_detector() -> None:
    a = ssd_anchors()
    # strides 8, 16, 32, 32, 32 on 224: maps 28, 14, 7; 2 anchors per layer (ratio 1 + interpolated scale);
    # the three stride-32 layers share the 7x7 map
    assert a.shape == (28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6, 4) == (2254, 4)
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(a[1], [0.5 / 28, 0.5 / 28, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(a[2], [1.5 / 28, 0.5 / 28, 1, 1], rtol=1e-6)  # x varies fastest
    np.testing.assert_allclose(a[28 * 2], [0.5 / 28, 1.5 / 28, 1, 1], rtol=1e-6)
    first_16 = 28 * 28 * 2
    np.testing.assert_allclose(a[first_16], [0.5 / 14, 0.5 / 14, 1, 1], rtol=1e-6)
    last = a[-6:]
    np.testing.assert_allclose(last[:, :2], np.full((6, 2), 6.5 / 7), rtol=1e-6)


def test_anchor_sizes_when_not_fixed() -> None:
    opts = AnchorOptions(fixed_anchor_size=False)
    a = ssd_anchors(opts)
    s = [0.1484375 + (0.75 - 0.1484375) * i / 4 for i in range(5)]
    np.testing.assert_allclose(a[0, 2:], [s[0], s[0]], rtol=1e-6)
    np.testing.assert_allclose(a[1, 2:], [math.sqrt(s[0] * s[1])] * 2, rtol=1e-6)
    # last cell of the shared stride-32 map: layers 2, 3, 4, each with its interpolated anchor (1.0 after the last)
    expected = [s[2], math.sqrt(s[2] * s[3]), s[3], math.sqrt(s[3] * s[4]), s[4], math.sqrt(s[4] * 1.0)]
    np.testing.assert_allclose(a[-6:, 2], expected, rtol=1e-6)


# -- decoding and NMS ------------------------------------------------------------------------------------------


def test_decode_synthetic_raw_output() -> None:
    anchors = ssd_anchors()
    raw = np.zeros((anchors.shape[0], 12), np.float32)
    logits = np.full(anchors.shape[0], -8.0, np.float32)
    i = 1000
    ax, ay = anchors[i, :2]
    # (x, y, w, h) offsets in 224 px, then 4 keypoints, all relative to the anchor centre
    raw[i] = [22.4, -11.2, 44.8, 67.2, 0.0, 0.0, 11.2, -22.4, 0, 0, 0, 0]
    logits[i] = 2.0
    logits[i + 1] = 0.1  # sigmoid 0.525: above 0.5 too
    d = decode_detections(raw, logits[:, None], anchors, min_score=0.5)
    assert d.n == 2
    j = int(np.argmax(d.scores))
    assert d.scores[j] == pytest.approx(_sigmoid(2.0), rel=1e-6)
    cx, cy, w, h = ax + 0.1, ay - 0.05, 0.2, 0.3
    np.testing.assert_allclose(d.boxes[j], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)
    np.testing.assert_allclose(d.keypoints[j, 0], [ax, ay], atol=1e-6)
    np.testing.assert_allclose(d.keypoints[j, 1], [ax + 0.05, ay - 0.1], atol=1e-6)
    assert decode_detections(raw, logits, anchors, min_score=0.9).n == 0


def test_decode_rejects_a_wrong_layout() -> None:
    anchors = ssd_anchors()
    with pytest.raises(ValueError, match="values per anchor"):
        decode_detections(np.zeros((anchors.shape[0], 10)), np.zeros(anchors.shape[0]), anchors, 0.5)


def test_iou() -> None:
    boxes = np.array([[1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 2, 2]], np.float32)
    np.testing.assert_allclose(iou(np.array([0, 0, 2, 2], np.float32), boxes), [2 / 6, 0, 1], atol=1e-6)


def test_weighted_nms_merges_overlaps_with_score_weights() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 4, 2), np.float32)
    kps[0, 0] = [5, 5]
    kps[1, 0] = [8, 5]
    kps[2, 0] = [55, 55]
    scores = np.array([0.6, 0.9, 0.7], np.float32)  # IoU(0, 1) = 90 / 110 > 0.3
    out = weighted_nms(Detections(boxes, kps, scores), iou_threshold=0.3)
    assert out.n == 2
    np.testing.assert_allclose(out.scores, [0.9, 0.7])
    w0, w1 = 0.6 / 1.5, 0.9 / 1.5
    np.testing.assert_allclose(out.boxes[0], [w1 * 1, 0, w0 * 10 + w1 * 11, 10], atol=1e-5)
    np.testing.assert_allclose(out.keypoints[0, 0], [w0 * 5 + w1 * 8, 5], atol=1e-5)
    np.testing.assert_allclose(out.boxes[1], boxes[2])
    # a stricter threshold keeps all three
    assert weighted_nms(Detections(boxes, kps, scores), iou_threshold=0.9).n == 3


# -- geometry --------------------------------------------------------------------------------------------------


def test_roi_from_alignment_rotation_and_size() -> None:
    centre = np.array([[100.0, 200.0], [100.0, 200.0]])
    scale_pt = np.array([[100.0, 140.0], [160.0, 200.0]])  # head straight up; head to the image's right
    rois = roi_from_alignment(centre, scale_pt, expand=1.25)
    np.testing.assert_allclose(rois[:, :2], centre)
    np.testing.assert_allclose(rois[:, 2], [150.0, 150.0])
    np.testing.assert_allclose(rois[:, 3], [0.0, math.pi / 2], atol=1e-12)
    # in both crops the scale point lands straight above the centre: 60 px * 256 / 150 above the middle
    for roi, p in zip(rois, scale_pt, strict=True):
        q = image_to_input_units(roi_matrix(roi, 256), p)
        np.testing.assert_allclose(q, [128.0, 128.0 - 60.0 * 256 / 150], atol=1e-9)


def test_crop_and_inverse_round_trip() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        roi = np.array([rng.uniform(0, 600), rng.uniform(0, 400), rng.uniform(50, 900), rng.uniform(-3, 3)])
        m = roi_matrix(roi, 256)
        pts = rng.uniform(-50, 300, (20, 2))
        np.testing.assert_allclose(image_to_input_units(m, input_units_to_image(m, pts)), pts, atol=1e-9)
        # the crop centre is the ROI centre
        np.testing.assert_allclose(input_units_to_image(m, [128.0, 128.0]), roi[:2], atol=1e-9)


def test_crop_pixels_follow_the_mapping() -> None:
    """A bright blob in the image appears in the rotated crop where the mapping says, and maps back."""
    img = np.zeros((240, 320, 3), np.uint8)
    yy, xx = np.mgrid[0:240, 0:320]
    blob = (230.0, 60.0)
    img[..., 1] = (255 * np.exp(-((xx - blob[0]) ** 2 + (yy - blob[1]) ** 2) / (2 * 4.0**2))).astype(np.uint8)
    roi = np.array([160.0, 120.0, 256.0, math.radians(30)])  # scale 1: crop px = image px
    m = roi_matrix(roi, 256)
    crop = sample_affine(img, m, 256, border="zero")[..., 1]
    w = np.clip(crop - 20, 0, None)
    ci, cj = np.mgrid[0:256, 0:256]
    centroid = np.array([(w * cj).sum() / w.sum(), (w * ci).sum() / w.sum()])  # crop px (x, y)
    np.testing.assert_allclose(input_units_to_image(m, centroid + 0.5), blob, atol=0.3)
    # rotation by hand: image offset (70, -60) from the centre, rotated back by -30 degrees
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = np.array([c * 70 + s * -60, -s * 70 + c * -60]) + 127.5
    np.testing.assert_allclose(centroid, expected, atol=0.3)


def test_letterbox_mapping_and_padding() -> None:
    m = letterbox_matrix(640, 480, 224)
    k = 224 / 640
    # image edges (-0.5 px) map to the tensor's left edge and to the top of the 168-px tall band
    np.testing.assert_allclose(image_to_input_units(m, [-0.5, -0.5]), [0.0, (224 - 480 * k) / 2], atol=1e-9)
    np.testing.assert_allclose(image_to_input_units(m, [639.5, 479.5]), [224.0, 224 - 28.0], atol=1e-9)
    img = np.full((480, 640, 3), 200, np.uint8)
    x = sample_affine(img, m, 224, border="zero")
    assert np.all(x[:27] == 0) and np.all(x[-27:] == 0)  # padding rows
    np.testing.assert_allclose(x[29:-29], 200.0, atol=1e-3)


def test_sample_affine_identity_shift_and_borders() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(sample_affine(img, ident, 8), img.astype(np.float32), atol=1e-4)
    half = np.array([[1.0, 0, 0.5], [0, 1.0, 0]])
    got = sample_affine(img, half, 8)
    np.testing.assert_allclose(got[:, :7], (img[:, :7].astype(float) + img[:, 1:]) / 2, atol=1e-3)
    np.testing.assert_allclose(got[:, 7], img[:, 7], atol=1e-3)  # replicate beyond the right edge
    far = np.array([[1.0, 0, 100.0], [0, 1.0, 0]])
    assert np.all(sample_affine(img, far, 8, border="zero") == 0)
    np.testing.assert_allclose(sample_affine(img, far, 8)[:, 0], img[:, 7], atol=1e-3)
    with pytest.raises(ValueError, match="border"):
        sample_affine(img, ident, 8, border="reflect")


def test_warp_affine_matches_the_numpy_sampler() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    img = np.asarray(
        sample_affine(img, np.array([[0.25, 0, 0], [0, 0.25, 0]]), 120)[:, :, :], np.uint8
    )  # smooth
    img = np.ascontiguousarray(np.concatenate([img, img[:, :40]], axis=1))
    for roi, border in (([80.0, 60.0, 150.0, 0.4], "replicate"), ([20.0, 100.0, 90.0, -2.0], "zero")):
        m = roi_matrix(np.array(roi), 64)
        fast = warp_affine(img, m, 64, border=border)
        assert fast.dtype == np.uint8 and fast.shape == (64, 64, 3)
        # OpenCV interpolates in 1/32 px fixed point and rounds to uint8
        np.testing.assert_allclose(fast, sample_affine(img, m, 64, border=border), atol=2.0)
    with pytest.raises(ValueError, match="border"):
        warp_affine(img, m, 8, border="reflect")


def test_square_region_matrix_is_the_letterbox_for_the_centred_square() -> None:
    np.testing.assert_allclose(
        square_matrix(0.0, -96.0, 768.0, 224), letterbox_matrix(768, 576, 224), atol=1e-12
    )
    m = square_matrix(100.0, 50.0, 448.0, 224)  # 2 image px per input px
    # the input's edges land on the region's edges (pixel-centre convention: first pixel's left edge at x0 - 0.5)
    np.testing.assert_allclose(
        input_units_to_image(m, [[0.0, 0.0], [224.0, 224.0]]), [[99.5, 49.5], [547.5, 497.5]]
    )


def test_tile_starts_cover_with_the_overlap() -> None:
    s = tile_starts(768, 256, 64)
    assert s.tolist() == pytest.approx([0, 512 / 3, 1024 / 3, 512])  # 4 tiles: 3 would overlap by < 64 px
    assert np.all(np.diff(s) <= 256 - 64)
    assert tile_starts(576, 256, 64).tolist() == [0, 160, 320]
    assert tile_starts(200, 256, 64).tolist() == [-28.0]  # one tile, centred, bigger than the frame
    assert tile_starts(300, 256, 64).tolist() == [0, 44]
    with pytest.raises(ValueError, match="larger than its overlap"):
        tile_starts(768, 64, 64)


def test_detection_regions_pyramid() -> None:
    r = detection_regions(768, 576, tile=256, overlap=0.25)
    np.testing.assert_allclose(r[0], [0, -96, 768])  # the whole frame, letterboxed
    sides = r[1:, 2]
    assert (sides == 256).sum() == 12 and (sides == 512).sum() == 4 and r.shape == (17, 3)
    # every tile lies in the frame, and every box up to the overlap (64 px at the finest level) fits in some tile
    t = r[1:]
    assert np.all(t[:, 0] >= 0) and np.all(t[:, 0] + t[:, 2] <= 768) and np.all(t[:, 1] + t[:, 2] <= 576)
    fine = t[t[:, 2] == 256]
    rng = np.random.default_rng(0)
    for x, y in rng.uniform([0, 0], [768 - 64, 576 - 64], (200, 2)):
        inside = (
            (fine[:, 0] <= x)
            & (fine[:, 1] <= y)
            & (x + 64 <= fine[:, 0] + 256)
            & (y + 64 <= fine[:, 1] + 256)
        )
        assert inside.any()
    assert detection_regions(200, 150, tile=256).shape == (1, 3)  # a small frame: whole frame only
    with pytest.raises(ValueError, match="overlap"):
        detection_regions(768, 576, tile=256, overlap=1.0)


# -- acquisition and tracking helpers --------------------------------------------------------------------------


def _dets(centres: list[tuple[float, float]], radii: list[float], scores: list[float]) -> Detections:
    c = np.asarray(centres, np.float32).reshape(-1, 2)
    kp = np.zeros((len(c), 4, 2), np.float32)
    kp[:, 0] = c
    kp[:, 1] = c - np.stack([np.zeros(len(c)), np.asarray(radii)], 1)  # scale point straight above
    boxes = np.concatenate([c - 5, c + 5], 1).astype(np.float32)
    return Detections(boxes, kp, np.asarray(scores, np.float32))


def test_inside_region_drops_people_cut_by_the_tile() -> None:
    d = _dets([(100, 100), (232, 100), (100, 100), (260, 100)], [40, 40, 200, 40], [0.9, 0.8, 0.7, 0.6])
    region = np.array([0.0, 0.0, 256.0])  # pixels 0..255, right edge at 255.5
    # 1: fully inside; 2: sticks out by 16.5 px < 0.25 x 80; 3: a body of 400 px extrapolated from a 256 px tile;
    # 4: sticks out by 44.5 px
    assert inside_region(d, region, tolerance=0.25).tolist() == [True, True, False, False]
    assert inside_region(d, region, tolerance=0.0).tolist() == [True, False, False, False]
    both = concat([d, d.take(np.array([0]))])
    assert both.n == 5 and concat([]).n == 0


def test_alignment_boxes_and_dedupe() -> None:
    boxes = alignment_boxes(np.array([[100.0, 100.0], [0, 0]]), np.array([[100.0, 60.0], [3.0, 4.0]]))
    np.testing.assert_allclose(boxes, [[60, 60, 140, 140], [-5, -5, 5, 5]])
    b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [0, 0, 10, 10.5]], np.float64)
    # 0, 1 and 3 are one person (IoU 0.82, 0.95); 1 has the best score and stays
    assert dedupe_people(b, np.array([0.6, 0.9, 0.7, 0.5]), max_iou=0.6).tolist() == [1, 2]
    assert dedupe_people(b, np.array([0.6, 0.9, 0.7, 0.5]), max_iou=0.99).tolist() == [0, 1, 2, 3]
    assert dedupe_people(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_roi_from_landmarks_follows_the_auxiliary_points() -> None:
    """MediaPipe's next-frame ROI: centre = point 33, side = 2 x |34 - 33| x 1.25, 33 -> 34 straight up in the crop."""
    rng = np.random.default_rng(4)
    raw = np.zeros((1, 39, 5))
    raw[0, :, :2] = rng.uniform(60, 200, (39, 2))
    raw[0, 33, :2] = [128.0, 140.0]
    raw[0, 34, :2] = [128.0 + 60.0, 140.0]  # scale point to the crop's right: the person lies on their side
    roi = np.array([[300.0, 200.0, 512.0, 0.3]])  # 2 image px per crop px, rotated
    pts = landmarks_to_image(raw.reshape(1, -1), roi)
    np.testing.assert_allclose(pts[0, :33], decode_landmarks(raw.reshape(1, -1), roi)[0][0], atol=1e-3)
    nxt = roi_from_landmarks(pts)[0]
    np.testing.assert_allclose(nxt[:2], pts[0, 33], atol=1e-9)
    assert nxt[2] == pytest.approx(2 * 120.0 * 1.25)  # 60 crop px = 120 image px
    # in the next crop, 33 sits in the middle and 34 straight above it
    m = roi_matrix(nxt, 256)
    np.testing.assert_allclose(image_to_input_units(m, pts[0, 33]), [128, 128], atol=1e-9)
    np.testing.assert_allclose(image_to_input_units(m, pts[0, 34]), [128, 128 - 256 / 2.5], atol=1e-9)


def test_local_regions_centre_on_the_lost_roi() -> None:
    from models.blazepose.runtime import local_regions

    r = local_regions(np.array([[300.0, 200.0, 100.0, 1.0]]), scale=2.0)
    np.testing.assert_allclose(r, [[200.5, 100.5, 200.0]])
    m = square_matrix(*r[0], 224)
    np.testing.assert_allclose(input_units_to_image(m, [112.0, 112.0]), [300.0, 200.0], atol=1e-9)


# -- landmarks -------------------------------------------------------------------------------------------------


def test_decode_landmarks_to_image_px_and_conf() -> None:
    raw = np.zeros((1, 39, 5), np.float32)
    raw[0, :, 0] = np.linspace(0, 256, 39)
    raw[0, :, 1] = 64.0
    raw[0, :, 3] = 2.0  # visibility logit
    raw[0, :, 4] = -1.0  # presence logit
    roi = np.array([[300.0, 200.0, 512.0, 0.0]])  # 2 image px per crop unit, no rotation
    kp2d, conf = decode_landmarks(raw.reshape(1, -1), roi)
    assert kp2d.shape == (1, 33, 2) and conf.shape == (1, 33)
    np.testing.assert_allclose(kp2d[0, :, 0], 300 + (raw[0, :33, 0] - 128) * 2, atol=1e-3)
    np.testing.assert_allclose(kp2d[0, :, 1], 200 + (64 - 128) * 2, atol=1e-3)
    np.testing.assert_allclose(conf, _sigmoid(2.0) * _sigmoid(-1.0), rtol=1e-5)


def test_decode_world_rotates_in_the_image_plane() -> None:
    raw = np.zeros((2, 39, 3), np.float32)
    raw[:, 11] = [0.2, -0.5, 0.1]
    world = decode_world(raw.reshape(2, -1), np.array([0.0, math.pi / 2]))
    np.testing.assert_allclose(world[0, 11], [0.2, -0.5, 0.1], atol=1e-6)
    np.testing.assert_allclose(world[1, 11], [0.5, 0.2, 0.1], atol=1e-6)  # x' = -y, y' = x


def test_camera_translation_recovers_a_known_placement() -> None:
    rng = np.random.default_rng(3)
    world = rng.normal(0, 0.3, (33, 3))
    world -= world.mean(axis=0)
    t_true = np.array([0.25, -0.1, 3.2])
    fx, fy, cx, cy = 900.0, 910.0, 639.5, 359.5
    cam = world + t_true
    kp2d = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], axis=-1)
    conf = rng.uniform(0.3, 1.0, 33)
    np.testing.assert_allclose(camera_translation(world, kp2d, conf, fx, fy, cx, cy), t_true, atol=1e-9)
    # twice the pixel size -> about half the depth
    t_near = camera_translation(world, (kp2d - [cx, cy]) * 2 + [cx, cy], conf, fx, fy, cx, cy)
    assert 1.4 < t_near[2] < 1.8
    assert np.all(np.isnan(camera_translation(world, kp2d, np.zeros(33), fx, fy, cx, cy)))


def test_landmark_boxes_ignore_unconfident_points() -> None:
    kp = np.array([[[10, 20], [30, 5], [500, 900]], [[1, 1], [2, 3], [4, 2]]], np.float32)
    conf = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]], np.float32)
    np.testing.assert_allclose(landmark_boxes(kp, conf), [[10, 5, 30, 20], [1, 1, 4, 3]])


def test_skeleton() -> None:
    assert len(JOINT_NAMES) == 33 and JOINT_NAMES[0] == "nose" and JOINT_NAMES[-1] == "right_foot_index"
    assert len(set(JOINT_EDGES)) == len(JOINT_EDGES) == 35

    def side(i: int) -> str:
        return "left" if "left" in JOINT_NAMES[i] else "right" if "right" in JOINT_NAMES[i] else "centre"

    # only the mouth, shoulder and hip edges join the two sides
    crossing = {e for e in JOINT_EDGES if {side(e[0]), side(e[1])} == {"left", "right"}}
    assert crossing == {(9, 10), (11, 12), (23, 24)}


# -- the real model --------------------------------------------------------------------------------------------

# Stable across runs: the 36 MB wheel is downloaded once, and the built set is reused until build.py changes
# (a first run on a fresh machine builds it: ~35 s of CPU, up to ~90 s on a busy 2-core machine).
CACHE_DIR = Path.home() / ".cache" / "mocapflow"

# Face of the astronaut in skimage's 512x512 photo, read off the image by eye (skin from the hairline to the chin,
# ear to ear, with a margin): x 170-275, y 60-190. Her nose tip is near (223, 128).
FACE = (170.0, 60.0, 275.0, 190.0)


def _cached_set_dir() -> Path:
    import models.blazepose.build as build_module

    code = hashlib.sha256(Path(build_module.__file__).read_bytes()).hexdigest()[:12]
    return CACHE_DIR / "test-modelsets" / f"blazepose-{code}"


@pytest.fixture(scope="module")
def blazepose_set() -> ModelSet:
    from models.blazepose.build import build

    return build(_cached_set_dir(), cache_dir=CACHE_DIR)


@pytest.fixture(scope="module")
def estimator(blazepose_set: ModelSet) -> BlazePoseEstimator:
    from models.blazepose.runtime import BlazePoseEstimator
    from models.runtime import ThreadConfig

    return BlazePoseEstimator(blazepose_set, ThreadConfig(threads=2))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.mark.slow
def test_build_from_scratch_is_deterministic_and_rebuild_is_a_noop(
    blazepose_set: ModelSet, tmp_path: Path
) -> None:
    """A fresh build (tf2onnx conversion, ONNX-vs-TFLite check): ~35 s of CPU on this machine."""
    from models.blazepose.build import build
    from models.modelset import read_local

    fresh = build(tmp_path / "blazepose", cache_dir=CACHE_DIR)
    assert fresh.id == blazepose_set.id  # same wheel, same converter -> same content id
    m = fresh.manifest
    assert m.kind == "blazepose" and m.input_resolution == [256, 256] and m.has_3d
    assert m.joint_names[:3] == ["nose", "left_eye_inner", "left_eye"] and len(m.joint_names) == 33
    assert sorted(m.files) == ["backbone", "detector"]
    assert fresh.path("detector").suffix == ".tflite" and fresh.path("backbone").suffix == ".onnx"
    wheel = CACHE_DIR / "downloads" / m.extra["source"]["wheel"]
    assert m.extra["source"]["wheel_sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    read_local(fresh.root)  # hashes verify
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blazepose"]  # no staging folder left behind
    before = (fresh.root / "manifest.json").stat().st_mtime_ns
    again = build(fresh.root, cache_dir=CACHE_DIR)
    assert again.id == fresh.id
    assert (fresh.root / "manifest.json").stat().st_mtime_ns == before


def test_cached_set_is_valid(blazepose_set: ModelSet) -> None:
    from models.modelset import read_local

    m = read_local(blazepose_set.root).manifest
    assert m.kind == "blazepose" and list(m.joint_names) == list(JOINT_NAMES)
    assert [tuple(e) for e in m.joint_edges] == list(JOINT_EDGES)
    assert m.extra["source"]["requirement"] == "mediapipe==0.10.21"


def test_existing_folder_that_is_not_a_set_is_refused(tmp_path: Path) -> None:
    from models.blazepose.build import build
    from models.modelset import ModelSetError

    (tmp_path / "blazepose").mkdir()
    (tmp_path / "blazepose" / "notes.txt").write_text("mine")
    with pytest.raises(ModelSetError, match="remove it or choose another destination"):
        build(tmp_path / "blazepose", cache_dir=tmp_path / "cache")
    assert (tmp_path / "blazepose" / "notes.txt").read_text() == "mine"


def test_conversion_check_compares_with_tflite(
    blazepose_set: ModelSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.blazepose import build as b
    from models.modelset import ModelSetError

    wheel = b.find_wheel(CACHE_DIR / "downloads")
    assert wheel is not None
    tflite = b.extract_member(wheel, b.LANDMARK_MEMBER, tmp_path / "landmarks.tflite")
    diffs = b.verify_backbone(tflite, blazepose_set.path("backbone"))
    assert sorted(diffs) == ["landmarks", "pose_presence", "world_landmarks"]
    assert all(0.0 <= v <= b.MAX_ABS_DIFF[k] for k, v in diffs.items())
    monkeypatch.setitem(b.MAX_ABS_DIFF, "world_landmarks", -1.0)
    with pytest.raises(ModelSetError, match="world_landmarks"):
        b.verify_backbone(tflite, blazepose_set.path("backbone"))


def test_backbone_has_a_dynamic_batch(blazepose_set: ModelSet) -> None:
    from models.blazepose.build import verify_inputs
    from models.runtime import ThreadConfig, ort_session

    s = ort_session(blazepose_set.path("backbone"), ThreadConfig(threads=1))
    out = s.run(["landmarks", "world_landmarks"], {"image": verify_inputs()})
    assert out[0].shape == (2, 195) and out[1].shape == (2, 117)
    one = s.run(["landmarks"], {"image": verify_inputs()[1:]})[0]
    np.testing.assert_allclose(one[0], out[0][1], atol=1e-3)


def test_astronaut_one_person_facing_the_camera(estimator: BlazePoseEstimator, astronaut: np.ndarray) -> None:
    from mocapflow.camera import Intrinsics

    intr = Intrinsics.from_fov(512, 512, 55.0)
    (det,) = estimator(astronaut[None], intr)
    assert det.n == 1
    kp = det.kp2d[0]
    j = {n: i for i, n in enumerate(JOINT_NAMES)}
    nose, ls, rs = kp[j["nose"]], kp[j["left_shoulder"]], kp[j["right_shoulder"]]
    assert FACE[0] < nose[0] < FACE[2] and FACE[1] < nose[1] < FACE[3], nose
    assert ls[1] > nose[1] + 50 and rs[1] > nose[1] + 50  # shoulders well below the nose
    assert rs[0] < nose[0] < ls[0]  # her right shoulder on the image's left: she faces the camera
    for name in ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"):
        assert det.conf[0, j[name]] > 0.8, name
    assert 0.0 <= det.conf.min() and det.conf.max() <= 1.0
    x0, y0, x1, y1 = det.boxes[0]
    assert x0 <= rs[0] and x1 >= ls[0] and y0 < nose[1] and y1 >= max(ls[1], rs[1])
    # 3D: finite, in front of the camera, body-sized, and reprojecting onto the confident 2D landmarks
    k3 = det.kp3d[0].astype(np.float64)
    assert np.all(np.isfinite(k3)) and np.all(k3[:, 2] > 0)
    hip_centre = (k3[j["left_hip"]] + k3[j["right_hip"]]) / 2
    assert 300 < hip_centre[2] < 5000
    assert 200 < np.linalg.norm(k3[j["left_shoulder"]] - k3[j["right_shoulder"]]) < 600
    proj = np.stack([intr.fx * k3[:, 0] / k3[:, 2] + intr.cx, intr.fy * k3[:, 1] / k3[:, 2] + intr.cy], -1)
    confident = det.conf[0] > 0.8
    err = np.linalg.norm(proj[confident] - kp[confident], axis=1)
    assert np.median(err) < 0.1 * np.linalg.norm(ls - rs), err


def test_batch_of_frames_mirrored_and_empty(estimator: BlazePoseEstimator, astronaut: np.ndarray) -> None:
    from mocapflow.camera import Intrinsics

    intr = Intrinsics.from_fov(512, 512, 55.0)
    mirrored = astronaut[:, ::-1].copy()
    blank = np.full_like(astronaut, 128)
    frames = np.stack([astronaut, blank, mirrored])
    res = estimator(frames, intr)
    assert [r.n for r in res] == [1, 0, 1]
    (single,) = estimator(astronaut[None], intr)
    np.testing.assert_allclose(res[0].kp2d, single.kp2d, atol=1e-2)
    np.testing.assert_allclose(res[0].conf, single.conf, atol=1e-4)
    j = {n: i for i, n in enumerate(JOINT_NAMES)}
    # mirroring moves the nose to 511 - x. The models are not exactly
    # mirror-symmetric and her hips are out of the frame, so the detector's crop differs: ~1300 px square, 5 image
    # px per crop px; 16 px is ~3 crop px.
    assert res[2].kp2d[0, j["nose"], 0] == pytest.approx(511 - single.kp2d[0, j["nose"], 0], abs=16)
    assert res[2].kp2d[0, j["nose"], 1] == pytest.approx(single.kp2d[0, j["nose"], 1], abs=16)
    # a mirrored front view is still a front view: the labels stay anatomical, so her right shoulder is again on
    # the image's left, where the mirror put her left one (the bulky suit hides the joints: ~20 px disagreement)
    mirrored_rs = res[2].kp2d[0, j["right_shoulder"]]
    assert mirrored_rs[0] == pytest.approx(511 - single.kp2d[0, j["left_shoulder"], 0], abs=32)
    assert mirrored_rs[1] == pytest.approx(single.kp2d[0, j["left_shoulder"], 1], abs=32)
    assert res[1].kp2d.shape == (0, 33, 2) and res[1].kp3d.shape == (0, 33, 3)


def test_two_people_side_by_side(estimator: BlazePoseEstimator, astronaut: np.ndarray) -> None:
    from mocapflow.camera import Intrinsics

    pair = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # 512 x 1024
    (det,) = estimator(pair[None], Intrinsics.from_fov(1024, 512, 70.0))
    assert det.n == 2
    noses = np.sort(det.kp2d[:, 0, 0])
    assert noses[0] < 512 < noses[1]


def _mirror_landmarks(raw: np.ndarray, world: np.ndarray, swap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """What a perfectly mirror-symmetric model would output for the flipped crops (``swap=False``: the same, but it
    took the person to face the other way, so its labels are not swapped)."""
    from models.blazepose.landmarks import MODEL_MIRROR

    order = MODEL_MIRROR if swap else np.arange(len(MODEL_MIRROR))
    lm = raw.reshape(-1, 39, 5)[:, order].copy()
    lm[..., 0] = 256.0 - lm[..., 0]
    w = world.reshape(-1, 39, 3)[:, order].copy()
    w[..., 0] *= -1
    return lm.reshape(-1, 195), w.reshape(-1, 117)


def test_average_with_mirror_undoes_the_flip_and_never_mixes_left_with_right() -> None:
    from models.blazepose.landmarks import MODEL_MIRROR, average_with_mirror

    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 256, (3, 195)).astype(np.float32)
    world = rng.normal(0, 0.3, (3, 117)).astype(np.float32)
    presence = np.array([[0.9], [0.6], [0.99]], np.float32)
    out = {"landmarks": raw, "world_landmarks": world, "pose_presence": presence}
    lower = {**out, "pose_presence": np.array([[0.4], [0.7], [0.99]], np.float32)}
    assert average_with_mirror(out, lower)[0]["pose_presence"].ravel().tolist() == pytest.approx(
        [0.4, 0.6, 0.99]
    )
    # every left point has its right twin and the auxiliary points stay put
    assert (
        sorted(MODEL_MIRROR.tolist()) == list(range(39))
        and (MODEL_MIRROR[MODEL_MIRROR] == np.arange(39)).all()
    )
    assert MODEL_MIRROR[JOINT_NAMES.index("mouth_left")] == JOINT_NAMES.index("mouth_right")
    for swap in (True, False):
        m_raw, m_world = _mirror_landmarks(raw, world, swap)
        mirrored = {"landmarks": m_raw, "world_landmarks": m_world, "pose_presence": presence}
        merged, same_labels = average_with_mirror(out, mirrored)
        np.testing.assert_allclose(merged["landmarks"], raw, atol=1e-4)
        np.testing.assert_allclose(merged["world_landmarks"], world, atol=1e-6)
        np.testing.assert_allclose(merged["pose_presence"], presence)
        assert (same_labels == (not swap)).all()
    # a mirrored crop 2 input units to the right on every point: the average sits 1 unit to the right
    m_raw, m_world = _mirror_landmarks(raw, world)
    m_raw = m_raw.reshape(-1, 39, 5)
    m_raw[..., 0] -= 2.0
    merged, _ = average_with_mirror(
        out, {"landmarks": m_raw.reshape(-1, 195), "world_landmarks": m_world, "pose_presence": presence}
    )
    np.testing.assert_allclose(
        merged["landmarks"].reshape(-1, 39, 5)[..., 0], raw.reshape(-1, 39, 5)[..., 0] + 1, atol=1e-4
    )


def _mirror_roi(roi: np.ndarray, width: int) -> np.ndarray:
    return np.array([width - 1 - roi[0], roi[1], roi[2], -roi[3]])


def test_mirror_average_makes_the_landmarks_of_a_mirrored_frame_the_mirror_image(
    blazepose_set: ModelSet, astronaut: np.ndarray
) -> None:
    """The same ROI on the astronaut and, mirrored, on her mirror image: with the average the two sets of landmarks
    are mirror images of each other (labels swapped) to a hundredth of a pixel; the model alone is px off."""
    from models.blazepose.landmarks import MODEL_MIRROR
    from models.blazepose.runtime import BlazePoseEstimator, BlazePoseOptions
    from models.runtime import ThreadConfig

    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    roi = np.array([250.0, 300.0, 600.0, 0.1])
    errors = {}
    for average in (True, False):
        est = BlazePoseEstimator(blazepose_set, ThreadConfig(1), BlazePoseOptions(mirror_average=average))
        a = est.landmarks_at(astronaut, roi[None])
        b = est.landmarks_at(mirrored, _mirror_roi(roi, 512)[None])
        flipped_back = b.points[0, MODEL_MIRROR].copy()
        flipped_back[:, 0] = 511 - flipped_back[:, 0]
        errors[average] = float(np.abs(flipped_back - a.points[0])[:33].max())
        world_a = a.world.reshape(39, 3)
        world_b = b.world.reshape(39, 3)[MODEL_MIRROR] * np.array([-1.0, 1.0, 1.0])
        if average:
            np.testing.assert_allclose(world_b, world_a, atol=2e-3)  # metres
            assert abs(float(a.presence[0]) - float(b.presence[0])) < 1e-3
    assert errors[True] < 0.5, errors  # what is left: the 1/32 px fixed point of the crop's resampling
    assert errors[False] > 4 * errors[True] and errors[False] > 1.0, errors


def test_rejects_non_rgb_frames_and_accepts_no_frames(
    estimator: BlazePoseEstimator, astronaut: np.ndarray
) -> None:
    from mocapflow.camera import Intrinsics

    intr = Intrinsics.from_fov(512, 512, 55.0)
    with pytest.raises(ValueError, match=r"uint8 \[n, H, W, 3\]"):
        estimator(astronaut.astype(np.float32)[None], intr)
    with pytest.raises(ValueError, match=r"uint8 \[n, H, W, 3\]"):
        estimator(astronaut, intr)  # a single frame without the batch axis
    assert estimator(np.zeros((0, 512, 512, 3), np.uint8), intr) == []


# -- real footage: vtest.avi (OpenCV's pedestrian clip, 768x576, 10 frames/s) ----------------------------------

# The clip comes from Debian's opencv-doc package, fetched and verified by ``mocapflow.realdata`` (``make realdata``
# runs before ``make test``; the fixture below fetches it otherwise).


@pytest.fixture(scope="module")
def vtest() -> Path:
    from mocapflow.realdata import fetch_realdata, source_path
    from mocapflow.settings import load_settings

    cache_dir = load_settings().cache_dir
    fetch_realdata(cache_dir, names=["vtest.avi"])
    return source_path("vtest.avi", cache_dir)


# The reference pipeline, MediaPipe's own Pose solution on the same weights (mediapipe 0.10.21,
# Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=False)), run on the whole clip: it finds a
# person in 429 of 795 frames, none in frames 0-165 (every walker there is < ~110 px tall) and one in every frame
# of 166-185. Its shoulders and hips (left, right shoulder; left, right hip; image px) on three of those frames:
REFERENCE_TORSO = {
    166: [[472.9, 230.9], [458.9, 234.5], [475.4, 272.9], [466.9, 274.8]],
    175: [[498.2, 233.1], [480.4, 231.2], [493.4, 259.7], [483.8, 259.1]],
    185: [[549.1, 247.5], [534.4, 249.0], [548.4, 275.6], [540.0, 277.3]],
}


def _vtest_frames(vtest: Path, start: int, count: int) -> np.ndarray:
    from mocapflow.video import iter_batches

    batches, seen = [], 0
    for batch in iter_batches(str(vtest), 16):
        batches.append(batch[max(0, start - seen) : start + count - seen])
        seen += len(batch)
        if seen >= start + count:
            break
    frames = np.concatenate(batches)
    assert frames.shape == (count, 576, 768, 3)
    return frames


def test_vtest_tracking_finds_everyone_the_reference_finds_and_the_small_walkers(
    estimator: BlazePoseEstimator, vtest: Path
) -> None:
    """Two 2 s stretches of real footage, each tracked from its first frame as a video of its own."""
    from mocapflow.camera import Intrinsics
    from models.blazepose.runtime import BlazePoseEstimator, BlazePoseOptions
    from models.runtime import ThreadConfig

    intr = Intrinsics.from_fov(768, 576, 55.0)
    # frames 0-19: three walkers, ~70-80 px tall (counted by eye); the reference finds nobody
    session = estimator.video_session(intr)
    early = session(_vtest_frames(vtest, 0, 20))
    assert len(early) == 0  # held back for backtracking: 2 x 10 frames
    early += session.finish()
    assert [d.n >= 1 for d in early] == [True] * 20
    assert sum(d.n >= 3 for d in early) >= 15
    # frame 0, by eye: the walkers' bodies are centred near these points (image px)
    for x, y in ((513, 193), (663, 280), (267, 260)):
        b = early[0].boxes
        assert np.any((b[:, 0] < x) & (x < b[:, 2]) & (b[:, 1] < y) & (y < b[:, 3])), (x, y, b)
    assert session.state.scans == 2  # frames 0 and 10; between them the people were tracked, not detected
    for d in early:
        assert np.all(np.isfinite(d.kp2d)) and np.all((d.conf >= 0) & (d.conf <= 1))
        height = d.boxes[:, 3] - d.boxes[:, 1]
        assert np.all(height < 200)  # pedestrians, no box spanning the scene
    # frames 166-185: the reference finds its person in all 20; we find them too, at the same joints. The
    # reference is MediaPipe: the single crop, tracked forwards. In the first of these frames its crop comes from the
    # detector, and our default differs there (hips 0.4 torso lengths higher), both forwards (the mirrored crop puts
    # them 25 px higher) and backtracked (the crop from the next frame's landmarks: this person is half in front of
    # another); from there on, tracked, it agrees with the reference as closely as the single crop does.
    single = BlazePoseEstimator(
        estimator.model_set,
        ThreadConfig(threads=2),
        BlazePoseOptions(mirror_average=False, backtrack_frames=0),
    )
    for est, frames in ((single, (166, 175, 185)), (estimator, (175, 185))):
        session = est.video_session(intr)
        late = session(_vtest_frames(vtest, 166, 20)) + session.finish()
        assert [d.n >= 1 for d in late] == [True] * 20
        for i in frames:
            ref = np.asarray(REFERENCE_TORSO[i])
            torso = np.linalg.norm(ref[:2].mean(0) - ref[2:].mean(0))
            d = late[i - 166]
            err = np.linalg.norm(d.kp2d[:, [11, 12, 23, 24]] - ref, axis=2).max(axis=1) / torso
            assert err.min() < 0.15, (
                i,
                err,
            )  # our closest person's worst torso joint within 15 % of the torso


# -- the tracking loop, with stand-in models -----------------------------------------------------------------


class _World:
    """People as (centre, radius) per frame; frame i carries i in its first pixel."""

    def __init__(self) -> None:
        self.people: dict[str, tuple[int, int, float, float, float]] = {
            # name: (first frame, last frame, x at first frame, y, body radius px); they walk 3 px/frame to the right
            "a": (0, 14, 100.0, 200.0, 40.0),
            "b": (5, 29, 500.0, 300.0, 40.0),
        }

    def at(self, i: int) -> list[tuple[float, float, float]]:
        return [(x + 3.0 * (i - f0), y, r) for f0, f1, x, y, r in self.people.values() if f0 <= i <= f1]


def _stand_in_estimator(world: _World):  # noqa: ANN202 (a test double)
    from models.blazepose.runtime import BlazePoseEstimator, BlazePoseOptions, LandmarkResults

    class StandIn(BlazePoseEstimator):
        def __init__(self) -> None:  # no models: the two inference stages are replaced below
            self.options = BlazePoseOptions()
            self.joint_names = list(JOINT_NAMES)
            self._regions = {}
            self.detector_calls = 0

        def _detect_region(self, frame: np.ndarray, matrix: np.ndarray) -> Detections:
            """Finds a person whose body is >= 60 px in the 224 px input."""
            self.detector_calls += 1
            k = matrix[0, 0]
            people = [p for p in world.at(int(frame[0, 0, 0])) if 2 * p[2] / k >= 60]
            return _dets([(x, y) for x, y, _ in people], [r for *_, r in people], [0.9] * len(people))

        def landmarks_at(self, frame: np.ndarray, rois: np.ndarray) -> LandmarkResults:
            """Present (0.9) when the ROI is centred within 20 px of a person; points 33/34 on that person."""
            rois = np.asarray(rois, np.float64).reshape(-1, 4)
            k = rois.shape[0]
            points = np.zeros((k, 39, 2))
            presence = np.full(k, 0.1, np.float32)
            for j, roi in enumerate(rois):
                for x, y, r in world.at(int(frame[0, 0, 0])):
                    if np.hypot(roi[0] - x, roi[1] - y) < 20:
                        angles = np.linspace(0, 2 * np.pi, 33, endpoint=False)
                        points[j, :33] = np.stack([x + r * np.cos(angles), y + r * np.sin(angles)], 1)
                        points[j, 33:] = [x, y]
                        points[j, 34] = [x, y - r]
                        presence[j] = 0.9
            raw = np.zeros((k, 39, 5), np.float32)
            raw[..., 3:] = 5.0
            return LandmarkResults(
                rois, points, raw.reshape(k, 195), np.zeros((k, 117), np.float32), presence
            )

    return StandIn()


def test_tracking_loop_scans_tracks_and_picks_up_people_again() -> None:
    import dataclasses

    from mocapflow.camera import Intrinsics
    from models.blazepose.runtime import BlazePoseSession

    world = _World()
    est = _stand_in_estimator(world)
    frames = np.zeros((30, 576, 768, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(30)
    est.options = dataclasses.replace(est.options, backtrack_frames=0)
    session = BlazePoseSession(est, Intrinsics.from_fov(768, 576, 55.0))
    found = session(frames[:16]) + session(frames[16:])  # two batches: the state carries over
    assert session.finish() == []  # nothing held back without backtracking
    counts = [d.n for d in found]
    # a from frame 0 (first scan); b walks in at 5 and is picked up by the scan at 10; a leaves after frame 14
    assert counts == [1] * 10 + [2] * 5 + [1] * 15
    st = session.state
    assert st.scans == 3 and st.last_scan == 20  # frames 0, 10, 20: 17 detector regions each
    assert st.local_detections == 1  # frame 15: looked for a where it was lost, once
    assert est.detector_calls == 3 * 17 + 1
    assert st.whole_frame_detections == 0  # someone was tracked on every frame
    # the people are followed as they walk (box centre = hip centre, to 0.5 px: 33 points on a circle)
    np.testing.assert_allclose(found[29].boxes[0, [0, 2]].mean(), 500 + 3 * 24, atol=0.5)
    np.testing.assert_allclose(found[3].boxes[0, [0, 2]].mean(), 100 + 3 * 3, atol=0.5)
    assert found[12].scores.tolist() == pytest.approx([0.9, 0.9])


@pytest.mark.parametrize("backtrack_frames", [10, 0])
def test_people_found_late_are_tracked_back_to_where_they_came_into_view(backtrack_frames: int) -> None:
    import dataclasses

    from mocapflow.camera import Intrinsics
    from models.blazepose.runtime import BlazePoseSession

    world = _World()
    # a comes into view at 14 and is found by the scan at 20; b comes into view at 26, is found by the scan at 30,
    # and the video ends 9 frames later
    world.people = {"a": (14, 39, 100.0, 200.0, 40.0), "b": (26, 39, 500.0, 300.0, 40.0)}
    est = _stand_in_estimator(world)
    est.options = dataclasses.replace(est.options, backtrack_frames=backtrack_frames)
    frames = np.zeros((40, 576, 768, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(40)
    session = BlazePoseSession(est, Intrinsics.from_fov(768, 576, 55.0))
    found = session(frames[:25]) + session(frames[25:])
    assert len(found) == 40 - 2 * backtrack_frames  # the last 2 x backtrack_frames are held back
    found += session.finish()
    counts = [d.n for d in found]
    st = session.state
    assert st.scans == 4 and st.last_scan == 30
    if backtrack_frames == 0:
        assert counts == [0] * 20 + [1] * 10 + [2] * 10
        assert st.backtracked == 0
        return
    # a: tracked back from 30 down to 20, then on until the landmark model no longer sees them (before 14);
    # b: tracked back from the last frame (found 9 frames before the end) down to 26
    assert counts == [0] * 14 + [1] * 12 + [2] * 14
    assert (st.backtracked, st.extended) == ((30 - 14) + (39 - 26), (20 - 14) + (30 - 26))
    np.testing.assert_allclose(found[14].boxes[0, [0, 2]].mean(), 100, atol=0.5)  # a where it was then
    np.testing.assert_allclose(found[19].boxes[0, [0, 2]].mean(), 100 + 3 * 5, atol=0.5)
    assert sorted(found[26].boxes[:, [0, 2]].mean(axis=1).round()) == [100 + 3 * 12, 500]


@pytest.mark.parametrize("max_scan_interval", [30, None])
def test_scans_that_find_nobody_new_space_out_while_someone_is_tracked(max_scan_interval: int | None) -> None:
    import dataclasses

    from mocapflow.camera import Intrinsics
    from models.blazepose.runtime import BlazePoseSession

    world = _World()
    world.people = {"a": (0, 104, 100.0, 200.0, 40.0), "b": (65, 104, 400.0, 300.0, 40.0)}  # b walks in at 65
    est = _stand_in_estimator(world)
    est.options = dataclasses.replace(est.options, max_scan_interval=max_scan_interval)
    frames = np.zeros((105, 576, 768, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(105)
    session = BlazePoseSession(est, Intrinsics.from_fov(768, 576, 55.0))
    scans, found = [], []
    for i in range(105):
        before = session.state.scans
        found += session(frames[i : i + 1])
        if session.state.scans > before:
            scans.append(i)
    counts = [d.n for d in found + session.finish()]
    # b is tracked back from 10 frames after it was found, down to 10 frames before (backtrack_frames, 10)
    if max_scan_interval is None:  # the fixed interval: b is found by the scan at 70, seen back to 65
        assert scans == list(range(0, 105, 10))
        assert counts == [1] * 65 + [2] * 40
    else:  # 10, 20, then 30 frames apart while only a is there; the scan at 90 finds b, the next comes 10 later
        assert scans == [0, 10, 30, 60, 90, 100]
        assert counts == [1] * 80 + [2] * 25


def test_tracking_loop_keeps_at_most_max_people_and_then_stops_scanning() -> None:
    import dataclasses

    from mocapflow.camera import Intrinsics
    from models.blazepose.runtime import BlazePoseSession

    world = _World()
    world.people["b"] = (0, 29, 500.0, 300.0, 60.0)  # b bigger, there from the start
    est = _stand_in_estimator(world)
    est.options = dataclasses.replace(est.options, max_people=1)
    frames = np.zeros((12, 576, 768, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(12)
    session = BlazePoseSession(est, Intrinsics.from_fov(768, 576, 55.0))
    found = session(frames) + session.finish()
    assert [d.n for d in found] == [1] * 12
    np.testing.assert_allclose(found[0].boxes[0, [0, 2]].mean(), 500, atol=0.5)  # the largest one kept
    assert (
        est.detector_calls == 17
    )  # the first scan only: with max_people tracked there is nobody to look for


def test_tracking_policy_reaches_the_runtime_from_the_settings(blazepose_set: ModelSet) -> None:
    from mocapflow.pose.pipeline import PoseParams
    from mocapflow.settings import load_settings
    from models.runtime import ThreadConfig, open_estimator

    settings = load_settings(max_people=1, scan_interval_frames=5)
    params = PoseParams.from_settings(settings)
    est = open_estimator(
        blazepose_set,
        ThreadConfig(1),
        max_people=params.max_people,
        scan_interval=params.scan_interval_frames,
    )
    assert (est.options.max_people, est.options.scan_interval) == (1, 5)
    assert open_estimator(blazepose_set, ThreadConfig(1)).options.max_people is None
    from mocapflow.camera import Intrinsics

    intr = Intrinsics.from_fov(640, 480, 55.0)
    default_key = PoseParams().key_params(intr, "blazepose")
    assert "max_people" not in default_key and "scan_interval_frames" not in default_key
    key = params.key_params(intr, "blazepose")
    assert key["max_people"] == 1 and key["scan_interval_frames"] == 5
    # the mirror average changes blazepose's output, so its keys say so; other kinds' keys do not change
    assert default_key["mirror_average"] is True
    assert "mirror_average" not in PoseParams(mirror_average=False).key_params(intr, "blazepose")
    assert "mirror_average" not in PoseParams().key_params(intr, "metrabs")
    # so does the scan backoff, unless it is off (a maximum at or below the base interval)
    assert default_key["max_scan_interval_frames"] == 30
    assert "max_scan_interval_frames" not in PoseParams(max_scan_interval_frames=10).key_params(
        intr, "blazepose"
    )
    fixed = load_settings(max_scan_interval_frames=5)
    assert PoseParams.from_settings(fixed).max_scan_interval_frames == 5
    assert open_estimator(blazepose_set, ThreadConfig(1), max_scan_interval=5).options.max_scan_interval == 5
    assert PoseParams.from_settings(load_settings(mirror_average=False)).mirror_average is False
    off = open_estimator(blazepose_set, ThreadConfig(1), mirror_average=False)
    assert off.options.mirror_average is False and est.options.mirror_average is True
    # backtracking changes the output too; off, the keys are those of forwards tracking
    assert default_key["backtrack_frames"] == 10
    assert "backtrack_frames" not in PoseParams(backtrack_frames=0).key_params(intr, "blazepose")
    back = PoseParams.from_settings(load_settings(backtrack_frames=4))
    assert (
        open_estimator(blazepose_set, ThreadConfig(1), **back.estimator_options()).options.backtrack_frames
        == 4
    )
