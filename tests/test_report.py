"""Run reports and flow parameters without services: artifact keys, the final message, the partial-failure state's
data, the engine-traceback filter, plot links on a local store, and the source rule."""

from __future__ import annotations

import base64
import logging
import pickle
import re
from pathlib import Path

import pytest

from mocapflow.report import RunFailed, artifact_key, empty_row, outcome, video_markdown


def test_artifact_keys_are_valid_readable_and_keep_same_named_videos_apart() -> None:
    a = artifact_key("video", "Walk_01 (take 2).MP4", unique="s3://lab/a/Walk_01 (take 2).MP4")
    b = artifact_key("video", "Walk_01 (take 2).MP4", unique="s3://lab/b/Walk_01 (take 2).MP4")
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", a) and a.startswith("video-walk-01-take-2-mp4-")
    assert a != b and len(a) == len(b)
    long = artifact_key("video", "x" * 300, unique="u")
    assert len(long) <= 60 and re.fullmatch(r"[a-z0-9-]+", long)
    assert artifact_key("nightly-cohort", "summary") == "nightly-cohort-summary"
    assert artifact_key("backfill-Résumé 2", "summary") == "backfill-r-sum-2-summary"


def _rows() -> list[dict]:
    ok = empty_row("/data/a.mp4")
    ok.update(frames=30, frames_detected=30, coverage=1.0, plot_uri="/store/p.png")
    low = empty_row("/data/b.mp4")
    low.update(status="low_coverage", frames=30, frames_detected=9, coverage=0.3)
    bad = empty_row("s3://lab/c.mp4")
    bad.update(status="failed", failed_stage="probe", error="VideoError: not a video")
    return [ok, low, bad]


def test_outcome_names_failed_and_low_coverage_videos() -> None:
    rows = _rows()
    end = outcome(rows, 0.5)
    assert end.failed
    assert end.message == (
        "1 of 3 videos failed: c.mp4 (probe: VideoError: not a video); "
        "1 with the subject in under 50 % of frames: b.mp4 (9/30)"
    )
    assert outcome(rows[:1], 0.5) == type(end)(False, "all 1 videos processed")


def test_a_partly_failed_runs_data_pickles_with_its_summary() -> None:
    err = pickle.loads(pickle.dumps(RunFailed("1 of 3 videos failed", {"rows": _rows()})))
    assert str(err) == "1 of 3 videos failed" and len(err.summary["rows"]) == 3


def test_video_markdown_shows_status_error_and_plot() -> None:
    ok, low, bad = _rows()
    md = video_markdown(ok, 0.5, "data:image/jpeg;base64,AAAA")
    assert (
        md.startswith("### a.mp4\nsource: `/data/a.mp4`") and "![joint angles of a.mp4](data:image/jpeg" in md
    )
    assert "**warning: the subject was found in only 9 of 30 frames (30 % < 50 %)**" in video_markdown(
        low, 0.5
    )
    bad_md = video_markdown(bad, 0.5)
    assert "status: **failed** at probe: VideoError: not a video" in bad_md and "![" not in bad_md


def test_the_engine_traceback_of_a_partly_failed_run_is_dropped_and_nothing_else() -> None:
    from tasks.publish import _NoTracebackForRunFailed

    f = _NoTracebackForRunFailed()

    def record(msg: str, exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, msg, None, info)

    engine = "Engine execution exited with unexpected exception"
    assert not f.filter(record(engine, RunFailed("1 of 2 videos failed", {})))
    assert f.filter(record(engine, ValueError("a real bug")))
    assert f.filter(record("something else", RunFailed("x", {})))


def test_plot_link_on_a_local_store_is_an_embedded_jpeg(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from mocapflow.store import Store
    from tasks.publish import plot_link

    store = Store(str(tmp_path))
    img = np.full((1400, 1000, 3), 255, np.uint8)
    cv2.line(img, (0, 0), (999, 1399), (0, 0, 255), 5)
    store.put_bytes("fits/x/angles.png", cv2.imencode(".png", img)[1].tobytes())
    url = plot_link(store, store.uri("fits/x/angles.png"))
    assert url is not None and url.startswith("data:image/jpeg;base64,")
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (980, 700, 3) and thumb[490, 350, 2] > 200  # scaled, the red line still there
    assert plot_link(store, "/elsewhere/angles.png") is None and plot_link(store, None) is None
    assert plot_link(store, store.uri("fits/missing.png")) is None  # a missing plot: no link, no failure


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        ({"videos": ["a.mp4"]}, "videos"),
        ({"manifest": "m.csv"}, "manifest"),
        ({"prefix": "s3://b/in"}, "prefix"),
    ],
)
def test_source_is_exactly_one_of_videos_manifest_prefix(given: dict, kind: str) -> None:
    from flows.params import CohortSource

    src = CohortSource.model_validate(given)
    assert src.kind == kind and CohortSource.model_validate(src.model_dump()).kind == kind


@pytest.mark.parametrize(
    ("given", "got"),
    [
        ({}, "none of them"),
        ({"videos": ["a"], "prefix": "p"}, "videos and prefix"),
        ({"videos": []}, "none of them"),
    ],
)
def test_a_wrong_source_fails_with_the_rule(given: dict, got: str) -> None:
    from pydantic import ValidationError

    from flows.params import SOURCE_RULE, CohortSource

    with pytest.raises(ValidationError) as e:
        CohortSource.model_validate(given)
    assert f"{SOURCE_RULE}; got {got}" in str(e.value)


def test_run_options_given_fields_override_the_settings_and_defaults_do_not(monkeypatch) -> None:
    from flows.params import RunOptions

    monkeypatch.setenv("MOCAPFLOW_FIT_MAX_ITERS", "77")
    assert RunOptions(storage_root="/tmp/x").settings().fit_max_iters == 77
    assert RunOptions(fit_max_iters=5).settings().fit_max_iters == 5
    assert RunOptions.model_validate({}).settings().fit_max_iters == 77
