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
from models.joints import mirror_indices
from models.metrabs import UnsafePickleError, import_metrabs, load_pickle, pickle_to_json
from models.metrabs.processing import (
    augment_matrices,
    crop_matrices,
    crop_to_image,
    filter_detections,
    gamma_tables,
    make_crops,
    reconstruct_absolute,
    spread_to_confidence,
    tta_average,
    tta_schedule,
    unaugment,
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


def save_detector(path: Path, boxes: np.ndarray = BOXES_XYWH, scores: np.ndarray = SCORES) -> None:
    """A detector returning the fixed ``boxes`` (x, y, w, h) and ``scores``, none on an all-black frame."""
    import tensorflow as tf

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
        def detect(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            keep = tf.fill([len(scores)], tf.reduce_max(image) > 0)
            return {
                "boxes": tf.boolean_mask(tf.constant(boxes), keep),
                "scores": tf.boolean_mask(tf.constant(scores), keep),
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
    assert est.output_params() == {
        "test_time_augmentation": 1,
        "confidence": {"rule": "unmeasured", "cap": 0.5, "of": "detector_score", "version": 1},
    }
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
        # one crop per detection: no spread measured, so every joint gets the detector score capped at 0.5
        np.testing.assert_allclose(det.conf[0], 0.5)
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


# -- test-time augmentation: pure functions ---------------------------------------------------------------------


def test_tta_schedule_is_the_authors() -> None:
    one = tta_schedule(1)
    assert (one.angles_deg.tolist(), one.zooms.tolist(), one.flips.tolist(), one.gammas.tolist()) == (
        [0.0],
        [1.0],
        [False],
        [1.0],
    )
    five = tta_schedule(5)  # MeTRAbs' num_aug default
    np.testing.assert_allclose(five.angles_deg, [-25, -12.5, 0, 12.5, 25])
    np.testing.assert_allclose(five.zooms, [0.8, 0.9, 1.0, 1.05, 1.1])
    assert five.flips.tolist() == [False, True, False, True, False]
    np.testing.assert_allclose(five.gammas, [0.6, 0.7, 0.8, 0.9, 1.0])
    ten = tta_schedule(10)  # the authors' cohort pipeline
    np.testing.assert_allclose(ten.zooms[:5], [0.8, 0.84, 0.88, 0.92, 0.96])
    np.testing.assert_allclose(ten.zooms[5:], [1.0, 1.025, 1.05, 1.075, 1.1])
    assert ten.flips.tolist() == [True, False] * 5
    with pytest.raises(ValueError, match="test_time_augmentation must be >= 1, got 0"):
        tta_schedule(0)
    np.testing.assert_array_equal(
        gamma_tables(np.array([1.0, 0.5]))[:, [0, 64, 255]], [[0, 64, 255], [0, 128, 255]]
    )


def test_mirror_indices_pair_left_and_right() -> None:
    names = ["head", "lsho_h36m", "rsho_h36m", "left_knee", "right_knee", "L_ear", "R_ear", "lonely", "pelv"]
    assert mirror_indices(names).tolist() == [0, 2, 1, 4, 3, 6, 5, 7, 8]


def _augmented_predictions(
    truth2d: np.ndarray, truth3d: np.ndarray, matrices: np.ndarray, schedule: Any, mirror: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What an exactly equivariant backbone outputs on each augmented crop (written from the definitions: points
    through each crop matrix, 3D turned by the crop's rotation/flip, labels of flipped crops swapped)."""
    q = np.einsum("maij,mkj->maki", matrices[..., :2], truth2d) + matrices[:, :, None, :, 2]
    a = np.deg2rad(schedule.angles_deg)
    p3 = np.repeat(truth3d[:, None], schedule.n, axis=1)
    x, y = p3[..., 0].copy(), p3[..., 1].copy()
    c, s = np.cos(a)[None, :, None], np.sin(a)[None, :, None]
    sign = np.where(schedule.flips, -1.0, 1.0)[None, :, None]
    p3[..., 0], p3[..., 1] = sign * (c * x - s * y), s * x + c * y
    q[:, schedule.flips] = q[:, schedule.flips][:, :, mirror]
    p3[:, schedule.flips] = p3[:, schedule.flips][:, :, mirror]
    return q, p3


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_unaugment_inverts_every_augmentation_exactly(n: int) -> None:
    rng = np.random.default_rng(n)
    names = ["head", "lwri", "rwri", "pelv", "lank", "rank"]
    mirror = mirror_indices(names)
    boxes = np.array([[40, 20, 84, 80], [300, 10, 420, 400]], np.float32)
    schedule = tta_schedule(n)
    matrices = augment_matrices(crop_matrices(boxes, S, 1.25), schedule, S)
    assert matrices.shape == (2, n, 2, 3)
    truth2d = rng.uniform(0, 400, (2, 6, 2))
    truth3d = rng.uniform(-800, 800, (2, 6, 3))
    q, p3 = _augmented_predictions(truth2d, truth3d, matrices, schedule, mirror)
    img, back3d = unaugment(q, p3, matrices, schedule, mirror)
    np.testing.assert_allclose(img, np.repeat(truth2d[:, None], n, 1), atol=1e-3)
    np.testing.assert_allclose(back3d, np.repeat(truth3d[:, None], n, 1), atol=1e-2)
    mean2d, mean3d, spread, ok = tta_average(img, back3d)
    assert ok.all()
    np.testing.assert_allclose(mean2d, truth2d, atol=1e-3)
    np.testing.assert_allclose(mean3d, truth3d, atol=1e-2)
    np.testing.assert_allclose(spread, 0.0, atol=1e-2)


def test_tta_average_spread_ignores_origin_and_isolates_unstable_joints() -> None:
    n, j = 6, 7
    rng = np.random.default_rng(3)
    shape = rng.uniform(-500, 500, (1, 1, j, 3))
    origin = rng.uniform(-2000, 2000, (1, n, 1, 3))  # the backbone's 3D has no fixed origin
    p3 = np.repeat(shape, n, axis=1) + origin
    wobble = np.array([1.0, -1.0] * (n // 2))[None, :, None] * np.array([300.0, 0.0, 400.0])
    p3[:, :, 2] += wobble  # joint 2 alternates by +-(300, 0, 400) mm: std 500 mm
    p3[:, 3, 5] = np.nan  # joint 5 is missing in one augmentation
    p2 = rng.uniform(0, 100, (1, n, j, 2))
    mean2d, mean3d, spread, ok = tta_average(p2, p3)
    assert ok[0].tolist() == [True, True, True, True, True, False, True]
    np.testing.assert_allclose(spread[0, [0, 1, 3, 4, 6]], 0.0, atol=1e-3)
    np.testing.assert_allclose(spread[0, 2], 500.0, rtol=1e-6)
    assert np.isnan(spread[0, 5]) and np.isnan(mean2d[0, 5]).all() and np.isnan(mean3d[0, 5]).all()
    rel = mean3d[0] - mean3d[0, :1]
    np.testing.assert_allclose(
        rel[[1, 2, 3, 4, 6]], (shape[0, 0] - shape[0, 0, :1])[[1, 2, 3, 4, 6]], atol=1e-3
    )
    np.testing.assert_allclose(mean2d[0, 0], p2[0, :, 0].mean(0), rtol=1e-6)
    conf = spread_to_confidence(np.array([0.0, 100.0, 200.0, 300.0, 500.0, np.nan]))
    np.testing.assert_allclose(conf, [0.98201, 0.88080, 0.5, 0.11920, 0.00247, 0.0], atol=1e-5)


# -- test-time augmentation: the estimator on a toy backbone ----------------------------------------------------

TTA_NAMES = ["head", "pelv", "lwri", "rwri", "lank", "rank"]
TTA_SKELETON = {"names": ["lwri", "head", "rank", "pelv", "rwri", "lank"], "indices": [2, 0, 5, 1, 3, 4]}
TTA_BOX = np.array([[50, 10, 60, 90]], np.float32)  # x, y, w, h -> centre (80, 55), crop side 90 px
TTA_SCORE = np.array([0.8], np.float32)
BLOBS = {"head": ((80, 30), 0), "pelv": ((80, 75), 1), "lwri": ((62, 55), 2), "rwri": ((98, 55), 2)}
LIMB_MM = 500.0  # head - pelvis distance of the toy's 3D
BAD2D = np.array([[[40.0, 230.0], [215.0, 230.0]]], np.float32)  # lank, rank: fixed crop px
BAD3D = np.array([[[-150.0, 2000.0, 0.0], [150.0, 2000.0, 0.0]]], np.float32)  # and fixed crop-frame mm


def save_tta_backbone(path: Path) -> None:
    """A backbone whose head/pelv/lwri/rwri are exactly equivariant, lank/rank not at all.

    2D: head = intensity centroid of the red channel, pelv = of green, lwri/rwri = of blue in the crop's left/right
    half; 3D: (centroid - pelv centroid) * LIMB_MM / |head - pelv| in the crop plane (z = 0), so it turns with the
    crop and ignores its zoom. lank/rank: the constants BAD2D / BAD3D whatever the crop."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cols, rows = np.meshgrid(np.arange(S, dtype=np.float32), np.arange(S, dtype=np.float32))
    left = (cols < (S - 1) / 2).astype(np.float32)
    consts = {
        "gx": cols.reshape(1, -1),
        "gy": rows.reshape(1, -1),
        "mask_l": left.reshape(1, -1),
        "mask_r": 1.0 - left.reshape(1, -1),
        "flat": np.array([-1, S * S], np.int64),
        "ax1": np.array([1], np.int64),
        "bad2d": BAD2D,
        "bad3d": BAD3D,
        "zero": np.zeros(1, np.float32),
        "limb": np.array(LIMB_MM, np.float32),
        "ch0": np.array([0], np.int64),
        "ch1": np.array([1], np.int64),
        "ch2": np.array([2], np.int64),
        "ch3": np.array([3], np.int64),
        "axc": np.array([3], np.int64),
        "ax2": np.array([2], np.int64),
        "unsq": np.array([1], np.int64),
    }
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT)]

    def channel(c: int, name: str) -> None:
        nodes.append(helper.make_node("Slice", ["x", f"ch{c}", f"ch{c + 1}", "axc"], [f"{name}_4d"]))
        nodes.append(helper.make_node("Reshape", [f"{name}_4d", "flat"], [name]))

    def centroid(w: str, out: str) -> None:
        nodes.extend(
            [
                helper.make_node("ReduceSum", [w, "ax1"], [f"{out}_sw"], keepdims=1),
                helper.make_node("Mul", [w, "gx"], [f"{out}_wx"]),
                helper.make_node("Mul", [w, "gy"], [f"{out}_wy"]),
                helper.make_node("ReduceSum", [f"{out}_wx", "ax1"], [f"{out}_sx"], keepdims=1),
                helper.make_node("ReduceSum", [f"{out}_wy", "ax1"], [f"{out}_sy"], keepdims=1),
                helper.make_node("Div", [f"{out}_sx", f"{out}_sw"], [f"{out}_cx"]),
                helper.make_node("Div", [f"{out}_sy", f"{out}_sw"], [f"{out}_cy"]),
                helper.make_node("Concat", [f"{out}_cx", f"{out}_cy"], [f"{out}_c"], axis=1),
                helper.make_node("Unsqueeze", [f"{out}_c", "unsq"], [out]),  # [n, 1, 2]
            ]
        )

    channel(0, "red")
    channel(1, "green")
    channel(2, "blue")
    nodes.append(helper.make_node("Mul", ["blue", "mask_l"], ["blue_l"]))
    nodes.append(helper.make_node("Mul", ["blue", "mask_r"], ["blue_r"]))
    for w, out in (("red", "head"), ("green", "pelv"), ("blue_l", "lwri"), ("blue_r", "rwri")):
        centroid(w, out)
    nodes.extend(
        [
            helper.make_node("Concat", ["head", "pelv", "lwri", "rwri"], ["good2d"], axis=1),  # [n, 4, 2]
            helper.make_node("Sub", ["good2d", "pelv"], ["d"]),
            helper.make_node("Sub", ["head", "pelv"], ["hp"]),
            helper.make_node("ReduceL2", ["hp"], ["hp_len"], axes=[2], keepdims=1),  # [n, 1, 1]
            helper.make_node("Div", ["limb", "hp_len"], ["mm_per_px"]),
            helper.make_node("Mul", ["d", "mm_per_px"], ["xy"]),  # [n, 4, 2]
            helper.make_node("ReduceSum", ["xy", "ax2"], ["xy_sum"], keepdims=1),  # [n, 4, 1]
            helper.make_node("Mul", ["xy_sum", "zero"], ["z"]),  # zeros [n, 4, 1]
            helper.make_node("Concat", ["xy", "z"], ["good3d"], axis=2),  # [n, 4, 3]
            helper.make_node("Slice", ["z", "ch0", "ch1", "ax1"], ["z1"]),  # zeros [n, 1, 1]
            helper.make_node("Add", ["z1", "bad2d"], ["bad2"]),  # [n, 2, 2]
            helper.make_node("Add", ["z1", "bad3d"], ["bad3"]),  # [n, 2, 3]
            helper.make_node("Concat", ["good2d", "bad2"], ["coords2d"], axis=1),
            helper.make_node("Concat", ["good3d", "bad3"], ["coords3d"], axis=1),
        ]
    )
    j = len(TTA_NAMES)
    graph = helper.make_graph(
        nodes,
        "tta_toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT16, ["n", S, S, 3])],
        [
            helper.make_tensor_value_info("coords2d", TensorProto.FLOAT, ["n", j, 2]),
            helper.make_tensor_value_info("coords3d", TensorProto.FLOAT, ["n", j, 3]),
        ],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def tta_model_set(tmp_path_factory: pytest.TempPathFactory) -> Any:
    src = tmp_path_factory.mktemp("tta_src")
    save_detector(src / "detector", TTA_BOX, TTA_SCORE)
    save_tta_backbone(src / "toy.onnx")
    skeletons = {"bml_movi_87": TTA_SKELETON | {"edges": [[0, 1], [1, 3]]}}
    meta = {"joint_names": TTA_NAMES, "joint_edges": [[0, 1]], "skeleton_infos": skeletons}
    (src / "meta.pkl").write_bytes(pickle.dumps(meta, protocol=4))
    return import_metrabs(src, tmp_path_factory.mktemp("tta_sets") / "metrabs")


def _blob_frame() -> np.ndarray:
    """Gaussian blobs (sigma 2.5 px) centred on pixel centres: red head, green pelvis, two blue wrists."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W, 3))
    for (x, y), c in BLOBS.values():
        img[..., c] += 255.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2))
    return np.round(np.clip(img, 0, 255)).astype(np.uint8)[None]


class _CountingSession:
    """Wraps an ONNX Runtime session and counts the crops it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.crops = inner, 0, 0

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.calls += 1
        self.crops += next(iter(feeds.values())).shape[0]
        return self.inner.run(outputs, feeds)


def _tta_estimator(model_set: Any, n: int, max_batch: int = 64) -> Any:
    from models.metrabs.runtime import MetrabsEstimator, MetrabsOptions

    est = MetrabsEstimator(
        model_set, ThreadConfig(1), MetrabsOptions(test_time_augmentation=n, max_batch=max_batch)
    )
    est.session = _CountingSession(est.session)
    return est


def test_tta_confidence_comes_from_the_model(tta_model_set: Any) -> None:
    est = _tta_estimator(tta_model_set, 5)
    intr = Intrinsics.from_fov(W, H, 60.0)
    (det,) = est(_blob_frame(), intr)
    assert det.n == 1 and est.session.crops == 5
    by_name = dict(zip(est.joint_names, range(len(est.joint_names)), strict=True))
    good = [by_name[n] for n in ("head", "pelv", "lwri", "rwri")]
    bad = [by_name[n] for n in ("lank", "rank")]
    # equivariant joints: back on the blobs after averaging the five augmented crops, consistent -> high confidence
    for name in ("head", "pelv", "lwri", "rwri"):
        np.testing.assert_allclose(det.kp2d[0, by_name[name]], BLOBS[name][0], atol=0.3)
    conf = det.conf[0]
    assert np.all(conf[good] >= spread_to_confidence(np.array([5.0]))[0])  # spread under 5 mm
    assert np.all(conf[good] <= spread_to_confidence(np.array([0.0]))[0])
    # joints that ignore the crop: their un-augmented 3D scatters by hundreds of mm -> low confidence
    assert np.all(conf[bad] <= spread_to_confidence(np.array([400.0]))[0])
    assert not np.any(np.isclose(conf, TTA_SCORE[0]))  # not the detector's box score
    # 3D: the toy's shape (image directions, LIMB_MM head to pelvis), placed in front of the camera
    rel = det.kp3d[0] - det.kp3d[0, by_name["pelv"]]
    want = {"head": (0, -500, 0), "lwri": (-200, -2000 / 9, 0), "rwri": (200, -2000 / 9, 0)}
    for name, xyz in want.items():
        np.testing.assert_allclose(rel[by_name[name]], xyz, atol=3.0)
    assert np.all(det.kp3d[0, :, 2] > 0)
    assert est.output_params()["confidence"] == {
        "rule": "tta_spread",
        "spread": "3d_mm",
        "half_mm": 200.0,
        "scale_mm": 50.0,
        "version": 1,
    }


def test_one_crop_does_not_pretend(tta_model_set: Any) -> None:
    est = _tta_estimator(tta_model_set, 1)
    (det,) = est(_blob_frame(), Intrinsics.from_fov(W, H, 60.0))
    assert est.session.crops == 1
    np.testing.assert_allclose(
        det.conf[0], 0.5
    )  # min(detector score 0.8, 0.5) for every joint: nothing measured
    for name in ("head", "pelv", "lwri", "rwri"):
        np.testing.assert_allclose(det.kp2d[0, est.joint_names.index(name)], BLOBS[name][0], atol=0.3)


@pytest.mark.parametrize(("n", "max_batch", "calls"), [(1, 64, 1), (3, 64, 1), (10, 4, 8)])
def test_tta_setting_sets_the_backbone_work(tta_model_set: Any, n: int, max_batch: int, calls: int) -> None:
    est = _tta_estimator(tta_model_set, n, max_batch)
    frames = np.concatenate([_blob_frame()] * 3)  # one detection per frame
    out = est(frames, Intrinsics.from_fov(W, H, 60.0))
    assert [d.n for d in out] == [1, 1, 1]
    assert (est.session.crops, est.session.calls) == (3 * n, calls)


def test_tta_setting_reaches_the_estimator(tta_model_set: Any, tmp_path: Path) -> None:
    from mocapflow.settings import Settings
    from models.runtime import open_estimator
    from tasks.pose_ray import PoseWorker

    assert open_estimator(tta_model_set, ThreadConfig(1), test_time_augmentation=4).schedule.n == 4
    assert open_estimator(tta_model_set, ThreadConfig(1)).schedule.n == 1
    settings = Settings(
        model_set=str(tta_model_set.root),
        storage_root=str(tmp_path),
        pin_cpus=False,
        test_time_augmentation=3,
    )
    worker = PoseWorker(settings, cpus=1)
    assert worker.estimator.schedule.n == 3
    assert worker.info()["output_params"]["test_time_augmentation"] == 3
