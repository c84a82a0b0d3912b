"""Honest fit outputs: observed frames and spans, no invented frames, convergence records, determinism, and a fast
accuracy check on fresh synthetic ground truth."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mocapflow.fit.clip import gait_clip, keypoints_of
from mocapflow.fit.fitting import FitOptions, fit_arrays, fit_body_model
from mocapflow.fit.outputs import ANGLES, MOT, SCALES, angles_table, mot_text, plot_png, read_mot, write_fit
from mocapflow.fit.spans import dof_support, observed_frames, pack_spans, span_basis, span_ids, weak_dofs
from mocapflow.store import Store, fit_key

GAP = slice(30, 60)  # 1 s unobserved: longer than the default 0.25 s, never fitted
SHORT_GAP = slice(70, 74)  # 4 frames (0.13 s): bridged


@pytest.fixture(scope="module")
def model():
    return fit_body_model()


def test_observed_frames_need_enough_usable_keypoints():
    n, j = 6, 10
    conf = np.ones((n, j), np.float32)
    kp2d = np.zeros((n, j, 2), np.float32)
    conf[1, :7] = 0.0  # 3 usable: fewer than the 4 a rigid pose needs
    conf[2, :6] = 0.0  # 4 usable
    kp2d[3, :7] = np.nan  # finite 2D is required too
    conf[4] = 0.0
    np.testing.assert_array_equal(
        observed_frames(kp2d, conf, min_fraction=0.3, min_keypoints=4), [1, 0, 1, 0, 0, 1]
    )
    # a fraction above 4 keypoints raises the bar: half of 10 = 5
    np.testing.assert_array_equal(
        observed_frames(kp2d, conf, min_fraction=0.5, min_keypoints=4), [1, 0, 0, 0, 0, 1]
    )


def test_a_dofs_support_is_the_best_keypoint_it_moves_not_one_on_its_axis():
    """A leg of three bodies: the hip DOF moves the knee and the ankle, the knee DOF only the ankle (the knee
    keypoint sits on its joint centre); a missing 2D position counts as no support."""
    from models.body import Body, BodyModel, Dof, Site

    model = BodyModel(
        "leg",
        bodies=(
            Body("pelvis", -1, (0.0, 0.0, 0.0)),
            Body("thigh", 0, (0.0, -0.1, 0.1), dofs=(0,)),
            Body("shank", 1, (0.0, -0.4, 0.0), dofs=(1,)),
        ),
        dofs=(Dof("hip", "hinge", (0, 0, 1), -2, 2), Dof("knee", "hinge", (0, 0, 1), -2, 0)),
        sites=(
            Site("hip", 0, (0.0, -0.1, 0.1)),
            Site("knee", 2, (0.0, 0.0, 0.0)),
            Site("ankle", 2, (0, -0.4, 0)),
        ),
    )
    conf = np.array([[0.9, 0.8, 0.3], [0.9, 0.2, 0.6], [0.9, 0.8, 0.9]], np.float32)
    kp2d = np.zeros((3, 3, 2), np.float32)
    kp2d[2, 2] = np.nan  # the ankle not found in the last frame
    support = dof_support(model, (0, 1, 2), kp2d, conf)
    np.testing.assert_allclose(support[:, 0], [0.8, 0.6, 0.8])  # hip: best of knee and ankle
    np.testing.assert_allclose(support[:, 1], [0.3, 0.6, 0.0])  # knee: the ankle alone
    assert weak_dofs(support, np.array([True, True, True]), model.dof_names) == {"knee": 0.3}
    assert weak_dofs(support, np.array([False, True, False]), model.dof_names) == {}


def test_spans_bridge_short_gaps_only_and_pack_without_sharing_control_points():
    observed = np.zeros(40, bool)
    observed[[2, 3, 4, 6, 7, 10, 11, 25, 26, 27, 28, 39]] = True
    span = span_ids(observed, max_gap_frames=3)
    # 2..11 (gaps of 1 and 2 bridged), 25..28 (gap of 13 not), 39 alone (gap of 10 not); ends are not fitted
    expected = np.full(40, -1)
    expected[2:12], expected[25:29], expected[39] = 0, 1, 2
    np.testing.assert_array_equal(span, expected)
    np.testing.assert_array_equal(span_ids(observed, max_gap_frames=0)[[5, 8, 9]], [-1, -1, -1])

    layout = pack_spans(span)
    assert layout.n_bucket == 64 and layout.bounds == ((2, 11), (25, 28), (39, 39))
    rows = layout.rows[: 10 + 1 + 4 + 1 + 1]
    np.testing.assert_array_equal(rows, [*range(2, 12), -1, *range(25, 29), -1, 39])
    assert np.all(layout.rows[17:] == -1) and layout.mask.sum() == 15
    dense = np.arange(40.0)[:, None] * [1.0, -1.0]
    back = layout.unpack(layout.pack(dense, np.nan), 40)
    np.testing.assert_array_equal(back[span >= 0], dense[span >= 0])
    assert np.isnan(back[span < 0]).all()

    basis = span_basis(layout, fps=30.0, knots_per_second=8.0)
    assert basis.shape[0] == 64
    used = basis != 0
    np.testing.assert_allclose(
        basis[layout.rows >= 0].sum(axis=1), 1.0, atol=1e-6
    )  # each span: partition of 1
    assert not used[layout.rows < 0].any()  # separators and padding: no trajectory
    span_of_row = np.where(layout.rows >= 0, span[np.maximum(layout.rows, 0)], -1)
    for col in used.T:  # every control point belongs to one span: no curve runs through a long gap
        assert len(set(span_of_row[col])) <= 1


@pytest.fixture(scope="module")
def gap_clip(model):
    return gait_clip(model, 90)


@pytest.fixture(scope="module")
def gap_fit(model, gap_clip):
    meta, arrays = keypoints_of(gap_clip)
    for sl in (GAP, SHORT_GAP):
        arrays["conf"][sl] = 0.0
        arrays["kp2d_px"][sl] = np.nan
        arrays["kp3d_mm"][sl] = np.nan
    return fit_arrays(meta, arrays, FitOptions(max_iters=600), model)


def test_long_gaps_are_not_fitted_and_marked_in_every_output(tmp_path, model, gap_clip, gap_fit):
    r = gap_fit
    expected_span = np.zeros(90, int)
    expected_span[GAP], expected_span[60:] = -1, 1
    np.testing.assert_array_equal(r.span, expected_span)
    assert np.isnan(r.q[GAP]).all() and np.isfinite(r.q[r.span >= 0]).all()
    assert np.flatnonzero(r.interpolated).tolist() == list(range(70, 74))
    assert r.observed_fraction == pytest.approx(56 / 90)
    assert np.isnan(r.residual_2d_px[GAP]).all() and (r.n_valid[GAP] == 0).all()
    # a structural check, not an accuracy one (600 steps on a 1 s span): the bridged frames hold the right knee's
    # peak, which the smooth curve overshoots (measured 5-12 deg); the span's observed frames: median 5.1 deg
    knee = model.dof_index("knee_angle_r")
    err = np.abs(np.degrees(r.q[:, knee] - gap_clip.q[:, knee]))
    assert np.max(err[SHORT_GAP]) < 20.0 and np.median(err[60:]) < 10.0

    table = angles_table(r)
    assert table.column_names[:5] == ["frame", "time_s", "observed", "interpolated", "span"]
    assert table.column("interpolated").to_numpy().sum() == 4
    status = json.loads(table.schema.metadata[b"fit"])
    assert isinstance(status["converged"], bool) and status["iterations"] == r.info.iterations
    assert "rel_loss_change" in status and status["unfitted_frames"] == 30
    assert status["spans_s"] == [
        [0.0, pytest.approx(29 / 30, abs=1e-5)],
        [2.0, pytest.approx(89 / 30, abs=1e-5)],
    ]

    header, columns, values = read_mot(mot_text(r))
    assert int(header["nRows"]) == 60 and columns[0] == "time"
    assert not np.any((values[:, 0] > 0.99) & (values[:, 0] < 1.99))  # no row inside the long gap
    assert header["mocapflow_spans"] == "0.000000-0.966667;2.000000-2.966667"
    assert np.isfinite(values).all()

    store = Store(str(tmp_path / "store"))
    prefix, _ = write_fit(store, r)
    angles = pq.read_table(tmp_path / "store" / prefix / ANGLES)
    assert np.isnan(angles.column("knee_angle_r").to_numpy()[GAP]).all()
    scales = store.get_json(fit_key(prefix, SCALES))
    assert scales["fit"]["converged"] == r.info.converged and scales["fit"]["observed_frames"] == 56
    assert scales["fit"]["preprocessing"] == r.preprocessing and r.preprocessing["rigid_outliers_3d"] == 0
    assert store.get_bytes(fit_key(prefix, MOT)).decode().count("\n") == 60 + 10
    assert plot_png(r)[:8] == b"\x89PNG\r\n\x1a\n"


def test_weakly_observed_dofs_are_named_in_every_output(tmp_path, model, gap_fit):
    """The fit's support (0 in the unobserved gap, full where the markers are seen); a DOF whose keypoints the pose
    model doubts is listed in the angles metadata, scales.json, the .mot header, drawn dotted and starred in the
    run summary's range of motion."""
    from dataclasses import replace
    from types import SimpleNamespace

    from tasks.stages import angles_summary

    knee = model.dof_index("knee_angle_r")
    assert gap_fit.dof_support.shape == gap_fit.q.shape
    assert (gap_fit.dof_support[GAP] == 0).all() and (gap_fit.dof_support[gap_fit.observed, knee] == 1).all()
    assert gap_fit.weak_dofs == {}
    support = gap_fit.dof_support.copy()
    support[:, knee] = 0.2
    r = replace(gap_fit, dof_support=support)
    assert r.weak_dofs == {"knee_angle_r": 0.2}

    table = angles_table(r)
    assert table.column("dof_support").type.list_size == model.n_dofs
    np.testing.assert_allclose(
        np.stack(table.column("dof_support").to_numpy(zero_copy_only=False))[:, knee], 0.2
    )
    assert json.loads(table.schema.metadata[b"fit"])["weak_dofs"] == {"knee_angle_r": 0.2}
    header, _, _ = read_mot(mot_text(r))
    assert header["mocapflow_weak_dofs"] == "knee_angle_r"
    assert read_mot(mot_text(gap_fit))[0]["mocapflow_weak_dofs"] == "none"

    store = Store(str(tmp_path / "store"))
    prefix, _ = write_fit(store, r)
    assert store.get_json(fit_key(prefix, SCALES))["fit"]["weak_dofs"] == {"knee_angle_r": 0.2}
    summary = angles_summary(SimpleNamespace(store=store), prefix)
    assert summary.endswith("; * weakly observed") and "knee " in summary
    knees = summary.split("knee ")[1].split(",")[0]
    assert knees.count("*") == 1 and knees.split("/")[0].endswith("*")  # the right knee only
    assert plot_png(r) != plot_png(gap_fit)  # dotted, with its own label


