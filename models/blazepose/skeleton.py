"""The 33 BlazePose landmarks (MediaPipe's pose landmark topology) and the usual skeleton edges."""

from __future__ import annotations

JOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)

JOINT_EDGES: tuple[tuple[int, int], ...] = (
    # face
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 7),
    (0, 4),
    (4, 5),
    (5, 6),
    (6, 8),
    (9, 10),
    # torso
    (11, 12),
    (11, 23),
    (12, 24),
    (23, 24),
    # left arm and hand
    (11, 13),
    (13, 15),
    (15, 17),
    (15, 19),
    (15, 21),
    (17, 19),
    # right arm and hand
    (12, 14),
    (14, 16),
    (16, 18),
    (16, 20),
    (16, 22),
    (18, 20),
    # left leg and foot
    (23, 25),
    (25, 27),
    (27, 29),
    (29, 31),
    (27, 31),
    # right leg and foot
    (24, 26),
    (26, 28),
    (28, 30),
    (30, 32),
    (28, 32),
)

N_JOINTS = len(JOINT_NAMES)
