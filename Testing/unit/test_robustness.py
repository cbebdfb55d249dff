"""The robustness benchmark: cut fields of view, judged against the uncut pair."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.benchmarks.robustness import CUTS, cut_image
from LungDeepRegLib.preprocess import lung_labels


@pytest.fixture(scope="module")
def ct(shared_data) -> sitk.Image:
    return sitk.ReadImage(str(shared_data / "popi_light" / "popi_light_00.nii.gz"))


@pytest.fixture(scope="module")
def labels(ct) -> np.ndarray:
    return sitk.GetArrayFromImage(lung_labels(ct))


def test_cuts_keep_the_geometry_of_the_kept_voxels(ct, labels):
    for name, cut in CUTS.items():
        image = cut_image(ct, cut, labels)
        assert image.GetSpacing() == ct.GetSpacing(), name
        assert image.GetDirection() == ct.GetDirection(), name
        corner = ct.TransformPhysicalPointToIndex(image.GetOrigin())
        assert image.GetPixel(0, 0, 0) == ct.GetPixel(*corner), name


def test_one_lung_cut_holds_one_lung_and_the_sides_cut_reaches_the_lung(ct, labels):
    for label, name in ((1, "left-lung"), (2, "right-lung")):
        image = cut_image(ct, CUTS[name], labels)
        corner = ct.TransformPhysicalPointToIndex(image.GetOrigin())
        kept = labels[:, :, corner[0]:corner[0] + image.GetSize()[0]]
        other = 3 - label
        assert np.count_nonzero(kept == label) == np.count_nonzero(labels == label)
        assert np.count_nonzero(kept == other) < 0.05 * np.count_nonzero(labels == other)
    sides = cut_image(ct, CUTS["sides"], labels)
    corner = ct.TransformPhysicalPointToIndex(sides.GetOrigin())
    kept = labels[:, corner[1]:corner[1] + sides.GetSize()[1],
                  corner[0]:corner[0] + sides.GetSize()[0]] > 0
    assert kept[:, :, 0].any() and kept[:, :, -1].any()  # lung on the left and right borders
    apex = cut_image(ct, CUTS["apex"], labels)
    assert apex.GetSize()[2] < ct.GetSize()[2]


def test_bench_robustness_compares_each_variant_with_the_uncut_pair(shared_data, tmp_path):
    """A real (short) run: the uncut pair and one cut variant, judged on the same
    landmarks; the table, its JSON and the command land in --out."""
    data = shared_data
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "id,fixed,moving,fixed_landmarks,moving_landmarks,landmark_format\n"
        f"p,{data}/popi_light/popi_light_00.nii.gz,{data}/popi_light/popi_light_50.nii.gz,"
        f"{data}/popi/landmarks_lps/popi_00_points.txt,"
        f"{data}/popi/landmarks_lps/popi_50_points.txt,elastix-point\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "LungDeepRegLib", "bench", "robustness", str(manifest),
         "--cuts", "sides", "--sides", "fixed", "--methods", "lungdeepreg-opt",
         "--refine-iterations", "10", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "robustness.json").read_text())
    assert "bench robustness" in table["command"]
    [row] = table["tables"]["lungdeepreg-opt"]
    assert row["pair"] == "p" and row["variant"] == "fixed-sides"
    assert 10 < row["landmarks"] < 41  # the landmarks outside the cut image are left out
    assert row["ratio"] == pytest.approx(row["tre_mm"] / row["uncut_tre_mm"], abs=0.002)
    assert row["verdict"] in ("within 10 %", "worse", "worse, warned")
    assert "fixed-sides" in (out / "robustness.md").read_text()


@pytest.mark.parametrize(("side", "cut"), [("fixed", "sides"), ("moving", "left-lung")])
def test_prealignment_of_a_cut_field_of_view_stays_near_the_uncut_one(shared_data, ct, labels,
                                                                      side, cut):
    """Centring the images started a cut CT centimetres away (65 mm TRE on a sides cut,
    one lung on the other for a moving CT cut to one lung); the scanner frame is tried
    too, and the better match kept. Compared where it matters: at the fixed lung voxels."""
    from LungDeepRegLib.pipeline.affine import affine_prealign

    moving = sitk.ReadImage(str(shared_data / "popi_light" / "popi_light_40.nii.gz"),
                            sitk.sitkFloat32)
    fixed = sitk.Cast(ct, sitk.sitkFloat32)
    lungs = sitk.GetImageFromArray(labels)
    lungs.CopyInformation(ct)
    uncut = affine_prealign(fixed, moving, lungs)
    if side == "fixed":
        fixed = cut_image(fixed, CUTS[cut], labels)
        lungs = sitk.Resample(lungs, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    else:
        moving = cut_image(moving, CUTS[cut])
    result = affine_prealign(fixed, moving, lungs)
    points = np.argwhere(labels > 0)[::50, ::-1].astype(float)
    physical = [ct.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in points]
    shift = [np.linalg.norm(np.subtract(result.TransformPoint(p), uncut.TransformPoint(p)))
             for p in physical]
    assert np.mean(shift) < 3.0  # mm; the lung moves 4 mm on average between these phases
