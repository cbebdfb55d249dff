"""Run every method on every case, evaluate each result the same way, resumably.

Layout of the work folder ``W``: ``W/<case>/inputs`` holds the case's images and the fixed
lung mask (written once); ``W/<case>/<method>`` is a method's folder with its logs, field and
``result.json``, written last, so a re-run skips methods that finished. A case that could
not be assembled (:class:`CaseError`) or that crashes, and a method that fails, times out or
is not installed, each become a row with the reason; the others still run.

Every field is judged by :func:`..pipeline.evaluation.evaluate` (TRE with the case's
protocol, folding and SD log-Jacobian in the one fixed lung mask of the case, lobe overlap)
and, with a known field, by the mean endpoint error in that lung mask.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from ..io.atomic import write_json
from ..io.images import read_image, write_image
from ..io.landmarks import write_csv
from ..io.transforms import read_field
from ..pipeline.evaluation import EvaluationInputs, evaluate
from ..pipeline.fields import output_grid
from ..preprocess import lung_mask
from ..spatial import Grid, image_to_tensor, resample_field
from .case import BenchCase, CaseError, KnownField
from .measure import child_environment, run_measured
from .methods import CaseFiles, Method, RunSettings, command, field_file, unavailable_reason

RESULT_FILE = "result.json"


@dataclass
class CaseContext:
    """What every method of one case is judged against."""

    files: CaseFiles
    lungs: sitk.Image  # UInt8 0/1 on the fixed grid
    region: str


def run_benchmark(cases: list[BenchCase | CaseError], out: Path, methods: list[Method],
                  settings: RunSettings, progress: bool = True) -> list[dict]:
    """All cases x methods; returns one row per case and method (one per failed case)."""
    out = Path(out)
    bar = tqdm(total=len(cases) * len(methods), desc="case x method", unit="run",
               file=sys.stderr, dynamic_ncols=True, disable=not progress)
    rows = []
    for case in cases:
        rows += _run_case(case, out, methods, settings, bar)
    bar.close()
    return rows


def _run_case(case: BenchCase | CaseError, out: Path, methods: list[Method],
              settings: RunSettings, bar: tqdm) -> list[dict]:
    if isinstance(case, CaseError):
        bar.update(len(methods))
        tqdm.write(f"error: {case}", file=sys.stderr)
        return [case_error_row(case)]
    try:
        context = prepare_case(case, out / case.name / "inputs", settings)
    except Exception as error:  # one unreadable case must not stop the others
        bar.update(len(methods))
        failed = CaseError(case.name, str(out / case.name / "inputs"), _one_line(error))
        tqdm.write(f"error: {failed}", file=sys.stderr)
        return [case_error_row(failed, case.group)]
    rows = []
    for method in methods:
        bar.set_postfix_str(f"{case.name}: {method.name}")
        row = run_method(case, method, context, out / case.name / method.folder, settings)
        if row["status"] == "failed":
            tqdm.write(f"error: {case.name}: {method.name}: {row['error']}", file=sys.stderr)
        rows.append(row)
        bar.update(1)
    return rows


def case_error_row(error: CaseError, group: str = "") -> dict:
    return {"case": error.name, "group": group, "method": None, "status": "case error",
            "error": f"{error.source}: {error.problem}"}


def prepare_case(case: BenchCase, folder: Path, settings: RunSettings) -> CaseContext:
    """Write the inputs once (int16 CT, UInt8 lung mask, landmark CSVs); read them back."""
    paths = {name: folder / f"{name}.mha" for name in ("fixed", "moving", "fixed_lungs")}
    for name in ("fixed", "moving"):
        if not paths[name].is_file():
            image = getattr(case, name)
            write_image(sitk.Cast(sitk.Round(image), sitk.sitkInt16), paths[name], False)
    fixed = read_image(paths["fixed"])  # what every method reads
    given = case.fixed_lungs is not None
    if not paths["fixed_lungs"].is_file():
        lungs = (sitk.Cast(case.fixed_lungs > 0, sitk.sitkUInt8) if given
                 else lung_mask(fixed))  # the pipeline's own automatic mask of this file
        write_image(lungs, paths["fixed_lungs"], False)
    for name in ("fixed_points", "moving_points"):
        points = getattr(case, name)
        if points is not None and not (folder / f"{name}.csv").is_file():
            write_csv(folder / f"{name}.csv", points)
    files = CaseFiles(paths["fixed"], paths["moving"], paths["fixed_lungs"], given,
                      output_grid(fixed, settings.output_spacing_mm))
    region = ("lung mask (given)" if given
              else "lung mask (automatic, preprocess.lung_mask of the fixed image)")
    return CaseContext(files, read_image(paths["fixed_lungs"], kind="label"), region)


def run_method(case: BenchCase, method: Method, context: CaseContext, work: Path,
               settings: RunSettings) -> dict:
    """Run (or resume) one method on one case; returns its row."""
    row = {"case": case.name, "group": case.group, "method": method.name}
    if (work / RESULT_FILE).is_file():
        return {**json.loads((work / RESULT_FILE).read_text()), "resumed": True}
    reason = unavailable_reason(method)
    if reason:
        return {**row, "status": "unavailable", "error": reason}
    try:
        field, grid, run = _execute(method, context.files, work, settings)
        if field is None:
            return {**row, "status": "failed", **run}
        metrics = evaluate_field(case, field, grid, context)
    except Exception as error:  # evaluation of one method must not stop the others
        return {**row, "status": "failed", "error": _one_line(error)}
    result = {**row, "status": "done", **run, **metrics}
    write_json(work / RESULT_FILE, result)
    return result


def _execute(method: Method, files: CaseFiles, work: Path, settings: RunSettings
             ) -> tuple[torch.Tensor | None, Grid | None, dict]:
    """The method's field (None on failure), its grid, and time/memory/command info."""
    argv = command(method, files, work, settings)
    if argv is None:  # identity: nothing runs
        grid = files.output_grid
        return torch.zeros((1, 3, *grid.shape)), grid, {"time_s": 0.0, "peak_memory_gb": 0.0}
    measured = run_measured(argv, work, settings.timeout_s,
                            child_environment(settings.threads))
    run = {"time_s": measured.wall_s, "peak_memory_gb": measured.peak_memory_gb,
           "command": measured.command}
    if not measured.ok:
        return None, None, {**run, "error": measured.failure()}
    field, grid = read_field(field_file(method, work))
    return field, grid, {**run, "field": str(field_file(method, work))}


