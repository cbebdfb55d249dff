"""Real training pairs listed in a manifest (CSV or JSON), for unsupervised training.

Columns (CSV header) or keys (JSON list of objects, or ``{"pairs": [...]}``); paths are
relative to the manifest's folder:

    fixed, moving                  required: CT images (any format the engine reads)
    fixed_mask, moving_mask        optional lung masks (computed automatically when absent)
    fixed_lobes, moving_lobes      optional lobe label maps (1..5, engine convention)
    fixed_keypoints, moving_keypoints, keypoint_format   optional corresponding points

Pairs are expected to be roughly aligned already (same patient, same scanner frame, as
inhale/exhale scans are); the fixed image's lung box defines the crop of both. The last
``validation`` pairs are held out for validation.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import SimpleITK as sitk
import torch

from ..errors import InputError
from ..io.images import read_image
from ..io.landmarks import read_landmark_pair
from ..preprocess import lung_labels
from ..preprocess.crop import lung_crop_grid, normalize_ct, resample_to_grid
from ..spatial import Grid, image_to_tensor

REQUIRED = ("fixed", "moving")
OPTIONAL = ("fixed_mask", "moving_mask", "fixed_lobes", "moving_lobes", "fixed_keypoints",
            "moving_keypoints", "keypoint_format")


@dataclass
class ManifestPair:
    """A real pair on the network grid (batch dimension 1), no known field."""

    fixed: torch.Tensor
    moving: torch.Tensor
    grid: Grid
    fixed_mask: torch.Tensor
    fixed_labels: torch.Tensor | None = None
    moving_labels: torch.Tensor | None = None
    fixed_points: torch.Tensor | None = None  # (P, 3) LPS mm
    moving_points: torch.Tensor | None = None


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV or JSON manifest with paths made absolute; errors name the row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["pairs"] if isinstance(data, dict) else data
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(path, "manifest lists no pairs")
    return [_resolve_row(row, number, path) for number, row in enumerate(rows, start=1)]


def _resolve_row(row: dict, number: int, manifest: Path) -> dict[str, str]:
    missing = [key for key in REQUIRED if not row.get(key)]
    if missing:
        raise InputError(manifest, f"pair {number} lacks {', '.join(missing)}")
    resolved = {}
    for key, value in row.items():
        if not value or key not in REQUIRED + OPTIONAL:
            continue
        is_path = key != "keypoint_format"
        resolved[key] = str(manifest.parent / value) if is_path else value
    return resolved


class ManifestPairSource:
    """Loads pairs lazily and keeps the preprocessed tensors of recent ones in memory."""

    def __init__(self, path: str | Path, size: tuple[int, int, int],
                 rows: list[dict[str, str]] | None = None, cache: int = 16) -> None:
        self.path, self.size = Path(path), tuple(size)
        self.rows = rows if rows is not None else read_manifest(path)
        self._load = lru_cache(maxsize=cache)(self._load_uncached)

    def training_split(self, validation: int = 0) -> ManifestPairSource:
        keep = self.rows[:-validation] if 0 < validation < len(self.rows) else self.rows
        return ManifestPairSource(self.path, self.size, keep)

    def validation_split(self, validation: int) -> ManifestPairSource:
        count = min(max(1, validation), len(self.rows))
        return ManifestPairSource(self.path, self.size, self.rows[-count:])

    def pair(self, index: int) -> ManifestPair:
        return self._load(index % len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def _load_uncached(self, position: int) -> ManifestPair:
        row = self.rows[position]
        fixed_ct, moving_ct = read_image(row["fixed"]), read_image(row["moving"])
        mask = (read_image(row["fixed_mask"], kind="label") if "fixed_mask" in row
                else lung_labels(fixed_ct))
        grid = lung_crop_grid(fixed_ct, mask, size=self.size)
        pair = ManifestPair(
            fixed=normalize_ct(_on_grid(fixed_ct, grid)),
            moving=normalize_ct(_on_grid(moving_ct, grid)),
            grid=grid,
            fixed_mask=(_on_grid(mask, grid, "nearest", 0) > 0).float(),
        )
        if "fixed_lobes" in row and "moving_lobes" in row:
            pair.fixed_labels = _on_grid(read_image(row["fixed_lobes"], kind="label"), grid,
                                         "nearest", 0)
            pair.moving_labels = _on_grid(read_image(row["moving_lobes"], kind="label"), grid,
                                          "nearest", 0)
        if "fixed_keypoints" in row and "moving_keypoints" in row:
            fixed_points, moving_points = read_landmark_pair(
                row["fixed_keypoints"], row["moving_keypoints"], row.get("keypoint_format"),
                row.get("keypoint_format"), Grid.from_image(fixed_ct),
                Grid.from_image(moving_ct))
            pair.fixed_points = torch.as_tensor(fixed_points, dtype=torch.float32)
            pair.moving_points = torch.as_tensor(moving_points, dtype=torch.float32)
        return pair


def _on_grid(image: sitk.Image, grid: Grid, interpolation: str = "linear",
             default: float = -1024.0) -> torch.Tensor:
    return image_to_tensor(resample_to_grid(image, grid, interpolation, default))[0]
