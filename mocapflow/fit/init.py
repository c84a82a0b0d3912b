"""Initial guess for a fit: the pelvis pose per frame from the keypoints, every other joint near zero.

A rigid (Kabsch) fit of zero-pose sites to each frame's 3D keypoints gives the pelvis orientation (the pelvis's own
keypoints if at least 3 are visible, else the trunk's, else all), so the optimiser never starts facing the wrong
way. Monocular 3D keypoints carry gross depth errors, so the rigid fit is robust: keypoints are weighted by a steep
power of their confidence and reweighted by their rigid-fit residuals (:func:`robust_kabsch`); with noisy keypoints
the track is median-filtered, then smoothed over time. Without 3D keypoints the subject starts upright, facing
the camera or away depending on where its right side appears. The absolute position comes from the 2D keypoints
and the recorded intrinsics (the 3D loss is root-relative, so absolute 3D depths are not trusted).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import convolve1d

from mocapflow.fit.kinematics import posed_sites, zero_pose_sites
from mocapflow.fit.loss import CONF_POWER_3D
from mocapflow.fit.robust import geman_mcclure_weights
from mocapflow.fit.sites import WORLD_TO_CAMERA
from models.body import BodyModel

logger = logging.getLogger(__name__)

_PELVIS_DOFS = ("pelvis_tx", "pelvis_ty", "pelvis_tz", "pelvis_tilt", "pelvis_list", "pelvis_rotation")
_TRUNK_BODIES = ("pelvis", "torso")
_BENT_DOFS = ("knee_angle_r", "knee_angle_l", "elbow_flex_r", "elbow_flex_l")
OUTLIER_ROTATION_DEG = 30.0  # a rigid-fit rotation this far from the running median of its track is refitted


def euler_zxy(rot: NDArray[np.floating]) -> NDArray[np.float64]:
    """Angles (a, b, c) with ``rot = Rz(a) @ Rx(b) @ Ry(c)`` (pelvis tilt, list, rotation), ``rot`` [..., 3, 3]."""
    r = np.asarray(rot, np.float64)
    b = np.arcsin(np.clip(r[..., 2, 1], -1.0, 1.0))
    a = np.arctan2(-r[..., 0, 1], r[..., 1, 1])
    c = np.arctan2(-r[..., 2, 0], r[..., 2, 2])
    return np.stack([a, b, c], axis=-1)


def euler_rotation(angles: NDArray[np.floating]) -> NDArray[np.float64]:
    """Inverse of :func:`euler_zxy`: ``Rz(a) @ Rx(b) @ Ry(c)`` for angles [..., 3] -> [..., 3, 3]."""
    ang = np.asarray(angles, np.float64)
    c, s = np.cos(ang), np.sin(ang)
    zero, one = np.zeros(ang.shape[:-1]), np.ones(ang.shape[:-1])

    def mat(rows: list[list[NDArray[np.float64]]]) -> NDArray[np.float64]:
        return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)

    rz = mat([[c[..., 0], -s[..., 0], zero], [s[..., 0], c[..., 0], zero], [zero, zero, one]])
    rx = mat([[one, zero, zero], [zero, c[..., 1], -s[..., 1]], [zero, s[..., 1], c[..., 1]]])
    ry = mat([[c[..., 2], zero, s[..., 2]], [zero, one, zero], [-s[..., 2], zero, c[..., 2]]])
    return rz @ rx @ ry


def _angle_deg(r1: NDArray[np.floating], r2: NDArray[np.floating]) -> float:
    """The angle (degrees) of the rotation between two rotation matrices."""
    return float(_angles_deg(r1, r2))


def _angles_deg(r1: NDArray[np.floating], r2: NDArray[np.floating]) -> NDArray[np.float64]:
    """:func:`_angle_deg` of stacks of rotation matrices [N, 3, 3] -> [N]."""
    tr = np.trace(np.swapaxes(r1, -1, -2) @ r2, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def _wrap(angles: NDArray[np.floating]) -> NDArray[np.float64]:
    return (np.asarray(angles, np.float64) + np.pi) % (2.0 * np.pi) - np.pi


def weighted_kabsch(
    src: NDArray[np.floating], dst: NDArray[np.floating], w: NDArray[np.floating]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Rotation R and translation t minimising ``sum_i w_i |R @ src_i + t - dst_i|^2`` (n >= 3, weights >= 0)."""
    s, d = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    wn = np.asarray(w, np.float64) / max(float(np.sum(w)), 1e-12)
    sc, dc = wn @ s, wn @ d
    u, _, vt = np.linalg.svd((s - sc).T @ (wn[:, None] * (d - dc)))
    sign = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    r = vt.T @ np.diag([1.0, 1.0, sign]) @ u.T
    return r, dc - r @ sc


