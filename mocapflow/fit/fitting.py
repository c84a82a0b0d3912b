"""Fit one video's keypoints: options, data preparation (bucket padding), initialisation, optimisation, results.

Choices, and the measurements behind them (``benchmarks/bench_fit.py``, ``mocapflow validate fit``):

- Trajectories are cubic B-splines in time (``knots_per_second``) of unconstrained per-DOF variables, squashed into
  the joint limits. Per-frame values with the same smoothness prior were measured too: as accurate on exact
  keypoints, less accurate on noisy ones, slower (more parameters, more iterations), so B-splines are the default.
- The body is placed directly in the camera frame: the pelvis DOFs are relative to a level camera looking along
  the body model's +X (:data:`~mocapflow.fit.sites.WORLD_TO_CAMERA`). A monocular view has no gravity
  reference, and a fitted camera rotation would be exactly redundant with the pelvis rotations (a 3-dimensional
  gauge per video that only slows the optimiser down). Hip, knee, ankle, shoulder and elbow angles do not depend
  on this choice; pelvis angles and translations are camera-relative.
- Body scales: 8 group scales (prior towards 1) times a per-body refinement (prior towards 0 in log space), so a
  subject whose left and right segments differ is not forced into pelvic obliquity to compensate.
- Knots sized to the motion (``adaptive_knots``): the image keypoints' bandwidth (the frequency below which 99.5 %
  of their movement power lies, counting only frequencies 3x above the white-noise floor measured above 8 Hz:
  :func:`~mocapflow.fit.basis.motion_bandwidth_hz`) times 4, whole knots per second within
  [``min_knots_per_second``, ``knots_per_second``] (2..8): a cubic B-spline passes > 97 % of a sinusoid up to a
  quarter of its knot rate, half at half of it, so the stated cut-off of a fit is ``knots_per_second / 2`` Hz
  (recorded per fit). Measured bandwidths on ``validate fit`` ground truth: walking 2.0-2.25 Hz (-> 8 knots/s),
  sit-to-stand 1.5-2.25, squat 1.0-1.25 (-> 4-5), arm raise 1.0-1.25, clean and noisy alike; a still photo's
  pan/zoom -> 2. The basis keeps the column count of the most knots (inert zero columns), so the number of knots
  never changes a compiled shape. Accuracy on the slow motions was the same or up to 0.06 deg better than at 8.
- Per-keypoint offsets (prior towards 0) with any rotation of their body projected out (see
  :func:`~mocapflow.fit.sites.offset_projection`): offsets cannot mimic joint angles.
- The smoothness weight scales with the keypoint noise measured before the fit (:func:`estimate_noise_mm`):
  ``smooth`` 10000 per cm^2. 2500 was measured too: on noisy walking videos (50 mm 3D, 4 px 2D noise; seeds 1-3)
  40000 / 10000 / 2500 gave 5.24 / 4.35 / 3.79, 4.82 / 3.63 / 3.38 and 3.43 / 2.79 / 2.72 deg, and over
  ``validate fit --seeds 5`` the worst video went 5.2 -> 4.41 deg (videos > 3 deg: 6 -> 4), but the median rose
  1.84 -> 2.04 deg (target 2.0), so the default stays.
- Optimisation order: the pelvis orientation starts from a robust rigid fit to its own keypoints, refined on their
  2D positions, and is held for the first 10 % of the steps; offsets are held for the first 20 %
  (``mocapflow.fit.optimise``).
- Monocular keypoints have gross errors (a hidden marker's depth off by a metre). 3D observations pull with
  ``conf ** 4`` (a low confidence means a depth guess, not a 2D one); at 10, 25 and 45 % of the steps every
  observation is reweighted by its residual (:mod:`mocapflow.fit.robust`) and, at the first, the 2D weight is set
  against 3D (:func:`balanced_w2d`; by the residual spreads until ``FIT_VERSION`` 13, by the keypoints' white noise
  since: the next bullets). On the demo cohort (markers set, real pose output)
  this took the median joint-angle error from 9-23 deg to 2.0-2.8 deg; on the validation set's Gaussian noise
  from 3.10 to 2.4 deg, clean unchanged (0.98).
- The 2D weight is balanced once, at the first reweighting (``FIT_VERSION`` 11). Balanced again at every
  reweighting, it measured the fit's own residuals under the weight it had set: a heavier 2D weight fits the 2D
  keypoints closer, their spread shrinks, the weight grows. On humanoid renders the 2D spread went 2.6 -> 1.3 ->
  1.0 ref px (the floor) over the three reweightings while BlazePose's 2D is 3.4 px from the truth there, and the
  weight 1.5 -> 5.9 -> 12.4; on basketball_pan 2.0 -> 24. Once: humanoid renders seeds 0-4 (median per seed)
  5.84 / 6.18 / 5.61 / 5.38 / 6.18 -> 5.57 / 6.13 / 5.21 / 5.24 / 5.87 deg, worst video per seed 7.11 / 7.75 / 7.85 /
  6.33 / 7.07 -> 6.80 / 7.57 / 7.74 / 5.92 / 6.86; metamorphic (still SD / mirror / half / reverse) messi_pan
  2.73 / 1.10 / 1.83 / 1.51 -> 2.70 / 1.05 / 1.58 / 1.53, cameraman_pan 1.91 / 2.39 / 1.94 / 2.27 -> 1.90 / 2.20 /
  1.59 / 2.07, basketball_pan 1.85 / 0.47 / 0.68 / 0.92 -> 1.77 / 0.40 / 0.66 / 0.70, court_pan 4.90 / 13.86 / 3.53 /
  2.27 -> 4.38 / 14.35 / 3.14 / 2.04, astronaut_pan unchanged; ``validate fit`` seeds 0-4 median 1.918 -> 1.906,
  worst video 3.161 -> 3.154. A fixed 2D weight (``balance_noise`` off, 0.3) did better on the humanoid (seeds 0-4:
  5.76 / 6.06 / 5.31 / 4.93 / 5.72) and the metamorphic clips, worse on ``validate fit`` (median 1.992).
- The 2D weight is balanced by the keypoints' white noise (``FIT_VERSION`` 13): ``w3d * (3D noise cm / 2D noise ref
  px) ** 2``, both measured before the fit from second differences over time (:func:`second_difference_noise`; floored
  at 1 mm and 0.1 ref px). The residual spreads it was balanced by before mix in a pose model's steady errors, which
  the per-keypoint offsets and the pose prior answer: on BlazePose keypoints they gave 2D 0.3-2.9 times the 3D weight
  (messi_pan 1.37, court_pan 1.68, cameraman_pan 0.30, humanoid renders 1.2-2.9) where the white noise gives 0.04-0.75
  (messi 0.22, cameraman 0.04, court 0.42, humanoid 0.38-0.75), while the markers set keeps a heavy 2D weight (demo
  3-5; 18-29 by the spreads). Same keypoints, spreads -> noise: humanoid renders seeds 0-7 median 5.25 / 5.72 / 5.27 /
  5.01 / 5.48 / 6.45 / 5.78 / 5.83 -> 5.08 / 5.64 / 5.24 / 4.68 / 5.54 / 6.34 / 5.51 / 5.61 deg, worst video 6.85 /
  7.41 / 6.98 / 5.58 / 6.52 / 7.13 / 7.89 / 8.48 -> 6.67 / 7.34 / 6.78 / 4.91 / 6.22 / 6.56 / 7.77 / 7.99; metamorphic
  (still SD / mirror / half / reverse) messi 2.40 / 0.89 / 1.53 / 1.27 -> 1.50 / 0.54 / 1.15 / 0.93, cameraman 1.82 /
  1.91 / 1.64 / 1.76 -> 2.28 / 1.83 / 1.58 / 1.82, basketball 1.42 / 0.39 / 0.66 / 0.77 -> 0.93 / 0.31 / 0.48 / 0.54,
  court 4.36 / 14.67 / 3.19 / 1.91 -> 2.60 / 12.26 / 1.88 / 1.29, astronaut unchanged; ``validate fit`` seeds 0-4
  median 1.906 -> 1.904, worst video 3.154 -> 3.036; the demo (walking / sit-to-stand / squat, this module's fit of
  its keypoints) 2.03 / 2.14 / 2.03 -> 1.83 / 2.48 / 1.89. Measured and not chosen: a fixed 0.3 (``balance_noise``
  off): humanoid like this, metamorphic like this but cameraman's still SD 1.82, ``validate fit`` 1.992 / 3.148, the
  demo 2.08 / 3.13 / 2.63 (the markers' precise 2D underweighted); the spread rule divided by the systematic factor
  squared (the white part of the 3D spread against the whole 2D spread): cameraman 2.26 / 2.21 / 1.87 / 2.02.
- The 3D depth factor follows the keypoints' own white noise per camera axis (``FIT_VERSION`` 14;
  :func:`depth_weight_for_noise`): (x/y noise over depth noise)^2 within [0.3, 1]. Until 13 it was 0.3 for every
  video, which threw away most of the depth where it is as precise as x and y: on ``validate fit``'s noise (the same
  50 mm on every axis) the worst video, seed 1's noisy walking, was 3.04 deg with 2D and 3D noise together against
  1.68 / 1.50 with either alone (``benchmarks/synthetic_bound.py``). Measured 13 -> 14: ``validate fit`` seeds 0-4
  median 1.904 -> 1.488, worst video 3.036 -> 2.703 (seeds 5-9, not used to choose the rule: 1.451 / 2.570); BlazePose
  on real footage (x/y over depth)^2 is 0.10-0.33 on messi_pan and basketball_pan (0.3: the same fits), 0.37-0.81 on
  cameraman_pan, 0.31-0.95 on court_pan, 0.71-0.96 on astronaut_pan; ``validate metamorphic`` (still SD / mirror /
  half / reverse / re-encode) cameraman 2.58 / 1.47 / 1.11 / 1.29 / 1.20 -> 2.27 / 1.45 / 1.13 / 1.38 / 1.00 (its
  well-observed DOFs' still SD 1.70 -> 1.93), court 2.63 / 10.68 / 1.65 / 1.56 / 1.80 -> 2.50 / 9.93 / 1.73 / 1.51 /
  1.79, the others unchanged; humanoid renders seeds 0-3 (16 videos, 0.30-0.44) median of the videos 5.05 -> 5.04,
  worst 7.44 -> 7.29; the markers set (demo) 0.3, unchanged. Why not the ratio alone: below 0.3 (messi 0.10-0.21) the
  factor differed between a clip's re-encodes and messi's half-resolution figure went 1.15 -> 2.47; a monocular
  model's depth error is mostly not white (BlazePose's 3D against the humanoid's truth: (x/y error over depth error)^2
  of 0.01-0.57 per video, median 0.21), so its white noise cannot lower the factor. Fixed factors trade real footage
  against the rest: 0.45 gave messi's still SD 2.11 (target 2) and the humanoid's worst video 6.53; 0.6, messi 3.11.
- Only observed spans are fitted (:mod:`mocapflow.fit.spans`): frames in gaps longer than ``max_gap_s`` get NaN, each
  span its own B-spline, packed so that long gaps cost no computation.
- Steps: at most ``max_iters`` (1500), stopping once a block of steps lowers the loss by less than ``rtol``
  (relative). On ``validate fit`` (5 seeds) 4000 and 2000 steps were no more accurate than 1500 (the clean error is
  set by the priors, not by convergence: one 2 s clip went 1.69 -> 2.14 deg from 2000 to 3400 steps); 1200 and 800
  lost 0.1 and 0.4 deg clean. Noisy fits stop by convergence at 1200-1400 steps; clean ones mostly reach the cap with
  a relative change of ~1.1-1.6e-4, and are recorded as not converged. A real 5 s, 30 fps clip (150 frames of
  blazepose keypoints, 1500 steps, one core, load 10-13): 8.0 CPU s for a second fit in the process (7 of them in
  the optimiser; 12.7 before the kinematics was compiled once per frame bucket for every use), 31 CPU s for a first
  fit with an empty compilation cache (``mocapflow bench --sections fit``, ``benchmarks/bench_fit.py``). An L-BFGS polish after Adam (optax, zoom line search) was tried: 200 steps moved
  the clean error by 0.03 deg, so it is not used.
- The initial heading is unwrapped against the running median of the frames before it
  (:func:`~mocapflow.fit.init.unwrap_robust`; ``FIT_VERSION`` 7): with ``np.unwrap`` one mirror-branch frame of a
  subject facing the camera (heading at +-180 deg) left the rest of the initial track a full turn away and the fit
  spun the body round. ``validate fit`` worst video per seed 0-6: 2.91 / 4.72 / 3.60 / 3.20 / 2.68 / 3.62 / 2.73 ->
  2.91 / 3.00 / 2.83 / 3.20 / 2.69 / 2.80 / 2.73 deg (per-seed medians 1.72 / 2.20 / 2.11 / 2.03 / 1.63 / 2.21 / 1.95 ->
  1.72 / 1.99 / 1.99 / 1.96 / 1.55 / 2.06 / 1.95); court_pan's mirrored video no longer spins (its own median SD
  7.35 -> 3.0 deg) but its mirror figure went 8.78 -> 11.28 (that clip's base and mirror take opposite facing
  conventions, see :mod:`mocapflow.fit.swap`); the other clips and the humanoid renders are unchanged.
- A limb segment whose observed 3D length is off by more than half starts from the depth its length allows
  (:func:`~mocapflow.fit.init.depth_where_too_long`; ``FIT_VERSION`` 8): a partly hidden elbow marker 39 cm too deep
  had started the demo's left elbow at 117 deg and the fit ended 40 deg off the truth (20) for the whole
  sit-to-stand, 57 on the squat. Demo medians 2.87 / 2.68 / 2.38 -> 2.05 / 2.11 / 2.23 deg; ``validate fit`` seeds
  0-4 median 1.960 -> 1.961, worst 3.201 -> 3.198; metamorphic messi, basketball, cameraman unchanged, astronaut
  still 0.72 -> 0.53 and half 0.92 -> 0.33, court within 0.2; humanoid 5.80 -> 5.79. The humanoid's own far-arm
  elbow error (sit-to-stand, 33 deg) is not this: BlazePose's 3D puts that wrist 24 cm too near with confidence
  0.88 and a consistent length, and its 3D elbow angle is 36 deg for a true 11.
- 3D keypoints that disagree with the rest of their rigid body lose their 3D in that frame
  (:func:`~mocapflow.fit.preprocess.rigid_outliers`; ``FIT_VERSION`` 9): in the demo's squat, partly hidden pelvis
  markers 16-35 cm off in depth with confidence 1 tilted the pelvis +30 deg and put the hips 40-60 deg off for half a
  second (max error over those frames 37 / 56 deg -> 4 / 17). Demo medians 2.05 / 2.11 / 2.23 -> 1.81 / 1.87 /
  1.97 deg (sit-to-stand, squat, walking); ``validate fit`` seeds 0-4, the metamorphic clips and the humanoid
  renders unchanged (no body of theirs has a keypoint that far off: BlazePose's only body with three or more
  landmarks is the head).
- 2D residuals in reference px (:data:`~mocapflow.fit.loss.F_REF_PX`; ``FIT_VERSION`` 10): the video's px x 615 /
  its focal length. The 2D Huber delta, the first 2D weight and the robust floor were in the video's px, so the same
  keypoints at half resolution were fitted differently: a median 4.9 deg per DOF on messi_pan, 3.6 on
  cameraman_pan, 0.34 on a noisy synthetic walk; now 0.03 / 0.00 / < 0.05. Metamorphic half resolution (with the
  pose stage's own differences): messi / basketball / astronaut / cameraman / court 4.00 / 3.61 / 0.07 / 4.37 / 4.80
  -> 1.68 / 0.65 / 0.07 / 1.77 / 3.50; the other relations unchanged. ``validate fit`` seeds 0-4 median 1.961 ->
  1.918, worst video 3.198 -> 3.161; demo 1.81 / 1.87 / 1.97 -> 1.93 / 1.86 / 2.05; humanoid 5.79 / 7.08 -> 5.83 /
  7.09.
- Measured and not kept (humanoid renders through blazepose, seed 0, median / worst video 5.79 / 7.28 deg with the
  defaults; cached keypoints, so only the fit differs): leaning on 2D and the bone lengths instead of the model's
  depth is worse: ``depth_weight`` 0.1 -> 6.34 / 7.34, 0 -> 6.36 / 7.55, 0.6 -> 5.85 / 6.79; the balanced 2D weight
  x4 -> 6.40 / 7.41. Fitted from the true angles, the arm-raise video still settles 35-39 deg off in shoulder flexion:
  the loss prefers the wrong pose (blazepose's landmarks), not a local minimum. A stronger pose prior helps the
  humanoid (``prior`` 1.0 -> 5.49 / 7.16; 0.1 -> 6.63 / 7.59) but biases exact keypoints, so ``prior_spread_power``
  1 scales it by the 3D spread that white noise does not explain (:func:`systematic_spread_cm`: synthetic figures
  unchanged but seed 2 clean 1.70 -> 1.72); humanoid seed 0 / 1: 5.52 / 7.23, 5.99 / 7.40 (from 6.52 / 8.48);
  metamorphic still / mirror / half / reverse: messi 3.87 / 6.23 / 3.56 / 2.40 -> 3.58 / 4.80 / 2.77 / 2.25,
  basketball 1.70 / 4.06 / 3.38 / 1.18 -> 1.57 / 3.11 / 2.14 / 1.15, but held out astronaut 0.52 / 2.39 / 0.23 / 0.36
  -> 0.28 / 1.16 / 0.48 / 0.56, cameraman 3.64 / 12.47 / 3.84 / 3.12 -> 4.12 / 11.30 / 3.75 / 3.02, court 2.58 /
  11.28 / 4.18 / 2.04 -> 2.68 / 10.30 / 4.67 / 2.18: not better everywhere held out, so it is off by default.
  Measured again with the 2D weight balanced once (``FIT_VERSION`` 11), the same keypoints as 11's figures, 0 -> 1:
  humanoid renders seeds 0-4 median 5.57 / 6.13 / 5.21 / 5.24 / 5.87 -> 5.17 / 5.81 / 5.17 / 4.88 / 5.67 deg (worst
  video 6.80 / 7.57 / 7.74 / 5.92 / 6.86 -> 7.13 / 7.81 / 7.18 / 5.12 / 7.35); metamorphic still / mirror / half /
  reverse messi 2.70 / 1.05 / 1.58 / 1.53 -> 2.13 / 0.88 / 1.57 / 1.27, cameraman 1.90 / 2.20 / 1.59 / 2.07 -> 1.66 /
  1.57 / 1.58 / 1.66, basketball 1.77 / 0.40 / 0.66 / 0.70 -> 1.30 / 0.47 / 0.68 / 0.66, court 4.38 / 14.35 / 3.14 /
  2.04 -> 4.29 / 14.56 / 3.16 / 1.83, astronaut 0.16 / 0.06 / 0.07 / 0.07 -> 0.14 / 0.29 / 0.23 / 0.24 (worse: the
  prior's weight follows each fit's own spread, so two fits of one body are pulled differently); ``validate fit``
  seeds 0-4 unchanged (per-seed medians 1.72 / 1.95 / 1.99 / 1.91 / 1.55, worst video 3.154: their spread is white
  noise, so the prior keeps its weight); the demo (markers set) 2.02 / 1.93 / 1.86 -> 2.04 / 2.01 / 2.19 deg (walking
  / sit-to-stand / squat: the prior pulls the deep squat towards standing). Medians better on every humanoid seed,
  worst videos and the demo worse: still off then. What made the worst videos worse was the legs' sagittal DOFs
  (knee 4-7 deg further off in squats and sit-to-stands, where standing is no centre); astronaut's was the weight
  moving at every reweighting. On by default since ``FIT_VERSION`` 12: strengthened once, at the first reweighting (as
  the 2D weight), on every DOF but hip flexion, knee and ankle angle, which keep ``prior``
  (:data:`~mocapflow.fit.loss.PRIOR_FIXED_PREFIXES`). Same keypoints, off -> on: humanoid renders seeds 0-4 median 5.57
  / 6.13 / 5.21 / 5.24 / 5.87 -> 5.25 / 5.72 / 5.27 / 5.01 / 5.48, worst video 6.80 / 7.57 / 7.74 / 5.92 / 6.86 -> 6.85
  / 7.41 / 6.98 / 5.58 / 6.52; held out (seeds 5-7, rendered once the alternatives had been measured on 0-4) median 6.79
  / 6.28 / 5.88 -> 6.45 / 5.78 / 5.83, worst 7.83 / 8.21 / 8.37 -> 7.13 / 7.89 / 8.48; metamorphic messi 2.70 / 1.05 /
  1.58 / 1.53 -> 2.40 / 0.89 / 1.53 / 1.27, cameraman 1.90 / 2.20 / 1.59 / 2.07 -> 1.82 / 1.91 / 1.64 / 1.76, basketball
  1.77 / 0.40 / 0.66 / 0.70 -> 1.42 / 0.39 / 0.66 / 0.77, court 4.38 / 14.35 / 3.14 / 2.04 -> 4.36 / 14.67 / 3.19 /
  1.91, astronaut unchanged; ``validate fit`` seeds 0-4 unchanged (1.906 / 3.154); the demo 2.02 / 1.93 / 1.86 -> 2.03 /
  2.14 / 2.03 (arm rotation: the markers set's outliers raise its prior weight 2-4x). Exempting arm rotation as well was
  better on the humanoid (seeds 0-4 median 5.14 / 5.81 / 5.16 / 5.07 / 5.64) and the demo (2.04 / 2.04 / 1.92) but worse
  on real footage (messi still SD 2.96, cameraman half 1.88). A
  smoothness weight scaled by (4 / knots per second) ** 2 or ** 4 (less smoothing of fast motion) was mixed on the
  noisy synthetic videos (seed 2 worse).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from mocapflow.fit.basis import knots_for_bandwidth, motion_bandwidth_hz
from mocapflow.fit.init import initial_pose
from mocapflow.fit.loss import (
    DEPTH_WEIGHT_3D,
    F_REF_PX,
    PRIOR_WEIGHT,
    Evaluation,
    FitData,
    LossWeights,
    evaluate,
)
from mocapflow.fit.optimise import OptimiseInfo, optimise
from mocapflow.fit.params import FitParams, FrameTrajectory, Limits, init_bspline, q_to_x
from mocapflow.fit.preprocess import preprocess_keypoints
from mocapflow.fit.robust import RobustOptions, RobustStats, reweight
from mocapflow.fit.sites import KeypointMap, map_keypoints, offset_projection
from mocapflow.fit.spans import (
    PackedLayout,
    dof_support,
    observed_frames,
    pack_spans,
    span_basis,
    span_ids,
    weak_dofs,
)
from mocapflow.keypoints import KeypointsMeta, read_arrays
from models.body import BodyModel, default_body_model

logger = logging.getLogger(__name__)

# 5: swaps undone before the fit (one branch) and knots sized to the motion (another); 6: both; 7: the initial pelvis
# heading unwrapped against a running median (mocapflow.fit.init.unwrap_robust), so one flipped frame no longer
# leaves the start a full turn away; 8: a limb segment whose observed 3D length is off by more than half gets its
# initial depth from the segment's length (mocapflow.fit.init.depth_where_too_long); 9: 3D keypoints off their
# rigid body dropped before the fit (mocapflow.fit.preprocess.rigid_outliers); 10: 2D residuals in reference px
# (mocapflow.fit.loss.F_REF_PX), the same at any resolution; 11: the 2D weight balanced against 3D once, at the first
# reweighting, not at each (the later spreads measured the fit's own residuals under the weight they set); 12: the
# pose prior strengthened by the systematic 3D spread (prior_spread_power 1), once, except on the legs' sagittal DOFs;
# 13: the 2D weight balanced by the keypoints' white noise measured before the fit, not by the residual spreads;
# 14: the 3D depth factor from the keypoints' white noise per axis (depth_weight_for_noise), at least DEPTH_WEIGHT_3D
FIT_VERSION = 14
Method = Literal["bspline", "frames"]
# half-width of the running median that flipped initial pelvis frames are checked against (mocapflow.fit.init)
INIT_OUTLIER_WINDOW_S = 0.25
SMOOTH_DEFAULT: dict[str, float] = {"bspline": 10000.0, "frames": 10000.0}
# a frame needs at least this many usable keypoints to count as observed (4 image points fix a rigid pose: PnP)
MIN_OBSERVED_KEYPOINTS = 4
# the frame a fit's root DOFs are in when the world frame is off or cannot be estimated
LEVEL_CAMERA: dict[str, Any] = {
    "frame": "level camera: origin at the camera, X along the optical axis, Y up in the image (camera-relative)"
}


@functools.cache
def fit_body_model() -> BodyModel:
    """The default body model, built once per process so that compiled fits are reused across videos."""
    return default_body_model()


@dataclass(frozen=True)
class FitOptions:
    """How to fit.

    ``smooth`` weighs the mean squared second difference of the joint values (rad^2) per cm^2 of keypoint noise:
    the weight used is ``smooth * max(noise, noise_floor_mm)^2`` with the noise measured from the keypoints
    (:func:`estimate_noise_mm`), so exact keypoints are barely smoothed and noisy ones as much as they need.
    """

    method: Method = "bspline"
    knots_per_second: float = 8.0
    max_iters: int = 1500
    learning_rate: float = 3e-2
    block_size: int = 200
    rtol: float = 1e-4
    w3d: float = 1.0
    w2d: float = 0.3  # until the first reweighting balances it against 3D (balanced_w2d), or throughout
    scale: float = 0.1
    body: float = 0.1
    offset: float = 0.05
    smooth: float | None = None  # None: the method's default (SMOOTH_DEFAULT)
    # pose prior weight (mocapflow.fit.loss.PRIOR_WEIGHT) and the 3D residual's camera-depth factor: None sets it
    # from the keypoints' own noise per axis (depth_weight_for_noise), a number fixes it
    prior: float = PRIOR_WEIGHT
    depth_weight: float | None = None
    # at the first reweighting the prior's weight becomes prior * systematic_spread_cm ** prior_spread_power on every
    # DOF but the legs' sagittal ones (mocapflow.fit.loss.PRIOR_FIXED_PREFIXES), and is kept (0: off; measured in
    # this module's docstring)
    prior_spread_power: float = 1.0
    noise_floor_mm: float = 1.0
    # outliers are reweighted at these fractions of max_iters; robust_cutoff: the residual / spread ratio at
    # which an observation's weight is 1/4 (mocapflow.fit.robust); balance_noise: at the first reweighting, weigh
    # 2D against 3D by their white noise measured before the fit (balanced_w2d), and keep that weight
    robust_at: tuple[float, ...] = (0.1, 0.25, 0.45)
    robust_cutoff: float = 2.5
    balance_noise: bool = True
    # observed frames and bridged gaps (mocapflow.fit.spans): a frame is observed when at least this fraction of
    # the mapped keypoints (and MIN_OBSERVED_KEYPOINTS) is usable; gaps up to max_gap_s are bridged, longer not fitted
    observed_fraction: float = 0.3
    max_gap_s: float = 0.25
    # keypoints made consistent over time before the fit (mocapflow.fit.preprocess): left/right swaps undone, a
    # zero-phase low-pass at lowpass_hz (-6 dB point; None or 0: none, the trajectory's own cut-off is knots/2)
    undo_swaps: bool = True
    lowpass_hz: float | None = None
    # root DOFs in an anatomical world frame (floor y = 0, Y against gravity; mocapflow.fit.world), else in the
    # level-camera frame the fit works in
    world_frame: bool = True
    # knots sized to the motion (mocapflow.fit.basis.motion_bandwidth_hz): 4 x the keypoints' bandwidth, whole
    # knots within [min_knots_per_second, knots_per_second]; off: always knots_per_second
    adaptive_knots: bool = True
    min_knots_per_second: float = 2.0

    def __post_init__(self) -> None:
        if self.method not in ("bspline", "frames"):
            raise ValueError(f"fit method {self.method!r} is unknown; use 'bspline' or 'frames'")
        if self.max_iters < 1 or self.block_size < 1 or self.learning_rate <= 0 or self.knots_per_second <= 0:
            raise ValueError(
                f"invalid fit options {self}: iterations, block size, rate and knots must be > 0"
            )
        if not all(0.0 < f < 1.0 for f in self.robust_at) or self.robust_cutoff <= 0:
            raise ValueError(
                f"invalid fit options {self}: robust_at fractions must lie in (0, 1) and robust_cutoff be > 0"
            )
        if not 0.0 <= self.observed_fraction <= 1.0 or self.max_gap_s < 0:
            raise ValueError(
                f"invalid fit options {self}: observed_fraction must lie in [0, 1] and max_gap_s be >= 0"
            )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> FitOptions:
        """Options from :class:`mocapflow.settings.Settings` (``fit_*`` fields); ``overrides`` that are not None win."""
        base: dict[str, Any] = {
            "max_iters": settings.fit_max_iters,
            "learning_rate": settings.fit_learning_rate,
            "knots_per_second": settings.fit_knots_per_second,
            "rtol": settings.fit_rtol,
            "max_gap_s": settings.fit_max_gap_s,
            "observed_fraction": settings.fit_observed_fraction,
            "world_frame": settings.fit_world_frame,
            "lowpass_hz": settings.fit_lowpass_hz,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def max_gap_frames(self, fps: float) -> int:
        """The longest run of unobserved frames a fit bridges at ``fps``."""
        return int(np.floor(self.max_gap_s * fps + 1e-6))

    @property
    def smooth_per_cm2(self) -> float:
        return SMOOTH_DEFAULT[self.method] if self.smooth is None else self.smooth

    def smooth_weight(self, noise_mm: float) -> float:
        """The smoothness weight for keypoints with ``noise_mm`` of noise."""
        return self.smooth_per_cm2 * (max(noise_mm, self.noise_floor_mm) / 10.0) ** 2

    def weights(self, noise_mm: float, depth_weight: float = DEPTH_WEIGHT_3D) -> LossWeights:
        """The loss weights for keypoints with ``noise_mm`` of noise; ``depth_weight`` when the options leave it to
        the keypoints (``self.depth_weight`` None)."""
        return LossWeights.make(
            self.w3d,
            self.w2d,
            self.scale,
            self.body,
            self.offset,
            self.smooth_weight(noise_mm),
            self.prior,
            depth_weight if self.depth_weight is None else self.depth_weight,
        )

    def to_params(self) -> dict[str, Any]:
        """What goes into the fit's content hash (with the inputs' ids)."""
        d = asdict(self)
        d["smooth"] = self.smooth_per_cm2
        d["robust_at"] = list(self.robust_at)
        d["fit_version"] = FIT_VERSION
        return d


@dataclass(frozen=True)
class PreparedVideo:
    """A video's keypoints on a dense frame grid, and the packed layout of its spans that the optimiser sees."""

    data: FitData  # packed: spans one after another (mocapflow.fit.spans), padded to the bucket
    kmap: KeypointMap
    frames: NDArray[np.int64]  # [N] dense frame numbers (first..last frame of the table)
    time_s: NDArray[np.float64]  # [N]
    observed: NDArray[np.bool_]  # [N] enough usable keypoints (mocapflow.fit.spans.observed_frames)
    span: NDArray[np.int32]  # [N] span of each frame, -1 where no span covers it (not fitted)
    layout: PackedLayout
    q_init: NDArray[np.float64]  # [N, D] dense
    noise_mm: float  # measured keypoint noise (NaN if it could not be measured)
    knots_per_second: float = float("nan")  # of the B-spline trajectories (NaN for per-frame ones)
    # what preprocess_keypoints changed (its summary)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # the 2D keypoints' own noise, reference px per coordinate (NaN if it could not be measured)
    noise_2d_ref_px: float = float("nan")
    # [N, D] support of each DOF by the keypoints it moves (mocapflow.fit.spans.dof_support); None: not computed
    dof_support: NDArray[np.float32] | None = None
    # the 3D keypoints' white noise per camera axis (x, y, depth; mm; NaN where it could not be measured)
    noise_axes_mm: tuple[float, float, float] = (float("nan"),) * 3

    @property
    def n_bucket(self) -> int:
        return self.layout.n_bucket


