"""How much finer than a coarse CT the refinement crop may be (``crops.MAX_UPSAMPLING``).

Registers the declared POPI *tuning* pairs (light, 5x5x6 mm; ``data_split.toml``) by
optimisation alone (``--model none``), once per factor, in one process and one run, and
writes TRE mean / p95 / max, the crop size and the optimisation time per factor. Factor 1 is
the crop at the CT's own voxels (the behaviour before 2026-12-04).

    python Testing/benchmark/ablate_crop_upsampling.py [--factors 1,2] [--threads 1]
        [--similarity ngf]
    python Testing/benchmark/ablate_crop_upsampling.py --synthetic-slice-mm 5 [--pairs 4]

The second form asks the same of thick slices with a known field: the synthetic tuning
pairs of ``tune_loss_weights.py`` (bundled 2x2x2.5 mm POPI phase 00, seeds
``pair_seed(31337, i)``) made from the CT resampled to ``MM`` slices (anti-aliased), lung
EPE per factor (``crop_upsampling_slices.{md,json}``).

Results: ``Testing/benchmark/results/crop_upsampling.{md,json}`` with the command line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk
from provenance import header
from tune_loss_weights import run_config, tuning_pairs

from LungDeepRegLib.device import configure_threads
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.pipeline import crops
from LungDeepRegLib.pipeline.demo import sample_path
from LungDeepRegLib.pipeline.refine_config import RefineConfig
from LungDeepRegLib.pipeline.register import (
    RegistrationInputs,
    RegistrationOptions,
    register,
)
from LungDeepRegLib.preprocess import resample_to_grid
from LungDeepRegLib.spatial import Grid

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
RESULTS = HERE / "results"
TUNING_PHASES = ("50", "60")  # popi-light-00-50 and 00-60, the declared tuning pairs


def set_factor(factor: float) -> None:
    """The same upsampling on every axis, thick slices included (read by
    ``crops.native_size`` at every call): 1 is the crop at the CT's own voxels."""
    crops.MAX_UPSAMPLING = crops.THICK_SLICE_UPSAMPLING = factor


def pair_inputs(phase: str) -> RegistrationInputs:
    points = SHARED / "popi" / "landmarks_lps"
    return RegistrationInputs(
        fixed=SHARED / "popi_light" / "popi_light_00.nii.gz",
        moving=SHARED / "popi_light" / f"popi_light_{phase}.nii.gz",
        fixed_landmarks=points / "popi_00_points.txt",
        moving_landmarks=points / f"popi_{phase}_points.txt", landmark_format="elastix-point")


def measure(factor: float, phase: str, options: RegistrationOptions) -> dict:
    set_factor(factor)
    with tempfile.TemporaryDirectory() as out:
        result = register(pair_inputs(phase), Path(out), options)
    after = result.metrics["landmarks"]["after"]
    grid = result.metrics["run"]["refinement_grid"] or {}
    return {"pair": f"popi-light-00-{phase}", "factor": factor,
            "tre": {k: after[k] for k in ("mean", "p95", "max")},
            "optimisation_s": result.metrics["run"]["runtime_s"]["instance optimisation"],
            "crop": grid.get("size"),
            "folding_fraction": result.metrics["jacobian"]["folding_fraction"]}


