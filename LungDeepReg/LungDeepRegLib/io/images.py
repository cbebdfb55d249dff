"""Reading and writing 3-D images with their geometry (SimpleITK).

Supported inputs: anything SimpleITK reads as one file (NIfTI, NRRD, MHA/MHD, ...), a
folder holding one DICOM series, and headerless DIR-Lab/COPDgene ``.img`` volumes given
their size and spacing. Every reader validates the image and names the file in the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..spatial.grid import Grid
from .atomic import atomic_output

HU_MIN, HU_MAX = -1024.0, 3071.0
ImageKind = Literal["ct", "label", "any"]


def read_image(path: str | Path, kind: ImageKind = "ct") -> sitk.Image:
    """Read and validate a 3-D image from a file or a DICOM series folder.

    ``kind="ct"`` returns float32 HU clipped to [-1024, 3071]; ``kind="label"`` an
    unsigned integer label map; ``kind="any"`` the image as stored (still validated).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(path, f"cannot be read as an image ({_first_line(error)})") from None
    return prepare_image(image, path, kind)


def read_raw_image(path: str | Path, size: tuple[int, int, int],
                   spacing: tuple[float, float, float], dtype: str = "<i2",
                   intensity_offset: float = -1024.0, kind: ImageKind = "ct") -> sitk.Image:
    """Read a headerless volume (DIR-Lab/COPDgene ``.img``: x fastest, no header).

    The community convention is used: identity direction and zero origin, so that a
    1-based landmark index ``i`` sits at ``(i - 1) * spacing``. ``intensity_offset`` is added
    to the stored values (DIR-Lab stores HU + 1024).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    expected = int(np.prod(size)) * np.dtype(dtype).itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise InputError(path, f"file size {actual} bytes does not match the geometry "
                               f"{tuple(size)} of {np.dtype(dtype).name} ({expected} bytes)")
    array = np.fromfile(path, dtype=dtype).reshape(size[2], size[1], size[0])
    image = sitk.GetImageFromArray(array.astype(np.float32) + np.float32(intensity_offset))
    Grid(size, spacing).apply_to(image)
    return prepare_image(image, path, kind)


def prepare_image(image: sitk.Image, source: str | Path, kind: ImageKind = "ct") -> sitk.Image:
    """Validate a 3-D scalar image and convert it for ``kind`` (see :func:`read_image`)."""
    check_volume(image, source)
    if kind == "ct":
        image = sitk.Cast(image, sitk.sitkFloat32)
        image = sitk.Clamp(image, sitk.sitkFloat32, HU_MIN, HU_MAX)
    elif kind == "label":
        image = _as_label_map(image, source)
    return image


def check_volume(image: sitk.Image, source: str | Path) -> None:
    """Raise :class:`InputError` unless ``image`` is a finite 3-D scalar volume."""
    dimension = image.GetDimension()
    if dimension != 3:
        raise InputError(source, f"is a {dimension}-D image of size {image.GetSize()}; "
                                 "a 3-D volume is needed")
    if min(image.GetSize()) < 2:
        raise InputError(source, f"is a single slice (size {image.GetSize()}); "
                                 "a 3-D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(source, f"has {image.GetNumberOfComponentsPerPixel()} components "
                                 "per voxel; a scalar image is needed")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(source, f"contains {bad} NaN or infinite voxel values")


def _as_label_map(image: sitk.Image, source: str | Path) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(image)
    if np.any(array < 0) or np.any(array != np.round(array)):
        raise InputError(source, "is not a label map (negative or non-integer values)")
    pixel = sitk.sitkUInt8 if float(array.max(initial=0)) < 256 else sitk.sitkUInt16
    return sitk.Cast(image, pixel)


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(folder, "folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(folder, f"folder holds {len(series)} DICOM series; point to one")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write atomically (temporary name, then rename); returns the path written."""
    path = Path(path)
    with atomic_output(path) as temporary:
        sitk.WriteImage(image, str(temporary), compress)
    return path


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("ITK ERROR", "sitk::ERROR"))]
    return (useful or lines or ["unknown error"])[-1][:200]
