"""The picture of what bounds ``mocapflow validate fit``'s worst video (docs/img/synthetic-bound.png).

    python -m benchmarks.synthetic_bound --seed 1 --video 0 --out docs/img/synthetic-bound.png

One video of the synthetic set (``validate fit``'s: same spec, same seeds) is fitted from its keypoints clean, with
each corruption of the noisy copy alone (2D noise, 3D noise, dropped frames and zero-confidence keypoints), with
all of them (what ``validate fit`` calls noisy), and with all of them and the 3D keypoints' depth weighted 0.3 whatever
its noise (``FitOptions.depth_weight`` 0.3, every fit's factor until ``FIT_VERSION`` 14; now the factor follows the
keypoints' noise per axis, ~1 on this isotropic noise). Left: the knee over time, truth and the fits. Right: the
median error per DOF of each. Prints the medians as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from mocapflow.fit.fitting import FitOptions, fit_arrays, fit_body_model
    from mocapflow.fit.loss import DEPTH_WEIGHT_3D
    from mocapflow.fit.validate import (
        METRIC_DOFS,
        ValidationSpec,
        angle_errors_deg,
        keypoints_from_truth,
        truth_videos,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--video", type=int, default=0, help="index in the set (0: the first walking video)")
    ap.add_argument("--side", default="r", choices=("r", "l"))
    ap.add_argument("--out", type=Path, default=Path("docs/img/synthetic-bound.png"))
    args = ap.parse_args(argv)

    spec = ValidationSpec(seed=args.seed, n_videos=args.video + 1)
    model = fit_body_model()
    video = truth_videos(spec, model)[args.video]
    full = spec.corruption()
    default = FitOptions()
    # name -> (the corruption, the fit's options)
    cases = {
        "clean": ({}, default),
        f"2D noise {spec.noise_2d_px:g} px only": ({"noise_2d_px": spec.noise_2d_px}, default),
        f"3D noise {spec.noise_3d_mm:g} mm only": ({"noise_3d_mm": spec.noise_3d_mm}, default),
        "dropped frames, zero-confidence keypoints only": (
            {"dropped_frames": spec.dropped_frames, "zero_conf_keypoints": spec.zero_conf_keypoints},
            default,
        ),
        "noisy (all of them, as validate fit)": (full, default),
        f"noisy, depth fixed at {DEPTH_WEIGHT_3D:g} (until FIT_VERSION 14)": (
            full,
            FitOptions(depth_weight=DEPTH_WEIGHT_3D),
        ),
    }
    seed = spec.video_seed(args.video)
    fits, errors = {}, {}
    for name, (corruption, options) in cases.items():
        meta, arrays = keypoints_from_truth(video, seed=seed, **corruption)
        fits[name] = fit_arrays(meta, arrays, options, model)
        errors[name] = angle_errors_deg(fits[name], video.q)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1.4]})
    dof = f"knee_angle_{args.side}"
    t = np.arange(len(video.q)) / video.fps
    ax.plot(t, np.rad2deg(video.q[:, model.dof_index(dof)]), color="k", lw=2.5, label="truth")
    colors = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#d62728")
    for (name, r), color in zip(fits.items(), colors, strict=True):
        q = np.where(r.fitted, np.rad2deg(r.q[:, model.dof_index(dof)]), np.nan)
        ax.plot(r.frames / video.fps, q, color=color, lw=1.3, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{dof} (deg)")
    ax.set_title(f"validate fit seed {args.seed}, {video.name}: the knee")
    ax.legend(fontsize=7)

    x = np.arange(len(METRIC_DOFS))
    w = 0.8 / len(cases)
    for k, ((name, err), color) in enumerate(zip(errors.items(), colors, strict=True)):
        med = np.median(err, axis=0)
        bx.bar(x + (k - (len(cases) - 1) / 2) * w, med, w, color=color, label=f"{name}: {np.median(err):.2f}")
    bx.axhline(3.0, color="0.3", ls=":", lw=1)
    bx.set_xticks(
        x,
        [d.replace("_angle", "").replace("_flexion", "_flex") for d in METRIC_DOFS],
        fontsize=7,
        rotation=45,
    )
    bx.set_ylabel("median error (deg)")
    bx.set_title("per DOF; legend: the video's median (dotted: the every-video target)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(json.dumps({name: round(float(np.median(e)), 3) for name, e in errors.items()}))


if __name__ == "__main__":
    main()
