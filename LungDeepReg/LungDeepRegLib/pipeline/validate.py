"""Pre-flight checks of a registration: every input and option is judged before any work.

A registration that is bound to fail, or to give a meaningless result, must say so at once,
naming the file or option (``error: <source>: <problem>``, exit 2 on the command line), and
must leave nothing in the output folder. :func:`check_inputs` runs first (options, output
folder, which files exist); :func:`check_ct` judges each image once it is read, and
:func:`check_landmarks_inside` each landmark set against its own image.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..device import device_problem
from ..errors import InputError
from ..io.images import read_information
from ..metrics.landmarks import check_inside
from ..spatial import Grid
from .discrete import SEARCH_MODES
from .refine_config import REGIONS, SIMILARITY_WEIGHTS

# The pipeline works on a 3-level image pyramid (factor 4 between finest and coarsest) and
# a U-Net with 3 resolution levels inside each: an axis of fewer than 24 voxels leaves the
# coarsest level with a handful of voxels, too few for a field to be estimated. 40 mm is
# the smallest field of view that holds a meaningful piece of lung (an adult lung is about
# 200 mm tall); the test CTs (64x64x79 at 4.2 mm, 100x100x47 at 5x5x6 mm) pass easily.
MIN_VOXELS = 24
MIN_EXTENT_MM = 40.0
# Any CT spans air (-1000 HU) to soft tissue (about 0 HU) at least; an image whose values
# (1st to 99th percentile) span less than this is constant or nearly so, not a CT. Kept low
# on purpose: CTs stored with an offset (unsigned, HU + 1024) must pass.
MIN_CT_RANGE = 500.0
PHASES = ("inhale", "exhale")


def check_inputs(inputs, options, out_dir: str | Path) -> None:
    """Options, the output folder and the presence of every named input file.

    Args:
        inputs: :class:`~.register.RegistrationInputs`.
        options: :class:`~.register.RegistrationOptions`.
        out_dir: the output folder (it need not exist; it is never created here).
    """
    check_options(options)
    check_out_dir(out_dir)
    for name in ("fixed", "moving", "fixed_mask", "moving_mask", "fixed_landmarks",
                 "moving_landmarks"):
        path = getattr(inputs, name)
        if path is not None and not Path(path).exists():
            raise InputError(path, "file not found")
    for name in ("fixed_lobes", "moving_lobes"):
        for part in _lobe_paths(getattr(inputs, name)):
            if not part.exists():
                raise InputError(part, "file not found")


def check_options(options) -> None:
    """Registration options that cannot work, named by their command-line option."""
    problem = device_problem(options.device)
    if problem:
        raise InputError("--device", problem)
    if options.refine_iterations is not None and options.refine_iterations < 0:
        raise InputError("--refine-iterations",
                         f"must be 0 or more, got {options.refine_iterations}")
    if options.threads is not None and options.threads < 1:
        raise InputError("--threads", f"must be 1 or more, got {options.threads}")
    spacing = options.output_spacing_mm
    if spacing is not None and not (math.isfinite(spacing) and spacing >= 0):
        raise InputError("--output-spacing", f"must be a spacing in mm (0 or more), got {spacing}")
    fine = options.fine_spacing_mm
    if fine is not None and not (math.isfinite(fine) and fine > 0):
        raise InputError("--fine-spacing", f"must be a spacing in mm above 0, got {fine}")
    if options.similarity not in SIMILARITY_WEIGHTS:
        raise InputError("--similarity", f"must be one of {', '.join(SIMILARITY_WEIGHTS)}, "
                                         f"got {options.similarity!r}")
    if options.similarity_region not in REGIONS:
        raise InputError("--similarity-region", f"must be one of {', '.join(REGIONS)}, "
                                                f"got {options.similarity_region!r}")
    if options.search not in SEARCH_MODES:
        raise InputError("--search", f"must be one of {', '.join(SEARCH_MODES)}, "
                                     f"got {options.search!r}")
    weight = options.similarity_weight
    if weight is not None and not (math.isfinite(weight) and weight > 0):
        raise InputError("--similarity-weight", f"must be above 0, got {weight}")
    if options.fixed_is not in PHASES:
        raise InputError("--fixed-is", f"must be inhale or exhale, got {options.fixed_is!r}")


def check_out_dir(out_dir: str | Path) -> None:
    """The output folder must be a folder (or creatable) and writable; nothing is left
    behind by the check itself."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "--out names an existing file; it must be a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(out, f"cannot create the output folder: {existing} is a file")
    try:  # a real write, not os.access: that says yes to root on any folder
        Path(tempfile.mkdtemp(prefix=".lungdeepreg-write-check.", dir=existing)).rmdir()
    except OSError as error:
        raise InputError(out, f"cannot write the output folder in {existing} "
                              f"({error.strerror or error})") from None