@dataclass(frozen=True)
class FitResult:
    """A finished fit. Arrays cover the dense frame range of the keypoints table; frames that no span covers
    (:mod:`mocapflow.fit.spans`) have NaN joint values and residuals."""

    model: BodyModel
    meta: KeypointsMeta
    options: FitOptions
    frames: NDArray[np.int64]  # [N]
    time_s: NDArray[np.float64]  # [N]
    observed: NDArray[np.bool_]  # [N] enough usable keypoints
    span: NDArray[np.int32]  # [N] span number, -1 where not fitted (a gap longer than max_gap_s)
    q: NDArray[np.float64]  # [N, D] radians / metres; NaN where span == -1
    group_scale: NDArray[np.float64]  # [G]
    body_scale: NDArray[np.float64]  # [B] group scale x per-body refinement
    offset_m: NDArray[np.float64]  # [J, 3] per mapped keypoint, body frame
    keypoint_names: tuple[str, ...]  # [J] mapped keypoints
    residual_2d_px: NDArray[np.float64]  # [N] mean over valid keypoints (NaN if none)
    residual_3d_mm: NDArray[np.float64]  # [N] mean root-relative error over valid keypoints (NaN if none)
    n_valid: NDArray[np.int64]  # [N] usable keypoints per frame
    info: OptimiseInfo
    loss_terms: dict[str, float]
    seconds: float
    noise_mm: float  # keypoint noise measured before the fit
    smooth_weight: float  # the smoothness weight it led to
    # the 2D weight it ended with (FitOptions.w2d, or balanced at the first reweighting)
    w2d: float = float("nan")
    # the 2D keypoints' noise measured before the fit (reference px per coordinate; balanced_w2d)
    noise_2d_ref_px: float = float("nan")
    # the 3D keypoints' white noise per camera axis (x, y, depth; mm) and the depth factor it led to (FitOptions)
    noise_axes_mm: tuple[float, float, float] = (float("nan"),) * 3
    depth_weight: float = float("nan")
    # the pose prior's weight it ended with (FitOptions.prior x the systematic 3D spread ** prior_spread_power; the
    # legs' sagittal DOFs keep FitOptions.prior)
    prior_weight: float = float("nan")
    robust: tuple[RobustStats, ...] = ()  # what each outlier reweighting found
    # where the root DOFs of ``q`` are expressed: the estimated camera pose in the world frame (mocapflow.fit.world)
    # or {"frame": "level camera", ...} when the world frame is off or could not be estimated
    camera_pose: dict[str, Any] = field(default_factory=lambda: dict(LEVEL_CAMERA))
    # knots per second of the trajectories (sized to the motion: FitOptions.adaptive_knots); they keep motion up to
    # half this rate (mocapflow.fit.loss.trajectory_cutoff_hz). NaN for per-frame trajectories.
    knots_per_second: float = float("nan")
    # what preprocessing changed: swapped frames per group, 3D keypoints dropped as rigid-body outliers, low-pass
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # [N, D] support of each DOF by the keypoints it moves (mocapflow.fit.spans.dof_support; 0 where none), None
    # for results made without it
    dof_support: NDArray[np.float32] | None = None

    @property
    def weak_dofs(self) -> dict[str, float]:
        """The weakly observed DOFs and their median support (:func:`mocapflow.fit.spans.weak_dofs`)."""
        if self.dof_support is None:
            return {}
        return weak_dofs(self.dof_support, self.observed, self.model.dof_names)

    def angle(self, dof: str) -> NDArray[np.float64]:
        """One DOF over time (radians or metres)."""
        return self.q[:, self.model.dof_index(dof)]

    @property
    def fitted(self) -> NDArray[np.bool_]:
        """[N] frames inside a span: observed, or in a gap short enough to bridge."""
        return self.span >= 0

    @property
    def interpolated(self) -> NDArray[np.bool_]:
        """[N] bridged frames: inside a span but not observed (their values come from the neighbouring frames)."""
        return self.fitted & ~self.observed

    @property
    def observed_fraction(self) -> float:
        """Observed frames over the frames of the keypoints table's range."""
        return float(np.mean(self.observed)) if self.observed.size else 0.0

    @property
    def n_spans(self) -> int:
        return int(self.span.max()) + 1 if self.span.size else 0


