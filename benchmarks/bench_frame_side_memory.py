"""Peak memory of the pose stage on a 3840x2160 video, with and without ``max_frame_side``.

Makes a 2 s synthetic video of a clothed humanoid (960x540, upscaled 4x to 3840x2160, H.264), then for each model
set and each ``max_frame_side`` runs, in a fresh process each, what a pose actor does for one video: open the model
set's estimator (1 thread), ``run_pose`` into a temporary store (batch_size 32, the default) — and reports the
process's peak resident set size (``VmHWM`` from /proc/self/status), the model load included. A Ray actor adds its
worker's own baseline (~0.1-0.2 GB) to these figures.

Run: ``.venv/bin/python benchmarks/bench_frame_side_memory.py [--models markers blazepose] [--json out.json]``.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_video(folder: Path) -> Path:
    import imageio.v2 as imageio
    import numpy as np

    from mocapflow.synth import CohortSpec, generate_cohort
    from mocapflow.video import iter_batches, probe

    generate_cohort(
        folder, CohortSpec(n_videos=1, seed=1, seconds=2.0, width=960, height=540, style="humanoid")
    )
    (small,) = sorted(folder.glob("*.mp4"))
    out = folder / "uhd.mp4"
    writer = imageio.get_writer(
        str(out), fps=probe(str(small)).fps, codec="libx264", macro_block_size=16, ffmpeg_log_level="error"
    )
    try:
        for batch in iter_batches(str(small), 16):
            for f in batch:
                writer.append_data(np.repeat(np.repeat(f, 4, axis=0), 4, axis=1))
    finally:
        writer.close()
    return out


def worker(video: str, model: str, max_side: str, store: str) -> None:
    from mocapflow.pose.pipeline import NoPersonError, PoseParams, run_pose
    from mocapflow.settings import Settings
    from mocapflow.store import Store
    from models.runtime import ThreadConfig, open_estimator
    from tasks.runtime import resolve_model_set

    model_set = resolve_model_set(Settings(model_set=model))
    estimator = open_estimator(model_set, ThreadConfig(threads=1))
    params = PoseParams(max_frame_side=None if max_side == "none" else int(max_side))
    found = True
    try:
        run_pose(video, estimator, Store(store), params)
    except NoPersonError:
        found = False
    status = Path("/proc/self/status").read_text()
    hwm_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_gb": hwm_kb / 1024**2, "person_found": found}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["markers", "blazepose"])
    ap.add_argument("--sides", nargs="+", default=["none", "1920"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "video")
        for model in args.models:
            for side in args.sides:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", str(video), model, side, str(Path(tmp) / "store")],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = {
                    "model": model,
                    "max_frame_side": side,
                    **json.loads(out.stdout.strip().splitlines()[-1]),
                }
                rows.append(row)
                print(
                    f"{model:10s} max_frame_side={side:5s} peak RSS {row['peak_rss_gb']:.2f} GB", flush=True
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
