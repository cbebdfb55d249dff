"""``lungdeepreg lung-mask``: the automatic lung mask of one CT, as the registration makes it.

The Slicer module runs this in a background process to show the mask over the fixed image
before Apply, so a bad mask (a lung lost, bowel gas taken) is caught before the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import SimpleITK as sitk

from ..io.images import read_image, write_image
from ..mrml.job import format_progress
from ..preprocess import lung_labels, lung_volume_ml


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lung-mask", help="write the automatic lung mask of a CT (1 left, 2 right)")
    parser.add_argument("--image", type=Path, required=True, help="the CT (any format read)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the label map to write (.nrrd, .nii.gz): 0 background, "
                             "1 left lung, 2 right lung")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(format_progress(0.0, "reading the CT"), file=sys.stderr, flush=True)
    ct = read_image(args.image)
    print(format_progress(0.2, "finding the lungs"), file=sys.stderr, flush=True)
    labels = lung_labels(ct)
    write_image(labels, args.out)
    print(format_progress(1.0, "done"), file=sys.stderr, flush=True)
    print(volumes_line(labels))
    return 0


def volumes_line(labels: sitk.Image) -> str:
    """``lung volume: left X ml, right Y ml`` (or a warning when no lung was found)."""
    left, right = (lung_volume_ml(labels == code) for code in (1, 2))
    if left + right == 0:
        return "warning: no lung found in the image"
    return f"lung volume: left {left:.0f} ml, right {right:.0f} ml"
