"""The registration pipeline end to end on a small real CT, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.io.landmarks import read_landmarks
from LungDeepRegLib.io.transforms import read_field
from LungDeepRegLib.metrics.landmarks import map_points
from LungDeepRegLib.models.store import load_model, save_model
from LungDeepRegLib.pipeline import network
from LungDeepRegLib.pipeline import register as register_module
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register


def lungdeepreg(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "LungDeepRegLib", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def small_pair(shared_data, tmp_path_factory) -> dict[str, Path]:
    """ct-64 (fixed) and a moving image made from it by a known smooth motion, with
    landmarks that follow the motion."""
    folder = tmp_path_factory.mktemp("pair")
    fixed = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))
    displacement = sitk.Image(fixed.GetSize(), sitk.sitkVectorFloat64, 3)
    displacement.CopyInformation(fixed)
    points = sitk.GetArrayFromImage(sitk.PhysicalPointSource(
        sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(), fixed.GetSpacing(),
        fixed.GetDirection()))
    z = points[..., 2]
    z_range = z.max() - z.min()
    field = np.zeros(points.shape)
    field[..., 2] = 12.0 * ((z.max() - z) / z_range) ** 2  # up to 12 mm, largest inferiorly
    field[..., 0] = 2.0
    truth = sitk.GetImageFromArray(field, isVector=True)
    truth.CopyInformation(fixed)
    transform = sitk.DisplacementFieldTransform(sitk.Image(truth))
    inverse = sitk.DisplacementFieldTransform(sitk.InvertDisplacementField(truth))
    moving = sitk.Resample(fixed, fixed, inverse, sitk.sitkLinear, -1024.0)
    sitk.WriteImage(fixed, str(folder / "fixed.nrrd"))
    sitk.WriteImage(moving, str(folder / "moving.nrrd"))
    centre = np.asarray(fixed.TransformContinuousIndexToPhysicalPoint(
        [s / 2 for s in fixed.GetSize()]))
    landmarks = centre + np.random.default_rng(0).uniform(-40, 40, size=(30, 3)) * [1, 0.6, 1]
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in landmarks])
    np.savetxt(folder / "fixed.csv", landmarks, delimiter=",", header="x,y,z", comments="")
    np.savetxt(folder / "moving.csv", mapped, delimiter=",", header="x,y,z", comments="")
    return {"fixed": folder / "fixed.nrrd", "moving": folder / "moving.nrrd",
            "fixed_landmarks": folder / "fixed.csv", "moving_landmarks": folder / "moving.csv"}


@pytest.fixture(scope="module")
def registered(small_pair, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("registered") / "out"
    result = lungdeepreg("register", "--fixed", small_pair["fixed"], "--moving",
                         small_pair["moving"], "--out", out, "--model", "none",
                         "--fixed-landmarks", small_pair["fixed_landmarks"],
                         "--moving-landmarks", small_pair["moving_landmarks"], "--nifti")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PROGRESS" in result.stderr and "QA report" in result.stdout
    return out


def test_the_discrete_search_start_is_refined_and_recorded(small_pair, tmp_path):
    out = tmp_path / "searched"
    result = lungdeepreg("register", "--fixed", small_pair["fixed"], "--moving",
                         small_pair["moving"], "--out", out, "--model", "none",
                         "--search", "replace",
                         "--fixed-landmarks", small_pair["fixed_landmarks"],
                         "--moving-landmarks", small_pair["moving_landmarks"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    run = metrics["run"]
    assert run["options"]["search"] == "replace"
    assert run["runtime_s"]["discrete search"] > 0
    assert run["refinement"]["starts"] == ["affine + discrete search"]
    assert run["refinement"]["kept"] in ("refined", "affine + discrete search")
    assert metrics["landmarks"]["after"]["mean"] < 0.5 * metrics["landmarks"]["before"]["mean"]
    assert metrics["jacobian"]["folding_fraction"] == 0.0
    report = (out / "report.html").read_text(encoding="utf-8")
    assert f"from the {run['refinement']['refined_from']} start; kept: " in report


def test_an_unknown_search_mode_is_refused_before_any_work(small_pair, tmp_path):
    result = lungdeepreg("register", "--fixed", small_pair["fixed"], "--moving",
                         small_pair["moving"], "--out", tmp_path / "out", "--search", "both")
    assert result.returncode != 0 and "--search" in result.stderr
    assert not (tmp_path / "out").exists()


def test_register_writes_every_output(registered):
    for name in ("field.nrrd", "field.h5", "field.nii.gz", "warped_moving.nrrd",
                 "jacobian.nrrd", "fixed_lungs.nrrd", "metrics.json", "report.html",
                 "fixed_landmarks_tre.mrk.json", "predicted_moving_landmarks.mrk.json"):
        assert (registered / name).is_file(), name
    assert not [p for p in registered.iterdir() if "partial" in p.name]
    metrics = json.loads((registered / "metrics.json").read_text())
    run = metrics["run"]
    assert run["model"]["name"] == "none" and run["device"] == "cpu"
    assert run["direction"] == "inhale fixed, exhale moving"
    assert {"affine pre-alignment", "instance optimisation", "total field"} <= set(
        run["runtime_s"])
    landmarks = metrics["landmarks"]
    assert landmarks["before"]["mean"] > 3.0  # the fixture moves them by 3.6 mm on average
    assert landmarks["after"]["mean"] < 0.5 * landmarks["before"]["mean"]
    assert metrics["jacobian"]["folding_fraction"] < 0.0005


def test_outputs_map_landmarks_where_the_metrics_say(registered, small_pair):
    metrics = json.loads((registered / "metrics.json").read_text())
    fixed = read_landmarks(small_pair["fixed_landmarks"], "csv")
    moving = read_landmarks(small_pair["moving_landmarks"], "csv")
    reported = np.array([row["tre_mm"] for row in metrics["landmarks"]["per_landmark"]])
    transform = sitk.ReadTransform(str(registered / "field.h5"))
    through_itk = np.array([transform.TransformPoint(tuple(p)) for p in fixed])
    np.testing.assert_allclose(np.linalg.norm(through_itk - moving, axis=1), reported,
                               atol=1e-3)
    for name in ("field.nrrd", "field.nii.gz"):
        field, grid = read_field(registered / name)
        mapped = map_points(fixed, field, grid)
        np.testing.assert_allclose(mapped, through_itk, atol=2e-3)
    warped = sitk.ReadImage(str(registered / "warped_moving.nrrd"))
    fixed_image = sitk.ReadImage(str(small_pair["fixed"]))
    assert warped.GetSize() == fixed_image.GetSize()
    # judged in the lung, what the pipeline registers (outside the lung crop only the affine
    # part applies)
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(registered / "fixed_lungs.nrrd"))) > 0
    moving = sitk.GetArrayFromImage(sitk.ReadImage(str(small_pair["moving"]))).astype(float)
    fixed_array = sitk.GetArrayFromImage(fixed_image).astype(float)
    before = np.abs(moving - fixed_array)[lung].mean()
    after = np.abs(sitk.GetArrayFromImage(warped) - fixed_array)[lung].mean()
    assert after < 0.7 * before


def test_batch_isolates_a_corrupt_pair_and_resumes(small_pair, tmp_path):
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_bytes(b"NRRD0004\nthis is not an image\n")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "id,fixed,moving\n"
        f"good,{small_pair['fixed']},{small_pair['moving']}\n"
        f"bad,{small_pair['fixed']},{corrupt}\n")
    out = tmp_path / "batch"
    first = lungdeepreg("batch", manifest, "--out", out, "--model", "none", "--no-report",
                        "--refine-iterations", "5")
    assert first.returncode == 1  # one pair failed
    summary = json.loads((out / "summary.json").read_text())
    status = {row["id"]: row for row in summary}
    assert status["good"]["status"] == "done" and (out / "good" / "metrics.json").is_file()
    assert status["bad"]["status"] == "failed" and "corrupt.nrrd" in status["bad"]["error"]
    assert not (out / "bad" / "metrics.json").exists()
    assert "error: bad" in first.stderr

    again = lungdeepreg("batch", manifest, "--out", out, "--model", "none", "--no-report",
                        "--refine-iterations", "5")
    status = {row["id"]: row for row in json.loads((out / "summary.json").read_text())}
    assert status["good"]["status"].startswith("skipped")
    assert status["bad"]["status"] == "failed"
    assert again.returncode == 1

    sharded = lungdeepreg("batch", manifest, "--out", out, "--model", "none", "--shard", "2/2")
    rows = json.loads((out / "summary_shard2of2.json").read_text())
    assert [row["id"] for row in rows] == ["bad"] and sharded.returncode == 1


def test_register_bad_input_exits_2_and_writes_nothing(small_pair, tmp_path):
    out = tmp_path / "out"
    result = lungdeepreg("register", "--fixed", small_pair["fixed"], "--moving",
                         tmp_path / "missing.nrrd", "--out", out, "--model", "none")
    assert result.returncode == 2 and "missing.nrrd: file not found" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_two_start_model_refines_from_the_better_start(small_pair, tmp_path):
    """A network trained on motion with its affine part (the shipped lungdeepreg-popi-cpu)
    runs from two starts; the refinement starts from the better network result and from
    the affine alone, and records which one it continued."""
    out = tmp_path / "out"
    result = lungdeepreg("register", "--fixed", small_pair["fixed"], "--moving",
                         small_pair["moving"], "--out", out, "--no-report",
                         "--model", "lungdeepreg-popi-cpu",
                         "--fixed-landmarks", small_pair["fixed_landmarks"],
                         "--moving-landmarks", small_pair["moving_landmarks"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    start = metrics["run"]["network_start"]
    assert set(start["ngf_in_lung"]) == {"affine, no network", "affine", "identity"}
    coarse = start["ngf_in_lung_after_coarse_levels"]
    if start["trusted"]:  # the network's start alone (test below)
        assert coarse == {} and start["refined_from"] == start["start"]
    elif start["dropped"]:  # the affine start alone (test below)
        assert coarse == {} and start["refined_from"] == "affine, no network"
    else:
        assert len(coarse) == 2 and "affine, no network" in coarse
        assert start["refined_from"] == min(coarse, key=coarse.get)
    assert "affine, no network" in start["ngf_in_lung_final"]
    assert {"network", "instance optimisation"} <= set(metrics["run"]["runtime_s"])
    landmarks = metrics["landmarks"]
    assert landmarks["after"]["mean"] < 0.5 * landmarks["before"]["mean"]


@pytest.mark.parametrize("ratio", [0.0, 1e9], ids=["never", "always"])
def test_a_trusted_network_start_is_refined_alone(small_pair, tmp_path, monkeypatch, ratio):
    """When the network matches far better than the affine start, only its short schedule
    runs; the affine start is still compared at the end, so nothing worse can be kept."""
    monkeypatch.setattr(register_module, "trust_ratio", lambda card: ratio)  # the card's
    monkeypatch.setattr(network, "DROP_RATIO", float("inf"))  # this pair's network is worse
    inputs = RegistrationInputs(fixed=small_pair["fixed"], moving=small_pair["moving"])
    metrics = register(inputs, tmp_path / "out", RegistrationOptions(report=False)).metrics
    start = metrics["run"]["network_start"]
    assert start["trusted"] is (ratio > 1)
    coarse = start["ngf_in_lung_after_coarse_levels"]
    if ratio > 1:
        assert coarse == {}
    else:  # the affine start and the better network start, each on its coarse levels
        assert len(coarse) == 2 and "affine, no network" in coarse
    final = start["ngf_in_lung_final"]
    assert {"affine, no network", "identity, no registration", "refined"} <= set(final)
    assert final[start["kept"]] == min(final.values())


@pytest.mark.parametrize("ratio", [float("inf"), 0.0], ids=["never", "always"])
def test_an_outmatched_network_start_is_compared_but_not_refined(small_pair, tmp_path,
                                                                 monkeypatch, ratio):
    """When the network matches far worse than the affine start, the refinement runs from
    the affine start alone; the network's start is still compared at the end."""
    monkeypatch.setattr(network, "DROP_RATIO", ratio)
    monkeypatch.setattr(register_module, "trust_ratio", lambda card: 0.0)  # never trusted
    inputs = RegistrationInputs(fixed=small_pair["fixed"], moving=small_pair["moving"])
    metrics = register(inputs, tmp_path / "out", RegistrationOptions(report=False)).metrics
    start = metrics["run"]["network_start"]
    assert start["dropped"] is (ratio == 0.0) and not start["trusted"]
    coarse, final = start["ngf_in_lung_after_coarse_levels"], start["ngf_in_lung_final"]
    if start["dropped"]:
        assert coarse == {} and start["refined_from"] == "affine, no network"
    else:
        assert len(coarse) == 2
    assert {"affine, no network", start["start"], "identity, no registration",
            "refined"} <= set(final)
    assert final[start["kept"]] == min(final.values())


