"""Lobe label maps <-> segmentation nodes with one segment per lobe.

Engine labels are 1 left upper, 2 left lower, 3 right upper, 4 right middle, 5 right lower
(:data:`LungDeepRegLib.io.lobes.LOBE_NAMES`). A segmentation made here has one segment per
present lobe, named and coloured by lobe. Reading one back identifies lobes by segment NAME,
not order, so segments the user made or renamed in Slicer work too: "Left upper lobe",
"right_middle", "lung_lower_lobe_left" (TotalSegmentator) and "RUL" are all understood.
"""

from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.lobes import LOBE_NAMES
from .scene import remove_nodes, resolve_scene, reuse_or_add
from .volumes import set_volume_geometry, volume_node_to_image, vtk_image_data

SEGMENTATION = "vtkMRMLSegmentationNode"
LOBE_COLORS = {1: (0.00, 0.59, 0.87), 2: (0.35, 0.80, 0.85), 3: (0.95, 0.55, 0.10),
               4: (0.30, 0.75, 0.30), 5: (0.85, 0.25, 0.55)}
_PARTS = {"upper": "upper", "superior": "upper", "middle": "middle", "lower": "lower",
          "inferior": "lower"}
_CODES = {("left", "upper"): 1, ("left", "lower"): 2, ("right", "upper"): 3,
          ("right", "middle"): 4, ("right", "lower"): 5}
_ABBREVIATIONS = {"lul": 1, "lll": 2, "rul": 3, "rml": 4, "rll": 5}


def labels_to_segmentation_node(label_image: sitk.Image, scene=None,
                                names: dict[int, str] = LOBE_NAMES, node=None,
                                name: str = "",
                                colors: dict[int, tuple[float, float, float]] = LOBE_COLORS):
    """A segmentation (new or ``node``, whose segments are replaced) of the labels in
    ``names`` found in ``label_image``; its reference geometry is the label map's grid.
    Segment names and colours come from ``names`` and ``colors`` by label."""
    import slicer

    scene = resolve_scene(scene)
    node = reuse_or_add(scene, SEGMENTATION, name, node)
    node.GetSegmentation().RemoveAllSegments()
    values = sitk.GetArrayFromImage(label_image)
    kept = np.where(np.isin(values, list(names)), values, 0).astype(np.uint8)
    temporary = _temporary_volume(scene, label_image, kept, labelmap=True)
    try:
        node.SetReferenceImageGeometryParameterFromVolumeNode(temporary)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ImportLabelmapToSegmentationNode(temporary, node):
            raise RuntimeError("Slicer could not import the lobe label map")
    finally:
        remove_nodes(scene, temporary)
    segmentation = node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label = int(segment.GetLabelValue())
        segment.SetName(str(names.get(label, f"label {label}")))
        segment.SetColor(*colors.get(label, (0.8, 0.8, 0.8)))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def segmentation_node_to_labels(node, reference_image: sitk.Image | None = None
                                ) -> sitk.Image:
    """An engine lobe label map (UInt8, 0..5) from a segmentation or labelmap volume node.

    Segments are matched to lobes by name (see the module docstring); the map is on
    ``reference_image``'s grid when given, else on the segmentation's reference geometry.
    A labelmap volume node must already hold engine labels 0..5.
    """
    if node.IsA("vtkMRMLVolumeNode"):
        return _labelmap_volume_labels(node, reference_image)
    if not node.IsA(SEGMENTATION):
        raise TypeError(f"expected a segmentation or labelmap volume node, "
                        f"got {node.GetClassName()}")
    codes = _segment_codes(node)
    image = export_segments(node, list(codes), reference_image)
    # the export numbers segments 1..k in list order; map them to lobe codes
    lookup = np.zeros(len(codes) + 1, dtype=np.uint8)
    lookup[1:] = list(codes.values())
    labels = sitk.GetImageFromArray(lookup[sitk.GetArrayViewFromImage(image).astype(np.intp)])
    labels.CopyInformation(image)
    return labels


def export_segments(node, segment_ids: list[str], reference_image: sitk.Image | None = None
                    ) -> sitk.Image:
    """Segments ``segment_ids`` of a segmentation node as one label map (segment k of the
    list is label k), on ``reference_image``'s grid or the segmentation's own geometry."""
    import slicer
    import vtk

    scene = resolve_scene(node.GetScene())
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    reference = None
    if reference_image is not None:
        empty = np.zeros(sitk.GetArrayViewFromImage(reference_image).shape, dtype=np.uint8)
        reference = _temporary_volume(scene, reference_image, empty, labelmap=False)
    exported = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(exported)
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(
                node, ids, exported, reference, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise RuntimeError(f"Slicer could not export segmentation {node.GetName()!r}")
        return volume_node_to_image(exported)
    finally:
        remove_nodes(scene, exported, reference)


def lobe_code(name: str) -> int | None:
    """The engine lobe label a segment name means, or None."""
    words = set(re.split(r"[^a-z]+", name.lower()))
    for code, lobe in LOBE_NAMES.items():
        if name.strip().lower() == lobe:
            return code
    if len(words & set(_ABBREVIATIONS)) == 1:
        return _ABBREVIATIONS[next(iter(words & set(_ABBREVIATIONS)))]
    sides = words & {"left", "right"}
    parts = {_PARTS[w] for w in words if w in _PARTS}
    if len(sides) == 1 and len(parts) == 1:
        return _CODES.get((next(iter(sides)), next(iter(parts))))
    return None


# ------------------------------------------------------------------------------ helpers
def _segment_codes(node) -> dict[str, int]:
    """Segment ID -> lobe code, in lobe order; every lobe at most once."""
    segmentation = node.GetSegmentation()
    found: dict[int, str] = {}
    unknown = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment_name = segmentation.GetSegment(segment_id).GetName()
        code = lobe_code(segment_name)
        if code is None:
            unknown.append(segment_name)
        elif code in found:
            raise InputError(node.GetName(), f"two segments name the {LOBE_NAMES[code]} lobe")
        else:
            found[code] = segment_id
    if not found:
        raise InputError(node.GetName(), f"no segment is named after a lung lobe (found "
                         f"{unknown}); name them e.g. 'left upper', 'right middle'")
    return {found[code]: code for code in sorted(found)}


def _labelmap_volume_labels(node, reference_image: sitk.Image | None) -> sitk.Image:
    image = volume_node_to_image(node)
    present = set(np.unique(sitk.GetArrayViewFromImage(image)).tolist()) - {0}
    if not present <= set(LOBE_NAMES):
        raise InputError(node.GetName(), f"labels {sorted(present - set(LOBE_NAMES))[:8]} are "
                         "not engine lobe labels 1..5")
    image = sitk.Cast(image, sitk.sitkUInt8)
    if reference_image is not None:
        image = sitk.Resample(image, reference_image, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return image


def _temporary_volume(scene, geometry: sitk.Image, array: np.ndarray, labelmap: bool):
    """A display-less volume node for Slicer's import/export calls (removed by the caller)."""
    import slicer

    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetHideFromEditors(True)
    set_volume_geometry(node, geometry)
    node.SetAndObserveImageData(vtk_image_data(array))
    scene.AddNode(node)
    return node
