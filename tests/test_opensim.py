"""OpenSim-ready outputs: the exported .osim is the body model (OpenSim's own kinematics agree with ours), the fitted
.mot loads on it, and OpenSim's inverse kinematics on the .trc of virtual markers gives mocapflow's angles back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from mocapflow.fit.clip import gait_clip, keypoints_of
from mocapflow.fit.fitting import FitOptions, FitResult, fit_arrays, fit_body_model
from mocapflow.fit.osim import markers_trc, model_osim, virtual_markers
from mocapflow.fit.outputs import mot_text
from models.body import Body, BodyModel, Dof, Site, default_body_model, make_fk
from models.opensim_export import OpenSimExportError, osim_text, trc_text

osim = pytest.importorskip("opensim")

NAMES = (
    "rhip", "lhip", "rkne", "lkne", "rank", "lank", "rhee", "lhee", "rtoe", "ltoe", "rsho", "lsho",
    "relb", "lelb", "rwri", "lwri", "thor", "head", "nose",
)  # fmt: skip


def _random_poses(model: BodyModel, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.maximum(model.lower, -1.3), np.minimum(model.upper, 1.3)
    return rng.uniform(lo, hi, size=(n, model.n_dofs))


def test_osim_xml_names_every_dof_with_its_limits_and_every_site() -> None:
    model = default_body_model()
    root = ET.fromstring(osim_text(model))
    coords = {c.get("name"): c for c in root.iter("Coordinate")}
    assert sorted(coords) == sorted(model.dof_names)
    for d in model.dofs:
        lo, hi = map(float, coords[d.name].findtext("range").split())
        assert (lo, hi) == pytest.approx((d.lower, d.upper))
    assert [m.get("name") for m in root.iter("Marker")] == model.site_names
    assert [b.get("name") for b in root.find(".//BodySet/objects")] == model.body_names


def test_export_refuses_what_a_custom_joint_cannot_express() -> None:
    anchored = BodyModel(
        "anchored",
        (Body("root", -1, (0, 0, 0), dofs=(0,)),),
        (Dof("hinge", "hinge", (0, 0, 1), -1.0, 1.0, anchor=(0.1, 0, 0)),),
        (Site("tip", 0, (0.2, 0, 0)),),
    )
    with pytest.raises(OpenSimExportError, match="anchor"):
        osim_text(anchored)
    with pytest.raises(OpenSimExportError, match="body_scale"):
        osim_text(default_body_model(), np.ones(3))


def test_trc_marks_missing_markers_as_blank_cells() -> None:
    pos = np.array([[[0.1, 0.2, 0.3], [np.nan, np.nan, np.nan]]])
    text = trc_text(["a", "b"], pos, np.array([0.0]), 30.0)
    lines = text.splitlines()
    assert lines[2].split("\t")[:5] == ["30", "30", "1", "2", "mm"]
    assert lines[6].split("\t") == ["1", "0.000000", "100.0000", "200.0000", "300.0000", "", "", ""]


def test_opensim_kinematics_of_the_exported_model_equal_ours(tmp_path: Path) -> None:
    """Markers placed by OpenSim at random poses (every DOF far from zero) sit where our FK puts the sites."""
    model = default_body_model()
    scales = np.random.default_rng(3).uniform(0.85, 1.15, len(model.bodies))
    path = tmp_path / "subject.osim"
    path.write_text(osim_text(model, scales))
    q = _random_poses(model, 4, seed=4)
    ours = np.asarray(make_fk(model)(q, scales))
    om = osim.Model(str(path))
    state = om.initSystem()
    coords, marks = om.getCoordinateSet(), om.getMarkerSet()
    for qi, si in zip(q, ours, strict=True):
        for d, v in zip(model.dof_names, qi, strict=True):
            coords.get(d).setValue(state, float(v), False)
        om.realizePosition(state)
        theirs = np.array([marks.get(n).getLocationInGround(state).to_numpy() for n in model.site_names])
        assert np.abs(theirs - si).max() < 1e-5


@pytest.fixture(scope="module")
def fitted() -> FitResult:
    model = fit_body_model()
    meta, arrays = keypoints_of(gait_clip(model, 48), NAMES)
    return fit_arrays(
        meta, arrays, FitOptions(max_iters=300), model
    )  # IK agreement needs a fit, not a good one


def test_fit_outputs_load_in_opensim_and_its_ik_agrees(fitted: FitResult, tmp_path: Path) -> None:
    model = fitted.model
    (tmp_path / "subject.osim").write_text(model_osim(fitted))
    (tmp_path / "angles.mot").write_text(mot_text(fitted))
    (tmp_path / "markers.trc").write_text(markers_trc(fitted))

    om = osim.Model(str(tmp_path / "subject.osim"))
    om.initSystem()
    cs = om.getCoordinateSet()
    assert sorted(cs.get(i).getName() for i in range(cs.getSize())) == sorted(model.dof_names)
    for d in model.dofs:
        assert cs.get(d.name).getRangeMin() == pytest.approx(d.lower)
        assert cs.get(d.name).getRangeMax() == pytest.approx(d.upper)

    # the .mot plays on the model: its columns are the model's coordinates, in range (degrees / metres)
    mot = osim.TimeSeriesTable(str(tmp_path / "angles.mot"))
    labels = list(mot.getColumnLabels())
    assert labels == model.dof_names
    values = mot.getMatrix().to_numpy()
    rot = np.array([d.kind == "hinge" for d in model.dofs])
    lo = np.where(rot, np.rad2deg(model.lower), model.lower)
    hi = np.where(rot, np.rad2deg(model.upper), model.upper)
    finite = np.isfinite(values)
    assert ((values >= lo - 1e-3) & (values <= hi + 1e-3))[finite].all()
    assert osim.Storage(str(tmp_path / "angles.mot")).isInDegrees()

    # OpenSim's own IK on the virtual markers gives the fitted angles back
    names, _pos, t = virtual_markers(fitted)
    assert len(names) == len(model.sites) and t.size > 0
    tool = osim.InverseKinematicsTool()
    tool.set_model_file(str(tmp_path / "subject.osim"))
    tool.set_marker_file(str(tmp_path / "markers.trc"))
    tool.setStartTime(float(t[0]))
    tool.setEndTime(float(t[-1]))
    tool.set_output_motion_file(str(tmp_path / "ik.mot"))
    tool.set_report_errors(False)
    tool.setResultsDir(str(tmp_path))
    assert tool.run()
    ik = osim.TimeSeriesTable(str(tmp_path / "ik.mot"))
    ik_values = ik.getMatrix().to_numpy()
    ik_labels = list(ik.getColumnLabels())
    rows = np.asarray(fitted.observed, bool) & np.isfinite(fitted.q).all(axis=1)
    ours = np.rad2deg(fitted.q[rows])
    err = [
        np.abs(ik_values[:, ik_labels.index(d.name)] - ours[:, i])
        for i, d in enumerate(model.dofs)
        if d.kind == "hinge"
    ]
    assert ik_values.shape[0] == rows.sum()
    assert np.median(np.concatenate(err)) < 2.0
    # and not by luck of the median: the well-observed joints agree everywhere
    for name in ("hip_flexion_r", "knee_angle_r", "hip_flexion_l", "knee_angle_l", "elbow_flex_r"):
        i = model.dof_index(name)
        assert np.abs(ik_values[:, ik_labels.index(name)] - ours[:, i]).max() < 2.0
