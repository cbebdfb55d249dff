"""One benchmark case: a fixed/moving pair with what it is judged on, or why it is missing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from ..metrics.landmarks import TREProtocol
from ..spatial import Grid


@dataclass
class KnownField:
    """The true fixed-to-moving displacement (synthetic cases): (1, 3, z, y, x) LPS mm."""

    field: torch.Tensor
    grid: Grid


@dataclass
class BenchCase:
    """A pair to register and its ground truth.

    Images are in memory (a DIR-Lab ``.img`` has no header, so the reader attaches the
    geometry); the runner writes them to the case's work folder before running methods.
    Landmarks are (N, 3) LPS mm, row k of ``fixed_points`` paired with row k of
    ``moving_points``.
    """

    name: str
    fixed: sitk.Image
    moving: sitk.Image
    fixed_points: np.ndarray | None = None
    moving_points: np.ndarray | None = None
    fixed_lungs: sitk.Image | None = None  # 0 background, >0 lung (default: automatic)
    fixed_lobes: sitk.Image | None = None
    moving_lobes: sitk.Image | None = None
    known_field: KnownField | None = None
    protocol: TREProtocol = field(default_factory=TREProtocol)
    group: str = ""  # e.g. "unseen CT" / "training CT" for synthetic suites
    sources: dict[str, str] = field(default_factory=dict)  # file each part was read from


@dataclass
class CaseError:
    """A case that could not be assembled; reported in the results, the others still run."""

    name: str
    source: str  # the file or folder at fault
    problem: str

    def __str__(self) -> str:
        return f"{self.name}: {self.source}: {self.problem}"


def lps_points(points: np.ndarray | None) -> np.ndarray | None:
    """Landmarks as float64 (N, 3) or None."""
    return None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)

