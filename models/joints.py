"""Joint-name helpers shared by the pose runtimes (pure Python + numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_SIDES = (("left", "right"), ("Left", "Right"), ("l", "r"), ("L", "R"))


def mirror_indices(names: Sequence[str]) -> NDArray[np.intp]:
    """For each joint, the index of its left/right mirror (itself if it has none).

    Mirrors are found by name: a leading ``l``/``r`` (``lsho_h36m`` <-> ``rsho_h36m``), ``left``/``right`` or
    ``L``/``R`` swapped, or a trailing ``_left``/``_right`` (``mouth_left`` <-> ``mouth_right``), when the swapped
    name is also in the list."""
    index = {n: i for i, n in enumerate(names)}
    out = np.arange(len(names), dtype=np.intp)
    for i, name in enumerate(names):
        for a, b in _SIDES:
            for p, q in ((a, b), (b, a)):
                if name.startswith(p) and (twin := q + name[len(p) :]) in index:
                    out[i] = index[twin]
                    break
                if len(p) > 1 and name.endswith("_" + p) and (twin := name[: -len(p)] + q) in index:
                    out[i] = index[twin]
                    break
            if out[i] != i:
                break
    return out
