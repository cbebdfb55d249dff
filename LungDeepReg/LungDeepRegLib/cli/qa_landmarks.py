"""``lungdeepreg qa-landmarks``: flag landmark pairs that look like annotation errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..io.images import read_image
from ..io.landmarks import LANDMARK_FORMATS, read_landmark_pair, resolve_format
from ..io.transforms import read_field
from ..metrics.landmarks import check_inside
from ..qa import (
    OutlierReport,
    OutlierRule,
    export_landmark_set,
    find_outliers,
    pair_landmarks,
    qa_document,
    write_qa_json,
    write_qa_table,
)
from ..spatial import Grid


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "qa-landmarks", help="flag landmark pairs that look like annotation errors",
        description="Landmark QA under a registration: per-pair TRE, outlier flags (TRE "
                    "above median + k MAD; displacement unlike the nearest neighbours'), "
                    "most severe first. Writes landmark_qa.json, landmark_qa.csv and the "
                    "landmarks annotated with TRE and flags (.mrk.json, CSV, source format).")
    parser.add_argument("--fixed-landmarks", required=True, type=Path)
    parser.add_argument("--moving-landmarks", required=True, type=Path)
    parser.add_argument("--transform", required=True, type=Path,
                        help="fixed-to-moving displacement field (.nrrd, .mha, .nii.gz, ITK .h5)")
    parser.add_argument("--fixed", required=True, type=Path,
                        help="fixed image (or DICOM folder): the grid of voxel-index landmarks")
    parser.add_argument("--moving", type=Path,
                        help="moving image: the grid of voxel-index moving landmarks "
                             "(default: the fixed image's grid, as for DIR-Lab/COPDgene)")
    parser.add_argument("--landmark-format", choices=LANDMARK_FORMATS,
                        help="format of both landmark files (default: from the extension)")
    parser.add_argument("--moving-landmark-format", choices=LANDMARK_FORMATS,
                        help="format of the moving landmarks if it differs")
    parser.add_argument("--k", type=_positive(float), default=OutlierRule.k,
                        help="flag above median + k scaled MADs (default: %(default)s)")
    parser.add_argument("--neighbours", type=_positive(int), default=OutlierRule.neighbours,
                        help="neighbours of the local-consistency rule (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("landmark_qa"),
                        help="output folder (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fixed_grid = Grid.from_image(read_image(args.fixed, kind="any"))
    moving_grid = Grid.from_image(read_image(args.moving, kind="any")) if args.moving else None
    fixed_fmt = resolve_format(args.fixed_landmarks, args.landmark_format)
    moving_fmt = resolve_format(args.moving_landmarks,
                                args.moving_landmark_format or args.landmark_format)
    fixed, moving = read_landmark_pair(args.fixed_landmarks, args.moving_landmarks, fixed_fmt,
                                       moving_fmt, fixed_grid, moving_grid or fixed_grid)
    field, field_grid = read_field(args.transform)
    check_inside(fixed, field_grid, args.fixed_landmarks)
    rule = OutlierRule(k=args.k, neighbours=args.neighbours)
    pairs = pair_landmarks(fixed, moving, field, field_grid)
    report = find_outliers(pairs, rule)
    document = qa_document(pairs, report)
    document["inputs"] = {key: str(value) for key, value in vars(args).items()
                          if isinstance(value, Path)}
    written = [write_qa_json(args.out / "landmark_qa.json", document),
               write_qa_table(args.out / "landmark_qa.csv", pairs, report)]
    written += export_landmark_set(args.out, pairs, report, fixed_fmt, fixed_grid,
                                   moving_grid or fixed_grid, moving_fmt).values()
    print_flagged(report, document["summary"]["all"])
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def print_flagged(report: OutlierReport, summary: dict) -> None:
    """Summary line, then one line per flagged pair, most severe first."""
    groups = ", ".join(f"{name}: {count}" for name, count in summary["groups"].items())
    print(f"landmark QA, {summary['n']} pairs: TRE mean {summary['mean']:.2f} mm "
          f"(SD {summary['sd']:.2f}), p75 {summary['p75']:.2f}, max {summary['max']:.2f}; "
          f"{groups}")
    rule = report.rule
    print(f"{len(report.flagged)} flagged (k = {rule.k:g}, {rule.neighbours} neighbours; "
          f"TRE limit {report.residual_threshold_mm:.2f} mm, local limit "
          f"{report.local_threshold_mm:.2f} mm), most severe first:")
    if report.flagged:
        print(f"{'pair':>6} {'label':>8} {'TRE mm':>8}  {'flags':<15} reasons")
    for point in report.flagged:
        print(f"{point.index + 1:>6} {point.label:>8} {point.tre:>8.2f}  "
              f"{','.join(point.flags):<15} {'; '.join(point.reasons)}")


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` above 0 (argparse reports bad ones, exit 2)."""
    def parse(text: str) -> float | int:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse
