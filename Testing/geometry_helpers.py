"""Direction matrices shared by the unit tests (imported as a plain module)."""

from __future__ import annotations

import math

import numpy as np


def rotation(axis: int, degrees: float) -> np.ndarray:
    """Rotation matrix about one of the x, y, z axes."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


ROTATED = rotation(2, 17.0) @ rotation(0, -9.0)
FLIPPED = np.diag([-1.0, 1.0, -1.0]) @ rotation(1, 12.0)
