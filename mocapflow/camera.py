"""Pinhole camera: intrinsics, world->camera extrinsics and projection (numpy).

Conventions (docs/ARCHITECTURE.md): the camera frame is OpenCV's (x right, y down, z forward); the world frame is
Y up, X forward, Z right; pixel centres sit at integer coordinates, so (0, 0) is the centre of the top-left pixel and
the optical centre of an ideal camera is ``((width - 1) / 2, (height - 1) / 2)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

WORLD_UP = (0.0, 1.0, 0.0)
_INTRINSIC_KEYS = ("fx", "fy", "cx", "cy", "width", "height")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in px (no lens distortion) and the image size they belong to."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(
                f"Intrinsics: focal lengths must be finite and > 0, got fx={self.fx}, fy={self.fy}"
            )
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Intrinsics: image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> Intrinsics:
        """Square pixels, optical centre in the middle, horizontal field of view ``hfov_deg`` across the image."""
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180) degrees, got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(
            fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0, width=int(width), height=int(height)
        )

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.width / 2.0) / self.fx))

    def matrix(self) -> NDArray[np.float64]:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_dict(self) -> dict[str, float | int]:
        return {
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Intrinsics:
        missing = [k for k in _INTRINSIC_KEYS if k not in d]
        if missing:
            raise ValueError(f"intrinsics {d!r} lack {missing}; expected keys {list(_INTRINSIC_KEYS)}")
        return cls(
            fx=float(d["fx"]),
            fy=float(d["fy"]),
            cx=float(d["cx"]),
            cy=float(d["cy"]),
            width=int(d["width"]),
            height=int(d["height"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Intrinsics:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"intrinsics JSON does not parse ({e}); expected an object with {_INTRINSIC_KEYS}"
            ) from e
        if not isinstance(d, dict):
            raise ValueError(
                f"intrinsics JSON must be an object with keys {_INTRINSIC_KEYS}, got {type(d).__name__}"
            )
        return cls.from_dict(d)


@dataclass(frozen=True, eq=False)
class Extrinsics:
    """World->camera transform: ``x_cam = R @ x_world + t`` (metres)."""

    R: NDArray[np.float64]
    t: NDArray[np.float64]

    def __post_init__(self) -> None:
        R = np.array(self.R, dtype=np.float64)
        t = np.array(self.t, dtype=np.float64).reshape(-1)
        if R.shape != (3, 3) or t.shape != (3,):
            raise ValueError(f"Extrinsics: R must be 3x3 and t a 3-vector, got {R.shape} and {t.shape}")
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise ValueError(
                "Extrinsics: R is not a rotation (R R^T != I or det < 0); check its construction"
            )
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Extrinsics):
            return NotImplemented
        return bool(np.array_equal(self.R, other.R) and np.array_equal(self.t, other.t))

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def look_at(
        cls, eye: ArrayLike, target: ArrayLike, up: ArrayLike = WORLD_UP, roll_deg: float = 0.0
    ) -> Extrinsics:
        """A camera at ``eye`` (world, m) looking at ``target``, image up along ``up``, then rolled about its axis."""
        eye_ = np.asarray(eye, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - eye_
        norm = np.linalg.norm(forward)
        if norm < 1e-9:
            raise ValueError(
                f"look_at: eye {eye_} and target coincide; place the camera away from the target"
            )
        forward /= norm
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        if np.linalg.norm(right) < 1e-9:
            raise ValueError(f"look_at: view direction {forward} is parallel to up; tilt the camera")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        if roll_deg:
            c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
            R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R
        return cls(R=R, t=-R @ eye_)

    @property
    def centre(self) -> NDArray[np.float64]:
        """Camera centre in world coordinates (m)."""
        return -self.R.T @ self.t

    def apply(self, points_world: ArrayLike) -> NDArray[np.float64]:
        """World points [..., 3] (m) -> camera-frame points [..., 3] (m)."""
        p = np.asarray(points_world, dtype=np.float64)
        return p @ self.R.T + self.t

    def to_dict(self) -> dict[str, list[Any]]:
        return {"R": self.R.tolist(), "t": self.t.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Extrinsics:
        if "R" not in d or "t" not in d:
            raise ValueError(f"extrinsics {d!r} need keys 'R' (3x3) and 't' (3, metres)")
        return cls(R=np.asarray(d["R"], dtype=np.float64), t=np.asarray(d["t"], dtype=np.float64))


def project(points_cam: ArrayLike, intrinsics: Intrinsics) -> NDArray[np.float64]:
    """Camera-frame points [..., 3] (any unit) -> pixels [..., 2] (u, v); NaN for points not in front (z <= 0)."""
    p = np.asarray(points_cam, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"project: points must have shape [..., 3], got {p.shape}")
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.fx * p[..., 0] / z + intrinsics.cx
        v = intrinsics.fy * p[..., 1] / z + intrinsics.cy
    uv = np.stack([u, v], axis=-1)
    uv[~(z > 0)] = np.nan
    return uv


def project_world(
    points_world_m: ArrayLike, intrinsics: Intrinsics, extrinsics: Extrinsics
) -> NDArray[np.float64]:
    """World points [..., 3] (m) -> pixels [..., 2]."""
    return project(extrinsics.apply(points_world_m), intrinsics)


def backproject(uv: ArrayLike, depth: ArrayLike, intrinsics: Intrinsics) -> NDArray[np.float64]:
    """Pixels [..., 2] and camera-frame depth z [...] -> camera-frame points [..., 3] (the unit of ``depth``)."""
    uv_ = np.asarray(uv, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    x = (uv_[..., 0] - intrinsics.cx) / intrinsics.fx * z
    y = (uv_[..., 1] - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, np.broadcast_to(z, x.shape)], axis=-1)


def image_radius(radius: float, depth: ArrayLike, intrinsics: Intrinsics) -> NDArray[np.float64]:
    """Image radius (px) of a screen-facing disc of physical ``radius`` at camera depth ``depth`` (same unit)."""
    z = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z > 0, intrinsics.fx * radius / z, np.nan)
