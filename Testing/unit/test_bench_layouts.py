"""DIR-Lab 4DCT and COPDgene folder readers on fake trees of real data.

The trees hold full-size raw ``.img`` files (little-endian int16, HU + 1024, each case's
shipped geometry) resampled from the real POPI breathing pair (phase 00 inhale, 50 exhale),
and the real landmark files under the naming variations found in the wild. With the identity
the readers must give the published initial TREs; a broken case must come back as a
CaseError naming the file while the others load.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.benchmarks.case import BenchCase, CaseError
from LungDeepRegLib.benchmarks.copdgene import discover_copdgene, locate_copdgene
from LungDeepRegLib.benchmarks.dirlab import discover_dirlab, locate_dirlab
from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.geometry import case_grid, geometry_table
from LungDeepRegLib.metrics.landmarks import TREProtocol, summarize, target_registration_error
from LungDeepRegLib.spatial import Grid

ROLES = ("fixed", "moving", "fixed_points", "moving_points")
DIRLAB_CASES = range(1, 11)
COPD_CASES = range(1, 5)  # the cases with landmarks in ../shared/data
PUBLISHED_COPDGENE = {1: (26.33, 11.42), 2: (21.79, 6.46), 3: (12.64, 6.38), 4: (29.58, 12.92)}
Placement = Callable[[int], dict[str, str]]  # case number -> role -> path under the root


# --------------------------------------------------------------------------- fake data
def _stored_volume(ct: sitk.Image, grid: Grid) -> np.ndarray:
    """The whole CT stretched over the case's voxels, as the stored int16 (HU + 1024).

    Sampled at a quarter of the in-plane and half of the slice count, then repeated up to
    the full size: real anatomy (lungs included) at the exact geometry, written in a blink.
    """
    factors = np.array([4, 4, 2])
    coarse = np.array([math.ceil(s / f) for s, f in zip(grid.size, factors, strict=True)])
    extent = (np.array(ct.GetSize()) - 1) * np.array(ct.GetSpacing())
    reference = sitk.Image(coarse.tolist(), sitk.sitkFloat32)
    reference.SetSpacing((extent / (coarse - 1)).tolist())
    reference.SetOrigin(ct.GetOrigin())
    reference.SetDirection(ct.GetDirection())
    hu = sitk.GetArrayFromImage(sitk.Resample(ct, reference, sitk.Transform(), sitk.sitkLinear,
                                              -1024.0, sitk.sitkFloat32))
    stored = np.clip(np.rint(hu) + 1024, 0, 4095).astype("<i2")
    (fx, fy, fz), (cz, cy, cx) = factors, stored.shape
    full = np.broadcast_to(stored[:, None, :, None, :, None], (cz, fz, cy, fy, cx, fx))
    return full.reshape(cz * fz, cy * fy, cx * fx)[: grid.size[2], : grid.size[1], : grid.size[0]]


def _write_images(folder: Path, shared: Path, dataset: str, cases: range,
                  phases: tuple[str, str]) -> dict[tuple[int, str], Path]:
    """One raw file per case and phase (inhale from POPI 00, exhale from POPI 50)."""
    folder.mkdir(parents=True)
    cts = [sitk.ReadImage(str(shared / "popi_light" / f"popi_light_{p}.nii.gz"))
           for p in ("00", "50")]
    written, by_grid = {}, {}  # cases of the same geometry share their files
    for case in cases:
        grid = case_grid(dataset, case)
        for phase, ct in zip(phases, cts, strict=True):
            if (grid, phase) not in by_grid:
                by_grid[grid, phase] = folder / f"{case}_{phase}.img"
                _stored_volume(ct, grid).tofile(by_grid[grid, phase])
            written[case, phase] = by_grid[grid, phase]
    return written


@pytest.fixture(scope="module")
def dirlab_store(shared_data: Path, tmp_path_factory) -> dict[tuple[int, str], Path]:
    return _write_images(tmp_path_factory.mktemp("store") / "dirlab", shared_data, "dirlab",
                         DIRLAB_CASES, ("T00", "T50"))


@pytest.fixture(scope="module")
def copd_store(shared_data: Path, tmp_path_factory) -> dict[tuple[int, str], Path]:
    return _write_images(tmp_path_factory.mktemp("store") / "copd", shared_data, "copdgene",
                         COPD_CASES, ("iBH", "eBH"))


def _link(source: Path, target: Path) -> None:
    """A hard link (no second copy of the large images); a copy where links fail."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _build(root: Path, cases: Iterable[int], placement: Placement, images: dict, phases: tuple,
           landmark: Callable[[int, str], Path], header_beside: bool = False) -> dict:
    """Lay the store's images and the real landmark files out as ``placement`` says."""
    placed = {}
    for case in cases:
        paths = {role: root / rel for role, rel in placement(case).items()}
        for role, phase in zip(ROLES, phases + phases, strict=True):
            if role in ("fixed", "moving"):
                _link(images[case, phase], paths[role])
                if header_beside:  # e.g. an ITK header a user wrote to view the raw file
                    paths[role].with_suffix(".mhd").write_text(
                        f"ElementDataFile = {paths[role].name}\n")
            else:
                paths[role].parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(landmark(case, phase), paths[role])
        placed[case] = paths
    return placed