def check_ct(image: sitk.Image, source: str | Path) -> None:
    """A fixed or moving image must be a 3-D CT large enough to register.

    Refused: fewer than :data:`MIN_VOXELS` voxels or less than :data:`MIN_EXTENT_MM` along
    an axis; 8-bit storage (no CT fits in 256 values: an MR, a photo or a mask); intensities
    spanning less than :data:`MIN_CT_RANGE` (a constant image).
    """
    size, spacing = np.asarray(image.GetSize()), np.asarray(image.GetSpacing())
    extent = size * spacing
    if size.min() < MIN_VOXELS or extent.min() < MIN_EXTENT_MM:
        raise InputError(source, f"is too small to register: {tuple(map(int, size))} voxels, "
                                 f"{' x '.join(f'{e:.0f}' for e in extent)} mm; at least "
                                 f"{MIN_VOXELS} voxels and {MIN_EXTENT_MM:.0f} mm along "
                                 "every axis are needed")
    if not Path(source).is_dir():
        stored = read_information(source).GetPixelID()
        if stored in (sitk.sitkUInt8, sitk.sitkInt8):
            raise InputError(source, "does not look like a CT: it is stored as 8-bit "
                                     "integers, too few values for Hounsfield units")
    low, high = _value_span(image)
    if high - low < MIN_CT_RANGE:
        raise InputError(source, f"does not look like a CT: its values span only "
                                 f"{low:.0f} to {high:.0f} (1st to 99th percentile); a CT "
                                 f"spans air to soft tissue, at least {MIN_CT_RANGE:.0f} HU")


def _value_span(image: sitk.Image) -> tuple[float, float]:
    """1st and 99th percentile, on every 2nd voxel along each axis (a CT's histogram does
    not need all of them, and a full CT's percentiles take a second)."""
    array = sitk.GetArrayViewFromImage(image)[::2, ::2, ::2]
    low, high = np.percentile(array, (1, 99))
    return float(low), float(high)


def check_landmarks_inside(points: tuple[np.ndarray, np.ndarray] | None, fixed: sitk.Image,
                           moving: sitk.Image, inputs, exclude: bool
                           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Both landmark sets inside their own image, before any work.

    A landmark outside its image means a wrong file, format or image. Without ``exclude``
    that is an :class:`InputError` naming the file. With ``exclude`` (``--exclude-outside``)
    the fixed side is left to the evaluation, which warns, drops and counts such pairs; a
    pair whose moving landmark is outside gets its fixed landmark marked as missing (NaN),
    so the evaluation drops and counts it the same way and every pair keeps its number.
    """
    if points is None:
        return None
    fixed_points, moving_points = points
    if not exclude:
        check_inside(fixed_points, Grid.from_image(fixed), inputs.fixed_landmarks)
        check_inside(moving_points, Grid.from_image(moving), inputs.moving_landmarks)
        return points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning below says what happens to them
        keep = check_inside(moving_points, Grid.from_image(moving), inputs.moving_landmarks,
                            exclude=True)
    if keep.all():
        return points
    numbers = ", ".join(f"#{k + 1}" for k in np.flatnonzero(~keep))
    warnings.warn(f"{inputs.moving_landmarks}: landmarks {numbers} lie outside the moving "
                  "image; their pairs are excluded from the metrics (their fixed landmarks "
                  "are listed as nan among the excluded)", stacklevel=2)
    marked = fixed_points.copy()
    marked[~keep] = np.nan
    return marked, moving_points


def _lobe_paths(lobes: str | None) -> list[Path]:
    """The files or folder of a lobes argument: a label map, a folder, or "a,b,c,d,e"."""
    if not lobes:
        return []
    return [Path(part.strip()) for part in str(lobes).split(",") if part.strip()]
