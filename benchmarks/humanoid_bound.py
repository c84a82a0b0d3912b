"""The picture of what bounds ``mocapflow validate humanoid`` (docs/img/humanoid-bound.png).

    mocapflow validate humanoid --json --oracle --seed 0 --out DIR > vh.json
    python -m benchmarks.humanoid_bound --json vh.json --videos DIR --out docs/img/humanoid-bound.png

One rendered video (default: the squat) goes through blazepose again; at its deepest frame the picture shows the
pose model's 2D and root-relative 3D against the humanoid's joint centres (front and side views), the knee angle
over time (truth, the pose model's own 3D, the fit, the fit with the 3D replaced by the truth), and every video's
median error from the JSON: as shipped, with the model's 2D or 3D replaced by the truth, on the exact landmarks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

LIMBS = (
    ("left_shoulder", "right_shoulder"),
    ("left_hip", "right_hip"),
    *((f"{s}_shoulder", f"{s}_hip") for s in ("left", "right")),
    *(
        (f"{s}_{a}", f"{s}_{b}")
        for s in ("left", "right")
        for a, b in (("shoulder", "elbow"), ("elbow", "wrist"))
    ),
    *((f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in (("hip", "knee"), ("knee", "ankle"))),
)


def _segments(ax, pts: np.ndarray, names: list[str], cols: tuple[int, int], color: str, label: str) -> None:
    for k, (a, b) in enumerate(LIMBS):
        p, q = pts[names.index(a)], pts[names.index(b)]
        if np.isfinite(p).all() and np.isfinite(q).all():
            ax.plot(
                [p[cols[0]], q[cols[0]]],
                [p[cols[1]], q[cols[1]]],
                color=color,
                lw=2,
                label=label if k == 0 else None,
            )


def read_frame(video: Path, t: int) -> np.ndarray:
    """Frame ``t`` of ``video`` as RGB."""
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, t)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"{video}: cannot read frame {t}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _knee_deg(kp3d: np.ndarray, names: list[str], side: str) -> np.ndarray:
    from mocapflow.fit.metamorphic import keypoint_angle_deg

    conf = np.isfinite(kp3d).all(-1).astype(float)
    inner = keypoint_angle_deg(kp3d, conf, names, f"{side}_hip", f"{side}_knee", f"{side}_ankle")
    return 180.0 - inner


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from mocapflow.fit.fitting import FitOptions, fit_arrays
    from mocapflow.fit.validate_humanoid import with_true_output
    from mocapflow.keypoints import read_arrays
    from mocapflow.pose.pipeline import PoseParams, estimate_keypoints
    from mocapflow.pose.validate_real import open_blazepose
    from mocapflow.settings import load_settings
    from mocapflow.synth import read_ground_truth

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True, help="`validate humanoid --json --oracle` output")
    ap.add_argument("--videos", type=Path, required=True, help="that run's --out folder")
    ap.add_argument("--video", default="v002_squat_s002.mp4")
    ap.add_argument("--side", default="right", choices=("left", "right"))
    ap.add_argument("--out", type=Path, default=Path("docs/img/humanoid-bound.png"))
    args = ap.parse_args(argv)

    summary = json.loads(args.json.read_text())
    video = args.videos / "humanoid" / args.video
    gt = read_ground_truth(video.with_name(video.stem + ".gt.parquet"))
    names = list(gt.joint_names)
    estimator = open_blazepose(load_settings(), threads=1)
    table = estimate_keypoints(str(video), estimator, gt.intrinsics, PoseParams())
    meta, kp = read_arrays(table)
    options = FitOptions()
    fit = fit_arrays(meta, kp, options)
    fit_true3d = fit_arrays(
        meta, with_true_output(meta.joint_names, kp, names, gt.kp3d_mm, "kp3d_mm"), options
    )

    side = args.side
    dof = fit.model.dof_index(f"knee_angle_{side[0]}")
    truth_knee = np.rad2deg(gt.q[:, gt.dof_names.index(f"knee_angle_{side[0]}")])
    frames = np.asarray(kp["frame"])
    t_deep = int(frames[np.argmax(truth_knee[frames])])
    row = int(np.flatnonzero(frames == t_deep)[0])
    image = read_frame(video, t_deep)

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), gridspec_kw={"width_ratios": [1.1, 0.8, 1.4, 1.4]})
    ax = axes[0]
    ax.imshow(image)
    _segments(ax, gt.kp2d_px[t_deep], names, (0, 1), "#2ca02c", "truth (joint centres)")
    _segments(ax, kp["kp2d_px"][row], list(meta.joint_names), (0, 1), "#ff7f0e", "BlazePose 2D")
    box = np.asarray(gt.box[t_deep])
    pad = 0.15 * (box[3] - box[1])
    ax.set_xlim(box[0] - pad, box[2] + pad)
    ax.set_ylim(box[3] + pad, box[1] - pad)
    ax.set_title(f"{args.video} frame {t_deep}: image")
    ax.legend(loc="lower left", fontsize=8)
    ax.axis("off")

    ax = axes[1]
    for pts, nm, color, label in (
        (gt.kp3d_mm[t_deep], names, "#2ca02c", "truth"),
        (kp["kp3d_mm"][row], list(meta.joint_names), "#ff7f0e", "BlazePose 3D"),
    ):
        rel = pts - pts[[nm.index("left_hip"), nm.index("right_hip")]].mean(0)
        _segments(ax, rel * np.array([1, -1, 1]), nm, (2, 1), color, label)
    ax.set_aspect("equal")
    ax.set_xlabel("depth from the hips (mm, away from the camera)")
    ax.set_ylabel("height (mm)")
    ax.set_title("side view, root-relative 3D")
    ax.legend(fontsize=8)

    ax = axes[2]
    t = frames / float(gt.meta["fps"])
    ax.plot(t, truth_knee[frames], color="#2ca02c", lw=2.5, label="truth")
    ax.plot(
        t,
        _knee_deg(kp["kp3d_mm"], list(meta.joint_names), side),
        color="#ff7f0e",
        label="BlazePose 3D (keypoints)",
    )
    for r, style, color, label in (
        (fit, "-", "#1f77b4", "fit, as shipped"),
        (fit_true3d, "--", "#9467bd", "fit, its 3D replaced by the truth"),
    ):
        ax.plot(r.frames / float(gt.meta["fps"]), np.rad2deg(r.q[:, dof]), style, color=color, label=label)
    ax.axvline(t_deep / float(gt.meta["fps"]), color="0.7", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{side} knee flexion (deg)")
    ax.set_title("knee angle")
    ax.legend(fontsize=8)

    ax = axes[3]
    keys = (
        ("median_deg", "BlazePose (as shipped)", "#1f77b4"),
        ("oracle_true_2d_median_deg", "true 2D, its 3D", "#ff7f0e"),
        ("oracle_true_3d_median_deg", "its 2D, true 3D", "#9467bd"),
        ("oracle_median_deg", "exact landmarks", "#2ca02c"),
    )
    vids = summary["videos"]
    x = np.arange(len(vids))
    w = 0.8 / len(keys)
    for k, (key, label, color) in enumerate(keys):
        ax.bar(x + (k - 1.5) * w, [v.get(key) or np.nan for v in vids], w, color=color, label=label)
    ax.axhline(summary["targets"]["worst_video_deg"], color="0.3", ls=":", lw=1)
    ax.axhline(summary["targets"]["median_deg"], color="0.3", ls="--", lw=1)
    ax.set_xticks(x, [v["motion"] for v in vids])
    ax.set_ylabel("median joint-angle error (deg)")
    ax.set_title(f"seed {summary['spec']['seed']}: targets 4 (median), 6 (every video)")
    ax.legend(fontsize=8)

    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
