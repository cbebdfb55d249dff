"""Image preprocessing on SimpleITK images: automatic lung masks, crops, intensity scaling."""

from .crop import lung_crop_grid, normalize_ct, resample_to_grid
from .lung_mask import left_right_lungs, lung_labels, lung_mask

__all__ = ["left_right_lungs", "lung_crop_grid", "lung_labels", "lung_mask", "normalize_ct",
           "resample_to_grid"]
