"""MeTRAbs model set: safe metadata loading, import, pre/post-processing, and the estimator on a tiny artifact.

The tiny artifact is built here with the same signatures as the origin's: a tf.Module SavedModel detector returning
fixed boxes (none on a black frame) and an onnx.helper backbone whose "keypoints" are (joint 0) the crop position of
the brightest pixel and (other joints) constants shifted by the crop's top-left value, plus constant 3D.
"""

from __future__ import annotations

import codecs
import json
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy._core.multiarray import _reconstruct

from mocapflow.camera import Intrinsics
from models.metrabs import UnsafePickleError, import_metrabs, load_pickle, pickle_to_json
from models.metrabs.processing import (
    crop_matrices,
    crop_to_image,
    filter_detections,
    make_crops,
    reconstruct_absolute,
    xywh_to_xyxy,
)
from models.modelset import ModelSetError, read_local
from models.runtime import ThreadConfig

S = 256
FULL_NAMES = ["dot", "a", "b", "c", "d"]
SKELETON = {"names": ["c", "dot", "d", "a"], "indices": [3, 0, 4, 1], "edges": [[0, 1], [1, 2], [2, 3]]}
C2 = np.array([[30, 40], [200, 50], [128, 220], [60, 180]], np.float32)  # full joints 1..4, crop px
D2 = np.array([[10, -5], [0, 20], [3, 3], [-8, 8]], np.float32)  # crop px per unit of the crop's corner value
C3 = np.array([[0, 0, 0], [100, -200, 30], [-150, 50, 10], [20, 400, -40], [-60, -300, 25]], np.float32)  # mm
BOXES_XYWH = np.array([[40, 20, 44, 60], [41, 21, 44, 60], [100, 5, 10, 10]], np.float32)
SCORES = np.array([0.9, 0.6, 0.1], np.float32)
W, H = 160, 120


def metadata(as_numpy: bool = False) -> dict[str, Any]:
    skel: dict[str, Any] = dict(SKELETON)
    names: Any = FULL_NAMES
    edges: Any = [[0, 1], [1, 2], [2, 3], [3, 4]]
    if as_numpy:
        names = np.array(FULL_NAMES)
        edges = np.array(edges, np.int64)
        skel = {
            "names": np.array(skel["names"]),
            "indices": np.array(skel["indices"]),
            "edges": np.array(skel["edges"]),
        }
    return {
        "joint_names": names,
        "joint_edges": edges,
        "skeleton_infos": {"bml_movi_87": skel, "other": {"names": ["a"], "indices": [1], "edges": []}},
    }


