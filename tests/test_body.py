"""Body model: geometry at the zero pose, joint motions, scale groups, FK under jit/vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.body import (
    BLAZEPOSE_TO_SITE,
    REFERENCE_STATURE_M,
    SCALE_GROUPS,
    default_body_model,
    forward_kinematics,
    make_fk,
    standing_pelvis_height,
)

H = REFERENCE_STATURE_M


@pytest.fixture(scope="module")
def model():
    return default_body_model()


def fk(model, **angles_deg_or_m):
    q = np.zeros(model.n_dofs)
    for name, v in angles_deg_or_m.items():
        i = model.dof_index(name)
        q[i] = v if model.dofs[i].kind == "slide" else np.deg2rad(v)
    sites = np.asarray(forward_kinematics(model, jnp.asarray(q)))
    return {n: sites[i] for i, n in enumerate(model.site_names)}


def test_joint_set_matches_the_origin(model):
    assert model.n_dofs == 40
    assert len(model.scale_groups) == 8 and model.scale_groups == SCALE_GROUPS
    per_side = [
        "hip_flexion",
        "hip_adduction",
        "hip_rotation",
        "knee_angle",
        "ankle_angle",
        "subtalar_angle",
        "mtp_angle",
        "arm_flex",
        "arm_add",
        "arm_rot",
        "elbow_flex",
        "pro_sup",
        "wrist_flex",
        "wrist_dev",
    ]
    expected = {f"{d}_{s}" for d in per_side for s in "rl"} | {
        "pelvis_tx",
        "pelvis_ty",
        "pelvis_tz",
        "pelvis_tilt",
        "pelvis_list",
        "pelvis_rotation",
        "lumbar_extension",
        "lumbar_bending",
        "lumbar_rotation",
        "neck_extension",
        "neck_bending",
        "neck_rotation",
    }
    assert set(model.dof_names) == expected
    assert len(model.site_names) >= 25
    assert set(BLAZEPOSE_TO_SITE.values()) <= set(model.site_names)
    assert len(BLAZEPOSE_TO_SITE) == 33
    assert np.all(model.lower <= 0) and np.all(model.upper >= 0)


def test_zero_pose_segment_geometry(model):
    s = fk(model)
    for side in "rl":
        hip, knee, ankle = s[f"{side}hip"], s[f"{side}kne"], s[f"{side}ank"]
        np.testing.assert_allclose(hip - knee, [0, 0.245 * H, 0], atol=1e-6)  # knee straight below the hip
        np.testing.assert_allclose(knee - ankle, [0, 0.246 * H, 0], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(s[f"{side}sho"] - s[f"{side}elb"]), 0.172 * H, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(s[f"{side}elb"] - s[f"{side}wri"]), 0.150 * H, atol=1e-6)
    # left and right mirror in z; the right side is +z
    for name in model.site_names:
        if name.startswith("r") and "l" + name[1:] in s:
            np.testing.assert_allclose(s[name] * [1, 1, -1], s["l" + name[1:]], atol=1e-6)
    assert s["rhip"][2] > 0 and s["rsho"][2] > 0
    np.testing.assert_allclose(np.linalg.norm(s["rhip"] - s["lhip"]), 0.1 * H, atol=1e-6)
    # the head is on top, the toes in front of the heels, the nose in front of the head centre
    assert s["head"][1] > s["rsho"][1] > s["rhip"][1] > s["rkne"][1] > s["rank"][1] > s["rhee"][1]
    assert s["rtoe"][0] > s["rhee"][0] and s["nose"][0] > s["head"][0]
    height = standing_pelvis_height(model) + max(v[1] for v in s.values())
    assert 1.6 < height < 1.8


def test_knee_flexion_90_moves_the_ankle_backwards(model):
    s0, s = fk(model), fk(model, knee_angle_r=90.0)
    shank = 0.246 * H
    np.testing.assert_allclose(s["rkne"], s0["rkne"], atol=1e-6)
    np.testing.assert_allclose(s["rank"], s0["rkne"] + [-shank, 0, 0], atol=1e-6)
    np.testing.assert_allclose(s["lank"], s0["lank"], atol=1e-6)  # the other leg does not move


def test_hip_flexion_and_abduction(model):
    thigh = 0.245 * H
    s = fk(model, hip_flexion_r=90.0)
    np.testing.assert_allclose(s["rkne"], s["rhip"] + [thigh, 0, 0], atol=1e-6)
    # negative adduction = abduction: the right knee moves to the right (+z), the left to the left (-z)
    s = fk(model, hip_adduction_r=-30.0, hip_adduction_l=-30.0)
    d = np.deg2rad(30)
    np.testing.assert_allclose(s["rkne"] - s["rhip"], [0, -thigh * np.cos(d), thigh * np.sin(d)], atol=1e-6)
    np.testing.assert_allclose(s["lkne"] - s["lhip"], [0, -thigh * np.cos(d), -thigh * np.sin(d)], atol=1e-6)


def test_elbow_and_shoulder(model):
    s = fk(model, elbow_flex_r=90.0)
    np.testing.assert_allclose(s["rwri"], s["relb"] + [0.150 * H, 0, 0], atol=1e-6)
    s = fk(model, arm_add_r=-90.0)  # arm raised sideways to horizontal
    np.testing.assert_allclose(s["relb"], s["rsho"] + [0, 0, 0.172 * H], atol=1e-6)


def test_pelvis_slides_translate_every_site(model):
    s0, s = fk(model), fk(model, pelvis_tx=1.0, pelvis_ty=0.5, pelvis_tz=-2.0)
    for n in model.site_names:
        np.testing.assert_allclose(s[n] - s0[n], [1.0, 0.5, -2.0], atol=1e-6)


def test_scale_groups_scale_what_they_should(model):
    g = np.ones(len(SCALE_GROUPS))
    g[SCALE_GROUPS.index("shank")] = 1.2
    bs = model.group_to_body_scale(jnp.asarray(g))
    s0 = np.asarray(forward_kinematics(model, jnp.zeros(40)))
    s1 = np.asarray(forward_kinematics(model, jnp.zeros(40), bs))
    i = {n: model.site_index(n) for n in ("rhip", "rkne", "rank", "rsho", "relb", "rshin")}
    np.testing.assert_allclose(np.linalg.norm(s1[i["rkne"]] - s1[i["rank"]]), 1.2 * 0.246 * H, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(s1[i["rhip"]] - s1[i["rkne"]]), 0.245 * H, atol=1e-6)
    np.testing.assert_allclose(s1[i["relb"]] - s1[i["rsho"]], s0[i["relb"]] - s0[i["rsho"]], atol=1e-6)
    # a site on the shank scales about the knee
    np.testing.assert_allclose(
        s1[i["rshin"]] - s1[i["rkne"]], 1.2 * (s0[i["rshin"]] - s0[i["rkne"]]), atol=1e-6
    )


def test_anisotropic_body_scale_and_site_offsets(model):
    bs = np.ones((len(model.bodies), 3))
    bs[model.body_names.index("pelvis"), 2] = 1.5  # wider pelvis only
    off = np.zeros((len(model.sites), 3))
    off[model.site_index("rkne")] = [0.01, 0.0, 0.0]
    s0 = np.asarray(forward_kinematics(model, jnp.zeros(40)))
    s = np.asarray(forward_kinematics(model, jnp.zeros(40), jnp.asarray(bs), jnp.asarray(off)))
    rh, rk = model.site_index("rhip"), model.site_index("rkne")
    np.testing.assert_allclose(s[rh], s0[rh] * [1, 1, 1.5], atol=1e-6)
    np.testing.assert_allclose(s[rk], s0[rk] + [0.01, 0, s0[rh][2] * 0.5], atol=1e-6)


def test_fk_jit_vmap_matches_single_frames(model):
    rng = np.random.default_rng(0)
    q = rng.uniform(model.lower, model.upper, size=(16, model.n_dofs))
    q[:, :3] = rng.normal(size=(16, 3))
    batched = np.asarray(make_fk(model)(jnp.asarray(q)))
    assert batched.shape == (16, len(model.sites), 3)
    for t in (0, 7, 15):
        np.testing.assert_allclose(
            batched[t], np.asarray(forward_kinematics(model, jnp.asarray(q[t]))), atol=1e-5
        )
    # distances within a rigid segment are pose-invariant
    ia, ib = model.site_index("rkne"), model.site_index("rknem")
    d = np.linalg.norm(batched[:, ia] - batched[:, ib], axis=-1)
    np.testing.assert_allclose(d, d[0], atol=1e-5)


def test_fk_is_differentiable(model):
    i = model.site_index("rank")
    k = model.dof_index("knee_angle_r")

    def ankle_x(q):
        return forward_kinematics(model, q)[i, 0]

    g = np.asarray(jax.grad(ankle_x)(jnp.zeros(40)))
    # d(ankle x)/d(knee angle) at 0 = -shank length (the ankle swings backwards)
    np.testing.assert_allclose(g[k], -0.246 * H, atol=1e-5)
