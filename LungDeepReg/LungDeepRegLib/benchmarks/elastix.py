"""The elastix baseline: a published lung parameter set from the elastix Model Zoo, unmodified.

Par0011 (Staring et al., "Pulmonary image registration with elastix using a standard
intensity-based algorithm", EMPIRE10 workshop, MICCAI 2010) was designed for intra-patient
lung CT pairs, inspiration/expiration among them: affine, then a 10 mm B-spline, then a
5 mm B-spline restricted to the fixed lung mask, each stage started from the previous one,
as the Model Zoo's command lines show. The files are stored verbatim in
``elastix_parameters/Par0011`` (see its README). elastix 5.0.1 reads only its own
``(Key value ...)`` syntax, so each file is rewritten in that syntax line by line, keys and
values unchanged (:func:`to_elastix_syntax`).

Run as a script (``python -m LungDeepRegLib.benchmarks.elastix``) the module is the
method's one process: the three elastix stages, then ``transformix -def all`` on the
benchmark's output grid, leaving ``field.mha`` (fixed-to-moving displacement in LPS mm, the
engine's convention) in ``--out``. It imports no torch (SimpleITK only to prepare the
inputs), so the process's peak memory is essentially elastix's. The output grid is set in
a copy of the final transform's parameter file (Size, Spacing, Origin: transformix's output
geometry, not a registration setting).

Input preparation (the Model Zoo's Par0011 calls, too, used "slightly pre-processed"
images): like the pipeline, elastix gets the lung region, the fixed image cropped to the
fixed lung mask's box plus ``FIXED_MARGIN_MM`` and the moving image to that box plus
``MOVING_MARGIN_MM``, both resampled to ``SPACING_MM`` isotropic voxels (Par0011 was made
for about 0.7 mm voxels: its coarsest pyramid level shrinks by 16, which leaves a 5 mm
image a few voxels wide, and the affine stage then collapsed on POPI at 5 x 5 x 6 mm).
Without the crop the B-spline grid spans the whole scan (air and table included): on a
500 mm field of view the 5 mm stage has about 1.9 million parameters, and elastix's
automatic step size estimation alone ran for hours on 2 cores. Outside the fixed crop the
field is the affine part (B-spline displacement 0).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PARAMETER_SET = "Par0011"
PARAMETER_DIR = Path(__file__).resolve().parent / "elastix_parameters" / PARAMETER_SET
# (file, whether the stage uses the fixed lung mask), in the order of the published calls
STAGES = (("Parameters.Par0011.affine.yml", False),
          ("Parameters.Par0011.bspline1_s.yml", False),
          ("Parameters.Par0011.bspline2_s.yml", True))
FIELD_FILE = "field.mha"
FIXED_MARGIN_MM, MOVING_MARGIN_MM = 10.0, 40.0
SPACING_MM = 1.0
DESCRIPTION = ("elastix Model Zoo Par0011 (Staring et al., EMPIRE10 2010): affine, B-spline "
               "10 mm, B-spline 5 mm in the fixed lung mask; parameter files unmodified; "
               "images cropped to the fixed lungs + 10 mm (moving + 40 mm) and resampled "
               "to 1 mm voxels")


def unavailable_reason() -> str | None:
    """Why the baseline cannot run here (None when ``elastix`` and ``transformix`` exist)."""
    missing = [tool for tool in ("elastix", "transformix") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not found on PATH (install Debian/Ubuntu "
                "'elastix' or the binaries from github.com/SuperElastix/elastix)")
    return None


def to_elastix_syntax(text: str) -> str:
    """A Model Zoo YAML parameter file in elastix's own syntax, line by line.

    ``Key: value`` becomes ``(Key value)``, lists become space-separated values, booleans
    become the quoted strings elastix expects, ``#`` comments become ``//`` comments;
    numbers and strings are copied as written.
    """
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            lines.append("")
        elif stripped.startswith("#"):
            lines.append("//" + stripped[1:])
        else:
            key, _, value = stripped.partition(":")
            value = value.strip()
            items = value[1:-1].split(",") if value.startswith("[") else [value]
            tokens = [_token(item.strip()) for item in items]
            lines.append(f"({key.strip()} {' '.join(tokens)})")
    return "\n".join(lines) + "\n"


def _token(item: str) -> str:
    return f'"{item}"' if item in ("true", "false") else item


def driver_command(fixed: Path, moving: Path, mask: Path, out: Path, threads: int,
                   size: Sequence[int], spacing: Sequence[float], origin: Sequence[float]
                   ) -> list[str]:
    """The command line of the baseline's one process (this module as a script)."""
    return [sys.executable, "-m", "LungDeepRegLib.benchmarks.elastix",
            "--fixed", str(fixed), "--moving", str(moving), "--mask", str(mask),
            "--out", str(out), "--threads", str(threads),
            "--size", *map(str, size), "--spacing", *map(repr, map(float, spacing)),
            "--origin", *map(repr, map(float, origin))]


def set_output_grid(parameters: str, size: Sequence[int], spacing: Sequence[float],
                    origin: Sequence[float]) -> str:
    """A transform parameter file whose output (transformix) grid is the one given."""
    values = {"Size": " ".join(str(int(n)) for n in size), "Index": "0 0 0",
              "Spacing": " ".join(repr(float(s)) for s in spacing),
              "Origin": " ".join(repr(float(o)) for o in origin),
              "ResultImageFormat": '"mha"'}
    for key, value in values.items():
        pattern = re.compile(rf"^\({key} [^)]*\)$", re.MULTILINE)
        line = f"({key} {value})"
        parameters = (pattern.sub(line, parameters) if pattern.search(parameters)
                      else parameters.rstrip("\n") + f"\n{line}\n")
    return parameters


