"""Runtime pieces shared by every model set: the pose-estimator interface and thread configuration.

An actor that asks for k CPUs runs ONNX Runtime with intra_op=k, inter_op=1 and TensorFlow with k intra / 1 inter
threads (DESIGN.md "Threads"). Never size a pool from os.cpu_count() inside a worker.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.modelset import ModelSet, ModelSetError

if TYPE_CHECKING:
    import onnxruntime as ort

    from mocapflow.camera import Intrinsics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameDetections:
    """All people found in one frame (m may be 0)."""

    boxes: np.ndarray  # [m, 4] float32 x0, y0, x1, y1 px
    scores: np.ndarray  # [m] float32
    kp2d: np.ndarray  # [m, J, 2] float32 px
    kp3d: np.ndarray  # [m, J, 3] float32 camera-frame mm (NaN when the model has no 3D)
    conf: np.ndarray  # [m, J] float32 in [0, 1]

    def __post_init__(self) -> None:
        m = self.boxes.shape[0]
        if not (
            self.scores.shape == (m,)
            and self.kp2d.shape[0] == m
            and self.kp3d.shape[0] == m
            and self.conf.shape[0] == m
        ):
            raise ValueError("FrameDetections: inconsistent number of people across arrays")

    @property
    def n(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(n_joints: int) -> FrameDetections:
        return FrameDetections(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            kp2d=np.zeros((0, n_joints, 2), np.float32),
            kp3d=np.zeros((0, n_joints, 3), np.float32),
            conf=np.zeros((0, n_joints), np.float32),
        )


@dataclass(frozen=True)
class ThreadConfig:
    """Threads for one actor or task: k intra-op threads, one inter-op thread, optional spinning."""

    threads: int = 1
    spinning: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class PoseEstimator(abc.ABC):
    """Load models in ``__init__``; pure work in ``__call__``.

    Subclasses split their work into ``preprocess`` / inference / ``postprocess``; pre and post are plain numpy
    functions tested without a model.
    """

    joint_names: Sequence[str]
    joint_edges: Sequence[tuple[int, int]]

    def __init__(self, model_set: ModelSet, threads: ThreadConfig) -> None:
        self.model_set = model_set
        self.threads = threads
        self.joint_names = list(model_set.manifest.joint_names)
        self.joint_edges = [tuple(e) for e in model_set.manifest.joint_edges]

    @abc.abstractmethod
    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        """frames: uint8 [n, H, W, 3] RGB -> one FrameDetections per frame."""

    def output_params(self) -> dict[str, Any]:
        """Runtime options that change this estimator's output (e.g. ``metrabs``' test-time augmentation and the
        confidence rule it implies); empty when the output depends on the model set alone."""
        return {}

    def video_session(self, intrinsics: Intrinsics) -> VideoSession:
        """A session for ONE video: call it with that video's consecutive batches of frames, in order.

        A session may carry state from one frame to the next (e.g. BlazePose's region of interest taken from the
        previous frame's landmarks, MediaPipe-style); the default one is stateless and calls the estimator per batch.
        """
        return StatelessSession(self, intrinsics)


class VideoSession(abc.ABC):
    """Per-video pose state (the loop's state as one visible object, STYLE.md #11)."""

    @abc.abstractmethod
    def __call__(self, frames: np.ndarray) -> list[FrameDetections]:
        """The next consecutive frames of the video (uint8 [n, H, W, 3] RGB) -> one FrameDetections per frame, in
        order; a session may hold the last few back until later calls or :meth:`finish`."""

    def finish(self) -> list[FrameDetections]:
        """The frames held back, once the video has ended."""
        return []


class StatelessSession(VideoSession):
    """Every batch estimated on its own."""

    def __init__(self, estimator: PoseEstimator, intrinsics: Intrinsics) -> None:
        self.estimator = estimator
        self.intrinsics = intrinsics

    def __call__(self, frames: np.ndarray) -> list[FrameDetections]:
        return self.estimator(frames, self.intrinsics)


def check_frames(frames: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """The frames as uint8 [n, H, W, 3] RGB whose size matches the intrinsics, or a ValueError saying what to fix."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [n, H, W, 3] RGB, got {arr.dtype} {arr.shape}")
    h, w = arr.shape[1:3]
    if (intrinsics.width, intrinsics.height) != (w, h):
        raise ValueError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height} but the frames are {w}x{h}; "
            "pass the intrinsics of this video (or rescale them to the decoded size)"
        )
    return arr


def ort_session(
    path: Path, threads: ThreadConfig, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> ort.InferenceSession:
    """An ONNX Runtime session with explicit thread settings (it ignores OMP_NUM_THREADS and Ray's num_cpus)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if threads.spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if threads.spinning else "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=list(providers))


def session_threads(session: ort.InferenceSession) -> dict[str, Any]:
    """The thread settings a session was built with (for tests and the actor's self-report)."""
    so = session.get_session_options()
    return {
        "intra_op_num_threads": so.intra_op_num_threads,
        "inter_op_num_threads": so.inter_op_num_threads,
        "allow_spinning": so.get_session_config_entry("session.intra_op.allow_spinning") == "1",
        "graph_optimization_level": str(so.graph_optimization_level),
    }


def configure_tensorflow(threads: ThreadConfig) -> dict[str, int]:
    """Set TF's intra/inter op threads; must run before TF executes its first op in this process."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() not in (
        0,
        threads.threads,
    ) or tf.config.threading.get_inter_op_parallelism_threads() not in (0, 1):
        logger.warning("TensorFlow threads were already configured in this process; keeping them")
    else:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError as e:  # TF already initialised its runtime
            logger.warning(
                "could not set TensorFlow threads (%s); TF was initialised earlier in this process", e
            )
    return {
        "intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def open_estimator(
    model_set: ModelSet,
    threads: ThreadConfig,
    test_time_augmentation: int = 1,
    max_people: int | None = None,
    scan_interval: int | None = None,
    mirror_average: bool | None = None,
    max_scan_interval: int | None = None,
    backtrack_frames: int | None = None,
) -> PoseEstimator:
    """Instantiate the runtime for a model set's kind.

    ``test_time_augmentation``: crops per detection where the kind supports it (``metrabs``); other kinds log a
    warning and run one crop. ``max_people`` / ``scan_interval`` / ``max_scan_interval``: the tracking policy of
    kinds that track people from frame to frame (``blazepose``; None keeps the runtime's default).
    ``mirror_average``: ``blazepose`` averages each crop's landmarks with its mirror image's (None: the default, on).
    ``backtrack_frames``: ``blazepose`` tracks people it finds backwards from this many frames later (None: the
    default)."""
    kind = model_set.manifest.kind
    if test_time_augmentation > 1 and kind != "metrabs":
        logger.warning(
            "model set %r (%s) has no test-time augmentation; test_time_augmentation=%d is ignored",
            model_set.manifest.name,
            kind,
            test_time_augmentation,
        )
    if kind == "markers":
        from models.markers.runtime import MarkersEstimator

        return MarkersEstimator(model_set, threads)
    if kind == "blazepose":
        from models.blazepose.runtime import BlazePoseEstimator, BlazePoseOptions

        policy: dict[str, int | bool] = {}
        if mirror_average is not None:
            policy["mirror_average"] = mirror_average
        if max_people is not None:
            policy["max_people"] = max_people
        if scan_interval is not None:
            policy["scan_interval"] = scan_interval
        if max_scan_interval is not None:
            policy["max_scan_interval"] = max_scan_interval
        if backtrack_frames is not None:
            policy["backtrack_frames"] = backtrack_frames
        return BlazePoseEstimator(model_set, threads, BlazePoseOptions(**policy))
    if kind == "metrabs":
        from models.metrabs.runtime import MetrabsEstimator, MetrabsOptions

        return MetrabsEstimator(
            model_set, threads, MetrabsOptions(test_time_augmentation=test_time_augmentation)
        )
    raise ModelSetError(f"model set {model_set.manifest.name!r}: no runtime for kind {kind!r}")
