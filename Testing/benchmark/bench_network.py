"""Network benchmark (issue: multilevel network): affine only vs single-level vs 3-level.

Held-out synthetic breathing pairs (benchmark seed, never used in training) from a CT that
training never saw (CIP ct-64, COPDGene) and, separately, from the training CT (POPI phase
00). Per method: mean endpoint error in the lung, TRE on 300 sampled lung points, folding
fraction in the lung, inference time. Then CPU inference of the shipped model at the
paper's 192x160x192 input: wall time and peak memory (fresh subprocess per variant).

    python Testing/benchmark/bench_network.py --multilevel M.safetensors --single S.safetensors
    python Testing/benchmark/bench_network.py --multilevel M.safetensors --inference-only

Results go to ``Testing/benchmark/results/network.json`` and ``network.md`` with the command
(``network_inference.*`` with ``--inference-only``). The single-level model of the ablation
is committed as ``Testing/benchmark/models/singlelevel-popi-cpu.safetensors`` with its card.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shlex
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from LungDeepRegLib.data import SyntheticPairSource
from LungDeepRegLib.metrics.jacobian import jacobian_summary
from LungDeepRegLib.metrics.landmarks import map_points, target_registration_error
from LungDeepRegLib.models.store import load_model
from LungDeepRegLib.pipeline.affine import affine_prealign, transform_to_field
from LungDeepRegLib.spatial import Grid, jacobian_determinant, tensor_to_image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
BENCHMARK_SEED = 424242  # training uses seed 0 and validation 1000: disjoint streams
GROUPS = {"unseen CT (CIP ct-64, COPDGene)": SHARED / "cip" / "ct-64.nrrd",
          "training CT (POPI phase 00)": SHARED / "popi" / "popi_phase00.nii.gz"}
POINTS = 300
VARIANT_TIMEOUT_S = 150
# Inference without the finest level: its U-Net runs on 8 times the voxels of the next one and
# costs most of the time; the pipeline's instance optimisation (96x80x96) refines after it.
FINEST_SKIPPED = "finest level skipped"


def without_finest_level(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a multilevel model that runs all levels but the finest (its field is the
    coarser levels' composition, upsampled)."""
    copy = deepcopy(model)
    copy.active_levels = copy.num_levels - 1
    return copy


def to_hu_image(tensor: torch.Tensor, grid) -> sitk.Image:
    return tensor_to_image(tensor * 4095.0 - 1024.0, grid)


def lung_points(mask: torch.Tensor, grid, seed: int) -> np.ndarray:
    index = torch.nonzero(mask[0, 0] > 0).numpy()[:, ::-1]  # (x, y, z) indices
    chosen = np.random.default_rng(seed).choice(len(index), size=POINTS, replace=False)
    return grid.index_to_physical(index[chosen].astype(float))


def evaluate_field(field, pair, points) -> dict:
    mask = pair.fixed_mask > 0
    error = (field - pair.field).square().sum(1, keepdim=True).sqrt()
    moved = points + _sample(pair.field, pair.grid, points)  # where the truth moves them
    truth = target_registration_error(points, moved)
    tre = target_registration_error(points, moved, field, pair.grid)
    jac = jacobian_summary(jacobian_determinant(field.double(), pair.grid), mask)
    return {"epe_mm": float(error[mask].mean()), "tre_mm": float(tre.mean()),
            "motion_mm": float(truth.mean()), "folding_fraction": jac["folding_fraction"]}


def _sample(field, grid, points):
    return map_points(points, field, grid) - points


def initial_and_affine(pair, points) -> dict:
    """The rows every comparison starts with: no registration, and the lung-aware affine
    pre-alignment of the pipeline (timed)."""
    results = {"initial": evaluate_field(torch.zeros_like(pair.field), pair, points)}
    started = time.perf_counter()
    mask = tensor_to_image((pair.fixed_mask > 0).to(torch.uint8), pair.grid)
    affine = affine_prealign(to_hu_image(pair.fixed, pair.grid),
                             to_hu_image(pair.moving, pair.grid), mask)
    field = transform_to_field(affine, pair.grid)
    results["affine"] = {**evaluate_field(field, pair, points),
                         "time_s": time.perf_counter() - started}
    return results


def run_methods(pair, models: dict, points) -> dict:
    results = initial_and_affine(pair, points)
    for name, model in models.items():
        with torch.no_grad():
            started = time.perf_counter()
            field = model(pair.fixed, pair.moving, pair.grid)
            elapsed = time.perf_counter() - started
        results[name] = {**evaluate_field(field, pair, points), "time_s": elapsed}
    return results


def summarize(per_pair: list[dict]) -> dict:
    summary = {}
    for method in per_pair[0]:
        values = [pair[method] for pair in per_pair]
        summary[method] = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
        summary[method]["max_folding_fraction"] = max(v["folding_fraction"] for v in values)
    return summary