def _dirlab_landmark(shared: Path) -> Callable[[int, str], Path]:
    return lambda case, phase: shared / "dirlab_landmarks" / f"Case{case}_300_{phase}_xyz.txt"


def _copd_landmark(shared: Path) -> Callable[[int, str], Path]:
    return lambda case, phase: (shared / "copdgene_landmarks"
                                / f"copd{case}_300_{phase}_xyz_r1.txt")


# --------------------------------------------------------------------------- layouts
def dirlab_official(n: int) -> dict[str, str]:
    """The distribution as downloaded: cases 1-5 and 6-10 are named differently."""
    folder = f"Case{n}Deploy" if n == 8 else f"Case{n}Pack"
    if n <= 5:
        images, points = f"{folder}/Images/case{n}_T%s_s.img", f"Case{n}_300_T%s_xyz.txt"
        points = f"{folder}/ExtremePhases/{points}"
    else:
        images, points = f"{folder}/Images/case{n}_T%s.img", f"case{n}_dirLab300_T%s_xyz.txt"
        points = f"{folder}/extremePhases/{points}"
    return {"fixed": images % "00", "moving": images % "50",
            "fixed_points": points % "00", "moving_points": points % "50"}


def dirlab_lowercase(n: int) -> dict[str, str]:
    return {"fixed": f"case{n}pack/images/case{n}_t00_s.img",
            "moving": f"case{n}pack/images/case{n}_t50_s.img",
            "fixed_points": f"case{n}pack/extremephases/case{n}_300_t00_xyz.txt",
            "moving_points": f"case{n}pack/extremephases/case{n}_300_t50_xyz.txt"}


def dirlab_flat_upper(n: int) -> dict[str, str]:
    """Everything in one folder two levels down, upper case, ``-ssm`` and dirLab300 names."""
    return {"fixed": f"DIRLAB/4DCT/CASE{n}_T00-ssm.IMG",
            "moving": f"DIRLAB/4DCT/CASE{n}_T50.img",
            "fixed_points": f"DIRLAB/4DCT/Case{n}_dirLab300_T00_xyz.TXT",
            "moving_points": f"DIRLAB/4DCT/CASE{n}_300_T50_XYZ.txt"}


def copd_official(n: int) -> dict[str, str]:
    """As the zip unpacks: copdN/copdN/..."""
    return {"fixed": f"copd{n}/copd{n}/copd{n}_iBHCT.img",
            "moving": f"copd{n}/copd{n}/copd{n}_eBHCT.img",
            "fixed_points": f"copd{n}/copd{n}/copd{n}_300_iBH_xyz_r1.txt",
            "moving_points": f"copd{n}/copd{n}/copd{n}_300_eBH_xyz_r1.txt"}


