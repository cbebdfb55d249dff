"""``lungdeepreg evaluate``: metrics of a displacement field against landmarks and labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..io.atomic import write_json
from ..io.images import read_image
from ..io.landmarks import LANDMARK_FORMATS, read_landmark_pair
from ..io.transforms import read_field
from ..metrics.landmarks import TREProtocol
from ..pipeline.evaluation import EvaluationInputs, evaluate
from ..spatial import Grid


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="TRE, Dice/ASD/HD95 and Jacobian statistics of a displacement field",
        description="Evaluate a fixed-to-moving displacement field (LPS mm, on the fixed "
                    "grid): landmark TRE, per-label overlap, folding and SD of log-Jacobian.")
    parser.add_argument("--fixed", required=True, type=Path, help="fixed image (or DICOM folder)")
    parser.add_argument("--field", required=True, type=Path,
                        help="displacement field (.nrrd, .mha, .nii.gz or ITK .h5)")
    parser.add_argument("--moving", type=Path,
                        help="moving image: the grid of voxel-index moving landmarks")
    parser.add_argument("--fixed-landmarks", type=Path)
    parser.add_argument("--moving-landmarks", type=Path)
    parser.add_argument("--landmark-format", choices=LANDMARK_FORMATS,
                        help="format of both landmark files (default: from the extension)")
    parser.add_argument("--moving-landmark-format", choices=LANDMARK_FORMATS,
                        help="format of the moving landmarks if it differs")
    parser.add_argument("--round-to-voxel", action="store_true",
                        help="DIR-Lab protocol: snap mapped points to the voxel grid")
    parser.add_argument("--fixed-is", choices=("inhale", "exhale"), default="inhale",
                        help="breathing phase of the fixed image (recorded in the output)")
    parser.add_argument("--exclude-outside", action="store_true",
                        help="warn about and exclude landmarks outside the image "
                             "(default: stop with an error listing them)")
    parser.add_argument("--fixed-labels", type=Path, help="fixed label map (lobes)")
    parser.add_argument("--moving-labels", type=Path, help="moving label map (lobes)")
    parser.add_argument("--mask", type=Path,
                        help="lung mask on the fixed image for the Jacobian statistics "
                             "(default: computed automatically)")
    parser.add_argument("--out", type=Path, default=Path("metrics.json"),
                        help="JSON file to write (default: metrics.json)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fixed = read_image(args.fixed)
    field, field_grid = read_field(args.field)
    inputs = EvaluationInputs(
        field=field, field_grid=field_grid, fixed_image=fixed,
        protocol=TREProtocol(round_to_voxel=args.round_to_voxel, fixed=args.fixed_is),
        exclude_outside=args.exclude_outside,
    )
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        raise InputError(args.fixed_landmarks or args.moving_landmarks,
                         "landmarks need both --fixed-landmarks and --moving-landmarks")
    if args.fixed_landmarks is not None:
        fixed_grid = Grid.from_image(fixed)
        moving_grid = Grid.from_image(read_image(args.moving)) if args.moving else fixed_grid
        inputs.fixed_points, inputs.moving_points = read_landmark_pair(
            args.fixed_landmarks, args.moving_landmarks, args.landmark_format,
            args.moving_landmark_format or args.landmark_format, fixed_grid, moving_grid)
        inputs.landmark_source = str(args.fixed_landmarks)
    if args.fixed_labels or args.moving_labels:
        inputs.fixed_labels = read_image(args.fixed_labels, kind="label")
        inputs.moving_labels = read_image(args.moving_labels, kind="label")
    if args.mask:
        inputs.mask = read_image(args.mask, kind="label")
    report = evaluate(inputs)
    report["inputs"] = {k: str(v) for k, v in vars(args).items()
                        if isinstance(v, Path)}
    write_json(args.out, report)
    print_summary(report)
    print(f"metrics written to {args.out}")
    return 0


def print_summary(report: dict) -> None:
    if "landmarks" in report:
        before, after = report["landmarks"]["before"], report["landmarks"]["after"]
        print(f"TRE (mm, n={after['n']}): before {before['mean']:.2f} ({before['sd']:.2f}), "
              f"after {after['mean']:.2f} ({after['sd']:.2f}), max {after['max']:.2f}")
    for label, values in report.get("labels", {}).get("after", {}).items():
        print(f"label {label}: Dice {values.get('dice', float('nan')):.3f}")
    jac = report["jacobian"]
    print(f"Jacobian ({jac.get('region', 'whole image')}): folding "
          f"{100 * jac['folding_fraction']:.4f} %, SD log J {jac['sd_log_jacobian']:.4f}")
