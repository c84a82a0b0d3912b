"""Bad input, clear and contained: camera files (manifest `camera` column and `<video>.camera.json` sidecars) name
the file and the field and never echo the file's content, and fail only their own video; a video where nobody is
found fails at the pose stage without committing a table; very short videos fail at probe; fit errors arriving
through Ray become one line naming the video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mocapflow.camera import Intrinsics
from mocapflow.discovery import CameraFileError, discover, parse_camera_json, read_manifest
from mocapflow.pose.pipeline import (
    CameraError,
    NoPersonError,
    PoseParams,
    read_sidecar,
    run_pose,
    sidecar_uri,
)
from mocapflow.store import Store
from mocapflow.video import VideoError, check_duration, probe
from models.modelset import ModelSet, read_local, write_manifest
from models.runtime import FrameDetections, PoseEstimator, ThreadConfig

SECRET = "sk-live-DO-NOT-LEAK-4242"  # stands for whatever private JSON a path could point at
GOOD = {"fx": 80.0, "fy": 80.0, "cx": 47.5, "cy": 31.5, "width": 96, "height": 64}


def _bad_cameras() -> dict[str, tuple[bytes, str]]:
    """name -> (file content, what the message must name); every content carries SECRET."""
    no_fx = {k: v for k, v in GOOD.items() if k != "fx"} | {"note": SECRET}
    return {
        "missing fx": (json.dumps(no_fx).encode(), "missing field 'fx'"),
        "fx is text": (json.dumps(GOOD | {"fx": SECRET}).encode(), "field 'fx' is not a finite number"),
        "zero focal": (json.dumps(GOOD | {"fy": 0, "note": SECRET}).encode(), "field 'fy' must be > 0"),
        "fractional width": (json.dumps(GOOD | {"width": 95.5, "n": SECRET}).encode(), "field 'width'"),
        "not json": (f"api_key = {SECRET}\n".encode(), "not valid JSON (line 1, column 1)"),
        "a list": (json.dumps([SECRET, 1, 2]).encode(), "holds a JSON list, not an object"),
        "any json file": (json.dumps({"aws_secret_access_key": SECRET}).encode(), "missing field 'fx', 'fy'"),
        "binary": (b"\xff\xfe" + SECRET.encode(), "not valid JSON"),
    }


@pytest.mark.parametrize("name", sorted(_bad_cameras()))
def test_camera_errors_name_file_and_field_never_content(name: str) -> None:
    content, expected = _bad_cameras()[name]
    with pytest.raises(CameraFileError) as err:
        parse_camera_json("s3://lab/cams/c1.json", content)
    msg = str(err.value)
    assert msg.startswith("camera file s3://lab/cams/c1.json: ") and expected in msg
    assert SECRET not in msg and "\n" not in msg
    assert (
        err.value.__cause__ is None and err.value.__context__ is None
    )  # no decoder error holding the document


def test_good_camera_files() -> None:
    assert parse_camera_json("c.json", json.dumps(GOOD).encode()) == Intrinsics(
        80.0, 80.0, 47.5, 31.5, 96, 64
    )
    nested = {"intrinsics": GOOD, "extrinsics": {"R": np.eye(3).tolist(), "t": [0, 0, 0]}}
    assert parse_camera_json("c.json", json.dumps(nested).encode()) == Intrinsics(
        80.0, 80.0, 47.5, 31.5, 96, 64
    )


def test_one_bad_camera_row_fails_that_video_not_the_cohort(tmp_path: Path) -> None:
    (tmp_path / "cams").mkdir()
    (tmp_path / "cams" / "good.json").write_text(json.dumps(GOOD))
    (tmp_path / "cams" / "bad.json").write_text(json.dumps({"fx": 80.0, "token": SECRET}))
    (tmp_path / "private.json").write_text(json.dumps({"password": SECRET}))
    rows = [
        ("a.mp4", "cams/good.json"),
        ("b.mp4", "cams/bad.json"),
        ("c.mp4", "private.json"),
        ("d.mp4", "cams/none.json"),
        ("e.mp4", "cams"),
    ]
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("video,camera\n" + "".join(f"{v},{c}\n" for v, c in rows))

    specs = {Path(s.uri).name: s for s in discover(manifest=str(manifest))}
    assert sorted(specs) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]
    assert specs["a.mp4"].error is None and specs["a.mp4"].intrinsics == Intrinsics(
        80.0, 80.0, 47.5, 31.5, 96, 64
    )
    assert "cams/bad.json" in specs["b.mp4"].error and "missing field 'fy'" in specs["b.mp4"].error
    assert "private.json" in specs["c.mp4"].error and "missing field 'fx'" in specs["c.mp4"].error
    assert "no such file" in specs["d.mp4"].error
    assert "is a folder" in specs["e.mp4"].error
    for s in specs.values():
        assert SECRET not in (s.error or "") and str(manifest) in (s.error or str(manifest))
        assert s.from_dict(s.to_dict()) == s  # the error travels with the spec to the probe task


def test_the_probe_task_fails_a_video_with_a_bad_camera_row() -> None:
    from tasks.stages import StageError, probe_video

    spec = {
        "uri": "/data/b.mp4",
        "intrinsics": None,
        "subject_id": None,
        "error": "camera file x.json: missing",
    }
    with pytest.raises(StageError, match=r"^/data/b\.mp4: camera file x\.json: missing$") as err:
        probe_video.fn(spec, None)  # type: ignore[arg-type]  # fails before it needs the run's runtime
    assert err.value.transient is False


def test_a_bad_sidecar_names_itself_and_the_field(tmp_path: Path) -> None:
    video = tmp_path / "walk.mp4"
    sidecar = Path(sidecar_uri(str(video)))
    assert read_sidecar(str(video)) is None
    sidecar.write_text(json.dumps({"fx": 80, "fy": 80, "cx": 40, "cy": 30, "width": 96, "comment": SECRET}))
    with pytest.raises(CameraError) as err:
        read_sidecar(str(video))
    assert str(sidecar) in str(err.value) and "missing field 'height'" in str(err.value)
    assert SECRET not in str(err.value)


def test_a_manifest_that_is_not_a_table_still_aborts_discovery(tmp_path: Path) -> None:
    """A broken manifest is the whole cohort's source (nothing to run), unlike one bad row."""
    from mocapflow.discovery import DiscoveryError

    with pytest.raises(DiscoveryError, match="no such file"):
        read_manifest(str(tmp_path / "none.csv"))