def test_the_fit_is_deterministic(model, gap_clip, gap_fit):
    """The same keypoints give the same angles: a second fit agrees with the first to 1e-3 deg on every frame."""
    meta, arrays = keypoints_of(gap_clip)
    for sl in (GAP, SHORT_GAP):
        arrays["conf"][sl] = 0.0
        arrays["kp2d_px"][sl] = np.nan
        arrays["kp3d_mm"][sl] = np.nan
    again = fit_arrays(meta, arrays, gap_fit.options, model)
    fitted = gap_fit.fitted
    np.testing.assert_array_equal(again.span, gap_fit.span)
    assert np.max(np.abs(np.degrees(again.q[fitted] - gap_fit.q[fitted]))) <= 1e-3
    assert again.info.iterations == gap_fit.info.iterations


def test_fast_accuracy_on_a_fresh_synthetic_video():
    """One 2 s synthetic walking video (fresh subject, camera and noise from the seed), clean and noisy keypoints.

    Bounds set on seeds 0-6 with the default options, then checked on held-out seeds 7-11 (median error per video):
    clean 0.82-1.43 deg on 0-6 (bound 2.5 = 1.75 x the worst), 0.51-1.95 on 7-11; noisy 2.2-3.3 deg on 0-6 except
    seed 4 at 6.1 (a depth-ambiguous view that the previous optimiser, 4000 steps, also left at 6.0 deg; bound
    7.5 = 1.2 x the worst), 1.9-3.1 on 7-11 except seed 10 at 6.8. The noisy bound therefore only catches gross
    failures; the clean one is tight. Seed 0 is checked here (clean 1.43, noisy 2.92); the fit is deterministic.
    """
    from mocapflow.fit.validate import ValidationSpec, validate_fit

    summary = validate_fit(ValidationSpec(n_videos=1, seconds=2.0, seed=0), FitOptions())
    assert summary["mjae_clean_deg"] <= 2.5
    assert summary["mjae_noisy_deg"] <= 7.5
    assert summary["spec"]["seed"] == 0 and len(summary["videos"]) == 2
    # 5 % of frames dropped at random: single frames, bridged (only a dropped first or last frame is not fitted)
    assert all(v["fitted_fraction"] >= 0.9 for v in summary["videos"])


