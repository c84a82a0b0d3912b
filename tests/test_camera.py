"""Pinhole camera: intrinsics from FOV, world->camera extrinsics, projection conventions."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from mocapflow.camera import Extrinsics, Intrinsics, backproject, image_radius, project, project_world


def test_from_fov_puts_the_fov_edge_on_the_image_edge():
    intr = Intrinsics.from_fov(640, 480, 60.0)
    assert intr.fx == pytest.approx(320.0 / math.tan(math.radians(30.0)))
    assert intr.fy == intr.fx
    # pixel centres are integers: the optical axis hits the middle of the image, between pixels 319 and 320
    assert (intr.cx, intr.cy) == (319.5, 239.5)
    # a ray at half the horizontal FOV lands on the outer edge of the last pixel column (u = width - 0.5)
    edge = project([math.tan(math.radians(30.0)), 0.0, 1.0], intr)
    assert edge == pytest.approx([639.5, 239.5])
    assert intr.hfov_deg == pytest.approx(60.0)


def test_matrix_and_json_round_trip():
    intr = Intrinsics(fx=500.0, fy=510.0, cx=300.0, cy=200.0, width=640, height=400)
    assert np.array_equal(intr.matrix(), [[500, 0, 300], [0, 510, 200], [0, 0, 1]])
    text = intr.to_json()
    assert json.loads(text) == {
        "fx": 500.0,
        "fy": 510.0,
        "cx": 300.0,
        "cy": 200.0,
        "width": 640,
        "height": 400,
    }
    assert Intrinsics.from_json(text) == intr
    assert Intrinsics.from_dict(intr.to_dict()) == intr
    with pytest.raises(dataclasses.FrozenInstanceError):
        intr.fx = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [("not json", "does not parse"), ("[1, 2]", "must be an object"), ('{"fx": 1}', "lack")],
)
def test_bad_intrinsics_json_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        Intrinsics.from_json(text)


def test_bad_intrinsics_values_are_refused():
    with pytest.raises(ValueError, match="focal"):
        Intrinsics(fx=0.0, fy=1.0, cx=0, cy=0, width=10, height=10)
    with pytest.raises(ValueError, match="hfov"):
        Intrinsics.from_fov(10, 10, 180.0)


def test_projection_is_unit_free_and_nan_behind_the_camera():
    intr = Intrinsics(fx=400.0, fy=400.0, cx=100.0, cy=50.0, width=200, height=100)
    p_m = np.array([[0.5, -0.25, 2.0], [0.0, 0.0, -1.0]])
    uv_m = project(p_m, intr)
    uv_mm = project(p_m * 1000.0, intr)
    assert uv_m[0] == pytest.approx([100 + 400 * 0.25, 50 - 400 * 0.125])
    assert np.allclose(uv_m[0], uv_mm[0])
    assert np.isnan(uv_m[1]).all()


def test_backproject_inverts_project():
    intr = Intrinsics.from_fov(320, 240, 55.0)
    rng = np.random.default_rng(0)
    pts = rng.uniform([-1, -1, 2], [1, 1, 6], size=(20, 3))
    back = backproject(project(pts, intr), pts[:, 2], intr)
    assert np.allclose(back, pts, atol=1e-9)


def test_image_radius_is_f_r_over_z():
    intr = Intrinsics.from_fov(640, 480, 50.0)
    r = image_radius(0.03, np.array([2.0, 4.0]), intr)
    assert r == pytest.approx([intr.fx * 0.015, intr.fx * 0.0075])


def test_look_at_world_y_up_is_image_up_and_right_handed():
    # camera 5 m in front of the origin along +X (world), looking back at it along -X, at 1.5 m height
    eye, target = np.array([5.0, 1.5, 0.0]), np.array([0.0, 1.5, 0.0])
    extr = Extrinsics.look_at(eye, target)
    intr = Intrinsics.from_fov(640, 480, 60.0)
    assert np.allclose(extr.R @ extr.R.T, np.eye(3)) and np.linalg.det(extr.R) == pytest.approx(1.0)
    assert np.allclose(extr.centre, eye)
    assert np.allclose(extr.apply(target), [0.0, 0.0, 5.0])  # straight ahead, 5 m deep
    above = project_world(target + [0.0, 1.0, 0.0], intr, extr)
    assert above[0] == pytest.approx(intr.cx) and above[1] < intr.cy  # world up -> smaller v (image y down)
    # looking along -X with Y up, the camera's right is -Z (right-handed: right = forward x up)
    right = project_world(target + [0.0, 0.0, -1.0], intr, extr)
    assert right[0] > intr.cx and right[1] == pytest.approx(intr.cy)


def test_roll_turns_the_image_about_its_centre():
    eye, target = np.array([0.0, 1.0, -4.0]), np.array([0.0, 1.0, 0.0])
    intr = Intrinsics.from_fov(400, 400, 60.0)
    point = target + np.array([1.0, 0.0, 0.0])
    flat = project_world(point, intr, Extrinsics.look_at(eye, target)) - [intr.cx, intr.cy]
    rolled = project_world(point, intr, Extrinsics.look_at(eye, target, roll_deg=90.0)) - [intr.cx, intr.cy]
    assert abs(flat[1]) < 1e-9 and abs(rolled[0]) < 1e-9
    assert abs(rolled[1]) == pytest.approx(abs(flat[0]))


def test_extrinsics_round_trip_and_validation():
    extr = Extrinsics.look_at([3.0, 1.2, 2.0], [0.0, 1.0, 0.0], roll_deg=2.0)
    again = Extrinsics.from_dict(json.loads(json.dumps(extr.to_dict())))
    assert again == extr
    with pytest.raises(ValueError, match="not a rotation"):
        Extrinsics(R=np.diag([1.0, 1.0, -1.0]), t=np.zeros(3))
    with pytest.raises(ValueError, match="coincide"):
        Extrinsics.look_at([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="parallel"):
        Extrinsics.look_at([0.0, 5.0, 0.0], [0.0, 0.0, 0.0])
