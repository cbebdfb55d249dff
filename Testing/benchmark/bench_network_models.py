"""Two network models side by side on held-out synthetic pairs: network only against the
affine pre-alignment, on a CT that neither model trained on and on a training CT.

    python Testing/benchmark/bench_network_models.py \\
        --model previous=lungdeepreg-popi-cpu --model new=PATH.safetensors --pairs 10

Pairs come from the benchmark seed (424242; training uses 0, validation 1000) on a
128x112x128 lung crop, in two kinds: the analytic breathing model (``breathing``, the
previous benchmark's kind) and real motion carried from the motion atlas (``atlas``; the
atlas holds the two POPI tuning-pair fields, so this kind is the new model's training
distribution and is labelled so). Groups: Lung-PET-CT-Dx A0001 (never trained on by either
model: the declared unseen CT) and POPI phase 00 (both models' training CT). Each model sees
the pair resampled to its own input size, as the pipeline gives it, and its field is
resampled back to the pair's grid. Per method: mean endpoint error in the lung, TRE of 300
lung points, folding, time; ratios to the affine's EPE. Writes
``Testing/benchmark/results/network_models.json`` and ``.md`` with this command.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from bench_network import (
    BENCHMARK_SEED,
    evaluate_field,
    initial_and_affine,
    lung_points,
    summarize,
    write_report,
)

from LungDeepRegLib.data import SyntheticPairSource
from LungDeepRegLib.data.motion import MotionAtlas
from LungDeepRegLib.models.store import load_model
from LungDeepRegLib.spatial import resample_field, warp

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
GROUPS = {"unseen CT (Lung-PET-CT-Dx A0001)":
          SHARED / "lung_pet_ct_dx" / "lung_dx_a0001.nii.gz",
          "training CT (POPI phase 00)": SHARED / "popi" / "popi_phase00.nii.gz"}
KINDS = ("breathing", "atlas")
PAIR_SIZE = (128, 112, 128)


def run_model(model: torch.nn.Module, size: tuple[int, int, int], pair) -> torch.Tensor:
    """The model's field on the pair's grid, from the pair resampled to ``size``."""
    grid = pair.grid.with_size(size)
    identity = torch.zeros((1, 3, *grid.shape))
    fixed = warp(pair.fixed, pair.grid, identity, grid)  # resample onto the model grid
    moving = warp(pair.moving, pair.grid, identity, grid)
    with torch.inference_mode():
        field = model(fixed, moving, grid).float()
    return resample_field(field, grid, pair.grid)


def run_methods(pair, models: dict, points) -> dict:
    results = initial_and_affine(pair, points)
    for name, (model, size) in models.items():
        started = time.perf_counter()
        field = run_model(model, size, pair)
        results[name] = {**evaluate_field(field, pair, points),
                         "time_s": time.perf_counter() - started}
    return results


def suite(models: dict, pairs: int) -> dict:
    report = {}
    atlas = MotionAtlas.load()
    for group, ct in GROUPS.items():
        for kind in KINDS:
            source = SyntheticPairSource([ct], size=PAIR_SIZE, seed=BENCHMARK_SEED,
                                         kind="breathing", atlas=atlas,
                                         atlas_share=1.0 if kind == "atlas" else 0.0)
            per_pair = []
            for index in range(pairs):
                pair = source.pair(index)
                points = lung_points(pair.fixed_mask, pair.grid, index)
                per_pair.append(run_methods(pair, models, points))
                print(f"{group}, {kind}: pair {index + 1}/{pairs}", file=sys.stderr,
                      flush=True)
            report[f"{group}, {kind} motion"] = {"pairs": pairs, "summary": summarize(per_pair)}
    return report


def markdown(report: dict) -> str:
    lines = [f"# Network models side by side ({report['date']}, {report['hardware']})", "",
             f"Command: `{report['command']}`", "",
             "Network only (no affine pre-alignment, no refinement) against the affine "
             "pre-alignment alone. `atlas` motion is the new model's training distribution "
             "(fields of the two POPI tuning pairs); A0001 was never trained on.", ""]
    for name, model in report["models"].items():
        lines.append(f"- `{name}`: {model['name']} ({'x'.join(map(str, model['size']))}, "
                     f"sha256 {model['sha256'][:12]})")
    lines.append("")
    for group, data in report["synthetic"].items():
        lines += [f"## {group}: {data['pairs']} held-out pairs", "",
                  "| method | EPE lung (mm) | EPE / affine | TRE 300 pts (mm) | folding (%) "
                  "| time (s) |", "|---|---|---|---|---|---|"]
        affine = data["summary"]["affine"]["epe_mm"]
        for method, row in data["summary"].items():
            lines.append(f"| {method} | {row['epe_mm']:.2f} | {row['epe_mm'] / affine:.2f} | "
                         f"{row['tre_mm']:.2f} | {100 * row['folding_fraction']:.4f} | "
                         f"{row.get('time_s', 0):.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=MODEL",
                        help="a model name or .safetensors path with its label (repeatable)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "network_models.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, described = {}, {}
    for item in args.model:
        label, _, name = item.partition("=")
        model, card = load_model(name)
        size = tuple(card["input"]["size_xyz"])
        models[label] = (model.eval(), size)
        described[label] = {"name": card["name"], "size": list(size), "sha256": card["sha256"]}
    report = {"command": shlex.join(["python", *sys.argv]),
              "date": datetime.date.today().isoformat(),
              "hardware": f"{platform.machine()} CPU, {args.threads} threads",
              "benchmark_seed": BENCHMARK_SEED, "pair_size": list(PAIR_SIZE),
              "models": described, "synthetic": suite(models, args.pairs)}
    write_report(args.output, report, markdown(report))


if __name__ == "__main__":
    main()
