"""BlazePose runtime: TFLite pose detector (TensorFlow's ``tf.lite.Interpreter``) + ONNX Runtime landmark model.

Per call: every frame is letterboxed to 224x224 and run through the detector one frame at a time (its TFLite graph
has a fixed batch of 1); detections are decoded, filtered by score and merged by weighted NMS; each gives a rotated
square ROI from its hip-centre and scale/rotation keypoints; all crops of all frames go through the landmark model
in batches; landmarks are mapped back to image px and the world landmarks put in the camera frame
(``models.blazepose.landmarks``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.blazepose.build import INPUT_NAME, INPUT_SIZE, OUTPUT_WIDTHS
from models.blazepose.detection import (
    AnchorOptions,
    Detections,
    decode_detections,
    ssd_anchors,
    weighted_nms,
)
from models.blazepose.geometry import (
    input_units_to_image,
    letterbox_matrix,
    roi_from_alignment,
    roi_matrix,
    sample_affine,
)
from models.blazepose.landmarks import (
    decode_landmarks,
    decode_world,
    landmark_boxes,
    world_to_camera_mm,
)
from models.modelset import ModelSet, ModelSetError
from models.runtime import FrameDetections, PoseEstimator, ThreadConfig, configure_tensorflow, ort_session

if TYPE_CHECKING:
    from mocapflow.camera import Intrinsics

logger = logging.getLogger(__name__)

DETECTOR_SIZE = 224


@dataclass(frozen=True)
class BlazePoseOptions:
    """Thresholds; defaults follow MediaPipe's pose solution."""

    min_detection_score: float = 0.5  # detector score (MediaPipe's min_detection_confidence)
    nms_iou: float = 0.3  # weighted-NMS overlap of the detector's (face) boxes
    min_presence: float = 0.5  # landmark model's pose-presence score; below it the detection is dropped
    roi_expand: float = 1.25  # ROI side = 2 * |scale point - hip centre| * roi_expand
    max_batch: int = 8  # crops per ONNX Runtime call (larger batches were slower per crop on 2 cores)


def tflite_interpreter(path: Path, threads: ThreadConfig) -> Any:
    """``tf.lite.Interpreter`` with ``threads.threads`` threads.

    TF 2.21 still ships it but warns (UserWarning) that it moves to the ``ai_edge_litert`` package; that one warning
    is silenced here.
    """
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning
        )
        return tf.lite.Interpreter(model_path=str(path), num_threads=threads.threads)