def estimate_noise_mm(
    kp3d: NDArray[np.floating], kp2d: NDArray[np.floating], conf: NDArray[np.floating]
) -> float:
    """Keypoint noise (mm, per coordinate) from second differences over time of root-relative 3D keypoints.

    Real motion changes little between frames at video rates, white noise does not: the robust spread (MAD) of
    the second differences over consecutive usable frames, divided by sqrt(6), estimates the noise. Without 3D
    keypoints the 2D ones are used, 1 px counting as 1 mm. NaN when nothing can be measured.
    """
    for kp in (kp3d, kp2d):
        noise = second_difference_noise(kp, conf)
        if np.isfinite(noise):
            return noise
    return float("nan")


def second_difference_noise(kp: NDArray[np.floating], conf: NDArray[np.floating]) -> float:
    """White noise per coordinate (the keypoints' unit) of centred keypoints [N, J, C]: the robust spread of their
    second differences over consecutive usable frames / sqrt(6). NaN when fewer than 10 can be measured."""
    ok = (conf > 0) & np.isfinite(kp).all(-1)
    n_ok = ok.sum(axis=1)
    if (n_ok > 0).sum() < 3:
        return float("nan")
    x = np.where(ok[..., None], kp, 0.0)
    centre = x.sum(axis=1, keepdims=True) / np.maximum(n_ok, 1)[:, None, None]
    c = np.where(ok[..., None], x - centre, np.nan)
    d2 = (c[2:] - 2.0 * c[1:-1] + c[:-2]).reshape(-1)
    d2 = d2[np.isfinite(d2)]
    if d2.size < 10:
        return float("nan")
    return 1.4826 * float(np.median(np.abs(d2))) / np.sqrt(6.0)


