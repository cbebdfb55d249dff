"""Write the QA report of one registration: PNG figures and ``report.html`` in one folder.

The whole report is staged in a private folder and moved into place at the end
(:func:`~LungDeepRegLib.io.atomic.atomic_output`), so an interrupted run leaves no partial
file and never mixes new figures into an old page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import SimpleITK as sitk

from ..io.atomic import atomic_output
from ..metrics.jacobian import jacobian_summary
from ..version import __version__
from . import captions, tables
from .charts import plot_dice, plot_tre
from .figures import (
    DIFFERENCE_MAX_HU,
    plot_differences,
    plot_images,
    plot_jacobian,
    plot_overlays,
)
from .html import Section, page, table
from .text import percent, voxels
from .views import DisplayVolumes, Plane, centre_planes, prepare

REPORT_NAME = "report.html"
# prefixed, because the report often shares its folder with the registration's other outputs
FIGURES = {"images": "report_images.png", "overlays": "report_overlays.png",
           "differences": "report_differences.png", "jacobian": "report_jacobian.png",
           "landmarks": "report_tre.png", "labels": "report_dice.png"}
CHECKER_TILE_MM = 20.0


@dataclass
class ReportInputs:
    """One registration to report on. Images are SimpleITK; intensities in HU.

    Attributes:
        fixed: the fixed image.
        moving_on_fixed: the moving image resampled onto the fixed grid WITHOUT the
            deformation (the "before" state).
        warped: the moving image warped onto the fixed grid (the "after" state).
        jacobian: det J of the transform on the field grid (may be coarser than the fixed
            grid; resampled for display), or None.
        lung_mask: lung mask on the fixed grid, or None (the engine's automatic mask then
            places the planes).
        metrics: the dictionary of :func:`LungDeepRegLib.pipeline.evaluation.evaluate`,
            optionally with ``runtime_s`` ({step: seconds}), ``device``, ``model``
            ({name, sha256}), ``direction`` and ``versions`` ({name: version}).
        title: case name shown in the heading.
    """

    fixed: sitk.Image
    moving_on_fixed: sitk.Image
    warped: sitk.Image
    jacobian: sitk.Image | None = None
    lung_mask: sitk.Image | None = None
    metrics: dict = field(default_factory=dict)
    title: str = "registration"


def write_report(inputs: ReportInputs, out_dir: str | Path, top_landmarks: int = 30) -> Path:
    """Write the figures and ``report.html`` into ``out_dir``; return the HTML path.

    Figures of an earlier report in the same folder that this one does not produce (for
    example ``report_tre.png`` when no landmarks are given now) are removed, so that the
    folder never holds figures of another registration; no other file is touched.
    """
    out = Path(out_dir)
    metrics = inputs.metrics or {}
    volumes = prepare(inputs.fixed, inputs.moving_on_fixed, inputs.warped, inputs.jacobian,
                      inputs.lung_mask)
    planes = centre_planes(volumes)
    stats = _jacobian_stats(inputs.jacobian, metrics)
    with atomic_output(out / REPORT_NAME) as staged:
        folder = staged.parent
        sections = [
            _images_section(volumes, planes, folder),
            _overlays_section(volumes, planes, folder),
            _differences_section(volumes, planes, folder),
            _jacobian_section(volumes, planes, stats, folder),
            _landmarks_section(metrics.get("landmarks"), folder, top_landmarks),
            _landmark_qa_section(metrics.get("landmark_qa")),
            _labels_section(metrics.get("labels"), folder),
            _runtime_section((metrics.get("run") or {}).get("runtime_s")),
            _self_checks_section(metrics.get("self_checks")),
            _software_section(metrics),
        ]
        title = f"Registration QA report: {inputs.title}"
        generated = (f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
                     f"LungDeepRegLib {__version__}")
        text = page(title, generated, tables.summary_rows(inputs.title, metrics, stats),
                    tables.checks(metrics, stats), sections,
                    [w["message"] for w in metrics.get("warnings") or []])
        staged.write_text(text, encoding="utf-8")
    _remove_stale(out, {s.figure for s in sections if s.figure})
    return out / REPORT_NAME


def _images_section(volumes: DisplayVolumes, planes: list[Plane], folder: Path) -> Section:
    plot_images(volumes, planes, folder / FIGURES["images"])
    return Section("images", "Images before and after registration", FIGURES["images"],
                   captions.images_caption(volumes, planes))


def _overlays_section(volumes: DisplayVolumes, planes: list[Plane], folder: Path) -> Section:
    plot_overlays(volumes, planes, folder / FIGURES["overlays"], CHECKER_TILE_MM)
    return Section("overlays", "Overlays and checkerboards", FIGURES["overlays"],
                   captions.overlays_caption(CHECKER_TILE_MM))


def _differences_section(volumes: DisplayVolumes, planes: list[Plane], folder: Path) -> Section:
    plot_differences(volumes, planes, folder / FIGURES["differences"], DIFFERENCE_MAX_HU)
    return Section("differences", "Difference images", FIGURES["differences"],
                   captions.difference_caption(DIFFERENCE_MAX_HU))


def _jacobian_section(volumes: DisplayVolumes, planes: list[Plane], stats: dict | None,
                      folder: Path) -> Section:
    section = Section("jacobian", "Jacobian determinant")
    if stats:
        section.tables.append(tables.jacobian_table(stats))
    if volumes.jacobian_image is None:
        section.note = ("No Jacobian determinant image was given: the map is not shown."
                        if stats else "No Jacobian determinant was given or measured.")
        return section
    region = (stats or {}).get("region", "whole image")
    title = (f"det J: folding {percent((stats or {}).get('folding_fraction'))} of the "
             f"{region} ({voxels((stats or {}).get('folding_count', 'n/a'))})")
    marked = plot_jacobian(volumes, planes, folder / FIGURES["jacobian"], title)
    section.figure = FIGURES["jacobian"]
    section.caption = captions.jacobian_caption(volumes, stats, marked)
    return section


def _landmarks_section(landmarks: dict | None, folder: Path, top: int) -> Section:
    section = Section("landmarks", "Landmark target registration error (TRE)")
    if not landmarks:
        section.note = "No landmarks were given: the TRE is not reported."
        return section
    count = len(landmarks.get("per_landmark") or [])
    if count:
        plot_tre(landmarks, folder / FIGURES["landmarks"], top)
        section.figure = FIGURES["landmarks"]
        section.caption = captions.tre_caption(landmarks, min(top, count))
    else:
        section.note = "No per-landmark errors were recorded (all landmarks excluded?)."
    section.tables.append(tables.tre_summary_table(landmarks))
    if count:
        section.tables.append(tables.worst_table(landmarks, 20))
    return section


def _landmark_qa_section(qa: dict | None) -> Section:
    section = Section("landmark-qa", "Landmark QA: possible annotation errors")
    if not qa:
        section.note = "No landmarks were given: no landmark QA."
        return section
    rule = qa.get("rule") or {}
    section.note = (f"{qa.get('n_flagged', 0)} of {qa.get('n_pairs', 0)} pairs flagged: TRE "
                    f"above median + {rule.get('k', '?')} x MAD, or a pair that moves unlike "
                    "its neighbouring pairs. Check these landmarks before trusting the TRE "
                    "(the Slicer module's landmark QA jumps to each pair).")
    section.tables.append(tables.landmark_qa_summary_table(qa.get("summary") or {}))
    if qa.get("flagged_pairs"):
        section.tables.append(tables.flagged_pairs_table(qa["flagged_pairs"]))
    return section


def _labels_section(labels: dict | None, folder: Path) -> Section:
    section = Section("labels", "Lobe overlap (Dice, surface distances)")
    if not labels or not (labels.get("before") or labels.get("after")):
        section.note = "No label maps were given: lobe overlap is not reported."
        return section
    plot_dice(labels, folder / FIGURES["labels"])
    section.figure = FIGURES["labels"]
    section.caption = captions.dice_caption()
    section.tables.append(tables.labels_table(labels))
    return section


def _runtime_section(runtime: dict | None) -> Section:
    section = Section("runtime", "Runtime")
    if runtime:
        section.tables.append(tables.runtime_table(runtime))
    else:
        section.note = "No runtime was recorded."
    return section


def _software_section(metrics: dict) -> Section:
    run = metrics.get("run") or {}  # how register records the run
    versions = {"LungDeepRegLib": __version__, **(run.get("versions") or {})}
    versions.setdefault("matplotlib (report)", matplotlib.__version__)
    section = Section("software", "Software, model and device")
    if run.get("direction"):
        section.paragraphs.append(f"Direction: {run['direction']}.")
    section.tables.append(tables.software_table(versions, run.get("model") or {},
                                                run.get("device")))
    return section


def _self_checks_section(measurements: dict | None) -> Section:
    section = Section("self-checks", "Self-checks")
    if measurements:
        section.paragraphs.append("What the run measured to check itself; failed checks are "
                                  "listed under Warnings at the top.")
        section.tables.append(table(["check", "value"], [
            [key.replace("_", " "), value] for key, value in measurements.items()]))
    else:
        section.note = "No self-checks were recorded."
    return section


def _jacobian_stats(jacobian: sitk.Image | None, metrics: dict) -> dict | None:
    """The metrics' Jacobian summary, else one measured on the whole Jacobian image."""
    if metrics.get("jacobian"):
        return metrics["jacobian"]
    if jacobian is None:
        return None
    summary = jacobian_summary(sitk.GetArrayFromImage(jacobian))
    summary["region"] = "whole image (measured on the Jacobian image by the report)"
    return summary


def _remove_stale(out: Path, produced: set[str]) -> None:
    for name in set(FIGURES.values()) - produced:
        (out / name).unlink(missing_ok=True)
