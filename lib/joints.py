"""The 21 hand joints in competition (RHD) order: names, skeleton, colours, order conversions.

Order: 0 wrist; 1-4 thumb tip->MCP; 5-8 index; 9-12 middle; 13-16 ring; 17-20 little.
MediaPipe / FreiHAND / OneHand10K use wrist then each finger base->tip.
"""
from __future__ import annotations

import numpy as np

NUM_JOINTS = 21
FINGERS = ("thumb", "index", "middle", "ring", "little")
# per finger, from the tip towards the palm
SEGMENTS = ("tip", "dip", "pip", "mcp")

NAMES: tuple[str, ...] = ("wrist",) + tuple(
f"{finger}_{seg}" for finger in FINGERS for seg in SEGMENTS)

# joint index -> finger index (-1 for the wrist)
FINGER_OF = np.array([-1] + [f for f in range(5) for _ in range(4)], dtype=np.int64)
TIPS = np.array([1, 5, 9, 13, 17])
BASES = np.array([4, 8, 12, 16, 20])

# (parent, child) bones, palm to tip
EDGES: tuple[tuple[int, int], ...] = tuple(
    e
    for f in range(5)
    for e in [(0, 4 * f + 4), (4 * f + 4, 4 * f + 3), (4 * f + 3, 4 * f + 2), (4 * f + 2, 4 * f + 1)]
)
PARENT = np.full(NUM_JOINTS, -1, dtype=np.int64)
for _p, _c in EDGES:
    PARENT[_c] = _p

# one colour per finger (RGB 0..255); the wrist is white
FINGER_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 60, 60),    # thumb: red
    (240, 170, 30),   # index: orange
    (60, 190, 75),    # middle: green
    (40, 130, 230),   # ring: blue
    (170, 80, 220),   # little: purple
)
WRIST_COLOR = (255, 255, 255)
JOINT_COLORS: tuple[tuple[int, int, int], ...] = (WRIST_COLOR,) + tuple(
    FINGER_COLORS[f] for f in range(5) for _ in range(4)
)

# ours[i] = theirs[FROM_BASE_TIP[i]]  (theirs: wrist, then each finger base->tip)
FROM_BASE_TIP = np.array([0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17])
# the permutation is its own inverse
TO_BASE_TIP = np.argsort(FROM_BASE_TIP)


def from_base_tip(points: np.ndarray) -> np.ndarray:
    """Reorder (..., 21, D) joints from base->tip (MediaPipe/FreiHAND) order to ours (RHD)."""
    _check(points)
    return points[..., FROM_BASE_TIP, :]


def to_base_tip(points: np.ndarray) -> np.ndarray:
    """Reorder (..., 21, D) joints from our (RHD) order to base->tip (MediaPipe/FreiHAND) order."""
    _check(points)
    return points[..., TO_BASE_TIP, :]


def _check(points: np.ndarray) -> None:
    if points.ndim < 2 or points.shape[-2] != NUM_JOINTS:
        raise ValueError(f"expected joints of shape (..., 21, D), found {points.shape}")
