"""The body model as OpenSim files: a subject-scaled ``.osim`` model and ``.trc`` marker trajectories.

Pure text writers (no OpenSim import): a lab opens the results in OpenSim without mocapflow. The model has one
``CustomJoint`` per body whose coordinates carry the body model's DOF names, axes, order and limits, so a ``.mot`` of
the fitted angles plays on it and OpenSim's own inverse kinematics can be run on the ``.trc`` of virtual markers.

Conventions shared by both models (docs/ARCHITECTURE.md): metres, Y up, X forward, Z to the subject's right.
A body's hinges turn about axes fixed in the body, in the order the body lists them (body-fixed sequence, as a
CustomJoint's rotation1..3); the root's slides are along the ground's axes. Body scales are baked into the joint
offsets and marker locations (the model is this subject's), not left to OpenSim's scale tool.

The segment masses are nominal (a fraction of ``mass_kg`` per body, from its share of the model's length): enough
for OpenSim to build the system; the files are for kinematics (IK, playback), not for dynamics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from models.body import BodyModel, body_scale_xyz, quat_to_matrix

OSIM_DOCUMENT_VERSION = "40000"
_AXIS_NAMES = ("rotation1", "rotation2", "rotation3", "translation1", "translation2", "translation3")


class OpenSimExportError(ValueError):
    """The body model cannot be written as an OpenSim model (the message says which part and why)."""


def _vec(v: Sequence[float] | NDArray[np.floating]) -> str:
    return " ".join(f"{float(x):.9g}" for x in v)


def _complement(axes: list[NDArray[np.float64]], n: int) -> list[NDArray[np.float64]]:
    """``n`` unit axes that, with ``axes``, make a linearly independent set (OpenSim needs three independent
    rotation axes and three independent translation axes per joint, used or not)."""
    out = [a / np.linalg.norm(a) for a in axes]
    for cand in np.eye(3):
        if len(out) == len(axes) + n:
            break
        m = np.array([*out, cand])
        if np.linalg.matrix_rank(m, tol=1e-6) == len(m):
            out.append(cand)
    return out[len(axes) :]


def _coordinate(model: BodyModel, d: int) -> str:
    dof = model.dofs[d]
    default = float(np.clip(0.0, dof.lower, dof.upper))
    return (
        f'<Coordinate name="{escape(dof.name)}"><default_value>{default:.9g}</default_value>'
        f"<range>{dof.lower:.9g} {dof.upper:.9g}</range><clamped>false</clamped><locked>false</locked>"
        "</Coordinate>"
    )


def _transform_axis(name: str, axis: NDArray[np.float64], coordinate: str | None) -> str:
    if coordinate is None:
        func = "<Constant><value>0</value></Constant>"
        coords = ""
    else:
        func = "<LinearFunction><coefficients>1 0</coefficients></LinearFunction>"
        coords = escape(coordinate)
    return f'<TransformAxis name="{name}"><coordinates>{coords}</coordinates><axis>{_vec(axis)}</axis>{func}</TransformAxis>'


def _joint(model: BodyModel, i: int, scales: NDArray[np.float64]) -> str:
    body = model.bodies[i]
    rot = [d for d in body.dofs if model.dofs[d].kind == "hinge"]
    slide = [d for d in body.dofs if model.dofs[d].kind == "slide"]
    if len(rot) > 3 or len(slide) > 3:
        raise OpenSimExportError(
            f"body {body.name!r}: more than three hinges or slides; OpenSim joints take three"
        )
    if slide and body.dofs[: len(slide)] != tuple(slide):
        raise OpenSimExportError(
            f"body {body.name!r}: slides after hinges cannot be written as a CustomJoint (translations first)"
        )
    if any(any(model.dofs[d].anchor) for d in rot):
        raise OpenSimExportError(
            f"body {body.name!r}: a hinge with an off-origin anchor (MJCF joint pos) has no CustomJoint form here"
        )
    rot_axes = [np.asarray(model.dofs[d].axis, np.float64) for d in rot]
    slide_axes = [np.asarray(model.dofs[d].axis, np.float64) for d in slide]
    if rot_axes and np.linalg.matrix_rank(np.array(rot_axes), tol=1e-6) < len(rot_axes):
        raise OpenSimExportError(f"body {body.name!r}: its hinge axes are not independent")
    axes = [*rot_axes, *_complement(rot_axes, 3 - len(rot_axes))]
    axes += [*slide_axes, *_complement(slide_axes, 3 - len(slide_axes))]
    names: list[str | None] = [model.dofs[d].name for d in rot] + [None] * (3 - len(rot))
    names += [model.dofs[d].name for d in slide] + [None] * (3 - len(slide))
    parent_path = "/ground" if body.parent < 0 else f"/bodyset/{model.bodies[body.parent].name}"
    parent_scale = np.ones(3) if body.parent < 0 else scales[body.parent]
    translation = np.asarray(body.pos, np.float64) * parent_scale
    orientation = Rotation.from_matrix(quat_to_matrix(body.quat)).as_euler("XYZ")
    parent_name = "ground" if body.parent < 0 else model.bodies[body.parent].name
    jname = f"{parent_name}_{body.name}"
    coords = "".join(_coordinate(model, d) for d in (*rot, *slide))
    spatial = "".join(_transform_axis(n, a, c) for n, a, c in zip(_AXIS_NAMES, axes, names, strict=True))
    return (
        f'<CustomJoint name="{escape(jname)}">'
        f"<socket_parent_frame>{escape(parent_name)}_offset</socket_parent_frame>"
        f"<socket_child_frame>{escape(body.name)}_offset</socket_child_frame>"
        f"<coordinates>{coords}</coordinates>"
        "<frames>"
        f'<PhysicalOffsetFrame name="{escape(parent_name)}_offset"><socket_parent>{parent_path}</socket_parent>'
        f"<translation>{_vec(translation)}</translation><orientation>{_vec(orientation)}</orientation>"
        "</PhysicalOffsetFrame>"
        f'<PhysicalOffsetFrame name="{escape(body.name)}_offset"><socket_parent>/bodyset/{escape(body.name)}'
        "</socket_parent><translation>0 0 0</translation><orientation>0 0 0</orientation></PhysicalOffsetFrame>"
        "</frames>"
        f"<SpatialTransform>{spatial}</SpatialTransform>"
        "</CustomJoint>"
    )


def _sphere(name: str, radius: float) -> str:
    return (
        f'<Sphere name="{escape(name)}"><socket_frame>..</socket_frame><radius>{radius:.4g}</radius></Sphere>'
    )


def _body(model: BodyModel, i: int, scales: NDArray[np.float64], mass: float) -> str:
    """A body with a sphere at its joint and one halfway to each child joint (a stick figure in the GUI)."""
    name = model.bodies[i].name
    segments = [np.asarray(b.pos) * scales[i] for b in model.bodies if b.parent == i]
    frames = "".join(
        f'<PhysicalOffsetFrame name="{escape(name)}_seg{k}"><socket_parent>..</socket_parent>'
        f"<translation>{_vec(0.5 * c)}</translation><orientation>0 0 0</orientation>"
        f"<attached_geometry>{_sphere(f'{name}_seg{k}_geom', 0.018)}</attached_geometry>"
        "</PhysicalOffsetFrame>"
        for k, c in enumerate(segments)
        if float(np.linalg.norm(c)) >= 1e-3
    )
    inertia = max(mass, 1e-3) * 0.01
    return (
        f'<Body name="{escape(name)}"><mass>{mass:.6g}</mass><mass_center>0 0 0</mass_center>'
        f"<inertia>{inertia:.6g} {inertia:.6g} {inertia:.6g} 0 0 0</inertia>"
        f"<attached_geometry>{_sphere(f'{name}_geom', 0.025)}</attached_geometry>"
        + (f"<components>{frames}</components>" if frames else "")
        + "</Body>"
    )


def _masses(model: BodyModel, mass_kg: float) -> list[float]:
    """Nominal masses: ``mass_kg`` shared by the bodies in proportion to their segment length (min 0.2 kg)."""
    lengths = np.array(
        [
            sum(float(np.linalg.norm(c.pos)) for c in model.bodies if c.parent == i)
            for i in range(len(model.bodies))
        ]
    )
    lengths = np.maximum(lengths, 0.02)
    return list(np.maximum(mass_kg * lengths / lengths.sum(), 0.2))


def osim_text(
    model: BodyModel,
    body_scale: NDArray[np.floating] | None = None,
    markers: Mapping[str, tuple[str, Sequence[float]]] | None = None,
    name: str = "mocapflow",
    mass_kg: float = 70.0,
) -> str:
    """The ``.osim`` XML of ``model`` at ``body_scale`` ([B] or [B, 3]), with ``markers``
    (name -> (body name, location in the body frame, m)); by default every site, scaled with its body."""
    try:
        scales = body_scale_xyz(model, body_scale)
    except ValueError as err:
        raise OpenSimExportError(str(err)) from None
    if markers is None:
        markers = {
            s.name: (model.bodies[s.body].name, np.asarray(s.pos) * scales[s.body]) for s in model.sites
        }
    for mname, (bname, _loc) in markers.items():
        if bname not in model.body_names:
            raise OpenSimExportError(
                f"marker {mname!r} is on body {bname!r}, which {model.name} does not have"
            )
    masses = _masses(model, mass_kg)
    bodies = "".join(_body(model, i, scales, masses[i]) for i in range(len(model.bodies)))
    joints = "".join(_joint(model, i, scales) for i in range(len(model.bodies)))
    marker_xml = "".join(
        f'<Marker name="{escape(m)}"><socket_parent_frame>/bodyset/{escape(b)}</socket_parent_frame>'
        f"<location>{_vec(loc)}</location><fixed>false</fixed></Marker>"
        for m, (b, loc) in markers.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        f'<OpenSimDocument Version="{OSIM_DOCUMENT_VERSION}">'
        f'<Model name="{escape(name)}">'
        f"<credits>mocapflow: {escape(model.name)}, scaled to the subject</credits>"
        "<length_units>meters</length_units><force_units>N</force_units>"
        "<gravity>0 -9.80665 0</gravity>"
        '<Ground name="ground"/>'
        f'<BodySet name="bodyset"><objects>{bodies}</objects></BodySet>'
        f'<JointSet name="jointset"><objects>{joints}</objects></JointSet>'
        f'<MarkerSet name="markerset"><objects>{marker_xml}</objects></MarkerSet>'
        "</Model></OpenSimDocument>\n"
    )


def trc_text(
    marker_names: Sequence[str],
    positions_m: NDArray[np.floating],
    time_s: NDArray[np.floating],
    rate_hz: float,
    name: str = "mocapflow.trc",
) -> str:
    """A ``.trc`` (OpenSim's marker file): positions [T, M, 3] in metres written in millimetres; NaN rows become
    blank cells, which OpenSim reads as missing markers."""
    pos = np.asarray(positions_m, np.float64) * 1000.0
    t = np.asarray(time_s, np.float64)
    if pos.ndim != 3 or pos.shape[1:] != (len(marker_names), 3) or pos.shape[0] != t.shape[0]:
        raise OpenSimExportError(
            f"positions must be [T, {len(marker_names)}, 3] with T = len(time_s); got {pos.shape} and {t.shape}"
        )
    n_frames, n_markers = pos.shape[:2]
    head = [
        f"PathFileType\t4\t(X/Y/Z)\t{name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate_hz:.6g}\t{rate_hz:.6g}\t{n_frames}\t{n_markers}\tmm\t{rate_hz:.6g}\t1\t{n_frames}",
        "Frame#\tTime\t" + "\t\t\t".join(marker_names),
        "\t\t" + "\t".join(f"X{k}\tY{k}\tZ{k}" for k in range(1, n_markers + 1)),
        "",
    ]
    rows = []
    for f in range(n_frames):
        cells = ["" if not np.isfinite(v) else f"{v:.4f}" for v in pos[f].reshape(-1)]
        rows.append("\t".join([str(f + 1), f"{t[f]:.6f}", *cells]))
    return "\n".join(head + rows) + "\n"
