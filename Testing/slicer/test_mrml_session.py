"""The Slicer widget's scene side on real MRML: nodes out to files, the background command
(built by the same function the widget uses), outputs back as nodes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.io.landmarks import write_csv
from LungDeepRegLib.mrml import (
    image_to_volume_node,
    jacobian_color_node,
    labels_to_segmentation_node,
    markups_to_points,
    points_to_markups,
    session,
)
from LungDeepRegLib.mrml.job import BackgroundJob, build_command, register_arguments
from LungDeepRegLib.pipeline.register import RegistrationInputs
from LungDeepRegLib.preprocess import lung_labels

LANDMARKS = 12


def lung_points(ct: sitk.Image, count: int) -> np.ndarray:
    lungs = sitk.GetArrayFromImage(lung_labels(ct))
    index = np.argwhere(lungs > 0)[:, ::-1]  # (x, y, z)
    chosen = np.random.default_rng(7).choice(len(index), size=count, replace=False)
    return np.array([ct.TransformIndexToPhysicalPoint([int(v) for v in index[k]])
                     for k in chosen])


def test_register_from_nodes_and_load_results(scene, shared_data, tmp_path, lobes_of):
    popi = shared_data / "popi_light"
    images = {key: read_image(popi / f"popi_light_{phase}.nii.gz", kind="any")
              for key, phase in (("fixed", "00"), ("moving", "50"))}
    nodes = {key: image_to_volume_node(image, scene, key) for key, image in images.items()}
    lobes = {key: labels_to_segmentation_node(lobes_of(images[key]), scene, name=f"{key} lobes")
             for key in images}
    points = lung_points(images["fixed"], LANDMARKS)
    marks = {key: points_to_markups(points, scene, f"{key} landmarks") for key in images}

    inputs = session.export_inputs(tmp_path / "inputs", nodes["fixed"], nodes["moving"],
                                   lobes["fixed"], lobes["moving"], marks["fixed"],
                                   marks["moving"])
    assert inputs["landmark_format"] == "csv"
    exported = sitk.ReadImage(str(inputs["fixed"]))
    assert exported.GetSize() == images["fixed"].GetSize()
    np.testing.assert_allclose(exported.GetOrigin(), images["fixed"].GetOrigin(), atol=1e-9)
    lobe_values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(inputs["fixed_lobes"]))))
    assert list(lobe_values) == [0, 1, 2, 3, 4, 5]

    out = tmp_path / "run" / "registration"
    arguments = register_arguments(out=out, model="none", refine_iterations=5, threads=1,
                                   report=False, **inputs)
    job = BackgroundJob(*build_command(sys.executable, arguments)).start()
    log = job.follow(timeout_s=180)
    assert job.returncode == 0 and session.is_finished(out), "\n".join(log)

    results = session.load_results(out, nodes["fixed"], nodes["moving"], scene)
    assert results.transform.IsA("vtkMRMLGridTransformNode")
    role = results.transform.GetFixedNodeReferenceRole()
    assert results.transform.GetNodeReferenceID(role) == nodes["fixed"].GetID()
    assert results.warped.GetImageData().GetDimensions() == images["fixed"].GetSize()
    display = results.jacobian.GetDisplayNode()
    assert display.GetColorNodeID() == jacobian_color_node(scene).GetID()
    assert results.lobe_table.GetNumberOfRows() == 5
    assert results.landmark_table.GetNumberOfRows() == LANDMARKS
    assert len(results.tre_markups) == 3
    assert sum(n.GetNumberOfControlPoints() for n in results.tre_markups) == LANDMARKS
    assert "Folding" in results.summary() and f"n={LANDMARKS}" in results.summary()
    assert results.report is None  # --no-report

    # running again refreshes the chosen nodes in place and replaces the TRE point lists
    chosen = (results.transform, results.warped, results.jacobian)
    again = session.load_results(out, nodes["fixed"], nodes["moving"], scene,
                                 transform=chosen[0], warped=chosen[1], jacobian=chosen[2],
                                 previous=results)
    assert (again.transform, again.warped, again.jacobian) == chosen
    assert again.lobe_table is results.lobe_table
    point_lists = scene.GetNodesByClass("vtkMRMLMarkupsFiducialNode").GetNumberOfItems()
    assert point_lists == 2 + 3  # the two inputs and one list per error class


def test_pair_to_nodes_and_one_sided_inputs(scene, shared_data, tmp_path):
    popi = shared_data / "popi_light"
    points = lung_points(read_image(popi / "popi_light_00.nii.gz"), 5)
    write_csv(tmp_path / "fixed.csv", points)
    write_csv(tmp_path / "moving.csv", points + 1.0)
    inputs = RegistrationInputs(fixed=popi / "popi_light_00.nii.gz",
                                moving=popi / "popi_light_50.nii.gz",
                                fixed_landmarks=tmp_path / "fixed.csv",
                                moving_landmarks=tmp_path / "moving.csv", landmark_format="csv")
    nodes = session.pair_to_nodes(inputs, scene, prefix="Case")
    assert nodes["fixed"].GetName() == "Case inhale (fixed)"
    np.testing.assert_allclose(markups_to_points(nodes["moving_landmarks"])[0], points + 1.0,
                               atol=1e-9)
    with pytest.raises(InputError, match="both a fixed and a moving"):
        session.export_inputs(tmp_path / "inputs", nodes["fixed"], nodes["moving"],
                              fixed_landmarks=nodes["fixed_landmarks"])
    assert not (tmp_path / "inputs").exists()
