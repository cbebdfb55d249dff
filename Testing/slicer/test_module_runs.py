"""The module's registrations on real MRML (``mrml.runs``): what the widget does on Apply,
Cancel and when a run ends, without Qt.

The real run goes through a PythonSlicer-like launcher that resets the environment, and
finishes after the panel's parameter node is gone (the widget's ``exit()``): the run must
carry its own nodes, and the engine must be found through the command line alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.mrml import image_to_volume_node, labels_to_segmentation_node, session
from LungDeepRegLib.mrml.job import find_python_slicer
from LungDeepRegLib.mrml.masks import LUNG_NAMES
from LungDeepRegLib.mrml.runs import Registrations, RunRequest
from LungDeepRegLib.preprocess import lung_labels

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")
vtk = pytest.importorskip("vtk")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the launcher is a sh script")


def parameters(**nodes) -> SimpleNamespace:
    """The module's parameter node as the widget holds it (same names, same defaults)."""
    values = dict(fixedVolume=None, movingVolume=None, fixedLobes=None, movingLobes=None,
                  fixedLandmarks=None, movingLandmarks=None, lungMask=None, lungMaskSegment="",
                  model="auto", device="Auto", refineIterations=-1, fixedIsExhale=False,
                  outputSpacing=2.0, similarity="ngf", search="off", outputTransform=None,
                  outputWarped=None, outputJacobian=None, placeMovingUnderTransform=False,
                  writeReport=True)
    values.update(nodes)
    return SimpleNamespace(**values)


def shifted(image: sitk.Image, mm: float = 6.0) -> sitk.Image:
    """The same CT acquired 6 mm further along z: a pair with a known, small motion."""
    moved = sitk.Image(image)
    origin = list(image.GetOrigin())
    origin[2] += mm
    moved.SetOrigin(origin)
    return moved


def lung_segmentation(ct: sitk.Image, scene):
    """Left and right lung segments, and a segment that is not lung (left out of the mask)."""
    labels = sitk.GetArrayFromImage(lung_labels(ct))
    labels[:4][labels[:4] == 0] = 3  # a slab of "tumour" (ignored: its name says no lung)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct)
    return labels_to_segmentation_node(image, scene, {**LUNG_NAMES, 3: "Tumour"},
                                       name="lungs")


@posix_only
def test_run_ends_in_the_scene_after_exit_through_the_launcher(scene, shared_data, tmp_path,
                                                               python_slicer, lobes_of):
    launcher = python_slicer
    assert find_python_slicer(launcher.parent) == str(launcher)  # the widget's lookup
    alone = subprocess.run([str(launcher), "-c", "import LungDeepRegLib"], capture_output=True,
                           text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/nowhere"})
    assert alone.returncode != 0 and "LungDeepRegLib" in alone.stderr  # no path leaks through

    ct = read_image(shared_data / "cip" / "ct-64.nrrd", kind="any")
    fixed = image_to_volume_node(ct, scene, "inhale")
    moving = image_to_volume_node(shifted(ct), scene, "exhale")
    lobes = {key: labels_to_segmentation_node(lobes_of(image), scene, name=f"{key} lobes")
             for key, image in (("fixed", ct), ("moving", shifted(ct)))}
    mask = lung_segmentation(ct, scene)
    p = parameters(fixedVolume=fixed, movingVolume=moving, fixedLobes=lobes["fixed"],
                   movingLobes=lobes["moving"], lungMask=mask, model="none", device="CPU",
                   refineIterations=2, fixedIsExhale=True, outputSpacing=0.0, similarity="mind",
                   search="replace", writeReport=False)
    registrations = Registrations(lambda: str(launcher), tmp_path / "work", scene)
    registrations.folders.watch()
    run = registrations.start(RunRequest.from_parameters(p))
    for flag in ("--fixed-mask", "--fixed-is", "exhale", "--output-spacing", "--similarity",
                 "--search"):
        assert flag in run.job.argv
    vars(p).clear()  # the widget's exit(): its parameter node is gone while the job runs
    log = run.job.follow(timeout_s=240)
    assert registrations.finished and run.job.returncode == 0, "\n".join(log)
    outcome = registrations.finish()

    results = outcome.results
    assert results.transform.GetScene() is scene and results.warped.GetScene() is scene
    role = results.transform.GetFixedNodeReferenceRole()
    assert results.transform.GetNodeReferenceID(role) == fixed.GetID()
    metrics = results.metrics
    assert metrics["self_checks"]["fixed_mask"] == "given"
    assert metrics["run"]["options"]["fixed_is"] == "exhale"
    assert metrics["run"]["options"]["similarity"] == "mind"
    assert metrics["run"]["options"]["search"] == "replace"
    assert metrics["field_grid"]["size"] == list(ct.GetSize())  # spacing 0: the fixed grid
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(run.folder / "inputs" /
                                                        "fixed_mask.nrrd")))
    np.testing.assert_array_equal(written, sitk.GetArrayFromImage(lung_labels(ct)) > 0)

    check_warped_lobes(results, metrics)
    assert outcome.warning_text().splitlines() == [
        f"\u26a0 {message}" for message in session.warning_messages(metrics)]
    assert "temporary folder" in outcome.status()

    # housekeeping: the folder goes with the last of its nodes
    assert run.folder.is_dir()
    for node in results.nodes()[:-1]:
        scene.RemoveNode(node)
    assert run.folder.is_dir()
    scene.RemoveNode(results.nodes()[-1])
    assert not run.folder.exists()