def thick_slices(slice_mm: float) -> sitk.Image:
    """The bundled POPI sample resampled to ``slice_mm`` slices, in-plane unchanged."""
    ct = read_image(sample_path())
    grid = Grid.from_image(ct)
    extent = (ct.GetSize()[2] - 1) * ct.GetSpacing()[2]
    # the last slice stays inside the CT: one sampled on its very edge reads the -1024 HU
    # default (a slice of air that joins the lungs to the outside air)
    size = (*ct.GetSize()[:2], int(extent // slice_mm))
    target = replace(grid, size=size, spacing=(*ct.GetSpacing()[:2], slice_mm))
    return sitk.Cast(resample_to_grid(ct, target), sitk.sitkInt16)


def synthetic_rows(factors: list[float], slice_mm: float, count: int) -> list[dict]:
    """Lung EPE of the thick-slice tuning pairs per factor (crops made per factor)."""
    ct = thick_slices(slice_mm)
    rows = []
    for factor in factors:
        set_factor(factor)
        for index, pair in enumerate(tuning_pairs(count, ct)):
            measured = run_config(RefineConfig(), pair)
            rows.append({"pair": index, "factor": factor, "epe_mm": measured["epe_mm"],
                         "seconds": measured["seconds"], "crop": list(pair["inputs"][0].size),
                         "folding_fraction": measured["folding_fraction"]})
            print(rows[-1], flush=True)
    return rows


def markdown(summary: dict) -> str:
    lines = [f"# Refinement crop finer than a coarse CT ({summary['date']})", "",
             f"Command: `{summary['command']}`", "", f"Machine: {summary['machine']}.", "",
             "POPI light tuning pairs, optimisation alone; TRE over 41 landmarks (mm).", "",
             "| pair | max upsampling | TRE mean | p95 | max | optimisation (s) | folding (%) |",
             "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        t = row["tre"]
        lines.append(f"| {row['pair']} | {row['factor']:g} | {t['mean']:.2f} | {t['p95']:.2f} "
                     f"| {t['max']:.2f} | {row['optimisation_s']:.1f} | "
                     f"{100 * row['folding_fraction']:.4f} |")
    lines.append("")
    for factor, mean in summary["mean_by_factor"].items():
        lines.append(f"- factor {factor}: mean TRE over the pairs {mean:.3f} mm")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--similarity", default="ngf")
    parser.add_argument("--synthetic-slice-mm", type=float, default=None)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    if args.synthetic_slice_mm is not None:
        main_synthetic(args)
        return
    options = RegistrationOptions(model="none", threads=args.threads, report=False,
                                  similarity=args.similarity)
    factors = [float(f) for f in args.factors.split(",")]
    rows = [measure(f, phase, options) for f in factors for phase in TUNING_PHASES]
    for row in rows:
        print(row, flush=True)
    means = {f"{f:g}": sum(r["tre"]["mean"] for r in rows if r["factor"] == f) / len(TUNING_PHASES)
             for f in factors}
    summary = {
        **header(__file__, args.threads),
        "rows": rows, "mean_by_factor": means,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crop_upsampling.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "crop_upsampling.md").write_text(markdown(summary))
    print(markdown(summary))


def main_synthetic(args: argparse.Namespace) -> None:
    configure_threads(args.threads)
    factors = [float(f) for f in args.factors.split(",")]
    rows = synthetic_rows(factors, args.synthetic_slice_mm, args.pairs)
    means = {f"{f:g}": sum(r["epe_mm"] for r in rows if r["factor"] == f) / args.pairs
             for f in factors}
    summary = {
        **header(__file__, args.threads),
        "protocol": (f"synthetic tuning pairs of the bundled POPI sample resampled to "
                     f"{args.synthetic_slice_mm:g} mm slices, seeds pair_seed(31337, i); "
                     "optimisation alone; lung EPE on the 2 mm output grid"),
        "rows": rows, "mean_epe_by_factor": means,
    }
    lines = [f"# Refinement crop finer than thick slices ({summary['date']})", "",
             f"Command: `{summary['command']}`", "", summary["protocol"] + ".", "",
             "| pair | max upsampling | crop | lung EPE (mm) | s |", "|---|---|---|---|---|"]
    lines += [f"| {r['pair']} | {r['factor']:g} | {'x'.join(map(str, r['crop']))} | "
              f"{r['epe_mm']:.3f} | {r['seconds']:.1f} |" for r in rows]
    lines += [""] + [f"- factor {f}: mean lung EPE {m:.3f} mm" for f, m in means.items()]
    (RESULTS / "crop_upsampling_slices.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "crop_upsampling_slices.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
