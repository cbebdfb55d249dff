"""Reading and writing 3-D images with their geometry (SimpleITK).

Supported inputs: anything SimpleITK reads as one file (NIfTI, NRRD, MHA/MHD, ...), a
folder holding one DICOM series, and headerless DIR-Lab/COPDgene ``.img`` volumes given
their size and spacing. Every reader validates the image and names the file in the error.
"""

from __future__ import annotations

import errno
import gzip
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..spatial.convert import as_float32
from ..spatial.grid import Grid
from .atomic import atomic_output

HU_MIN, HU_MAX = -1024.0, 3071.0
ImageKind = Literal["ct", "label", "any"]
T = TypeVar("T")
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 1024  # enough for a NIfTI-2 header (540 bytes)
_CHUNK = 1 << 22
LOW_SPACE_BYTES = 256 * 2**20  # a failed write with less free than this: the disk is full
# "sitk::ERROR: ", "ITK ERROR: NrrdImageIO(0x55...): ", "/path/file.cxx:99:" carry no cause
_ITK_PREFIX = re.compile(r"^(sitk::ERROR:\s*|ITK ERROR:\s*\w+\(0x[0-9a-f]+\):\s*|\S+\.cxx:\d+:\s*)",
                         re.IGNORECASE)


def read_image(path: str | Path, kind: ImageKind = "ct") -> sitk.Image:
    """Read and validate a 3-D image from a file or a DICOM series folder.

    ``kind="ct"`` returns float32 HU clipped to [-1024, 3071]; ``kind="label"`` an
    unsigned integer label map; ``kind="any"`` the image as stored (still validated).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        image = _itk_call(path, lambda: _read_dicom_series(path))
    else:
        image = _read_checked_file(path)
    return prepare_image(image, path, kind)


def _read_checked_file(path: Path) -> sitk.Image:
    """ITK's read beside :func:`check_stored_data`, in two threads: both spend their time
    inflating gzip, which runs outside the GIL (0.8 s instead of 1.25 s for a compressed
    512x512x141 float CT on two cores). The check's message wins: it says more."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        check = pool.submit(check_stored_data, path)
        try:
            image = _itk_call(path, lambda: sitk.ReadImage(str(path)))
        except InputError:
            check.result()
            raise
        check.result()
    return image