def check_warped_lobes(results, metrics: dict) -> None:
    """Five segments over the fixed grid, each named with its Dice after registration."""
    node = results.warped_lobes
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 5
    after = metrics["labels"]["after"]
    for index in range(5):
        segment = segmentation.GetNthSegment(index)
        dice = after[str(int(segment.GetLabelValue()))]["dice"]
        assert segment.GetName().endswith(f"lobe, warped (Dice {dice:.2f})")
        tag = vtk.reference("")
        assert segment.GetTag("LungDeepReg.DiceAfter", tag) and abs(float(str(tag)) - dice) < 1e-4
    assert node.GetDisplayNode().GetVisibility2DFill() == 0  # outlines over the fixed lobes


def write_outputs(folder: Path, metrics: dict, lobes: bool = True) -> Path:
    """An output folder as the command line writes it (tiny images, zero field)."""
    import torch

    from LungDeepRegLib.io.images import write_image
    from LungDeepRegLib.io.transforms import write_field
    from LungDeepRegLib.spatial import Grid

    image = sitk.Image([12, 10, 8], sitk.sitkFloat32)
    image.SetSpacing((2.0, 2.0, 3.0))
    folder.mkdir(parents=True)
    write_field(torch.zeros(1, 3, 8, 10, 12), Grid.from_image(image), folder / "field.nrrd")
    write_image(image, folder / "warped_moving.nrrd")
    write_image(image + 1.0, folder / "jacobian.nrrd")
    if lobes:
        labels = sitk.Image([12, 10, 8], sitk.sitkUInt8)
        labels.CopyInformation(image)
        array = np.zeros((8, 10, 12), np.uint8)
        array[:, :5, :6], array[:, 5:, :6], array[:, :, 6:] = 1, 2, 3
        labels = sitk.GetImageFromArray(array)
        labels.CopyInformation(image)
        write_image(labels, folder / "warped_moving_lobes.nrrd")
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


JACOBIAN = {"folding_fraction": 0.0, "folding_count": 0, "region": "lung mask (automatic)",
            "sd_log_jacobian": 0.01}


def test_self_check_warnings_and_lobe_dice_are_shown(scene, tmp_path):
    warnings = [{"check": "lung_mask", "message": "the automatic fixed lung mask is implausible"},
                {"check": "fov_coverage", "message": "only 62 % of the fixed lung is covered"},
                {"check": "match_deformable"}, "a plain string from an older engine", 7]
    labels = {"before": {"1": {"dice": 0.5}, "2": {"dice": 0.4}, "3": {"dice": None}},
              "after": {"1": {"dice": 0.912}, "2": {"dice": 0.851}, "3": {"dice": None}}}
    out = write_outputs(tmp_path / "run" / "registration",
                        {"jacobian": JACOBIAN, "labels": labels, "warnings": warnings})
    fixed = image_to_volume_node(read_image(out / "warped_moving.nrrd", kind="any"), scene, "f")
    results = session.load_results(out, fixed, fixed, scene)
    assert results.warnings == ["the automatic fixed lung mask is implausible",
                                "only 62 % of the fixed lung is covered", "match_deformable",
                                "a plain string from an older engine", "7"]
    names = sorted(results.warped_lobes.GetSegmentation().GetNthSegment(k).GetName()
                   for k in range(3))
    assert names == ["Left lower lobe, warped (Dice 0.85)", "Left upper lobe, warped (Dice 0.91)",
                     "Right upper lobe, warped"]  # no Dice measured: no number shown

    from LungDeepRegLib.mrml.runs import RegistrationRun, RunOutcome

    run = RegistrationRun(RunRequest(fixed, fixed), out.parent, job=None)
    outcome = RunOutcome(run, results)
    assert "5 self-check warning(s)" in outcome.status()
    assert outcome.warning_text().splitlines()[1] == \
        "\u26a0 only 62 % of the fixed lung is covered"

    quiet = write_outputs(tmp_path / "old" / "registration", {"jacobian": JACOBIAN},
                          lobes=False)
    older = session.load_results(quiet, fixed, fixed, scene, previous=results)
    assert older.warnings == [] and older.warped_lobes is None
    assert RunOutcome(run, older).warning_text() == ""