def detector_input(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Letterboxed 224x224 detector input in [-1, 1] (black padding) and its input->image matrix."""
    h, w = frame.shape[:2]
    matrix = letterbox_matrix(w, h, DETECTOR_SIZE)
    x = sample_affine(frame, matrix, DETECTOR_SIZE, border="zero") / 127.5 - 1.0
    return x.astype(np.float32), matrix


def detections_to_image(dets: Detections, matrix: np.ndarray) -> Detections:
    """Detections normalised to the detector input -> image px."""
    boxes = input_units_to_image(matrix, dets.boxes.reshape(-1, 2, 2) * DETECTOR_SIZE).reshape(-1, 4)
    kps = input_units_to_image(matrix, dets.keypoints * DETECTOR_SIZE)
    return Detections(boxes.astype(np.float32), kps.astype(np.float32), dets.scores)


def landmark_input(frame: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The 256x256 crop of ``roi`` in [0, 1] (edge pixels repeated outside the frame)."""
    return (sample_affine(frame, roi_matrix(roi, INPUT_SIZE), INPUT_SIZE, border="replicate") / 255.0).astype(
        np.float32
    )


class BlazePoseEstimator(PoseEstimator):
    """33 BlazePose landmarks per detected person; 3D in camera mm by the approximation in ``landmarks``."""

    def __init__(
        self, model_set: ModelSet, threads: ThreadConfig, options: BlazePoseOptions | None = None
    ) -> None:
        super().__init__(model_set, threads)
        if model_set.manifest.kind != "blazepose":
            raise ModelSetError(
                f"model set {model_set.manifest.name!r} is of kind {model_set.manifest.kind!r}, not blazepose"
            )
        self.options = options or BlazePoseOptions()
        self.tf_threads = configure_tensorflow(threads)
        self.detector = tflite_interpreter(model_set.path("detector"), threads)
        self.detector.allocate_tensors()
        self._det_in = self.detector.get_input_details()[0]["index"]
        outs = {tuple(d["shape"][-1:]): d["index"] for d in self.detector.get_output_details()}
        self._det_boxes, self._det_scores = outs[(12,)], outs[(1,)]
        self.anchors = ssd_anchors(AnchorOptions())
        self.session = ort_session(model_set.path("backbone"), threads)
        names = [o.name for o in self.session.get_outputs()]
        if sorted(names) != sorted(OUTPUT_WIDTHS) or self.session.get_inputs()[0].name != INPUT_NAME:
            raise ModelSetError(
                f"{model_set.path('backbone')}: unexpected ONNX inputs/outputs {names}; rebuild the blazepose set"
            )
        self._outputs = list(OUTPUT_WIDTHS)
        logger.info("blazepose loaded (%s) with %d thread(s)", model_set.id, threads.threads)

    def detect(self, frame: np.ndarray) -> Detections:
        """People in one frame: boxes (face), alignment keypoints [k, 4, 2] and scores, in image px."""
        x, matrix = detector_input(frame)
        self.detector.set_tensor(self._det_in, x[None])
        self.detector.invoke()
        raw_boxes = self.detector.get_tensor(self._det_boxes)[0]
        raw_scores = self.detector.get_tensor(self._det_scores)[0]
        dets = decode_detections(raw_boxes, raw_scores, self.anchors, self.options.min_detection_score)
        return detections_to_image(weighted_nms(dets, self.options.nms_iou), matrix)

    def landmarks(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Landmark model on crops [n, 256, 256, 3] in batches of ``max_batch``."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self._outputs}
        for i in range(0, crops.shape[0], self.options.max_batch):
            res = self.session.run(self._outputs, {INPUT_NAME: crops[i : i + self.options.max_batch]})
            for k, v in zip(self._outputs, res, strict=True):
                parts[k].append(v.reshape(v.shape[0], -1))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 [n, H, W, 3] RGB, got {frames.dtype} {frames.shape}; "
                "convert BGR/grey video frames first"
            )
        n_joints = len(self.joint_names)
        if frames.shape[0] == 0:
            return []
        per_frame = [self.detect(f) for f in frames]
        owner = np.concatenate([np.full(d.n, i) for i, d in enumerate(per_frame)]).astype(int)
        if owner.size == 0:
            return [FrameDetections.empty(n_joints) for _ in frames]
        kps = np.concatenate([d.keypoints for d in per_frame])
        scores = np.concatenate([d.scores for d in per_frame])
        rois = roi_from_alignment(kps[:, 0], kps[:, 1], expand=self.options.roi_expand)
        crops = np.stack([landmark_input(frames[i], roi) for i, roi in zip(owner, rois, strict=True)])
        out = self.landmarks(crops)
        kp2d, conf = decode_landmarks(out["landmarks"], rois, INPUT_SIZE)
        world = decode_world(out["world_landmarks"], rois[:, 3])
        kp3d = world_to_camera_mm(
            world,
            kp2d,
            conf,
            float(intrinsics.fx),
            float(intrinsics.fy),
            float(intrinsics.cx),
            float(intrinsics.cy),
        )
        keep = out["pose_presence"][:, 0] >= self.options.min_presence
        boxes = landmark_boxes(kp2d, conf)
        result = []
        for i in range(frames.shape[0]):
            sel = np.flatnonzero((owner == i) & keep)
            result.append(
                FrameDetections(
                    boxes=boxes[sel],
                    scores=scores[sel].astype(np.float32),
                    kp2d=kp2d[sel],
                    kp3d=kp3d[sel],
                    conf=conf[sel],
                )
            )
        return result
