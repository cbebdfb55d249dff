"""Self-checks with consequences: warnings on the terminal, in metrics.json and report.html,
errors (exit 2) where nothing meaningful can be registered."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.pipeline import checks
from LungDeepRegLib.pipeline.affine import coverage as lung_coverage
from LungDeepRegLib.pipeline.checks import (
    SelfChecks,
    SelfCheckWarning,
    checked_lungs,
    coverage_check,
    match_checks,
    volume_ratio_check,
)


def lungdeepreg(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "LungDeepRegLib", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def ct64(shared_data) -> sitk.Image:
    return sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))


@pytest.fixture(scope="module")
def lungs64(shared_data) -> sitk.Image:
    return sitk.Cast(sitk.ReadImage(str(shared_data / "cip" / "wholeLung-64.nrrd")) > 0,
                     sitk.sitkUInt8)


def test_another_subject_is_flagged_on_the_terminal_in_metrics_and_in_the_report(
        shared_data, tmp_path):
    """POPI as fixed, CIP ct-64 as moving: two people. It registers (exit 0), but every
    place a user looks says that the result is not to be trusted."""
    out = tmp_path / "out"
    result = lungdeepreg("register", "--fixed", shared_data / "popi_light" /
                         "popi_light_00.nii.gz", "--moving", shared_data / "cip" /
                         "ct-64.nrrd", "--out", out, "--model", "none",
                         "--refine-iterations", "10", "--threads", "2")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    found = {warning["check"] for warning in metrics["warnings"]}
    assert "match_affine" in found
    assert metrics["self_checks"]["ngf_in_lung_after_affine"] > checks.MAX_NGF_AFTER_AFFINE
    warning_lines = [line for line in result.stderr.splitlines()
                     if line.startswith("warning: ")]
    assert any("barely match" in line for line in warning_lines), result.stderr
    assert "Traceback" not in result.stderr
    report = (out / "report.html").read_text()
    assert 'class="warnings"' in report and "barely match" in report
    assert report.index('class="warnings"') < report.index('id="summary"')


def test_a_breathing_pair_passes_every_check(shared_data, tmp_path):
    """The same subject at two phases (a tuning pair): no warning, every check measured."""
    out = tmp_path / "out"
    result = lungdeepreg("register", "--fixed", shared_data / "popi_light" /
                         "popi_light_00.nii.gz", "--moving", shared_data / "popi_light" /
                         "popi_light_50.nii.gz", "--out", out, "--model", "none",
                         "--refine-iterations", "10", "--threads", "2", "--no-report")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["warnings"] == []
    assert "warning:" not in result.stderr
    measured = metrics["self_checks"]
    assert measured["fixed_mask"] == measured["moving_mask"] == "automatic"
    assert 4000 < measured["fixed_lung_ml"] < 9000
    assert 1.0 <= measured["inhale_exhale_volume_ratio"] <= 1.2
    assert measured["moving_fov_covers_fixed_lung"] > 0.95
    assert measured["ngf_in_lung_after_deformable"] < measured["ngf_in_lung_after_affine"]


def test_lung_coverage_is_the_share_of_the_lung_inside_the_moving_field_of_view(
        ct64, lungs64):
    size = list(ct64.GetSize())
    half = sitk.RegionOfInterest(ct64, [size[0], size[1], size[2] // 2], [0, 0, 0])
    inside = sitk.GetArrayViewFromImage(lungs64)[: size[2] // 2].sum()
    expected = inside / sitk.GetArrayViewFromImage(lungs64).sum()
    assert lung_coverage(lungs64, half, sitk.Transform()) == pytest.approx(expected, abs=0.01)
    assert lung_coverage(lungs64, ct64, sitk.Transform()) == 1.0
    away = sitk.TranslationTransform(3, (0.0, 0.0, 5000.0))
    assert lung_coverage(lungs64, ct64, away) == 0.0


def test_no_overlap_stops_with_an_error_naming_the_moving_file(ct64, lungs64):
    away = sitk.TranslationTransform(3, (0.0, 0.0, 5000.0))
    with pytest.raises(InputError) as error:
        coverage_check(lungs64, ct64, away, Path("moving.nrrd"), SelfChecks())
    assert error.value.source == "moving.nrrd" and "no overlap" in error.value.problem


def test_a_partial_field_of_view_is_a_warning(ct64, lungs64):
    size = list(ct64.GetSize())
    half = sitk.RegionOfInterest(ct64, [size[0], size[1], size[2] // 2], [0, 0, 0])
    found = SelfChecks()
    with pytest.warns(SelfCheckWarning, match="covers only"):
        coverage_check(lungs64, half, sitk.Transform(), Path("moving.nrrd"), found)
    assert [finding.check for finding in found.findings] == ["fov_coverage"]


def test_a_ct_without_lung_or_air_is_an_error_naming_the_file(ct64):
    """Soft tissue everywhere (an abdomen slab, or an MR-like volume scaled to HU)."""
    tissue = sitk.Image(ct64.GetSize(), sitk.sitkFloat32) + 40.0
    tissue.CopyInformation(ct64)
    with pytest.raises(InputError) as error:
        checked_lungs(tissue, Path("abdomen.nii.gz"), "moving", SelfChecks())
    assert error.value.source == "abdomen.nii.gz" and "no lung" in error.value.problem


def test_a_given_mask_is_trusted_and_measured(ct64, lungs64):
    found = SelfChecks()
    assert checked_lungs(ct64, Path("ct.nrrd"), "fixed", found, given=lungs64) is lungs64
    assert found.measurements["fixed_mask"] == "given"
    volume = sitk.GetArrayViewFromImage(lungs64).sum() * np.prod(lungs64.GetSpacing()) / 1000
    assert found.measurements["fixed_lung_ml"] == pytest.approx(volume, abs=0.1)
    assert found.findings == []


@pytest.mark.parametrize(("fixed_ml", "moving_ml", "fixed_is", "warned"), [
    (5000.0, 4000.0, "inhale", False),  # tidal breathing
    (6000.0, 2500.0, "inhale", False),  # breath-hold inhale/exhale (ratio 2.4)
    (3000.0, 4500.0, "inhale", True),  # the phases look swapped
    (3000.0, 4500.0, "exhale", False),  # ... unless the user says so
    (9000.0, 1500.0, "inhale", True),  # no breathing gives a factor 6
])
def test_volume_ratio_against_the_breathing_range(fixed_ml, moving_ml, fixed_is, warned):
    found = SelfChecks({"fixed_lung_ml": fixed_ml, "moving_lung_ml": moving_ml,
                        "moving_fov_covers_fixed_lung": 1.0,
                        "fixed_fov_covers_moving_lung": 1.0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume_ratio_check(found, fixed_is)
    assert bool(found.findings) == warned == bool(caught)


def test_volume_ratio_is_not_judged_when_the_fields_of_view_differ():
    found = SelfChecks({"fixed_lung_ml": 9000.0, "moving_lung_ml": 1500.0,
                        "moving_fov_covers_fixed_lung": 0.5,
                        "fixed_fov_covers_moving_lung": 1.0})
    volume_ratio_check(found, "inhale")
    assert found.findings == []
    assert "not checked" in found.measurements["inhale_exhale_volume_ratio"]


def test_match_checks_flag_a_poor_match_and_a_step_that_made_it_worse():
    good = SelfChecks()
    match_checks(0.2, 0.15, good)
    assert good.findings == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        poor = SelfChecks()
        match_checks(checks.MAX_NGF_AFTER_AFFINE + 0.05, None, poor)
        worse = SelfChecks()
        match_checks(0.2, 0.25, worse)
    assert [f.check for f in poor.findings] == ["match_affine"]
    assert [f.check for f in worse.findings] == ["match_deformable"]
    measured, listed = worse.to_metrics()
    assert measured["ngf_in_lung_after_deformable"] == 0.25
    assert listed == [{"check": "match_deformable", "message": worse.findings[0].message}]


def test_an_implausible_automatic_mask_falls_back_to_the_air_bearing_region(ct64, lungs64):
    """Lungs denser than the mask's threshold (diffuse disease: parenchyma at about -370
    HU): the automatic mask keeps a third of them, the air-bearing region inside the body
    holds them all. The registration then uses that region and says so."""
    array = sitk.GetArrayFromImage(sitk.Cast(ct64, sitk.sitkFloat32))
    array[sitk.GetArrayViewFromImage(lungs64) > 0] += 550.0
    dense = sitk.GetImageFromArray(array)
    dense.CopyInformation(ct64)
    found = SelfChecks()
    with pytest.warns(SelfCheckWarning, match="air-bearing region instead"):
        region = checked_lungs(dense, Path("dense.nrrd"), "fixed", found)
    assert found.measurements["fixed_mask"] == "air-bearing region (fallback)"
    assert found.measurements["fixed_lung_ml"] < 0.5 * found.measurements["fixed_air_region_ml"]
    inside = sitk.GetArrayViewFromImage(region)[sitk.GetArrayViewFromImage(lungs64) > 0]
    assert np.mean(inside > 0) > 0.7  # the region holds most of the lungs the mask lost


def test_lung_bases_beside_bowel_gas_are_a_plausible_mask(shared_data):
    """The abdomen CT: 116 ml of lung bases beside more bowel gas. Not a lost lung."""
    ct = sitk.ReadImage(str(shared_data / "totalseg" / "example_ct.nii.gz"))
    found = SelfChecks()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        checked_lungs(ct, Path("abdomen.nii.gz"), "fixed", found)
    assert found.measurements["fixed_mask"] == "automatic"
    assert found.measurements["fixed_air_region_ml"] > 2 * found.measurements["fixed_lung_ml"]


def test_a_ct_stored_as_unsigned_hu_plus_1024_is_shifted_back_and_reported(shared_data,
                                                                           tmp_path):
    from LungDeepRegLib.pipeline.register import RegistrationInputs, prepare

    original = shared_data / "popi_light" / "popi_light_00.nii.gz"
    stored = sitk.Cast(sitk.ReadImage(str(original)) + 1024, sitk.sitkUInt16)
    shifted = tmp_path / "unsigned.nii.gz"
    sitk.WriteImage(stored, str(shifted))
    moving = shared_data / "popi_light" / "popi_light_50.nii.gz"
    with pytest.warns(SelfCheckWarning, match="HU \\+ 1024"):
        pair = prepare(RegistrationInputs(fixed=shifted, moving=moving))
    plain = prepare(RegistrationInputs(fixed=original, moving=moving))
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(pair.fixed),
                               sitk.GetArrayViewFromImage(plain.fixed))
    assert [f.check for f in pair.checks.findings] == ["hu_offset"]
    assert pair.checks.measurements["fixed_hu_offset"] == -1024
    assert pair.checks.measurements["fixed_lung_ml"] == plain.checks.measurements["fixed_lung_ml"]
