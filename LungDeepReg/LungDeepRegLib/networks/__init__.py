"""Registration networks: the per-level U-Net and the multilevel network of Hering et al.

Imports ``spatial`` only; losses and training live elsewhere.
"""

from .multilevel import LevelOutput, MultilevelNet, MultilevelOutput
from .pyramid import downsample, gaussian_smooth, image_pyramid, level_grid, level_size
from .unet import UNet, mm_to_voxels, voxels_to_mm

__all__ = [
    "LevelOutput", "MultilevelNet", "MultilevelOutput", "UNet", "downsample",
    "gaussian_smooth", "image_pyramid", "level_grid", "level_size", "mm_to_voxels",
    "voxels_to_mm",
]
