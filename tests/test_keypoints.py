"""Keypoints table: schema, Parquet round trip, plain pyarrow.dataset / DuckDB reads (local and S3), invariants."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from infra.s3server import S3Server
from mocapflow.camera import Intrinsics
from mocapflow.keypoints import (
    KeypointsError,
    KeypointsMeta,
    build_table,
    build_tracks_table,
    missing_arrays,
    read_arrays,
    read_tracks_arrays,
    validate_table,
)
from mocapflow.store import Store, keypoints_key, keypoints_prefix

MODEL = "00112233aabbccdd"
SHA_A = "a1" * 32
SHA_B = "b2" * 32
PARAMS = {"tta": 1, "detector_threshold": 0.3}
J = 5


def make_meta(sha: str = SHA_A, n_frames: int = 8) -> KeypointsMeta:
    return KeypointsMeta(
        video_sha256=sha,
        fps=25.0,
        width=64,
        height=48,
        n_frames=n_frames,
        intrinsics=Intrinsics(fx=60.0, fy=61.0, cx=31.5, cy=23.5, width=64, height=48),
        joint_names=[f"j{i}" for i in range(J)],
        joint_edges=[[0, 1], [1, 2], [2, 3], [3, 4]],
        model_id=MODEL,
        model_name="markers",
        params=PARAMS,
    )


def make_arrays(n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random detections; frame 2 has no subject, joint 3 of frame 5 is missing."""
    rng = np.random.default_rng(seed)
    a = {
        "frame": np.arange(n, dtype=np.int32),
        "time_s": np.arange(n) / 25.0,
        "kp2d_px": rng.uniform(1, 60, (n, J, 2)).astype(np.float32),
        "kp3d_mm": rng.uniform(100, 3000, (n, J, 3)).astype(np.float32),
        "conf": rng.uniform(0.1, 1.0, (n, J)).astype(np.float32),
        "box": np.tile(np.array([2, 3, 50, 40], np.float32), (n, 1)),
        "box_score": rng.uniform(0.5, 1.0, n).astype(np.float32),
        "track_id": np.zeros(n, np.int32),
    }
    a["kp2d_px"][2] = np.nan
    a["kp3d_mm"][2] = np.nan
    a["conf"][2] = 0
    a["box"][2] = np.nan
    a["box_score"][2] = 0
    a["track_id"][2] = -1
    a["kp2d_px"][5, 3] = np.nan
    a["kp3d_mm"][5, 3] = np.nan
    a["conf"][5, 3] = 0
    return a


def build(a: dict[str, np.ndarray], meta: KeypointsMeta | None = None) -> pa.Table:
    return build_table(
        a["frame"],
        a["time_s"],
        a["kp2d_px"],
        a["kp3d_mm"],
        a["conf"],
        a["box"],
        a["box_score"],
        a["track_id"],
        meta or make_meta(),
    )


def assert_arrays_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)  # NaN == NaN here


def test_schema_and_metadata() -> None:
    table = build(make_arrays())
    want = {
        "frame": pa.int32(),
        "time_s": pa.float64(),
        "kp2d_px": pa.list_(pa.list_(pa.float32(), 2), J),
        "kp3d_mm": pa.list_(pa.list_(pa.float32(), 3), J),
        "conf": pa.list_(pa.float32(), J),
        "box": pa.list_(pa.float32(), 4),
        "box_score": pa.float32(),
        "track_id": pa.int32(),
    }
    assert table.column_names == list(want)
    for name, typ in want.items():
        assert table.schema.field(name).type == typ, name
    md = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    assert md["mocapflow.schema_version"] == 3 and md["mocapflow.table"] == "keypoints"
    assert (md["source"], md["subject_id"]) == (None, None)  # set by the pose stage (test_pose_pipeline)
    # coverage: the subject is missing in frame 2 of 8
    assert (md["frames_detected"], md["coverage"]) == (7, 7 / 8)
    assert md["subject_track_id"] is None and md["tracks"] == []
    assert md["video_sha256"] == SHA_A and md["fps"] == 25.0 and md["n_frames"] == 8
    assert md["intrinsics"] == {"fx": 60.0, "fy": 61.0, "cx": 31.5, "cy": 23.5, "width": 64, "height": 48}
    assert md["joint_names"] == ["j0", "j1", "j2", "j3", "j4"]
    assert md["joint_edges"] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert md["params"] == PARAMS and md["model_id"] == MODEL and md["model_name"] == "markers"
    # row 1, joint 4 as plain Python values
    a = make_arrays()
    row = table.slice(1, 1).to_pylist()[0]
    assert row["kp2d_px"][4] == pytest.approx(a["kp2d_px"][1, 4].tolist())
    assert row["track_id"] == 0 and row["frame"] == 1


