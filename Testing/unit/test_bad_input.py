"""Bad input to ``register`` is refused before any work: one ``error: <file or option>:
<problem>`` line, exit code 2, no traceback, nothing in ``--out``; a re-used ``--out``
holds the new run's outputs only.

Real files: the POPI light pair (100x100x47 at 5x5x6 mm) and its elastix point landmarks, and
damaged or unsuitable files derived from them in a temporary folder. The command line runs as
a real subprocess for the cases whose exit code and stderr matter; the rest call the Python
API (each subprocess costs about 3 s of interpreter and torch start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.pipeline.outputs import output_names
from LungDeepRegLib.pipeline.register import (
    RegistrationInputs,
    RegistrationOptions,
    register,
)
from LungDeepRegLib.pipeline.validate import check_ct, check_out_dir

FAST = ("--model", "none", "--refine-iterations", "3", "--no-report")


def lungdeepreg(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "LungDeepRegLib", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _write(array: np.ndarray, like: sitk.Image | None, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    sitk.WriteImage(image, str(path))
    return path


def _landmarks_with(source: Path, row: int, text: str, path: Path) -> Path:
    """An elastix point file with landmark ``row`` (0-based) replaced by ``text``."""
    lines = source.read_text().splitlines()
    lines[2 + row] = text  # after the "point" header and the count
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def case(shared_data, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    light, points = shared_data / "popi_light", shared_data / "popi" / "landmarks_lps"
    moving = light / "popi_light_50.nii.gz"
    image = sitk.ReadImage(str(moving))
    data = moving.read_bytes()
    (folder / "half.nii.gz").write_bytes(data[:len(data) // 2])
    (folder / "cut10k.nii.gz").write_bytes(data[:10_000])
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "notes.nii.gz").write_text("this is not an image\n")
    small = sitk.GetImageFromArray(np.full((10, 16, 16), -500, np.int16))
    small.SetSpacing((5.0, 5.0, 6.0))
    sitk.WriteImage(small, str(folder / "small.nii.gz"))
    rng = np.random.default_rng(0)
    _write(rng.integers(-1000, 500, (8, 8, 8)).astype(np.int16), None, folder / "tiny.nii.gz")
    _write(np.full((47, 100, 100), -1000, np.int16), image, folder / "constant.nii.gz")
    mr_like = sitk.Cast(sitk.RescaleIntensity(image, 0, 255), sitk.sitkUInt8)
    sitk.WriteImage(mr_like, str(folder / "mr_like.nii.gz"))
    (folder / "afile").write_text("not a folder\n")
    return {
        "folder": folder, "fixed": light / "popi_light_00.nii.gz", "moving": moving,
        "fixed_landmarks": points / "popi_00_points.txt",
        "moving_landmarks": points / "popi_50_points.txt",
        "fixed_outside": _landmarks_with(points / "popi_00_points.txt", 4, "-900 0 0",
                                         folder / "fixed_outside.txt"),
        "moving_outside": _landmarks_with(points / "popi_50_points.txt", 2, "500 500 500",
                                          folder / "moving_outside.txt"),
    }


def assert_refused(result: subprocess.CompletedProcess, named: str, problem: str,
                   out: Path) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert named in errors[0] and problem in errors[0], errors[0]
    assert not out.is_dir() or not any(out.iterdir()), sorted(out.iterdir())


# moving file (or replacement option), the name the error line must carry, its problem
CLI_CASES = {
    "half-length gzip": ("half.nii.gz", "half.nii.gz", "is truncated"),
    "constant moving image": ("constant.nii.gz", "constant.nii.gz", "does not look like a CT"),
    "text file": ("notes.nii.gz", "notes.nii.gz", "Unable to determine ImageIO reader"),
    "unknown device": ("--device tpu", "--device", "unknown device 'tpu'"),
}


@pytest.mark.parametrize("name", CLI_CASES)
def test_register_refuses_bad_input_before_any_work(case, tmp_path, name):
    given, named, problem = CLI_CASES[name]
    args = {"--fixed": case["fixed"], "--moving": case["moving"], "--out": tmp_path / "out"}
    option, _, value = given.partition(" ")
    if value:
        args[option] = value
    else:
        args["--moving"] = case["folder"] / given
    result = lungdeepreg("register", *[x for pair in args.items() for x in pair], *FAST)
    assert_refused(result, named, problem, tmp_path / "out")


@pytest.mark.parametrize("where", ["existing file", "below a file"])
def test_register_refuses_an_out_that_cannot_be_a_folder(case, where):
    out = case["folder"] / "afile" / ("" if where == "existing file" else "out")
    result = lungdeepreg("register", "--fixed", case["fixed"], "--moving", case["moving"],
                         "--out", out, *FAST)
    assert_refused(result, str(out), "file", out)
    assert (case["folder"] / "afile").read_text() == "not a folder\n"


@pytest.mark.parametrize("side", ["fixed", "moving"])
def test_landmarks_outside_their_own_image_are_refused_before_registering(case, tmp_path,
                                                                          side):
    out = tmp_path / "out"
    fixed = case["fixed_outside"] if side == "fixed" else case["fixed_landmarks"]
    moving = case["moving_outside"] if side == "moving" else case["moving_landmarks"]
    result = lungdeepreg("register", "--fixed", case["fixed"], "--moving", case["moving"],
                         "--out", out, "--fixed-landmarks", fixed, "--moving-landmarks",
                         moving, "--landmark-format", "elastix-point", *FAST)
    named = (fixed if side == "fixed" else moving).name
    assert_refused(result, named, "outside the image", out)
    assert "PROGRESS" not in result.stderr  # refused before the first step


@pytest.mark.parametrize(("side", "name", "problem"), [
    ("moving", "cut10k.nii.gz", "is truncated"), ("moving", "empty.nii.gz", "is empty (0 bytes)"),
    ("moving", "tiny.nii.gz", "too small to register"),
    ("moving", "mr_like.nii.gz", "does not look like a CT: it is stored as 8-bit"),
    ("fixed", "small.nii.gz", "(16, 16, 10) voxels, 80 x 80 x 60 mm")])
def test_damaged_or_unsuitable_files_are_refused_by_the_api(case, tmp_path, side, name,
                                                            problem):
    inputs = RegistrationInputs(fixed=case["fixed"], moving=case["moving"])
    setattr(inputs, side, case["folder"] / name)
    with pytest.raises(InputError) as refused:
        register(inputs, tmp_path / "out", RegistrationOptions(model="none"))
    assert problem in refused.value.problem
    assert refused.value.source == str(case["folder"] / name)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".nii", ".mha", ".mhd"])
def test_truncated_uncompressed_files_are_refused(case, tmp_path, suffix):
    """ITK zero-fills a short .nii; a short MetaImage gives it a misleading cause."""
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(case["moving"])), str(whole), False)
    data_file = whole.with_suffix(".raw") if suffix == ".mhd" else whole
    data_file.write_bytes(data_file.read_bytes()[:-100_000])
    with pytest.raises(InputError, match="is truncated: it holds") as refused:
        read_image(whole)
    assert "940000" in str(refused.value)  # 100x100x47 int16


def test_unusable_devices_and_options_are_named():
    inputs = RegistrationInputs(fixed=Path("unused.nii.gz"), moving=Path("unused.nii.gz"))
    bad = {"--device": {"device": "cuda:99" if torch.cuda.is_available() else "cuda"},
           "--refine-iterations": {"refine_iterations": -1}, "--threads": {"threads": 0},
           "--output-spacing": {"output_spacing_mm": float("nan")},
           "--similarity": {"similarity": "mutual-information"},
           "--similarity-weight": {"similarity": "mind", "similarity_weight": 0.0},
           "--similarity-region": {"similarity_region": "body"}}
    for option, values in bad.items():
        with pytest.raises(InputError) as refused:
            register(inputs, Path("never-created"), RegistrationOptions(**values))
        assert refused.value.source == option
    assert not Path("never-created").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_out_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(InputError, match="cannot write"):
        check_out_dir(locked / "out")


def test_ct_stored_with_an_offset_is_not_refused(case):
    """Unsigned storage (HU + 1024: air near 0, bone near 3000) is still a CT here."""
    shifted = sitk.Cast(sitk.ReadImage(str(case["moving"])) + 1024, sitk.sitkUInt16)
    path = case["folder"] / "offset.nii.gz"
    sitk.WriteImage(shifted, str(path))
    check_ct(sitk.ReadImage(str(path)), path)


def test_exclude_outside_drops_both_sides_and_keeps_the_numbering(case, tmp_path):
    """--exclude-outside: a fixed (#5) and a moving (#3) landmark outside their images are
    dropped with a warning, counted as excluded, and the other pairs keep their numbers.
    Each re-use of the folder leaves the new run's outputs only (a report of an earlier
    run, then the landmark files), beside the user's own file."""
    out = tmp_path / "out"
    out.mkdir()
    for earlier in ("report.html", "report_tre.png", "metrics.json"):
        (out / earlier).write_text("from an earlier run")
    inputs = RegistrationInputs(
        fixed=case["fixed"], moving=case["moving"], fixed_landmarks=case["fixed_outside"],
        moving_landmarks=case["moving_outside"], landmark_format="elastix-point")
    options = RegistrationOptions(model="none", refine_iterations=2, threads=2, report=False,
                                  exclude_outside_landmarks=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        register(inputs, out, options)
    said = " ".join(str(w.message) for w in caught)
    assert "moving_outside.txt: landmarks #3" in said and "#5 (-900.00" in said
    landmarks = json.loads((out / "metrics.json").read_text())["landmarks"]
    assert landmarks["after"]["n"] == 39 and landmarks["after"]["excluded"] == 2
    numbers = [row["index"] for row in landmarks["per_landmark"]]
    assert 3 not in numbers and 5 not in numbers and numbers[:4] == [1, 2, 4, 6]
    first = {path.name for path in out.iterdir()}
    assert first <= set(output_names()), first - set(output_names())
    assert {"fixed_landmarks_tre.mrk.json", "landmark_qa.csv"} <= first
    assert not first & {"report.html", "report_tre.png"}

    (out / "my_notes.txt").write_text("keep me")
    stale = out / ".field.nrrd.abc123.partial"  # what a killed run leaves
    stale.mkdir()
    (stale / "field.nrrd").write_bytes(b"half")
    again = RegistrationInputs(fixed=case["fixed"], moving=case["moving"])
    register(again, out, RegistrationOptions(model="none", refine_iterations=0, threads=2,
                                             report=False))
    left = {path.name for path in out.iterdir()}
    assert left == {"field.nrrd", "field.h5", "warped_moving.nrrd", "fixed_lungs.nrrd",
                    "jacobian.nrrd", "metrics.json", "my_notes.txt"}, left
    assert json.loads((out / "metrics.json").read_text())["run"]["inputs"][
        "fixed_landmarks"] is None
