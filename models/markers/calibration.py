"""Calibration constants of the markers backbone, measured on synthetic H.264 videos rendered for the purpose.

``RADIUS_BIAS_PX``: frame px added to each palette colour's measured disc radius. Decoded H.264 (yuv420p) loses part
of a disc's rim, more for colours whose contrast with the grey background is mostly chroma (half resolution, coarser
quantisation), and a disc that overlaps another one in front of it keeps a mixed rim. Measured as the median of
(true - estimated radius) over discs whose centre and whole area are uncovered and whose confidence is > 0.5, in two
calibration cohorts from :func:`mocapflow.synth.cohort.generate_cohort` (seed 1000: 8 plain videos; seed 1001: 8
textured videos with noise sigma 4 and 3 with a second person; 2 s each, every second frame; ~9300 discs), with the
estimator's default settings. Never fitted on the videos the tests evaluate (other seeds).

``DEFAULT_RADIUS_BIAS_PX``: for a colour not in the table (measured on isolated discs of every colour, 20 frames of
48 discs of radius 2.5-9 px on plain and textured grey).
"""

from __future__ import annotations

DEFAULT_RADIUS_BIAS_PX = 0.055

RADIUS_BIAS_PX: dict[tuple[int, int, int], float] = {
    (0, 255, 255): 0.034,
    (128, 128, 0): 0.098,
    (0, 0, 255): 0.035,
    (192, 128, 192): 0.017,
    (192, 192, 255): 0.010,
    (0, 0, 128): -0.012,
    (255, 255, 255): 0.011,
    (255, 0, 255): 0.012,
    (192, 192, 0): 0.121,
    (0, 128, 128): 0.029,
    (64, 192, 255): 0.036,
    (255, 128, 0): 0.042,
    (255, 64, 192): 0.037,
    (0, 255, 128): 0.064,
    (255, 255, 0): 0.048,
    (128, 255, 255): 0.085,
    (128, 0, 0): 0.045,
    (255, 0, 128): 0.026,
    (64, 192, 128): 0.035,
    (0, 64, 192): 0.026,
    (255, 192, 128): 0.017,
    (128, 255, 0): 0.052,
    (128, 255, 128): 0.026,
    (128, 0, 128): 0.031,
    (128, 128, 255): 0.026,
    (255, 0, 0): 0.057,
    (0, 255, 0): 0.116,
    (0, 128, 0): 0.120,
    (128, 0, 255): 0.154,
    (192, 64, 0): 0.026,
    (0, 128, 255): 0.048,
    (192, 64, 255): 0.001,
}
