"""Forward kinematics over many frames with a single compilation per model."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.body import BodyModel, make_fk


class FrameFk:
    """``fk(q [T, D], body_scale [B] | [B, 3], site_offset [S, 3] | None) -> sites [T, S, 3]`` (float64, metres).

    Frames are evaluated in fixed-size chunks and the scale/offset arguments normalised to fixed shapes, so the
    jitted FK of :func:`models.body.make_fk` compiles once, whatever the clip length.
    """

    def __init__(self, model: BodyModel, chunk: int = 64) -> None:
        self.model = model
        self.chunk = int(chunk)
        self._fk = make_fk(model)

    def __call__(
        self, q: ArrayLike, body_scale: ArrayLike | None = None, site_offset: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        m = self.model
        q_ = np.asarray(q, dtype=np.float32)
        if q_.ndim != 2 or q_.shape[1] != m.n_dofs:
            raise ValueError(f"q must have shape [T, {m.n_dofs}] for {m.name}, got {q_.shape}")
        n_bodies, n_sites = len(m.bodies), len(m.sites)
        scale = (
            np.ones((n_bodies, 3), np.float32) if body_scale is None else np.asarray(body_scale, np.float32)
        )
        if scale.shape == (n_bodies,):
            scale = np.repeat(scale[:, None], 3, axis=1)
        offset = (
            np.zeros((n_sites, 3), np.float32) if site_offset is None else np.asarray(site_offset, np.float32)
        )
        if scale.shape != (n_bodies, 3) or offset.shape != (n_sites, 3):
            raise ValueError(
                f"body_scale must be [{n_bodies}] or [{n_bodies}, 3] and site_offset [{n_sites}, 3], "
                f"got {scale.shape} and {offset.shape}"
            )
        n = len(q_)
        padded = np.zeros((-(-max(n, 1) // self.chunk) * self.chunk, m.n_dofs), np.float32)
        padded[:n] = q_
        parts = [
            np.asarray(self._fk(padded[i : i + self.chunk], scale, offset))
            for i in range(0, len(padded), self.chunk)
        ]
        return np.concatenate(parts, axis=0)[:n].astype(np.float64)