# -- nobody in the video, very short videos -------------------------------------------------------------------


class Nobody(PoseEstimator):
    """An estimator that never finds anyone."""

    def __init__(self, model_set: ModelSet) -> None:
        super().__init__(model_set, ThreadConfig(1))

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        return [FrameDetections.empty(len(self.joint_names)) for _ in frames]


@pytest.fixture(scope="module")
def empty_model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    root = tmp_path_factory.mktemp("nobody-set")
    (root / "weights.bin").write_bytes(b"none")
    write_manifest(
        root,
        name="nobody",
        kind="markers",
        version="1",
        joint_names=["head", "hip", "feet"],
        joint_edges=[[0, 1], [1, 2]],
        input_resolution=[64, 64],
        files={"backbone": {"path": "weights.bin"}},
    )
    return read_local(root)


def test_a_video_with_nobody_fails_at_pose_without_a_table(
    tmp_path: Path, write_flat_video: Any, empty_model_set: ModelSet
) -> None:
    video = tmp_path / "empty-room.mp4"
    write_flat_video(video, [100] * 7)
    store = Store(str(tmp_path / "store"))
    with pytest.raises(NoPersonError, match=r"empty-room\.mp4: no person found in 7 frames") as err:
        run_pose(str(video), Nobody(empty_model_set), store, PoseParams())
    assert isinstance(err.value, VideoError)  # a bad video: not retried
    assert store.list() == []  # no all-NaN table committed


def test_very_short_videos_fail_clearly_at_probe(tmp_path: Path, write_flat_video: Any) -> None:
    video = tmp_path / "blink.mp4"
    write_flat_video(video, [50, 60, 70], fps=10.0)  # 0.3 s
    info = probe(str(video))
    with pytest.raises(
        VideoError, match=r"blink\.mp4: 0\.30 s long \(3 frames at 10 fps\), shorter than min_video_s=0\.5"
    ):
        check_duration(info, 0.5)
    check_duration(info, 0.25)


# -- fit errors through Ray ------------------------------------------------------------------------------------


def test_fit_errors_through_ray_become_one_line_naming_the_video() -> None:
    import ray.exceptions as rex

    from tasks.stages import fit_failure

    cause = ValueError(
        "keypoints table /store/keypoints/model=ab/video=cd/keypoints.parquet has no observed frame"
    )
    tb = 'Traceback (most recent call last):\n  File "fit.py", line 3\n\x1b[36mray::fit()\x1b[39m ValueError: ...'
    err = fit_failure("s3://lab/in/a.mp4", rex.RayTaskError("fit_task", tb, cause).as_instanceof_cause())
    assert str(err) == f"s3://lab/in/a.mp4: fit failed: {cause}" and err.transient is False
    died = fit_failure("s3://lab/in/a.mp4", rex.WorkerCrashedError())
    assert died.transient is True and str(died).startswith("s3://lab/in/a.mp4: fit failed: ")
    assert "\n" not in str(died) and "\x1b" not in str(died)
