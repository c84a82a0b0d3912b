"""Forward kinematics of the 40-DOF body model: compile time and time for 1,000 frames once compiled.

Run: `uv run python benchmarks/bench_fk.py`. Prints figures; asserts nothing (machines here are shared and noisy).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from models.body import default_body_model, make_fk


def main(frames: int = 1000, repeats: int = 20) -> None:
    model = default_body_model()
    fk = make_fk(model)
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.uniform(model.lower, model.upper, size=(frames, model.n_dofs)).clip(-3, 3))
    t0 = time.perf_counter()
    jax.block_until_ready(fk(q))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fk(q))
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    print(f"FK {model.n_dofs} DOF, {len(model.sites)} sites, {frames} frames on {jax.devices()[0].platform}")
    print(f"  first call (trace + compile): {compile_s * 1e3:.1f} ms")
    print(f"  compiled: median {med * 1e3:.2f} ms per {frames} frames ({frames / med:,.0f} frames/s), "
          f"min {min(times) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
