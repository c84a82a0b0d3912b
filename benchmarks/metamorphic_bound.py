"""The picture of what bounds ``mocapflow validate metamorphic`` (docs/img/metamorphic-bound.png).

    for c in messi_pan basketball_pan astronaut_pan cameraman_pan court_pan; do
        mocapflow validate metamorphic --json --clip $c > vm_$c.json; done
    python -m benchmarks.metamorphic_bound vm_*.json --out docs/img/metamorphic-bound.png

Top: court_pan and its mirror image (flipped back, labels swapped back: where the model agreed with itself the two
skeletons would match) at one frame, each with the share of frames in which the pose model's 3D has the person
facing the camera; cameraman_pan with each keypoint drawn by its confidence and the fit's per-DOF support. Bottom:
each clip's four figures against their targets, the time-reversed one beside the plain re-encode (the floor), from
the JSONs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.humanoid_bound import LIMBS, read_frame

LEFT, RIGHT = "#1f77b4", "#d62728"


def facing_camera(kp3d: np.ndarray, names: list[str]) -> np.ndarray:
    """Per frame, whether the body's forward direction ((left hip - right hip) x up, camera frame, y down) points
    towards the camera (NaN where a hip or shoulder is missing)."""
    i = {n: names.index(n) for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")}
    lr = kp3d[:, i["left_hip"]] - kp3d[:, i["right_hip"]]
    up = (
        kp3d[:, i["left_shoulder"]]
        + kp3d[:, i["right_shoulder"]]
        - kp3d[:, i["left_hip"]]
        - kp3d[:, i["right_hip"]]
    ) / 2
    fz = np.cross(lr, up)[:, 2]
    return np.where(np.isfinite(fz), (fz < 0).astype(float), np.nan)


def _skeleton(ax, pts: np.ndarray, conf: np.ndarray | None, names: list[str]) -> None:
    for a, b in LIMBS:
        p, q = pts[names.index(a)], pts[names.index(b)]
        if not (np.isfinite(p).all() and np.isfinite(q).all()):
            continue
        color = (
            LEFT
            if a.startswith("left") and b.startswith("left")
            else RIGHT
            if a.startswith("right") and b.startswith("right")
            else "0.8"
        )
        alpha = (
            1.0
            if conf is None
            else float(np.clip(min(conf[names.index(a)], conf[names.index(b)]), 0.15, 1.0))
        )
        ax.plot([p[0], q[0]], [p[1], q[1]], color=color, lw=2.2, alpha=alpha)


def _zoom(ax, pts: np.ndarray, shape: tuple[int, ...]) -> None:
    ok = np.isfinite(pts).all(-1)
    lo, hi = pts[ok].min(0), pts[ok].max(0)
    pad = 0.35 * (hi - lo).max()
    ax.set_xlim(max(lo[0] - pad, 0), min(hi[0] + pad, shape[1]))
    ax.set_ylim(min(hi[1] + pad, shape[0]), max(lo[1] - pad, 0))


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from mocapflow.fit.fitting import fit_arrays
    from mocapflow.fit.metamorphic_suite import variant_videos, video_keypoints
    from mocapflow.keypoints import read_arrays
    from mocapflow.pose.validate_real import open_blazepose
    from mocapflow.settings import load_settings
    from models.joints import mirror_indices

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", type=Path, help="`validate metamorphic --json` outputs, one per clip")
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="as the JSONs were run (default: the whole clip, as validate)",
    )
    ap.add_argument("--out", type=Path, default=Path("docs/img/metamorphic-bound.png"))
    args = ap.parse_args(argv)

    runs = [json.loads(p.read_text()) for p in args.json]
    seconds = args.seconds
    settings = load_settings()
    estimator = open_blazepose(settings, threads=1)

    def keypoints(video: Path):
        return read_arrays(video_keypoints(video, estimator))

    fig = plt.figure(figsize=(18, 9.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.25, 1])

    court = variant_videos("court_pan", settings.cache_dir, seconds)
    (mb, kb), (_, km) = keypoints(court["base"]), keypoints(court["mirror"])
    names = list(mb.joint_names)
    swap = mirror_indices(names)
    both, ib, im = np.intersect1d(kb["frame"], km["frame"], return_indices=True)
    fb = facing_camera(np.asarray(kb["kp3d_mm"], float)[ib], names)
    fm = facing_camera(np.asarray(km["kp3d_mm"], float)[im], names)
    differ = np.isfinite(fb) & np.isfinite(fm) & (fb != fm)
    # a frame where the two disagree on the facing, if there is one
    pick = both[differ] if differ.any() else both
    t = int(pick[len(pick) // 2])
    image = read_frame(court["base"], t)
    width = image.shape[1]
    views = (("court_pan", kb, False), ("its mirror image, flipped back", km, True))
    for col, (label, kp, flip) in enumerate(views):
        row = int(np.flatnonzero(kp["frame"] == t)[0])
        pts = np.array(kp["kp2d_px"][row], float)
        conf = np.array(kp["conf"][row], float)
        kp3d = np.array(kp["kp3d_mm"], float)
        if flip:
            pts = pts[swap]
            pts[:, 0] = width - 1 - pts[:, 0]
            conf = conf[swap]
        facing = facing_camera(kp3d, names)
        here = "facing the camera" if facing[row] == 1 else "facing away"
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(image)
        _skeleton(ax, pts, conf, names)
        _zoom(ax, pts, image.shape)
        ax.set_title(
            f"{label}, frame {t} ({here})\nits 3D faces the camera in"
            f" {int(np.nansum(facing))}/{int(np.isfinite(facing).sum())} frames",
            fontsize=10,
        )
        ax.axis("off")
    ax.text(
        0.02,
        0.02,
        "blue: labelled left, red: labelled right\n(the straight blue lines are in the photo)",
        transform=ax.transAxes,
        color="w",
        fontsize=8,
        bbox={"facecolor": "0.2", "alpha": 0.6},
    )

    cam = variant_videos("cameraman_pan", settings.cache_dir, seconds)["base"]
    meta, kp = keypoints(cam)
    fit = fit_arrays(meta, kp, None)
    names = list(meta.joint_names)
    t = int(kp["frame"][len(kp["frame"]) // 2])
    row = int(np.flatnonzero(kp["frame"] == t)[0])
    image = read_frame(cam, t)
    pts = np.array(kp["kp2d_px"][row], float)
    conf = np.array(kp["conf"][row], float)
    ax = fig.add_subplot(grid[0, 2:])
    ax.imshow(image)
    _skeleton(ax, pts, conf, names)
    ok = np.isfinite(pts).all(-1)
    ax.scatter(pts[ok, 0], pts[ok, 1], c=conf[ok], cmap="viridis", vmin=0, vmax=1, s=22, zorder=3)
    weak = next((r["weak_dofs"] for r in runs if r["clip"] == "cameraman_pan"), list(fit.weak_dofs))
    support = {
        d: float(np.nanmedian(fit.dof_support[:, fit.model.dof_index(d)]))
        for d in ("knee_angle_r", "knee_angle_l", "elbow_flex_r", "elbow_flex_l")
    }
    ax.set_title(f"cameraman_pan, frame {t}: keypoints by confidence (line opacity, dot colour)", fontsize=10)
    ax.text(
        0.01,
        0.01,
        "fit support, median: "
        + ", ".join(f"{d} {v:.2f}" for d, v in support.items())
        + f"\nweakly observed (< 0.5) of the figures' DOFs: {len(weak)}, "
        + ", ".join(sorted({d.rsplit("_", 1)[0].split("_")[0] + "_" + d[-1] for d in weak})),
        transform=ax.transAxes,
        color="w",
        fontsize=8,
        bbox={"facecolor": "0.2", "alpha": 0.6},
    )
    ax.axis("off")

    metrics = (
        ("still_sd_deg", "still photo: per-DOF SD"),
        ("mirror_deg", "mirrored: |left - right|"),
        ("half_deg", "half resolution"),
        ("reverse_deg", "time-reversed, beside the re-encode floor"),
    )
    clips = [r["clip"].replace("_pan", "") for r in runs]
    x = np.arange(len(runs))
    for k, (key, title) in enumerate(metrics):
        ax = fig.add_subplot(grid[1, k])
        if key == "reverse_deg":
            ax.bar(
                x - 0.2, [r["medians_deg"][key] for r in runs], 0.4, color="#1f77b4", label="time-reversed"
            )
            ax.bar(
                x + 0.2,
                [r["medians_deg"]["reencode_deg"] for r in runs],
                0.4,
                color="0.6",
                label="re-encoded only",
            )
            ax.legend(fontsize=8)
        else:
            ax.bar(x - 0.2, [r["medians_deg"][key] for r in runs], 0.4, color="#1f77b4", label="every DOF")
            ax.bar(
                x + 0.2,
                [r["medians_observed_deg"][key] for r in runs],
                0.4,
                color="#9467bd",
                label="well observed DOFs",
            )
            if k == 0:
                ax.legend(fontsize=8)
        ax.axhline(runs[0]["targets_deg"][key], color="0.3", ls="--", lw=1)
        ax.set_xticks(x, clips, fontsize=8)
        ax.set_title(title, fontsize=10)
        if k == 0:
            ax.set_ylabel("median over DOFs (deg); dashed: target")

    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
