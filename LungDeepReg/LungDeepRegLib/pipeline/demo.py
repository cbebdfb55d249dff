"""The demo: a realistic synthetic breathing pair from the bundled POPI sample, registered.

The fixed image is the sample itself (end inhale). The moving image is an exhale made from
it with a known breathing field (25 mm cranio-caudal at the diaphragm, plus the density
change of compressed lung). 100 lung landmarks move with the known field, so the report's
TRE is measured against the truth.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
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


def build_demo_pair(folder: Path, seed: int = DEMO_SEED, motion_mm: float = 25.0
                    ) -> RegistrationInputs:
    """Write ``fixed.nii.gz``, ``moving.nii.gz`` and landmark CSVs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = read_image(sample_path())
    labels = lung_labels(ct)
    grid = Grid.from_image(ct)
    hu, _ = image_to_tensor(ct)
    lung, _ = image_to_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    pair = make_pair(hu, lung, grid, generator, kind="breathing",
                     max_cc_mm=(motion_mm, motion_mm))
    moving = tensor_to_image(pair.moving * 4095.0 - 1024.0, grid)
    write_image(ct, folder / "fixed.nii.gz")
    write_image(moving, folder / "moving.nii.gz")
    fixed_points = _lung_points(lung[0, 0] > 0, grid, seed)
    moving_points = map_points(fixed_points, pair.field, grid)
    write_csv(folder / "fixed_landmarks.csv", fixed_points)
    write_csv(folder / "moving_landmarks.csv", moving_points)
    return RegistrationInputs(
        fixed=folder / "fixed.nii.gz", moving=folder / "moving.nii.gz",
        fixed_landmarks=folder / "fixed_landmarks.csv",
        moving_landmarks=folder / "moving_landmarks.csv", landmark_format="csv")


def _lung_points(mask: torch.Tensor, grid: Grid, seed: int) -> np.ndarray:
    index = torch.nonzero(mask).numpy()[:, ::-1].astype(float)  # (x, y, z)
    chosen = np.random.default_rng(seed).choice(len(index), size=LANDMARKS, replace=False)
    return grid.index_to_physical(index[chosen])