def copd_upper(n: int) -> dict[str, str]:
    return {"fixed": f"COPD{n}/COPD{n}_IBHCT.IMG", "moving": f"COPD{n}/copd{n}_EBHCT.img",
            "fixed_points": f"COPD{n}/landmarks/COPD{n}_300_IBH_XYZ.txt",
            "moving_points": f"COPD{n}/landmarks/copd{n}_300_eBH_xyz_r2.txt"}


# --------------------------------------------------------------------------- helpers
def _identity_errors(case: BenchCase) -> np.ndarray:
    """Initial TRE: no mapping, measured with the case's own protocol on its own grid."""
    return target_registration_error(case.fixed_points, case.moving_points, None,
                                     Grid.from_image(case.fixed), case.protocol)


def _assert_published(summary: dict, published: tuple[float, float]) -> None:
    assert abs(summary["mean"] - published[0]) <= 0.005 + 1e-9, summary
    assert abs(summary["sd"] - published[1]) <= 0.005 + 1e-9, summary


def _assert_found(found: list, placed: dict) -> None:
    assert [item.number for item in found] == list(placed), found
    for item in found:
        for role in ROLES:
            assert item.paths[role].samefile(placed[item.number][role]), (item, role)


def _errors(results: list) -> dict[str, CaseError]:
    return {item.name: item for item in results if isinstance(item, CaseError)}


# --------------------------------------------------------------------------- DIR-Lab
def test_dirlab_all_ten_cases_reproduce_the_published_initial_tre(
        shared_data, dirlab_store, tmp_path):
    root = tmp_path / "DIR-Lab"
    placed = _build(root, DIRLAB_CASES, dirlab_official, dirlab_store, ("T00", "T50"),
                    _dirlab_landmark(shared_data))
    _assert_found(locate_dirlab(root), placed)
    cases = discover_dirlab(root)
    assert [case.name for case in cases] == [f"case{n}" for n in DIRLAB_CASES]
    assert all(isinstance(case, BenchCase) for case in cases), _errors(cases)
    published = geometry_table("dirlab")["published_initial_tre_mm"]
    pooled = []
    for n, case in zip(DIRLAB_CASES, cases, strict=True):
        assert Grid.from_image(case.fixed) == Grid.from_image(case.moving) == case_grid(
            "dirlab", n)
        assert case.protocol == TREProtocol.dirlab(True)
        assert case.sources == {role: str(path) for role, path in placed[n].items()}
        errors = _identity_errors(case)
        _assert_published(summarize(errors), tuple(published[str(n)]))
        pooled.append(errors)
    _assert_published(summarize(_identity_errors(cases[0])), (3.89, 2.78))
    _assert_published(summarize(_identity_errors(cases[7])), (14.99, 9.00))
    summary = summarize(np.concatenate(pooled))
    assert summary["n"] == 3000
    _assert_published(summary, (8.46, 6.58))
    # intensities: the stored HU + 1024 comes back as HU (clipped to the CT range)
    stored = np.fromfile(dirlab_store[1, "T50"], dtype="<i2")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(cases[0].moving).ravel(),
                                  np.clip(stored - 1024.0, -1024, 3071))


@pytest.mark.parametrize("placement", [dirlab_lowercase, dirlab_flat_upper],
                         ids=["lowercase", "flat-upper-ssm-dirLab300"])
def test_dirlab_naming_variations(shared_data, dirlab_store, tmp_path, placement):
    root = tmp_path / "copy"
    placed = _build(root, DIRLAB_CASES, placement, dirlab_store, ("T00", "T50"),
                    _dirlab_landmark(shared_data), header_beside=True)
    _assert_found(locate_dirlab(root), placed)
    cases = discover_dirlab(root, cases=[1, "Case5"], round_to_voxel=False)
    assert [case.name for case in cases] == ["case1", "case5"], _errors(cases)
    assert cases[0].protocol == TREProtocol.dirlab(False)
    _assert_published(summarize(_identity_errors(cases[0])), (3.89, 2.78))
    _assert_published(summarize(_identity_errors(cases[1])), (7.48, 5.50))


def test_dirlab_malformed_tree_reports_each_broken_case(shared_data, dirlab_store, tmp_path):
    root = tmp_path / "broken"
    placed = _build(root, [1, 3, 4, 5, 6], dirlab_official, dirlab_store, ("T00", "T50"),
                    _dirlab_landmark(shared_data))
    placed[3]["moving"].unlink()  # not the store's file: unlink before writing a short one
    placed[3]["moving"].write_bytes(bytes(1000))
    rows = placed[4]["fixed_points"].read_text().splitlines()
    placed[4]["fixed_points"].write_text("\n".join(rows[:299]) + "\n")
    placed[5]["moving_points"].write_text(placed[5]["moving_points"].read_text()
                                          .replace("\n", "\n1 x 3\n", 1))
    for role in ("fixed", "moving"):
        placed[6][role].unlink()
    results = discover_dirlab(root)
    assert [item.name for item in results] == [f"case{n}" for n in DIRLAB_CASES]
    assert isinstance(results[0], BenchCase)
    _assert_published(summarize(_identity_errors(results[0])), (3.89, 2.78))
    errors = _errors(results)
    assert sorted(errors) == sorted(f"case{n}" for n in DIRLAB_CASES if n != 1)
    assert errors["case2"].source == str(root / "Case2Pack")
    assert "case folder not found" in errors["case2"].problem
    assert errors["case3"].source == str(placed[3]["moving"])
    assert "file size 1000 bytes" in errors["case3"].problem
    assert errors["case4"].source == str(placed[4]["fixed_points"])
    assert "holds 299 landmarks" in errors["case4"].problem
    assert errors["case5"].source == str(placed[5]["moving_points"])
    assert "non-numeric value 'x'" in errors["case5"].problem
    assert errors["case6"].source == str(root / "Case6Pack" / "Images" / "case6_T00_s.img")
    assert "T00 image not found" in errors["case6"].problem
    for n in range(7, 11):
        assert "case folder not found" in errors[f"case{n}"].problem
    assert str(errors["case4"]).startswith(f"case4: {placed[4]['fixed_points']}: ")


def test_dirlab_ambiguous_files_and_bad_requests(shared_data, dirlab_store, tmp_path):
    root = tmp_path / "twice"
    placed = _build(root, [1], dirlab_official, dirlab_store, ("T00", "T50"),
                    _dirlab_landmark(shared_data))
    _link(placed[1]["fixed"], root / "old" / "case1_T00.img")
    (error,) = discover_dirlab(root, cases=[1])
    assert isinstance(error, CaseError) and "2 files could be the T00 image" in error.problem
    with pytest.raises(InputError, match="unknown case"):
        discover_dirlab(root, cases=[11])
    with pytest.raises(InputError, match="root folder not found"):
        discover_dirlab(tmp_path / "nowhere")


# --------------------------------------------------------------------------- COPDgene
def test_copdgene_initial_tre(shared_data, copd_store, tmp_path):
    root = tmp_path / "COPDgene"
    placed = _build(root, COPD_CASES, copd_official, copd_store, ("iBH", "eBH"),
                    _copd_landmark(shared_data))
    _assert_found(locate_copdgene(root, COPD_CASES), placed)
    results = discover_copdgene(root)  # all ten asked for: 5..10 are not in this copy
    assert sorted(_errors(results)) == sorted(f"copd{n}" for n in range(5, 11))
    for n, case in zip(COPD_CASES, results[:4], strict=True):
        assert isinstance(case, BenchCase) and case.name == f"copd{n}"
        assert Grid.from_image(case.fixed) == Grid.from_image(case.moving) == case_grid(
            "copdgene", n)
        assert case.protocol == TREProtocol.dirlab(True)
        _assert_published(summarize(_identity_errors(case)), PUBLISHED_COPDGENE[n])


