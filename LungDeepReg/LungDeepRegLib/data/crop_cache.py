"""The training CTs, cropped to the lungs and resampled to the network grid: made once, and
kept in a crop cache (``.npz``) that trains where SimpleITK cannot be installed.

A GPU machine lent for training has PyTorch but no SimpleITK, and nothing can be installed
there. Reading, lung masking and resampling a CT need SimpleITK; a synthetic pair needs
only the cropped CT, its lung labels, the grid and the distance map that fades the motion
outside the lungs (:func:`.fields.outside_distance`). :func:`save_crops` writes these for
every training CT, where SimpleITK is installed (``lungdeepreg train --export-crops``);
:func:`load_crops` reads them back with numpy alone and nothing unpickled.

What a cache changes: HU are stored rounded to whole HU (int16; the augmentation adds up to
40 HU of noise) and the distance map in steps of ``DISTANCE_STEP_MM`` up to
``MAX_DISTANCE_MM`` (uint8): the motion fades to nothing within 100 mm of the lungs
(``breathing_field``'s ``decay_mm``; the atlas' 40 mm), so the cut changes no field, and
the steps move a field outside the lungs by under 0.25 mm (0.17 mm at most, 0.01 mean, on
the test's pairs, ``Testing/unit/test_crop_cache.py``). Whether a CT may move by the motion
atlas (``data.atlas_exclude``) is decided when the cache is made and stored with it, as the
paths that decide it differ between machines.

Size matters: everything a GPU machine trains from travels with the working tree (64 MiB in
all). The arrays are LZMA-compressed inside the ``.npz`` (``np.load`` reads them as any
``.npz``): the four training CTs at 192x160x192 took 68.6 MB with float16 distances and
``np.savez_compressed``, and take 23.0 MB so (8.2 MB at 128x112x128).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_output
from ..spatial import Grid
from .fields import outside_distance, remember_outside_distance

CACHE_SUFFIX = ".npz"
CACHE_FORMAT = 1
DISTANCE_STEP_MM = 0.5
MAX_DISTANCE_MM = 255 * DISTANCE_STEP_MM


@dataclass(frozen=True)
class CroppedCt:
    """One CT, cropped to the lungs and resampled to the network grid."""

    name: str
    hu: torch.Tensor  # (1, 1, z, y, x) float32 HU
    labels: torch.Tensor  # (1, 1, z, y, x) uint8, 0 / 1 left / 2 right
    grid: Grid
    atlas_excluded: bool = False  # as data.atlas_exclude decided when the cache was made


def is_crop_cache(path: str | Path) -> bool:
    return isinstance(path, (str, Path)) and str(path).endswith(CACHE_SUFFIX)


def crop_ct(source: object, size: tuple[int, int, int], margin_mm: float) -> CroppedCt:
    """Read ``source`` (a CT path, or ``(CT image, lung mask or None)``), find its lungs and
    resample the lung crop to ``size`` (x, y, z) voxels. Needs SimpleITK."""
    # imported here: this module is also imported where there is no SimpleITK
    import SimpleITK as sitk

    from ..io.images import prepare_image, read_image
    from ..preprocess import left_right_lungs, lung_crop_grid, lung_labels, resample_to_grid
    from ..spatial import image_to_tensor

    if isinstance(source, (str, Path)):
        ct, mask, name = read_image(source), None, str(source)
    else:
        (ct, mask), name = source, "image"
        ct = prepare_image(ct, name, "ct")  # float32 HU clipped, as read_image gives
    labels = lung_labels(ct) if mask is None else left_right_lungs(
        sitk.Cast(mask > 0, sitk.sitkUInt8))
    grid = lung_crop_grid(ct, labels, size, margin_mm)
    hu, _ = image_to_tensor(resample_to_grid(ct, grid))
    label_tensor, _ = image_to_tensor(resample_to_grid(labels, grid, "nearest", default=0),
                                      dtype=torch.uint8)
    return CroppedCt(name, hu, label_tensor, grid)


def save_crops(path: str | Path, crops: Sequence[CroppedCt]) -> Path:
    """Write ``crops`` as a crop cache (compressed ``.npz``, written atomically)."""
    path = Path(path)
    if not is_crop_cache(path):
        raise InputError(path, f"a crop cache must end in {CACHE_SUFFIX}")
    arrays: dict[str, np.ndarray] = {
        "format": np.int64(CACHE_FORMAT),
        "names": np.asarray([crop.name for crop in crops]),
        "atlas_excluded": np.asarray([crop.atlas_excluded for crop in crops]),
    }
    for number, crop in enumerate(crops):
        mask = crop.labels[0, 0] > 0
        arrays[f"hu_{number}"] = crop.hu[0, 0].round().cpu().numpy().astype(np.int16)
        arrays[f"labels_{number}"] = crop.labels[0, 0].cpu().numpy().astype(np.uint8)
        distance = np.clip(outside_distance(mask, crop.grid).numpy(), 0.0, MAX_DISTANCE_MM)
        arrays[f"distance_{number}"] = np.round(distance / DISTANCE_STEP_MM).astype(np.uint8)
        arrays[f"grid_{number}"] = np.concatenate([crop.grid.size, crop.grid.spacing,
                                                   crop.grid.origin, crop.grid.direction])
    with atomic_output(path) as temporary:
        _write_npz(temporary, arrays)
    return path


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with LZMA instead of deflate (a third smaller on CT crops)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load_crops(path: str | Path) -> list[CroppedCt]:
    """The crops of a cache written by :func:`save_crops`; their distance maps are
    remembered, so that no pair needs SimpleITK."""
    try:
        with np.load(path, allow_pickle=False) as data:
            found = int(data["format"])
            if found == CACHE_FORMAT:
                return [_crop_from(data, number, name, excluded)
                        for number, (name, excluded) in enumerate(_entries(data))]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(path, f"not a readable crop cache ({error})") from error
    raise InputError(path, f"crop cache format {found}, expected {CACHE_FORMAT}: export it "
                           "again (lungdeepreg train --export-crops)")


def cached_ct_names(path: str | Path) -> list[tuple[str, bool]]:
    """(CT name, atlas excluded) of every crop in the cache, without reading the images."""
    with np.load(path, allow_pickle=False) as data:
        return _entries(data)


def _entries(data: np.lib.npyio.NpzFile) -> list[tuple[str, bool]]:
    return [(str(name), bool(excluded))
            for name, excluded in zip(data["names"], data["atlas_excluded"], strict=True)]


def _crop_from(data: np.lib.npyio.NpzFile, number: int, name: str,
               atlas_excluded: bool) -> CroppedCt:
    values = data[f"grid_{number}"]
    grid = Grid(tuple(int(v) for v in values[:3]), tuple(values[3:6]), tuple(values[6:9]),
                tuple(values[9:18]))
    hu = torch.from_numpy(data[f"hu_{number}"].astype(np.float32))[None, None]
    labels = torch.from_numpy(data[f"labels_{number}"])[None, None]
    distance = torch.from_numpy(data[f"distance_{number}"].astype(np.float32)
                                * DISTANCE_STEP_MM)
    remember_outside_distance(labels[0, 0] > 0, grid, distance)
    return CroppedCt(name, hu, labels, grid, atlas_excluded)
