"""Five-lobe label maps as segmentation nodes: the engine's per-lobe Dice is unchanged by a
trip through real MRML segmentations (and labelmap volume nodes)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.io.lobes import LOBE_NAMES, read_lobes
from LungDeepRegLib.metrics.overlap import label_overlap
from LungDeepRegLib.mrml import (
    image_to_volume_node,
    labels_to_segmentation_node,
    lobe_code,
    lobe_table,
    segmentation_node_to_labels,
)
from LungDeepRegLib.pipeline.evaluation import EvaluationInputs, label_report
from LungDeepRegLib.spatial import Grid

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")



def _synthetic_lobes(image_factory, direction, shift: int = 0) -> sitk.Image:
    labels = np.zeros((16, 24, 20), np.uint8)
    labels[2:8, 2 + shift:11, 2:9] = 1
    labels[8:14, 2:11, 2 + shift:9] = 2
    labels[2:6, 13:22, 2:18 - shift] = 3
    labels[6:9, 13 - shift:22, 3:17] = 4
    labels[9:14, 13:22, 2 + shift:18] = 5
    return image_factory(labels, direction)


def _shifted(labels: sitk.Image, offset_mm) -> sitk.Image:
    return sitk.Resample(labels, labels, sitk.TranslationTransform(3, offset_mm),
                         sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


def _dice(fixed: sitk.Image, moving: sitk.Image) -> dict[int, float]:
    return {k: v["dice"] for k, v in label_overlap(fixed, moving).items()}


def test_five_lobe_segmentation_gives_the_engines_dice(scene, direction, image_factory):
    fixed = _synthetic_lobes(image_factory, direction)
    moving = _synthetic_lobes(image_factory, direction, shift=2)
    fixed_node = labels_to_segmentation_node(fixed, scene)
    moving_node = labels_to_segmentation_node(moving, scene)
    segmentation = fixed_node.GetSegmentation()
    assert [segmentation.GetNthSegment(k).GetName() for k in range(5)] == list(
        LOBE_NAMES.values())
    fixed_back = segmentation_node_to_labels(fixed_node)
    moving_back = segmentation_node_to_labels(moving_node, reference_image=fixed)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fixed_back),
                                  sitk.GetArrayViewFromImage(fixed))
    np.testing.assert_allclose(fixed_back.GetDirection(), fixed.GetDirection(), atol=1e-12)
    expected = _dice(fixed, moving)
    assert all(0.2 < d < 1.0 for d in expected.values())
    assert _dice(fixed_back, moving_back) == expected


def test_real_lobes_and_renamed_segments(scene, shared_data):
    full = read_lobes(shared_data / "cip" / "crop_ct_interactiveLobeSegmentation.nrrd")
    grid = Grid.from_image(full).with_size((111, 88, 24))  # ~2.3 mm: a fast real case
    reference = grid.apply_to(sitk.Image(grid.size, sitk.sitkUInt8))
    fixed = sitk.Resample(full, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    moving = _shifted(fixed, (4.0, -3.0, 2.0))
    assert set(np.unique(sitk.GetArrayViewFromImage(fixed))) == {0, 1, 2, 3, 4, 5}
    node = labels_to_segmentation_node(moving, scene, name="moving lobes")
    segmentation = node.GetSegmentation()
    slicer_names = {"left upper": "Left upper lobe", "left lower": "lung_lower_lobe_left",
                    "right upper": "RUL", "right middle": "Right middle lobe of lung",
                    "right lower": "right inferior lobe"}
    for k in range(segmentation.GetNumberOfSegments()):  # what a user may have named them
        segment = segmentation.GetNthSegment(k)
        segment.SetName(slicer_names[segment.GetName()])
    back = segmentation_node_to_labels(node, reference_image=fixed)
    assert _dice(fixed, back) == _dice(fixed, moving)
    # the same through a labelmap volume node
    labelmap = image_to_volume_node(moving, scene, labelmap=True)
    assert _dice(fixed, segmentation_node_to_labels(labelmap, reference_image=fixed)) == \
        _dice(fixed, moving)


def test_lobe_names_understood():
    assert [lobe_code(n) for n in ("left upper", "Left Lower Lobe", "lung_upper_lobe_right",
                                   "RML", "right lower lobe", "Segment_1", "left lung")] == \
        [1, 2, 3, 4, 5, None, None]


def test_lobe_table_from_the_engines_label_report(scene, image_factory):
    fixed = _synthetic_lobes(image_factory, np.eye(3))
    moving = _synthetic_lobes(image_factory, np.eye(3), shift=2)
    grid = Grid.from_image(fixed)
    report = label_report(EvaluationInputs(torch.zeros((1, 3, *grid.shape)), grid,
                                           fixed_labels=fixed, moving_labels=moving))
    as_json = {"labels": {when: {str(k): v for k, v in part.items()}
                          for when, part in report.items()}}  # as metrics.json has it
    node = lobe_table(as_json, scene)
    table = node.GetTable()
    assert node.GetNumberOfRows() == 5
    for row, code in enumerate(range(1, 6)):
        assert table.GetValueByName(row, "Lobe").ToString() == LOBE_NAMES[code]
        assert table.GetValueByName(row, "Dice after").ToDouble() == pytest.approx(
            report["after"][code]["dice"])
        assert table.GetValueByName(row, "HD95 before (mm)").ToDouble() == pytest.approx(
            report["before"][code]["hd95_mm"])
    assert node.GetColumnUnitLabel("ASD after (mm)") == "mm"
