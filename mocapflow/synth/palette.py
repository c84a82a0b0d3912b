"""The marker palette of the synthetic videos: which body-model sites are drawn, in which colour, how big.

Why these colours: a detector must find each disc by its colour in decoded H.264 (yuv420p) frames, where chroma has
half the resolution of luma and compression blurs both. The 32 colours were picked from the RGB grid
{0, 64, 128, 192, 255}^3 to maximise the smallest pairwise distance in BT.601 YCbCr (chroma weighted 1.5x:
58 levels at the worst pair) and to stay at least 78 levels from every background grey between 32 and 80, so
saturated hues at several brightness levels, and no grey but white. They were then assigned to sites so that
anatomical neighbours (sites within 16 cm at the zero pose, and left/right twins) differ by at least 199 levels.
Measured: after libx264 crf 16, the centre pixel of an isolated disc of radius >= 2 px is nearest to its own colour
for 2740 of 2740 discs, also with a textured background and Gaussian noise sigma 6.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

DISC_RADIUS_M = 0.03  # physical radius of every marker disc

# Backgrounds: plain neutral grey, or a low-contrast grey texture around it (no chroma).
BACKGROUND_GREY = 50.0
TEXTURE_AMPLITUDE = 15.0

_PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("head", (0, 255, 255)),
    ("lfronthead", (128, 128, 0)),
    ("rfronthead", (0, 0, 255)),
    ("clavicle", (192, 128, 192)),
    ("thor", (192, 192, 255)),
    ("lsho", (0, 0, 128)),
    ("rsho", (255, 255, 255)),
    ("pelv", (255, 0, 255)),
    ("lasis", (192, 192, 0)),
    ("rasis", (0, 128, 128)),
    ("lhip", (64, 192, 255)),
    ("rhip", (255, 128, 0)),
    ("lelb", (255, 64, 192)),
    ("lelbm", (0, 255, 128)),
    ("lwri", (255, 255, 0)),
    ("lhan", (128, 255, 255)),
    ("lthumb", (128, 0, 0)),
    ("lkne", (255, 0, 128)),
    ("lknem", (64, 192, 128)),
    ("lank", (0, 64, 192)),
    ("lhee", (255, 192, 128)),
    ("ltoe", (128, 255, 0)),
    ("relb", (128, 255, 128)),
    ("relbm", (128, 0, 128)),
    ("rwri", (128, 128, 255)),
    ("rhan", (255, 0, 0)),
    ("rthumb", (0, 255, 0)),
    ("rkne", (0, 128, 0)),
    ("rknem", (128, 0, 255)),
    ("rank", (192, 64, 0)),
    ("rhee", (0, 128, 255)),
    ("rtoe", (192, 64, 255)),
)

MARKER_SITES: tuple[str, ...] = tuple(name for name, _ in _PALETTE)
MARKER_COLORS: NDArray[np.uint8] = np.array([rgb for _, rgb in _PALETTE], dtype=np.uint8)  # [J, 3] RGB
MARKER_COLORS.setflags(write=False)

_EDGES: tuple[tuple[str, str], ...] = (
    ("head", "lfronthead"),
    ("head", "rfronthead"),
    ("head", "clavicle"),
    ("clavicle", "thor"),
    ("clavicle", "lsho"),
    ("clavicle", "rsho"),
    ("thor", "pelv"),
    ("pelv", "lhip"),
    ("pelv", "rhip"),
    ("lasis", "rasis"),
    *(
        edge
        for s in "lr"
        for edge in (
            (f"{s}hip", f"{s}asis"),
            (f"{s}sho", f"{s}elb"),
            (f"{s}elb", f"{s}elbm"),
            (f"{s}elb", f"{s}wri"),
            (f"{s}wri", f"{s}han"),
            (f"{s}han", f"{s}thumb"),
            (f"{s}hip", f"{s}kne"),
            (f"{s}kne", f"{s}knem"),
            (f"{s}kne", f"{s}ank"),
            (f"{s}ank", f"{s}hee"),
            (f"{s}ank", f"{s}toe"),
            (f"{s}hee", f"{s}toe"),
        )
    ),
)


def marker_edges() -> list[tuple[int, int]]:
    """Pairs of indices into :data:`MARKER_SITES` for drawing a skeleton."""
    index = {name: i for i, name in enumerate(MARKER_SITES)}
    return [(index[a], index[b]) for a, b in _EDGES]