def test_lung_mask_from_a_segmentation_or_a_label_map(scene, shared_data, tmp_path):
    from LungDeepRegLib.errors import InputError
    from LungDeepRegLib.mrml import masks

    ct = read_image(shared_data / "cip" / "ct-64.nrrd", kind="any")
    lungs = sitk.GetArrayFromImage(lung_labels(ct)) > 0
    node = lung_segmentation(ct, scene)
    choices = masks.segment_choices(node)
    assert choices[0][1] == masks.AUTOMATIC
    assert [label for label, _ in choices[1:]] == ["Left lung", "Right lung", "Tumour"]
    mask = sitk.GetArrayFromImage(masks.lung_mask_image(node, ct))
    np.testing.assert_array_equal(mask, lungs)  # the lung segments, not the tumour
    left = next(value for label, value in choices if label == "Left lung")
    only_left = sitk.GetArrayFromImage(masks.lung_mask_image(node, ct, left))
    np.testing.assert_array_equal(only_left, sitk.GetArrayFromImage(lung_labels(ct)) == 1)

    codes = read_image(shared_data / "cip" / "lm-64.nrrd", kind="any")  # CIP codes 512+
    labelmap = image_to_volume_node(codes, scene, "CIP regions", labelmap=True)
    exported = sitk.GetArrayFromImage(masks.lung_mask_image(labelmap, ct))
    np.testing.assert_array_equal(exported, sitk.GetArrayFromImage(codes) != 0)

    tumour_only = labels_to_segmentation_node(sitk.Cast(lung_labels(ct) > 0, sitk.sitkUInt8),
                                              scene, {1: "Tumour"}, name="not lungs")
    with pytest.raises(InputError, match="not lungs.*named lung"):
        masks.lung_mask_image(tumour_only, ct)
    masks.show_mask(node, False)
    assert not node.GetDisplayNode().GetVisibility()
    masks.show_mask(node, True)
    assert node.GetDisplayNode().GetVisibility()


def test_cancel_returns_at_once_and_the_kill_finishes_in_the_background(scene, tmp_path):
    """A child that ignores SIGTERM: Cancel must not wait for it (it waited up to 5 s)."""
    if sys.platform == "win32":
        pytest.skip("SIGTERM is POSIX")
    stubborn = tmp_path / "stubborn"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\nsleep 60\n", encoding="utf-8")
    stubborn.chmod(0o755)
    image = sitk.Image([8, 8, 8], sitk.sitkInt16) - 1000
    fixed = image_to_volume_node(image, scene, "fixed")
    moving = image_to_volume_node(image, scene, "moving")
    registrations = Registrations(lambda: str(stubborn), tmp_path / "work", scene)
    run = registrations.start(RunRequest(fixed, moving))
    time.sleep(0.3)  # let the shell set its trap
    started = time.monotonic()
    assert registrations.cancel()
    assert time.monotonic() - started < 1.0
    assert registrations.current is None and run.job.process.poll() is None  # still dying
    assert run.job.wait_stopped(30)
    assert run.job.process.poll() is not None and not run.folder.exists()


def test_run_folders_go_with_their_nodes_but_kept_ones_stay(scene, tmp_path):
    from LungDeepRegLib.mrml.run_folders import RunFolders

    folders = RunFolders(scene).watch()
    nodes = [scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"n{k}") for k in range(4)]
    temporary, kept, later = (tmp_path / name for name in ("temporary", "kept", "later"))
    for folder in (temporary, kept, later):
        folder.mkdir()
    folders.add(temporary, nodes[:2])
    folders.add(kept, nodes[2:3], keep=True)
    scene.RemoveNode(nodes[0])
    assert temporary.is_dir()
    folders.add(later, [nodes[1], nodes[3]])  # a later run refilled node 1 in place
    assert not temporary.exists() and later.is_dir()
    scene.RemoveNode(nodes[2])
    assert kept.is_dir() and kept not in folders.folders  # the user's folder stays
    folders.clear()  # scene close
    assert not later.exists() and folders.folders == []
    folders.unwatch()


def test_lung_mask_preview_in_the_background(scene, shared_data, tmp_path):
    from LungDeepRegLib.mrml.mask_preview import LungMaskPreview

    ct = read_image(shared_data / "cip" / "ct-64.nrrd", kind="any")
    fixed = image_to_volume_node(ct, scene, "inhale")
    preview = LungMaskPreview(lambda: sys.executable, tmp_path / "work", scene)
    assert preview.show(fixed) and preview.running
    deadline = time.monotonic() + 120
    while (message := preview.poll()) is None:
        assert time.monotonic() < deadline, preview.log
        time.sleep(0.1)
    assert message.startswith("Automatic lung mask shown. lung volume: left"), message
    segmentation = preview.node.GetSegmentation()
    assert [segmentation.GetNthSegment(k).GetName() for k in range(2)] == list(
        LUNG_NAMES.values())
    assert list((tmp_path / "work").iterdir()) == []  # working files removed once loaded
    assert not preview.show(fixed)  # shown again without computing again
    preview.hide()
    assert not preview.node.GetDisplayNode().GetVisibility()
    fixed.GetImageData().Modified()  # the voxels changed: the mask is stale
    assert preview.show(fixed)
    preview.cancel()
    assert not preview.running