def axis_noise_mm(kp3d: NDArray[np.floating], conf: NDArray[np.floating]) -> tuple[float, float, float]:
    """The 3D keypoints' white noise per camera axis (x, y, depth; their unit) by :func:`second_difference_noise`."""
    kp = np.asarray(kp3d, np.float64)
    x, y, z = (second_difference_noise(kp[..., i : i + 1], conf) for i in range(3))
    return x, y, z


def depth_weight_for_noise(
    noise_axes_mm: tuple[float, float, float], floor_mm: float = 1.0, lowest: float = DEPTH_WEIGHT_3D
) -> float:
    """The 3D residual's camera-depth factor for 3D keypoints with ``noise_axes_mm`` of white noise per camera axis
    (:func:`axis_noise_mm`): (the x/y noise over the depth noise)^2, each floored at ``floor_mm``, within [``lowest``,
    1]; ``lowest`` when a noise could not be measured.

    The depth pulls as much per unit of its noise as x and y do per unit of theirs, as far as the white noise shows
    it; ``lowest`` (:data:`~mocapflow.fit.loss.DEPTH_WEIGHT_3D`) is what a monocular model's depth gets whatever its
    white noise, because its error is mostly not white: BlazePose's 3D on the humanoid renders was off by a median
    (x/y error over depth error)^2 of 0.21 against the truth, while its white noise says 0.1-0.95 on real footage.
    The factor is measured per video, so it differs a little between encodings of one video (``validate metamorphic``
    in ARCHITECTURE); a fixed ``FitOptions.depth_weight`` overrides it.
    """
    if not all(np.isfinite(n) for n in noise_axes_mm):
        return float(lowest)
    x, y, z = (max(float(n), floor_mm) for n in noise_axes_mm)
    return float(np.clip((0.5 * (x + y) / z) ** 2, lowest, 1.0))