def save_detector(path: Path) -> None:
    import tensorflow as tf

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
        def detect(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            keep = tf.fill([3], tf.reduce_max(image) > 0)
            return {
                "boxes": tf.boolean_mask(tf.constant(BOXES_XYWH), keep),
                "scores": tf.boolean_mask(tf.constant(SCORES), keep),
            }

    det = Detector()
    tf.saved_model.save(det, str(path), signatures={"serving_default": det.detect})


def save_backbone(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    j = len(FULL_NAMES)
    inits = [
        const("axis_c", np.array([3], np.int64)),
        const("flat_shape", np.array([-1, S * S], np.int64)),
        const("side", np.array(S, np.int64)),
        const("one", np.array([1], np.int64)),
        const("zero", np.array([0], np.int64)),
        const("corner_shape", np.array([-1, 1, 1], np.int64)),
        const("c2", C2[None]),
        const("d2", D2[None]),
        const("c3", C3[None]),
        const("z3", np.zeros((1, j, 3), np.float32)),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["x", "axis_c"], ["grey"], keepdims=0),
        helper.make_node("Reshape", ["grey", "flat_shape"], ["flat"]),
        helper.make_node("ArgMax", ["flat"], ["idx"], axis=1, keepdims=1),
        helper.make_node("Div", ["idx", "side"], ["row"]),
        helper.make_node("Mod", ["idx", "side"], ["col"]),
        helper.make_node("Concat", ["col", "row"], ["rc"], axis=1),
        helper.make_node("Cast", ["rc"], ["rcf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["rcf", "one"], ["dot"]),
        helper.make_node("Slice", ["x", "zero", "one", "one"], ["x0"]),  # x[:, 0:1]
        helper.make_node("Slice", ["x0", "zero", "one", "axis_c"], ["x00"]),  # [..., 0:1] of channel
        helper.make_node("Gather", ["x00", "zero"], ["x000"], axis=2),  # column 0
        helper.make_node("Reshape", ["x000", "corner_shape"], ["corner"]),
        helper.make_node("Mul", ["corner", "d2"], ["shift"]),
        helper.make_node("Add", ["c2", "shift"], ["others"]),
        helper.make_node("Concat", ["dot", "others"], ["coords2d"], axis=1),
        helper.make_node("Mul", ["corner", "z3"], ["z"]),
        helper.make_node("Add", ["c3", "z"], ["coords3d"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_metrabs",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT16, ["n", S, S, 3])],
        [
            helper.make_tensor_value_info("coords2d", TensorProto.FLOAT, ["n", j, 2]),
            helper.make_tensor_value_info("coords3d", TensorProto.FLOAT, ["n", j, 3]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("metrabs_src")
    save_detector(src / "yolo_detector")
    save_backbone(src / "metrabs_backbone.onnx")
    (src / "metadata.pkl").write_bytes(pickle.dumps(metadata(as_numpy=True), protocol=4))
    return src


@pytest.fixture(scope="module")
def model_set(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return import_metrabs(artifacts, tmp_path_factory.mktemp("sets") / "metrabs")


# -- metadata pickle ----------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, call: Any, args: tuple[Any, ...]) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.call, self.args)


@pytest.mark.parametrize(
    ("payload", "global_name"),
    [
        (lambda marker: _Evil(os.system, (f"touch {marker}",)), "posix.system"),
        (lambda marker: _Evil(eval, (f"open({str(marker)!r}, 'w')",)), "builtins.eval"),
        (lambda marker: _Evil(subprocess.Popen, (["touch", str(marker)],)), "subprocess.Popen"),
    ],
)
def test_restricted_unpickler_refuses_code(tmp_path: Path, payload: Any, global_name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"joint_names": ["a"], "x": payload(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=f"refusing to load global '{global_name}'") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_numpy_data(tmp_path: Path, protocol: int) -> None:
    data = metadata(as_numpy=True) | {
        "scalars": [np.float32(1.5), np.int64(7)],
        "misc": ({1, 2}, frozenset({3}), b"by", 2.5, None, True),
        "mat": np.arange(6, dtype=np.float64).reshape(2, 3),
    }
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded["mat"], data["mat"])
    assert list(loaded["joint_names"]) == FULL_NAMES
    as_json = pickle_to_json(path)
    assert as_json["joint_names"] == FULL_NAMES
    assert as_json["joint_edges"] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert as_json["skeleton_infos"]["bml_movi_87"] == SKELETON
    assert as_json["scalars"] == [1.5, 7] and as_json["mat"] == [[0, 1, 2], [3, 4, 5]]
    assert as_json["misc"] == [[1, 2], [3], "by", 2.5, None, True]
    json.dumps(as_json, allow_nan=False)


def test_numpy1_module_paths_are_accepted(tmp_path: Path) -> None:
    raw = pickle.dumps({"a": np.arange(3, dtype=np.int32)}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    old = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # as numpy 1.x wrote it
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    np.testing.assert_array_equal(load_pickle(path)["a"], [0, 1, 2])


def test_garbage_pickle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        load_pickle(path)


class _Reduce:
    """Pickles as ``call(*args)``, then BUILD with ``state`` if given (how the bombs below are written)."""

    def __init__(self, call: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.call, self.args, self.state = call, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.call, self.args) if self.state is None else (self.call, self.args, self.state)


def _refused(path: Path, match: str) -> None:
    with pytest.raises(UnsafePickleError, match=match) as info:
        pickle_to_json(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_bytearray_bomb_is_refused(tmp_path: Path) -> None:
    # 33 bytes that allocate 100 MB when unpickled plainly: bytearray(100_000_000) via REDUCE
    bomb = b"\x80\x02c__builtin__\nbytearray\nJ\x00\xe1\xf5\x05\x85R."
    assert len(bomb) == 33 and len(pickle.loads(bomb)) == 100_000_000
    path = tmp_path / "bomb.pkl"
    path.write_bytes(bomb)
    _refused(path, "refusing to load global 'builtins.bytearray'")
    # a bytearray written as data (a protocol 5 opcode, sized by the file) is still plain data
    legit = tmp_path / "ok.pkl"
    legit.write_bytes(pickle.dumps(metadata(as_numpy=True) | {"blob": bytearray(b"ab")}, protocol=5))
    loaded = pickle_to_json(legit)
    assert loaded["blob"] == "ab" and loaded["skeleton_infos"]["bml_movi_87"] == SKELETON


def _array(shape: tuple[int, ...], dtype: str, raw: Any) -> _Reduce:
    """numpy's own pickle form of an array: _reconstruct(ndarray, (0,), b"b") then BUILD with the state."""
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(dtype), False, raw))


_MB = b"\x01" * (1 << 20)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        # an object array claiming 10**8 items with one given: numpy allocates 800 MB (or crashes) on BUILD
        (lambda: _array((10**8,), "O", [None]), r"object array of shape \(100000000,\) has 1 items"),
        (lambda: _array((10**9,), "f8", b"\0" * 8), "needs 8000000000 data bytes, has 8"),
        (lambda: _Reduce(_reconstruct, (np.ndarray, (10**12,), b"b")), "would allocate 1000000000000 bytes"),
        (lambda: _Reduce(np.ndarray, ((10**9,),)), "calling numpy.ndarray directly"),
        (lambda: _Reduce(codecs.encode, ("x", "rot13")), r"allowed only as \(str, 'latin1'\)"),
        # 100 arrays sharing one 1 MB bytes object (pickled once): a 1 MB file asking for 100 MB of arrays
        (lambda: [_array((1 << 20,), "u1", _MB) for _ in range(100)], "limit 67108864 bytes of arrays"),
    ],
    ids=["object-array-state", "short-data", "reconstruct-shape", "ndarray-call", "codecs", "shared-buffer"],
)
def test_unpickler_bounds_allocations(tmp_path: Path, payload: Any, match: str) -> None:
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"joint_names": ["a"], "x": payload()}, protocol=4))
    assert path.stat().st_size < (2 << 20)
    _refused(path, match)


def test_shared_references_do_not_expand_without_bound(tmp_path: Path) -> None:
    nested: Any = ["joint"]
    for _ in range(40):  # 2**40 leaves once expanded; a few hundred bytes as a pickle
        nested = [nested, nested]
    path = tmp_path / "laughs.pkl"
    path.write_bytes(pickle.dumps({"joint_names": nested}, protocol=4))
    assert path.stat().st_size < 1000
    # 2**41 - 1 lists + 2**40 strings + the dict and its key; 5 * 2**40 + len("joint_names") characters
    _refused(path, r"expands to 3298534883329 values and 5497558138891 characters as JSON \(limits 2000000")


# -- pure pre/post-processing -------------------------------------------------------------------------------


def test_crop_geometry_round_trip() -> None:
    boxes = np.array([[40, 20, 84, 80], [0, 0, 10, 30]], np.float32)
    m = crop_matrices(boxes, S, crop_scale=1.25)
    # centre of the box -> centre of the crop; box's longer side * 1.25 -> S crop px
    k = S / (np.array([60, 30]) * 1.25)
    np.testing.assert_allclose(m[:, 0, 0], k)
    centre = np.array([[62, 50], [5, 15]], np.float64)
    q = np.einsum("mij,mj->mi", m[:, :, :2], centre) + m[:, :, 2]
    np.testing.assert_allclose(q, (S - 1) / 2)
    pts = np.random.default_rng(0).uniform(-10, 300, (2, 7, 2)).astype(np.float32)
    img = crop_to_image(pts, m)
    back = np.einsum("mij,mkj->mki", m[:, :, :2], img.astype(np.float64)) + m[:, None, :, 2]
    np.testing.assert_allclose(back, pts, atol=1e-3)


def test_make_crops_samples_the_right_pixels() -> None:
    frames = np.zeros((2, H, W, 3), np.uint8)
    frames[1, 50, 62] = [255, 128, 1]  # the box centre pixel of frame 1
    frames[1, 50, 66] = [7, 8, 9]
    m = crop_matrices(np.array([[52, 40, 72, 60]], np.float32), 5)  # side 20 px -> 4 image px per crop px
    crops = make_crops(frames, np.array([1]), m, 5)
    assert crops.shape == (1, 5, 5, 3)
    np.testing.assert_array_equal(
        crops[0, 2, 2], [255, 128, 1]
    )  # crop centre reads the image at the box centre
    np.testing.assert_array_equal(crops[0, 2, 3], [7, 8, 9])  # one crop px right = 4 image px right
    assert crops[0].sum() == 255 + 128 + 1 + 7 + 8 + 9


def test_filter_detections() -> None:
    boxes = xywh_to_xyxy(BOXES_XYWH)
    np.testing.assert_array_equal(boxes[0], [40, 20, 84, 80])
    assert filter_detections(boxes, SCORES, 0.3, 0.7, 10).tolist() == [0]  # 1 suppressed, 2 below threshold
    assert filter_detections(boxes, SCORES, 0.3, 0.95, 10).tolist() == [0, 1]  # IoU 0.925 < 0.95
    assert filter_detections(boxes, SCORES, 0.05, 0.95, 2).tolist() == [0, 1]
    nan_box = boxes.copy()
    nan_box[0, 0] = np.nan
    assert filter_detections(nan_box, SCORES, 0.3, 0.7, 10).tolist() == [1]


def test_reconstruct_absolute_recovers_exact_pose() -> None:
    rng = np.random.default_rng(1)
    intr = Intrinsics(fx=500.0, fy=510.0, cx=319.5, cy=239.5, width=640, height=480)
    truth = rng.uniform(-400, 400, (3, 6, 3)) + np.array([100.0, -50.0, 3500.0])
    u = intr.fx * truth[..., 0] / truth[..., 2] + intr.cx
    v = intr.fy * truth[..., 1] / truth[..., 2] + intr.cy
    rel = truth - truth.mean(axis=1, keepdims=True)
    w = np.ones((3, 6))
    w[2, 2:] = 0  # third person: only two joints usable -> still exact
    w[1, 0] = 0
    out = reconstruct_absolute(np.stack([u, v], -1), rel, w, intr.fx, intr.fy, intr.cx, intr.cy)
    np.testing.assert_allclose(out, truth, atol=0.05)
    w[0, 1:] = 0  # one joint is not enough
    out = reconstruct_absolute(np.stack([u, v], -1), rel, w, intr.fx, intr.fy, intr.cx, intr.cy)
    assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()


# -- import -------------------------------------------------------------------------------------------------


def test_import_writes_model_set(model_set: Any, artifacts: Path) -> None:
    root = model_set.root
    assert sorted(p.name for p in root.iterdir()) == [
        "backbone.onnx",
        "detector",
        "manifest.json",
        "metadata.json",
    ]
    again = read_local(root)  # hashes verified
    assert again.id == model_set.id
    man = model_set.manifest
    assert (
        man.kind == "metrabs"
        and man.joint_names == SKELETON["names"]
        and man.joint_edges == SKELETON["edges"]
    )
    assert man.input_resolution == [256, 256]
    assert man.extra["joint_indices"] == [3, 0, 4, 1] and man.extra["n_backbone_joints"] == 5
    assert man.extra["backbone"]["kp2d"] == "coords2d" and man.extra["backbone"]["kp3d"] == "coords3d"
    assert man.extra["detector"]["input"] == "image"
    assert json.loads((root / "metadata.json").read_text())["skeleton_infos"]["bml_movi_87"] == SKELETON
    assert (root / "backbone.onnx").read_bytes() == (artifacts / "metrabs_backbone.onnx").read_bytes()
    assert not list(root.glob("*.pkl"))
    # importing the same artifacts again returns the same set; a different skeleton into the same folder is refused
    assert import_metrabs(artifacts, root).id == model_set.id
    with pytest.raises(ModelSetError, match="already holds a different model set"):
        import_metrabs(artifacts, root, skeleton="other")


def test_import_refuses_malicious_pickle(artifacts: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for p in artifacts.iterdir():
        if p.suffix != ".pkl":
            (src / p.name).symlink_to(p)
    marker = tmp_path / "pwned"
    (src / "metadata.pkl").write_bytes(pickle.dumps({"joint_names": _Evil(os.system, (f"touch {marker}",))}))
    with pytest.raises(UnsafePickleError, match="posix.system"):
        import_metrabs(src, tmp_path / "dest")
    assert not marker.exists() and not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_import_errors_are_clear(artifacts: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelSetError, match="no skeleton 'nope' in skeleton_infos; available"):
        import_metrabs(artifacts, tmp_path / "d1", skeleton="nope")
    src = tmp_path / "no_onnx"
    src.mkdir()
    (src / "detector").symlink_to(artifacts / "yolo_detector")
    (src / "metadata.pkl").symlink_to(artifacts / "metadata.pkl")
    with pytest.raises(ModelSetError, match="expected exactly one backbone .onnx, found 0"):
        import_metrabs(src, tmp_path / "d2")


# -- estimator ----------------------------------------------------------------------------------------------


def _frame(grey: int, dot: tuple[int, int] | None) -> np.ndarray:
    f = np.full((H, W, 3), grey, np.uint8)
    if dot is not None:
        f[dot[1], dot[0]] = 255
    return f


def test_estimator_returns_image_px(model_set: Any) -> None:
    from models.metrabs.runtime import MetrabsEstimator

    est = MetrabsEstimator(model_set, ThreadConfig(threads=1))
    assert est.joint_names == SKELETON["names"]
    dots = {0: (70, 40), 2: (55, 66)}
    greys = {0: 100, 1: 0, 2: 50}
    frames = np.stack([_frame(greys[i], dots.get(i)) for i in range(3)])
    intr = Intrinsics.from_fov(W, H, 60.0)
    out = est(frames, intr)
    assert [d.n for d in out] == [1, 0, 1]  # black frame: the detector finds nobody

    # the expected result, from the box and the crop rule (centre, side = longer box side, 256 px)
    x0, y0, bw, bh = BOXES_XYWH[0]
    centre = np.array([x0 + bw / 2, y0 + bh / 2], np.float64)
    k = S / max(bw, bh)
    for i in (0, 2):
        det = out[i]
        np.testing.assert_allclose(det.boxes[0], [x0, y0, x0 + bw, y0 + bh])
        assert det.scores[0] == pytest.approx(0.9)
        np.testing.assert_allclose(det.conf[0], 0.9)
        # joint "dot" (full index 0): the crop pixel nearest to where the dot lands, mapped back
        q = k * (np.array(dots[i], np.float64) - centre) + (S - 1) / 2
        assert np.all(np.abs(q - np.floor(q) - 0.5) > 0.1)  # no rounding tie in this set-up
        want_dot = centre + (np.round(q) - (S - 1) / 2) / k
        # other joints: constants shifted by the crop's top-left value, grey / 255 as float16
        corner = np.float32(np.float16(greys[i] / 255.0))
        want_full = np.zeros((5, 2))
        want_full[0] = want_dot
        want_full[1:] = centre + (C2 + corner * D2 - (S - 1) / 2) / k
        want = want_full[SKELETON["indices"]]
        np.testing.assert_allclose(det.kp2d[0], want, atol=2e-3)
        assert np.abs(det.kp2d[0][1] - np.array(dots[i])).max() <= 0.5 / k + 1e-3

        # 3D: the constant shape, placed by least squares on the 2D prediction
        rel = C3[SKELETON["indices"]].astype(np.float64)
        got = det.kp3d[0].astype(np.float64)
        np.testing.assert_allclose(got - got.mean(0), rel - rel.mean(0), atol=1e-2)
        t = got[0] - rel[0]
        xn = (det.kp2d[0].astype(np.float64) - [intr.cx, intr.cy]) / [intr.fx, intr.fy]
        a = np.concatenate(
            [
                np.stack([np.ones(4), np.zeros(4), -xn[:, 0]], 1),
                np.stack([np.zeros(4), np.ones(4), -xn[:, 1]], 1),
            ]
        )
        b = np.concatenate([xn[:, 0] * rel[:, 2] - rel[:, 0], xn[:, 1] * rel[:, 2] - rel[:, 1]])
        np.testing.assert_allclose(t, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-4, atol=0.05)
        assert np.all(got[:, 2] > 0)

    only_black = est(frames[1:2], intr)
    assert len(only_black) == 1 and only_black[0].n == 0 and only_black[0].kp2d.shape == (0, 4, 2)
    assert est(frames[:0], intr) == []
    with pytest.raises(ValueError, match="intrinsics are for 640x480 but the frames are 160x120"):
        est(frames, Intrinsics.from_fov(640, 480, 60.0))