def test_parquet_round_trip(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    a = make_arrays()
    meta = make_meta()
    key = keypoints_key(SHA_A, MODEL, PARAMS)
    rep = store.write_table(key, build(a, meta))
    assert rep.rows == 8
    got_meta, got = read_arrays(store.read_table(key))
    assert got_meta == dataclasses.replace(meta, frames_detected=7)
    assert got_meta.intrinsics == Intrinsics(fx=60.0, fy=61.0, cx=31.5, cy=23.5, width=64, height=48)
    assert_arrays_equal(got, a)
    assert got["kp2d_px"].dtype == np.float32 and got["time_s"].dtype == np.float64
    assert got["frame"].dtype == np.int32 and got["track_id"].dtype == np.int32
    got["conf"][0, 0] = 0.5  # arrays handed out are writable


def test_read_arrays_handles_slices_and_chunks() -> None:
    a = make_arrays(10)
    table = build(a, make_meta(n_frames=10))
    _, got = read_arrays(table.slice(3, 4))
    assert_arrays_equal(got, {k: v[3:7] for k, v in a.items()})
    chunked = pa.concat_tables([table.slice(0, 4), table.slice(4)])
    assert chunked.column("kp2d_px").num_chunks == 2
    _, got = read_arrays(chunked)
    assert_arrays_equal(got, a)


def test_all_missing_video_is_valid() -> None:
    a = missing_arrays(6, J)
    table = build_table(
        a["frame"],
        None,
        a["kp2d_px"],
        a["kp3d_mm"],
        a["conf"],
        a["box"],
        a["box_score"],
        a["track_id"],
        make_meta(),
    )
    _, got = read_arrays(table)
    np.testing.assert_allclose(got["time_s"], np.arange(6) / 25.0)
    assert np.isnan(got["kp2d_px"]).all() and (got["conf"] == 0).all() and (got["track_id"] == -1).all()


def test_2d_only_model_has_nan_3d() -> None:
    a = make_arrays()
    a["kp3d_mm"][:] = np.nan
    _, got = read_arrays(build(a))
    assert np.isnan(got["kp3d_mm"]).all() and (got["conf"][0] > 0).all()


def _write_two_videos(store: Store) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for sha, seed, n in ((SHA_A, 0, 8), (SHA_B, 1, 6)):
        a = make_arrays(n, seed)
        store.write_table(keypoints_key(sha, MODEL, PARAMS), build(a, make_meta(sha, n)))
        store.commit(keypoints_prefix(sha, MODEL, PARAMS), {"rows": n})
        out[sha] = a
    return out


def test_dataset_hive_and_duckdb_without_project_code(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    written = _write_two_videos(store)

    dataset = ds.dataset(f"{tmp_path}/keypoints/model={MODEL}", format="parquet", partitioning="hive")
    assert len(dataset.files) == 2  # _SUCCESS.json ignored
    table = dataset.to_table()
    assert table.num_rows == 14
    assert {"video", "params"} <= set(table.column_names)
    sub = dataset.to_table(filter=ds.field("video") == SHA_B)
    assert sub.num_rows == 6
    kp = np.asarray(sub.column("kp2d_px").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(kp, written[SHA_B]["kp2d_px"])

    con = duckdb.connect()
    rel = con.execute(
        f"SELECT video, count(*) AS n, sum(box_score) AS s FROM read_parquet('{tmp_path}/keypoints/**/*.parquet', "
        "hive_partitioning = true) GROUP BY video ORDER BY video"
    ).fetchall()
    assert [(r[0], r[1]) for r in rel] == [(SHA_A, 8), (SHA_B, 6)]
    assert rel[0][2] == pytest.approx(float(written[SHA_A]["box_score"].astype(np.float64).sum()), rel=1e-6)
    # DuckDB lists are 1-based: kp2d_px[joint + 1][coord + 1]
    (v,) = con.execute(
        f"SELECT kp2d_px[5][2] FROM read_parquet('{tmp_path}/keypoints/**/*.parquet', hive_partitioning = true) "
        f"WHERE video = '{SHA_A}' AND frame = 4"
    ).fetchone()
    assert v == pytest.approx(float(written[SHA_A]["kp2d_px"][4, 4, 1]))
    path = tmp_path / keypoints_key(SHA_A, MODEL, PARAMS)
    (meta_value,) = con.execute(
        f"SELECT value FROM parquet_kv_metadata('{path}') WHERE key = 'video_sha256'::BLOB"
    ).fetchone()
    assert json.loads(meta_value) == SHA_A


def test_dataset_on_s3_with_pyarrow_filesystem(s3_server: S3Server, s3_bucket: str) -> None:
    store = Store(f"s3://{s3_bucket}/data", s3_server.storage_options())
    written = _write_two_videos(store)
    dataset = ds.dataset(
        f"{s3_bucket}/data/keypoints/model={MODEL}",
        filesystem=s3_server.pyarrow_filesystem(),
        format="parquet",
        partitioning="hive",
    )
    table = dataset.to_table(filter=ds.field("video") == SHA_A)
    assert table.num_rows == 8
    conf = np.asarray(table.column("conf").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(conf, written[SHA_A]["conf"])
    # one file read on its own keeps the keypoints metadata
    single = ds.dataset(
        f"{s3_bucket}/data/{keypoints_key(SHA_B, MODEL, PARAMS)}",
        filesystem=s3_server.pyarrow_filesystem(),
        format="parquet",
    ).to_table()
    meta, got = read_arrays(single)
    assert meta.video_sha256 == SHA_B
    assert_arrays_equal(got, written[SHA_B])


# -- invariants ---------------------------------------------------------------------------------------------


def _mutate(fn: Any) -> dict[str, np.ndarray]:
    a = make_arrays()
    fn(a)
    return a


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a["conf"].__setitem__((2, 0), 0.5), "conf must be 0 where kp2d_px is NaN"),
        (lambda a: a["conf"].__setitem__((1, 1), 0.0), "kp2d_px must be NaN where conf is 0"),
        (lambda a: a["kp2d_px"].__setitem__((1, 1, 0), np.nan), "partly NaN"),
        (lambda a: a["kp3d_mm"].__setitem__((5, 3), 1.0), "kp3d_mm must be NaN where the joint is missing"),
        (lambda a: a["kp2d_px"].__setitem__((1, 1, 0), np.inf), "infinite"),
        (lambda a: a["conf"].__setitem__((1, 1), 1.5), r"conf must be in \[0, 1\]"),
        (lambda a: a["box_score"].__setitem__(2, 0.9), "box_score must be 0 exactly where box is NaN"),
        (lambda a: a["track_id"].__setitem__(1, -1), "track_id must be -1"),
        (lambda a: a["track_id"].__setitem__(1, -7), "track_id must be -1"),
        (lambda a: a["box"].__setitem__(1, [50, 3, 2, 40]), "x1 >= x0"),
        (lambda a: a["frame"].__setitem__(3, 2), "strictly increasing"),
    ],
)
def test_invariants_rejected(mutate: Any, message: str) -> None:
    with pytest.raises(KeypointsError, match=message):
        build(_mutate(mutate))


def test_zeros_with_confidence_one_rejected() -> None:
    """The origin's defect: a missing detection stored as zeros with confidence 1."""

    def zeros(a: dict[str, np.ndarray]) -> None:
        a["kp2d_px"][4] = 0
        a["kp3d_mm"][4] = 0
        a["conf"][4] = 1

    with pytest.raises(KeypointsError, match="not zeros"):
        build(_mutate(zeros))

    def zeros_2d(a: dict[str, np.ndarray]) -> None:
        a["kp2d_px"][4] = 0
        a["kp3d_mm"][4] = np.nan
        a["conf"][4] = 1

    with pytest.raises(KeypointsError, match="not zeros"):
        build(_mutate(zeros_2d))


def test_no_box_means_no_joints() -> None:
    def f(a: dict[str, np.ndarray]) -> None:
        a["box"][1] = np.nan
        a["box_score"][1] = 0
        a["track_id"][1] = -1

    with pytest.raises(KeypointsError, match="without a subject box must have no joints"):
        build(_mutate(f))


def test_shape_errors_name_the_array() -> None:
    a = make_arrays()
    a["kp3d_mm"] = a["kp3d_mm"][:, :4]
    with pytest.raises(KeypointsError, match=r"kp3d_mm has shape \(8, 4, 3\), expected \(8, 5, 3\)"):
        build(a)


def test_table_level_rejections() -> None:
    table = build(make_arrays())
    with pytest.raises(KeypointsError, match="not a mocapflow keypoints table"):
        validate_table(table.replace_schema_metadata(None))
    md = dict(table.schema.metadata)
    md[b"mocapflow.schema_version"] = b"99"
    with pytest.raises(KeypointsError, match="schema version 99 is not supported"):
        validate_table(table.replace_schema_metadata(md))
    del md[b"mocapflow.schema_version"]
    md2 = dict(table.schema.metadata)
    del md2[b"intrinsics"]
    with pytest.raises(KeypointsError, match=r"lacks \['intrinsics'\]"):
        validate_table(table.replace_schema_metadata(md2))
    wrong = table.set_column(
        table.schema.get_field_index("box_score"), "box_score", table.column("box_score").cast(pa.float64())
    )
    with pytest.raises(KeypointsError, match="column 'box_score' has type double"):
        validate_table(wrong)
    with pytest.raises(KeypointsError, match="no column 'conf'"):
        validate_table(table.drop_columns(["conf"]))
    nulls = table.set_column(
        table.schema.get_field_index("track_id"),
        pa.field("track_id", pa.int32()),
        pa.array([None] + [0] * 7, pa.int32()),
    )
    with pytest.raises(KeypointsError, match="has nulls"):
        validate_table(nulls)
    assert validate_table(table) == dataclasses.replace(make_meta(), frames_detected=7)


def test_meta_rejects_mismatched_intrinsics() -> None:
    with pytest.raises(KeypointsError, match="intrinsics are for a 640x480 image but the video is 64x48"):
        KeypointsMeta(
            video_sha256=SHA_A,
            fps=25.0,
            width=64,
            height=48,
            n_frames=8,
            intrinsics=Intrinsics.from_fov(640, 480, 55.0),
            joint_names=["a", "b"],
            joint_edges=[],
            model_id=MODEL,
            model_name="m",
            params={},
        )
    meta = KeypointsMeta(
        video_sha256=SHA_A,
        fps=25,
        width=64,
        height=48,
        n_frames=8,
        intrinsics={"fx": 1.0, "fy": 1.0, "cx": 0.0, "cy": 0.0, "width": 64, "height": 48},
        joint_names=["a", "b"],
        joint_edges=[[0, 1]],
        model_id=MODEL,
        model_name="m",
    )
    assert isinstance(meta.intrinsics, Intrinsics) and meta.joint_edges == ((0, 1),)
    with pytest.raises(KeypointsError, match="out of range"):
        KeypointsMeta(**{**meta.__dict__, "joint_edges": [[0, 2]]})


# -- coverage, schema versions and the tracks table ---------------------------------------------------------


def test_coverage_is_counted_from_the_rows_and_checked_on_read() -> None:
    a = make_arrays()
    a["box"][[0, 6]] = np.nan  # two more frames without the subject
    for k in ("kp2d_px", "kp3d_mm"):
        a[k][[0, 6]] = np.nan
    a["conf"][[0, 6]] = 0
    a["box_score"][[0, 6]] = 0
    a["track_id"][[0, 6]] = -1
    meta = validate_table(build(a))
    assert (meta.frames_detected, meta.n_frames, meta.coverage) == (5, 8, 5 / 8)
    with pytest.raises(KeypointsError, match="found in 6 frames, the rows hold 5"):
        build(a, dataclasses.replace(make_meta(), frames_detected=6))
    # the figure is the video's: a slice of the table keeps it
    assert validate_table(build(a).slice(0, 3)).frames_detected == 5
    md = dict(build(a).schema.metadata)
    md[b"frames_detected"] = b"9"
    with pytest.raises(KeypointsError, match=r"frames_detected 9 must be in 0..n_frames \(8\)"):
        validate_table(build(a).replace_schema_metadata(md))


def test_version_1_tables_are_still_read_and_unknown_versions_refused() -> None:
    table = build(make_arrays())
    md = {
        k: v
        for k, v in table.schema.metadata.items()
        if k
        not in (
            b"frames_detected",
            b"coverage",
            b"subject_track_id",
            b"tracks",
            b"mocapflow.table",
            b"source",
            b"subject_id",
        )
    }
    md[b"mocapflow.schema_version"] = b"1"
    meta, arrays = read_arrays(table.replace_schema_metadata(md))
    assert (meta.frames_detected, meta.coverage, meta.tracks) == (7, 7 / 8, ())
    assert_arrays_equal(arrays, make_arrays())
    md[b"mocapflow.schema_version"] = b"4"
    with pytest.raises(
        KeypointsError, match=r"schema version 4 is not supported \(this code reads \(1, 2, 3\)\)"
    ):
        validate_table(table.replace_schema_metadata(md))
    # a version-2 table must carry the coverage keys, and is read without a source
    md2 = {k: v for k, v in table.schema.metadata.items() if k not in (b"source", b"subject_id")}
    md2[b"mocapflow.schema_version"] = b"2"
    assert validate_table(table.replace_schema_metadata(md2)).source is None
    del md2[b"frames_detected"]
    with pytest.raises(KeypointsError, match=r"lacks \['frames_detected'\]"):
        validate_table(table.replace_schema_metadata(md2))
    # a version-3 table must name its source (null allowed)
    md3 = dict(table.schema.metadata)
    del md3[b"source"]
    with pytest.raises(KeypointsError, match=r"lacks \['source'\]"):
        validate_table(table.replace_schema_metadata(md3))


def tracks_arrays() -> dict[str, np.ndarray]:
    """Two people: track 0 in frames 0-3, track 4 in frames 1 and 3 (joint 2 of its frame 3 missing)."""
    frames = np.array([0, 1, 2, 3, 1, 3], np.int32)
    track = np.array([0, 0, 0, 0, 4, 4], np.int32)
    rng = np.random.default_rng(4)
    out = {
        "frame": frames,
        "kp2d_px": rng.uniform(1, 60, (6, J, 2)).astype(np.float32),
        "kp3d_mm": rng.uniform(100, 3000, (6, J, 3)).astype(np.float32),
        "conf": rng.uniform(0.1, 1.0, (6, J)).astype(np.float32),
        "box": np.tile(np.array([2, 3, 50, 40], np.float32), (6, 1)),
        "box_score": rng.uniform(0.5, 1.0, 6).astype(np.float32),
        "track_id": track,
    }
    out["kp2d_px"][5, 2] = np.nan
    out["kp3d_mm"][5, 2] = np.nan
    out["conf"][5, 2] = 0
    return out


def build_tracks(t: dict[str, np.ndarray]) -> pa.Table:
    return build_tracks_table(
        t["frame"],
        t["kp2d_px"],
        t["kp3d_mm"],
        t["conf"],
        t["box"],
        t["box_score"],
        t["track_id"],
        make_meta(),
    )


def test_tracks_table_round_trip_and_its_own_rules() -> None:
    t = tracks_arrays()
    table = build_tracks(t)
    assert table.column_names == list(build(make_arrays()).column_names)
    md = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    assert md["mocapflow.table"] == "tracks"
    meta, got = read_tracks_arrays(table)
    assert meta.video_sha256 == SHA_A
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    np.testing.assert_allclose(got["time_s"], t["frame"] / 25.0)
    # a tracks table is not a keypoints table, and the other way round
    with pytest.raises(KeypointsError, match="this is a tracks table, not a keypoints table"):
        read_arrays(table)
    with pytest.raises(KeypointsError, match="this is a keypoints table, not a tracks table"):
        read_tracks_arrays(build(make_arrays()))
    unsorted = {**t, "frame": t["frame"][[1, 0, 2, 3, 4, 5]]}
    with pytest.raises(KeypointsError, match=r"sorted by \(track_id, frame\)"):
        build_tracks(unsorted)
    no_track = {**t, "track_id": np.array([0, 0, 0, 0, -1, -1], np.int32)}
    with pytest.raises(KeypointsError, match="track_id must be >= 0"):
        build_tracks(no_track)