def read_information(path: str | Path) -> sitk.ImageFileReader:
    """The header of an image file (size, spacing, pixel type), without its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _itk_call(path, reader.ReadImageInformation)
    return reader


def check_stored_data(path: str | Path) -> None:
    """Refuse a file that holds less voxel data than its header declares, or a damaged
    compressed stream.

    ITK reads a truncated NIfTI file (plain or gzip) without complaint and fills the missing
    slices with zeros, so this is checked here: a gzip stream is decompressed once (about
    0.3 s for a 512x512x141 CT; Python's gzip reports a cut or corrupt stream), and the
    voxel bytes of NIfTI and MetaImage files are compared with the header's size.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(path, "is empty (0 bytes)")
    reader = read_information(path)
    stored = _stored_voxel_bytes(path)
    needed = (int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
              * _bytes_per_value(reader.GetPixelID()))
    if stored is not None and stored < needed:
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        raise InputError(path, f"is truncated: it holds {stored} bytes of voxel data, but its "
                               f"header's size {reader.GetSize()} of {pixel} needs {needed}")


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
        image = sitk.Clamp(as_float32(image), sitk.sitkFloat32, HU_MIN, HU_MAX)
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
        itk_write(path, lambda: sitk.WriteImage(image, str(temporary), compress))
    return path


def itk_write(path: str | Path, call: Callable[[], None]) -> None:
    """Run an ITK writer for ``path``; its failure becomes an :class:`OSError` naming
    ``path`` (ITK raises a ``RuntimeError`` whose text names its own source files: a full
    disk read "H5Dwrite failed"). With little space left on the device that is the cause."""
    try:
        call()
    except RuntimeError as error:
        free = shutil.disk_usage(Path(path).parent).free
        if free < LOW_SPACE_BYTES:
            raise OSError(errno.ENOSPC, f"cannot be written: no space left on the device "
                                        f"({free // 2**20} MB free)", str(path)) from None
        raise OSError(errno.EIO, f"cannot be written ({reader_cause(error)})",
                      str(path)) from None


def _itk_call(path: str | Path, call: Callable[[], T]) -> T:
    try:
        return call()
    except RuntimeError as error:
        raise InputError(path, f"cannot be read as an image ({reader_cause(error)})") from None


def reader_cause(error: Exception) -> str:
    """The reader's own explanation from an ITK exception: the last line of the message
    without ITK's location and class prefixes (those carry no information for a user)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [_ITK_PREFIX.sub("", line) for line in lines
             if not line.startswith("Exception thrown in SimpleITK")]
    lines = [line for line in lines if line]
    return (lines or ["unknown error"])[-1][:200]


def _bytes_per_value(pixel_id: int) -> int:
    image = sitk.Image([1, 1, 1], pixel_id)
    return int(sitk.GetArrayViewFromImage(image).dtype.itemsize)


def _stored_voxel_bytes(path: Path) -> int | None:
    """Bytes of voxel data the file holds, for the formats checked here (else None)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        head, length = _content(path)
        offset = _nifti_data_offset(head)
        return None if offset is None else length - offset
    if name.endswith((".mha", ".mhd")):
        return _meta_voxel_bytes(path)
    if _is_gzip(path):
        _content(path)  # any other gzip file: the stream itself is checked
    return None


def _is_gzip(path: Path, offset: int = 0) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(2) == _GZIP_MAGIC


def _content(path: Path, offset: int = 0, compression: str | None = None
             ) -> tuple[bytes, int]:
    """The first bytes and the length of the content from ``offset`` on: decompressed when
    it is gzip (or ``compression="zlib"``), which also checks the stream is complete."""
    compression = compression or ("gzip" if _is_gzip(path, offset) else None)
    if compression is None:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(_HEAD_BYTES), path.stat().st_size - offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        try:
            return _inflate(handle, compression)
        except EOFError:
            raise InputError(path, f"is truncated: its {compression} stream ends before its "
                                   "end marker (the file was cut short)") from None
        except (OSError, zlib.error) as error:
            raise InputError(path, f"is corrupt: {compression} reports {error}") from None


def _inflate(handle: BinaryIO, compression: str) -> tuple[bytes, int]:
    head, length = b"", 0
    if compression == "gzip":
        with gzip.GzipFile(fileobj=handle) as stream:
            while chunk := stream.read(_CHUNK):
                head, length = head or chunk[:_HEAD_BYTES], length + len(chunk)
        return head, length
    inflater = zlib.decompressobj()
    while data := handle.read(_CHUNK):
        chunk = inflater.decompress(data)
        head, length = head or chunk[:_HEAD_BYTES], length + len(chunk)
        if inflater.eof:
            break
    if not inflater.eof:
        raise EOFError
    return head, length


def _nifti_data_offset(head: bytes) -> int | None:
    """``vox_offset`` of a NIfTI-1 or NIfTI-2 header (either byte order), else None."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            return int(struct.unpack(order + "f", head[108:112])[0])
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            return int(struct.unpack(order + "q", head[168:176])[0])
    return None


def _meta_voxel_bytes(path: Path) -> int | None:
    """Voxel bytes of a MetaImage with one data file (``LOCAL`` or a named file)."""
    fields, header_bytes = {}, 0
    with open(path, "rb") as handle:
        for line in handle:
            header_bytes += len(line)
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile" or header_bytes > 1 << 16:
                break
    data_file = fields.get("elementdatafile", "")
    if not data_file or " " in data_file or "%" in data_file or "headersize" in fields:
        return None  # file lists, patterns and skipped headers are left to ITK
    if data_file.upper() == "LOCAL":
        data, offset = path, header_bytes
    else:
        data, offset = path.parent / data_file, 0
        if not data.is_file():
            raise InputError(path, f"its data file {data_file} is missing")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    return _content(data, offset, "zlib" if compressed else None)[1]
