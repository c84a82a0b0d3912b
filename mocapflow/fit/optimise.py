"""Adam with warm-up and exponential decay, run as blocks of steps inside one ``eqx.filter_jit`` + ``lax.scan``.

Python only sees the loss once per block (default 200 steps) to decide on early stopping; everything in between is
one compiled region. Schedule values and ``max_iters`` are arrays, so neither recompiles; only the shapes of the
parameters and the data (the frame bucket, the number of keypoints) do.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

from mocapflow.fit.loss import FitData, total_loss
from mocapflow.fit.params import FitParams
from models.body import BodyModel

logger = logging.getLogger(__name__)

_ADAM = optax.scale_by_adam()  # stateless transformation; its state lives in the fit
_TRACES = {"block": 0, "step": 0}  # how often each jitted function was traced (tests count recompilations)


def trace_count(name: str = "block") -> int:
    """How many times the jitted ``name`` function ("block" or "step") has been traced in this process."""
    return _TRACES[name]


# Adam moves every parameter by about the learning rate per step, in that parameter's own units. These factors
# make one learning rate mean comparable moves: logits of joint angles (and radians, metres of the free DOFs) move
# STEP_TRAJECTORY x faster, log body scales and offsets (metres) slower.
STEP_TRAJECTORY = 3.0
STEP_SCALE = 0.3
STEP_OFFSET = 0.03
# The pelvis orientation starts from a rigid fit to its own keypoints; if it moved as fast as the limbs, it would
# rotate the whole body towards the data first and leave hips and lumbar compensating in a shallow valley.
ROOT_START = 0.1
ROOT_STEP = 1.0


class Schedule(eqx.Module):
    """Linear warm-up to ``peak``, exponential decay to ``peak * final_ratio`` at ``max_iters``; per-group factors.

    The same curve as ``optax.warmup_exponential_decay_schedule``, but as array fields: optax's schedules take
    Python numbers and branch on them when built (``transition_steps <= 0``, ``decay_rate == 0``), so their values
    would be constants of the compiled block and every other ``max_iters`` or rate would compile it again.
    """

    peak: Float[Array, ""]
    warmup: Float[Array, ""]
    max_iters: Int[Array, ""]
    final_ratio: Float[Array, ""]
    step_trajectory: Float[Array, ""]
    step_scale: Float[Array, ""]
    step_offset: Float[Array, ""]
    offset_start: Float[Array, ""]  # offsets stay frozen before this step (joint angles settle first)
    root_mask: Float[Array, " D"]  # 1 for the root's rotation DOFs, which stay at their initial value ...
    root_start: Float[
        Array, ""
    ]  # ... before this step (the limbs settle under a pelvis fixed by its keypoints)
    root_step: Float[Array, ""]  # ... and then move this much slower than the other DOFs

    @classmethod
    def make(
        cls,
        peak: float,
        max_iters: int,
        warmup: int | None = None,
        final_ratio: float = 1e-4,
        steps: tuple[float, float, float] = (STEP_TRAJECTORY, STEP_SCALE, STEP_OFFSET),
        offset_start: float = 0.2,
        root_mask: np.ndarray | None = None,
        root_start: float = ROOT_START,
        root_step: float = ROOT_STEP,
        n_dofs: int = 1,
    ) -> Schedule:
        """``offset_start`` and ``root_start`` are fractions of ``max_iters``."""
        if peak <= 0 or max_iters < 1:
            raise ValueError(f"learning rate ({peak}) must be > 0 and max_iters ({max_iters}) >= 1")
        warm = min(100, max(1, max_iters // 10)) if warmup is None else warmup
        f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
        return cls(
            f32(peak),
            f32(warm),
            jnp.asarray(max_iters, jnp.int32),
            f32(final_ratio),
            *map(f32, steps),
            f32(offset_start * max_iters),
            f32(np.zeros(n_dofs) if root_mask is None else root_mask),
            f32(root_start * max_iters),
            f32(root_step),
        )

    def __call__(self, step: Int[Array, ""]) -> Float[Array, ""]:
        s = step.astype(jnp.float32)
        ramp = (s + 1.0) / self.warmup
        span = jnp.maximum(self.max_iters.astype(jnp.float32) - self.warmup, 1.0)
        decay = self.final_ratio ** jnp.clip((s - self.warmup) / span, 0.0, 1.0)
        return self.peak * jnp.where(s < self.warmup, ramp, decay)


def init_state(params: FitParams) -> PyTree:
    """Adam moments for ``params``."""
    return _ADAM.init(eqx.filter(params, eqx.is_array))


def adam_step(
    params: FitParams,
    opt_state: PyTree,
    step: Int[Array, ""],
    data: FitData,
    schedule: Schedule,
    model: BodyModel,
) -> tuple[FitParams, PyTree, Float[Array, ""]]:
    """One optimiser step (pure; the loss returned is at the parameters before the step)."""
    loss, grads = eqx.filter_value_and_grad(total_loss)(params, data, model)
    updates, opt_state = _ADAM.update(grads, opt_state, params)
    lr = schedule(step)
    offset_lr = jnp.where(step >= schedule.offset_start, lr * schedule.step_offset, 0.0)
    root_factor = jnp.where(step >= schedule.root_start, schedule.root_step, 0.0)
    dof_lr = lr * schedule.step_trajectory * (1.0 + schedule.root_mask * (root_factor - 1.0))
    updates = updates.scaled(-dof_lr, -lr * schedule.step_scale, -offset_lr)
    params = eqx.apply_updates(params, updates)
    return params, opt_state, loss


@eqx.filter_jit
def run_block(
    params: FitParams,
    opt_state: PyTree,
    step0: Int[Array, ""],
    data: FitData,
    schedule: Schedule,
    model: BodyModel,
    n_steps: int,
) -> tuple[FitParams, PyTree, Float[Array, " n"]]:
    """``n_steps`` Adam steps in one compiled scan; steps at or beyond ``schedule.max_iters`` change nothing."""
    _TRACES["block"] += 1

    def body(carry, _):
        p, s, step = carry
        new_p, new_s, loss = adam_step(p, s, step, data, schedule, model)
        active = step < schedule.max_iters
        p, s = jax.tree.map(lambda a, b: jnp.where(active, a, b), (new_p, new_s), (p, s))
        return (p, s, step + 1), jnp.where(active, loss, jnp.nan)

    (params, opt_state, _), losses = jax.lax.scan(body, (params, opt_state, step0), None, length=n_steps)
    return params, opt_state, losses


@eqx.filter_jit
def single_step(
    params: FitParams,
    opt_state: PyTree,
    step: Int[Array, ""],
    data: FitData,
    schedule: Schedule,
    model: BodyModel,
) -> tuple[FitParams, PyTree, Float[Array, ""]]:
    """One jitted step: the origin's plain-Python-loop method, kept for the benchmark."""
    _TRACES["step"] += 1
    return adam_step(params, opt_state, step, data, schedule, model)


