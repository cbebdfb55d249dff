"""Evaluate a registration result: TRE, label overlap and Jacobian statistics in one report.

Used by ``lungdeepreg evaluate``, by the registration pipeline's ``metrics.json`` and by the
benchmarks, so every number is computed one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import SimpleITK as sitk
import torch

from ..metrics.jacobian import jacobian_summary
from ..metrics.landmarks import TREProtocol, check_inside, summarize, target_registration_error
from ..metrics.overlap import label_overlap
from ..preprocess import lung_mask
from ..spatial import Grid, image_to_tensor, jacobian_determinant, resample_field, warp


@dataclass
class EvaluationInputs:
    """What a registration is judged on; everything but the field is optional."""

    field: torch.Tensor  # (1, 3, z, y, x) LPS mm, fixed to moving
    field_grid: Grid
    fixed_image: sitk.Image | None = None  # for the automatic lung mask
    fixed_points: np.ndarray | None = None  # (N, 3) LPS mm
    moving_points: np.ndarray | None = None
    fixed_labels: sitk.Image | None = None
    moving_labels: sitk.Image | None = None
    mask: sitk.Image | None = None  # region of the Jacobian statistics (lung)
    mask_region: str = "lung mask (given)"  # how ``mask`` was obtained, for the reports
    # computed already by the caller (the pipeline writes both): not computed twice
    warped_labels: sitk.Image | None = None  # moving labels warped onto fixed_labels' grid
    jacobian: torch.Tensor | None = None  # det J of ``field`` on ``field_grid``
    protocol: TREProtocol = dataclass_field(default_factory=TREProtocol)
    moving_grid: Grid | None = None  # voxel grid that round_to_voxel snaps to (default: field)
    exclude_outside: bool = False
    landmark_source: str | None = None


def evaluate(inputs: EvaluationInputs) -> dict:
    """All metrics that the inputs allow, as a JSON-ready dictionary."""
    report: dict = {"field_grid": inputs.field_grid.to_dict()}
    if inputs.fixed_points is not None and inputs.moving_points is not None:
        report["landmarks"] = landmark_report(inputs)
    if inputs.fixed_labels is not None and inputs.moving_labels is not None:
        report["labels"] = label_report(inputs)
    report["jacobian"] = jacobian_report(inputs)
    return report


def landmark_report(inputs: EvaluationInputs) -> dict:
    """TRE before (identity) and after, per landmark and summarised."""
    grid = inputs.field_grid
    keep = check_inside(inputs.fixed_points, grid, inputs.landmark_source,
                        exclude=inputs.exclude_outside)
    fixed, moving = inputs.fixed_points[keep], inputs.moving_points[keep]
    excluded = int(np.count_nonzero(~keep))
    snap = inputs.moving_grid or grid
    before = target_registration_error(fixed, moving, protocol=inputs.protocol, moving_grid=snap)
    after = target_registration_error(fixed, moving, inputs.field, grid, inputs.protocol,
                                      moving_grid=snap)
    return {
        "protocol": inputs.protocol.to_dict(),
        "before": summarize(before, excluded=excluded),
        "after": summarize(after, excluded=excluded),
        "per_landmark": [
            {"index": int(i) + 1, "tre_before_mm": float(b), "tre_mm": float(a)}
            for i, b, a in zip(np.flatnonzero(keep), before, after, strict=True)
        ],
    }


def label_report(inputs: EvaluationInputs) -> dict:
    """Per-label Dice/ASD/HD95 before (identity resampling) and after warping."""
    fixed_labels = inputs.fixed_labels
    before = sitk.Resample(inputs.moving_labels, fixed_labels, sitk.Transform(),
                           sitk.sitkNearestNeighbor, 0, fixed_labels.GetPixelID())
    after = inputs.warped_labels
    if after is None:
        after = warp_labels(inputs.moving_labels, inputs.field, inputs.field_grid, fixed_labels)
    return {"before": label_overlap(fixed_labels, before),
            "after": label_overlap(fixed_labels, after)}


def jacobian_report(inputs: EvaluationInputs) -> dict:
    """Folding and SD of log-Jacobian inside the lung mask (given, or computed)."""
    det = inputs.jacobian
    if det is None:
        det = jacobian_determinant(inputs.field.float(), inputs.field_grid)  # as outputs.py
    mask_image, region = inputs.mask, inputs.mask_region
    if mask_image is None and inputs.fixed_image is not None:
        mask_image, region = lung_mask(inputs.fixed_image), "lung mask (automatic)"
    mask = None
    if mask_image is not None:
        reference = inputs.field_grid.apply_to(sitk.Image(inputs.field_grid.size, sitk.sitkUInt8))
        on_field_grid = sitk.Resample(mask_image, reference, sitk.Transform(),
                                      sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        mask = image_to_tensor(on_field_grid)[0] > 0
    summary = jacobian_summary(det, mask)
    if mask is not None:
        summary["region"] = region
    return summary


def warp_labels(moving_labels: sitk.Image, field: torch.Tensor, field_grid: Grid,
                reference: sitk.Image) -> sitk.Image:
    """Moving label map warped onto ``reference``'s grid by nearest neighbour."""
    target = Grid.from_image(reference)
    if target != field_grid:
        field = resample_field(field, field_grid, target)
    labels, labels_grid = image_to_tensor(moving_labels)
    warped = warp(labels, labels_grid, field.float(), target, interpolation="nearest")
    image = sitk.GetImageFromArray(warped[0, 0].round().numpy().astype(np.uint16))
    image.CopyInformation(reference)
    return sitk.Cast(image, reference.GetPixelID())