def run_stages(args: argparse.Namespace) -> int:
    """elastix stage by stage, then transformix; returns the exit code."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    fixed, moving, mask = crop_inputs(args.fixed, args.moving, args.mask, out / "cropped")
    stages = ([(Path(path), False) for path in args.parameters] if args.parameters
              else [(PARAMETER_DIR / name, masked) for name, masked in STAGES])
    previous = None
    for number, (source, masked) in enumerate(stages, start=1):
        name = source.name
        parameters = out / f"{source.stem}.txt"
        text = source.read_text()
        parameters.write_text(to_elastix_syntax(text) if source.suffix == ".yml" else text)
        stage = out / f"stage{number}"
        stage.mkdir(exist_ok=True)
        command = ["elastix", "-f", fixed, "-m", moving, "-p", parameters,
                   "-out", stage, "-threads", str(args.threads)]
        if previous is not None:
            command += ["-t0", previous]
        if masked:
            command += ["-fMask", mask]
        if not _run(command, stage / "elastix.log", f"elastix stage {number} ({name})"):
            return 1
        previous = stage / "TransformParameters.0.txt"
    final = out / "TransformParameters.field.txt"
    final.write_text(set_output_grid(previous.read_text(), args.size, args.spacing,
                                     args.origin))
    fields = out / "transformix"
    fields.mkdir(exist_ok=True)
    command = ["transformix", "-def", "all", "-tp", final, "-out", fields,
               "-threads", str(args.threads)]
    if not _run(command, fields / "transformix.log", "transformix"):
        return 1
    os.replace(fields / "deformationField.mha", out / FIELD_FILE)
    return 0


def crop_inputs(fixed_path: str, moving_path: str, mask_path: str, folder: Path
                ) -> tuple[Path, Path, Path]:
    """Fixed image and mask cropped to the lung box + margin, the moving image to that box
    + the larger margin, all on ``SPACING_MM`` voxels (see the module docstring); written as
    .mha into ``folder``."""
    import SimpleITK as sitk  # only here: the driver otherwise stays light

    folder.mkdir(exist_ok=True)
    fixed, moving = sitk.ReadImage(fixed_path), sitk.ReadImage(moving_path)
    mask = sitk.ReadImage(mask_path)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        raise SystemExit("error: the fixed lung mask is empty")
    box = stats.GetBoundingBox(1)  # (x, y, z) start, then size, in fixed voxels
    corners = [fixed.TransformContinuousIndexToPhysicalPoint(
        [box[k] - 0.5 + (box[k + 3] if (c >> k) & 1 else 0) for k in range(3)])
        for c in range(8)]
    paths = (folder / "fixed.mha", folder / "moving.mha", folder / "fixed_lungs.mha")
    images = (_crop(fixed, corners, FIXED_MARGIN_MM),
              _crop(moving, corners, FIXED_MARGIN_MM + MOVING_MARGIN_MM),
              _crop(mask, corners, FIXED_MARGIN_MM))
    for image, path, nearest in zip(images, paths, (False, False, True), strict=True):
        sitk.WriteImage(_isotropic(image, nearest), str(path))
    return paths


def _crop(image, corners: list, margin_mm: float):
    """``image`` restricted to the index box holding ``corners`` widened by ``margin_mm``."""
    import SimpleITK as sitk

    index = [image.TransformPhysicalPointToContinuousIndex(p) for p in corners]
    start, size = [], []
    for axis in range(3):
        pad = margin_mm / image.GetSpacing()[axis]
        low = max(0, int(min(i[axis] for i in index) - pad + 0.5))
        high = min(image.GetSize()[axis], int(max(i[axis] for i in index) + pad + 0.5) + 1)
        start.append(low)
        size.append(max(1, high - low))
    return sitk.RegionOfInterest(image, size, start)


def _isotropic(image, nearest: bool):
    """``image`` resampled to ``SPACING_MM`` voxels over the same extent and direction."""
    import SimpleITK as sitk

    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    size = [max(2, round(e / SPACING_MM)) for e in extent]
    # the first voxel's outer edge stays where it was: origin moves by half a voxel change
    shift = [0.5 * (SPACING_MM - s) for s in image.GetSpacing()]
    direction = image.GetDirection()
    origin = [image.GetOrigin()[i] + sum(direction[3 * i + k] * shift[k] for k in range(3))
              for i in range(3)]
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    default = 0 if nearest else -1024
    return sitk.Resample(image, size, sitk.Transform(), interpolator, origin,
                         [SPACING_MM] * 3, direction, default, image.GetPixelID())


def _run(command: list, log: Path, what: str) -> bool:
    result = subprocess.run([str(part) for part in command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode == 0:
        return True
    text = log.read_text(errors="replace") if log.is_file() else result.stderr
    tail = [line for line in text.splitlines() if line.strip()][-15:]
    print(f"{what} failed (exit {result.returncode}):", *tail, sep="\n", file=sys.stderr)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", required=True)
    parser.add_argument("--moving", required=True)
    parser.add_argument("--mask", required=True, help="fixed lung mask (stage 3)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=3, required=True, help="output grid")
    parser.add_argument("--spacing", type=float, nargs=3, required=True)
    parser.add_argument("--origin", type=float, nargs=3, required=True)
    parser.add_argument("--parameters", nargs="+", help="other parameter files, one stage "
                        "each, no mask (tests); default: Par0011")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 3
    return run_stages(args)


if __name__ == "__main__":
    raise SystemExit(main())
