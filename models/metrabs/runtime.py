"""MeTRAbs runtime: TensorFlow person detector + ONNX Runtime backbone.

Per call: the detector runs on each frame (its signature takes one image); boxes above the score threshold survive
NMS; every box of every frame becomes a square 256x256 crop (``processing.crop_matrices``); all crops go through the
backbone in one batched call (chunks of ``max_batch``); crop px are mapped back to image px, the chosen skeleton's
joints are selected, and each person's 3D pose is placed in the camera frame by least squares against its 2D
prediction and the video's intrinsics (``processing.reconstruct_absolute``).

Confidence: the backbone gives no per-joint confidence, so every joint of a person gets that person's detector score
(a real score, never a constant 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.metrabs.processing import (
    crop_matrices,
    crop_to_image,
    crops_to_input,
    filter_detections,
    make_crops,
    reconstruct_absolute,
    xywh_to_xyxy,
)
from models.modelset import ModelSet, ModelSetError
from models.runtime import (
    FrameDetections,
    PoseEstimator,
    ThreadConfig,
    check_frames,
    configure_tensorflow,
    ort_session,
)

if TYPE_CHECKING:
    from mocapflow.camera import Intrinsics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetrabsOptions:
    """Detector thresholds and batching (MeTRAbs' defaults: threshold 0.3, NMS IoU 0.7)."""

    detector_threshold: float = 0.3
    nms_iou: float = 0.7
    max_people: int = 16
    max_batch: int = 64  # crops per ONNX Runtime call


class MetrabsEstimator(PoseEstimator):
    """The ``metrabs`` model set: ``len(joint_names)`` joints of the imported skeleton, 2D px and camera-frame mm."""

    def __init__(
        self, model_set: ModelSet, threads: ThreadConfig, options: MetrabsOptions | None = None
    ) -> None:
        super().__init__(model_set, threads)
        manifest = model_set.manifest
        if manifest.kind != "metrabs":
            raise ModelSetError(f"model set {manifest.name!r} is of kind {manifest.kind!r}, not metrabs")
        self.options = options or MetrabsOptions()
        extra = manifest.extra
        try:
            self.joint_indices = np.asarray(extra["joint_indices"], np.intp)
            self.crop_size = int(extra["crop_size"])
            self.crop_scale = float(extra["crop_scale"])
            self._bb: dict[str, Any] = dict(extra["backbone"])
            self._det: dict[str, Any] = dict(extra["detector"])
        except (KeyError, TypeError) as e:
            raise ModelSetError(
                f"model set {manifest.name!r} ({model_set.root}): manifest extra lacks {e}; re-import it with "
                "models.metrabs.import_metrabs"
            ) from e
        import tensorflow as tf

        self.tf_threads = configure_tensorflow(threads)
        self._tf = tf
        self.detector = tf.saved_model.load(str(model_set.path("detector")))
        self._detect_fn = self.detector.signatures[self._det["signature"]]
        self.session = ort_session(model_set.path("backbone"), threads)
        self._outputs = [self._bb["kp2d"], self._bb["kp3d"]]
        logger.info(
            "metrabs loaded (%s, %d joints) with %d thread(s)",
            model_set.id,
            len(self.joint_names),
            threads.threads,
        )

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """People in one RGB frame: boxes ``[m, 4]`` (x0, y0, x1, y1 px) and scores ``[m]``, filtered and NMS'd."""
        out = self._detect_fn(**{self._det["input"]: self._tf.constant(frame, dtype=self._tf.uint8)})
        boxes = xywh_to_xyxy(out[self._det["boxes"]].numpy())
        scores = np.asarray(out[self._det["scores"]].numpy(), np.float32).reshape(-1)
        o = self.options
        keep = filter_detections(boxes, scores, o.detector_threshold, o.nms_iou, o.max_people)
        return boxes[keep], scores[keep]

    def backbone(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backbone on uint8 crops ``[n, S, S, 3]`` -> (crop px ``[n, J_all, 2]``, mm ``[n, J_all, 3]``)."""
        x = crops_to_input(crops, float(self._bb["input_scale"]))
        p2, p3 = [], []
        for i in range(0, x.shape[0], self.options.max_batch):
            a, b = self.session.run(self._outputs, {self._bb["input"]: x[i : i + self.options.max_batch]})
            p2.append(a)
            p3.append(b)
        return np.concatenate(p2).astype(np.float32), np.concatenate(p3).astype(np.float32)

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        frames = check_frames(frames, intrinsics)
        n_joints = len(self.joint_names)
        if frames.shape[0] == 0:
            return []
        dets = [self.detect(f) for f in frames]
        owner = np.concatenate([np.full(len(s), i, np.intp) for i, (_, s) in enumerate(dets)])
        if owner.size == 0:
            return [FrameDetections.empty(n_joints) for _ in range(frames.shape[0])]
        boxes = np.concatenate([b for b, _ in dets]).astype(np.float32)
        scores = np.concatenate([s for _, s in dets]).astype(np.float32)
        matrices = crop_matrices(boxes, self.crop_size, self.crop_scale)
        crops = make_crops(frames, owner, matrices, self.crop_size)
        crop2d, rel3d = self.backbone(crops)
        kp2d = crop_to_image(crop2d[:, self.joint_indices], matrices)
        rel3d = rel3d[:, self.joint_indices]
        ok = np.all(np.isfinite(kp2d), axis=-1) & np.all(np.isfinite(rel3d), axis=-1)
        conf = np.where(ok, scores[:, None], 0.0).astype(np.float32)
        kp3d = reconstruct_absolute(
            kp2d,
            rel3d,
            conf,
            float(intrinsics.fx),
            float(intrinsics.fy),
            float(intrinsics.cx),
            float(intrinsics.cy),
        )
        kp2d[~ok] = np.nan
        kp3d[~ok] = np.nan
        result = []
        for i in range(frames.shape[0]):
            sel = np.flatnonzero(owner == i)
            result.append(
                FrameDetections(
                    boxes=boxes[sel], scores=scores[sel], kp2d=kp2d[sel], kp3d=kp3d[sel], conf=conf[sel]
                )
            )
        return result
