"""Everything a registration writes into its output folder, each file atomically.

``metrics.json`` is written last: its presence marks a finished registration (the batch
runner skips such pairs when resuming).
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..io.atomic import write_json
from ..io.images import write_image
from ..io.landmarks import write_markups_json
from ..io.transforms import field_transform, write_field
from ..metrics.landmarks import TREProtocol
from ..qa import find_outliers, pair_landmarks, qa_document, write_qa_json, write_qa_table
from ..spatial import Grid, jacobian_determinant, tensor_to_image
from ..version import __version__
from .evaluation import EvaluationInputs, evaluate

METRICS_FILE = "metrics.json"


def write_outputs(pair, inputs, options, state, out_dir: Path, points=None
                  ) -> tuple[dict[str, Path], dict]:
    """Write fields, warped images, the Jacobian map, landmarks, metrics and the report;
    returns the files written and the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"field_nrrd": write_field(state.field, state.grid, out_dir / "field.nrrd"),
             "field_h5": write_field(state.field, state.grid, out_dir / "field.h5")}
    if options.write_nifti:
        files["field_nifti"] = write_field(state.field, state.grid, out_dir / "field.nii.gz")
    transform = field_transform(state.field, state.grid)
    warped = sitk.Resample(pair.moving, pair.fixed, transform, sitk.sitkLinear, -1024.0)
    files["warped_moving"] = write_image(sitk.Cast(sitk.Round(warped), sitk.sitkInt16),
                                         out_dir / "warped_moving.nrrd")
    files["fixed_lungs"] = write_image(pair.fixed_lungs, out_dir / "fixed_lungs.nrrd")
    lobes = None
    if pair.moving_lobes is not None:
        lobes = sitk.Resample(pair.moving_lobes, pair.fixed, transform,
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        files["warped_moving_lobes"] = write_image(lobes, out_dir / "warped_moving_lobes.nrrd")
    det = jacobian_determinant(state.field.double(), state.grid)
    jacobian = tensor_to_image(det.float(), state.grid)
    # uncompressed: a float map shrinks by a quarter for 0.7 s on a 251x251x141 grid
    files["jacobian"] = write_image(jacobian, out_dir / "jacobian.nrrd", compress=False)

    metrics = evaluate(EvaluationInputs(
        field=state.field, field_grid=state.grid, fixed_image=pair.fixed,
        fixed_points=None if points is None else points[0],
        moving_points=None if points is None else points[1],
        fixed_labels=pair.fixed_lobes, moving_labels=pair.moving_lobes,
        mask=pair.fixed_lungs, warped_labels=lobes, jacobian=det,
        mask_region="lung mask (given)" if inputs.fixed_mask else "lung mask (automatic)",
        protocol=TREProtocol(round_to_voxel=options.round_to_voxel, fixed=options.fixed_is),
        moving_grid=Grid.from_image(pair.moving),
        exclude_outside=options.exclude_outside_landmarks,
        landmark_source=None if inputs.fixed_landmarks is None else str(inputs.fixed_landmarks),
    ))
    metrics["run"] = run_information(inputs, options, state)
    if points is not None:
        files.update(_landmark_files(points, metrics, state, out_dir))
    if options.report:
        files["report"] = _report(pair, jacobian, warped, metrics, out_dir)
    files["metrics"] = write_json(out_dir / METRICS_FILE, metrics)
    return files, metrics


def run_information(inputs, options, state) -> dict:
    """How the result was made: inputs, options, runtime per step, device, model, versions."""
    card = state.model_card or {}
    versions = {"lungdeepreg": __version__, "python": platform.python_version()}
    for package in ("torch", "SimpleITK", "numpy"):
        versions[package] = metadata.version(package)
    return {
        "inputs": {k: None if v is None else str(v) for k, v in vars(inputs).items()},
        "options": {k: v for k, v in vars(options).items()},
        "direction": f"{options.fixed_is} fixed, "
                     f"{'exhale' if options.fixed_is == 'inhale' else 'inhale'} moving",
        "runtime_s": {k: round(v, 3) for k, v in state.runtime_s.items()},
        "total_runtime_s": round(sum(state.runtime_s.values()), 3),
        "device": state.device,
        "cpu_threads": torch.get_num_threads(),
        "model": {"name": card.get("name", "none"), "sha256": card.get("sha256")},
        "network_start": state.network_start,
        "versions": versions,
        "field_grid": state.grid.to_dict(),
    }


def _landmark_files(points, metrics: dict, state, out_dir: Path) -> dict[str, Path]:
    """Landmarks with per-point TRE (``.mrk.json``) and the landmark QA:
    outlier flags (possible annotation errors) in ``landmark_qa.json``/``.csv`` and in
    ``metrics["landmark_qa"]`` for the report."""
    fixed, moving = points
    per_landmark = metrics["landmarks"]["per_landmark"]
    kept = [row["index"] - 1 for row in per_landmark]
    tre = np.array([row["tre_mm"] for row in per_landmark])
    labels = [f"L{i + 1}" for i in kept]
    pairs = pair_landmarks(fixed[kept], moving[kept], state.field, state.grid, labels=labels)
    report = find_outliers(pairs)
    document = qa_document(pairs, report)
    metrics["landmark_qa"] = {key: document[key] for key in (
        "rule", "n_pairs", "n_flagged", "flagged", "summary")}
    metrics["landmark_qa"]["flagged_pairs"] = [
        {key: point[key] for key in ("label", "tre", "flags", "reasons")}
        for point in document["points"] if point["flagged"]]
    return {
        "fixed_landmarks": write_markups_json(out_dir / "fixed_landmarks_tre.mrk.json",
                                              fixed[kept], labels=labels, values={"TRE": tre}),
        "predicted_landmarks": write_markups_json(
            out_dir / "predicted_moving_landmarks.mrk.json", pairs.mapped, labels=labels,
            values={"TRE": tre}),
        "landmark_qa": write_qa_json(out_dir / "landmark_qa.json", document),
        "landmark_qa_table": write_qa_table(out_dir / "landmark_qa.csv", pairs, report),
    }


def _report(pair, jacobian: sitk.Image, warped: sitk.Image, metrics: dict,
            out_dir: Path) -> Path:
    from ..reporting import ReportInputs, write_report

    same_grid = Grid.from_image(pair.moving) == Grid.from_image(pair.fixed)
    moving_on_fixed = pair.moving if same_grid else sitk.Resample(
        pair.moving, pair.fixed, sitk.Transform(), sitk.sitkLinear, -1024.0)
    inputs = ReportInputs(fixed=pair.fixed, moving_on_fixed=moving_on_fixed, warped=warped,
                          jacobian=jacobian, lung_mask=pair.fixed_lungs, metrics=metrics,
                          title="LungDeepReg registration")
    return write_report(inputs, out_dir)