def test_copdgene_naming_and_header_variations(shared_data, copd_store, tmp_path):
    root = tmp_path / "copy"
    placed = _build(root, COPD_CASES, copd_upper, copd_store, ("iBH", "eBH"),
                    _copd_landmark(shared_data), header_beside=True)
    for case in COPD_CASES:  # swap the headers: iBH bare, eBH with an 'index' header
        ibh, ebh = placed[case]["fixed_points"], placed[case]["moving_points"]
        ibh.write_text("\n".join(ibh.read_text().splitlines()[2:]) + "\n")
        ebh.write_text("index\n300\n" + ebh.read_text())
    _assert_found(locate_copdgene(root, COPD_CASES), placed)
    (case,) = discover_copdgene(root, cases=["COPD2"], round_to_voxel=False)
    assert isinstance(case, BenchCase) and case.protocol == TREProtocol.dirlab(False)
    _assert_published(summarize(_identity_errors(case)), PUBLISHED_COPDGENE[2])


def test_copdgene_malformed_tree(shared_data, copd_store, tmp_path):
    root = tmp_path / "broken"
    placed = _build(root, COPD_CASES, copd_official, copd_store, ("iBH", "eBH"),
                    _copd_landmark(shared_data))
    placed[1]["fixed"].unlink()  # a hard link to the store: unlink before writing
    placed[1]["fixed"].write_bytes(bytes(2 * 512 * 512 * 120))  # copd1 has 121 slices
    placed[3]["fixed"].unlink()
    rows = placed[4]["moving_points"].read_text().splitlines()
    placed[4]["moving_points"].write_text("\n".join(rows[:299]) + "\n")
    results = discover_copdgene(root, cases=["copd1", 2, "3", 4])
    errors = _errors(results)
    assert sorted(errors) == ["copd1", "copd3", "copd4"]
    assert errors["copd1"].source == str(placed[1]["fixed"])
    assert "does not match the geometry (512, 512, 121)" in errors["copd1"].problem
    assert errors["copd3"].source == str(placed[3]["fixed"])
    assert "iBH image not found" in errors["copd3"].problem
    assert errors["copd4"].source == str(placed[4]["moving_points"])
    assert "holds 299 landmarks" in errors["copd4"].problem
    assert isinstance(results[1], BenchCase)
    _assert_published(summarize(_identity_errors(results[1])), PUBLISHED_COPDGENE[2])


# --------------------------------------------------------------------------- end to end
def test_bench_dirlab_command_reports_initial_tre_and_broken_case(
        shared_data, dirlab_store, tmp_path):
    """``lungdeepreg bench dirlab`` as a real subprocess on a 2-case tree, case 2 broken."""
    root, out = tmp_path / "DIR-Lab", tmp_path / "results"
    placed = _build(root, [1, 2], dirlab_official, dirlab_store, ("T00", "T50"),
                    _dirlab_landmark(shared_data))
    rows = placed[2]["moving_points"].read_text().splitlines()
    placed[2]["moving_points"].write_text("\n".join(rows[:299]) + "\n")
    command = [sys.executable, "-m", "LungDeepRegLib", "bench", "dirlab", "--root", str(root),
               "--out", str(out), "--methods", "identity", "--cases", "case1,case2",
               "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # 1: a case could not be run
    assert "identity: 1 case(s), TRE 3.89 (2.78) mm" in done.stdout, done.stdout
    broken = f"{placed[2]['moving_points']}: holds 299 landmarks"
    assert broken in done.stderr
    results = json.loads((out / "results.json").read_text())
    by_case = {row["case"]: row for row in results["rows"]}
    assert by_case["case1"]["status"] == "done"
    for key in ("tre_initial", "tre"):  # the identity moves nothing: both are the initial
        _assert_published(by_case["case1"][key], (3.89, 2.78))
        assert by_case["case1"][key]["n"] == 300
    assert by_case["case1"]["protocol"] == TREProtocol.dirlab(True).to_dict()
    assert by_case["case2"]["status"] == "case error" and broken in by_case["case2"]["error"]
    with (out / "results.csv").open(newline="") as table:
        csv_rows = {row["case"]: row for row in csv.DictReader(table)}
    assert round(float(csv_rows["case1"]["tre_mean"]), 2) == 3.89
    assert round(float(csv_rows["case1"]["tre_sd"]), 2) == 2.78
    assert broken in csv_rows["case2"]["error"]
    markdown = (out / "results.md").read_text()
    assert "| case1 | 3.89 (2.78) |" in markdown and broken in markdown
