"""Store: keys, round trips on a local folder and on S3 (moto on loopback), atomic writes, errors."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mocapflow.store as store_mod
from infra.s3server import S3Server
from mocapflow.errors import NO_RETRY
from mocapflow.settings import Settings
from mocapflow.store import (
    KeyNotFoundError,
    Store,
    StoreError,
    check_key,
    fit_key,
    fit_prefix,
    keypoints_key,
    keypoints_prefix,
    params_hash,
    run_prefix,
    safe_key,
)

SHA = "ab" * 32
MODEL = "0123456789abcdef"


# -- keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("runs", "2024-01-01"), "runs/2024-01-01"),
        (("a/b", "c"), "a/b/c"),
        (("x", 3), "x/3"),
        (("runs", "a\\b\tc"), "runs/a_b_c"),
        (("..\\etc",), ".._etc"),  # a backslash is not a separator: no traversal left
        (("v\x00id\x7f",), "v_id_"),
        (("line\nbreak", "ü-ok"), "line_break/ü-ok"),
        (("...",), "..."),
    ],
)
def test_safe_key_exact(parts: tuple[str | int, ...], expected: str) -> None:
    assert safe_key(*parts) == expected


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (("",), "empty"),
        (("runs", ""), "empty"),
        (("/etc/passwd",), "absolute"),
        (("runs", "/x"), "absolute"),
        (("..",), "'..' segment"),
        (("a/../b",), "'..' segment"),
        (("a", "./b"), "'.' segment"),
        (("a//b",), "empty path segment"),
        (("a/",), "empty path segment"),
        ((), "at least one"),
    ],
)
def test_safe_key_rejects(parts: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        safe_key(*parts)


@pytest.mark.parametrize("key", ["../x", "/abs/x", "a\\b", "a\tb", "a//b", ""])
def test_store_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    store = Store(str(tmp_path))
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        check_key(key)
    assert list(tmp_path.rglob("*")) == []


def test_keypoints_key_is_content_hash() -> None:
    # canonical JSON written out by hand: sorted keys, no spaces, tuples as lists
    canon = '{"a":1,"b":[1,2],"c":{"x":0.5,"y":"z"}}'
    want = hashlib.sha256(canon.encode()).hexdigest()[:16]
    params = {"c": {"y": "z", "x": 0.5}, "b": (1, 2), "a": 1}
    assert params_hash(params) == want
    assert (
        keypoints_key(SHA, MODEL, params)
        == f"keypoints/model={MODEL}/video={SHA}/params={want}/keypoints.parquet"
    )
    assert keypoints_prefix(SHA, MODEL, params) == f"keypoints/model={MODEL}/video={SHA}/params={want}"
    # same content, other order / case -> same key; other value -> other key
    assert keypoints_key(
        SHA.upper(), MODEL, {"a": 1, "b": [1, 2], "c": {"x": 0.5, "y": "z"}}
    ) == keypoints_key(SHA, MODEL, params)
    assert keypoints_key(SHA, MODEL, {**params, "a": 2}) != keypoints_key(SHA, MODEL, params)


def test_fit_prefix_exact() -> None:
    want = hashlib.sha256(b'{"iters":4000,"lr":0.03}').hexdigest()[:16]
    prefix = fit_prefix(SHA, MODEL, {"lr": 0.03, "iters": 4000})
    assert prefix == f"fits/angles/model={MODEL}/video={SHA}/fit={want}"
    # every kind of output in its own folder, so each reads as one dataset
    assert fit_key(prefix, "angles.parquet") == f"{prefix}/angles.parquet"
    assert (
        fit_key(prefix, "residuals.parquet")
        == f"fits/residuals/model={MODEL}/video={SHA}/fit={want}/residuals.parquet"
    )
    assert fit_key(prefix, "angles.mot") == f"fits/mot/model={MODEL}/video={SHA}/fit={want}/angles.mot"
    with pytest.raises(ValueError, match="not a fit output"):
        fit_key(prefix, "notes.txt")
    with pytest.raises(ValueError, match="not a fit prefix"):
        fit_key(f"fits/model={MODEL}/video={SHA}/fit={want}", "angles.mot")
    assert params_hash({}) == hashlib.sha256(b"{}").hexdigest()[:16]


def test_run_prefix() -> None:
    assert run_prefix("nightly-2024\t01") == "runs/nightly-2024_01"
    with pytest.raises(ValueError, match="'/'"):
        run_prefix("a/b")
    with pytest.raises(ValueError, match="'..'"):
        run_prefix("..")


@pytest.mark.parametrize(
    ("sha", "model", "params", "message"),
    [
        ("abc", MODEL, {}, "video_sha256"),
        ("../" + "a" * 61, MODEL, {}, "video_sha256"),
        (SHA, "markers", {}, "model_id"),
        (SHA, MODEL, {"x": float("nan")}, "NaN"),
        (SHA, MODEL, {"x": object()}, "not JSON serialisable"),
    ],
)
def test_key_inputs_rejected(sha: str, model: str, params: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        keypoints_key(sha, model, params)


# -- round trips --------------------------------------------------------------------------------------------


@pytest.fixture(params=["folder", "file-uri", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "folder":
        return Store(str(tmp_path / "root"))
    if request.param == "file-uri":
        return Store(f"file://{tmp_path}/root")
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/prefix", s3.storage_options())


def _table() -> pa.Table:
    schema = pa.schema([("a", pa.int32()), ("b", pa.list_(pa.float32(), 2))], metadata={b"k": b'"v"'})
    return pa.table(
        {"a": pa.array([1, 2, 3], pa.int32()), "b": [[0.5, 1.0], [2.0, 3.0], [4.0, 5.5]]}, schema=schema
    )


def test_round_trip(store: Store) -> None:
    data = bytes(range(256)) * 10
    rep = store.put_bytes("blobs/x.bin", data)
    assert rep.bytes == len(data) and rep.rows is None and rep.seconds >= 0
    assert rep.uri == store.uri("blobs/x.bin") == f"{store.root}/blobs/x.bin"
    assert store.get_bytes("blobs/x.bin") == data
    assert store.exists("blobs/x.bin") and store.exists("blobs") and not store.exists("blobs/y.bin")

    table = _table()
    rep = store.write_table("t/part.parquet", table)
    assert rep.rows == 3
    raw = store.get_bytes("t/part.parquet")
    assert rep.bytes == len(raw) and raw[:4] == b"PAR1"
    back = store.read_table("t/part.parquet")
    assert back.equals(table) and back.schema.metadata[b"k"] == b'"v"'
    assert back.schema.field("b").type == pa.list_(pa.float32(), 2)
    # readable by plain pyarrow from the same bytes, no project code
    assert pq.read_table(pa.BufferReader(raw)).column("a").to_pylist() == [1, 2, 3]

    info = {"rows": 3, "bytes": rep.bytes, "inputs": ["x"]}
    assert not store.is_committed("t")
    store.commit("t", info)
    assert store.is_committed("t") and store.get_json("t/_SUCCESS.json") == info
    store.put_json("j/o.json", {"b": [1, 2.5], "a": "ü"})
    assert store.get_json("j/o.json") == {"a": "ü", "b": [1, 2.5]}

    assert store.list() == ["blobs/x.bin", "j/o.json", "t/_SUCCESS.json", "t/part.parquet"]
    assert store.list("t") == ["t/_SUCCESS.json", "t/part.parquet"]
    assert store.list("nothing/here") == []
    store.put_bytes("blobs/x.bin", b"new")  # same key: overwritten
    assert store.get_bytes("blobs/x.bin") == b"new"
    store.delete("blobs/x.bin")
    store.delete("blobs/x.bin")
    assert not store.exists("blobs/x.bin")


def test_missing_key_errors(store: Store) -> None:
    with pytest.raises(KeyNotFoundError, match="no such object") as info:
        store.get_bytes("no/such.bin")
    assert store.uri("no/such.bin") in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and not info.value.transient
    with pytest.raises(FileNotFoundError):
        store.read_table("no/such.parquet")


def test_corrupt_parquet_named(store: Store) -> None:
    store.put_bytes("bad.parquet", b"not parquet")
    with pytest.raises(StoreError, match="not a readable Parquet file") as info:
        store.read_table("bad.parquet")
    assert store.uri("bad.parquet") in str(info.value)


def _union_table() -> pa.Table:
    union = pa.UnionArray.from_sparse(pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])])
    return pa.table({"u": union})


def test_serialisation_error_leaves_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot serialise"):
        store.write_table("k/t.parquet", _union_table())  # Parquet has no union type
    assert not store.exists("k/t.parquet")
    assert store.list() == []


def test_failure_mid_serialisation_keeps_old_object(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_table("k/t.parquet", _table())
    before = store.get_bytes("k/t.parquet")

    def half_then_fail(table: pa.Table, where: pa.BufferOutputStream, **kw: object) -> None:
        where.write(b"PAR1" + b"\0" * 100)
        raise OSError("disk full while serialising")

    monkeypatch.setattr(store_mod.pq, "write_table", half_then_fail)
    with pytest.raises(ValueError, match="disk full"):
        store.write_table("k/t.parquet", _table())
    with pytest.raises(ValueError):
        store.write_table("k/other.parquet", _table())
    assert store.get_bytes("k/t.parquet") == before
    assert store.list() == ["k/t.parquet"]


def test_local_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tmp_path))
    store.put_bytes("a/x.bin", b"old")

    def fail_replace(src: str, dst: str) -> None:
        raise OSError("interrupted")

    monkeypatch.setattr(store_mod.os, "replace", fail_replace)
    with pytest.raises(StoreError, match="cannot write") as info:
        store.put_bytes("a/x.bin", b"new content")
    assert info.value.transient
    monkeypatch.undo()
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path / "a")) == ["x.bin"]  # no temp file left


def test_write_into_missing_bucket_is_clear(s3_server: S3Server) -> None:
    store = Store("s3://no-such-bucket-here", s3_server.storage_options())
    with pytest.raises(StoreError, match="bucket or parent folder does not exist"):
        store.put_bytes("x.bin", b"1")


def test_from_settings(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    local = Store.from_settings(Settings(storage_root=str(tmp_path / "data")))
    assert local.root == str(tmp_path / "data") and local.is_local
    settings = Settings(storage_root=f"s3://{s3_bucket}/root/", **s3_server.settings_overrides())
    remote = Store.from_settings(settings)
    remote.put_json("a.json", {"x": 1})
    assert remote.uri("a.json") == f"s3://{s3_bucket}/root/a.json"
    # what landed in the bucket, seen through a separate client
    other = Store(f"s3://{s3_bucket}", s3_server.storage_options())
    assert other.list() == ["root/a.json"] and other.get_json("root/a.json") == {"x": 1}


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store("./data")
    assert store.root == str(tmp_path / "data")
    assert not (tmp_path / "data").exists()  # constructing writes nothing


def test_credentials_never_shown(
    s3_server: S3Server, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SECRET-" + hashlib.sha256(b"x").hexdigest()[:12]
    store = Store(f"s3://{s3_bucket}", {**s3_server.storage_options(), "secret": secret})
    assert secret not in repr(store)
    with caplog.at_level(logging.DEBUG, logger="mocapflow"):
        with pytest.raises(StoreError) as info:  # moto rejects nothing, so force a failure: a missing key
            store.get_bytes("missing")
        store.put_bytes("y", b"1")
    assert secret not in caplog.text and secret not in str(info.value)
    clone = pickle.loads(pickle.dumps(store))  # workers need the options, so pickling keeps them
    assert clone.get_bytes("y") == b"1"


def test_store_error_pickles_with_transient() -> None:
    err = pickle.loads(pickle.dumps(StoreError("boom", transient=True)))
    assert isinstance(err, StoreError) and err.transient and str(err) == "boom"
    err = pickle.loads(pickle.dumps(KeyNotFoundError("gone")))
    assert isinstance(err, FileNotFoundError) and not err.transient


def test_s3_server_lifecycle() -> None:
    import s3fs

    with S3Server() as server:
        assert server.running and server.endpoint_url.startswith("http://127.0.0.1:")
        assert server.make_bucket("life-cycle") == "s3://life-cycle"
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options())
        assert "life-cycle" in fs.ls("")
        server.reset()
        fs.invalidate_cache()
        assert fs.ls("") == []
    assert not server.running


def test_error_classification(s3_server: S3Server) -> None:
    bad_name = Store("s3://x", s3_server.storage_options())  # a bucket name S3 rejects (too short)
    with pytest.raises(StoreError) as info:
        bad_name.put_bytes("k", b"1")
    assert not info.value.transient and "s3://x/k" in str(info.value)
    closed_port = {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}}
    down = Store("s3://bucket", {**s3_server.storage_options(), **closed_port}, retry=NO_RETRY)
    with pytest.raises(StoreError) as info:
        down.get_bytes("k")
    assert info.value.transient and "a retry may succeed" in str(info.value)
