"""The demo: a realistic synthetic breathing pair from the bundled POPI sample, registered.

The fixed image is the sample itself (end inhale). The moving image is an exhale made from
it with a known breathing field (25 mm cranio-caudal at the diaphragm, plus the density
change of compressed lung). 100 lung landmarks move with the known field, so the report's
TRE is measured against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..data.pairs import make_pair
from ..io.images import read_image, write_image
from ..io.landmarks import write_csv
from ..metrics.landmarks import map_points
from ..preprocess import lung_labels
from ..spatial import Grid, image_to_tensor, tensor_to_image
from .register import RegistrationInputs

SAMPLE = "popi_thorax_2mm.nii.gz"
DEMO_SEED = 2024
LANDMARKS = 100


def sample_path() -> Path:
    return Path(str(resources.files("LungDeepRegLib").joinpath("samples", SAMPLE)))


@dataclass
class BreathingPair:
    """A CT (fixed, inhale) and its synthetic exhale with the known breathing field."""

    fixed: sitk.Image
    moving: sitk.Image
    field: torch.Tensor  # (1, 3, z, y, x) LPS mm on ``grid``, fixed to moving
    grid: Grid  # the fixed image's grid
    lung: torch.Tensor  # (z, y, x) bool, the automatic lung mask of the fixed image


def breathing_pair(ct: sitk.Image, seed: int, max_cc_mm: tuple[float, float] = (25.0, 25.0)
                   ) -> BreathingPair:
    """A realistic breathing pair on ``ct``'s own grid (the demo's and the benchmark's)."""
    grid = Grid.from_image(ct)
    hu, _ = image_to_tensor(ct)
    lung, _ = image_to_tensor(lung_labels(ct))
    generator = torch.Generator().manual_seed(seed)
    pair = make_pair(hu, lung, grid, generator, kind="breathing", max_cc_mm=max_cc_mm)
    moving = tensor_to_image(pair.moving * 4095.0 - 1024.0, grid)
    return BreathingPair(ct, moving, pair.field, grid, lung[0, 0] > 0)


def build_demo_pair(folder: Path, seed: int = DEMO_SEED, motion_mm: float = 25.0
                    ) -> RegistrationInputs:
    """Write ``fixed.nii.gz``, ``moving.nii.gz`` and landmark CSVs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = breathing_pair(read_image(sample_path()), seed, (motion_mm, motion_mm))
    write_image(pair.fixed, folder / "fixed.nii.gz")
    write_image(pair.moving, folder / "moving.nii.gz")
    fixed_points = lung_points(pair.lung, pair.grid, seed, LANDMARKS)
    moving_points = map_points(fixed_points, pair.field, pair.grid)
    write_csv(folder / "fixed_landmarks.csv", fixed_points)
    write_csv(folder / "moving_landmarks.csv", moving_points)
    return RegistrationInputs(
        fixed=folder / "fixed.nii.gz", moving=folder / "moving.nii.gz",
        fixed_landmarks=folder / "fixed_landmarks.csv",
        moving_landmarks=folder / "moving_landmarks.csv", landmark_format="csv")


def lung_points(mask: torch.Tensor, grid: Grid, seed: int, count: int) -> np.ndarray:
    """``count`` distinct lung voxel centres (LPS mm), drawn reproducibly from ``seed``."""
    index = torch.nonzero(mask).numpy()[:, ::-1].astype(float)  # (x, y, z)
    chosen = np.random.default_rng(seed).choice(len(index), size=count, replace=False)
    return grid.index_to_physical(index[chosen])