def init_smoothing_frames(noise_mm: float, fps: float, floor_mm: float) -> float:
    """Gaussian sigma (frames) for the initial pelvis track: none for exact keypoints, up to 0.15 s at 5 cm."""
    if not np.isfinite(noise_mm) or noise_mm <= floor_mm:
        return 0.0
    return fps * 0.03 * min(noise_mm / 10.0, 5.0)


def _dense(values: NDArray[Any], rows: NDArray[np.int64], n: int, fill: float) -> NDArray[Any]:
    out = np.full((n, *values.shape[1:]), fill, dtype=values.dtype)
    out[rows] = values
    return out


def prepare(
    meta: KeypointsMeta, arrays: dict[str, NDArray[Any]], model: BodyModel, options: FitOptions
) -> PreparedVideo:
    """Dense frame grid, keypoint->site map, observed frames and spans, initial pose, packed fit data."""
    frame = arrays["frame"].astype(np.int64)
    if frame.size == 0:
        raise ValueError(f"keypoints table of {meta.label} has no rows; rerun the pose stage")
    kmap = map_keypoints(meta.joint_names, model)
    cols = np.asarray(kmap.keypoint_index)
    rows = frame - frame[0]
    n = int(rows[-1]) + 1
    kp2d = _dense(arrays["kp2d_px"][:, cols].astype(np.float32), rows, n, np.nan)
    kp3d = _dense(arrays["kp3d_mm"][:, cols].astype(np.float32), rows, n, np.nan)
    conf = _dense(arrays["conf"][:, cols].astype(np.float32), rows, n, 0.0)
    conf = np.where(np.isfinite(conf), conf, 0.0).astype(np.float32)
    frames = np.arange(frame[0], frame[-1] + 1)
    time_s = np.interp(frames, frame, arrays["time_s"])
    observed = observed_frames(kp2d, conf, options.observed_fraction, MIN_OBSERVED_KEYPOINTS)
    if not observed.any():
        raise ValueError(
            f"keypoints table of {meta.label} has no observed frame (none with at least "
            f"{options.observed_fraction:.0%} of its {len(cols)} mapped keypoints usable); nothing to fit"
        )
    span = span_ids(observed, options.max_gap_frames(meta.fps))
    layout = pack_spans(span)
    noise_mm = estimate_noise_mm(kp3d, kp2d, conf)
    noise_2d_ref_px = second_difference_noise(kp2d, conf) * F_REF_PX / meta.intrinsics.fx
    noise_axes = axis_noise_mm(kp3d, conf)
    # after the noise is measured (it sets the fit's smoothness weight), keypoints made consistent over time
    kp2d, kp3d, conf, pre_report = preprocess_keypoints(
        kp2d,
        kp3d,
        conf,
        kmap.site_index,
        model,
        meta.fps,
        swaps=options.undo_swaps,
        cutoff_hz=options.lowpass_hz,
        noise_mm=noise_mm,
    )
    intr = meta.intrinsics
    site_index = np.asarray(kmap.site_index)
    support = dof_support(model, kmap.site_index, kp2d, conf)
    q_init = initial_pose(
        model,
        site_index,
        kp2d,
        kp3d,
        conf,
        (intr.fx, intr.fy, intr.cx, intr.cy),
        smooth_frames=init_smoothing_frames(noise_mm, meta.fps, options.noise_floor_mm),
        outlier_window_frames=int(round(INIT_OUTLIER_WINDOW_S * meta.fps)),
    )
    if options.method == "bspline":
        kps = options.knots_per_second
        if options.adaptive_knots:
            kps = knots_for_bandwidth(
                motion_bandwidth_hz(kp2d, conf, meta.fps),
                min(options.min_knots_per_second, options.knots_per_second),
                options.knots_per_second,
            )
        basis = span_basis(layout, meta.fps, kps)
        # as many columns as the most knots would need (inert zero columns): one compiled shape per bucket
        width = span_basis(layout, meta.fps, options.knots_per_second).shape[1]
        if basis.shape[1] < width:
            basis = np.pad(basis, ((0, 0), (0, width - basis.shape[1])))
    else:
        kps = float("nan")
        basis = np.zeros((layout.n_bucket, 1), np.float32)
    nb, n_kp = layout.n_bucket, conf.shape[1]
    data = FitData(
        kp2d=jnp.asarray(layout.pack(kp2d, np.nan)),
        kp3d=jnp.asarray(layout.pack(kp3d, np.nan)),
        conf=jnp.asarray(layout.pack(conf, 0.0)),
        robust2d=jnp.ones((nb, n_kp), jnp.float32),
        robust3d=jnp.ones((nb, n_kp), jnp.float32),
        frame_mask=jnp.asarray(layout.mask),
        basis=jnp.asarray(basis),
        site_index=tuple(int(i) for i in kmap.site_index),
        intrinsics=jnp.asarray([intr.fx, intr.fy, intr.cx, intr.cy], jnp.float32),
        offset_projection=jnp.asarray(offset_projection(model, kmap.site_index), jnp.float32),
        limits=Limits.of(model),
        weights=options.weights(
            noise_mm if np.isfinite(noise_mm) else options.noise_floor_mm,
            depth_weight_for_noise(noise_axes, options.noise_floor_mm),
        ),
    )
    return PreparedVideo(
        data,
        kmap,
        frames,
        time_s,
        observed,
        span,
        layout,
        q_init,
        noise_mm,
        kps,
        pre_report.summary(),
        noise_2d_ref_px,
        support,
        noise_axes,
    )


