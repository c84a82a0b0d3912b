"""The fitting stage: body model + smooth joint trajectories fitted to one video's keypoints (JAX/equinox/optax).

Importing this package is cheap and does not import JAX: the names below load their modules on first use, so a
worker can pin its CPUs and set XLA's thread flags before JAX initialises (see :mod:`mocapflow.fit.runtime`).

Layout: :mod:`~mocapflow.fit.params` (trajectories, scales, offsets as equinox modules), :mod:`~mocapflow.fit.loss`,
:mod:`~mocapflow.fit.kinematics` (batched forward kinematics), :mod:`~mocapflow.fit.optimise` (Adam in scanned
blocks), :mod:`~mocapflow.fit.fitting` (one video end to end), :mod:`~mocapflow.fit.outputs` (tables, .mot, plot,
store writes), :mod:`~mocapflow.fit.run` (from a keypoints URI to committed outputs), :mod:`~mocapflow.fit.validate`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FitOptions": "mocapflow.fit.fitting",
    "FitResult": "mocapflow.fit.fitting",
    "fit_arrays": "mocapflow.fit.fitting",
    "fit_table": "mocapflow.fit.fitting",
    "fit_body_model": "mocapflow.fit.fitting",
    "fit_keypoints": "mocapflow.fit.run",
    "read_keypoints": "mocapflow.fit.run",
    "write_fit": "mocapflow.fit.outputs",
    "read_mot": "mocapflow.fit.outputs",
    "configure_jax_cache": "mocapflow.fit.runtime",
    "xla_flags": "mocapflow.fit.runtime",
    "validate_fit": "mocapflow.fit.validate",
    "ValidationSpec": "mocapflow.fit.validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mocapflow.fit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