def evaluate_field(case: BenchCase, field: torch.Tensor, grid: Grid,
                   context: CaseContext) -> dict:
    """TRE, Jacobian and overlap statistics (and EPE with a known field) of one result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # landmarks outside are counted as excluded
        report = evaluate(EvaluationInputs(
            field=field, field_grid=grid, fixed_image=case.fixed,
            fixed_points=case.fixed_points, moving_points=case.moving_points,
            fixed_labels=case.fixed_lobes, moving_labels=case.moving_lobes,
            mask=context.lungs, mask_region=context.region, protocol=case.protocol,
            moving_grid=Grid.from_image(case.moving), exclude_outside=True,
            landmark_source=case.sources.get("fixed_points")))
    jacobian = report["jacobian"]
    metrics = {"folding_fraction": jacobian["folding_fraction"],
               "sd_log_jacobian": jacobian["sd_log_jacobian"],
               "min_det": jacobian["min_det"], "jacobian_region": jacobian.get("region"),
               "protocol": case.protocol.to_dict()}
    if "landmarks" in report:
        landmarks = report["landmarks"]
        metrics["tre"] = landmarks["after"]
        metrics["tre_initial"] = landmarks["before"]
        metrics["tre_per_landmark"] = [row["tre_mm"] for row in landmarks["per_landmark"]]
    if "labels" in report:
        metrics["dice"] = {str(label): values["dice"]
                           for label, values in report["labels"]["after"].items()}
    if case.known_field is not None:
        metrics["epe"] = endpoint_error(field, grid, case.known_field, context.lungs)
    return metrics


def endpoint_error(field: torch.Tensor, grid: Grid, known: KnownField,
                   lungs: sitk.Image) -> dict:
    """Endpoint error |u - u_true| (mm) over the lung voxels of the known field's grid."""
    estimate = resample_field(field.double(), grid, known.grid)
    reference = known.grid.apply_to(sitk.Image(known.grid.size, sitk.sitkUInt8))
    mask = sitk.Resample(lungs, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)
    inside = image_to_tensor(mask)[0][0, 0] > 0
    error = (estimate - known.field.double()).square().sum(dim=1).sqrt()[0][inside].numpy()
    if error.size == 0:
        return {"mean": float("nan"), "p95": float("nan"), "max": float("nan"), "voxels": 0}
    return {"mean": float(error.mean()), "p95": float(np.percentile(error, 95)),
            "max": float(error.max()), "voxels": int(error.size)}


def _one_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()
