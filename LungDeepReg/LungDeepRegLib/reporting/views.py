"""Display slices for the QA figures: orientation, planes, windowing, overlays.

Every image is viewed on the fixed grid in LPS index order: in the array ``[z, y, x]``, x
grows toward the patient's left, y toward posterior and z toward superior. The planes then
follow the radiological convention without further thought: axial with anterior at the top
and the patient's left on the image's right; coronal and sagittal with superior at the top
(sagittal: anterior on the left). Pixel sizes in mm travel with every slice, so figures keep
the physical aspect.

A clinical CT holds 10^8 voxels, so nothing here copies a whole volume: images on the fixed
grid are read through reoriented NumPy views of their buffers, and the Jacobian (often on a
coarser grid) is resampled only onto the few planes that are drawn.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..spatial.grid import Grid

LUNG_WINDOW = (1500.0, -600.0)  # width, level in HU
AIR_HU = -1024.0


@dataclass(frozen=True)
class Plane:
    """One display plane through the oriented volume: ``axis`` 0 axial, 1 coronal, 2 sagittal."""

    name: str
    axis: int
    index: int

    def cut(self, volume: np.ndarray) -> np.ndarray:
        """The 2-D slice as float32, rows top to bottom and columns left to right as shown."""
        if self.axis == 0:
            cut = volume[self.index]
        elif self.axis == 1:  # superior at the top: z grows toward superior, so flip rows
            cut = volume[::-1, self.index, :]
        else:
            cut = volume[::-1, :, self.index]
        return np.asarray(cut, dtype=np.float32)

    def pixel_mm(self, spacing: tuple[float, float, float]) -> tuple[float, float]:
        """(row, column) pixel size in mm from the (x, y, z) spacing."""
        sx, sy, sz = spacing
        return {0: (sy, sx), 1: (sz, sx), 2: (sz, sy)}[self.axis]

    def project(self, index_xyz: np.ndarray, depth: int, tolerance: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Display (row, column) of continuous (x, y, z) indices within ``tolerance``
        voxels of the plane; ``depth`` is the number of z slices (for the flip)."""
        x, y, z = index_xyz.T if index_xyz.size else np.zeros((3, 0))
        offset, rows, cols = {0: (z, y, x), 1: (y, depth - 1 - z, x),
                              2: (x, depth - 1 - z, y)}[self.axis]
        near = np.abs(offset - self.index) <= tolerance
        return rows[near], cols[near]

    @property
    def edges(self) -> tuple[str, str, str, str]:
        """Anatomical direction at the (top, bottom, left, right) edges of the image."""
        return {0: ("A", "P", "R", "L"), 1: ("S", "I", "R", "L"),
                2: ("S", "I", "A", "P")}[self.axis]


