"""Displacement field files that ITK, SimpleITK and 3D Slicer read as the same mapping.

The engine's field is a tensor ``(1, 3, z, y, x)`` on the FIXED grid, channels = LPS (x, y, z)
components in mm, mapping fixed to moving: ``T(x) = x + u(x)`` (ITK's resampling direction,
Slicer's "transform from parent"). Every format below stores exactly that mapping:

- ``.nrrd``, ``.mha``: a SimpleITK vector image, LPS components. Float32 unless the tensor is
  float64 (float64 is kept); ITK and Slicer read both as a displacement field.
- ``.h5``, ``.hdf5``: an ITK transform file holding a ``DisplacementFieldTransform``
  (float64, the only pixel type that transform accepts).
- ``.nii``, ``.nii.gz``: written with nibabel because SimpleITK cannot: its vector images are
  variable-length vectors, which ITK's NIfTI writer refuses to convert to RAS. The file has
  intent code 1006 (NIFTI_INTENT_DISPVECT), data shape ``(X, Y, Z, 1, 3)``, vectors in RAS
  (x and y negated, as the NIfTI standard requires) and a RAS index-to-world affine in both
  sform and qform (code 1, scanner). ITK >= 5.4 (SimpleITK >= 2.4, Slicer 5.4 and later)
  converts intent-1006 vectors back to LPS on read; older ITK read such files wrongly, so
  :func:`read_field` reads NIfTI with nibabel and converts itself.

Every write is atomic: a partly written file never appears under the target name.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..spatial.convert import field_to_image, image_to_tensor, tensor_to_image
from ..spatial.grid import Grid
from .atomic import atomic_output
from .images import itk_write

IMAGE_SUFFIXES = (".nrrd", ".mha")
TRANSFORM_SUFFIXES = (".h5", ".hdf5")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + TRANSFORM_SUFFIXES + NIFTI_SUFFIXES

NIFTI_INTENT_DISPVECT = 1006  # vectors in the NIfTI world frame (RAS)
NIFTI_INTENT_VECTOR = 1007  # generic vector; what SimpleITK writes, components left as stored
# LPS <-> RAS: negate x and y. The matrix is its own inverse.
_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])


def field_suffix(path: str | Path) -> str:
    """The format suffix of ``path`` (lower case, ``.nii.gz`` as one suffix).

    Raises :class:`InputError` naming the file and the supported suffixes otherwise.
    """
    name = Path(path).name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    hint = " (.tfm text files are impractical for dense fields)" if name.endswith(".tfm") else ""
    raise InputError(path, "unsupported displacement field format; use one of "
                           f"{', '.join(SUPPORTED_SUFFIXES)}{hint}")


def field_transform(field: torch.Tensor, grid: Grid) -> sitk.DisplacementFieldTransform:
    """The field as a SimpleITK ``DisplacementFieldTransform`` (float64, linear interpolation).

    ``TransformPoint(p)`` gives ``p + u(p)`` (trilinear ``u``) inside the grid, the border
    displacement up to half a voxel beyond the outer voxel centres, and ``p`` further out.
    """
    _check_field(field, grid)
    # the constructor takes the image over (it is left empty), so build a fresh one
    return sitk.DisplacementFieldTransform(field_to_image(field, grid))


def write_field(field: torch.Tensor, grid: Grid, path: str | Path,
                transform: sitk.DisplacementFieldTransform | None = None) -> Path:
    """Write a displacement field ``(1, 3, z, y, x)`` (LPS mm, fixed to moving) atomically.

    The format follows the suffix (see the module docstring); returns the path written.
    ``transform``: the field's :func:`field_transform` when the caller has made it already
    (transform files are written from it).
    """
    path = Path(path)
    suffix = field_suffix(path)
    _check_field(field, grid)
    with atomic_output(path) as temporary:
        if suffix in TRANSFORM_SUFFIXES:
            itk_write(path, lambda: sitk.WriteTransform(transform or field_transform(field, grid),
                                                        str(temporary)))
        elif suffix in NIFTI_SUFFIXES:
            _write_nifti(field, grid, temporary)
        else:
            image = tensor_to_image(field, grid, vector=True, pixel_type=_storage_dtype(field))
            # uncompressed: zlib saves under 10 % on float displacements and took 2.4 s
            # of the 60 s budget on a 251x251x141 field
            itk_write(path, lambda: sitk.WriteImage(image, str(temporary), False))
    return path


def read_field(path: str | Path, dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, Grid]:
    """Read a displacement field file as ``(1, 3, z, y, x)`` LPS mm plus its grid.

    Transform files (``.h5``) may hold a composite transform: a lone displacement field is
    unwrapped; a field combined with other transforms is resampled as the whole composite
    mapping on that field's grid. NIfTI intent-1006 vectors are converted from RAS to LPS;
    other NIfTI vector files (intent 1007, as SimpleITK and ANTs write them) are taken as
    ITK reads them: components as stored, i.e. LPS.
    """
    path = Path(path)
    suffix = field_suffix(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if suffix in NIFTI_SUFFIXES:
        field, grid = _read_nifti(path)
        field = field.to(dtype)
    else:
        try:
            if suffix in TRANSFORM_SUFFIXES:
                image = _displacement_image(sitk.ReadTransform(str(path)), path)
            else:
                image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(path, f"cannot be read ({_last_line(error)})") from None
        _check_vector_image(image, path)
        field, grid = image_to_tensor(image, dtype=dtype)
    if not torch.isfinite(field).all():
        raise InputError(path, "contains NaN or infinite displacements")
    return field, grid


# ------------------------------------------------------------------------------ helpers
def _check_field(field: torch.Tensor, grid: Grid) -> None:
    expected = (1, 3, *grid.shape)
    if tuple(field.shape) != expected:
        raise ValueError(f"field must have shape {expected} for this grid, "
                         f"got {tuple(field.shape)}")
    if not torch.isfinite(field).all():
        raise ValueError("field contains NaN or infinite displacements")


def _storage_dtype(field: torch.Tensor) -> type:
    # float32 is ample for mm displacements and halves the file; keep float64 if given
    return np.float64 if field.dtype == torch.float64 else np.float32


def _check_vector_image(image: sitk.Image, path: Path) -> None:
    if image.GetDimension() != 3:
        raise InputError(path, f"is {image.GetDimension()}-D; a 3-D displacement field "
                               "is needed")
    components = image.GetNumberOfComponentsPerPixel()
    if components != 3:
        raise InputError(path, f"has {components} component(s) per voxel; a displacement "
                               "field needs 3")


def _displacement_image(transform: sitk.Transform, path: Path) -> sitk.Image:
    """The displacement field image of a (possibly composite) transform read from ``path``."""
    transform = transform.Downcast()
    parts = list(_flatten(transform))
    fields = [part for part in parts if isinstance(part, sitk.DisplacementFieldTransform)]
    if not fields:
        names = ", ".join(part.GetName() for part in parts)
        raise InputError(path, f"holds no displacement field transform (found: {names})")
    if len(parts) == 1:
        return fields[0].GetDisplacementField()
    # the mapping of the whole composite, sampled where the dense part is defined
    reference = fields[0].GetDisplacementField()
    return sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, reference.GetSize(), reference.GetOrigin(),
        reference.GetSpacing(), reference.GetDirection())


def _flatten(transform: sitk.Transform):
    """Leaf transforms of nested composites (order irrelevant: only used to find fields)."""
    if isinstance(transform, sitk.CompositeTransform):
        for index in range(transform.GetNumberOfTransforms()):
            yield from _flatten(transform.GetNthTransform(index).Downcast())
    else:
        yield transform


def _write_nifti(field: torch.Tensor, grid: Grid, path: Path) -> None:
    dtype = _storage_dtype(field)
    array = field[0].detach().cpu().numpy().astype(dtype)  # (3, z, y, x), LPS
    vectors = np.moveaxis(array, 0, -1).transpose(2, 1, 0, 3)  # (x, y, z, 3): i fastest
    vectors = vectors * np.array([-1.0, -1.0, 1.0], dtype=dtype)  # LPS -> RAS components
    affine = _FLIP_XY @ grid.affine  # index -> RAS
    image = nib.Nifti1Image(np.ascontiguousarray(vectors[:, :, :, None, :]), affine)
    image.header.set_intent(NIFTI_INTENT_DISPVECT)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))


def _read_nifti(path: Path) -> tuple[torch.Tensor, Grid]:
    try:
        image = nib.load(str(path))
        shape = image.shape
        if len(shape) != 5 or shape[3] != 1 or shape[4] != 3:
            raise InputError(path, f"has data shape {shape}; a NIfTI displacement field is "
                                   "(X, Y, Z, 1, 3)")
        vectors = np.asarray(image.dataobj, dtype=np.float64)[:, :, :, 0, :]  # (x, y, z, 3)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as error:
        raise InputError(path, f"cannot be read as NIfTI ({error})") from None
    if int(image.header["intent_code"]) == NIFTI_INTENT_DISPVECT:
        vectors = vectors * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS components
    grid = Grid.from_affine(tuple(shape[:3]), _FLIP_XY @ image.affine)
    array = np.ascontiguousarray(vectors.transpose(3, 2, 1, 0))  # (3, z, y, x)
    return torch.from_numpy(array)[None], grid


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines or ["unknown error"])[-1][:200]
