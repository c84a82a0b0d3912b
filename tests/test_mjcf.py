"""MJCF loader: a two-hinge fixture checked against hand-computed positions, plus the supported features."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from models.body import forward_kinematics
from models.mjcf import MJCFError, load_mjcf

TWO_HINGES = """
<mujoco model="arm">
  <compiler angle="degree"/>
  <default>
    <joint range="-150 150"/>
    <default class="tight"><joint range="-10 10"/></default>
  </default>
  <worldbody>
    <body name="upper" pos="0 0 1">
      <joint name="shoulder" type="hinge" axis="0 0 1"/>
      <site name="shoulder_site" pos="0 0 0"/>
      <body name="lower" pos="0.5 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" class="tight"/>
        <site name="elbow_site"/>
        <site name="hand" pos="0.4 0 0"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture
def arm(tmp_path: Path):
    p = tmp_path / "arm.xml"
    p.write_text(TWO_HINGES)
    return load_mjcf(p)


def test_two_hinges_match_hand_computed_positions(arm):
    assert arm.dof_names == ["shoulder", "elbow"]
    assert arm.site_names == ["shoulder_site", "elbow_site", "hand"]
    np.testing.assert_allclose(arm.lower, np.deg2rad([-150, -10]))
    np.testing.assert_allclose(arm.upper, np.deg2rad([150, 10]))
    for a, b in [(0.0, 0.0), (30.0, 0.0), (30.0, 45.0), (-90.0, 10.0)]:
        ra, rb = np.deg2rad(a), np.deg2rad(b)
        elbow = np.array([0.5 * np.cos(ra), 0.5 * np.sin(ra), 1.0])
        hand = elbow + 0.4 * np.array([np.cos(ra + rb), np.sin(ra + rb), 0.0])
        s = np.asarray(forward_kinematics(arm, jnp.array([ra, rb])))
        np.testing.assert_allclose(s[0], [0, 0, 1], atol=1e-6)
        np.testing.assert_allclose(s[1], elbow, atol=1e-6)
        np.testing.assert_allclose(s[2], hand, atol=1e-6)


def test_body_orientation_slide_and_anchor(tmp_path: Path):
    p = tmp_path / "m.xml"
    p.write_text("""
<mujoco><compiler angle="radian"/><worldbody>
  <body name="base" euler="0 0 1.5707963267948966">
    <joint name="lift" type="slide" axis="1 0 0" range="0 2"/>
    <body name="link" pos="1 0 0">
      <joint name="pivot" axis="0 0 1" pos="0.5 0 0"/>
      <site name="tip" pos="1 0 0"/>
    </body>
  </body>
</worldbody></mujoco>""")
    m = load_mjcf(p)
    assert [d.kind for d in m.dofs] == ["slide", "hinge"]
    # base rotated +90 deg about z: its x axis points along world y
    s = np.asarray(forward_kinematics(m, jnp.array([0.5, 0.0])))
    np.testing.assert_allclose(s[0], [0, 1.5 + 1.0, 0], atol=1e-6)
    # pivot at x=0.5 in the link frame: rotating 180 deg brings the tip (x=1) to x=0 in the link frame
    s = np.asarray(forward_kinematics(m, jnp.array([0.0, np.pi])))
    np.testing.assert_allclose(s[0], [0, 1.0 + 0.0, 0], atol=1e-6)


def test_ball_and_free_joints_expand_to_dofs(tmp_path: Path):
    p = tmp_path / "m.xml"
    p.write_text("""
<mujoco><worldbody><body name="root"><freejoint name="root"/>
  <body name="b" pos="0 0 -1"><joint name="ball" type="ball"/><site name="s" pos="0 0 -1"/></body>
</body></worldbody></mujoco>""")
    m = load_mjcf(p)
    assert m.n_dofs == 9
    assert m.dof_names[:3] == ["root_tx", "root_ty", "root_tz"]
    q = np.zeros(9)
    q[:3] = [1, 2, 3]
    q[6] = np.pi / 2  # ball about x: the site at -z swings to +y
    s = np.asarray(forward_kinematics(m, jnp.asarray(q)))
    np.testing.assert_allclose(s[0], [1, 2 + 1, 3 - 1], atol=1e-6)


@pytest.mark.parametrize(
    "text, message",
    [
        ("<notmujoco/>", "expected <mujoco>"),
        ("<mujoco><worldbody/></mujoco>", "no bodies"),
        ("<mujoco><include file='x.xml'/><worldbody/></mujoco>", "<include>"),
        ("<mujoco><worldbody><body pos='1 2'/></worldbody></mujoco>", "expected 3 numbers"),
        ("<mujoco", "not a readable"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, text: str, message: str):
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(MJCFError, match=message):
        load_mjcf(p)
