"""Fit benchmark: the time to fit a 5 s / 30 fps video on one pinned core, in a fresh process with an empty JAX
compilation cache (cold), in a fresh process with the persistent cache filled by the first (cached), and a second
fit in the same process (warm); then scan blocks vs a Python loop of single jitted steps, and optionally the per-joint
RMSE table on fresh synthetic ground truth.

Run: ``.venv/bin/python benchmarks/bench_fit.py`` (``--help`` for options). Prints figures; asserts nothing.
Each process pins itself to one free CPU and sets XLA's thread flags before JAX is imported. On a shared machine
wall time includes waiting for the CPU: the CPU seconds are what one free pinned core would take.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _pin() -> dict:
    from mocapflow.cpus import current_affinity, lease_cpus
    from mocapflow.fit.runtime import xla_flags

    lease = lease_cpus(1)
    os.environ["XLA_FLAGS"] = xla_flags(lease.threads, os.environ.get("XLA_FLAGS", ""))
    return {"lease": lease, "affinity": current_affinity()}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def bench_video_fit(seconds: float, method: str, max_iters: int | None) -> dict:
    """Fit one clean synthetic walking video of ``seconds`` twice in this process: wall and CPU time of each."""
    import numpy as np

    from mocapflow.fit.fitting import FitOptions, fit_arrays, fit_body_model
    from mocapflow.fit.validate import ValidationSpec, angle_errors_deg, keypoints_from_truth, truth_videos

    model = fit_body_model()
    video = truth_videos(ValidationSpec(n_videos=1, seconds=seconds), model)[0]
    meta, arrays = keypoints_from_truth(video)
    opts = FitOptions(method=method) if max_iters is None else FitOptions(method=method, max_iters=max_iters)
    out = {"frames": int(arrays["frame"].size), "method": method}
    for run in ("first", "second"):
        t = _clock()
        result = fit_arrays(meta, arrays, opts, model)
        wall, cpu = _since(t)
        err = angle_errors_deg(result, video.q)
        out[run] = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "iterations": result.info.iterations,
            "converged": result.info.converged,
            "rel_loss_change": float(result.info.rel_change),
            "optimiser_wall_s": round(result.info.seconds, 2),
            "mjae_deg": round(float(np.median(err)), 3),
        }
    return out


def _video_fit_process(seconds: float, method: str, max_iters: int | None, cache: Path) -> dict:
    """:func:`bench_video_fit` in a fresh pinned process using the compilation cache at ``cache``."""
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--one-process", "--seconds", str(seconds), "--methods", method]
    cmd += ["--cache", str(cache)] + ([] if max_iters is None else ["--max-iters", str(max_iters)])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(time.perf_counter() - t, 2)
    return out


def bench_scan_vs_loop(n_frames: int, steps: int, block: int) -> dict:
    """Iterations/s of one jitted scan block of ``block`` steps vs a Python loop of single jitted steps."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mocapflow.fit import optimise
    from mocapflow.fit.fitting import FitOptions, fit_body_model, initial_params, prepare, root_rotation_mask
    from mocapflow.fit.validate import ValidationSpec, keypoints_from_truth, truth_videos

    model = fit_body_model()
    video = truth_videos(ValidationSpec(n_videos=1, seconds=n_frames / 30.0), model)[0]
    meta, arrays = keypoints_from_truth(video)
    opts = FitOptions()
    prep = prepare(meta, arrays, model, opts)
    params0 = initial_params(prep, model, opts)
    schedule = optimise.Schedule.make(
        opts.learning_rate, steps, root_mask=root_rotation_mask(model), n_dofs=model.n_dofs
    )
    state0 = optimise.init_state(params0)

    # first calls (compilation, unless the fits above already compiled these shapes) are excluded from the rates
    t = _clock()
    jax.block_until_ready(
        optimise.run_block(params0, state0, jnp.asarray(0, jnp.int32), prep.data, schedule, model, block)
    )
    compile_scan = _since(t)
    t = _clock()
    jax.block_until_ready(
        optimise.single_step(params0, state0, jnp.asarray(0, jnp.int32), prep.data, schedule, model)
    )
    compile_step = _since(t)

    t = _clock()
    p, s = params0, state0
    for k in range(0, steps, block):
        p, s, losses = optimise.run_block(p, s, jnp.asarray(k, jnp.int32), prep.data, schedule, model, block)
        np.asarray(losses)  # what the fit does between blocks: read the losses for early stopping
    scan_wall, scan_cpu = _since(t)
    n_scan = -(-steps // block) * block

    t = _clock()
    p, s = params0, state0
    for k in range(steps):
        p, s, loss = optimise.single_step(p, s, jnp.asarray(k, jnp.int32), prep.data, schedule, model)
        float(loss)  # the origin read the loss every step
    loop_wall, loop_cpu = _since(t)
    return {
        "frames": int(arrays["frame"].size),
        "bucket": prep.n_bucket,
        "block": block,
        "scan_its_per_s": round(n_scan / scan_wall, 1),
        "loop_its_per_s": round(steps / loop_wall, 1),
        "ratio_wall": round((n_scan / scan_wall) / (steps / loop_wall), 2),
        "scan_its_per_cpu_s": round(n_scan / scan_cpu, 1),
        "loop_its_per_cpu_s": round(steps / loop_cpu, 1),
        "ratio_cpu": round((n_scan / scan_cpu) / (steps / loop_cpu), 2),
        "first_call_scan_s": round(compile_scan[0], 2),
        "first_call_step_s": round(compile_step[0], 2),
    }


def bench_accuracy(videos: int, seconds: float, methods: list[str]) -> dict:
    """``validate fit`` figures (median errors, per-joint RMSE, time) for each trajectory method."""
    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.validate import ValidationSpec, validate_fit

    out = {}
    for method in methods:
        summary = validate_fit(ValidationSpec(n_videos=videos, seconds=seconds), FitOptions(method=method))
        out[method] = {k: summary[k] for k in ("mjae_clean_deg", "mjae_noisy_deg", "fit_seconds_per_video")}
        out[method]["rmse_clean_deg"] = summary["rmse_clean_deg"]
        out[method]["rmse_noisy_deg"] = summary["rmse_noisy_deg"]
    return out


def _print_rmse(acc: dict) -> None:
    methods = list(acc)
    dofs = list(acc[methods[0]]["rmse_clean_deg"])
    head = "".join(f"{m + ' clean':>16}{m + ' noisy':>16}" for m in methods)
    print(f"\nper-joint RMSE (deg)\n{'dof':<18}{head}")
    for d in dofs:
        row = "".join(
            f"{acc[m]['rmse_clean_deg'][d]:>16.2f}{acc[m]['rmse_noisy_deg'][d]:>16.2f}" for m in methods
        )
        print(f"{d:<18}{row}")
    for m in methods:
        a = acc[m]
        print(
            f"{m}: median abs error clean {a['mjae_clean_deg']:.2f} deg, noisy {a['mjae_noisy_deg']:.2f} deg, "
            f"{a['fit_seconds_per_video']:.1f} s per video"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the timed video (30 fps)")
    ap.add_argument("--max-iters", type=int, default=None, help="optimiser step cap (default: FitOptions)")
    ap.add_argument("--loop-steps", type=int, default=200, help="steps timed for scan vs loop (0: skip)")
    ap.add_argument("--block", type=int, default=200, help="steps per scan block")
    ap.add_argument(
        "--validate-videos", type=int, default=0, help="synthetic videos for the accuracy table (0: skip)"
    )
    ap.add_argument("--validate-seconds", type=float, default=4.0)
    ap.add_argument("--methods", default="bspline", help="trajectory methods to compare (comma-separated)")
    ap.add_argument("--cache", default=None, help="JAX compilation cache root (default: a fresh temp folder)")
    ap.add_argument(
        "--one-process", action="store_true", help=argparse.SUPPRESS
    )  # the child of the cold/cached runs
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]

    if args.one_process:
        _pin()
        from mocapflow.fit.runtime import configure_jax_cache

        configure_jax_cache(Path(args.cache), min_compile_seconds=0.0)  # as tasks/fit_ray.py
        print(json.dumps(bench_video_fit(args.seconds, methods[0], args.max_iters)))
        return

    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="bench-fit-jax-"))
    report: dict = {"video_fit": []}
    print(f"{args.seconds:g} s video at 30 fps, one pinned core per process; JAX cache {cache}")
    head = (
        f"{'method':<8}{'run':<34}{'wall s':>8}{'CPU s':>8}{'its':>6}{'conv':>6}{'rel chg':>10}{'err deg':>9}"
    )
    print(head)
    for m in methods:
        cold = _video_fit_process(args.seconds, m, args.max_iters, cache)  # empty cache (a fresh temp folder)
        cached = _video_fit_process(args.seconds, m, args.max_iters, cache)  # the same folder, now filled
        report["video_fit"].append({"method": m, "cold_process": cold, "cached_process": cached})
        for label, r in (
            ("cold: fresh process, empty cache", cold["first"]),
            ("cached: fresh process, disk cache", cached["first"]),
            ("warm: second fit in a process", cached["second"]),
        ):
            print(
                f"{m:<8}{label:<34}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['iterations']:>6}"
                f"{str(r['converged']):>6}{r['rel_loss_change']:>10.1e}{r['mjae_deg']:>9.3f}"
            )

    pinned = _pin()
    from mocapflow.fit.runtime import configure_jax_cache

    configure_jax_cache(cache)
    import jax

    print(
        f"\nthis process: CPUs {pinned['affinity']}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}, jax {jax.__version__}"
    )
    report["affinity"] = pinned["affinity"]
    if args.loop_steps > 0:
        s = bench_scan_vs_loop(int(args.seconds * 30), args.loop_steps, args.block)
        report["scan_vs_loop"] = s
        print(
            f"\nscan blocks of {s['block']} vs a Python loop of single jitted steps ({s['frames']} frames, bucket "
            f"{s['bucket']}): {s['scan_its_per_s']} vs {s['loop_its_per_s']} it/s wall (x{s['ratio_wall']}), "
            f"{s['scan_its_per_cpu_s']} vs {s['loop_its_per_cpu_s']} it/CPU-s (x{s['ratio_cpu']}); "
            f"first calls {s['first_call_scan_s']} s vs {s['first_call_step_s']} s (compilation unless cached)"
        )
    if args.validate_videos > 0:
        acc = bench_accuracy(args.validate_videos, args.validate_seconds, methods)
        report["accuracy"] = acc
        _print_rmse(acc)
    print("\n" + json.dumps(report))


if __name__ == "__main__":
    main()