# floor of the 2D white noise balanced_w2d weighs by: a tenth of a reference px (the 3D one: FitOptions.noise_floor_mm)
NOISE_FLOOR_2D_REF_PX = 0.1


def balanced_w2d(w3d: float, noise_3d_mm: float, noise_2d_ref_px: float, floor_3d_mm: float = 1.0) -> float:
    """The 2D weight that gives 2D and 3D residuals equal pull per unit of their white noise, measured before the
    fit from second differences over time (:func:`second_difference_noise`; 3D in mm, 2D in reference px).

    Both terms are squared residuals (cm and px) below their Huber deltas, so weights proportional to the inverse
    squared noise make the loss a likelihood in which precise 2D keypoints (a fraction of a pixel) outweigh
    centimetre-noisy monocular depths, and noisy 2D ones do not. The noise is floored
    (``floor_3d_mm``, :data:`NOISE_FLOOR_2D_REF_PX`: exact keypoints get ``w3d``); NaN noise (nothing to
    measure it on) gives NaN, and the fit keeps its weight. A pose model's steady errors do not enter: the per-keypoint
    offsets and the pose prior answer those (:func:`systematic_spread_cm`).
    """
    n3 = max(noise_3d_mm, floor_3d_mm) / 10.0
    n2 = max(noise_2d_ref_px, NOISE_FLOOR_2D_REF_PX)
    return w3d * (n3 / n2) ** 2


