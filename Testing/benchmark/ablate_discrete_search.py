"""Ablation: a discrete displacement search (ConvexAdam's coupled convex step) as a start.

Usage: ``python Testing/benchmark/ablate_discrete_search.py [--threads 2] [--models auto,none]
[--modes off,add,replace] [--search '{"radius": 4}'] [--name discrete_search]``

Issue 14 asks whether a discrete large-motion search for the coarse levels helps
(:mod:`LungDeepRegLib.pipeline.discrete`). This runs the whole ``register`` on the declared
*tuning* data only, with the search off, added as one more start of the refinement
(``--search add``: the multistart chooses after the coarse levels) and in place of the
affine start (``--search replace``; the affine start is still compared at the end), each
with the shipped network (``auto``) and by optimisation alone (``none``). Cases: the two
POPI tuning pairs (41 landmarks) and two full-resolution synthetic pairs of POPI phase 00
with 25 mm breathing and tuning seeds ``pair_seed(31337, i)`` (300 lung points, as
``bench_register_large.py`` builds them); ``--thick-slices N`` adds N synthetic tuning pairs
of the bundled sample resampled to 5 mm slices (``ablate_crop_upsampling.thick_slices``,
the thick-slice tuning set of ``refinement_ablation.md`` section 5; 300 lung points, seeds
``pair_seed(31337, i)``, 15-30 mm breathing). Reported per run: TRE mean / p95 / max, folding
over the whole written field, the run's wall time and the search's, and the start the
refinement continued. ``--search`` overrides :class:`SearchConfig` fields for every run.
Writes ``Testing/benchmark/results/<name>.md`` with this command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from ablate_crop_upsampling import thick_slices
from ablate_outside_taper import cases
from tune_loss_weights import TUNING_SEED

from LungDeepRegLib.data.synthetic import pair_seed
from LungDeepRegLib.io.images import write_image
from LungDeepRegLib.io.landmarks import write_csv
from LungDeepRegLib.metrics.landmarks import map_points
from LungDeepRegLib.pipeline import discrete
from LungDeepRegLib.pipeline.demo import breathing_pair, lung_points
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register

RESULTS = Path(__file__).resolve().parent / "results"
POINTS = 300


def thick_slice_cases(count: int, work: Path) -> list[tuple[str, RegistrationInputs]]:
    """Synthetic tuning pairs of the sample at 5 mm slices, written as files with 300 lung
    points moved by the known field."""
    ct, found = thick_slices(5.0), []
    for index in range(count):
        seed = pair_seed(TUNING_SEED, index)
        pair, folder = breathing_pair(ct, seed, (15.0, 30.0)), work / f"thick-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        write_image(pair.fixed, folder / "fixed.nii.gz")
        write_image(pair.moving, folder / "moving.nii.gz")
        points = lung_points(pair.lung, pair.grid, seed, POINTS)
        write_csv(folder / "fixed.csv", points)
        write_csv(folder / "moving.csv", map_points(points, pair.field, pair.grid))
        found.append((f"synthetic 5 mm slices, tuning seed {index}", RegistrationInputs(
            fixed=folder / "fixed.nii.gz", moving=folder / "moving.nii.gz",
            fixed_landmarks=folder / "fixed.csv", moving_landmarks=folder / "moving.csv",
            landmark_format="csv")))
    return found


def run(inputs: RegistrationInputs, out: Path, threads: int, model: str, mode: str) -> dict:
    started = time.perf_counter()
    metrics = register(inputs, out, RegistrationOptions(threads=threads, report=False,
                                                        model=model, search=mode)).metrics
    wall = time.perf_counter() - started
    det = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "jacobian.nrrd")))
    after = metrics["landmarks"]["after"]
    start = metrics["run"].get("network_start") or {}
    return {"tre": (after["mean"], after["p95"], after["max"]),
            "folding": float((det <= 0).mean()), "wall": wall,
            "search": metrics["run"]["runtime_s"].get("discrete search", 0.0),
            "refined": start.get("refined_from", "n/a"), "kept": start.get("kept", "n/a")}


def row(name: str, model: str, mode: str, result: dict) -> str:
    mean, p95, worst = result["tre"]
    return (f"| {name} | {model} | {mode} | {mean:.3f} / {p95:.2f} / {worst:.2f} | "
            f"{100 * result['folding']:.4f} | {result['wall']:.1f} | {result['search']:.1f} | "
            f"{result['refined']} | {result['kept']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="auto,none")
    parser.add_argument("--modes", default="off,add,replace")
    parser.add_argument("--search", type=json.loads, default={},
                        help="JSON object of SearchConfig fields for every run")
    parser.add_argument("--cases", default="", help="comma-separated case numbers (1-4, then "
                        "the thick-slice pairs)")
    parser.add_argument("--thick-slices", type=int, default=0, metavar="N",
                        help="add N synthetic tuning pairs at 5 mm slices")
    parser.add_argument("--name", default="discrete_search", help="results file stem")
    args = parser.parse_args()
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in args.search.items()}
    discrete.DEFAULT_SEARCH = replace(discrete.DEFAULT_SEARCH, **overrides)
    work = Path(tempfile.mkdtemp(prefix="discrete_search_"))
    lines = ["# A discrete displacement search as a start of the refinement (tuning data only)",
             "", f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             f"Search settings: `{discrete.DEFAULT_SEARCH}`", "",
             "| case | model | search | TRE mean / p95 / max (mm) | folding, whole field (%) "
             "| wall (s) | search (s) | refined from | kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    chosen = {int(n) for n in args.cases.split(",") if n}
    means: dict[tuple[str, str], list[float]] = {}
    numbered = [] if chosen and min(chosen) > 4 else list(enumerate(cases(work / "pairs"), 1))
    numbered += enumerate(thick_slice_cases(args.thick_slices, work / "pairs"), 5)
    for number, (name, inputs) in numbered:
        if chosen and number not in chosen:
            continue
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                out = work / "out" / f"{number}-{model}-{mode}"
                result = run(inputs, out, args.threads, model, mode)
                means.setdefault((model, mode), []).append(result["tre"][0])
                lines.append(row(name, model, mode, result))
                print(lines[-1], flush=True)
    lines += ["", "Mean TRE over the cases (mm): " + ", ".join(
        f"{model} {mode} {np.mean(values):.3f}" for (model, mode), values in means.items())]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
