"""The benchmark harness: measurement, methods, runner, results, elastix baseline, CLI.

Real parts throughout: real CTs from ../shared/data, real subprocesses of the product's
``register`` command and of elastix, real files. The cases are tiny (CIP ct-64) and the
refinement is capped, so the whole module stays well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.benchmarks import elastix
from LungDeepRegLib.benchmarks.case import BenchCase, CaseError
from LungDeepRegLib.benchmarks.measure import run_measured
from LungDeepRegLib.benchmarks.methods import IDENTITY, RunSettings, parse_methods
from LungDeepRegLib.benchmarks.pairs import pair_cases
from LungDeepRegLib.benchmarks.results import write_results
from LungDeepRegLib.benchmarks.runner import RESULT_FILE, run_benchmark
from LungDeepRegLib.benchmarks.synthetic import synthetic_cases
from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.images import read_image, write_image
from LungDeepRegLib.io.transforms import read_field
from LungDeepRegLib.metrics.landmarks import target_registration_error
from LungDeepRegLib.pipeline.fields import output_grid
from LungDeepRegLib.preprocess import lung_mask

REPO = Path(__file__).resolve().parents[2]
PARAMETER_SHA256 = {  # the Model Zoo files, byte for byte (commit a43bf6f4)
    "Parameters.Par0011.affine.yml":
        "6b857355d849849a4252b3fa31a285a9c39d1a1235d956f888618ee18eb544b4",
    "Parameters.Par0011.bspline1_s.yml":
        "dda22c7b718f1f75f47e251cb00a335b6ed74c31594f3432b4a9a9720a5c5975",
    "Parameters.Par0011.bspline2_s.yml":
        "10e670277b6d10f956aea2370007422d2e87ed5fd275f56881a7fa6fe81ccc96",
}
TRANSLATION_PARAMETERS = """(FixedInternalImagePixelType "float")
(MovingInternalImagePixelType "float")
(FixedImageDimension 3)
(MovingImageDimension 3)
(UseDirectionCosines "true")
(Registration "MultiResolutionRegistration")
(Interpolator "LinearInterpolator")
(ResampleInterpolator "FinalBSplineInterpolator")
(FinalBSplineInterpolationOrder 1)
(Resampler "DefaultResampler")
(FixedImagePyramid "FixedSmoothingImagePyramid")
(MovingImagePyramid "MovingSmoothingImagePyramid")
(Optimizer "RegularStepGradientDescent")
(Transform "TranslationTransform")
(Metric "AdvancedMeanSquares")
(NumberOfResolutions 2)
(ImagePyramidSchedule 4 4 4 2 2 2)
(MaximumNumberOfIterations 150)
(MaximumStepLength 2.0)
(MinimumStepLength 0.01)
(ImageSampler "RandomCoordinate")
(NumberOfSpatialSamples 4000)
(NewSamplesEveryIteration "true")
(HowToCombineTransforms "Compose")
(WriteResultImage "false")
(DefaultPixelValue -1024)
"""


# ----------------------------------------------------------------------------- pieces
def test_methods_by_name_with_the_initial_state_first():
    methods = parse_methods("affine, elastix,affine")
    assert [m.name for m in methods] == [IDENTITY, "affine", "elastix"]
    with pytest.raises(InputError, match="bogus"):
        parse_methods("lungdeepreg,bogus")
    # two models side by side: a network method takes its model after a colon
    methods = parse_methods("lungdeepreg-net,lungdeepreg-net:models/old one.safetensors")
    assert methods[2].register_args == ("--refine-iterations", "0", "--model",
                                        "models/old one.safetensors")
    assert methods[2].folder == "lungdeepreg-net_models_old_one.safetensors"
    with pytest.raises(InputError, match="runs no network"):
        parse_methods("lungdeepreg-opt:some-model")
    # two similarities side by side: a refining method takes one after an @
    methods = parse_methods("lungdeepreg-opt@mind=3,lungdeepreg:models/a@b.safetensors@ncc")
    assert methods[1].register_args == ("--model", "none", "--similarity", "mind",
                                        "--similarity-weight", "3")
    assert methods[2].register_args == ("--model", "models/a@b.safetensors",
                                        "--similarity", "ncc")
    assert methods[1].folder == "lungdeepreg-opt_mind_3"
    assert parse_methods("lungdeepreg@ngf@fine=2")[1].register_args == (
        "--similarity", "ngf", "--fine-spacing", "2")
    assert parse_methods("lungdeepreg@lung")[1].register_args == (
        "--similarity-region", "lung")
    assert parse_methods("lungdeepreg-opt@search")[1].register_args == (
        "--model", "none", "--search", "replace")
    with pytest.raises(InputError, match="does not refine"):
        parse_methods("lungdeepreg-net@mind")
    with pytest.raises(InputError, match="unknown modifier"):
        parse_methods("lungdeepreg-opt@mi")
    with pytest.raises(InputError, match="needs a spacing"):
        parse_methods("lungdeepreg-opt@fine")


def test_measurement_is_the_childs_own_time_memory_and_failure(tmp_path):
    big = run_measured([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = "
                        "b'x' * len(b[::4096])"], tmp_path / "big")
    assert big.ok and big.wall_s > 0
    # the child's own peak (300 MB touched), not the test process's (torch and all)
    assert 0.28 < big.peak_memory_gb < 0.6
    failed = run_measured([sys.executable, "-c", "import sys; print('bad thing', "
                           "file=sys.stderr); sys.exit(4)"], tmp_path / "failed")
    assert failed.returncode == 4 and "bad thing" in failed.failure()
    slow = run_measured([sys.executable, "-c", "import time; time.sleep(30)"],
                        tmp_path / "slow", timeout_s=1.0)
    assert slow.timed_out and not slow.ok and slow.wall_s < 10


def test_par0011_is_stored_verbatim_and_converted_key_by_key():
    for name, digest in PARAMETER_SHA256.items():
        data = (elastix.PARAMETER_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    text = elastix.to_elastix_syntax(
        (elastix.PARAMETER_DIR / "Parameters.Par0011.bspline2_s.yml").read_text())
    lines = text.splitlines()
    for line in ('(Metric "AdvancedNormalizedCorrelation" "TransformBendingEnergyPenalty")',
                 "(ImagePyramidSchedule 4 4 4 3 3 3 2 2 2 1 1 1 1 1 1)",
                 "(FinalGridSpacingInPhysicalUnits 5.0 5.0 5.0)",
                 '(ErodeMask "false" "false" "true" "true" "true")',
                 "(MaximumNumberOfIterations 2000)", "(Metric1RelativeWeight 0.05)",
                 "// Total number of resolutions"):
        assert line in lines
    grid = elastix.set_output_grid("(Size 9 9 9)\n(Spacing 1 1 1)\n(Origin 0 0 0)\n",
                                   (4, 5, 6), (2.0, 2.0, 2.5), (-1.0, 2.0, 3.5))
    assert "(Size 4 5 6)" in grid and "(Spacing 2.0 2.0 2.5)" in grid
    assert "(Origin -1.0 2.0 3.5)" in grid and '(ResultImageFormat "mha")' in grid


@pytest.mark.skipif(elastix.unavailable_reason() is not None, reason="elastix not installed")
def test_elastix_field_is_fixed_to_moving_in_lps_mm(tmp_path, shared_data):
    """A moving image shifted by t: the driver's field (crop, 1 mm, transformix) is +t."""
    fixed = read_image(shared_data / "cip" / "ct-64.nrrd")
    shift = (6.0, -4.0, 5.0)  # moving(x + t) = fixed(x)
    moving = sitk.Resample(fixed, fixed, sitk.TranslationTransform(3, [-s for s in shift]),
                           sitk.sitkLinear, -1024.0)
    paths = [tmp_path / name for name in ("fixed.mha", "moving.mha", "lungs.mha")]
    for image, path in zip((fixed, moving, lung_mask(fixed)), paths, strict=True):
        write_image(image, path, False)
    (tmp_path / "translation.txt").write_text(TRANSLATION_PARAMETERS)
    grid = output_grid(fixed, 2.0)
    command = elastix.driver_command(*paths, tmp_path / "out", 2, grid.size, grid.spacing,
                                     grid.origin) + ["--parameters",
                                                     str(tmp_path / "translation.txt")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    field, field_grid = read_field(tmp_path / "out" / elastix.FIELD_FILE)
    assert field_grid == grid
    mean = field.mean(dim=(2, 3, 4))[0].numpy()
    assert np.allclose(mean, shift, atol=0.5), mean
    assert float(field.std(dim=(2, 3, 4)).max()) < 1e-3  # one translation everywhere


# ------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def ct64(shared_data) -> Path:
    return shared_data / "cip" / "ct-64.nrrd"


def test_runner_evaluates_every_method_alike_and_resumes(tmp_path, ct64):
    synthetic = synthetic_cases(1, [ct64], training_ct=ct64, only={"unseen-ct-64-00"})
    case = synthetic[0]
    assert isinstance(case, BenchCase) and case.known_field is not None
    missing = CaseError("missing", "/nowhere/case", "file not found")
    methods = parse_methods("affine,lungdeepreg-opt")
    settings = RunSettings(threads=2, refine_iterations=1, timeout_s=300)
    rows = run_benchmark([case, missing], tmp_path / "work", methods, settings,
                         progress=False)
    by_method = {row["method"]: row for row in rows if row["case"] == case.name}
    assert all(row["status"] == "done" for row in by_method.values()), rows
    initial = by_method[IDENTITY]
    direct = target_registration_error(case.fixed_points, case.moving_points)
    assert initial["tre"]["mean"] == pytest.approx(direct.mean(), abs=1e-9)
    assert initial["tre"]["mean"] == initial["tre_initial"]["mean"]  # identity = initial
    assert initial["tre"]["n"] == 300 and initial["epe"]["mean"] > 3.0
    for name in ("affine", "lungdeepreg-opt"):
        row = by_method[name]
        assert row["tre"]["mean"] < initial["tre"]["mean"]
        assert row["epe"]["mean"] < initial["epe"]["mean"]
        assert row["time_s"] > 0 and 0.05 < row["peak_memory_gb"] < 6
        assert row["folding_fraction"] <= 0.0005
    assert {"case": "missing", "status": "case error"}.items() <= rows[-1].items()

    # a method that fails (here: runs past its time limit) is reported with the reason and
    # the case's other methods still run; finished work is skipped on a re-run
    hurried = BenchCase("hurried", case.fixed, case.moving, case.fixed_points,
                        case.moving_points)
    more = run_benchmark([hurried], tmp_path / "work", parse_methods("affine"),
                         RunSettings(timeout_s=0.5), progress=False)
    assert [row["status"] for row in more] == ["done", "failed"]
    assert "timed out" in more[1]["error"]
    stamp = (tmp_path / "work" / case.name / "affine" / RESULT_FILE).stat().st_mtime_ns
    again = run_benchmark([case], tmp_path / "work", methods, settings, progress=False)
    assert all(row.get("resumed") for row in again)
    assert (tmp_path / "work" / case.name / "affine" / RESULT_FILE).stat().st_mtime_ns == stamp

    files = write_results(rows + more, tmp_path / "results",
                          {"benchmark": "synthetic", "title": "test", "command": "test"})
    markdown = files["md"].read_text()
    assert "TRE (mm), mean (SD)" in markdown and "| case | initial |" in markdown
    assert "Mean endpoint error" in markdown and "hurried" in markdown
    assert files["csv"].read_text().count("\n") == len(rows + more) + 1
    assert json.loads(files["json"].read_text())["rows"][0]["method"] == IDENTITY
    assert any(path.suffix == ".png" for path in files.values())


def test_pairs_manifest_reads_popi_and_reports_bad_rows(tmp_path, shared_data):
    cases = pair_cases(REPO / "Testing" / "benchmark" / "popi_pairs.csv")
    initial = {case.name: target_registration_error(case.fixed_points, case.moving_points)
               for case in cases}
    assert initial["popi-light-00-50"].mean() == pytest.approx(5.75, abs=0.005)
    assert initial["popi-light-00-60"].mean() == pytest.approx(6.15, abs=0.005)
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("id,fixed,moving\nbad,missing.nii.gz,missing.nii.gz\n")
    [bad] = pair_cases(manifest)
    assert isinstance(bad, CaseError) and "missing.nii.gz" in bad.source


def test_bench_command_writes_results_and_fails_for_bad_cases(tmp_path):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("id,fixed,moving\nbad,missing.nii.gz,missing.nii.gz\n")
    result = subprocess.run(
        [sys.executable, "-m", "LungDeepRegLib", "bench", "pairs", str(manifest), "--out",
         str(tmp_path / "out"), "--methods", "affine", "--no-progress"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "Command: `lungdeepreg bench pairs" in markdown
    assert "case error" in markdown
