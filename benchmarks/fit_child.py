"""One pinned fit process for ``mocapflow bench``: pin to one CPU, set XLA's threads, point JAX's persistent
compilation cache at ``--cache``, then fit a real keypoints table twice (the first fit pays tracing/compilation or
the cache load, the second is warm) and optionally time a jitted block of optimiser steps against a Python loop of
single steps (the origin's way) on the same data.

Run by :mod:`benchmarks.fit_suite` as ``python -m benchmarks.fit_child KEYPOINTS_PARQUET --cache DIR [--loop-steps N]``;
prints one JSON line. Nothing imports JAX before the pinning.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

T0 = time.perf_counter()


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keypoints")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--loop-steps", type=int, default=0)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--fits", type=int, default=2)
    args = ap.parse_args()

    from mocapflow.cpus import current_affinity, lease_cpus
    from mocapflow.fit.runtime import configure_jax_cache, xla_flags

    lease = lease_cpus(1)
    os.environ["XLA_FLAGS"] = xla_flags(lease.threads, os.environ.get("XLA_FLAGS", ""))
    configure_jax_cache(Path(args.cache), min_compile_seconds=0.0)  # as tasks/fit_ray.py
    t = _clock()
    import jax  # noqa: F401 - JAX's import is part of what a fresh fit worker pays

    from mocapflow.fit.fitting import FitOptions, fit_body_model, fit_table
    from mocapflow.fit.run import read_keypoints

    import_s = _since(t)[0]
    table = read_keypoints(args.keypoints)
    model = fit_body_model()
    opts = FitOptions()
    fits = []
    for _ in range(args.fits):
        t = _clock()
        result = fit_table(table, opts, model)
        wall, cpu = _since(t)
        fits.append(
            {
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "iterations": int(result.info.iterations),
                "converged": bool(result.info.converged),
            }
        )
    out = {
        "affinity": current_affinity(),
        "frames": int(table.num_rows),
        "jax_import_s": round(import_s, 2),
        "process_to_first_fit_end_s": round(time.perf_counter() - T0 - sum(f["wall_s"] for f in fits[1:]), 2),
        # the CPU seconds of the same span: what one free pinned core would take (a shared machine's wall time
        # also counts waiting for the CPU)
        "process_cpu_to_first_fit_end_s": round(time.process_time() - sum(f["cpu_s"] for f in fits[1:]), 2),
        "fits": fits,
    }
    if args.loop_steps > 0:
        out["scan_vs_loop"] = scan_vs_loop(table, model, opts, args.loop_steps, args.block)
    print(json.dumps(out))


def scan_vs_loop(table, model, opts, steps: int, block: int) -> dict:  # noqa: ANN001
    """Iterations/s of jitted blocks of ``block`` steps vs a Python loop of single jitted steps, both on this
    table, after their first (compiling) calls."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mocapflow.fit import optimise
    from mocapflow.fit.fitting import initial_params, prepare, root_rotation_mask
    from mocapflow.keypoints import read_arrays

    meta, arrays = read_arrays(table)
    prep = prepare(meta, arrays, model, opts)
    params0 = initial_params(prep, model, opts)
    schedule = optimise.Schedule.make(
        opts.learning_rate, steps, root_mask=root_rotation_mask(model), n_dofs=model.n_dofs
    )
    state0 = optimise.init_state(params0)
    t = _clock()
    jax.block_until_ready(
        optimise.run_block(params0, state0, jnp.asarray(0, jnp.int32), prep.data, schedule, model, block)
    )
    first_scan = _since(t)[0]
    t = _clock()
    jax.block_until_ready(
        optimise.single_step(params0, state0, jnp.asarray(0, jnp.int32), prep.data, schedule, model)
    )
    first_step = _since(t)[0]

    def scan_pass() -> float:
        t = time.perf_counter()
        p, s = params0, state0
        for k in range(0, steps, block):
            p, s, losses = optimise.run_block(
                p, s, jnp.asarray(k, jnp.int32), prep.data, schedule, model, block
            )
            np.asarray(losses)  # what the fit does between blocks: read the losses for the stopping rule
        return (-(-steps // block) * block) / (time.perf_counter() - t)

    def loop_pass() -> float:
        t = time.perf_counter()
        p, s = params0, state0
        for k in range(steps):
            p, s, loss = optimise.single_step(p, s, jnp.asarray(k, jnp.int32), prep.data, schedule, model)
            float(loss)  # the origin read the loss every step
        return steps / (time.perf_counter() - t)

    scan = [scan_pass() for _ in range(3)]
    loop = [loop_pass() for _ in range(3)]
    return {
        "steps": steps,
        "block": block,
        "bucket": int(prep.n_bucket),
        "first_call_block_s": round(first_scan, 3),
        "first_call_step_s": round(first_step, 3),
        "block_its_per_s": [round(x, 1) for x in scan],
        "loop_its_per_s": [round(x, 1) for x in loop],
        "ratio": round(float(np.median(scan) / np.median(loop)), 2),
    }


if __name__ == "__main__":
    main()
