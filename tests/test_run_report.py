"""`mocapflow run`'s pieces without a cluster: argument sorting, the per-video lines, the QC video, and the
command's early failure on a model set that is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from mocapflow.qc import BRIDGED, NOT_OBSERVED, OBSERVED, frame_states, qc_frame, qc_video_mp4
from mocapflow.report import VideoLine, first_line, split_sources

RED, AMBER = np.array([230, 30, 30]), np.array([255, 170, 0])


def test_arguments_become_videos_a_manifest_and_a_prefix(tmp_path: Path) -> None:
    folder = tmp_path / "clinic"
    folder.mkdir()
    got = split_sources(["a.mp4", str(folder), "cohort.csv", "s3://bucket/b.MOV"])
    assert got == {
        "videos": [str(Path("a.mp4").resolve()), "s3://bucket/b.MOV"],
        "manifest": str(Path("cohort.csv").resolve()),
        "prefix": str(folder),
    }
    assert split_sources(["a.mp4"]) == {"videos": [str(Path("a.mp4").resolve())]}
    assert split_sources(["cohort.parquet"]) == {"manifest": str(Path("cohort.parquet").resolve())}
    assert split_sources(["s3://bucket/day1"])["prefix"] == "s3://bucket/day1"
    assert split_sources(["s3://bucket/day1/"])["prefix"] == "s3://bucket/day1/"
    with pytest.raises(ValueError, match="at most one manifest"):
        split_sources(["a.csv", "b.parquet"])
    with pytest.raises(ValueError, match="2 folders"):
        split_sources([str(folder), "s3://bucket/day1/"])


def test_run_arguments_of_each_kind_make_the_flows_cohort_source(tmp_path: Path) -> None:
    import typer

    from mocapflow.cli import run_source

    folder = tmp_path / "clinic"
    folder.mkdir()
    videos = run_source(["a.mp4", "s3://bucket/b.MOV"], "**/*.mp4")
    assert (videos.kind, videos.videos) == ("videos", [str(Path("a.mp4").resolve()), "s3://bucket/b.MOV"])
    manifest = run_source(["cohort.csv"], "**/*.mp4")
    assert (manifest.kind, manifest.manifest) == ("manifest", str(Path("cohort.csv").resolve()))
    prefix = run_source([str(folder)], "**/*.MOV")
    assert (prefix.kind, prefix.prefix, prefix.glob) == ("prefix", str(folder), "**/*.MOV")
    assert run_source(["s3://bucket/day1/"], "*.mp4").prefix == "s3://bucket/day1/"
    with pytest.raises(typer.BadParameter, match="exactly one source"):
        run_source(["a.mp4", str(folder)], "**/*.mp4")  # the flow takes one kind of source per run
    with pytest.raises(typer.BadParameter, match="at most one manifest"):
        run_source(["a.csv", "b.csv"], "**/*.mp4")


def test_a_summary_row_becomes_one_line_by_name_with_its_outputs() -> None:
    row = {
        "video": "s3://clinic/day1/p01.mp4",
        "subject_id": "P01",
        "status": "failed",
        "failed_stage": "pose",
        "error": "VideoError: no person found in 90 frames\nTraceback (most recent call last): ...",
        "frames": 90,
        "coverage": None,
        "fit_observed_fraction": None,
        "fit_converged": None,
        "cached": False,
        "keypoints_uri": None,
        "angles_uri": None,
    }
    line = VideoLine.from_row(row)
    assert (line.name, line.source, line.subject_id) == ("p01.mp4", row["video"], "P01")
    assert line.error == "VideoError: no person found in 90 frames" and line.outputs == {}
    ok = VideoLine.from_row(
        {**row, "status": "ok", "failed_stage": None, "error": None, "keypoints_uri": "k", "angles_uri": "a"}
    )
    assert ok.outputs == {"keypoints": "k", "joint angles": "a"} and ok.error == ""
    assert len(first_line("x" * 500)) == 160


def test_frame_states_mark_bridged_and_unfitted_frames() -> None:
    frames = np.arange(2, 8)  # the table covers frames 2..7 of a 10-frame video
    observed = np.array([1, 1, 0, 1, 0, 0], bool)
    interpolated = np.array([0, 0, 1, 0, 0, 0], bool)
    states = frame_states(10, frames, observed, interpolated)
    want = [NOT_OBSERVED] * 2 + [OBSERVED, OBSERVED, BRIDGED, OBSERVED] + [NOT_OBSERVED] * 4
    assert states.tolist() == want


def _border(img: np.ndarray) -> np.ndarray:
    return img[2, img.shape[1] // 2].astype(int)


def test_qc_frames_are_marked_when_not_observed_and_the_skeleton_only_where_found() -> None:
    frame = np.full((120, 160, 3), 60, np.uint8)
    kp = np.array([[40.0, 30.0], [80.0, 90.0], [np.nan, np.nan]])
    conf = np.array([0.9, 0.9, 0.0])
    seen = qc_frame(frame, kp, conf, [(0, 1), (1, 2)], OBSERVED, "a.mp4")
    assert np.abs(_border(seen) - 60).max() == 0  # no mark on an observed frame
    assert (seen[60, 60] == 255).all()  # the drawn limb between the two found joints
    missed = qc_frame(frame, kp, conf, [(0, 1)], NOT_OBSERVED, "a.mp4")
    bridged = qc_frame(frame, kp, conf, [(0, 1)], BRIDGED, "a.mp4")
    assert np.abs(_border(missed) - RED).max() < 5 and np.abs(_border(bridged) - AMBER).max() < 5


def test_qc_video_is_h264_yuv420p_with_every_frame(tmp_path: Path) -> None:
    n, h, w = 12, 90, 121  # odd width: yuv420p needs even sizes, the encoder gets 120
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n, h, w, 3), np.uint8)
    kp = np.tile(np.array([[[20.0, 20.0], [60.0, 70.0]]]), (n, 1, 1))
    conf = np.full((n, 2), 0.9)
    states = np.array([OBSERVED] * 6 + [NOT_OBSERVED] * 6, np.int8)
    data = qc_video_mp4([frames[:5], frames[5:]], kp, conf, [(0, 1)], states, fps=24.0, title="t")
    path = tmp_path / "qc.mp4"
    path.write_bytes(data)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    decoded = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    assert meta["codec"] == "h264" and "yuv420p" in meta["pix_fmt"] and meta["size"] == (120, 90)
    assert len(decoded) == n and meta["fps"] == pytest.approx(24.0)
    reds = [np.abs(_border(f) - RED).max() < 40 for f in decoded]
    assert reds == [False] * 6 + [True] * 6


def test_run_with_a_model_set_that_is_not_there_fails_in_one_line_before_any_cluster(tmp_path: Path) -> None:
    env = {**os.environ, "MOCAPFLOW_MODELS_DIR": str(tmp_path / "models"), "COLUMNS": "200"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("mocapflow")),
            "run",
            str(tmp_path / "a.mp4"),
            "--model",
            "metrabs",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert "model set 'metrabs' not found" in text and "Traceback" not in proc.stderr
    assert "ray" not in proc.stderr.lower() and "prefect" not in proc.stderr.lower()