def test_fit_record_reports_convergence_and_observed_fraction(tmp_path, gap_clip, gap_fit):
    """What ``fit_keypoints`` returns (and the flows put into summary.parquet and the per-video artifact)."""
    from mocapflow.fit.clip import keypoints_table
    from mocapflow.fit.run import fit_keypoints
    from mocapflow.store import keypoints_key, keypoints_prefix

    del gap_fit  # fitted first: its compiled block has the shapes used here
    meta, arrays = keypoints_of(gap_clip)
    for sl in (GAP, SHORT_GAP):
        arrays["conf"][sl] = 0.0
        arrays["kp2d_px"][sl] = np.nan
        arrays["kp3d_mm"][sl] = np.nan
    src = Store(str(tmp_path / "in"))
    key = keypoints_key(meta.video_sha256, meta.model_id, meta.params)
    src.write_table(key, keypoints_table(meta, arrays))
    src.commit(keypoints_prefix(meta.video_sha256, meta.model_id, meta.params), {"rows": 90})
    record = fit_keypoints(src.uri(key), Store(str(tmp_path / "out")), FitOptions(max_iters=200))
    assert record["converged"] is False and record["iterations"] == 200  # one block: nothing to compare with
    assert record["rel_loss_change"] is None
    assert record["observed_fraction"] == pytest.approx(56 / 90) and record["spans"] == 2


def test_a_3d_keypoint_off_its_rigid_body_is_dropped_and_counted(model, gap_clip, gap_fit):
    """A pelvis marker placed 40 cm too deep in three frames (full confidence): its 3D is dropped there before the
    fit, and scales.json says how many observations preprocessing dropped."""
    del gap_fit  # fitted first: its compiled block has the shapes used here
    meta, arrays = keypoints_of(gap_clip)
    j = list(meta.joint_names).index("lasis")
    arrays["kp3d_mm"][80:83, j, 2] += 400.0
    result = fit_arrays(meta, arrays, FitOptions(max_iters=200), model)
    assert result.preprocessing["rigid_outliers_3d"] == 3


def test_plots_and_messages_name_the_video_by_its_file_and_subject(gap_clip):
    import dataclasses

    meta, _ = keypoints_of(gap_clip)
    named = dataclasses.replace(meta, source="s3://lab/cohort/Walk_03.mp4", subject_id=None)
    assert named.label == "Walk_03.mp4"
    assert dataclasses.replace(named, subject_id="P07").label == "P07, Walk_03.mp4"
    # a table written before the source was recorded: the start of the video's hash
    assert dataclasses.replace(meta, source=None, subject_id=None).label == f"video {meta.video_sha256[:12]}"
