"""Does a network leave still lungs still? Its output where nothing, or little, moves.

Usage: ``python Testing/benchmark/network_small_motion.py --model NAME_OR_PATH [--model ...]
[--config TRAINING.toml] [--pairs 4] [--threads 2]``

On real pairs of nearby breathing phases the affine start leaves a fraction of a
millimetre, and the pipeline drops a network start that matches worse than the affine
alone (network-only registration then equals the affine). This measures, per model:

1. **identical images**: the fixed image of each synthetic validation pair of ``--config``
   given as both images; the mean length of the network's output in the fixed lung is pure
   error (0 is right);
2. **small motion**: the same validation pairs with every field scaled by U(0,
   ``SMALL_MOTION_SCALE``) (``data.small_motion_share`` 1): the network's mean endpoint
   error in the lung against that of doing nothing (the true motion's mean length);
3. **a real scan against itself** (the declared tuning ``still_scans``: POPI light phase
   00): network-only registration; whether the network's start was kept, and its NGF in
   the lung against the affine start's (lower matches better).

Validation pairs are never trained on. Writes ``results/network_small_motion.md`` with this
command.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from network_motion_share import DEFAULT_CONFIG, table
from provenance import header

from LungDeepRegLib.models.store import load_model
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register
from LungDeepRegLib.training.config import load_config
from LungDeepRegLib.training.sources import build_sources

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ROOT = BENCH.parents[1]  # the repository: data_split.toml's paths are relative to it
SPLIT = tomllib.loads((BENCH / "data_split.toml").read_text(encoding="utf-8"))
STILL_SCAN = (ROOT / SPLIT["tuning"]["still_scans"][0]).resolve()


def lung_mean(vectors: torch.Tensor, lungs: torch.Tensor) -> float:
    """Mean length in ``lungs`` of ``(1, 3, z, y, x)`` vectors."""
    return float(vectors[0].permute(1, 2, 3, 0)[lungs].norm(dim=1).mean())


def validation_pairs(config_path: Path, count: int) -> tuple[tuple[int, ...], list, list]:
    """(input size, the first ``count`` validation pairs of the config, the same pairs with
    small motion): made once, shared by every model."""
    config = load_config(config_path)
    _, plain = build_sources(config)
    small_config = replace(config, data=replace(config.data, small_motion_share=1.0))
    _, small = build_sources(small_config)
    return (tuple(config.model.input_size), [plain.pair(i) for i in range(count)],
            [small.pair(i) for i in range(count)])


@torch.no_grad()
def synthetic_row(model_name: str, size: tuple[int, ...], plain: list, small: list
                  ) -> list[str]:
    model, card = load_model(model_name)
    model.eval()
    if tuple(card["input"]["size_xyz"]) != size:
        return [Path(model_name).stem, "other input size", "", "", ""]
    still, errors, nothing = [], [], []
    for pair in plain:
        lungs = pair.fixed_mask[0, 0] > 0
        still.append(lung_mean(model(pair.fixed, pair.fixed, pair.grid), lungs))
    for pair in small:
        lungs = pair.fixed_mask[0, 0] > 0
        output = model(pair.fixed, pair.moving, pair.grid).float()
        errors.append(lung_mean(output - pair.field, lungs))
        nothing.append(lung_mean(pair.field, lungs))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return [Path(model_name).stem, f"{mean(still):.2f}", f"{mean(nothing):.2f}",
            f"{mean(errors):.2f}", f"{mean(errors) / mean(nothing):.2f}"]


def real_still_row(model_name: str, threads: int, work: Path) -> list[str]:
    inputs = RegistrationInputs(fixed=STILL_SCAN, moving=STILL_SCAN)
    options = RegistrationOptions(model=model_name, refine_iterations=0, threads=threads,
                                  report=False)
    metrics = register(inputs, work / Path(model_name).stem, options).metrics
    start = metrics["run"]["network_start"]
    scores = start["ngf_in_lung"]
    network = min((name for name in scores if name != "affine, no network"),
                  key=lambda name: scores[name])
    return [Path(model_name).stem, start["start"], f"{scores['affine, no network']:.4f}",
            f"{scores[network]:.4f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="name or path")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="training config whose validation pairs are used")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "network_small_motion.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    made = header(__file__, args.threads)
    work = Path(tempfile.mkdtemp(prefix="small_motion_"))
    size, plain, small = validation_pairs(args.config, args.pairs)
    synthetic, real = [], []
    for model in args.model:
        synthetic.append(synthetic_row(model, size, plain, small))
        print(" | ".join(synthetic[-1]), flush=True)
        real.append(real_still_row(model, args.threads, work))
        print(" | ".join(real[-1]), flush=True)
    lines = ["# Does a network leave still lungs still? (validation pairs, a tuning scan)", "",
             f"{made['date']}, {made['machine']}", "", f"Command: `{made['command']}`", "",
             f"## Synthetic validation pairs of `{args.config.name}` ({args.pairs} pairs)", "",
             "Identical images: mean output length in the lung (0 is right). Small motion: "
             "the pairs' fields scaled by U(0, 0.3); doing nothing errs by the true motion's "
             "mean length.", "",
             *table(["model", "identical images: output (mm)", "small motion: true (mm)",
                     "small motion: network EPE (mm)", "EPE / doing nothing"], synthetic),
             "", "## POPI light phase 00 against itself (tuning), network only", "",
             "NGF in the lung (lower matches better); the start kept is what network-only "
             "registration writes.", "",
             *table(["model", "start kept", "NGF affine alone", "NGF network"], real), ""]
    args.output.write_text("\n".join(lines))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
