"""Keypoint names -> body-model sites, and the fixed rotation from the body model's world frame to the camera."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.body import BLAZEPOSE_TO_SITE, BodyModel

logger = logging.getLogger(__name__)

# Body-model world (X forward, Y up, Z right) -> OpenCV camera (x right, y down, z forward) for a level camera that
# looks along world +X: camera x = world Z, camera y = -world Y, camera z = world X. The pelvis translations and
# rotations of a fit are expressed in this level-camera frame (see mocapflow.fit docs).
WORLD_TO_CAMERA = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class KeypointMap:
    """Which keypoint columns drive which body-model sites."""

    keypoint_index: tuple[int, ...]  # columns of the keypoints table that map to a site
    site_index: tuple[int, ...]  # the body-model site of each of them
    names: tuple[str, ...]  # the keypoint names kept
    ignored: tuple[str, ...]  # keypoint names with no site

    def __len__(self) -> int:
        return len(self.keypoint_index)


def offset_projection(model: BodyModel, site_index: Sequence[int]) -> np.ndarray:
    """[3J, 3J] projection that removes from per-site offsets any rotation of their body about its joint.

    Offsets of every site on one body by ``w x p_i`` (``p_i`` the site in the body frame) mimic a change of that
    body's joint angles exactly, so angle errors could hide in offsets at the price of the offset prior alone.
    Projecting that subspace out (per body, least squares over its mapped sites) leaves offsets only what no
    joint angle can explain. Flattening is row-major: keypoint j, axis a -> 3 j + a.
    """
    n = len(site_index)
    proj = np.eye(3 * n)
    bodies: dict[int, list[int]] = {}
    for j, s in enumerate(site_index):
        bodies.setdefault(model.sites[s].body, []).append(j)
    for members in bodies.values():
        rows = np.concatenate([np.arange(3 * j, 3 * j + 3) for j in members])
        # columns: offsets produced by a small rotation about each axis, w x p = -[p]x w
        a = np.concatenate([-_skew(np.asarray(model.sites[site_index[j]].pos, float)) for j in members])
        if not np.any(np.abs(a) > 1e-9):
            continue
        proj[np.ix_(rows, rows)] -= a @ np.linalg.pinv(a, rcond=1e-6)
    return proj


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def site_for(name: str, site_names: Sequence[str]) -> str | None:
    """The site a keypoint name drives: same name (markers, bml_movi_87), else BlazePose's table, else None."""
    if name in site_names:
        return name
    mapped = BLAZEPOSE_TO_SITE.get(name)
    return mapped if mapped is not None and mapped in site_names else None


def map_keypoints(joint_names: Sequence[str], model: BodyModel) -> KeypointMap:
    """Map a keypoints table's joint names onto ``model``'s sites; raise if none map."""
    kp_idx: list[int] = []
    site_idx: list[int] = []
    kept: list[str] = []
    ignored: list[str] = []
    used: set[str] = set()
    for j, name in enumerate(joint_names):
        site = site_for(name, model.site_names)
        if site is None or site in used:
            ignored.append(name)
            continue
        used.add(site)
        kp_idx.append(j)
        site_idx.append(int(model.site_index(site)))
        kept.append(name)
    if not kp_idx:
        raise ValueError(
            f"none of the {len(joint_names)} keypoint names (e.g. {list(joint_names)[:5]}) names a site of body "
            f"model {model.name!r}; use a model set whose joints are body-model sites (markers), BlazePose's 33 "
            "landmarks or bml_movi_87 names"
        )
    if ignored:
        logger.debug("keypoints without a body-model site (ignored): %s", ignored)
    return KeypointMap(tuple(kp_idx), tuple(site_idx), tuple(kept), tuple(ignored))
