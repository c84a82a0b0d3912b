"""BlazePose runtime: TFLite pose detector (TensorFlow's ``tf.lite.Interpreter``) + ONNX Runtime landmark model.

Video (``BlazePoseEstimator.video_session``), MediaPipe's pose_landmark graph extended to several people:

1. **Track.** Each tracked person has a region of interest (ROI) taken from the previous frame's landmarks: the
   square centred on the auxiliary hip-centre point (model point 33), side 2 x its distance to the full-body
   scale/rotation point (34) x 1.25, rotated so that 33 -> 34 points straight up in the crop (the alignment the
   landmark model was trained with). Every ROI is cropped to 256x256 and all of a frame's crops go through the
   landmark model in one call. A person whose pose-presence score drops below ``min_presence`` (MediaPipe's
   ``min_tracking_confidence``, 0.5) is dropped.
2. **Acquire.** The detector runs (a) on the first frame and every ``scan_interval`` frames as a *scan*: the whole
   frame letterboxed to 224 px plus a pyramid of overlapping square tiles (``geometry.detection_regions``) so that
   small people are found; (b) on a frame where a tracked person was just lost, on a square around their last ROI
   (``local_scale`` x its side) to pick them up again at once; (c) on frames where nobody is tracked, on the whole
   frame (as MediaPipe does). Detections are decoded per region, tile detections cut by their tile's border are
   dropped (``detection.inside_region``), all are merged by weighted NMS, and those that match a tracked person
   (IoU of the whole-body boxes > ``track_iou``) are skipped; the rest start new tracks with MediaPipe's detection
   ROI (keypoints 0 -> 1, same 1.25 expansion). With ``max_people`` people tracked, nobody is looked for.
3. **Dedupe.** ROIs that converge on the same person are merged: of two people whose landmark boxes overlap by
   IoU > ``dedupe_iou`` the one with the higher presence score stays; beyond ``max_people``, the largest stay.

Added to MediaPipe's graph (``BlazePoseOptions.mirror_average``, on by default): every crop also goes through the
landmark model flipped left-right, and the flipped-back result, labels swapped, is averaged with the crop's own
(``landmarks.average_with_mirror``). The model alone is not mirror-symmetric. On the metamorphic still-photo clips
(messi, basketball, astronaut, cameraman, court) a mirrored video's fitted joint angles differed from the
original's by a median 6.1 / 4.0 / 1.0 / 12.1 / 11.1 deg, with the average 1.5 / 0.5 / 0.1 / 2.4 / 14.1, and the
still photo's angles jittered less on four (SD 3.7 / 2.1 / 0.5 / 2.9 -> 2.8 / 1.9 / 0.2 / 1.8) but more on court
(2.9 -> 4.2: a small, overlapped player whose facing the model cannot tell). It costs ~27 % of one actor's frames/s
(the landmark model runs twice; the detector once).

Added (``BlazePoseOptions.backtrack_frames``, 10 by default): the video is processed offline, so tracking need not
be causal where it starts. A person the detector finds at frame b is tracked forwards as MediaPipe does; at frame
b + k (k = ``backtrack_frames``), while still tracked, they are tracked again *backwards* from that frame's landmarks
down to frame b, each crop taken from the next frame's landmarks, and on into the frames before b where the landmark
model still sees them (presence >= ``min_presence``), up to b - k. The crop the detector gives fits the landmark
model worse than a tracked one: the first ~5 frames of a track were where a video and the same video played
backwards disagreed most (fitted joint angles 3-5 deg apart there, 1.2 deg in the middle, messi_pan), and vtest's
first frame of a stretch had the hips 0.4 torso lengths from MediaPipe's. Before b, people the detector missed
(small, cut off, or found late by a spaced-out scan) are recovered: cameraman_pan's subject from frame 23 instead
of 33. Backwards tracking stops where the person's presence drops, at a gap in their track, or where the crop lands
on someone else (landmark-box IoU > ``dedupe_iou``). Each frame's results come out 2k frames late
(``VideoSession.finish`` returns the rest), so a session holds 2k + 1 decoded frames.

Not reproduced from MediaPipe: its heatmap refinement of the landmarks (the converted backbone does not output the
heatmap) and its one-euro smoothing of landmarks and ROI points (smoothing belongs to the fit). The score of a person
is the pose-presence score. MediaPipe's filter of the auxiliary points the next ROI comes from (one-euro, minimum
cut-off 0.01 Hz, beta 1, speeds in object sizes per second; always on there) was tried: it cut the landmarks'
frame-to-frame noise (messi_pan's 3D white noise 5.0 -> 1.5 mm, and the crop's period-2 oscillation, a peak at 15 Hz
in the landmarks' spectrum), but a causal filter lags one way played forwards and the other played backwards, and on
the metamorphic clips (``FIT_VERSION`` 13) the time-reversed figure went 1.09 -> 3.97 deg on messi_pan and 1.29 ->
12.0 on cameraman_pan, messi's still SD 1.54 -> 2.48. A mean of the last two frames' points instead: reversed 1.63,
still SD 1.65. Neither is used.

The loop's state is one small dataclass (``TrackingState``). Measured on vtest.avi (768x576 pedestrians filmed from
above, see benchmarks/bench_blazepose_tracking.py): the detector finds people down to ~60-75 px tall in its 224
input, so 256 px tiles find people down to ~60-70 px tall in the frame (the people tracked there were 55-113 px
from head to heel, 10th-95th percentile), the whole-frame pass only those >= ~200 px.

Still images (``__call__``): every frame is scanned on its own, as on a video's first frame.
Landmarks are mapped back to image px and the world landmarks put in the camera frame (``models.blazepose.landmarks``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.blazepose.build import INPUT_NAME, INPUT_SIZE, OUTPUT_WIDTHS
from models.blazepose.detection import (
    AnchorOptions,
    Detections,
    concat,
    decode_detections,
    inside_region,
    iou,
    sigmoid,
    ssd_anchors,
    weighted_nms,
)
from models.blazepose.geometry import (
    detection_regions,
    input_units_to_image,
    letterbox_matrix,
    roi_from_alignment,
    roi_matrix,
    square_matrix,
    warp_affine,
)
from models.blazepose.landmarks import (
    AUX_CENTER,
    AUX_SCALE,
    alignment_boxes,
    average_with_mirror,
    decode_world,
    dedupe_people,
    landmark_boxes,
    landmarks_to_image,
    roi_from_landmarks,
    world_to_camera_mm,
)
from models.blazepose.skeleton import N_JOINTS
from models.modelset import ModelSet, ModelSetError
from models.runtime import (
    FrameDetections,
    PoseEstimator,
    ThreadConfig,
    VideoSession,
    check_frames,
    configure_tensorflow,
    ort_session,
)

if TYPE_CHECKING:
    from mocapflow.camera import Intrinsics

logger = logging.getLogger(__name__)

DETECTOR_SIZE = 224


@dataclass(frozen=True)
class BlazePoseOptions:
    """Thresholds and the tracking policy; the first four are MediaPipe's pose-solution defaults."""

    min_detection_score: float = 0.5  # detector score (MediaPipe's min_detection_confidence)
    nms_iou: float = 0.3  # weighted-NMS overlap of the detector's (face) boxes
    # landmark model's pose presence; below it a person is dropped (MediaPipe's min_tracking_confidence)
    min_presence: float = 0.5
    roi_expand: float = 1.25  # ROI side = 2 * |scale point - hip centre| * roi_expand
    max_batch: int = 8  # crops per ONNX Runtime call (larger batches were slower per crop on 2 cores)
    tile: int | None = 256  # side px of the finest detector tiles of a scan; None = whole frame only
    tile_overlap: float = 0.25  # overlap of neighbouring tiles, fraction of the tile side
    tile_tolerance: float = 0.25  # a tile detection's body box may stick out of its tile by this x its side
    scan_interval: int = 10  # frames between scans while people are tracked (new people are found this late)
    # while people are tracked, each scan that finds nobody new doubles the interval, up to this many frames
    # (None or <= scan_interval: no backoff)
    max_scan_interval: int | None = 30
    track_iou: float = 0.4  # whole-body box IoU above which a detection is a person already tracked
    dedupe_iou: float = 0.6  # landmark-box IoU above which two tracks are one person
    max_people: int | None = None  # track at most this many (the largest ROIs); None = everyone found
    local_scale: float = 2.0  # a lost person is looked for in a square this many times their last ROI's side
    # each crop also runs flipped left-right and the two are averaged (``landmarks.average_with_mirror``)
    mirror_average: bool = True
    # a person the detector finds is tracked again backwards from this many frames later, over their first frames
    # and up to this many frames before (0 = off); results come out 2 x this many frames late (module docstring)
    backtrack_frames: int = 10

    def __post_init__(self) -> None:
        if self.scan_interval < 1:
            raise ValueError(f"scan_interval must be >= 1 frame, got {self.scan_interval}")
        if self.max_people is not None and self.max_people < 1:
            raise ValueError(f"max_people must be >= 1 or None, got {self.max_people}")
        if self.backtrack_frames < 0:
            raise ValueError(f"backtrack_frames must be >= 0, got {self.backtrack_frames}")


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