# median norm of a 3D residual over the per-coordinate noise for Gaussian noise (chi with 3 degrees of freedom)
CHI3_MEDIAN = 1.538


def systematic_spread_cm(stats: RobustStats, noise_mm: float) -> float:
    """The 3D residual spread (cm, floored at 1) as far as the keypoints' white noise does not explain it.

    ``min(spread, spread / expected)``, ``expected`` the median residual norm that the measured per-coordinate noise
    alone would give: exact keypoints keep 1 (their spread is the floor), white noise of any size ~1 (its residuals
    are what the noise predicts), a pose model's systematic 3D errors (steady over frames, so the measured noise is
    small) their spread in cm.
    """
    expected_cm = CHI3_MEDIAN * (noise_mm if np.isfinite(noise_mm) else 0.0) / 10.0
    s = float(stats.spread_3d_cm)
    return max(1.0, min(s, s / expected_cm) if expected_cm > 0 else s)


def root_rotation_mask(model: BodyModel) -> NDArray[np.float64]:
    """1 for the hinge DOFs of the root body (the pelvis orientation), 0 elsewhere."""
    mask = np.zeros(model.n_dofs)
    for b in model.bodies:
        if b.parent < 0:
            mask[[d for d in b.dofs if model.dofs[d].kind == "hinge"]] = 1.0
    return mask


def initial_params(prep: PreparedVideo, model: BodyModel, options: FitOptions) -> FitParams:
    """Trajectory through the initial pose (observed frames weigh 1, bridged ones 1e-3), unit scales, zero offsets."""
    x = prep.layout.pack(q_to_x(prep.q_init, model), 0.0)
    if options.method == "bspline":
        w = prep.layout.pack(np.where(prep.observed, 1.0, 1e-3), 0.0)
        trajectory = init_bspline(x, np.asarray(prep.data.basis), w)
    else:
        trajectory = FrameTrajectory(jnp.asarray(x))
    return FitParams(
        trajectory=trajectory,
        log_scale=jnp.zeros(len(model.scale_groups), jnp.float32),
        log_body=jnp.zeros(len(model.bodies), jnp.float32),
        offset=jnp.zeros((len(prep.kmap), 3), jnp.float32),
    )


