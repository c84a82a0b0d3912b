"""Runtime of the ``markers`` model set: TensorFlow detector per frame, one ONNX backbone call for all crops."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from models.markers import prepost
from models.modelset import ModelSet, ModelSetError
from models.runtime import (
    FrameDetections,
    PoseEstimator,
    ThreadConfig,
    check_frames,
    configure_tensorflow,
    ort_session,
    session_threads,
)

if TYPE_CHECKING:
    from mocapflow.camera import Intrinsics

logger = logging.getLogger(__name__)

MAX_CROPS_PER_CALL = 64  # bounds the backbone's memory (~30 MB per crop); more crops -> several calls


class MarkersEstimator(PoseEstimator):
    """Detector SavedModel (TensorFlow, k intra / 1 inter threads) + backbone ONNX (ONNX Runtime, k threads)."""

    def __init__(self, model_set: ModelSet, threads: ThreadConfig) -> None:
        super().__init__(model_set, threads)
        manifest = model_set.manifest
        if manifest.kind != "markers":
            raise ModelSetError(f"model set {manifest.name!r} is of kind {manifest.kind!r}, not 'markers'")
        extra = manifest.extra
        self.crop_size = int(manifest.input_resolution[0])
        self.crop_margin = float(extra.get("crop_margin", prepost.CROP_MARGIN))
        self.min_box_score = float(extra.get("min_box_score", 0.1))
        self.tf_threads = configure_tensorflow(threads)
        import tensorflow as tf

        self._tf = tf
        self._detector = tf.saved_model.load(str(model_set.path("detector")))
        try:
            self._detect = self._detector.signatures["serving_default"]
        except KeyError:
            raise ModelSetError(
                f"{model_set.path('detector')}: the SavedModel has no 'serving_default' signature; rebuild the model set"
            ) from None
        self._session = ort_session(model_set.path("backbone"), threads)
        logger.info(
            "markers estimator loaded from %s (%s), threads=%d", model_set.root, model_set.id, threads.threads
        )

    def session_threads(self) -> dict[str, Any]:
        """Thread settings of both runtimes (for the actor's self-report)."""
        return {"onnxruntime": session_threads(self._session), "tensorflow": dict(self.tf_threads)}

    def detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: (boxes [m, 4] px, scores [m]), padding rows dropped."""
        out = []
        for frame in frames:
            res = self._detect(image=self._tf.constant(frame))
            out.append(
                prepost.select_detections(res["boxes"].numpy(), res["scores"].numpy(), self.min_box_score)
            )
        return out

    def backbone(self, crops: prepost.Crops, boxes: np.ndarray, fx: float) -> dict[str, np.ndarray]:
        """Backbone outputs for all crops (one call per MAX_CROPS_PER_CALL crops)."""
        box_crop = prepost.boxes_in_crops(boxes, crops.affine)
        parts: list[list[np.ndarray]] = []
        for i in range(0, len(crops.scale), MAX_CROPS_PER_CALL):
            sl = slice(i, i + MAX_CROPS_PER_CALL)
            parts.append(
                self._session.run(
                    None,
                    {
                        "crops": crops.pixels[sl],
                        "crop_scale": crops.scale[sl].astype(np.float32),
                        "focal_crop_px": (fx * crops.scale[sl]).astype(np.float32),
                        "box_crop": box_crop[sl],
                    },
                )
            )
        names = [o.name for o in self._session.get_outputs()]
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        frames = check_frames(frames, intrinsics)
        n_j = len(self.joint_names)
        dets = self.detect(frames)
        boxes = [b for b, _ in dets]
        n_people = sum(len(b) for b in boxes)
        if n_people == 0:
            return [FrameDetections.empty(n_j) for _ in range(len(frames))]
        crops = prepost.make_crops(frames, boxes, self.crop_size, self.crop_margin)
        all_boxes = np.concatenate(boxes)
        out = self.backbone(crops, all_boxes, intrinsics.fx)
        kp2d, kp3d, conf = prepost.postprocess(
            out["kp2d_crop"], out["depth_mm"], out["conf"], crops.affine, intrinsics
        )
        result = []
        for i, (b, s) in enumerate(dets):
            sel = crops.frame_index == i
            result.append(FrameDetections(boxes=b, scores=s, kp2d=kp2d[sel], kp3d=kp3d[sel], conf=conf[sel]))
        return result
