"""Metamorphic figures (mocapflow.fit.metamorphic): pure checks on made-up angles, then (slow) the real chain on a
still-photo video of a footballer (pan and zoom, mirrored, half resolution, time-reversed) through BlazePose and
the fit."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mocapflow.fit.metamorphic import (
    TARGETS_DEG,
    limb_dofs,
    metamorphic_figures,
    mirror_name,
    paired_difference,
    still_sd,
)

logger = logging.getLogger(__name__)


def _fake_fit(angles_deg: dict[str, np.ndarray], n: int) -> SimpleNamespace:
    names = sorted(angles_deg)
    q = np.stack([np.radians(angles_deg[d]) for d in names], axis=1)
    return SimpleNamespace(q=q, observed=np.ones(n, bool), model=SimpleNamespace(dof_names=names))


def test_mirror_names_swap_sides() -> None:
    assert mirror_name("knee_angle_r") == "knee_angle_l"
    assert mirror_name("arm_flex_l") == "arm_flex_r"
    assert mirror_name("pelvis_tilt") == "pelvis_tilt"
    assert len(limb_dofs()) == 18


def test_figures_of_related_fits() -> None:
    n = 40
    rng = np.random.default_rng(0)
    t = np.arange(n)
    base = {d: 30.0 + rng.normal(0.0, 1.0, n) for d in limb_dofs()}
    base["knee_angle_r"] = 50.0 + 4.0 * np.sin(t / 5.0)  # SD 2.8 deg
    mirrored = {d: base[mirror_name(d)] + 2.0 for d in limb_dofs()}  # 2 deg off everywhere
    reversed_ = {d: base[d][::-1] for d in limb_dofs()}
    half = {d: base[d] - 5.0 for d in limb_dofs()}
    copy = {d: base[d] + 0.5 * (-1) ** t for d in limb_dofs()}  # re-encoding moved every frame by 0.5 deg
    f = metamorphic_figures(
        _fake_fit(base, n),
        mirrored=_fake_fit(mirrored, n),
        half=half,
        reversed_=_fake_fit(reversed_, n),
        reencoded=copy,
    )
    m = f.medians
    assert m["mirror_deg"] == pytest.approx(2.0, abs=1e-6)
    assert m["reverse_deg"] == pytest.approx(0.0, abs=1e-6)
    assert m["half_deg"] == pytest.approx(5.0, abs=1e-6)
    assert m["reencode_deg"] == pytest.approx(0.5, abs=1e-6)
    assert f.per_dof["still_sd_deg"]["knee_angle_r"] == pytest.approx(np.std(base["knee_angle_r"]), rel=1e-6)
    # the re-encode is the floor the others are read against: reported, with no target of its own
    assert f.passed() == {"still_sd_deg": True, "mirror_deg": True, "half_deg": False, "reverse_deg": True}
    summary = json.loads(json.dumps(f.summary()))  # JSON-ready
    assert summary["medians_deg"]["reencode_deg"] == 0.5 and "reencode_deg" not in summary["targets_deg"]
    # a mirrored fit compared without swapping sides is wrong by the left-right difference
    assert paired_difference(base, mirrored)["knee_angle_r"] > 10.0


def test_weakly_observed_dofs_are_left_out_of_the_observed_medians() -> None:
    """The base fit's weak DOFs (a leg out of the picture, say) leave medians_observed; the mirror relation also
    drops the DOF each of them is compared with. The medians the targets are read on keep everything."""
    n = 20
    rng = np.random.default_rng(1)
    dofs = ("knee_angle_r", "knee_angle_l", "elbow_flex_r", "elbow_flex_l")
    base = {d: rng.normal(0.0, 1.0, n) for d in dofs}
    base["knee_angle_r"] = rng.normal(0.0, 10.0, n)  # hallucinated, jittery
    fit = _fake_fit(base, n)
    fit.weak_dofs = {"knee_angle_r": 0.1, "mtp_angle_r": 0.1}  # a weak DOF outside the figures is ignored
    mirrored = {d: base[mirror_name(d)] for d in dofs}
    mirrored["knee_angle_l"] = mirrored["knee_angle_l"] + 30.0  # compared with the weak right knee
    mirrored["knee_angle_r"] = (
        mirrored["knee_angle_r"] + 30.0
    )  # the weak knee's image, compared with the left one
    mirrored["elbow_flex_l"] = mirrored["elbow_flex_l"] + 1.0
    mirrored["elbow_flex_r"] = mirrored["elbow_flex_r"] + 2.0
    f = metamorphic_figures(fit, mirrored=mirrored, dofs=dofs)
    assert f.weak_dofs == ("knee_angle_r",)
    sd = f.per_dof["still_sd_deg"]
    assert f.medians["still_sd_deg"] == pytest.approx(np.median(list(sd.values())))
    assert f.medians_observed["still_sd_deg"] == pytest.approx(np.median([sd[d] for d in dofs[1:]]))
    assert f.medians_observed["still_sd_deg"] < 1.5 < sd["knee_angle_r"]
    assert f.medians["mirror_deg"] == pytest.approx(16.0)  # 30, 30, 1, 2
    assert f.medians_observed["mirror_deg"] == pytest.approx(1.5)  # both knees out
    summary = json.loads(json.dumps(f.summary()))
    assert summary["weak_dofs"] == ["knee_angle_r"] and summary["medians_observed_deg"]["mirror_deg"] == 1.5


def test_unobserved_frames_do_not_count() -> None:
    n = 10
    angles = {d: np.zeros(n) for d in limb_dofs()}
    angles["knee_angle_r"] = np.r_[np.zeros(5), np.full(5, 90.0)]
    fit = _fake_fit(angles, n)
    fit.observed[5:] = False
    assert still_sd(fit)["knee_angle_r"] == 0.0


def test_the_bound_pictures_facing_survives_a_mirror_and_not_a_turn() -> None:
    """docs/img/metamorphic-bound.png counts the frames in which a pose model's 3D faces the camera: a mirror image
    of a person facing the camera (x negated, labels swapped) still faces it; the same person turned round does not."""
    from benchmarks.metamorphic_bound import facing_camera

    names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    # camera frame (x right, y down, z away); facing the camera, a person's left is on the image's right
    front = np.array([[[180, -500, 0], [-180, -500, 0], [100, 0, 0], [-100, 0, 0]]], float)
    front = front + np.random.default_rng(0).normal(0, 10, front.shape)
    mirrored = front[:, [1, 0, 3, 2]] * np.array([-1, 1, 1])
    turned = front * np.array([-1, 1, -1])  # 180 deg about the vertical
    assert facing_camera(front, names).tolist() == [1.0]
    assert facing_camera(mirrored, names).tolist() == [1.0]
    assert facing_camera(turned, names).tolist() == [0.0]
    front[0, 2] = np.nan
    assert np.isnan(facing_camera(front, names)).all()


@pytest.mark.slow
@pytest.mark.xfail(
    reason="issue 11 targets not met yet: messi_pan measured still 1.54, mirror 0.81, half 1.15, reverse 1.09 deg "
    "(targets 2, 3, 3, 1; FIT_VERSION 11: 2.57, 1.25, 1.58, 1.41; before the mirror average and FIT_VERSION 10: "
    "3.67, 6.14, 3.10, 2.26). What is left comes "
    "from the pose stage, not the fit: given exactly mirrored, halved or reversed keypoints, the fit alone differs "
    "by 0.28, 0.03 and 0.33 deg (reversed: 0.002 at FIT_VERSION 13); "
    "the landmark model answers a shifted, rescaled or lower-resolution crop of the same still body with "
    "differently placed joints (the still video's jitter), and the same frames merely re-encoded already differ "
    "by 0.74 deg (reencode_deg, the floor of the reverse target)",
    strict=False,
)
def test_metamorphic_suite_on_a_real_still_photo(tmp_path: Path) -> None:
    """A 3 s still-photo video (pan and zoom) of a footballer through BlazePose and the fit: every relation within
    its issue-11 target (figures logged; ``benchmarks/bench_metamorphic.py`` prints them)."""
    from mocapflow.fit.metamorphic_suite import run_suite
    from mocapflow.realdata import fetch_realdata
    from mocapflow.settings import load_settings
    from models.modelset import resolve

    settings = load_settings()
    fetch_realdata(settings.cache_dir, names=["messi5.jpg"])
    model_set = resolve("blazepose", settings.modelsets_dir, settings.cache_dir)
    figures, _ = run_suite(settings.cache_dir, model_set, seconds=3.0)
    logger.info("metamorphic figures: %s", json.dumps(figures.summary()))
    assert set(figures.medians) == {*TARGETS_DEG, "reencode_deg"}
    for key, value in figures.medians.items():
        assert key not in TARGETS_DEG or value <= TARGETS_DEG[key], (key, figures.summary())