@dataclass(frozen=True)
class OptimiseInfo:
    """``converged``: the last block lowered the loss by less than ``rtol`` (relative); ``rel_change``: that
    relative change of the last block (NaN when no earlier block with the same weights was there to compare)."""

    iterations: int
    seconds: float
    converged: bool
    final_loss: float
    block_losses: list[float] = field(default_factory=list)
    rel_change: float = math.nan

    @property
    def iterations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else math.nan


def optimise(
    params: FitParams,
    data: FitData,
    model: BodyModel,
    *,
    max_iters: int,
    learning_rate: float,
    block_size: int = 200,
    rtol: float = 1e-4,
    min_iters: int | None = None,
    root_mask: np.ndarray | None = None,
    reweight_at: Sequence[int] = (),
    reweight: Callable[[FitParams, FitData], FitData] | None = None,
) -> tuple[FitParams, FitData, OptimiseInfo]:
    """Run blocks of Adam steps until ``max_iters`` or until a block improves the loss by less than ``rtol``.

    The loss compared between blocks is the mean over the last quarter of each block (Adam's steps are noisy).
    ``root_mask`` [D] marks DOFs held at their initial values for the first tenth of the iterations.
    Early stopping is only allowed after ``min_iters`` (default: half of ``max_iters``), when the learning rate
    has decayed by two orders of magnitude, and after the last reweighting.
    ``reweight(params, data) -> data`` is called before the first block that starts at or after each step of
    ``reweight_at`` (robust weights are data arrays: nothing recompiles). Returns the data as last reweighted.
    """
    if max_iters < 1 or block_size < 1:
        raise ValueError(f"max_iters ({max_iters}) and block_size ({block_size}) must be >= 1")
    pending = sorted(int(s) for s in reweight_at if 0 < s < max_iters) if reweight is not None else []
    min_iters = max_iters // 2 if min_iters is None else min_iters
    if pending:
        min_iters = max(min_iters, pending[-1] + block_size)
    n_dofs = int(jax.tree.leaves(params.trajectory)[0].shape[-1])
    schedule = Schedule.make(learning_rate, max_iters, root_mask=root_mask, n_dofs=n_dofs)
    opt_state = init_state(params)
    t0 = time.perf_counter()
    step, prev, converged, rel = 0, math.inf, False, math.nan
    history: list[float] = []
    tail = max(1, block_size // 4)
    while step < max_iters:
        if pending and step >= pending[0] and reweight is not None:
            pending = [s for s in pending if s > step]
            data = reweight(params, data)
            prev = math.inf  # the loss changes with the weights: compare blocks after this one only
        params, opt_state, losses = run_block(
            params, opt_state, jnp.asarray(step, jnp.int32), data, schedule, model, block_size
        )
        done = min(block_size, max_iters - step)
        losses_np = np.asarray(losses)[:done]
        step += done
        if not np.all(np.isfinite(losses_np)):
            raise FloatingPointError(
                f"the fit diverged at step {step} (loss {losses_np[~np.isfinite(losses_np)][0]}); "
                "lower fit_learning_rate or check the keypoints for outliers"
            )
        cur = float(np.mean(losses_np[-tail:]))
        history.append(cur)
        rel = (prev - cur) / max(abs(cur), 1e-12) if math.isfinite(prev) else math.nan
        if step >= min_iters and rel <= rtol:
            converged = True
            break
        prev = cur
    seconds = time.perf_counter() - t0
    info = OptimiseInfo(step, seconds, converged, history[-1] if history else math.nan, history, rel)
    logger.debug(
        "optimised %d steps in %.2f s (loss %.4g, relative change %.2g, converged=%s)",
        step,
        seconds,
        info.final_loss,
        rel,
        converged,
    )
    return params, data, info
