"""Read a MuJoCo MJCF (XML) model into :class:`models.body.BodyModel`.

Supported: nested ``<body>`` with ``pos`` and ``quat`` / ``euler`` / ``axisangle``; joints of type hinge, slide,
ball (three hinges x, y, z) and free (three slides and a ball) with ``axis``, ``pos`` (anchor) and ``range``;
``<site>`` with ``pos``; ``<compiler angle=... eulerseq=...>``; ``<default>`` classes (nested, ``class`` and
``childclass``) for joint and site attributes. Geoms, actuators and the rest are ignored; ``<include>`` is refused.
Every body is its own scale group unless ``scale_groups`` maps body names to groups.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.body import Body, BodyModel, Dof, Site

logger = logging.getLogger(__name__)


class MJCFError(ValueError):
    """The MJCF file cannot be read into a body model."""


@dataclass
class _Ctx:
    path: str
    degrees: bool = True
    eulerseq: str = "xyz"
    defaults: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # class -> tag -> attrs


def _vec(s: str | None, n: int, default: tuple[float, ...], where: str) -> np.ndarray:
    if s is None:
        return np.array(default, float)
    try:
        v = np.array([float(x) for x in s.split()], float)
    except ValueError:
        raise MJCFError(f"{where}: cannot parse numbers from {s!r}") from None
    if v.size != n:
        raise MJCFError(f"{where}: expected {n} numbers, got {v.size} ({s!r})")
    return v


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _axis_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def _body_quat(el: ET.Element, ctx: _Ctx, where: str) -> np.ndarray:
    to_rad = np.pi / 180 if ctx.degrees else 1.0
    if (q := el.get("quat")) is not None:
        return _vec(q, 4, (1, 0, 0, 0), where)
    if (aa := el.get("axisangle")) is not None:
        v = _vec(aa, 4, (1, 0, 0, 0), where)
        return _axis_quat(v[:3], v[3] * to_rad)
    if (eu := el.get("euler")) is not None:
        angles = _vec(eu, 3, (0, 0, 0), where) * to_rad
        quat = np.array([1.0, 0, 0, 0])
        for ch, ang in zip(ctx.eulerseq, angles, strict=True):
            axis = np.eye(3)["xyz".index(ch.lower())]
            qi = _axis_quat(axis, ang)
            # lower case: intrinsic (rotating frame) -> post-multiply; upper case: extrinsic -> pre-multiply
            quat = _quat_mul(quat, qi) if ch.islower() else _quat_mul(qi, quat)
        return quat
    if el.get("xyaxes") is not None or el.get("zaxis") is not None:
        raise MJCFError(f"{where}: xyaxes/zaxis orientations are not supported; use quat or euler")
    return np.array([1.0, 0, 0, 0])


def _attrs(el: ET.Element, tag: str, cls: str, ctx: _Ctx) -> dict[str, str]:
    merged = dict(ctx.defaults.get("main", {}).get(tag, {}))
    merged.update(ctx.defaults.get(el.get("class", cls), {}).get(tag, {}))
    merged.update(el.attrib)
    return merged


def _read_defaults(el: ET.Element, parent: dict[str, dict[str, str]], ctx: _Ctx) -> None:
    name = el.get("class", "main")
    mine = {tag: dict(attrs) for tag, attrs in parent.items()}
    for child in el:
        if child.tag != "default":
            mine.setdefault(child.tag, {}).update(child.attrib)
    ctx.defaults[name] = mine
    for child in el:
        if child.tag == "default":
            _read_defaults(child, mine, ctx)


def load_mjcf(path: str | Path, scale_groups: Mapping[str, str] | None = None) -> BodyModel:
    """Parse an MJCF file; ``scale_groups`` maps body name -> group name (default: one group per body)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise MJCFError(f"{path}: not a readable MJCF/XML file ({e})") from e
    if root.tag != "mujoco":
        raise MJCFError(f"{path}: root element is <{root.tag}>, expected <mujoco>")
    if root.find(".//include") is not None:
        raise MJCFError(f"{path}: <include> is not supported; merge the files first")
    ctx = _Ctx(str(path))
    if (comp := root.find("compiler")) is not None:
        ctx.degrees = comp.get("angle", "degree") == "degree"
        ctx.eulerseq = comp.get("eulerseq", "xyz")
    for d in root.findall("default"):
        _read_defaults(d, {}, ctx)
    world = root.find("worldbody")
    if world is None:
        raise MJCFError(f"{path}: no <worldbody>")

    bodies: list[Body] = []
    dofs: list[Dof] = []
    sites: list[Site] = []
    group_names: list[str] = []
    to_rad = np.pi / 180 if ctx.degrees else 1.0

    def group_of(body_name: str) -> int:
        g = scale_groups.get(body_name, body_name) if scale_groups else body_name
        if g not in group_names:
            group_names.append(g)
        return group_names.index(g)

    def add_joint(j: ET.Element, body_name: str, cls: str, start: int) -> None:
        a = _attrs(j, "joint", cls, ctx)
        where = f"{path}: joint in body {body_name!r}"
        jtype = a.get("type", "hinge")
        name = a.get("name") or f"{body_name}_joint{len(dofs) - start}"
        anchor = tuple(_vec(a.get("pos"), 3, (0, 0, 0), where))
        limited = a.get("limited", "auto") != "false" and "range" in a
        rng = _vec(a.get("range"), 2, (0, 0), where) if limited else None
        if jtype in ("hinge", "slide"):
            axis = tuple(_vec(a.get("axis"), 3, (0, 0, 1), where))
            if rng is None:
                lo, hi = (-np.pi, np.pi) if jtype == "hinge" else (-np.inf, np.inf)
            else:
                lo, hi = (rng * to_rad) if jtype == "hinge" else rng
            dofs.append(
                Dof(name, jtype, axis, float(lo), float(hi), anchor if jtype == "hinge" else (0, 0, 0))
            )
        elif jtype in ("ball", "free"):
            if jtype == "free":
                for k, ax in enumerate("xyz"):
                    dofs.append(Dof(f"{name}_t{ax}", "slide", tuple(np.eye(3)[k]), -np.inf, np.inf))
            lim = float(rng[1] * to_rad) if rng is not None and jtype == "ball" else np.pi
            for k, ax in enumerate("xyz"):
                dofs.append(Dof(f"{name}_r{ax}", "hinge", tuple(np.eye(3)[k]), -lim, lim, anchor))
        else:
            raise MJCFError(f"{where}: joint type {jtype!r} is not supported")

    def walk(el: ET.Element, parent: int, cls: str) -> None:
        for child in el:
            if child.tag == "body":
                name = child.get("name") or f"body{len(bodies)}"
                ccls = child.get("childclass", cls)
                where = f"{path}: body {name!r}"
                start = len(dofs)
                for j in child:
                    if j.tag in ("joint", "freejoint"):
                        if j.tag == "freejoint":
                            j = ET.Element("joint", {"type": "free", **j.attrib})
                        add_joint(j, name, ccls, start)
                bodies.append(
                    Body(
                        name,
                        parent,
                        tuple(_vec(child.get("pos"), 3, (0, 0, 0), where)),
                        tuple(_body_quat(child, ctx, where)),
                        tuple(range(start, len(dofs))),
                        group_of(name),
                    )
                )
                idx = len(bodies) - 1
                for s in child:
                    if s.tag == "site":
                        a = _attrs(s, "site", ccls, ctx)
                        sname = a.get("name") or f"{name}_site{len(sites)}"
                        sites.append(
                            Site(sname, idx, tuple(_vec(a.get("pos"), 3, (0, 0, 0), f"{where} site")))
                        )
                walk(child, idx, ccls)
            elif child.tag == "site" and parent < 0:
                logger.warning("%s: world-level site %r ignored", path, child.get("name"))

    walk(world, -1, "main")
    if not bodies:
        raise MJCFError(f"{path}: <worldbody> has no bodies")
    # MJCF bodies hang from a fixed world: add nothing; the first body is a root with parent -1.
    return BodyModel(path.stem, tuple(bodies), tuple(dofs), tuple(sites), tuple(group_names))