@dataclass(frozen=True)
class Orientation:
    """Array axes permutation and flips that show an image's ``[z, y, x]`` array in LPS
    order; oblique directions use the nearest anatomical axes (as ``DICOMOrient`` does)."""

    axes: tuple[int, int, int]  # source array axis of each displayed array axis
    flips: tuple[bool, bool, bool]  # per displayed array axis
    spacing: tuple[float, float, float]  # displayed (x, y, z) spacing, mm
    origin: tuple[float, float, float]  # LPS mm of the displayed first voxel
    oblique: bool

    @classmethod
    def of(cls, image: sitk.Image) -> Orientation:
        direction = np.asarray(image.GetDirection()).reshape(3, 3)  # columns: index axes
        # physical axis p shown along index axis c: the assignment with the largest cosines
        best = max(itertools.permutations(range(3)),
                   key=lambda perm: sum(abs(direction[p, c]) for c, p in enumerate(perm)))
        axes, flips, spacing, corner = [0] * 3, [False] * 3, [0.0] * 3, [0] * 3
        for c, p in enumerate(best):
            flip = bool(direction[p, c] < 0)
            axes[2 - p], flips[2 - p] = 2 - c, flip
            spacing[p] = image.GetSpacing()[c]
            corner[c] = image.GetSize()[c] - 1 if flip else 0
        oblique = not np.allclose(np.abs(direction[list(best), range(3)]), 1.0, atol=1e-3)
        return cls(tuple(axes), tuple(flips), tuple(spacing),
                   image.TransformIndexToPhysicalPoint(corner), oblique)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """A reoriented view (no copy) of a ``[z, y, x]`` array."""
        view = array.transpose(self.axes)
        return view[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def to_display(self, index_xyz: np.ndarray, size_xyz: tuple[int, int, int]) -> np.ndarray:
        """Continuous source (x, y, z) indices ``(N, 3)`` to displayed (x, y, z) indices."""
        shown = np.empty_like(index_xyz)
        for a, (source, flip) in enumerate(zip(self.axes, self.flips, strict=True)):
            c, p = 2 - source, 2 - a  # ITK axes of the source and of the display
            values = index_xyz[:, c]
            shown[:, p] = size_xyz[c] - 1 - values if flip else values
        return shown

    def source_index(self, plane: Plane, shape_zyx: tuple[int, int, int]) -> tuple[int, int]:
        """(ITK index axis, index) of the source image that ``plane`` cuts."""
        source = self.axes[plane.axis]
        index = shape_zyx[source] - 1 - plane.index if self.flips[plane.axis] else plane.index
        return 2 - source, index


@dataclass
class DisplayVolumes:
    """Oriented views of the inputs on the fixed grid, ready to slice."""

    fixed: np.ndarray
    moving: np.ndarray
    warped: np.ndarray
    orientation: Orientation
    mask: np.ndarray | None
    mask_source: str  # "given", "automatic" or "none"
    jacobian_image: sitk.Image | None  # det J on its own grid, resampled per plane
    folds_index: np.ndarray  # (N, 3) continuous (x, y, z) display indices of det <= 0 voxels
    fold_tolerance: tuple[float, float, float]  # per display axis (z, y, x), in voxels
    fixed_image: sitk.Image = field(repr=False)
    keep_alive: list[sitk.Image] = field(default_factory=list, repr=False)  # view buffers

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.orientation.spacing

    @property
    def depth(self) -> int:
        return self.fixed.shape[0]

    @property
    def oblique(self) -> bool:
        return self.orientation.oblique

    def describe(self, plane: Plane) -> str:
        """Plane name and LPS position, e.g. ``axial, z = -152.0 mm``."""
        coordinate = 2 - plane.axis  # display array axes (z, y, x) against LPS (x, y, z)
        position = self.orientation.origin[coordinate] + plane.index * self.spacing[coordinate]
        return f"{plane.name}, {'xyz'[coordinate]} = {position:.1f} mm"

    def jacobian_slice(self, plane: Plane) -> np.ndarray:
        """det J on ``plane`` (linear interpolation; NaN outside the Jacobian's grid)."""
        axis, index = self.orientation.source_index(plane, self.fixed_image.GetSize()[::-1])
        cut = [slice(None)] * 3
        cut[axis] = slice(index, index + 1)
        slab = self.fixed_image[tuple(cut)]  # keeps the slab's geometry
        det = sitk.Resample(self.jacobian_image, slab, sitk.Transform(), sitk.sitkLinear,
                            float("nan"), sitk.sitkFloat32)
        oriented = self.orientation.apply(sitk.GetArrayFromImage(det))
        return Plane(plane.name, plane.axis, 0).cut(oriented)


def prepare(fixed: sitk.Image, moving: sitk.Image, warped: sitk.Image,
            jacobian: sitk.Image | None, mask: sitk.Image | None,
            auto_mask: bool = True) -> DisplayVolumes:
    """Views of every input on the fixed grid in LPS order, and the folds of ``jacobian``."""
    orientation = Orientation.of(fixed)
    keep = [fixed, _onto(moving, fixed, sitk.sitkLinear, AIR_HU),
            _onto(warped, fixed, sitk.sitkLinear, AIR_HU)]
    views = [orientation.apply(sitk.GetArrayViewFromImage(image)) for image in keep]
    mask_source = "given"
    if mask is None and auto_mask:
        mask, mask_source = _automatic_mask(fixed), "automatic"
    mask_view = None
    if mask is not None:
        keep.append(_onto(mask, fixed, sitk.sitkNearestNeighbor, 0.0))
        mask_view = orientation.apply(sitk.GetArrayViewFromImage(keep[-1]))
        if not np.any(mask_view):
            mask_view = None
    if mask_view is None:
        mask_source = "none"
    folds, tolerance = np.zeros((0, 3)), (0.5, 0.5, 0.5)
    if jacobian is not None:
        folds, tolerance = _fold_indices(jacobian, fixed, orientation)
    return DisplayVolumes(*views, orientation=orientation, mask=mask_view,
                          mask_source=mask_source, jacobian_image=jacobian, folds_index=folds,
                          fold_tolerance=tolerance, fixed_image=fixed, keep_alive=keep)


def centre_planes(volumes: DisplayVolumes) -> list[Plane]:
    """Axial and coronal planes through the lung centroid, sagittal through the right lung.

    A sagittal plane through the centroid of both lungs would cut the mediastinum, so it
    goes through the centroid of the patient's right half of the mask instead (x grows
    toward the left, so the right lung has the smaller x). Without a mask: the volume centre.
    Centroids come from per-axis voxel counts, which need no index arrays of the whole mask.
    """
    if volumes.mask is None:
        k, j, i = (n // 2 for n in volumes.fixed.shape)
        return _planes(k, j, i)
    counts = [np.count_nonzero(volumes.mask, axis=tuple(a for a in range(3) if a != axis))
              for axis in range(3)]
    k, j, centre_x = (_centroid(c, len(c)) for c in counts)
    return _planes(k, j, _centroid(counts[2], centre_x + 1))


def fold_plane(volumes: DisplayVolumes) -> Plane | None:
    """The axial plane holding the most folded voxels, or None without folds."""
    if not len(volumes.folds_index):
        return None
    slices = np.clip(np.round(volumes.folds_index[:, 2]), 0, volumes.depth - 1).astype(int)
    return Plane("axial (most folds)", 0, int(np.bincount(slices).argmax()))


def lung_window(hu: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """HU to [0, 1] grey values under a (width, level) window."""
    width, level = window
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)


def overlay(fixed_hu: np.ndarray, other_hu: np.ndarray) -> np.ndarray:
    """RGB image: fixed in magenta (red + blue), the other image in green.

    Where both agree the pixel is grey; magenta shows structure only in the fixed image,
    green structure only in the other one.
    """
    f, m = lung_window(fixed_hu), lung_window(other_hu)
    return np.stack((f, m, f), axis=-1)


def checkerboard(first: np.ndarray, second: np.ndarray, pixel_mm: tuple[float, float],
                 tile_mm: float = 20.0) -> np.ndarray:
    """Alternate square tiles (``tile_mm`` wide in physical space) of two equal slices."""
    rows = (np.arange(first.shape[0]) * pixel_mm[0] // tile_mm).astype(int)
    cols = (np.arange(first.shape[1]) * pixel_mm[1] // tile_mm).astype(int)
    pick_first = (rows[:, None] + cols[None, :]) % 2 == 0
    return np.where(pick_first, first, second)


def _planes(k: int, j: int, i: int) -> list[Plane]:
    return [Plane("axial", 0, k), Plane("coronal", 1, j), Plane("sagittal", 2, i)]


def _centroid(counts: np.ndarray, stop: int) -> int:
    """Weighted mean position of ``counts[:stop]`` (rounded), the middle when empty."""
    part = counts[:stop].astype(np.float64)
    if part.sum() == 0:
        return len(counts) // 2
    return int(round(float(np.arange(stop) @ part / part.sum())))


def _onto(image: sitk.Image, reference: sitk.Image, interpolator: int, default: float
          ) -> sitk.Image:
    """``image`` itself when it is on the reference grid, else resampled onto it."""
    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-6)
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6))
    if same:
        return image
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default,
                         image.GetPixelID())


def _automatic_mask(fixed: sitk.Image) -> sitk.Image | None:
    """The engine's lung mask, used only to place the planes and limit the det J overlay."""
    from ..preprocess import lung_mask  # lazy: morphology is only needed without a mask

    try:
        return lung_mask(fixed)
    except Exception:  # display only: any failure falls back to the volume centre
        return None


def _fold_indices(jacobian: sitk.Image, fixed: sitk.Image, orientation: Orientation
                  ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Continuous display indices of every native det <= 0 voxel, and the per-axis
    distance (display voxels) within which a fold counts as lying on a plane.

    Folds are taken from the native Jacobian grid rather than from resampled slices, so
    that an isolated folded voxel is never interpolated away.
    """
    native = Grid.from_image(jacobian)
    zyx = np.argwhere(sitk.GetArrayViewFromImage(jacobian) <= 0)
    points = native.index_to_physical(zyx[:, ::-1].astype(np.float64))
    source = Grid.from_image(fixed).physical_to_index(points)
    index = orientation.to_display(source, fixed.GetSize())
    half = 0.5 * max(native.spacing)
    sx, sy, sz = orientation.spacing
    tolerance = tuple(max(0.5, half / s) for s in (sz, sy, sx))
    return index, tolerance
