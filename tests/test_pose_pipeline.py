"""The pose pipeline on real (tiny) H.264 videos with a scripted estimator, and S3 on loopback.

The scripted estimator reads each frame's index from its grey level and returns detections scripted for that frame,
so the tests know exactly what every row of the keypoints table must hold.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from infra.s3server import S3Server
from mocapflow.camera import Intrinsics
from mocapflow.keypoints import read_arrays, read_tracks_arrays
from mocapflow.pose.pipeline import (
    CameraError,
    PoseParams,
    detect_all,
    estimate_keypoints,
    estimate_people,
    pose_tables,
    run_pose,
    sidecar_uri,
    subject_from_tracks,
    switch_subject,
    tracks_key,
)
from mocapflow.pose.tracking import SubjectTrackError, TrackerConfig
from mocapflow.pose.validate import compare, compare_with_truth, summarise
from mocapflow.store import KeyNotFoundError, Store, keypoints_key
from mocapflow.synth import GroundTruth
from mocapflow.video import VideoError
from models.modelset import ModelSet, read_local, write_manifest
from models.runtime import FrameDetections, PoseEstimator, StatelessSession, ThreadConfig

W, H, FPS = 96, 64, 10.0
JOINTS = ["head", "hip", "feet"]


# -- helpers ------------------------------------------------------------------------------------------------


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round((float(f.mean()) - 4) / 8) for f in frames]


def person(cx: float, cy: float, w: float = 20.0, h: float = 40.0, score: float = 0.9) -> FrameDetections:
    kp2d = np.array([[[cx, cy - 0.4 * h], [cx, cy], [cx, cy + 0.4 * h]]], np.float32)
    kp3d = np.concatenate([kp2d - 40.0, np.full((1, 3, 1), 2500.0, np.float32)], axis=-1)
    return FrameDetections(
        boxes=np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], np.float32),
        scores=np.array([score], np.float32),
        kp2d=kp2d,
        kp3d=kp3d,
        conf=np.array([[0.9, 0.8, 0.7]], np.float32),
    )


def merge(*dets: FrameDetections) -> FrameDetections:
    return FrameDetections(
        *(np.concatenate([getattr(d, f) for d in dets]) for f in ("boxes", "scores", "kp2d", "kp3d", "conf"))
    )


class ScriptedEstimator(PoseEstimator):
    """Detections scripted per frame index (read from the frame's grey level)."""

    def __init__(
        self, model_set: ModelSet, threads: ThreadConfig, script: Callable[[int], FrameDetections]
    ) -> None:
        super().__init__(model_set, threads)
        self.script = script
        self.batches: list[list[int]] = []

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        idx = frame_indices(frames)
        self.batches.append(idx)
        return [self.script(i) for i in idx]


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    root = tmp_path_factory.mktemp("scripted-set")
    (root / "weights.bin").write_bytes(b"scripted")
    write_manifest(
        root,
        name="scripted",
        kind="markers",
        version="1",
        joint_names=JOINTS,
        joint_edges=[[0, 1], [1, 2]],
        input_resolution=[64, 64],
        files={"backbone": {"path": "weights.bin"}},
    )
    return read_local(root)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, write_flat_video) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pose-videos")
    paths = {name: root / f"{name}.mp4" for name in ("walk", "sidecar", "empty", "garbage")}
    # frame i is a flat grey of level 8 i + 4 (lossless), so the estimator can read i back
    write_flat_video(paths["walk"], [8 * i + 4 for i in range(23)])
    write_flat_video(paths["sidecar"], [8 * i + 4 for i in range(4)])
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return paths


def walk_script(i: int) -> FrameDetections:
    """Subject walks right in every frame except 9-11 (bridged); a passer-by appears in frames 3-5."""
    if 9 <= i <= 11:
        return FrameDetections.empty(3)
    subject = person(20 + 2 * i, 32)
    return merge(person(80, 30, score=0.95), subject) if 3 <= i <= 5 else subject


def assert_same_table(got: pa.Table, want: pa.Table) -> None:
    """Same schema, metadata and values (NaN equal to NaN)."""
    assert got.schema.metadata == want.schema.metadata and got.schema == want.schema
    _, a = read_arrays(got)
    _, b = read_arrays(want)
    for name, values in b.items():
        np.testing.assert_array_equal(a[name], values, err_msg=name)


