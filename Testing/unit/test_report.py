"""QA report: every section, key number and figure is there; absent data gives notes.

Two cases. The run record (runtime, device, model and its sha256) comes from a real
``register`` run on the POPI light pair with the shipped model: the report is rebuilt from
the ``metrics.json`` that run wrote, so the test reads what the pipeline writes, not a
hand-made dictionary. The drawing case is the real CIP CT (64^3): moving = fixed shifted by a
few mm, warped = fixed (a perfect registration), a hand-made Jacobian image on a coarser
grid with three folded voxels in the lung, and metrics from the engine's own ``evaluate``.
"""

from __future__ import annotations

import html
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.metrics.jacobian import jacobian_summary
from LungDeepRegLib.pipeline.evaluation import EvaluationInputs, evaluate
from LungDeepRegLib.pipeline.outputs import output_names
from LungDeepRegLib.pipeline.register import (
    DEFAULT_MODEL,
    RegistrationInputs,
    RegistrationOptions,
    register,
)
from LungDeepRegLib.preprocess import lung_labels
from LungDeepRegLib.reporting import FIGURES, ReportInputs, label_name, write_report
from LungDeepRegLib.reporting.tables import labels_table
from LungDeepRegLib.reporting.text import percent, seconds
from LungDeepRegLib.reporting.views import Plane, prepare
from LungDeepRegLib.spatial import Grid

SHIFT_MM = (6.0, 0.0, 4.0)  # moving = fixed shifted by this (LPS mm)
FOLDS = 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TITLE = "ct-64 <case> & co"
SECTIONS = ("Summary", "Images before and after registration", "Overlays and checkerboards",
            "Difference images", "Jacobian determinant",
            "Landmark target registration error (TRE)",
            "Lobe overlap (Dice, surface distances)", "Runtime", "Self-checks",
            "Software, model and device")


def _shifted(image: sitk.Image, shift: tuple[float, float, float]) -> sitk.Image:
    """``image`` moved by ``shift`` mm: the new image at x shows the old one at x - shift."""
    transform = sitk.TranslationTransform(3, [-s for s in shift])
    return sitk.Resample(image, image, transform, sitk.sitkLinear, -1024.0)


