"""The command line, run as real subprocesses: info, evaluate, and bad input (exit 2, named
file, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.io.transforms import write_field
from LungDeepRegLib.spatial import Grid


def lungdeepreg(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "LungDeepRegLib", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def small_case(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The tiny real CT (cip ct-64), a smooth known field on it and landmarks in the lung."""
    folder = tmp_path_factory.mktemp("case")
    ct = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))
    sitk.WriteImage(ct, str(folder / "fixed.nrrd"))
    grid = Grid.from_image(ct)
    points = grid.points(dtype=torch.float64)
    shift = torch.stack((2.0 + 0 * points[..., 0], 0 * points[..., 0],
                         3.0 * torch.sin(points[..., 2] / 40.0)), dim=-1)
    field = shift.movedim(-1, 0)[None]
    write_field(field, grid, folder / "field.nrrd")
    centre = np.asarray(grid.index_to_physical(np.array(grid.size) / 2.0))
    fixed = centre + np.random.default_rng(1).uniform(-30, 30, size=(20, 3))
    moving = fixed + np.array([2.0, 0.0, 0.0]) + np.stack(
        [np.zeros(20), np.zeros(20), 3.0 * np.sin(fixed[:, 2] / 40.0)], axis=1)
    np.savetxt(folder / "fixed.csv", fixed, delimiter=",", header="x,y,z", comments="")
    np.savetxt(folder / "moving.csv", moving, delimiter=",", header="x,y,z", comments="")
    return {"folder": folder, "fixed": folder / "fixed.nrrd", "field": folder / "field.nrrd",
            "fixed_landmarks": folder / "fixed.csv", "moving_landmarks": folder / "moving.csv"}


def test_info_reports_versions_and_device():
    result = lungdeepreg("info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert report["device"]["default"] in ("cpu", "cuda")
    assert isinstance(report["models"], list)
    assert "device:" in lungdeepreg("info").stdout


def test_evaluate_writes_metrics(small_case, tmp_path):
    out = tmp_path / "metrics.json"
    result = lungdeepreg("evaluate", "--fixed", small_case["fixed"], "--field",
                         small_case["field"], "--fixed-landmarks", small_case["fixed_landmarks"],
                         "--moving-landmarks", small_case["moving_landmarks"], "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    landmarks = metrics["landmarks"]
    assert landmarks["before"]["mean"] > 1.5  # the known field moves points by 2 mm or more
    assert landmarks["after"]["mean"] < 0.05  # and the field explains them
    assert len(landmarks["per_landmark"]) == 20
    assert metrics["jacobian"]["folding_fraction"] == 0.0
    assert "lung mask" in metrics["jacobian"]["region"]
    assert "TRE" in result.stdout


def test_bench_names_its_suites():
    result = lungdeepreg("bench", "--help")
    assert result.returncode == 0
    for suite in ("synthetic", "pairs", "dirlab", "copdgene"):
        assert suite in result.stdout


def write_bad(folder: Path, kind: str) -> Path:
    if kind == "2d":
        path = folder / "slice.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((30, 40), np.int16)), str(path))
    elif kind == "4d":
        path = folder / "series4d.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 5, 6, 7), np.int16),
                                               isVector=False), str(path))
    else:
        path = folder / "nan.nrrd"
        array = np.zeros((5, 6, 7), np.float32)
        array[2, 3, 4] = np.nan
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


@pytest.mark.parametrize(("kind", "problem"), [
    ("missing", "file not found"), ("2d", "2-D image"), ("4d", "4-D image"),
    ("nan", "NaN or infinite")])
def test_bad_fixed_image(small_case, tmp_path, kind, problem):
    fixed = tmp_path / "absent.nrrd" if kind == "missing" else write_bad(tmp_path, kind)
    out = tmp_path / "out" / "metrics.json"
    result = lungdeepreg("evaluate", "--fixed", fixed, "--field", small_case["field"],
                         "--out", out)
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1
    assert fixed.name in result.stderr and problem in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_landmark_files(small_case, tmp_path):
    out = tmp_path / "metrics.json"
    wrong_columns = tmp_path / "four.csv"
    wrong_columns.write_text("x,y,z\n1,2,3\n4,5\n")
    result = lungdeepreg("evaluate", "--fixed", small_case["fixed"], "--field",
                         small_case["field"], "--fixed-landmarks", wrong_columns,
                         "--moving-landmarks", small_case["moving_landmarks"], "--out", out)
    assert result.returncode == 2 and "four.csv" in result.stderr
    assert not out.exists()

    shorter = tmp_path / "short.csv"
    rows = small_case["moving_landmarks"].read_text().splitlines()[:-3]
    shorter.write_text("\n".join(rows) + "\n")
    result = lungdeepreg("evaluate", "--fixed", small_case["fixed"], "--field",
                         small_case["field"], "--fixed-landmarks",
                         small_case["fixed_landmarks"], "--moving-landmarks", shorter,
                         "--out", out)
    assert result.returncode == 2 and "short.csv" in result.stderr
    assert "20" in result.stderr and "17" in result.stderr
    assert not out.exists()


def test_landmarks_outside_the_image(small_case, tmp_path):
    outside = tmp_path / "outside.csv"
    rows = small_case["fixed_landmarks"].read_text().splitlines()
    rows[3] = "900.0,900.0,900.0"
    outside.write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--fixed", small_case["fixed"], "--field", small_case["field"],
            "--fixed-landmarks", outside, "--moving-landmarks",
            small_case["moving_landmarks"], "--out", out]
    refused = lungdeepreg(*args)
    assert refused.returncode == 2 and "outside" in refused.stderr
    assert not out.exists()
    accepted = lungdeepreg(*args, "--exclude-outside")
    assert accepted.returncode == 0, accepted.stderr
    assert "outside" in accepted.stderr  # the warning names them
    landmarks = json.loads(out.read_text())["landmarks"]
    assert landmarks["after"]["n"] == 19 and landmarks["after"]["excluded"] == 1


def test_one_sided_landmarks_are_bad_input(small_case, tmp_path):
    out = tmp_path / "metrics.json"
    result = lungdeepreg("evaluate", "--fixed", small_case["fixed"], "--field",
                         small_case["field"], "--fixed-landmarks",
                         small_case["fixed_landmarks"], "--out", out)
    assert result.returncode == 2 and "fixed.csv" in result.stderr
    assert "both --fixed-landmarks and --moving-landmarks" in result.stderr
    assert not out.exists()
