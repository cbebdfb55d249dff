"""Image preprocessing on SimpleITK images: automatic lung masks, crops, intensity scaling."""

from .body import body_air_region
from .crop import lung_crop_grid, normalize_ct, resample_to_grid
from .hu import hu_image, storage_offset
from .lung_mask import left_right_lungs, lung_labels, lung_mask
from .voxels import lung_volume_ml

__all__ = ["body_air_region", "hu_image", "left_right_lungs", "lung_crop_grid", "lung_labels",
           "lung_mask", "lung_volume_ml", "normalize_ct", "resample_to_grid",
           "storage_offset"]
