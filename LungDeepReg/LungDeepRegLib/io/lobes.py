"""Lobe label maps in the engine's convention, imported from the common sources.

Engine labels (the lungmask LTRCLobes order): 1 left upper, 2 left lower, 3 right upper,
4 right middle, 5 right lower. Importers:

* ``engine``: a label map already in that convention;
* ``cip``: Chest Imaging Platform region codes in the low byte (4 right superior, 5 right
  middle, 6 right inferior, 7 left superior, 8 left inferior; the high byte is a type code);
* per-lobe mask files: TotalSegmentator names (``lung_upper_lobe_left.nii.gz`` ...) in a
  folder, or an explicit comma-separated list of five masks in engine order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .images import read_image

LOBE_NAMES = {1: "left upper", 2: "left lower", 3: "right upper", 4: "right middle",
              5: "right lower"}
CIP_TO_ENGINE = {7: 1, 8: 2, 4: 3, 5: 4, 6: 5}
TOTALSEGMENTATOR_FILES = {1: "lung_upper_lobe_left", 2: "lung_lower_lobe_left",
                          3: "lung_upper_lobe_right", 4: "lung_middle_lobe_right",
                          5: "lung_lower_lobe_right"}
LobeConvention = Literal["auto", "engine", "cip"]


def read_lobes(spec: str | Path, convention: LobeConvention = "auto") -> sitk.Image:
    """Lobe label map (UInt8, engine labels) from a label-map file, a folder of
    TotalSegmentator lobe masks, or ``"a.nii.gz,b.nii.gz,..."`` (five masks, engine order).

    ``auto`` takes CIP codes when a high byte (type code) is present or when the labels are
    a subset of 4..8 that includes 6..8; the engine convention otherwise.
    """
    text = str(spec)
    if "," in text:
        return _from_masks([Path(p.strip()) for p in text.split(",")], text)
    path = Path(text)
    if path.is_dir() and not any(path.glob("*.dcm")):
        files = [_totalsegmentator_file(path, label) for label in sorted(TOTALSEGMENTATOR_FILES)]
        return _from_masks(files, path)
    image = read_image(path, kind="any")
    values = sitk.GetArrayFromImage(image).astype(np.int64)
    if values.min() < 0:
        raise InputError(path, "is not a label map (negative values)")
    if convention == "cip" or (convention == "auto" and _looks_like_cip(values)):
        return _like(_map_codes(values & 0xFF, CIP_TO_ENGINE), image)
    unknown = sorted(set(np.unique(values)) - {0, *LOBE_NAMES})
    if unknown:
        raise InputError(path, f"labels {unknown[:8]} are not engine lobe labels 1..5; "
                               "name the convention (cip) or convert the map")
    return _like(values.astype(np.uint8), image)


def _looks_like_cip(values: np.ndarray) -> bool:
    if (values > 255).any():
        return True
    present = set(np.unique(values)) - {0}
    return bool(present) and present <= set(CIP_TO_ENGINE) and bool(present & {6, 7, 8})


def _map_codes(codes: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    labels = np.zeros(codes.shape, dtype=np.uint8)
    for code, label in mapping.items():
        labels[codes == code] = label
    return labels


def _totalsegmentator_file(folder: Path, label: int) -> Path:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        candidate = folder / f"{TOTALSEGMENTATOR_FILES[label]}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(folder, f"no {TOTALSEGMENTATOR_FILES[label]} mask in this folder")


def _from_masks(files: list[Path], source: str | Path) -> sitk.Image:
    if len(files) != len(LOBE_NAMES):
        raise InputError(source, f"{len(files)} lobe masks given; five are needed "
                                 "(left upper, left lower, right upper, right middle, right lower)")
    reference = read_image(files[0], kind="label")
    labels = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.uint8)
    for label, path in enumerate(files, start=1):
        mask = reference if label == 1 else read_image(path, kind="label")
        if mask.GetSize() != reference.GetSize():
            raise InputError(path, f"size {mask.GetSize()} differs from {files[0].name} "
                                   f"{reference.GetSize()}")
        labels[(sitk.GetArrayViewFromImage(mask) > 0) & (labels == 0)] = label
    return _like(labels, reference)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