def fov_intrinsics(fov_deg: float) -> Intrinsics:
    f = (W / 2) / math.tan(math.radians(fov_deg) / 2)
    return Intrinsics(f, f, (W - 1) / 2, (H - 1) / 2, W, H)


# -- tests --------------------------------------------------------------------------------------------------


def test_table_rows_hold_the_subject_frame_by_frame(model_set: ModelSet, videos: dict[str, Path]) -> None:
    est = ScriptedEstimator(model_set, ThreadConfig(1), walk_script)
    progress: list[tuple[int, int]] = []
    params = PoseParams(batch_size=5, default_fov_deg=60.0)
    table = estimate_keypoints(
        str(videos["walk"]),
        est,
        fov_intrinsics(60.0),
        params,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    # decoded in batches of 5, in order, each frame once
    assert est.batches == [list(range(s, min(s + 5, 23))) for s in range(0, 23, 5)]
    assert progress == [(5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]
    meta, a = read_arrays(table)
    assert a["frame"].tolist() == list(range(23))
    np.testing.assert_allclose(a["time_s"], np.arange(23) / FPS)
    seen = [i for i in range(23) if not 9 <= i <= 11]
    for i in seen:
        np.testing.assert_array_equal(a["kp2d_px"][i], person(20 + 2 * i, 32).kp2d[0])
        np.testing.assert_array_equal(a["box"][i], person(20 + 2 * i, 32).boxes[0])
    np.testing.assert_allclose(a["conf"][seen], np.tile([0.9, 0.8, 0.7], (len(seen), 1)))
    np.testing.assert_array_equal(a["kp3d_mm"][4], person(28, 32).kp3d[0])
    gap = slice(9, 12)
    assert (
        np.isnan(a["kp2d_px"][gap]).all() and (a["conf"][gap] == 0).all() and (a["box_score"][gap] == 0).all()
    )
    assert set(a["track_id"][seen].tolist()) == {0}
    # metadata
    assert (meta.width, meta.height, meta.n_frames, meta.fps) == (W, H, 23, pytest.approx(FPS))
    assert meta.intrinsics == fov_intrinsics(60.0)
    assert list(meta.joint_names) == JOINTS and meta.joint_edges == ((0, 1), (1, 2))
    assert (meta.model_id, meta.model_name) == (model_set.id, "scripted")
    assert meta.video_sha256 == hashlib.sha256(videos["walk"].read_bytes()).hexdigest()
    # coverage and every person tracked: the subject (track 0) and the passer-by of frames 3-5 (track 1)
    assert (meta.frames_detected, meta.coverage, meta.subject_track_id) == (20, 20 / 23, 0)
    assert [
        (t["track_id"], t["first_frame"], t["last_frame"], t["frames_detected"]) for t in meta.tracks
    ] == [
        (0, 0, 22, 20),
        (1, 3, 5, 3),
    ]
    assert meta.tracks[1]["mean_box_px"] == pytest.approx(math.sqrt(20 * 40))
    assert meta.tracks[1]["mean_score"] == pytest.approx(0.95)
    # the passer-by's box centre (80, 30) is 32.5 px right and 1.5 px above the image centre (47.5, 31.5)
    assert meta.tracks[1]["centre_offset"] == pytest.approx(math.hypot(32.5, 1.5) / math.hypot(W, H))


def test_run_pose_writes_one_committed_table_under_its_content_key(
    model_set: ModelSet, videos: dict[str, Path], s3_server: S3Server, s3_bucket: str
) -> None:
    store = Store(f"s3://{s3_bucket}/cohort", s3_server.storage_options())
    est = ScriptedEstimator(model_set, ThreadConfig(1), walk_script)
    params = PoseParams(batch_size=7, tracker=TrackerConfig(max_gap_frames=5), default_fov_deg=50.0)
    result = run_pose(str(videos["walk"]), est, store, params)

    sha = hashlib.sha256(videos["walk"].read_bytes()).hexdigest()
    intr = fov_intrinsics(50.0)
    expected_params = {
        "tracker": {
            "max_gap_frames": 5,
            "subject": "longest",
            "min_iou": 0.1,
            "max_kp_dist": 0.5,
            "gap_growth": 0.25,
            "gap_penalty": 0.02,
            "min_subject_fraction": 0.5,
        },
        "intrinsics": {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy, "width": W, "height": H},
        "keypoints_schema": 3,
    }
    phash = hashlib.sha256(
        json.dumps(expected_params, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    prefix = f"keypoints/model={model_set.id}/video={sha}/params={phash}"
    assert result.key == f"{prefix}/keypoints.parquet"
    assert result.uri == f"s3://{s3_bucket}/cohort/{result.key}"
    assert (result.rows, result.frames, result.video_sha256) == (23, 23, sha)
    assert result.fps_processed == pytest.approx(23 / result.seconds)

    # what is in S3 equals what the pipeline builds for the same input, metadata included
    written = store.read_table(result.key)
    rebuilt = estimate_keypoints(
        str(videos["walk"]), ScriptedEstimator(model_set, ThreadConfig(1), walk_script), intr, params
    )
    meta, got = read_arrays(written)
    meta_built, built = read_arrays(rebuilt)
    assert meta == meta_built and written.schema.metadata == rebuilt.schema.metadata
    for name, values in built.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert result.bytes == len(store.get_bytes(result.key))
    assert meta.params == expected_params
    success = store.get_json(f"{prefix}/_SUCCESS.json")
    assert success["rows"] == 23 and success["bytes"] == result.bytes
    assert success["inputs"]["video_sha256"] == sha and success["inputs"]["params"] == expected_params
    assert store.list(prefix) == [f"{prefix}/_SUCCESS.json", f"{prefix}/keypoints.parquet"]
    people = prefix.replace("keypoints/", "tracks/", 1)
    assert store.list(people) == [f"{people}/_SUCCESS.json", f"{people}/tracks.parquet"]
    # coverage: the subject is missing in frames 9-11 of 23; two people were tracked
    assert (result.frames_detected, result.coverage, result.n_tracks) == (20, pytest.approx(20 / 23), 2)
    assert (success["frames_detected"], success["n_frames"], success["coverage"]) == (20, 23, 20 / 23)
    assert result.tracks_uri == f"s3://{s3_bucket}/cohort/{people}/tracks.parquet"
    assert store.get_json(f"{people}/_SUCCESS.json")["n_tracks"] == 2
    assert success["tracks"]["rows"] == 23 and success["tracks"]["n_tracks"] == 2
    # both tables name their source; a manifest's subject id goes into both
    assert (meta.source, meta.subject_id) == (str(videos["walk"]), None)
    tagged = run_pose(
        str(videos["walk"]),
        est,
        Store(f"s3://{s3_bucket}/tagged", s3_server.storage_options()),
        params,
        subject_id="P-17",
    )
    tagged_store = Store(f"s3://{s3_bucket}/tagged", s3_server.storage_options())
    for key in (tagged.key, tracks_key(tagged.key)):
        md = tagged_store.read_table(key).schema.metadata
        assert (json.loads(md[b"source"]), json.loads(md[b"subject_id"])) == (str(videos["walk"]), "P-17")


def test_tracks_table_holds_every_person_and_another_subject_needs_no_models(
    model_set: ModelSet, videos: dict[str, Path], tmp_path: Path
) -> None:
    import duckdb

    intr = fov_intrinsics(60.0)
    tables = estimate_people(
        str(videos["walk"]), ScriptedEstimator(model_set, ThreadConfig(1), walk_script), intr, PoseParams()
    )
    meta, people = read_tracks_arrays(tables.tracks)
    subject_frames = [i for i in range(23) if not 9 <= i <= 11]
    assert people["track_id"].tolist() == [0] * 20 + [1] * 3
    assert people["frame"].tolist() == subject_frames + [3, 4, 5]
    for row, i in enumerate(subject_frames):
        np.testing.assert_array_equal(people["kp2d_px"][row], person(20 + 2 * i, 32).kp2d[0])
    np.testing.assert_array_equal(people["kp2d_px"][20:], np.tile(person(80, 30).kp2d, (3, 1, 1)))
    np.testing.assert_array_equal(people["box_score"][20:], np.float32([0.95] * 3))
    assert meta == read_arrays(tables.keypoints)[0]  # same metadata as the keypoints table

    # the passer-by as the subject, from the tracks table, equals a pose run with that rule
    other = subject_from_tracks(tables.tracks, 1)
    direct = estimate_keypoints(
        str(videos["walk"]),
        ScriptedEstimator(model_set, ThreadConfig(1), walk_script),
        intr,
        PoseParams(tracker=TrackerConfig(subject=1)),
    )
    assert_same_table(other, direct)
    m1, a1 = read_arrays(other)
    assert (m1.subject_track_id, m1.frames_detected, m1.params["tracker"]["subject"]) == (1, 3, 1)
    assert a1["track_id"].tolist() == [-1] * 3 + [1] * 3 + [-1] * 17
    np.testing.assert_array_equal(a1["kp2d_px"][4], person(80, 30).kp2d[0])
    # the default rule gives back the table that was written
    again = subject_from_tracks(tables.tracks, "longest")
    assert_same_table(again, tables.keypoints)
    with pytest.raises(
        SubjectTrackError, match=r"subject track 7 does not exist; this video has tracks \[0, 1\]"
    ):
        subject_from_tracks(tables.tracks, 7)
    with pytest.raises(SubjectTrackError, match=r"video .*walk.mp4: subject track 7 does not exist"):
        estimate_keypoints(
            str(videos["walk"]),
            ScriptedEstimator(model_set, ThreadConfig(1), walk_script),
            intr,
            PoseParams(tracker=TrackerConfig(subject=7)),
        )

    # both tables read as one dataset with DuckDB, without project code
    store = Store(str(tmp_path / "store"))
    result = run_pose(
        str(videos["walk"]), ScriptedEstimator(model_set, ThreadConfig(1), walk_script), store, PoseParams()
    )
    root = tmp_path / "store"
    counts = duckdb.sql(
        f"SELECT track_id, count(*) AS n, min(frame) AS f0 FROM read_parquet('{root}/tracks/**/*.parquet', "
        "hive_partitioning=1) GROUP BY track_id ORDER BY track_id"
    ).fetchall()
    assert counts == [(0, 20, 0), (1, 3, 3)]
    ((cov,),) = duckdb.sql(
        f"SELECT count(*) FILTER (WHERE track_id >= 0) / count(*) FROM read_parquet('{root}/keypoints/**/*.parquet')"
    ).fetchall()
    assert cov == pytest.approx(result.coverage) == pytest.approx(20 / 23)
    # switching the subject in the store writes what a run with that rule writes, under the same key
    switched = switch_subject(store, result.key, 1)
    other_store = Store(str(tmp_path / "other"))
    rerun = run_pose(
        str(videos["walk"]),
        ScriptedEstimator(model_set, ThreadConfig(1), walk_script),
        other_store,
        PoseParams(tracker=TrackerConfig(subject=1)),
    )
    assert switched.key == rerun.key != result.key
    assert (switched.frames_detected, switched.n_tracks) == (3, 2)
    assert_same_table(store.read_table(switched.key), other_store.read_table(rerun.key))
    t_key = switched.key.replace("keypoints/", "tracks/", 1).replace("keypoints.parquet", "tracks.parquet")
    assert store.read_table(t_key).schema == other_store.read_table(t_key).schema
    assert store.is_committed(switched.key.rsplit("/", 1)[0]) and store.is_committed(t_key.rsplit("/", 1)[0])
    with pytest.raises(KeyNotFoundError, match="no committed pose output"):
        switch_subject(other_store, result.key, 0)
    # pyarrow.dataset: each folder is one dataset of its own table
    assert pads.dataset(root / "tracks", format="parquet", partitioning="hive").count_rows() == 2 * 23
    assert pads.dataset(root / "keypoints", format="parquet", partitioning="hive").count_rows() == 2 * 23


def test_intrinsics_come_from_the_caller_then_the_sidecar_then_the_fov(
    model_set: ModelSet, videos: dict[str, Path], tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "store"))
    est = ScriptedEstimator(model_set, ThreadConfig(1), lambda i: person(40, 30))
    video = str(videos["sidecar"])
    sidecar = Path(sidecar_uri(video))
    assert sidecar == videos["sidecar"].with_name("sidecar.camera.json")
    params = PoseParams(default_fov_deg=70.0)

    def recorded(**kwargs: object) -> Intrinsics:
        r = run_pose(video, est, store, params, **kwargs)  # type: ignore[arg-type]
        meta, _ = read_arrays(store.read_table(r.key))
        return meta.intrinsics

    assert recorded() == fov_intrinsics(70.0)
    phone = Intrinsics(fx=81.5, fy=80.0, cx=47.0, cy=33.0, width=W, height=H)
    sidecar.write_text(
        json.dumps({"intrinsics": phone.to_dict(), "extrinsics": {"R": np.eye(3).tolist(), "t": [0, 0, 0]}})
    )
    try:
        assert recorded() == phone
        manifest = Intrinsics(fx=70.0, fy=70.0, cx=40.0, cy=30.0, width=W, height=H)
        assert recorded(intrinsics=manifest) == manifest
        sidecar.write_text(Intrinsics(fx=90.0, fy=90.0, cx=50.0, cy=50.0, width=100, height=100).to_json())
        with pytest.raises(CameraError, match=r"100x100 image but video .*sidecar\.mp4 is 96x64"):
            recorded()
    finally:
        sidecar.unlink()


@pytest.mark.parametrize(("name", "message"), [("empty", "empty"), ("garbage", "not a decodable video")])
def test_bad_videos_raise_naming_the_file(
    model_set: ModelSet, videos: dict[str, Path], tmp_path: Path, name: str, message: str
) -> None:
    est = ScriptedEstimator(model_set, ThreadConfig(1), walk_script)
    store = Store(str(tmp_path / "store"))
    with pytest.raises(VideoError, match=message) as info:
        run_pose(str(videos[name]), est, store, PoseParams())
    assert str(videos[name]) in str(info.value)
    assert store.list() == []


class HoldingBack(StatelessSession):
    """Returns each frame's detections ``lag`` frames late, the rest at ``finish`` (as blazepose's backtracking);
    ``lose`` frames are never returned."""

    def __init__(self, estimator: PoseEstimator, intrinsics: Intrinsics, lag: int, lose: int = 0) -> None:
        super().__init__(estimator, intrinsics)
        self.lag, self.lose = lag, lose
        self.held: list[FrameDetections] = []

    def __call__(self, frames: np.ndarray) -> list[FrameDetections]:
        self.held += super().__call__(frames)
        ready = max(0, len(self.held) - self.lag)
        out, self.held = self.held[:ready], self.held[ready:]
        return out

    def finish(self) -> list[FrameDetections]:
        return self.held[: len(self.held) - self.lose]


@pytest.mark.parametrize("lag", [3, 6])  # within one batch of 4 frames, and across batches
def test_a_session_may_hold_frames_back_until_the_video_ends(
    model_set: ModelSet, videos: dict[str, Path], lag: int
) -> None:
    class Lagging(ScriptedEstimator):
        def video_session(self, intrinsics: Intrinsics) -> StatelessSession:
            return HoldingBack(self, intrinsics, lag)

    intr = fov_intrinsics(55.0)
    params = PoseParams(batch_size=4)
    walk = str(videos["walk"])
    plain = estimate_keypoints(walk, ScriptedEstimator(model_set, ThreadConfig(1), walk_script), intr, params)
    late = estimate_keypoints(walk, Lagging(model_set, ThreadConfig(1), walk_script), intr, params)
    assert late.num_rows == plain.num_rows > 2 * lag
    (_, a), (_, b) = read_arrays(plain), read_arrays(late)
    for k in ("frame", "kp2d_px", "conf", "box"):
        np.testing.assert_array_equal(b[k], a[k])  # the same frames, in order (NaN where nobody was found)

    class Losing(ScriptedEstimator):
        def video_session(self, intrinsics: Intrinsics) -> StatelessSession:
            return HoldingBack(self, intrinsics, lag, lose=1)

    with pytest.raises(RuntimeError, match="returned .* results for .* frames"):
        estimate_keypoints(walk, Losing(model_set, ThreadConfig(1), walk_script), intr, params)


def test_an_estimator_that_drops_frames_is_an_error(model_set: ModelSet, videos: dict[str, Path]) -> None:
    class Dropping(ScriptedEstimator):
        def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
            return super().__call__(frames, intrinsics)[:-1]

    with pytest.raises(RuntimeError, match="returned 3 results for 4 frames"):
        estimate_keypoints(
            str(videos["sidecar"]),
            Dropping(model_set, ThreadConfig(1), walk_script),
            fov_intrinsics(55.0),
            PoseParams(),
        )


# -- comparison with ground truth ---------------------------------------------------------------------------


def test_compare_is_root_relative_in_3d_and_absolute_in_depth() -> None:
    rng = np.random.default_rng(3)
    t3 = rng.normal(0, 300, (4, 5, 3)) + [0, 0, 4000]
    t2 = rng.uniform(0, 100, (4, 5, 2))
    visible = np.ones((4, 5), bool)
    visible[0, 0] = False
    p3 = t3 + [10.0, -20.0, 50.0]  # a pure translation: no root-relative error, 50 mm depth error
    p2 = t2 + [3.0, 4.0]  # 5 px everywhere
    p2[1, 1] = np.nan  # a visible keypoint the model missed
    p3[1, 1] = np.nan
    e = compare(p2, p3, t2, t3, visible)
    assert (e.frames, e.visible, e.missed) == (4, 19, 1)
    np.testing.assert_allclose(e.err2d_px, 5.0)
    np.testing.assert_allclose(e.err3d_mm, 0.0, atol=1e-9)
    np.testing.assert_allclose(e.depth_mm, 50.0)
    assert e.err2d_px.size == e.err3d_mm.size == 18

    # one joint off by 100 mm in x: centring spreads it, 80 mm on that joint and 20 mm on the other four
    p3 = t3.copy()
    p3[:, 2, 0] += 100.0
    e = compare(t2, p3, t2, t3, np.ones((4, 5), bool))
    np.testing.assert_allclose(
        np.sort(e.err3d_mm.reshape(4, 5), axis=1), np.tile([20, 20, 20, 20, 80.0], (4, 1))
    )
    s = summarise([e], seconds=2.0)
    assert s["median_3d_mm"] == pytest.approx(20.0) and s["median_2d_px"] == 0.0
    assert s["median_depth_mm"] == 0.0 and s["frames_per_second"] == pytest.approx(2.0)
    assert (s["videos"], s["frames"], s["missed_fraction"]) == (1, 4, 0.0)


# -- the markers model set on synthetic videos ---------------------------------------------------------------


@pytest.fixture(scope="module")
def markers(markers_model_set: ModelSet) -> PoseEstimator:
    from models.runtime import open_estimator

    return open_estimator(markers_model_set, ThreadConfig(1))


class Spy:
    """Forwards to an estimator and records how many people it found per frame."""

    def __init__(self, inner: PoseEstimator) -> None:
        self.inner = inner
        self.people: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        out = self.inner(frames, intrinsics)
        self.people += [d.n for d in out]
        return out

    def video_session(self, intrinsics: Intrinsics) -> StatelessSession:
        return StatelessSession(self, intrinsics)  # type: ignore[arg-type]


def synthetic(tmp_path_factory: pytest.TempPathFactory, **spec: object) -> tuple[Path, GroundTruth]:
    from mocapflow.synth import CohortSpec, generate_cohort, read_ground_truth

    root = tmp_path_factory.mktemp("synth")
    (entry,) = generate_cohort(root, CohortSpec(n_videos=1, seconds=1.0, **spec))  # type: ignore[arg-type]
    assert entry.gt is not None
    return entry.video, read_ground_truth(entry.gt)


def test_markers_accuracy_on_a_clean_synthetic_video(
    markers: PoseEstimator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    video, truth = synthetic(tmp_path_factory, seed=11)
    table = estimate_keypoints(str(video), markers, truth.intrinsics, PoseParams(batch_size=8))
    errors = compare_with_truth(table, truth)
    # independent check of the 2D figure straight from the arrays
    meta, a = read_arrays(table)
    order = [list(meta.joint_names).index(n) for n in truth.joint_names]
    vis = truth.visible
    d = np.linalg.norm(a["kp2d_px"][:, order] - truth.kp2d_px, axis=-1)[
        vis & np.isfinite(a["kp2d_px"][:, order, 0])
    ]
    assert np.median(d) == pytest.approx(np.median(errors.err2d_px))
    assert np.median(d) <= 1.0
    assert errors.missed <= 0.05 * errors.visible
    assert meta.intrinsics == truth.intrinsics


def test_two_people_yield_the_main_subjects_track(
    markers: PoseEstimator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    video, truth = synthetic(tmp_path_factory, seed=5, n_second_person=1)
    assert truth.second_present.any()
    spy = Spy(markers)
    table = estimate_keypoints(str(video), spy, truth.intrinsics, PoseParams())  # type: ignore[arg-type]
    assert max(spy.people) == 2  # the tracker had two people to choose from
    meta, a = read_arrays(table)
    order = [list(meta.joint_names).index(n) for n in truth.joint_names]
    pred = a["kp2d_px"][:, order]
    both = truth.visible & np.isfinite(pred[..., 0])
    to_main = np.linalg.norm(pred - truth.kp2d_px, axis=-1)[both]
    assert np.median(to_main) <= 1.0
    # in frames with the second person, the table follows the main subject, not the other one
    frames = truth.second_present & np.isfinite(pred[..., 0]).any(-1)
    assert frames.any()
    main = np.nanmedian(np.linalg.norm(pred - truth.kp2d_px, axis=-1)[frames])
    other = np.nanmedian(np.linalg.norm(pred - truth.second_kp2d_px, axis=-1)[frames])
    assert main <= 1.0 < other
    tracked = a["track_id"][a["track_id"] >= 0]
    assert tracked.size and (tracked == tracked[0]).all()


@pytest.mark.slow  # ~45 s CPU (render + 30 frames of markers); tests/test_tracking.py has the fast crossing case
def test_two_people_crossing_keep_their_identities(
    markers: PoseEstimator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second person of similar size walks across in front of the subject (2 s at 15 fps). While they overlap the
    markers detector sees one person, the one in front; each track must hold one person only, before and after."""
    from mocapflow.synth import CohortSpec, generate_cohort, read_ground_truth
    from mocapflow.video import probe

    root = tmp_path_factory.mktemp("crossing")
    spec = CohortSpec(
        n_videos=1,
        seed=3,
        seconds=2.0,
        fps=15.0,
        n_second_person=1,
        second_person_path="crossing",
        motions=("squat",),
    )
    (entry,) = generate_cohort(root, spec)
    assert entry.gt is not None and "crossing" in entry.flags
    truth = read_ground_truth(entry.gt)
    assert truth.second_present.all()
    # similar size: the walker is 0.4-0.7 m nearer, so 1.1-1.3x the subject's image height
    ratio = np.ptp(truth.second_kp2d_px[..., 1], axis=1) / np.ptp(truth.kp2d_px[..., 1], axis=1)
    assert 0.8 < np.median(ratio) < 1.6
    # within 1 px of one person's truth means that person: the two are never closer than 10 px (median joint)
    apart = np.nanmedian(np.linalg.norm(truth.kp2d_px - truth.second_kp2d_px, axis=-1), axis=1)
    assert apart.min() > 10.0
    info = probe(str(entry.video))
    spy = Spy(markers)
    detections = detect_all(str(entry.video), spy, truth.intrinsics, 16)  # type: ignore[arg-type]
    # the scene: two people apart at first, one box while the walker covers the subject, two again at the end
    assert spy.people[0] == 2 and spy.people[-1] == 2 and 1 in spy.people

    names = list(markers.joint_names)
    order = [names.index(n) for n in truth.joint_names]

    def per_row_error(kp: np.ndarray, frames: np.ndarray, person: np.ndarray) -> np.ndarray:
        return np.nanmedian(np.linalg.norm(kp[:, order] - person[frames], axis=-1), axis=1)

    def who(tracks: pa.Table) -> dict[int, str]:
        """Each track's person, after checking every row of it is within 1 px of that person's truth."""
        _, p = read_tracks_arrays(tracks)
        out = {}
        for tid in np.unique(p["track_id"]):
            rows = p["track_id"] == tid
            to_main = per_row_error(p["kp2d_px"][rows], p["frame"][rows], truth.kp2d_px)
            to_other = per_row_error(p["kp2d_px"][rows], p["frame"][rows], truth.second_kp2d_px)
            if (to_main <= 1.0).all():
                out[int(tid)] = "subject"
            elif (to_other <= 1.0).all():
                out[int(tid)] = "walker"
            else:
                raise AssertionError(
                    f"track {tid} mixes the two people: {to_main.round(1)} / {to_other.round(1)}"
                )
        return out

    # default gap (15 frames): the subject, hidden for longer, comes back on a new track, never on the walker's
    default = pose_tables(detections, markers, truth.intrinsics, PoseParams(), info)
    assert sorted(who(default.tracks).values()) == ["subject", "subject", "walker"]

    # a gap allowance longer than the occlusion: one track per person
    params = PoseParams(tracker=TrackerConfig(max_gap_frames=30))
    tables = pose_tables(detections, markers, truth.intrinsics, params, info)
    people = who(tables.tracks)
    assert sorted(people.values()) == ["subject", "walker"]
    meta, _ = read_arrays(tables.keypoints)
    walker = next(t for t, p in people.items() if p == "walker")
    subject = next(t for t, p in people.items() if p == "subject")
    # "longest" takes the walker here: it is in view in all 30 frames, the subject only where it is not covered
    assert meta.subject_track_id == walker and meta.frames_detected == 30
    summary = {t["track_id"]: t for t in meta.tracks}
    assert summary[walker]["frames_detected"] == 30 > summary[subject]["frames_detected"]

    # the user picks the other person from tracks.parquet, without the models
    chosen = subject_from_tracks(tables.tracks, subject)
    m, a = read_arrays(chosen)
    assert m.subject_track_id == subject and m.frames_detected == summary[subject]["frames_detected"]
    seen = np.isfinite(a["kp2d_px"][..., 0]).any(-1)
    assert seen.tolist() == [n == 2 for n in spy.people]  # found exactly where it was not covered
    assert m.coverage == pytest.approx(seen.mean()) and m.coverage < 0.5  # flagged as low coverage by a run
    frames = np.flatnonzero(seen)
    assert (per_row_error(a["kp2d_px"][seen], frames, truth.kp2d_px) <= 1.0).all()
    assert (per_row_error(a["kp2d_px"][seen], frames, truth.second_kp2d_px) > 10.0).all()
    assert (a["conf"][~seen] == 0).all() and np.isnan(a["kp2d_px"][~seen]).all()


def test_subject_command_switches_to_another_person(
    model_set: ModelSet, videos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mocapflow.cli import app

    store = Store(str(tmp_path / "store"))
    first = run_pose(
        str(videos["walk"]), ScriptedEstimator(model_set, ThreadConfig(1), walk_script), store, PoseParams()
    )
    monkeypatch.setenv("MOCAPFLOW_STORAGE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "400")
    path = str(tmp_path / "store" / first.key)
    out = CliRunner().invoke(app, ["subject", path, "--track", "1"])
    assert out.exit_code == 0, out.output
    assert "subject 1: found in 3 of 23 frames (13 %)" in out.output
    params = PoseParams(tracker=TrackerConfig(subject=1)).key_params(
        fov_intrinsics(55.0), model_set.manifest.kind
    )
    key = keypoints_key(first.video_sha256, first.model_id, params)
    assert store.is_committed(key.rsplit("/", 1)[0])
    assert read_arrays(store.read_table(key))[0].subject_track_id == 1
    bad = CliRunner().invoke(app, ["subject", path, "--track", "9"])
    # words, not the layout: the CLI's console takes its width when it is made (80 columns in an xdist worker)
    assert bad.exit_code == 1
    assert "subject track 9 does not exist; this video has tracks [0, 1]" in " ".join(bad.output.split())


def test_test_time_augmentation_is_part_of_the_key_only_when_used() -> None:
    intr = fov_intrinsics(55.0)
    single = PoseParams().key_params(intr, "metrabs")
    assert "test_time_augmentation" not in single
    assert PoseParams(test_time_augmentation=1).key_params(intr, "metrabs") == single
    five = PoseParams(test_time_augmentation=5).key_params(intr, "metrabs")
    assert five["test_time_augmentation"] == 5
    assert keypoints_key("a" * 64, "0" * 16, five) != keypoints_key("a" * 64, "0" * 16, single)
    with pytest.raises(ValueError, match="test_time_augmentation"):
        PoseParams(test_time_augmentation=0)
