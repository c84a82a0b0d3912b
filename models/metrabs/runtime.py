"""MeTRAbs runtime: TensorFlow person detector + ONNX Runtime backbone.

Per call: the detector runs on each frame (its signature takes one image); boxes above the score threshold survive
NMS; every box of every frame becomes a square 256x256 crop (``processing.crop_matrices``); all crops go through the
backbone in one batched call (chunks of ``max_batch``); crop px are mapped back to image px, the chosen skeleton's
joints are selected, and each person's 3D pose is placed in the camera frame by least squares against its 2D
prediction and the video's intrinsics (``processing.reconstruct_absolute``).

Test-time augmentation (``test_time_augmentation`` = n, the MeTRAbs authors' ``num_aug``): every detection is cropped
n times with the authors' schedule of rotations, zooms, flips and gammas (``processing.tta_schedule``); each
prediction is mapped back to the plain crop's frame (``processing.unaugment``: inverse crop warp for 2D, inverse
rotation/flip about the camera axis for 3D, left/right labels swapped back) and the n are averaged.

Confidence, per joint, from the model itself: with n >= 2 it is ``processing.spread_to_confidence`` of the joint's 3D
spread across the augmentations (logistic, 0.5 at 200 mm, scale 50 mm: the authors' cohort pipeline's mapping), so
a joint the network places consistently however the crop is turned scores ~0.98 and one it guesses scores low.
With n = 1 there is no spread to measure: every joint gets ``min(detector score, UNMEASURED_CONFIDENCE)`` (0.5, the
value the mapping gives a 200 mm spread), never more; ``output_params()`` says which rule made the numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.joints import mirror_indices
from models.metrabs.processing import (
    SPREAD_HALF_MM,
    SPREAD_SCALE_MM,
    augment_matrices,
    crop_matrices,
    crops_to_input,
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


UNMEASURED_CONFIDENCE = (
    0.5  # cap on every joint's confidence when no augmentation spread was measured (n = 1)
)
CONFIDENCE_VERSION = 1  # bump when the confidence rule changes


@dataclass(frozen=True)
class MetrabsOptions:
    """Detector thresholds, test-time augmentation and batching (MeTRAbs' defaults: threshold 0.3, NMS IoU 0.7;
    the authors' num_aug default is 5, this runtime's 1 unless the ``test_time_augmentation`` setting says more)."""

    detector_threshold: float = 0.3
    nms_iou: float = 0.7
    max_people: int = 16
    max_batch: int = 64  # crops per ONNX Runtime call
    test_time_augmentation: int = 1

    def __post_init__(self) -> None:
        if self.test_time_augmentation < 1:
            raise ValueError(f"test_time_augmentation must be >= 1, got {self.test_time_augmentation}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


def confidence_params(test_time_augmentation: int) -> dict[str, Any]:
    """How the ``metrabs`` runtime makes its confidences with ``test_time_augmentation`` crops per detection (what
    :meth:`MetrabsEstimator.output_params` reports; it changes the output, so it belongs in the output's key)."""
    n = int(test_time_augmentation)
    if n >= 2:
        rule: dict[str, Any] = {
            "rule": "tta_spread",
            "spread": "3d_mm",
            "half_mm": SPREAD_HALF_MM,
            "scale_mm": SPREAD_SCALE_MM,
        }
    else:
        rule = {"rule": "unmeasured", "cap": UNMEASURED_CONFIDENCE, "of": "detector_score"}
    return {"test_time_augmentation": n, "confidence": rule | {"version": CONFIDENCE_VERSION}}


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
        self.schedule = tta_schedule(self.options.test_time_augmentation)
        self._gamma_luts = gamma_tables(self.schedule.gammas)
        self.mirror = mirror_indices(self._backbone_joint_names(model_set))
        logger.info(
            "metrabs loaded (%s, %d joints, %d crop(s) per detection) with %d thread(s)",
            model_set.id,
            len(self.joint_names),
            self.schedule.n,
            threads.threads,
        )

    @staticmethod
    def _backbone_joint_names(model_set: ModelSet) -> list[str]:
        """All the backbone's joint names (metadata.json), for the left/right swap of flipped crops."""
        import json

        try:
            names = json.loads(model_set.path("metadata").read_text())["joint_names"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelSetError(
                f"model set {model_set.manifest.name!r} ({model_set.root}): cannot read the joint names of its "
                f"metadata.json ({e}); re-import it with models.metrabs.import_metrabs"
            ) from e
        return [str(n) for n in names]

    def output_params(self) -> dict[str, Any]:
        return confidence_params(self.options.test_time_augmentation)

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
        a, b = self.session.run(self._outputs, {self._bb["input"]: x})
        return np.asarray(a, np.float32), np.asarray(b, np.float32)

    def _predict(
        self, frames: np.ndarray, owner: np.ndarray, matrices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Backbone outputs for every (detection, augmentation): matrices ``[m, n, 2, 3]`` -> ``[m, n, J_all, 2|3]``.

        Crops are made ``max_batch`` at a time, so memory stays bounded however many people and augmentations."""
        m, n = matrices.shape[:2]
        flat = matrices.reshape(m * n, 2, 3)
        frame_of = np.repeat(owner, n)
        aug_of = np.tile(np.arange(n), m)
        p2, p3 = [], []
        for i in range(0, m * n, self.options.max_batch):
            sl = slice(i, i + self.options.max_batch)
            crops = make_crops(frames, frame_of[sl], flat[sl], self.crop_size)
            if n > 1:
                crops = self._gamma_luts[aug_of[sl, None, None, None], crops]
            a, b = self.backbone(crops)
            p2.append(a)
            p3.append(b)
        j = p2[0].shape[1]
        return np.concatenate(p2).reshape(m, n, j, 2), np.concatenate(p3).reshape(m, n, j, 3)

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
        matrices = augment_matrices(
            crop_matrices(boxes, self.crop_size, self.crop_scale), self.schedule, self.crop_size
        )
        crop2d, rel3d = self._predict(frames, owner, matrices)
        if crop2d.shape[2] != self.mirror.size:
            raise ModelSetError(
                f"model set {self.model_set.manifest.name!r} ({self.model_set.root}): the backbone returned "
                f"{crop2d.shape[2]} joints but its metadata lists {self.mirror.size}; re-import matching artifacts"
            )
        img2d, rel3d = unaugment(crop2d, rel3d, matrices, self.schedule, self.mirror)
        sel = self.joint_indices
        kp2d, rel3d, spread, ok = tta_average(img2d[:, :, sel], rel3d[:, :, sel])
        if self.schedule.n >= 2:
            conf = np.where(ok, spread_to_confidence(spread), 0.0).astype(np.float32)
        else:
            unmeasured = np.minimum(scores, np.float32(UNMEASURED_CONFIDENCE))
            conf = np.where(ok, unmeasured[:, None], 0.0).astype(np.float32)
        kp3d = reconstruct_absolute(
            kp2d,
            rel3d,
            np.where(ok, np.maximum(conf, 1e-3), 0.0),
            float(intrinsics.fx),
            float(intrinsics.fy),
            float(intrinsics.cx),
            float(intrinsics.cy),
        )
        kp2d[~ok] = np.nan
        kp3d[~ok] = np.nan
        result = []
        for i in range(frames.shape[0]):
            mine = np.flatnonzero(owner == i)
            result.append(
                FrameDetections(
                    boxes=boxes[mine],
                    scores=scores[mine],
                    kp2d=kp2d[mine],
                    kp3d=kp3d[mine],
                    conf=conf[mine],
                )
            )
        return result