def detector_input(frame: np.ndarray, matrix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """224x224 detector input in [-1, 1] (black outside the frame) and its input->image matrix.

    Without ``matrix``: the whole frame, letterboxed.
    """
    if matrix is None:
        h, w = frame.shape[:2]
        matrix = letterbox_matrix(w, h, DETECTOR_SIZE)
    x = warp_affine(frame, matrix, DETECTOR_SIZE, border="zero").astype(np.float32)
    x *= 1.0 / 127.5
    x -= 1.0
    return x, matrix


def detections_to_image(dets: Detections, matrix: np.ndarray) -> Detections:
    """Detections normalised to the detector input -> image px."""
    boxes = input_units_to_image(matrix, dets.boxes.reshape(-1, 2, 2) * DETECTOR_SIZE).reshape(-1, 4)
    kps = input_units_to_image(matrix, dets.keypoints * DETECTOR_SIZE)
    return Detections(boxes.astype(np.float32), kps.astype(np.float32), dets.scores)


def landmark_input(frame: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The 256x256 crop of ``roi`` in [0, 1] (edge pixels repeated outside the frame)."""
    x = warp_affine(frame, roi_matrix(roi, INPUT_SIZE), INPUT_SIZE, border="replicate").astype(np.float32)
    x *= 1.0 / 255.0
    return x


@dataclass(frozen=True)
class LandmarkResults:
    """Landmark-model outputs for k ROIs of one frame."""

    rois: np.ndarray  # [k, 4] the crops they came from
    points: np.ndarray  # [k, 39, 2] image px, float64 (33 landmarks + auxiliary points)
    raw: np.ndarray  # [k, 195] raw landmark output (visibility / presence logits at 3 and 4 of each point)
    world: np.ndarray  # [k, 117] raw world landmarks
    presence: np.ndarray  # [k] pose presence

    @property
    def n(self) -> int:
        return int(self.presence.shape[0])

    def take(self, index: np.ndarray) -> LandmarkResults:
        return LandmarkResults(
            self.rois[index], self.points[index], self.raw[index], self.world[index], self.presence[index]
        )

    @staticmethod
    def join(a: LandmarkResults, b: LandmarkResults) -> LandmarkResults:
        return LandmarkResults(
            *(np.concatenate([x, y]) for x, y in zip(a.astuple(), b.astuple(), strict=True))
        )

    def astuple(self) -> tuple[np.ndarray, ...]:
        return (self.rois, self.points, self.raw, self.world, self.presence)

    def alignment_boxes(self) -> np.ndarray:
        return alignment_boxes(self.points[:, AUX_CENTER], self.points[:, AUX_SCALE])

    def confidence(self) -> np.ndarray:
        """[k, 33] per-landmark confidence: visibility x presence."""
        lm = self.raw.reshape(-1, 39, 5)[:, :N_JOINTS].astype(np.float64)
        return sigmoid(lm[..., 3]) * sigmoid(lm[..., 4])

    def landmark_boxes(self) -> np.ndarray:
        """[k, 4] the boxes of the confident landmarks (what tells two people apart)."""
        return landmark_boxes(self.points[:, :N_JOINTS], self.confidence())

    def replace(self, j: int, row: LandmarkResults) -> LandmarkResults:
        """These results with person ``j`` replaced by ``row`` (one person), or ``row`` appended if ``j == n``."""
        head, tail = self.take(np.arange(j)), self.take(np.arange(j + 1, self.n))
        return LandmarkResults.join(LandmarkResults.join(head, row), tail)


def local_regions(rois: np.ndarray, scale: float) -> np.ndarray:
    """Detector regions [k, 3] (x0, y0, side) centred on ROIs [k, 4], ``scale`` times their side."""
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    side = rois[:, 2] * scale
    return np.stack([rois[:, 0] - side / 2 + 0.5, rois[:, 1] - side / 2 + 0.5, side], axis=1)


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
        self._regions: dict[tuple[int, int], np.ndarray] = {}
        logger.info("blazepose loaded (%s) with %d thread(s)", model_set.id, threads.threads)

    # -- stages -----------------------------------------------------------------------------------------------

    def regions(self, width: int, height: int) -> np.ndarray:
        """The scan's detector regions [r, 3] for this frame size (row 0 = whole frame); computed once per size."""
        key = (width, height)
        if key not in self._regions:
            if self.options.tile is None:
                side = max(width, height)
                self._regions[key] = np.array([[(width - side) / 2.0, (height - side) / 2.0, float(side)]])
            else:
                self._regions[key] = detection_regions(
                    width, height, self.options.tile, self.options.tile_overlap
                )
        return self._regions[key]

    def _detect_region(self, frame: np.ndarray, matrix: np.ndarray) -> Detections:
        x, _ = detector_input(frame, matrix)
        self.detector.set_tensor(self._det_in, x[None])
        self.detector.invoke()
        raw_boxes = self.detector.get_tensor(self._det_boxes)[0]
        raw_scores = self.detector.get_tensor(self._det_scores)[0]
        dets = decode_detections(raw_boxes, raw_scores, self.anchors, self.options.min_detection_score)
        return detections_to_image(weighted_nms(dets, self.options.nms_iou), matrix)

    def detect(self, frame: np.ndarray, tiled: bool = False) -> Detections:
        """People in one frame: boxes (face), alignment keypoints [k, 4, 2] and scores, in image px.

        ``tiled``: the whole scan (whole frame + tiles, merged); otherwise the letterboxed whole frame only.
        """
        h, w = frame.shape[:2]
        regions = self.regions(w, h)
        return self.detect_regions(frame, regions if tiled else regions[:1], whole_first=True)

    def detect_regions(self, frame: np.ndarray, regions: np.ndarray, whole_first: bool = False) -> Detections:
        """The detector on square regions [r, 3] of one frame, merged by weighted NMS (image px).

        Detections cut by their region's border are dropped (``inside_region``), except in the whole frame
        (row 0 when ``whole_first``).
        """
        parts = []
        for i, region in enumerate(regions):
            dets = self._detect_region(frame, square_matrix(*region, DETECTOR_SIZE))
            if dets.n and not (whole_first and i == 0):
                dets = dets.take(np.flatnonzero(inside_region(dets, region, self.options.tile_tolerance)))
            parts.append(dets)
        merged = concat(parts)
        return weighted_nms(merged, self.options.nms_iou) if len(parts) > 1 and merged.n > 1 else merged

    def landmarks(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Landmark model on crops [n, 256, 256, 3]; with ``mirror_average``, averaged with the crops' mirror images."""
        if not self.options.mirror_average:
            return self._landmark_model(crops)
        n = crops.shape[0]
        both = self._landmark_model(np.concatenate([crops, crops[:, :, ::-1]]))
        merged, _ = average_with_mirror(
            {k: v[:n] for k, v in both.items()}, {k: v[n:] for k, v in both.items()}
        )
        return merged

    def _landmark_model(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """The ONNX landmark model on crops [n, 256, 256, 3] in batches of ``max_batch``."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self._outputs}
        for i in range(0, crops.shape[0], self.options.max_batch):
            res = self.session.run(self._outputs, {INPUT_NAME: crops[i : i + self.options.max_batch]})
            for k, v in zip(self._outputs, res, strict=True):
                parts[k].append(v.reshape(v.shape[0], -1))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def landmarks_at(self, frame: np.ndarray, rois: np.ndarray) -> LandmarkResults:
        """The landmark model on the ROIs [k, 4] of one frame."""
        rois = np.asarray(rois, np.float64).reshape(-1, 4)
        if rois.shape[0] == 0:
            return LandmarkResults(
                rois,
                np.zeros((0, 39, 2)),
                np.zeros((0, 195), np.float32),
                np.zeros((0, 117), np.float32),
                np.zeros((0,), np.float32),
            )
        crops = np.stack([landmark_input(frame, roi) for roi in rois])
        out = self.landmarks(crops)
        return LandmarkResults(
            rois=rois,
            points=landmarks_to_image(out["landmarks"], rois, INPUT_SIZE),
            raw=out["landmarks"],
            world=out["world_landmarks"],
            presence=out["pose_presence"][:, 0],
        )

    def frame_detections(self, res: LandmarkResults, intrinsics: Intrinsics) -> FrameDetections:
        """Landmark results -> the interface's per-frame arrays (score = pose presence)."""
        if res.n == 0:
            return FrameDetections.empty(N_JOINTS)
        kp2d = res.points[:, :N_JOINTS].astype(np.float32)
        conf = res.confidence().astype(np.float32)
        world = decode_world(res.world, res.rois[:, 3])
        kp3d = world_to_camera_mm(
            world,
            kp2d,
            conf,
            float(intrinsics.fx),
            float(intrinsics.fy),
            float(intrinsics.cx),
            float(intrinsics.cy),
        )
        return FrameDetections(
            boxes=landmark_boxes(kp2d, conf),
            scores=res.presence.astype(np.float32),
            kp2d=kp2d,
            kp3d=kp3d,
            conf=conf,
        )

    # -- interface --------------------------------------------------------------------------------------------

    def video_session(self, intrinsics: Intrinsics) -> BlazePoseSession:
        return BlazePoseSession(self, intrinsics)

    def __call__(self, frames: np.ndarray, intrinsics: Intrinsics) -> list[FrameDetections]:
        """Still images: each frame scanned on its own (no tracking between them)."""
        frames = check_frames(frames, intrinsics)
        out = []
        for f in frames:
            session = BlazePoseSession(self, intrinsics)
            out += session.step(f) + session.finish()
        return out


@dataclass
class TrackingState:
    """What one video's loop carries from a frame to the next."""

    # [k, 4] each tracked person's ROI for the next frame
    rois: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # [k] each one's track number
    found_at: list[int] = field(default_factory=list)  # the frame the detector found each track number in
    frame: int = 0  # frames processed so far
    last_scan: int | None = None  # index of the last frame scanned (whole frame + tiles); None = not yet
    # frames from the last scan to the next (None: the options' scan_interval)
    scan_interval: int | None = None
    scans: int = 0  # counters, for the benchmark's profile
    whole_frame_detections: int = 0
    local_detections: int = 0
    crops: int = 0
    backtracked: int = 0  # frames whose crop of someone was re-taken backwards
    extended: int = 0  # of which frames before the person was found


@dataclass
class _Pending:
    """A processed frame held back until nobody in it can be backtracked any more."""

    index: int
    image: np.ndarray
    res: LandmarkResults
    ids: np.ndarray


class BlazePoseSession(VideoSession):
    """MediaPipe-style tracking of every person in one video (module docstring); state in ``self.state``."""

    def __init__(self, estimator: BlazePoseEstimator, intrinsics: Intrinsics) -> None:
        self.estimator = estimator
        self.intrinsics = intrinsics
        self.options = estimator.options
        self.state = TrackingState()
        self._pending: list[_Pending] = []

    def __call__(self, frames: np.ndarray) -> list[FrameDetections]:
        frames = check_frames(frames, self.intrinsics)
        out: list[FrameDetections] = []
        for f in frames:
            out += self.step(f)
        return out

    def finish(self) -> list[FrameDetections]:
        """The frames still held back, once the video has ended; people found less than ``backtrack_frames`` before
        the end are tracked backwards from the last frame."""
        st = self.state
        if self._pending:
            last = self._pending[-1]
            for j, pid in enumerate(last.ids):
                if last.index - st.found_at[pid] < self.options.backtrack_frames:
                    self._backtrack(int(pid), last.res.points[j])
        out = [self.estimator.frame_detections(p.res, self.intrinsics) for p in self._pending]
        self._pending = []
        return out

    def step(self, frame: np.ndarray) -> list[FrameDetections]:
        """One frame: track, acquire when due, dedupe, and set the next frame's ROIs; backtrack the people found
        ``backtrack_frames`` ago. Returns the frames now final: this one at once without backtracking, else the one
        2 x ``backtrack_frames`` back."""
        est, opts, st = self.estimator, self.options, self.state
        res = est.landmarks_at(frame, st.rois)
        ids = st.ids
        st.crops += res.n
        alive = res.presence >= opts.min_presence
        lost = bool((~alive).any())
        keep = np.flatnonzero(alive)
        res, ids = res.take(keep), ids[keep]
        full = opts.max_people is not None and res.n >= opts.max_people
        interval = st.scan_interval or opts.scan_interval
        due = st.last_scan is None or st.frame - st.last_scan >= interval
        scanned = due and not full
        dets: Detections | None = None
        if scanned:
            dets = est.detect(frame, tiled=True)
            st.last_scan = st.frame
            st.scans += 1
        else:
            parts = []
            if lost and not full:  # look again where the lost people were, at a scale that suits them
                lost_rois = st.rois[~alive]
                parts.append(est.detect_regions(frame, local_regions(lost_rois, opts.local_scale)))
                st.local_detections += lost_rois.shape[0]
            if res.n == 0:
                parts.append(est.detect(frame, tiled=False))
                st.whole_frame_detections += 1
            if parts:
                dets = weighted_nms(concat(parts), opts.nms_iou)
        if dets is not None and dets.n:
            boxes = alignment_boxes(dets.keypoints[:, 0], dets.keypoints[:, 1])
            tracked = res.alignment_boxes()
            new = [
                i
                for i in range(dets.n)
                if tracked.shape[0] == 0 or iou(boxes[i], tracked).max() <= opts.track_iou
            ]
            if new:
                kp = dets.keypoints[new]
                found = est.landmarks_at(
                    frame, roi_from_alignment(kp[:, 0], kp[:, 1], expand=opts.roi_expand)
                )
                st.crops += found.n
                found = found.take(np.flatnonzero(found.presence >= opts.min_presence))
                if scanned and found.n:
                    st.scan_interval = opts.scan_interval  # someone new: look again soon
                    scanned = False
                res = LandmarkResults.join(res, found)
                ids = np.concatenate([ids, len(st.found_at) + np.arange(found.n)])
                st.found_at += [st.frame] * found.n
        if scanned:  # nobody new: while people are tracked, look less often (up to max_scan_interval)
            grown = min(2 * interval, max(opts.max_scan_interval or 0, opts.scan_interval))
            st.scan_interval = grown if res.n else opts.scan_interval
        if res.n > 1:
            keep = dedupe_people(res.landmark_boxes(), res.presence, opts.dedupe_iou)
            res, ids = res.take(keep), ids[keep]
        if opts.max_people is not None and res.n > opts.max_people:
            keep = np.sort(np.argsort(-res.rois[:, 2], kind="stable")[: opts.max_people])
            res, ids = res.take(keep), ids[keep]
        st.rois = roi_from_landmarks(res.points, expand=opts.roi_expand) if res.n else np.zeros((0, 4))
        st.ids = ids
        k = opts.backtrack_frames
        if k == 0:
            st.frame += 1
            return [est.frame_detections(res, self.intrinsics)]
        self._pending.append(_Pending(st.frame, frame, res, ids))
        for j, pid in enumerate(ids):
            if st.frame - st.found_at[pid] == k:
                self._backtrack(int(pid), res.points[j])
        st.frame += 1
        done = [p for p in self._pending if p.index <= st.frame - 1 - 2 * k]
        self._pending = self._pending[len(done) :]
        return [est.frame_detections(p.res, self.intrinsics) for p in done]

    def _backtrack(self, pid: int, points: np.ndarray) -> None:
        """Person ``pid``, found at frame ``born`` (``state.found_at``), tracked backwards through the held-back
        frames from the one before the last (``points`` [39, 2]: their landmarks in the last), each crop taken from
        the next frame's landmarks: their own crops down to ``born``, then into frames where they were not found,
        down to ``born - backtrack_frames``. Stops where the landmark model no longer sees them, at a gap in their
        track, or where the crop lands on someone else."""
        est, opts, st = self.estimator, self.options, self.state
        born = st.found_at[pid]
        for p in reversed(self._pending[:-1]):
            if p.index < born - opts.backtrack_frames:
                break
            rows = np.flatnonzero(p.ids == pid)
            if rows.size == 0 and p.index >= born:
                break  # a gap in the track
            back = est.landmarks_at(p.image, roi_from_landmarks(points[None], expand=opts.roi_expand))
            st.crops += 1
            if back.presence[0] < opts.min_presence:
                break
            j = int(rows[0]) if rows.size else p.res.n
            others = p.res.take(np.flatnonzero(p.ids != pid))
            if others.n and iou(back.landmark_boxes()[0], others.landmark_boxes()).max() > opts.dedupe_iou:
                break
            p.res = p.res.replace(j, back)
            if not rows.size:
                p.ids = np.insert(p.ids, j, pid)
                st.extended += 1
            st.backtracked += 1
            points = back.points[0]