def synthetic_suite(args, models: dict, size) -> dict:
    report = {}
    for group, ct in GROUPS.items():
        source = SyntheticPairSource([ct], size=size, seed=BENCHMARK_SEED, kind="breathing")
        per_pair = []
        for index in range(args.pairs):
            pair = source.pair(index)
            per_pair.append(run_methods(pair, models, lung_points(pair.fixed_mask, pair.grid,
                                                                  index)))
            print(f"{group}: pair {index + 1}/{args.pairs}", file=sys.stderr, flush=True)
        report[group] = {"pairs": args.pairs, "summary": summarize(per_pair)}
    return report


# ------------------------------------------------------------------ inference cost
def inference_child(model_path: str, size: list[int], variant: str) -> None:
    """Run in a fresh process: time one 192x160x192 inference and report peak memory."""
    torch.set_num_threads(2)
    model, _ = load_model(model_path)
    grid = Grid(tuple(size), (1.5, 1.5, 1.5))
    shape = (1, 1, size[2], size[1], size[0])
    fixed, moving = torch.rand(shape), torch.rand(shape)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last_3d)
    if variant == FINEST_SKIPPED:
        model = without_finest_level(model)
    context = (torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16"
               else torch.inference_mode())
    times = []
    for _ in range(2):  # the first run pays for allocation and kernel selection
        with torch.inference_mode(), context:
            started = time.perf_counter()
            model(fixed, moving, grid)
            times.append(time.perf_counter() - started)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "first_s": times[0], "time_s": times[1],
                      "peak_rss_mb": peak_mb}))


def inference_cost(model_path: str, size: list[int]) -> list[dict]:
    rows = []
    for variant in ("fp32", "bf16", "channels_last", FINEST_SKIPPED):
        command = [sys.executable, __file__, "--inference-child", model_path, "--variant",
                   variant, "--size", *map(str, size)]
        try:
            output = subprocess.run(command, capture_output=True, text=True, check=True,
                                    timeout=VARIANT_TIMEOUT_S).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:  # e.g. bf16 convolutions without CPU support
            rows.append({"variant": variant, "first_s": float("nan"), "time_s": float("nan"),
                         "peak_rss_mb": float("nan"),
                         "note": f"did not finish two runs in {VARIANT_TIMEOUT_S} s"})
        print(f"inference {variant}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Network benchmark ({report['date']}, {report['hardware']})", "",
             f"Command: `{report['command']}`", ""]
    for group, data in report.get("synthetic", {}).items():
        lines += [f"## {group}: {data['pairs']} held-out breathing pairs", "",
                  "| method | EPE lung (mm) | TRE 300 pts (mm) | folding (%) | time (s) |",
                  "|---|---|---|---|---|"]
        for method, row in data["summary"].items():
            lines.append(f"| {method} | {row['epe_mm']:.2f} | {row['tre_mm']:.2f} | "
                         f"{100 * row['folding_fraction']:.4f} | {row.get('time_s', 0):.2f} |")
        lines.append("")
    lines += ["## CPU inference at " + "x".join(map(str, report["inference_size"])), "",
              "| variant | time (s) | time / fp32 | first run (s) | peak RSS (MB) | note",
              "|---|---|---|---|---|---|"]
    reference = report["inference"][0]["time_s"]  # fp32, measured in the same run
    for row in report["inference"]:
        lines.append(f"| {row['variant']} | {row['time_s']:.1f} | "
                     f"{row['time_s'] / reference:.2f} | {row['first_s']:.1f} "
                     f"| {row['peak_rss_mb']:.0f} | {row.get('note', '')}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--multilevel", help="3-level model (.safetensors)")
    parser.add_argument("--single", help="single-level model, same optimiser steps")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=3, default=[192, 160, 192])
    parser.add_argument("--inference-child", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help="default: results/network.json, or "
                        "results/network_inference.json with --inference-only")
    parser.add_argument("--inference-only", action="store_true",
                        help="only the 192x160x192 inference variants (minutes, not an hour)")
    args = parser.parse_args()
    if args.output is None:
        name = "network_inference.json" if args.inference_only else "network.json"
        args.output = HERE / "results" / name
    if args.inference_child:
        inference_child(args.inference_child, args.size, args.variant)
        return
    torch.set_num_threads(2)
    multilevel, card = load_model(args.multilevel)
    size = tuple(card["input"]["size_xyz"])
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "model_input_size": list(size), "benchmark_seed": BENCHMARK_SEED,
    }
    if not args.inference_only:
        single, _ = load_model(args.single)
        report["synthetic"] = synthetic_suite(
            args, {"single-level": single, "3-level": multilevel,
                   f"3-level, {FINEST_SKIPPED}": without_finest_level(multilevel)}, size)
    report.update(inference_size=args.size,
                  inference=inference_cost(args.multilevel, args.size))
    write_report(args.output, report, markdown(report))


def write_report(output: Path, report: dict, text: str) -> None:
    """``output`` (JSON) and the Markdown ``text`` beside it; the text is printed too."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
