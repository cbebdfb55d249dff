"""Everything a registration writes into its output folder, all together or nothing.

The outputs are made in a private staging folder inside the output folder and moved in at
the end, ``metrics.json`` last: its presence marks a finished registration, and its
``run.fingerprint`` says which inputs and options made it (the batch runner skips a pair only
when the fingerprint still matches). Re-using an output folder replaces the earlier run's
outputs (the names of :func:`output_names`, nothing else), so no report, figure or landmark
file of another run stays beside the new metrics; staging folders of a killed run
(``.<name>.*.partial``) are removed when the next run writes there.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..io.atomic import publish, staging_folder, write_json
from ..io.images import write_image
from ..io.landmarks import write_markups_json
from ..io.transforms import write_field
from ..metrics.landmarks import TREProtocol
from ..qa import find_outliers, pair_landmarks, qa_document, write_qa_json, write_qa_table
from ..spatial import Grid, jacobian_determinant, tensor_to_image
from ..version import __version__
from .evaluation import EvaluationInputs, evaluate

METRICS_FILE = "metrics.json"
# every file a registration may write besides the report's (see output_names)
_OUTPUT_FILES = ("field.nrrd", "field.h5", "field.nii.gz", "warped_moving.nrrd",
                 "fixed_lungs.nrrd", "warped_moving_lobes.nrrd", "jacobian.nrrd",
                 "fixed_landmarks_tre.mrk.json", "predicted_moving_landmarks.mrk.json",
                 "landmark_qa.json", "landmark_qa.csv", METRICS_FILE)
# options that do not change the result: a batch re-run with other values still resumes
_RESULT_NEUTRAL_OPTIONS = ("threads",)


def output_names() -> tuple[str, ...]:
    """The file names a registration writes into its folder (the report's included)."""
    from ..reporting import FIGURES, REPORT_NAME  # matplotlib: only when writing

    return (*_OUTPUT_FILES, REPORT_NAME, *FIGURES.values())


def write_outputs(pair, inputs, options, state, out_dir: Path, points=None,
                  fingerprint: str | None = None) -> tuple[dict[str, Path], dict]:
    """Write fields, warped images, the Jacobian map, landmarks, metrics and the report into
    ``out_dir``, replacing an earlier run's outputs there; returns the files and the
    metrics. ``fingerprint``: :func:`input_fingerprint` taken when the run started."""
    out_dir = Path(out_dir)
    fingerprint = fingerprint or input_fingerprint(inputs, options)
    with staging_folder(out_dir) as staging:
        files, metrics = _write_into(pair, inputs, options, state, staging, points)
        metrics["run"]["fingerprint"] = fingerprint
        files["metrics"] = write_json(staging / METRICS_FILE, metrics)
        publish(staging, out_dir, output_names(), last=METRICS_FILE)
    return {key: out_dir / path.name for key, path in files.items()}, metrics


def input_fingerprint(inputs, options) -> str:
    """A hash of what a result depends on: every input file (resolved path, size and
    modification time, in ns) and the options. Cheap (no file is read), and it changes
    when a file is replaced, touched or renamed, or an option changes."""
    stamps = {name: value if name.endswith("_format") else _stamps(value)
              for name, value in vars(inputs).items()}
    chosen = {key: value for key, value in vars(options).items()
              if key not in _RESULT_NEUTRAL_OPTIONS}
    chosen["model_file"] = _stamps(options.model) if Path(options.model).is_file() else None
    text = json.dumps({"inputs": stamps, "options": chosen}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stamps(value: object) -> list | None:
    """(path, size, mtime_ns) of a file, of each file in a folder, or of each file of a
    comma-separated list (lobe masks)."""
    if value is None:
        return None
    found = []
    for part in str(value).split(","):
        path = Path(part.strip()).resolve()
        members = sorted(path.iterdir()) if path.is_dir() else [path]
        for member in members:
            stat = member.stat() if member.exists() else None
            found.append([str(member), stat and stat.st_size, stat and stat.st_mtime_ns])
    return found


def _write_into(pair, inputs, options, state, out_dir: Path, points=None
                ) -> tuple[dict[str, Path], dict]:
    """Every output but ``metrics.json``, into ``out_dir``; returns the files and the
    metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = state.transform()
    files = {"field_nrrd": write_field(state.field, state.grid, out_dir / "field.nrrd"),
             "field_h5": write_field(state.field, state.grid, out_dir / "field.h5", transform)}
    if options.write_nifti:
        files["field_nifti"] = write_field(state.field, state.grid, out_dir / "field.nii.gz")
    warped = sitk.Resample(pair.moving, pair.fixed, transform, sitk.sitkLinear, -1024.0)
    files["warped_moving"] = write_image(sitk.Cast(sitk.Round(warped), sitk.sitkInt16),
                                         out_dir / "warped_moving.nrrd")
    files["fixed_lungs"] = write_image(pair.fixed_lungs, out_dir / "fixed_lungs.nrrd")
    lobes = None
    if pair.moving_lobes is not None:
        lobes = sitk.Resample(pair.moving_lobes, pair.fixed, transform,
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        files["warped_moving_lobes"] = write_image(lobes, out_dir / "warped_moving_lobes.nrrd")
    # float32: 4x faster than float64 on a 251x251x141 field, within 1e-6 of it
    det = jacobian_determinant(state.field.float(), state.grid)
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
    # what the self-checks measured, and the checks that failed (the report's warning box)
    metrics["self_checks"], metrics["warnings"] = pair.checks.to_metrics()
    if points is not None:
        files.update(_landmark_files(points, metrics, state, out_dir))
    if options.report:
        files["report"] = _report(pair, jacobian, warped, metrics, out_dir)
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
        "refinement": state.refinement,
        "versions": versions,
        "field_grid": state.grid.to_dict(),
        # the grid the deformable part was found on (the lung crop), None: affine only
        "refinement_grid": None if state.crop is None else state.crop.to_dict(),
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