def _residuals(
    ev: Evaluation, prep: PreparedVideo
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per dense frame: mean 2D residual (px), mean root-relative 3D residual (mm), usable 2D keypoints.

    The residuals are the loss's own (:func:`~mocapflow.fit.loss.evaluate`): every usable observation counts,
    outliers too; only the 3D centring is weighted as in the fit, so an outlier does not shift its frame.
    NaN where a frame has no usable keypoint or no span covers it.
    """
    n = len(prep.frames)
    r2, w2, r3, w3 = (
        np.asarray(a, np.float64) for a in (ev.residual_2d_px, ev.weight_2d, ev.residual_3d_cm, ev.weight_3d)
    )
    v2, v3 = w2 > 0, w3 > 0
    with np.errstate(invalid="ignore"):
        mean2 = np.where(v2, r2, 0.0).sum(1) / np.where(v2.any(1), v2.sum(1), np.nan)
        mean3 = 10.0 * np.where(v3, r3, 0.0).sum(1) / np.where(v3.any(1), v3.sum(1), np.nan)
    count = prep.layout.unpack(v2.sum(1).astype(np.int64), n, fill=0).astype(np.int64)
    return prep.layout.unpack(mean2, n), prep.layout.unpack(mean3, n), count


def fit_arrays(
    meta: KeypointsMeta,
    arrays: dict[str, NDArray[Any]],
    options: FitOptions | None = None,
    model: BodyModel | None = None,
) -> FitResult:
    """Fit the body model to one video's keypoints (arrays as returned by :func:`mocapflow.keypoints.read_arrays`)."""
    t0 = time.perf_counter()
    options = options or FitOptions()
    model = model or fit_body_model()
    prep = prepare(meta, arrays, model, options)
    params = initial_params(prep, model, options)
    robust_options = RobustOptions(cutoff=options.robust_cutoff)
    robust_stats: list[RobustStats] = []
    # known before the fit (the keypoints' noise); set at the first reweighting, the step the weights are settled at
    w2d = balanced_w2d(options.w3d, prep.noise_mm, prep.noise_2d_ref_px, options.noise_floor_mm)

    def reweight_outliers(p: FitParams, d: FitData) -> FitData:
        d, stats = reweight(p, d, model, robust_options)
        robust_stats.append(stats)
        if options.balance_noise and len(robust_stats) == 1 and np.isfinite(w2d):
            d = eqx.tree_at(lambda x: x.weights.w2d, d, jnp.asarray(w2d, jnp.float32))
        if options.prior_spread_power and len(robust_stats) == 1:
            d = eqx.tree_at(
                lambda x: x.weights.prior,
                d,
                jnp.asarray(
                    options.prior * systematic_spread_cm(stats, prep.noise_mm) ** options.prior_spread_power,
                    jnp.float32,
                ),
            )
        logger.debug("%s: reweighted outliers %s", meta.label, stats)
        return d

    params, data, info = optimise(
        params,
        prep.data,
        model,
        max_iters=options.max_iters,
        learning_rate=options.learning_rate,
        block_size=options.block_size,
        rtol=options.rtol,
        root_mask=root_rotation_mask(model),
        reweight_at=[round(f * options.max_iters) for f in options.robust_at],
        reweight=reweight_outliers,
    )
    prep = replace(prep, data=data)
    ev = evaluate(params, prep.data, model)
    terms = ev.terms
    n = len(prep.frames)
    q_np = prep.layout.unpack(np.asarray(ev.q, np.float64), n)
    r2, r3, n_valid = _residuals(ev, prep)
    result = FitResult(
        model=model,
        meta=meta,
        options=options,
        frames=prep.frames,
        time_s=prep.time_s,
        observed=prep.observed,
        span=prep.span,
        q=q_np,
        group_scale=np.asarray(ev.group_scale, np.float64),
        body_scale=np.asarray(ev.body_scale, np.float64),
        offset_m=np.asarray(ev.offset, np.float64),
        keypoint_names=prep.kmap.names,
        residual_2d_px=r2,
        residual_3d_mm=r3,
        n_valid=n_valid,
        info=info,
        loss_terms={k: float(v) for k, v in terms.items()},
        seconds=time.perf_counter() - t0,
        noise_mm=prep.noise_mm,
        smooth_weight=float(prep.data.weights.smooth),
        w2d=float(prep.data.weights.w2d),
        noise_2d_ref_px=prep.noise_2d_ref_px,
        noise_axes_mm=prep.noise_axes_mm,
        depth_weight=float(prep.data.weights.depth3d),
        prior_weight=float(prep.data.weights.prior),
        robust=tuple(robust_stats),
        knots_per_second=prep.knots_per_second,
        preprocessing=prep.preprocessing,
        dof_support=prep.dof_support,
    )
    if options.world_frame:
        result = in_world_frame(result, sites=prep.layout.unpack(np.asarray(ev.sites, np.float64), n))
    logger.info(
        "fitted %s: %d frames (bucket %d), %g knots/s, %d iterations in %.1f s, median residual %.1f px / "
        "%.1f mm",
        meta.label,
        n,
        prep.n_bucket,
        prep.knots_per_second,
        info.iterations,
        result.seconds,
        float(np.nanmedian(r2)) if np.isfinite(r2).any() else float("nan"),
        float(np.nanmedian(r3)) if np.isfinite(r3).any() else float("nan"),
    )
    return result


def in_world_frame(result: FitResult, sites: NDArray[np.float64] | None = None) -> FitResult:
    """``result`` with its root DOFs moved into the anatomical world frame (:func:`mocapflow.fit.world.to_world_frame`:
    floor at y = 0, Y against gravity, X the walking/facing direction), estimated from the fitted frames; joint angles
    are unchanged. Where no floor can be estimated the result stays in the level-camera frame and says why.
    ``sites`` [N, S, 3]: the fitted pose's sites in the fit's frame if already computed (the fit's evaluation)."""
    from mocapflow.fit.world import apply_root, to_world_frame

    rows = np.flatnonzero(np.isfinite(result.q).all(axis=1))
    if rows.size == 0:
        return replace(result, camera_pose={**LEVEL_CAMERA, "why": "no fitted frame"})
    try:
        root, pose = to_world_frame(
            q=result.q[rows],
            model=result.model,
            body_scale=result.body_scale,
            observed=np.asarray(result.observed, bool)[rows],
            fps=result.meta.fps,
            sites=None if sites is None else sites[rows],
        )
    except ValueError as e:
        logger.warning("%s: kept the camera frame (%s)", result.meta.label, e)
        return replace(result, camera_pose={**LEVEL_CAMERA, "why": str(e)})
    q = result.q.copy()
    q[rows] = apply_root(result.q[rows], result.model, root)
    return replace(result, q=q, camera_pose=pose)


def fit_table(
    table: pa.Table, options: FitOptions | None = None, model: BodyModel | None = None
) -> FitResult:
    """Validate a keypoints table and fit it."""
    meta, arrays = read_arrays(table)
    return fit_arrays(meta, arrays, options, model)
