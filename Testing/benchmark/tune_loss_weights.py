"""Tuning of the loss weights under our units (mm, gradients per mm, means over the domain).

CONVENTIONS.md: the paper's weights (alpha 10 curvature, gamma 0.01 volume change control,
t 0.2) are starting points; tune them on the synthetic suite and record the values used.
The loss is the same for the network's training and for the instance optimisation, and the
instance optimisation minimises it for each pair directly, so it tells which weights put the
loss's minimum closest to the true motion without a network's approximation error in the
way: every weight setting registers the same pairs by optimisation alone (the pipeline's
affine pre-alignment, lung crop and refinement schedule from identity), and the mean
endpoint error in the lung against the known field, the folding and the SD of log det J
are compared.

Pairs: synthetic breathing pairs (15-30 mm cranio-caudal) of the TRAINING CT only (the
bundled 2 mm POPI phase 00 sample), seeds ``pair_seed(31337, i)``: the tuning stream, used by
no training run and by no benchmark (the unseen CT stays unseen by the tuning too).

    python Testing/benchmark/tune_loss_weights.py [--pairs 4] [--threads 2]

Results: ``Testing/benchmark/results/loss_weights.{json,md}`` with the command line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from provenance import header

from LungDeepRegLib.benchmarks.case import KnownField
from LungDeepRegLib.benchmarks.runner import endpoint_error
from LungDeepRegLib.data.synthetic import pair_seed
from LungDeepRegLib.device import configure_threads
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.losses import LossWeights
from LungDeepRegLib.metrics.jacobian import jacobian_summary
from LungDeepRegLib.pipeline.affine import affine_prealign
from LungDeepRegLib.pipeline.crops import crop_inputs, native_size
from LungDeepRegLib.pipeline.demo import breathing_pair, sample_path
from LungDeepRegLib.pipeline.fields import compose_with_affine, output_grid
from LungDeepRegLib.pipeline.refine import refine
from LungDeepRegLib.pipeline.refine_config import RefineConfig
from LungDeepRegLib.pipeline.register import PreparedPair
from LungDeepRegLib.preprocess import lung_labels
from LungDeepRegLib.spatial import jacobian_determinant, resample_field

RESULTS = Path(__file__).resolve().parent / "results"
TUNING_SEED = 31337
PAPER = {"curvature": 10.0, "volume": 0.01, "t": 0.2}
GRID = ([{"curvature": a, "volume": g, "t": 0.2} for a in (1.0, 10.0, 100.0)
         for g in (0.01, 0.1, 1.0)]
        + [{"curvature": a, "volume": g, "t": 0.2} for a, g in ((10.0, 3.0), (10.0, 10.0),
                                                               (30.0, 1.0), (30.0, 3.0))]
        + [{"curvature": 10.0, "volume": 1.0, "t": t} for t in (0.1, 0.5)])


def tuning_pairs(count: int, ct: sitk.Image | None = None) -> list[dict]:
    """The pairs with everything the refinement needs, prepared once (of ``ct``, by default
    the bundled POPI sample)."""
    ct = read_image(sample_path()) if ct is None else ct
    pairs = []
    for index in range(count):
        truth = breathing_pair(ct, pair_seed(TUNING_SEED, index), (15.0, 30.0))
        labels = lung_labels(truth.fixed)
        prepared = PreparedPair(truth.fixed, truth.moving, labels)
        affine = affine_prealign(truth.fixed, truth.moving, labels)
        size = native_size(truth.fixed, labels, RefineConfig().size)
        pairs.append({"truth": truth, "affine": affine, "lungs": sitk.Cast(labels > 0,
                                                                          sitk.sitkUInt8),
                      "inputs": crop_inputs(prepared, affine, size, torch.device("cpu"))})
    return pairs


def setting_config(setting: dict) -> RefineConfig:
    """RefineConfig's defaults with the setting's loss weights (``curvature``, ``volume``)
    and other fields (``t``); the setting stays flat, as the results record it."""
    weight_names = {item.name for item in fields(LossWeights)}
    defaults = RefineConfig()
    weights = {name: value for name, value in setting.items() if name in weight_names}
    others = {name: value for name, value in setting.items() if name not in weight_names}
    return replace(defaults, weights=replace(defaults.weights, **weights), **others)


def run_setting(setting: dict, pair: dict) -> dict:
    return run_config(setting_config(setting), pair)


def run_config(config: RefineConfig, pair: dict) -> dict:
    """Refine one tuning pair with ``config``: lung EPE against the known field, folding
    and SD log J in the lung, seconds."""
    grid, fixed, moving, mask = pair["inputs"]
    started = time.perf_counter()
    result = refine(fixed, moving, grid, config=config, fixed_mask=mask)
    seconds = time.perf_counter() - started
    truth = pair["truth"]
    target = output_grid(truth.fixed, 2.0)
    total = compose_with_affine(resample_field(result.field, grid, target), target,
                                pair["affine"])
    epe = endpoint_error(total, target, KnownField(truth.field, truth.grid), pair["lungs"])
    jacobian = jacobian_summary(jacobian_determinant(result.field.double(), grid), mask > 0)
    return {"epe_mm": epe["mean"], "folding_fraction": jacobian["folding_fraction"],
            "sd_log_jacobian": jacobian["sd_log_jacobian"], "seconds": seconds}


def summarise(rows: list[dict]) -> dict:
    return {key: float(np.mean([row[key] for row in rows]))
            for key in ("epe_mm", "folding_fraction", "sd_log_jacobian", "seconds")}


def markdown(result: dict) -> str:
    lines = [f"# Loss-weight tuning by instance optimisation ({result['date']})", "",
             f"Command: `{result['command']}`", "", result["protocol"], "",
             f"Machine: {result['machine']}.", "",
             "| curvature (alpha) | volume (gamma) | t | mean lung EPE (mm) | per pair | "
             "folding (%) | SD log J | time per pair (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["settings"]:
        s, m = row["setting"], row["mean"]
        marks = " (paper)" if s == PAPER else ""
        marks += " **chosen**" if s == result["chosen"] else ""
        pairs = ", ".join(f"{p['epe_mm']:.2f}" for p in row["pairs"])
        lines.append(f"| {s['curvature']:g} | {s['volume']:g} | {s['t']:g}{marks} | "
                     f"{m['epe_mm']:.3f} | {pairs} | {100 * m['folding_fraction']:.4f} | "
                     f"{m['sd_log_jacobian']:.3f} | {m['seconds']:.1f} |")
    lines += ["", result["choice"], ""]
    return "\n".join(lines)


def choose(rows: list[dict]) -> dict:
    """Lowest mean EPE among the settings that fold no lung voxel on any pair."""
    safe = [row for row in rows if all(p["folding_fraction"] == 0 for p in row["pairs"])]
    return min(safe or rows, key=lambda row: row["mean"]["epe_mm"])["setting"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_threads(args.threads)
    pairs = tuning_pairs(args.pairs)
    rows = []
    for setting in GRID:
        measured = [run_setting(setting, pair) for pair in pairs]
        rows.append({"setting": setting, "pairs": measured, "mean": summarise(measured)})
        print(f"{setting}: EPE {rows[-1]['mean']['epe_mm']:.3f} mm", flush=True)
    chosen = choose(rows)
    paper = next(row for row in rows if row["setting"] == PAPER)["mean"]["epe_mm"]
    best = next(row for row in rows if row["setting"] == chosen)["mean"]["epe_mm"]
    result = {
        **header(__file__, torch.get_num_threads()),
        "protocol": (f"{args.pairs} synthetic breathing pairs (15-30 mm) of the training CT "
                     f"(bundled POPI 2 mm sample), seeds pair_seed({TUNING_SEED}, i); "
                     "registration by instance optimisation alone from the affine "
                     "pre-alignment (RefineConfig defaults but the weights); EPE in the "
                     "automatic lung mask on the 2 mm output grid; folding and SD log J in "
                     "the lung on the refinement crop."),
        "settings": rows, "chosen": chosen,
        "choice": (f"Chosen: the lowest mean EPE without folding: alpha {chosen['curvature']:g}, "
                   f"gamma {chosen['volume']:g}, t {chosen['t']:g}: {best:.3f} mm against "
                   f"{paper:.3f} mm with the paper's values."),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loss_weights.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "loss_weights.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
