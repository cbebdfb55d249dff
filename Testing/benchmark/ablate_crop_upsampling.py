"""How much finer than a coarse CT the refinement crop may be (``crops.MAX_UPSAMPLING``).

Registers the declared POPI *tuning* pairs (light, 5x5x6 mm; ``data_split.toml``) by
optimisation alone (``--model none``), once per factor, in one process and one run, and
writes TRE mean / p95 / max, the crop size and the optimisation time per factor. Factor 1 is
the crop at the CT's own voxels (the behaviour before 2026-12-04).

    python Testing/benchmark/ablate_crop_upsampling.py [--factors 1,2] [--threads 1]
        [--similarity ngf]

Results: ``Testing/benchmark/results/crop_upsampling.{md,json}`` with the command line.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from LungDeepRegLib.pipeline import crops
from LungDeepRegLib.pipeline.register import (
    RegistrationInputs,
    RegistrationOptions,
    register,
)

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
RESULTS = HERE / "results"
TUNING_PHASES = ("50", "60")  # popi-light-00-50 and 00-60, the declared tuning pairs


def pair_inputs(phase: str) -> RegistrationInputs:
    points = SHARED / "popi" / "landmarks_lps"
    return RegistrationInputs(
        fixed=SHARED / "popi_light" / "popi_light_00.nii.gz",
        moving=SHARED / "popi_light" / f"popi_light_{phase}.nii.gz",
        fixed_landmarks=points / "popi_00_points.txt",
        moving_landmarks=points / f"popi_{phase}_points.txt", landmark_format="elastix-point")


def measure(factor: float, phase: str, options: RegistrationOptions) -> dict:
    crops.MAX_UPSAMPLING = factor  # read by crops.native_size at every call
    with tempfile.TemporaryDirectory() as out:
        result = register(pair_inputs(phase), Path(out), options)
    after = result.metrics["landmarks"]["after"]
    grid = result.metrics["run"]["refinement_grid"] or {}
    return {"pair": f"popi-light-00-{phase}", "factor": factor,
            "tre": {k: after[k] for k in ("mean", "p95", "max")},
            "optimisation_s": result.metrics["run"]["runtime_s"]["instance optimisation"],
            "crop": grid.get("size"),
            "folding_fraction": result.metrics["jacobian"]["folding_fraction"]}


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
    args = parser.parse_args()
    options = RegistrationOptions(model="none", threads=args.threads, report=False,
                                  similarity=args.similarity)
    factors = [float(f) for f in args.factors.split(",")]
    rows = [measure(f, phase, options) for f in factors for phase in TUNING_PHASES]
    for row in rows:
        print(row, flush=True)
    means = {f"{f:g}": sum(r["tre"]["mean"] for r in rows if r["factor"] == f) / len(TUNING_PHASES)
             for f in factors}
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + shlex.join([f"Testing/benchmark/{Path(__file__).name}",
                                            *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {args.threads} thread(s), {platform.platform()}",
        "rows": rows, "mean_by_factor": means,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crop_upsampling.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "crop_upsampling.md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