def test_an_affine_free_model_runs_from_the_affine_start_alone(small_pair, tmp_path):
    """A model whose card says it learnt motion without its affine part
    (``data.affine_free``) runs once, after the affine pre-alignment; the identity start,
    whose global motion it never saw, is not tried."""
    model, card = load_model("lungdeepreg-popi-cpu")
    card["training"]["data"]["affine_free"] = True
    weights = save_model(model, tmp_path, "affine-free", {**card, "name": "affine-free"})
    inputs = RegistrationInputs(fixed=small_pair["fixed"], moving=small_pair["moving"])
    options = RegistrationOptions(model=str(weights), report=False)
    start = register(inputs, tmp_path / "out", options).metrics["run"]["network_start"]
    assert set(start["ngf_in_lung"]) == {"affine, no network", "affine"}
    assert start["refined_from"] in ("affine, no network", "affine")


def test_affine_prealignment_is_repeatable(small_pair):
    """The random metric sampling has a fixed seed (SimpleITK's seed 0 is the wall clock,
    which once made every run's transform, and so every registration, differ)."""
    from LungDeepRegLib.pipeline.affine import affine_prealign

    fixed = sitk.ReadImage(str(small_pair["fixed"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(small_pair["moving"]), sitk.sitkFloat32)
    first, second, other = (np.asarray(affine_prealign(fixed, moving, iterations=20,
                                                       seed=seed).GetParameters())
                            for seed in (1, 1, 7))
    # equal up to the order of the metric's multi-threaded sums; another seed samples
    # other voxels
    assert np.abs(first - second).max() < 1e-6
    assert np.abs(first - other).max() > 1e-4
    with pytest.raises(ValueError, match="fixed seed"):
        affine_prealign(fixed, moving, seed=0)
