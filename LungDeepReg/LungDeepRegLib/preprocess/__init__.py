"""Image preprocessing on SimpleITK images: automatic lung masks, crops, intensity scaling."""

from .lung_mask import left_right_lungs, lung_labels, lung_mask

__all__ = ["left_right_lungs", "lung_labels", "lung_mask"]
