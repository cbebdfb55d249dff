"""Landmark QA on the real DIR-Lab landmark files with a known smooth field: planted slips
and swaps are flagged, clean pairs are not, predicted partners are where the field maps the
fixed points, one-pair updates equal a full recomputation, exports reload, and the
``qa-landmarks`` command runs as a real subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.cli import main
from LungDeepRegLib.data.fields import breathing_field, random_smooth_field
from LungDeepRegLib.io.geometry import case_grid
from LungDeepRegLib.io.landmarks import read_landmarks, write_dirlab
from LungDeepRegLib.io.transforms import field_transform, write_field
from LungDeepRegLib.metrics.landmarks import map_points, snap_to_voxel
from LungDeepRegLib.qa import (
    OutlierRule,
    add_pair,
    correction_summary,
    error_group,
    export_landmark_set,
    find_outliers,
    pair_landmarks,
    predict_partners,
    qa_document,
    read_markups_values,
    remove_pair,
    update_pair,
    write_qa_json,
    write_qa_table,
)

SCENARIOS = [(1, 0), (4, 1), (8, 2), (10, 3)]  # (DIR-Lab case, seed)
NOISE_SD_MM = 0.63  # per axis: 1.0 mm mean annotation error, like DIR-Lab's observers
SHIFTED, SWAPS = 10, 4  # planted slips (5-15 mm) and swapped neighbour pairs


def known_field(grid, fixed: np.ndarray, seed: int) -> tuple[torch.Tensor, object]:
    """Breathing motion plus a random B-spline field on a grid of about 6 mm voxels over
    the case (smooth fields need no finer grid; the field grid need not be the image's)."""
    coarse = grid.with_size(tuple(max(8, round(n * step / 6.0))
                                  for n, step in zip(grid.size, grid.spacing, strict=True)))
    generator = torch.Generator().manual_seed(seed)
    points = coarse.points(dtype=torch.float64).numpy()
    low, high = fixed.min(axis=0) - 10.0, fixed.max(axis=0) + 10.0
    lung = torch.from_numpy(np.all((points >= low) & (points <= high), axis=-1))
    field = breathing_field(coarse, lung, generator) + random_smooth_field(coarse, generator)
    return field.float(), coarse


def plant_errors(fixed: np.ndarray, moving: np.ndarray, rng: np.random.Generator):
    """Shift ``SHIFTED`` moving points by 5-15 mm and swap ``SWAPS`` pairs' moving points
    with a near neighbour's (an annotator's mix-up; partners at least 5 mm apart)."""
    moving = moving.copy()
    order = rng.permutation(len(fixed))
    shifted = order[:SHIFTED]
    direction = rng.normal(size=(SHIFTED, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    moving[shifted] += direction * rng.uniform(5.0, 15.0, size=(SHIFTED, 1))
    used, swapped = set(shifted.tolist()), []
    for i in order[SHIFTED:]:
        if len(swapped) == 2 * SWAPS:
            break
        if int(i) in used:
            continue
        near = np.argsort(np.linalg.norm(fixed - fixed[i], axis=1))[1:]
        j = next(int(j) for j in near if j not in used
                 and np.linalg.norm(moving[j] - moving[i]) >= 5.0)
        moving[[i, j]] = moving[[j, i]]
        used |= {int(i), j}
        swapped += [int(i), j]
    return moving, shifted, np.array(swapped)


@pytest.fixture(scope="module")
def scenarios(shared_data) -> list[dict]:
    """Per case: fixed = real T00 landmarks; moving = T(fixed) + noise, on the voxel grid as
    DIR-Lab files are; then errors planted. The same known field is "the registration"."""
    built = []
    for case, seed in SCENARIOS:
        grid = case_grid("dirlab", case)
        fixed = read_landmarks(shared_data / "dirlab_landmarks" / f"Case{case}_300_T00_xyz.txt",
                               "dirlab", grid)
        field, field_grid = known_field(grid, fixed, seed)
        rng = np.random.default_rng(seed)
        clean = map_points(fixed, field, field_grid) + rng.normal(0, NOISE_SD_MM, fixed.shape)
        clean = snap_to_voxel(clean, grid)
        moving, shifted, swapped = plant_errors(fixed, clean, rng)
        built.append({"case": case, "grid": grid, "fixed": fixed, "moving": moving,
                      "clean": clean, "field": field, "field_grid": field_grid,
                      "shifted": shifted, "swapped": swapped})
    return built


def flagged_mask(report, count: int, flag: str | None = None) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    mask[[p.index for p in report.flagged if flag is None or flag in p.flags]] = True
    return mask


def test_planted_slips_and_swaps_are_flagged(scenarios):
    hits = {"shifted": [], "swapped": []}
    false_flags, clean_count = 0, 0
    for scene in scenarios:
        pairs = pair_landmarks(scene["fixed"], scene["moving"], scene["field"],
                               scene["field_grid"])
        report = find_outliers(pairs)
        flagged = flagged_mask(report, len(pairs))
        for kind in hits:
            hits[kind] += flagged[scene[kind]].tolist()
        clean = np.ones(len(pairs), bool)
        clean[np.concatenate([scene["shifted"], scene["swapped"]])] = False
        false_flags += int(flagged[clean].sum())
        clean_count += int(clean.sum())
        # flagged pairs first, each part by decreasing severity
        order = [(not p.flagged, -p.severity) for p in report.points]
        assert order == sorted(order)
        partners = {p.index: p.swap_partner for p in report.flagged}
        swapped = scene["swapped"].reshape(-1, 2)
        found = [partners.get(int(a)) == int(b) for a, b in swapped]
        assert np.mean(found) >= 0.75, f"case {scene['case']}: swaps named {found}"
    assert np.mean(hits["shifted"]) >= 0.9, hits
    assert np.mean(hits["swapped"]) >= 0.9, hits
    assert false_flags / clean_count <= 0.02, (false_flags, clean_count)


def test_local_rule_tells_annotation_errors_from_registration_errors(scenarios):
    """An imperfect registration (motion underestimated by 15 %, up to several mm of
    smooth residual error) raises everybody's TRE; the local rule still picks the slips."""
    hits, false_flags, clean_count = [], 0, 0
    for scene in scenarios:
        pairs = pair_landmarks(scene["fixed"], scene["moving"], 0.85 * scene["field"],
                               scene["field_grid"])
        local = flagged_mask(find_outliers(pairs), len(pairs), "local")
        planted = np.concatenate([scene["shifted"], scene["swapped"]])
        hits += local[planted].tolist()
        false_flags += int(local.sum() - local[planted].sum())
        clean_count += len(pairs) - len(planted)
    assert np.mean(hits) >= 0.9
    assert false_flags / clean_count <= 0.02


def test_predicted_partners_are_where_the_field_maps_the_points(scenarios):
    scene = scenarios[0]
    grid, fixed = scene["field_grid"], scene["fixed"]
    # an affine field is reproduced exactly by trilinear interpolation
    matrix = np.array([[0.02, -0.01, 0.03], [0.01, 0.015, -0.02], [-0.03, 0.01, 0.05]])
    offset = np.array([1.5, -2.0, 7.0])
    voxels = grid.points(dtype=torch.float64).numpy()
    affine = torch.from_numpy(voxels @ matrix.T + offset).movedim(-1, 0)[None]
    expected = fixed + fixed @ matrix.T + offset
    np.testing.assert_allclose(predict_partners(fixed, affine, grid), expected, atol=1e-4)
    # the breathing + B-spline field: the same points as ITK's own transform gives
    field = scene["field"].double()
    transform = field_transform(field, grid)
    itk = np.array([transform.TransformPoint(tuple(map(float, p))) for p in fixed])
    np.testing.assert_allclose(predict_partners(fixed, field, grid), itk, atol=1e-4)
    pairs = pair_landmarks(fixed, scene["moving"], field, grid)
    np.testing.assert_allclose(pairs.mapped, itk, atol=1e-4)


def test_one_pair_update_equals_full_recomputation(scenarios):
    scene = scenarios[1]
    field, grid = scene["field"], scene["field_grid"]
    pairs = pair_landmarks(scene["fixed"], scene["moving"], field, grid)
    fixed, moving = scene["fixed"].copy(), scene["moving"].copy()
    fixed[5] += [3.0, -2.0, 4.0]
    moving[9] = scene["clean"][9] + 12.0
    start = time.perf_counter()
    pairs, _ = update_pair(pairs, 5, field, grid, fixed_point=fixed[5])
    pairs, status = update_pair(pairs, 9, field, grid, moving_point=moving[9])
    report = find_outliers(pairs)
    per_move = (time.perf_counter() - start) / 2
    full = pair_landmarks(fixed, moving, field, grid)
    np.testing.assert_allclose(pairs.mapped, full.mapped, atol=1e-9)
    np.testing.assert_allclose(pairs.tre, full.tre, atol=1e-9)
    assert status.tre == pytest.approx(full.tre[9]) and status.group == "> 5 mm"
    assert report.to_dict() == find_outliers(full).to_dict()
    assert 9 in {p.index for p in report.flagged}
    assert per_move < 0.25, f"{per_move:.3f} s per point move"


def test_predicted_partner_is_unconfirmed_until_confirmed(scenarios):
    scene = scenarios[0]
    field, grid = scene["field"], scene["field_grid"]
    pairs = pair_landmarks(scene["fixed"], scene["moving"], field, grid)
    new_fixed = scene["fixed"][0] + [5.0, 5.0, 5.0]
    pairs, status = add_pair(pairs, new_fixed, field, grid)
    assert len(pairs) == 301 and status.label == "301" and not status.confirmed
    np.testing.assert_allclose(pairs.moving[-1], map_points(new_fixed[None], field, grid)[0])
    assert status.tre == 0.0 and status.group == "< 2 mm"
    moved = new_fixed + [0.0, 0.0, 10.0]  # the partner follows an unconfirmed fixed point
    pairs, status = update_pair(pairs, -1, field, grid, fixed_point=moved)
    np.testing.assert_allclose(pairs.moving[-1], map_points(moved[None], field, grid)[0])
    pairs, status = update_pair(pairs, -1, field, grid, moving_point=pairs.moving[-1] + 1.0,
                                confirmed=True)
    assert status.confirmed and status.tre == pytest.approx(np.sqrt(3.0))
    assert len(remove_pair(pairs, 0)) == 300


def test_error_groups_and_correction_summary():
    assert [error_group(v) for v in (0.0, 1.99, 2.0, 5.0, 5.01)] == [
        "< 2 mm", "< 2 mm", "2-5 mm", "2-5 mm", "> 5 mm"]
    summary = correction_summary(np.array([1.0, 3.0, 9.0]), np.array([1.0, 3.0, 1.5]),
                                 changed=np.array([False, False, True]))
    assert summary["before_correction"]["max"] == 9.0
    assert summary["after_correction"]["groups"] == {"< 2 mm": 2, "2-5 mm": 1, "> 5 mm": 0}
    assert summary["corrected_pairs"] == 1
    with pytest.raises(ValueError):
        OutlierRule(k=0)


def test_export_round_trip(scenarios, tmp_path):
    scene = scenarios[0]
    grid = scene["grid"]
    pairs = pair_landmarks(scene["fixed"], scene["moving"], scene["field"], scene["field_grid"])
    report = find_outliers(pairs)
    written = export_landmark_set(tmp_path, pairs, report, "dirlab", grid, grid)
    for side, points in (("fixed", pairs.fixed), ("moving", pairs.moving)):
        np.testing.assert_allclose(read_landmarks(written[f"{side}_markups"]), points,
                                   atol=1e-9)
        np.testing.assert_allclose(read_landmarks(written[f"{side}_csv"]), points, atol=1e-9)
        np.testing.assert_allclose(read_landmarks(written[f"{side}_text"], "dirlab", grid),
                                   points, atol=1e-5)
        values = read_markups_values(written[f"{side}_markups"])
        np.testing.assert_allclose(values["TRE"], pairs.tre)
        assert set(np.flatnonzero(values["flagged"])) == {p.index for p in report.flagged}
        assert values["confirmed"].tolist() == [1.0] * len(pairs)
    fixed_text = written["fixed_text"].read_text().splitlines()[0]
    assert "." not in fixed_text  # fixed points lie on voxels: integer rows as DIR-Lab
    markup = json.loads(written["moving_markups"].read_text())["markups"][0]
    first = report.flagged[0]
    assert markup["controlPoints"][first.index]["description"] == "; ".join(first.reasons)
    assert {m["name"]: m["units"] for m in markup["measurements"]}["TRE"] == "mm"
    elastix = export_landmark_set(tmp_path / "ex", pairs, report, "elastix-index", grid, grid)
    np.testing.assert_allclose(read_landmarks(elastix["moving_text"], "elastix-index", grid),
                               pairs.moving, atol=1e-9)
    document = json.loads(write_qa_json(tmp_path / "qa.json", qa_document(pairs, report))
                          .read_text())
    assert document["flagged"] == [p.label for p in report.flagged]
    assert document["summary"]["all"]["n"] == 300
    with open(write_qa_table(tmp_path / "qa.csv", pairs, report), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows[:len(report.flagged)]] == document["flagged"]


# ----------------------------------------------------------------------------- CLI
def lungdeepreg(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "LungDeepRegLib", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_case(scenarios, shared_data, tmp_path_factory) -> dict:
    scene, folder = scenarios[2], tmp_path_factory.mktemp("qa_cli")
    image = scene["grid"].apply_to(sitk.Image(scene["grid"].size, sitk.sitkUInt8))
    sitk.WriteImage(image, str(folder / "fixed.nrrd"), True)
    write_field(scene["field"], scene["field_grid"], folder / "field.nrrd")
    write_dirlab(folder / "moving.txt", scene["moving"], scene["grid"], integer=False)
    fixed_file = shared_data / "dirlab_landmarks" / f"Case{scene['case']}_300_T00_xyz.txt"
    return {"scene": scene, "folder": folder, "fixed_landmarks": fixed_file}


def test_cli_prints_and_writes_flagged_pairs(cli_case):
    folder, scene = cli_case["folder"], cli_case["scene"]
    out = folder / "qa"
    result = lungdeepreg("qa-landmarks", "--fixed-landmarks", cli_case["fixed_landmarks"],
                         "--moving-landmarks", folder / "moving.txt", "--transform",
                         folder / "field.nrrd", "--fixed", folder / "fixed.nrrd",
                         "--landmark-format", "dirlab", "--k", "3.5", "--out", out)
    assert result.returncode == 0, result.stderr
    pairs = pair_landmarks(scene["fixed"], scene["moving"], scene["field"], scene["field_grid"])
    expected = [p.label for p in find_outliers(pairs).flagged]
    document = json.loads((out / "landmark_qa.json").read_text())
    assert document["flagged"] == expected
    lines = result.stdout.splitlines()
    table = lines[[line.split()[:2] for line in lines].index(["pair", "label"]) + 1:]
    printed = [line.split()[1] for line in table if line.split()[0].isdigit()]
    assert printed == expected
    planted = {str(i + 1) for i in np.concatenate([scene["shifted"], scene["swapped"]])}
    assert len(planted & set(printed)) >= 0.9 * len(planted)
    assert (out / "landmark_qa.csv").is_file()
    values = read_markups_values(out / "moving_landmarks_qa.mrk.json")
    assert int(values["flagged"].sum()) == len(expected)
    np.testing.assert_allclose(read_landmarks(out / "moving_landmarks_qa.txt", "dirlab",
                                              scene["grid"]), scene["moving"], atol=1e-5)


def test_cli_bad_input_exits_2_naming_the_file(cli_case, tmp_path, capsys):
    folder = cli_case["folder"]
    short = tmp_path / "short.txt"
    short.write_text("\n".join(folder.joinpath("moving.txt").read_text().splitlines()[:-3]))
    common = ("--transform", folder / "field.nrrd", "--fixed", folder / "fixed.nrrd",
              "--landmark-format", "dirlab", "--out", tmp_path / "out")
    result = lungdeepreg("qa-landmarks", "--fixed-landmarks", cli_case["fixed_landmarks"],
                         "--moving-landmarks", short, *common)
    assert result.returncode == 2 and "300" in result.stderr and "297" in result.stderr
    assert str(cli_case["fixed_landmarks"]) in result.stderr and str(short) in result.stderr
    missing = tmp_path / "nowhere.txt"  # the same path in-process (a subprocess costs ~3 s)
    code = main(["qa-landmarks", "--fixed-landmarks", str(missing), "--moving-landmarks",
                 str(short), *map(str, common)])
    assert code == 2 and f"error: {missing}: landmark file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_exported_markups_load_in_slicer_mrml(scenarios, tmp_path):
    """Real MRML (slicer-core) reads the per-point QA values and the reasons."""
    slicer = pytest.importorskip("slicer")
    scene = scenarios[0]
    pairs = pair_landmarks(scene["fixed"], scene["moving"], scene["field"], scene["field_grid"])
    report = find_outliers(pairs)
    path = export_landmark_set(tmp_path, pairs, report)["moving_markups"]
    mrml = slicer.vtkMRMLScene()
    mrml.AddNode(slicer.vtkMRMLSelectionNode())  # markups look up units through it
    node = mrml.AddNode(slicer.vtkMRMLMarkupsFiducialNode())
    storage = mrml.AddNode(slicer.vtkMRMLMarkupsJsonStorageNode())
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1 and node.GetNumberOfControlPoints() == len(pairs)
    for name, expected in (("TRE", pairs.tre), ("confirmed", np.ones(len(pairs))),
                           ("flagged", flagged_mask(report, len(pairs)).astype(float))):
        values = node.GetMeasurement(name).GetControlPointValues()
        np.testing.assert_allclose([values.GetValue(k) for k in range(len(pairs))], expected)
    worst = report.flagged[0]
    assert node.GetNthControlPointDescription(worst.index) == "; ".join(worst.reasons)
