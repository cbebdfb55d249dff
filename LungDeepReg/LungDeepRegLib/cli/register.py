"""``lungdeepreg register``: one fixed/moving pair, all outputs and the QA report."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..io.landmarks import LANDMARK_FORMATS
from ..mrml.job import format_progress
from ..pipeline.discrete import DEFAULT_SEARCH_MODE, SEARCH_MODES
from ..pipeline.refine_config import REGIONS, SIMILARITY_WEIGHTS
from ..pipeline.register import (
    Cancelled,
    RegistrationInputs,
    RegistrationOptions,
    register,
)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Optional inputs shared by ``register`` (and the batch manifest's columns)."""
    parser.add_argument("--fixed-mask", type=Path, help="fixed lung mask (default: automatic)")
    parser.add_argument("--moving-mask", type=Path, help="moving lung mask (recorded only)")
    parser.add_argument("--fixed-lobes", help="fixed lobe label map, folder of lobe masks, "
                                              "or five comma-separated mask files")
    parser.add_argument("--moving-lobes", help="moving lobes (as --fixed-lobes)")
    parser.add_argument("--fixed-landmarks", type=Path)
    parser.add_argument("--moving-landmarks", type=Path)
    parser.add_argument("--landmark-format", choices=LANDMARK_FORMATS,
                        help="format of both landmark files (default: from the extension)")
    parser.add_argument("--moving-landmark-format", choices=LANDMARK_FORMATS)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``register``, ``batch`` and ``demo``."""
    parser.add_argument("--model", default="auto",
                        help="shipped model name, path to a .safetensors file, 'auto' (the "
                             "default model) or 'none' (instance optimisation alone)")
    parser.add_argument("--refine-iterations", type=int, default=None,
                        help="instance optimisation iterations per level (0: network only, "
                             "or with --model none the affine pre-alignment only; "
                             "default: the tuned schedule)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: LUNGDEEPREG_THREADS, OMP_NUM_THREADS, "
                             "else all CPUs shared among torchrun's local processes)")
    parser.add_argument("--fixed-is", choices=("inhale", "exhale"), default="inhale",
                        help="breathing phase of the fixed image (default: inhale)")
    parser.add_argument("--output-spacing", type=float, default=2.0,
                        help="spacing (mm) of the written field; 0 = the fixed image's grid")
    parser.add_argument("--fine-spacing", type=float, default=None, metavar="MM",
                        help="add a last refinement level at this spacing in mm (e.g. 2; "
                             "never finer than the CT) for more detail at more cost")
    parser.add_argument("--similarity", choices=tuple(SIMILARITY_WEIGHTS), default="ngf",
                        help="similarity of the instance optimisation: ngf (normalised "
                             "gradient fields, the default), ncc (local normalised cross "
                             "correlation) or mind (MIND-SSC descriptors)")
    parser.add_argument("--similarity-weight", type=float, default=None, metavar="W",
                        help="weight of that similarity against the regularisers "
                             "(default: the tuned one)")
    parser.add_argument("--similarity-region", choices=REGIONS, default="crop",
                        help="where the similarity is measured: crop (the lungs with a "
                             "10 mm margin and the mediastinum, the default) or lung (the "
                             "fixed lung mask only, as in Hering et al. 2021)")
    parser.add_argument("--search", choices=SEARCH_MODES, default=DEFAULT_SEARCH_MODE,
                        help="discrete displacement search from the affine start "
                             "(ConvexAdam's coupled convex step): off (the default), replace "
                             "(the refinement starts from it instead of the affine start) "
                             "or add (one more start)")
    parser.add_argument("--nifti", action="store_true", help="also write field.nii.gz")
    parser.add_argument("--round-to-voxel", action="store_true",
                        help="DIR-Lab TRE protocol: snap mapped landmarks to the voxel grid")
    parser.add_argument("--exclude-outside", action="store_true",
                        help="exclude (with a warning) landmarks outside the image")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML QA report")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register", help="register a fixed (inhale) and a moving (exhale) CT",
        description="Affine pre-alignment, multilevel network and instance optimisation; "
                    "writes the displacement field (fixed to moving, LPS mm), warped images, "
                    "Jacobian map, metrics.json and report.html into --out.")
    parser.add_argument("--fixed", required=True, type=Path, help="fixed image (inhale)")
    parser.add_argument("--moving", required=True, type=Path, help="moving image (exhale)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_input_arguments(parser)
    add_option_arguments(parser)
    parser.set_defaults(run=run)


def inputs_from(args: argparse.Namespace) -> RegistrationInputs:
    return RegistrationInputs(
        fixed=args.fixed, moving=args.moving, fixed_mask=args.fixed_mask,
        moving_mask=args.moving_mask, fixed_lobes=args.fixed_lobes,
        moving_lobes=args.moving_lobes, fixed_landmarks=args.fixed_landmarks,
        moving_landmarks=args.moving_landmarks, landmark_format=args.landmark_format,
        moving_landmark_format=args.moving_landmark_format)


def options_from(args: argparse.Namespace) -> RegistrationOptions:
    return RegistrationOptions(
        model=args.model, refine_iterations=args.refine_iterations, device=args.device,
        threads=args.threads,
        fixed_is=args.fixed_is, output_spacing_mm=args.output_spacing or None,
        fine_spacing_mm=args.fine_spacing, similarity=args.similarity,
        similarity_weight=args.similarity_weight,
        similarity_region=args.similarity_region, search=args.search,
        write_nifti=args.nifti, exclude_outside_landmarks=args.exclude_outside,
        round_to_voxel=args.round_to_voxel, report=not args.no_report)


def print_progress(fraction: float, step: str) -> None:
    """Machine-readable progress on stderr (the Slicer widget parses these lines)."""
    print(format_progress(fraction, step), file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    warnings.simplefilter("default")
    try:
        result = register(inputs_from(args), args.out, options_from(args), print_progress)
    except Cancelled:
        print("registration cancelled; nothing written", file=sys.stderr)
        return 1
    summarize(result.metrics)
    report = result.files.get("report")
    print(f"outputs in {result.out_dir}" + (f"; QA report: {report}" if report else ""))
    return 0


def summarize(metrics: dict) -> None:
    run_info = metrics["run"]
    if "landmarks" in metrics:
        before, after = metrics["landmarks"]["before"], metrics["landmarks"]["after"]
        print(f"TRE {before['mean']:.2f} -> {after['mean']:.2f} mm (SD {after['sd']:.2f}, "
              f"max {after['max']:.2f}, n={after['n']})")
    jac = metrics["jacobian"]
    print(f"folding {100 * jac['folding_fraction']:.4f} % of {jac['region']}, "
          f"SD log J {jac['sd_log_jacobian']:.3f}")
    print(f"time {run_info['total_runtime_s']:.1f} s on {run_info['device']} "
          f"(model: {run_info['model']['name']})")