def _weighted_median(values: NDArray[np.floating], w: NDArray[np.floating]) -> float:
    order = np.argsort(values)
    cum = np.cumsum(w[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def robust_kabsch(
    src: NDArray[np.floating],
    dst: NDArray[np.floating],
    w: NDArray[np.floating],
    *,
    rounds: int = 3,
    floor_m: float = 0.02,
    cutoff: float = 2.5,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`weighted_kabsch`, reweighted ``rounds`` times by Geman-McClure weights of its residuals.

    The residual spread is the weighted median residual, floored at ``floor_m``: exact points keep their weights, a
    point far outside the spread (a depth off by decimetres) stops pulling. It starts from the weighted least
    squares fit, so it removes a minority of outliers that the weights ``w`` (confidences) already hold down, not
    a majority: a least-median start from point triples was tried and lost accuracy on Gaussian noise.
    """
    s, d = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w0 = np.asarray(w, np.float64)
    r, t = weighted_kabsch(s, d, w0)
    for _ in range(rounds):
        res = np.linalg.norm(s @ r.T + t - d, axis=1)
        spread = max(_weighted_median(res, w0), floor_m)
        r, t = weighted_kabsch(s, d, w0 * geman_mcclure_weights(res, spread, cutoff))
    return r, t


def refine_rotation_2d(
    sites: NDArray[np.floating],
    uv: NDArray[np.floating],
    r_world: NDArray[np.floating],
    t_world: NDArray[np.floating],
    intrinsics: tuple[float, float, float, float],
    max_change_deg: float = 45.0,
) -> NDArray[np.float64]:
    """The rigid rotation refined on the 2D keypoints (iterative PnP started from the 3D estimate).

    2D keypoints are far more precise than monocular depths, but a rigid body seen by one camera has a mirror
    (depth-flipped) pose with nearly the same projection; starting from the 3D estimate keeps the branch the 3D
    keypoints chose. A refinement that moves the rotation by more than ``max_change_deg`` is rejected.
    """
    import cv2

    fx, fy, cx, cy = intrinsics
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    r_cam = WORLD_TO_CAMERA @ np.asarray(r_world, np.float64)
    rvec, _ = cv2.Rodrigues(r_cam)
    tvec = (WORLD_TO_CAMERA @ np.asarray(t_world, np.float64)).reshape(3, 1)
    ok, rvec, tvec = cv2.solvePnP(
        np.ascontiguousarray(sites, np.float64),
        np.ascontiguousarray(uv, np.float64),
        k,
        None,
        rvec,
        tvec,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok or tvec[2, 0] <= 0:
        return np.asarray(r_world, np.float64)
    r_new = WORLD_TO_CAMERA.T @ cv2.Rodrigues(rvec)[0]
    return r_new if _angle_deg(r_new, r_world) <= max_change_deg else np.asarray(r_world, np.float64)


def _median_filter(values: NDArray[np.float64], ok: NDArray[np.bool_], radius: int) -> NDArray[np.float64]:
    """Running median over the ``ok`` rows (``2 * radius + 1`` of them at most, fewer at the ends); others unchanged.

    Vectorised over rows: each window sorted (padding past the ends sorts last as NaN), its median read at the
    middle of its real values, as ``np.median`` computes it; a window holding a NaN value gives NaN.
    """
    if radius < 1 or ok.sum() < 3:
        return values
    rows = np.flatnonzero(ok)
    v = values[rows]
    m, w = len(rows), 2 * radius + 1
    pad = np.full((radius, *v.shape[1:]), np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(
        np.concatenate([pad, v, pad]), w, axis=0
    )  # [M, ..., w]
    ordered = np.sort(windows, axis=-1)
    k = np.arange(m)
    n = (np.minimum(k + radius, m - 1) - np.maximum(k - radius, 0) + 1).reshape((m,) + (1,) * (v.ndim - 1))
    n = np.broadcast_to(n, v.shape)[..., None]
    lo = np.take_along_axis(ordered, (n - 1) // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, n // 2, axis=-1)[..., 0]
    med = (lo + hi) / 2.0
    nan = np.lib.stride_tricks.sliding_window_view(
        np.concatenate([np.zeros(pad.shape, bool), np.isnan(v), np.zeros(pad.shape, bool)]), w, axis=0
    ).any(axis=-1)
    out = values.copy()
    out[rows] = np.where(nan, np.nan, med)
    return out


def _gaussian_smooth(values: NDArray[np.float64], ok: NDArray[np.bool_], sigma: float) -> NDArray[np.float64]:
    """Gaussian smoothing over frames of the rows where ``ok`` (normalised convolution; others unchanged)."""
    if sigma <= 0.3 or ok.sum() < 2:
        return values
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    # zero outside the video, and one output per frame even where the kernel is longer than the video
    norm = convolve1d(ok.astype(float), kernel, mode="constant", cval=0.0)
    num = convolve1d(np.where(ok[:, None], values, 0.0), kernel, axis=0, mode="constant", cval=0.0)
    out = values.copy()
    out[ok] = num[ok] / norm[ok, None]
    return out


# frames whose running median a rotation is unwrapped against (unwrap_robust)
UNWRAP_WINDOW = 5


def unwrap_robust(angles: NDArray[np.floating], window: int = UNWRAP_WINDOW) -> NDArray[np.float64]:
    """Angles (rad) made continuous over time like ``np.unwrap``, but each one against the median of the ``window``
    unwrapped values before it rather than against its predecessor alone.

    A frame whose rigid fit took the mirror branch is ~180 deg off; ``np.unwrap`` carries it into the next frame's
    branch choice, so a flip out and back that happens to go the same way round twice leaves the rest of the track
    a full turn away (a 360 deg spin the fit then follows; seen on noisy synthetic keypoints of a subject facing the
    camera, where the heading sits at +-180 deg). Against the median of the last few frames an isolated flip is
    ambiguous alone and changes no later branch; the flip itself is left for the outlier check to refit.
    """
    a = np.asarray(angles, np.float64)
    out = a.copy()
    for i in range(1, len(a)):
        ref = float(np.median(out[max(0, i - window) : i]))
        out[i] = ref + _wrap(a[i] - ref)
    return out


def _fill_gaps(values: NDArray[np.float64], ok: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Linear interpolation over frames where ``ok`` is False (constant beyond the ends)."""
    if ok.all():
        return values
    t = np.arange(len(values))
    out = values.copy()
    for col in range(values.shape[1]):
        out[~ok, col] = np.interp(t[~ok], t[ok], values[ok, col])
    return out


def initial_pose(
    model: BodyModel,
    site_index: NDArray[np.integer],
    kp2d: NDArray[np.floating],
    kp3d: NDArray[np.floating],
    conf: NDArray[np.floating],
    intrinsics: tuple[float, float, float, float],
    smooth_frames: float = 0.0,
    outlier_window_frames: int = 0,
    limbs: bool = True,
) -> NDArray[np.float64]:
    """Per-frame joint values [T, D]: pelvis from the keypoints, hips/knees/shoulders/elbows from the 3D keypoints
    (``limbs``: :func:`initial_limbs`; else knees/elbows slightly bent), the rest zero.

    ``smooth_frames``: Gaussian sigma (frames) applied to the pelvis estimates (noisy keypoints need it).
    ``outlier_window_frames``: half-width of the running median that frames with a flipped pelvis are checked
    against (0: no check).
    """
    n_frames = kp2d.shape[0]
    q = np.tile(np.clip(np.zeros(model.n_dofs), model.lower, model.upper), (n_frames, 1))
    for name in _BENT_DOFS:
        if name in model.dof_names:
            q[:, model.dof_index(name)] = np.deg2rad(10.0)
    if not all(n in model.dof_names for n in _PELVIS_DOFS):
        logger.warning(
            "body model %r has no OpenSim pelvis DOFs; the fit starts from the zero pose", model.name
        )
        return q
    pelvis = [model.dof_index(n) for n in _PELVIS_DOFS]
    zero_sites = zero_pose_sites(model)[site_index]  # world m
    body_of = [model.bodies[model.sites[s].body].name for s in site_index]
    on_pelvis = np.array([b == _TRUNK_BODIES[0] for b in body_of])
    trunk = np.array([b in _TRUNK_BODIES for b in body_of])
    valid3 = (conf > 0) & np.isfinite(kp3d).all(-1)
    valid2 = (conf > 0) & np.isfinite(kp2d).all(-1)

    weights3 = np.where(valid3, conf, 0.0).astype(np.float64) ** CONF_POWER_3D
    rot = np.full((n_frames, 3), np.nan)
    have_rot = np.zeros(n_frames, bool)
    guesses: dict[int, tuple[NDArray[np.bool_], NDArray[np.float64]]] = {}  # frame -> 2D keypoints used, t
    for t in range(n_frames):
        use = valid3[t]  # the pelvis's own keypoints if there are 3, else the trunk's, else all
        for subset in (on_pelvis, trunk):
            if (valid3[t] & subset).sum() >= 3:
                use = valid3[t] & subset
                break
        if use.sum() < 3:
            continue
        obs_world = (kp3d[t, use] / 1000.0) @ WORLD_TO_CAMERA  # camera m -> level-camera world axes
        r, tr = robust_kabsch(zero_sites[use], obs_world, weights3[t, use])
        use2 = use & valid2[t]
        if use2.sum() >= 4:
            guesses[t] = (use2, tr)
            r = refine_rotation_2d(zero_sites[use2], kp2d[t, use2], r, tr, intrinsics)
        rot[t] = euler_zxy(r)
        have_rot[t] = True
    if not have_rot.any():
        rot[:] = _facing_from_2d(model, kp2d, valid2, site_index)
        have_rot[:] = True
    rot[have_rot, 2] = unwrap_robust(rot[have_rot, 2])
    if outlier_window_frames > 0:
        # A frame whose rigid fit took the mirror branch (its depths misled it) stands out from its neighbours:
        # refine it on its 2D keypoints again, starting from the running median of the track.
        med = _median_filter(rot, have_rot, outlier_window_frames)
        rows = np.flatnonzero(have_rot)
        far = _angles_deg(euler_rotation(rot[rows]), euler_rotation(med[rows])) > OUTLIER_ROTATION_DEG
        for t in rows[far]:
            rot[t] = med[t]
            if t in guesses:
                use2, tr = guesses[t]
                r = refine_rotation_2d(
                    zero_sites[use2],
                    kp2d[t, use2],
                    euler_rotation(med[t]),
                    tr,
                    intrinsics,
                    max_change_deg=OUTLIER_ROTATION_DEG,
                )
                rot[t] = med[t] + _wrap(euler_zxy(r) - med[t])
    rot = _fill_gaps(_gaussian_smooth(rot, have_rot, smooth_frames), have_rot)
    q[:, pelvis[3:]] = rot
    if limbs:
        q = initial_limbs(model, q, site_index, kp3d, conf, outlier_window_frames)

    trans, have_t = _translation_from_2d(model, q, pelvis[:3], site_index, kp2d, valid2, intrinsics)
    if have_t.any():
        q[:, pelvis[:3]] = _fill_gaps(_gaussian_smooth(trans, have_t, smooth_frames), have_t)
    else:
        q[:, pelvis[:3]] = np.array([3.0, 0.0, 0.0])  # 3 m in front of the camera
        logger.warning("no frame has enough valid 2D keypoints; the fit starts 3 m in front of the camera")
    return q


def _facing_from_2d(
    model: BodyModel, kp2d: NDArray[np.floating], valid2: NDArray[np.bool_], site_index: NDArray[np.integer]
) -> NDArray[np.float64]:
    """Upright, facing towards or away from the camera depending on where the right side appears (2D-only data)."""
    zero = zero_pose_sites(model)[site_index]
    side = zero[:, 2]  # world Z: + on the subject's right
    du = []
    for t in range(kp2d.shape[0]):
        v = valid2[t] & (np.abs(side) > 0.05)
        if v.sum() >= 2:
            du.append(np.sum(kp2d[t, v, 0] * np.sign(side[v])) / v.sum())
    # facing away (rotation 0): the subject's right (world +Z) is camera +x, i.e. to the image right
    facing_away = np.median(du) > np.median(kp2d[valid2][:, 0]) if du and valid2.any() else True
    return np.array([0.0, 0.0, 0.0 if facing_away else np.pi])


def _translation_from_2d(
    model: BodyModel,
    q: NDArray[np.float64],
    trans_dofs: list[int],
    site_index: NDArray[np.integer],
    kp2d: NDArray[np.floating],
    valid2: NDArray[np.bool_],
    intrinsics: tuple[float, float, float, float],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Pelvis translation per frame that puts the posed sites' spread and centre on the 2D keypoints."""
    fx, fy, cx, cy = intrinsics
    n_frames = q.shape[0]
    out = np.zeros((n_frames, 3))
    ok = np.zeros(n_frames, bool)
    q0 = q.copy()
    q0[:, trans_dofs] = 0.0
    posed = posed_sites(model, q0)[:, site_index]  # the fit's compiled kinematics (one program per bucket)
    posed = posed @ WORLD_TO_CAMERA.T
    for t in range(n_frames):
        v = valid2[t]
        if v.sum() < 2:
            continue
        local = posed[t, v]  # camera-frame m, pelvis at the camera centre
        uv = kp2d[t, v].astype(np.float64)
        spread_px = np.sqrt(np.mean(np.sum((uv - uv.mean(0)) ** 2, axis=1)))
        spread_m = np.sqrt(np.mean(np.sum((local[:, :2] - local[:, :2].mean(0)) ** 2, axis=1)))
        if spread_px < 1.0 or spread_m < 1e-3:
            continue
        depth = 0.5 * (fx + fy) * spread_m / spread_px
        centre = local.mean(0)
        z = depth - centre[2]
        x = (uv[:, 0].mean() - cx) / fx * depth - centre[0]
        y = (uv[:, 1].mean() - cy) / fy * depth - centre[1]
        out[t] = WORLD_TO_CAMERA.T @ np.array([x, y, z])
        ok[t] = True
    return out, ok


# -- limbs ---------------------------------------------------------------------------------------------------------

# (proximal body with a 3-DOF joint, distal body with the 1-DOF hinge, sites of the joint centres: proximal joint,
# middle joint, end) per limb; the parent of the proximal body is the pelvis (legs) or the torso (arms).
_LIMBS = (
    ("femur_r", "tibia_r", ("rhip", "rkne", "rank")),
    ("femur_l", "tibia_l", ("lhip", "lkne", "lank")),
    ("humerus_r", "ulna_r", ("rsho", "relb", "rwri")),
    ("humerus_l", "ulna_l", ("lsho", "lelb", "lwri")),
)
LIMIT_MARGIN = 0.03  # fraction of a DOF's range an initial limb angle keeps from its limits
# A limb segment's length in the initial guess: the median observed 3D length over frames where its keypoints all
# have at least this confidence (at least LENGTH_MIN_FRAMES of them), else the body model's own
LENGTH_MIN_CONF = 0.8
LENGTH_MIN_FRAMES = 10
# an observed segment longer or shorter than that length by more than this fraction has its depth re-derived
LENGTH_TOLERANCE = 0.5
# how far from its track's running median a flipped limb may be preferred
FLIP_CONSISTENCY_RAD = np.deg2rad(20.0)


def _axis_rotation(axis: NDArray[np.float64], angle: float | NDArray[np.float64]) -> NDArray[np.float64]:
    """Rodrigues' rotation about a unit ``axis`` by ``angle`` (a number: [3, 3]; an array [...]: [..., 3, 3])."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    a = np.asarray(angle, np.float64)[..., None, None]
    return np.eye(3) + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)


def _limb_ik(
    dofs: list[int], hinge: int, model: BodyModel, d1: NDArray[np.float64], d2: NDArray[np.float64]
) -> tuple[NDArray[np.float64], float]:
    """:func:`limb_ik` of one pair of directions ``d1``, ``d2`` [3]: joint values [4] and their cost."""
    x, cost = limb_ik(dofs, hinge, model, np.asarray(d1, np.float64)[None], np.asarray(d2, np.float64)[None])
    return x[0], float(cost[0])


def limb_ik(
    dofs: list[int], hinge: int, model: BodyModel, d1: NDArray[np.float64], d2: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Closed-form joint values (flexion about z, adduction about +-x, rotation about +-y, hinge about +-z) whose
    segments, both along -y at zero, point along the unit directions ``d1``, ``d2`` [N, 3] (parent frame), for N
    direction pairs at once (numpy over the batch); of the two flexion/adduction solutions the one inside the limits
    with the smaller angles; the rotation is 0 when the hinge is nearly straight (it is not observed then). Returns
    the values [N, 4] clipped into the limits and the direction cost ``|d1 - d1_hat|^2 + |d2 - d2_hat|^2`` [N] after
    clipping."""
    idx = [*dofs, hinge]
    lo, hi = model.lower[idx], model.upper[idx]
    m2, m3, sh = model.dofs[dofs[1]].axis[0], model.dofs[dofs[2]].axis[1], model.dofs[hinge].axis[2]
    d1, d2 = np.asarray(d1, np.float64), np.asarray(d2, np.float64)
    beta = np.arcsin(np.clip(-d1[:, 2], -1.0, 1.0))
    flex = np.arctan2(d1[:, 0], -d1[:, 1])
    axes = [np.asarray(model.dofs[i].axis, np.float64) for i in idx]
    down = np.array([0.0, -1.0, 0.0])
    best_key = best_x = best_cost = None
    for f, b in ((flex, beta), (_wrap(flex + np.pi), _wrap(np.pi - beta))):
        x = np.stack([f, m2 * b, np.zeros_like(f), np.zeros_like(f)], axis=-1)
        r01 = _axis_rotation(axes[0], x[:, 0]) @ _axis_rotation(axes[1], x[:, 1])
        sl = np.einsum("nji,nj->ni", r01, d2)  # r01.T @ d2
        k = np.arccos(np.clip(-sl[:, 1], -1.0, 1.0))
        phi = np.where(np.sin(k) > np.sin(np.deg2rad(15.0)), np.arctan2(-sl[:, 2] * sh, sl[:, 0] * sh), 0.0)
        x[:, 2], x[:, 3] = m3 * phi, k
        x = np.clip(x, lo, hi)
        r = (
            _axis_rotation(axes[0], x[:, 0])
            @ _axis_rotation(axes[1], x[:, 1])
            @ _axis_rotation(axes[2], x[:, 2])
        )
        e1 = r @ down - d1
        e2 = (r @ _axis_rotation(axes[3], x[:, 3])) @ down - d2
        cost = np.sum(e1 * e1, axis=-1) + np.sum(e2 * e2, axis=-1)
        key = cost + 1e-3 * np.sum(np.abs(x), axis=-1)
        if best_key is None:
            best_key, best_x, best_cost = key, x, cost
        else:
            better = key < best_key  # the first solution wins ties
            best_key = np.where(better, key, best_key)
            best_x = np.where(better[:, None], x, best_x)
            best_cost = np.where(better, cost, best_cost)
    assert best_x is not None and best_cost is not None
    return best_x, best_cost


def initial_limbs(
    model: BodyModel,
    q: NDArray[np.float64],
    site_index: NDArray[np.integer],
    kp3d: NDArray[np.floating],
    conf: NDArray[np.floating],
    window_frames: int,
) -> NDArray[np.float64]:
    """Hip, knee, shoulder and elbow angles from the 3D keypoints, per frame, on one consistent depth branch.

    Each limb's segment directions (pelvis frame of ``q``'s pelvis orientation) are solved for its joint angles
    under four depth hypotheses: as observed, and with the camera depth of its first, second or both segments
    mirrored (a monocular model's commonest gross error: the projection is the same); a segment whose observed
    length is grossly wrong first gets its depth from its length (:func:`depth_where_too_long`). Each frame keeps the
    hypothesis that is both a good fit and closest to the running median (``window_frames``) of the as-observed
    solutions; the result is median-filtered over the same window. Frames or limbs without their three keypoints
    keep ``q``'s values (filled from neighbours). Returns the new ``q``.
    """
    q = q.copy()
    zero_sites = zero_pose_sites(model)
    names = [model.sites[s].name for s in site_index]
    body_names = model.body_names
    tilt_list_rot = [model.dof_index(n) for n in _PELVIS_DOFS[3:]]
    valid = (conf > 0) & np.isfinite(kp3d).all(-1)
    for prox, dist, joints in _LIMBS:
        if prox not in body_names or dist not in body_names or not all(j in names for j in joints):
            continue
        cols = [names.index(j) for j in joints]
        pb, db = model.bodies[body_names.index(prox)], model.bodies[body_names.index(dist)]
        dofs = list(pb.dofs)
        if len(dofs) != 3 or len(db.dofs) != 1:
            continue
        hinge = db.dofs[0]
        zp = zero_sites[[site_index[c] for c in cols]]  # zero pose: every frame is the identity
        u1, u2 = _unit(zp[1] - zp[0]), _unit(zp[2] - zp[1])
        axes_ok = (
            np.allclose(model.dofs[dofs[0]].axis, (0, 0, 1))
            and abs(model.dofs[dofs[1]].axis[0]) == 1.0
            and abs(model.dofs[dofs[2]].axis[1]) == 1.0
            and abs(model.dofs[hinge].axis[2]) == 1.0
        )
        if not (
            axes_ok and np.allclose(u1, (0, -1, 0), atol=1e-3) and np.allclose(u2, (0, -1, 0), atol=1e-3)
        ):
            logger.debug("limb %s: joint layout is not the 40-DOF human's; left at its initial values", prox)
            continue
        ok = valid[:, cols].all(1)
        if ok.sum() < 1:
            continue
        hyps = np.full((4, len(q), 4), np.nan)
        costs = np.full((4, len(q)), np.inf)
        rows = np.flatnonzero(ok)
        p = (
            kp3d[rows][:, cols].astype(np.float64) / 1000.0
        ) @ WORLD_TO_CAMERA  # [M, 3, 3] level-camera world
        r_p = euler_rotation(q[rows][:, tilt_list_rot])  # [M, 3, 3]
        v1, v2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 1]
        lengths = [np.linalg.norm(zp[1] - zp[0]), np.linalg.norm(zp[2] - zp[1])]
        confident = conf[rows][:, cols].min(axis=1) >= LENGTH_MIN_CONF
        v1, v2 = (
            depth_where_too_long(v, segment_length(v, confident, model_len))
            for v, model_len in zip((v1, v2), lengths, strict=True)
        )
        for h, (f1, f2) in enumerate(((1, 1), (-1, 1), (1, -1), (-1, -1))):
            flip1, flip2 = (
                np.array([f1, 1.0, 1.0]),
                np.array([f2, 1.0, 1.0]),
            )  # world X is the camera's depth axis
            d1 = np.einsum("mji,mj->mi", r_p, _units(v1 * flip1))  # r_p.T @ unit
            d2 = np.einsum("mji,mj->mi", r_p, _units(v2 * flip2))
            hyps[h, rows], costs[h, rows] = limb_ik(dofs, hinge, model, d1, d2)
        base = _median_filter(np.nan_to_num(hyps[0]), ok, max(window_frames, 1))
        dev = np.linalg.norm(_wrap(hyps - base[None]), axis=-1)  # [4, T]
        score = costs + (dev / FLIP_CONSISTENCY_RAD) ** 2
        pick = np.argmin(np.where(np.isfinite(score), score, np.inf), axis=0)
        chosen = hyps[pick, np.arange(len(q))]
        chosen = _median_filter(np.nan_to_num(chosen), ok, max(window_frames, 1))
        chosen = _fill_gaps(chosen, ok) if ok.any() else chosen
        # keep clear of the limits: the fit's sigmoid parameterisation barely moves a value started at a limit
        lo, hi = model.lower[[*dofs, hinge]], model.upper[[*dofs, hinge]]
        margin = LIMIT_MARGIN * (hi - lo)
        q[:, [*dofs, hinge]] = np.clip(chosen, lo + margin, hi - margin)
        logger.debug("limb %s: depth hypotheses picked %s", prox, np.bincount(pick[ok], minlength=4).tolist())
    return q


def segment_length(v: NDArray[np.float64], confident: NDArray[np.bool_], model_length: float) -> float:
    """A limb segment's length (m): the median observed length ``|v|`` [M, 3] over the ``confident`` frames when
    there are :data:`LENGTH_MIN_FRAMES` of them, else ``model_length``."""
    if confident.sum() >= LENGTH_MIN_FRAMES:
        return float(np.median(np.linalg.norm(v[confident], axis=-1)))
    return float(model_length)


def depth_where_too_long(
    v: NDArray[np.float64], length: float, tolerance: float = LENGTH_TOLERANCE
) -> NDArray[np.float64]:
    """Segment vectors ``v`` [M, 3] (level-camera world: X is the camera's depth); those whose observed length is
    off ``length`` by more than ``tolerance`` (a fraction) get their depth component re-derived from the length:
    ``sign(v_x) * sqrt(length^2 - v_y^2 - v_z^2)`` (0 where the image-plane part alone is that long).

    A monocular model places a keypoint well in the image but may misjudge its depth by more than the segment is
    long: a partly hidden elbow marker 39 cm too far bent the demo's initial left elbow to 117 deg where the truth
    was 20, and the fit ended at 60 for the whole video. The length keeps the depth to the two values the image
    allows, and the depth hypotheses of :func:`initial_limbs` choose between them. Only gross length errors are
    corrected: re-deriving every segment's depth (tolerance 0) made noisy synthetic walks and the messi and
    cameraman clips worse (messi still-photo SD 3.67 -> 4.62 deg, cameraman reversed 3.07 -> 5.22)."""
    observed = np.linalg.norm(v, axis=-1)
    off = np.abs(observed / max(length, 1e-6) - 1.0) > tolerance
    lateral2 = np.sum(v[:, 1:] ** 2, axis=-1)
    depth = np.where(v[:, 0] < 0, -1.0, 1.0) * np.sqrt(np.maximum(length * length - lateral2, 0.0))
    fixed = np.concatenate([depth[:, None], v[:, 1:]], axis=-1)
    return np.where(off[:, None], fixed, v)


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _units(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows of ``v`` [..., 3] scaled to unit length."""
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), 1e-12)
