"""A real CT cropped to its lungs on a small grid, shared by the synthetic-data tests."""

from __future__ import annotations

import SimpleITK as sitk
import torch

from LungDeepRegLib.preprocess import lung_crop_grid, lung_labels, resample_to_grid
from LungDeepRegLib.spatial import Grid, image_to_tensor


def lung_crop_case(ct: sitk.Image, size: tuple[int, int, int]
                   ) -> tuple[torch.Tensor, torch.Tensor, Grid]:
    """(HU tensor, left/right lung label tensor, grid) of ``ct`` cropped to its lungs."""
    labels = lung_labels(ct)
    grid = lung_crop_grid(ct, labels, size)
    hu, _ = image_to_tensor(resample_to_grid(ct, grid))
    lab, _ = image_to_tensor(resample_to_grid(labels, grid, "nearest", default=0),
                             dtype=torch.uint8)
    return hu, lab, grid
