"""Ablation: the refinement's Adam epsilon, which damps the steps where the loss is flat.

Usage: ``python Testing/benchmark/ablate_adam_eps.py [--threads 2] [--eps 1e-8,1e-7,3e-7]
[--thick-slices 4] [--name adam_eps]``

Adam divides each voxel's step by the root of its own gradient's second moment plus
``eps``. Where the similarity has no data (past the moving image's field of view) only the
regulariser pulls, the gradients are tiny and the normalised steps still near full size:
session 10 saw the run-to-run spread and the residual folding of a full-resolution synthetic
tuning pair sit in exactly those caudal slices (``outside_taper.md``). A larger ``eps`` damps
such steps and leaves the steps driven by image data almost unchanged. This runs the whole
``register`` (default pipeline) for each value on the declared *tuning* data only: the cases
of ``ablate_discrete_search.py`` (POPI 00->50 and 00->60, two 0.98x0.98x2 mm synthetic
pairs) and ``--thick-slices`` 5 mm synthetic pairs. Reported per run: TRE mean / p95 / max,
folding over the whole written field and wall time. Writes
``Testing/benchmark/results/<name>.md`` with this command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
from ablate_discrete_search import run, thick_slice_cases
from ablate_outside_taper import cases

from LungDeepRegLib.pipeline import optimise

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eps", default="1e-8,1e-7,3e-7")
    parser.add_argument("--thick-slices", type=int, default=4, metavar="N")
    parser.add_argument("--name", default="adam_eps", help="results file stem")
    args = parser.parse_args()
    values = [float(text) for text in args.eps.split(",")]
    work = Path(tempfile.mkdtemp(prefix="adam_eps_"))
    lines = ["# The refinement's Adam epsilon (tuning data only)", "",
             f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             "| case | eps | TRE mean / p95 / max (mm) | folding, whole field (%) | wall (s) |",
             "|---|---|---|---|---|"]
    means: dict[float, list[float]] = {value: [] for value in values}
    found = cases(work / "pairs") + thick_slice_cases(args.thick_slices, work / "pairs")
    for number, (name, inputs) in enumerate(found, start=1):
        for value in values:
            optimise.ADAM_EPS = value
            result = run(inputs, work / "out" / f"{number}-{value}", args.threads, "auto", "off")
            mean, p95, worst = result["tre"]
            means[value].append(mean)
            lines.append(f"| {name} | {value:g} | {mean:.3f} / {p95:.2f} / {worst:.2f} | "
                         f"{100 * result['folding']:.4f} | {result['wall']:.1f} |")
            print(lines[-1], flush=True)
    lines += ["", "Mean TRE over the cases (mm): " + ", ".join(
        f"eps {value:g} {np.mean(found_means):.3f}" for value, found_means in means.items())]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
