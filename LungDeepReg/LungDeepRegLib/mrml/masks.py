"""Lung masks in the scene: the user's mask for ``--fixed-mask``, and the automatic mask
shown over the fixed image before Apply.

A mask may be a label map volume (any non-zero voxel is lung, as ``--fixed-mask`` reads it)
or a segmentation: then the segment the user chose, or every segment whose name says lung
or names a lobe (lobes together are the lung: "Left lung", "lung_upper_lobe_left" of
TotalSegmentator, "RUL" all count). It is written on the fixed image's grid, 0/1.

Standard library only at import: the panel lists segments before torch is installed; the
engine (SimpleITK, torch) is imported by the functions that write masks.
"""

from __future__ import annotations

from pathlib import Path

AUTOMATIC = ""  # the segment choice "every segment that says lung"
# the engine's lung labels (preprocess.lung_labels): 1 left, 2 right
LUNG_NAMES = {1: "Left lung", 2: "Right lung"}
LUNG_COLORS = {1: (0.95, 0.80, 0.25), 2: (0.55, 0.85, 0.95)}


def says_lung(name: str) -> bool:
    """Whether a segment name means lung tissue (a lung, or one of its lobes)."""
    from .segmentations import lobe_code

    return "lung" in name.lower() or lobe_code(name) is not None


def segment_choices(node) -> list[tuple[str, str]]:
    """``(label, segment ID)`` for the panel's segment list: automatic first."""
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        return [("any non-zero voxel", AUTOMATIC)] if node is not None else []
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(k) for k in range(segmentation.GetNumberOfSegments())]
    return [("segments named lung or lobe", AUTOMATIC),
            *((segmentation.GetSegment(i).GetName(), i) for i in ids)]


def lung_segment_ids(node, chosen: str = AUTOMATIC) -> list[str]:
    """The segments that make the lung mask: ``chosen``, or all that say lung."""
    from ..errors import InputError

    segmentation = node.GetSegmentation()
    if chosen:
        if segmentation.GetSegment(chosen) is None:
            raise InputError(node.GetName(), f"has no segment {chosen!r}")
        return [chosen]
    ids = [segmentation.GetNthSegmentID(k) for k in range(segmentation.GetNumberOfSegments())]
    found = [i for i in ids if says_lung(segmentation.GetSegment(i).GetName())]
    if not found:
        names = [segmentation.GetSegment(i).GetName() for i in ids]
        raise InputError(node.GetName(), f"no segment is named lung or after a lobe (found "
                                         f"{names}); choose the lung segment")
    return found


def lung_mask_image(node, reference, segment: str = AUTOMATIC):
    """The mask (UInt8 0/1 ``SimpleITK.Image``) on ``reference``'s grid; an empty mask is
    an InputError."""
    import numpy as np
    import SimpleITK as sitk

    from ..errors import InputError
    from .segmentations import export_segments
    from .volumes import volume_node_to_image

    if node.IsA("vtkMRMLVolumeNode"):
        image = sitk.Cast(volume_node_to_image(node) != 0, sitk.sitkUInt8)
        mask = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                             sitk.sitkUInt8)
    elif node.IsA("vtkMRMLSegmentationNode"):
        mask = sitk.Cast(export_segments(node, lung_segment_ids(node, segment), reference) != 0,
                         sitk.sitkUInt8)
    else:
        raise TypeError(f"a lung mask is a segmentation or label map, not "
                        f"{node.GetClassName()}")
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise InputError(node.GetName(), "the lung mask is empty on the fixed image's grid")
    return mask


def write_lung_mask(node, reference, path: str | Path, segment: str = AUTOMATIC) -> Path:
    """:func:`lung_mask_image` written where ``--fixed-mask`` reads it."""
    from ..io.images import write_image

    return write_image(lung_mask_image(node, reference, segment), Path(path))


def show_mask(node, visible: bool, scene=None) -> None:
    """A segmentation's display on or off; a label map as the slice views' label layer."""
    if node is None:
        return
    if node.IsA("vtkMRMLSegmentationNode"):
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetVisibility(visible)
        return
    scene = scene or node.GetScene()
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for k in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(k)
        if visible:
            composite.SetLabelVolumeID(node.GetID())
        elif composite.GetLabelVolumeID() == node.GetID():
            composite.SetLabelVolumeID(None)
