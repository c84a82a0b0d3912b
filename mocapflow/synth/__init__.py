"""Synthetic cohort generator: marker-disc videos of varied subjects and motions, with exact ground truth."""

from mocapflow.synth.cohort import CORRUPT_KINDS, CohortEntry, CohortSpec, generate_cohort, write_manifest
from mocapflow.synth.groundtruth import GroundTruth, GroundTruthError, read_ground_truth
from mocapflow.synth.motions import MOTIONS
from mocapflow.synth.palette import DISC_RADIUS_M, MARKER_COLORS, MARKER_SITES, marker_edges

__all__ = [
    "CORRUPT_KINDS",
    "DISC_RADIUS_M",
    "MARKER_COLORS",
    "MARKER_SITES",
    "MOTIONS",
    "CohortEntry",
    "CohortSpec",
    "GroundTruth",
    "GroundTruthError",
    "generate_cohort",
    "marker_edges",
    "read_ground_truth",
    "write_manifest",
]