def _jacobian_with_folds(fixed: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
    """det J on a grid half as fine: about 1 with mild compression, FOLDS voxels at -0.5."""
    coarse = Grid.from_image(fixed).with_size(tuple(s // 2 for s in fixed.GetSize()))
    reference = coarse.apply_to(sitk.Image(coarse.size, sitk.sitkUInt8))
    lung = sitk.GetArrayFromImage(sitk.Resample(mask, reference, sitk.Transform(),
                                                sitk.sitkNearestNeighbor)) > 0
    det = np.where(lung, 0.8, 1.0).astype(np.float32)
    inside = np.argwhere(lung)
    for k, j, i in inside[np.linspace(0, len(inside) - 1, FOLDS).astype(int)]:
        det[k, j, i] = -0.5
    image = sitk.GetImageFromArray(det)
    coarse.apply_to(image)
    return image, lung


def _case(data: Path) -> tuple[ReportInputs, int]:
    """The report inputs and the number of det <= 0 voxels of the Jacobian image."""
    fixed = sitk.Cast(sitk.ReadImage(str(data / "ct-64.nrrd")), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(data / "wholeLung-64.nrrd"))
    grid = Grid.from_image(fixed)
    labels = sitk.GetArrayFromImage(lung_labels(fixed)).astype(np.uint8)
    labels[labels == 2] = 3  # right lung as "right upper"; a block as an unknown label 9
    labels[30:36, 20:30, 15:25][labels[30:36, 20:30, 15:25] == 3] = 9
    fixed_labels = sitk.GetImageFromArray(labels)
    fixed_labels.CopyInformation(fixed)
    rng = np.random.default_rng(1)
    lung_voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    picked = lung_voxels[rng.choice(len(lung_voxels), 40, replace=False)]
    fixed_points = grid.index_to_physical(picked[:, ::-1].astype(float))
    moving_points = fixed_points + np.asarray(SHIFT_MM) + rng.normal(0, 0.5, (40, 3))
    field = torch.tensor(SHIFT_MM, dtype=torch.float32).view(1, 3, 1, 1, 1)
    metrics = evaluate(EvaluationInputs(
        field=field.expand(1, 3, *grid.shape).contiguous(), field_grid=grid,
        fixed_points=fixed_points, moving_points=moving_points, fixed_labels=fixed_labels,
        moving_labels=_shifted(fixed_labels, SHIFT_MM), mask=mask))
    jacobian, lung = _jacobian_with_folds(fixed, mask)
    metrics["jacobian"] = {**jacobian_summary(sitk.GetArrayFromImage(jacobian), lung),
                           "region": "lung mask (given)"}
    inputs = ReportInputs(fixed, _shifted(fixed, SHIFT_MM), fixed, jacobian, mask, metrics,
                          title=TITLE)
    return inputs, int(np.count_nonzero(sitk.GetArrayViewFromImage(jacobian) <= 0))


@pytest.fixture(scope="module")
def report(shared_data, tmp_path_factory) -> tuple[Path, ReportInputs, int]:
    inputs, folds = _case(shared_data / "cip")
    return write_report(inputs, tmp_path_factory.mktemp("report")), inputs, folds


@pytest.fixture(scope="module")
def registered(shared_data, tmp_path_factory) -> Path:
    """One real registration (POPI light 00 to 50, shipped model, 2 refinement steps)."""
    out = tmp_path_factory.mktemp("registered") / "out"
    light, points = shared_data / "popi_light", shared_data / "popi" / "landmarks_lps"
    inputs = RegistrationInputs(
        fixed=light / "popi_light_00.nii.gz", moving=light / "popi_light_50.nii.gz",
        fixed_landmarks=points / "popi_00_points.txt",
        moving_landmarks=points / "popi_50_points.txt", landmark_format="elastix-point")
    register(inputs, out, RegistrationOptions(model="auto", refine_iterations=2, device="cpu",
                                              threads=2))
    return out


def _summary(page: str) -> dict[str, str]:
    box = re.search(r'<section class="summary".*?</table>', page, re.S)
    assert box, "no summary box"
    rows = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", box.group(0))
    return {html.unescape(key): html.unescape(value) for key, value in rows}


def test_summary_shows_the_run_that_register_recorded(registered):
    """Runtime, device, model and sha256 come from ``metrics["run"]``, where the pipeline
    writes them, both in the run's own report and in one rebuilt from ``metrics.json``."""
    written = {path.name for path in registered.iterdir()}
    assert written <= set(output_names()), written - set(output_names())  # re-use clears all
    metrics = json.loads((registered / "metrics.json").read_text(encoding="utf-8"))
    run = metrics["run"]
    assert run["model"]["name"] == DEFAULT_MODEL and len(run["model"]["sha256"]) == 64
    images = {name: sitk.ReadImage(str(registered / f"{name}.nrrd"))
              for name in ("warped_moving", "jacobian", "fixed_lungs")}
    fixed = images["warped_moving"]  # same grid as the fixed image; the box does not read it
    rebuilt = write_report(ReportInputs(fixed, fixed, images["warped_moving"],
                                        images["jacobian"], images["fixed_lungs"], metrics,
                                        title="popi light"), registered / "rebuilt")
    for path in (registered / "report.html", rebuilt):
        summary = _summary(path.read_text(encoding="utf-8"))
        assert summary["Runtime (total)"] == seconds(run["total_runtime_s"]) != "n/a"
        assert summary["Device"] == run["device"] == "cpu"
        assert summary["Model"] == DEFAULT_MODEL
        assert summary["Network start"].startswith("refined from the ")
        assert summary["Model sha256"] == run["model"]["sha256"]
        assert summary["Direction"] == "inhale fixed, exhale moving"
        assert "n/a" not in summary.values(), summary


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk (no imaging library needed)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _figure_names(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def _caption(page: str, figure: str) -> str:
    match = re.search(rf'<img src="{re.escape(figure)}"[^>]*><figcaption>(.*?)</figcaption>',
                      page, re.S)
    assert match, f"no caption for {figure}"
    return html.unescape(match.group(1))


def test_report_has_every_section_and_key_number(report):
    path, inputs, _ = report
    page = path.read_text(encoding="utf-8")
    assert path.name == "report.html"
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page, heading
    metrics = inputs.metrics
    before, after = metrics["landmarks"]["before"], metrics["landmarks"]["after"]
    text = html.unescape(page)
    assert f"{before['mean']:.2f} ({before['sd']:.2f}) mm \u2192 {after['mean']:.2f}" in text
    assert f"{before['max']:.2f} \u2192 {after['max']:.2f} mm" in text
    assert percent(metrics["jacobian"]["folding_fraction"]) in text
    assert f"{metrics['jacobian']['sd_log_jacobian']:.3f}" in text
    for label in (1, 3):
        assert f"{label}: {label_name(label)}" in text
    assert "label 9" in text and "3: right upper" in text


def test_text_is_html_escaped(report):
    page = report[0].read_text(encoding="utf-8")
    assert "<case>" not in page and "ct-64 &lt;case&gt; &amp; co" in page


def test_every_figure_is_a_png_and_no_partial_file_is_left(report):
    path = report[0]
    names = _figure_names(path.read_text(encoding="utf-8"))
    assert set(names) == set(FIGURES.values())
    for name in names:
        width, height = _png_size(path.parent / name)
        assert width > 100 and height > 100, name
    left = sorted(p.name for p in path.parent.iterdir())
    assert left == sorted([*names, "report.html"]), left  # no .partial folder, no temp file


def test_jacobian_caption_counts_the_folds(report):
    path, inputs, folds = report
    caption = _caption(path.read_text(encoding="utf-8"), FIGURES["jacobian"])
    counted = inputs.metrics["jacobian"]["folding_count"]
    assert counted == FOLDS == folds
    assert f"Folded according to the metrics: {counted} voxels" in caption
    assert f"holds {folds} voxels with det J <= 0" in caption
    assert "lung mask (given)" in caption


def test_report_without_landmarks_or_labels_says_so(shared_data, tmp_path):
    fixed = sitk.Cast(sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd")),
                      sitk.sitkFloat32)
    stale = tmp_path / FIGURES["landmarks"]
    stale.write_bytes(b"stale")  # left by an earlier report
    (tmp_path / "other.png").write_bytes(b"not ours")
    inputs = ReportInputs(fixed, _shifted(fixed, SHIFT_MM), fixed, jacobian=None,
                          metrics={}, title="no data")
    page = write_report(inputs, tmp_path).read_text(encoding="utf-8")
    assert "No landmarks were given" in page and "No label maps were given" in page
    assert "No Jacobian determinant was given" in page and "No runtime was recorded" in page
    assert set(_figure_names(page)) == {FIGURES[k] for k in ("images", "overlays",
                                                             "differences")}
    assert not stale.exists() and (tmp_path / "other.png").exists()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page, heading


def test_tables_accept_metrics_read_back_from_json():
    labels = {"before": {"2": {"dice": None, "note": "label absent from both maps"}},
              "after": {"2": {"dice": 0.91, "asd_mm": 1.25, "hd95_mm": None}}}
    table = labels_table(labels)
    assert "2: left lower" in table and "0.910" in table and "n/a" in table
    assert percent(0.0) == "0 %" and percent(4.5e-7) == "0.000045 %"
    assert percent(0.0123) == "1.23 %" and percent(None) == "n/a"


def test_views_follow_the_radiological_convention():
    """A voxel at the patient's left-anterior-superior corner, stored in a flipped (RAS-like)
    index order, shows at the top right of the axial view and at the top of the coronal."""
    array = np.full((6, 7, 8), -1000.0, dtype=np.float32)
    image = sitk.GetImageFromArray(array)
    # stored in RAS-like order: index x grows to the patient's right, y to anterior
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image[(0, 6, 5)] = 500.0  # x index 0: most left; y index 6: most anterior; top slice
    volumes = prepare(image, image, image, None, None, auto_mask=False)
    axial = Plane("axial", 0, volumes.fixed.shape[0] - 1).cut(volumes.fixed)
    row, col = np.unravel_index(np.argmax(axial), axial.shape)
    assert (row, col) == (0, axial.shape[1] - 1)  # anterior at the top, left on the right
    coronal = Plane("coronal", 1, 0).cut(volumes.fixed)
    row, col = np.unravel_index(np.argmax(coronal), coronal.shape)
    assert (row, col) == (0, coronal.shape[1] - 1)  # superior at the top
