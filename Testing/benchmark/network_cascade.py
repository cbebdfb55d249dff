"""Does running a network again on its own result (a cascade at inference) find more motion?

Usage: ``python Testing/benchmark/network_cascade.py --model NAME_OR_PATH [--passes 1 2 3]
[--synthetic-pairs 4] [--threads 2]``

A network that finds a third of the real motion in one pass (results/network_motion_share*.md)
might find more of the rest when it sees the moving image already warped by its first
answer, as recursive cascades do (Zhao et al. 2019, ICCV). Pass ``k`` warps the moving crop
by the field so far ``u`` and composes the network's answer ``v`` after it:
``u <- v + u o (id + v)`` (:func:`~LungDeepRegLib.spatial.compose`). Measured on the declared
*tuning* pairs only (network-only TRE of ``register --refine-iterations 0``) and on the
synthetic validation pairs of ``allct128_affine_free.toml`` (lung endpoint error). Writes
``results/network_cascade.md`` with this command.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from network_motion_share import (
    DEFAULT_CONFIG,
    RESULTS,
    adapted_models,
    agreement,
    registered,
    table,
)
from provenance import header
from tune_self_checks import tuning_breathing_pairs

from LungDeepRegLib.models.store import load_model
from LungDeepRegLib.spatial import Grid
from LungDeepRegLib.spatial.flow import compose, warp
from LungDeepRegLib.training.config import load_config
from LungDeepRegLib.training.sources import build_sources


class Cascade(torch.nn.Module):
    """``network`` applied ``passes`` times, each pass on the moving image warped so far."""

    def __init__(self, network: torch.nn.Module, passes: int) -> None:
        super().__init__()
        self.network, self.passes = network, passes

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, grid: Grid) -> torch.Tensor:
        field = self.network(fixed, moving, grid).float()
        for _ in range(self.passes - 1):
            increment = self.network(fixed, warp(moving, grid, field, grid), grid).float()
            field = compose(field, increment, grid)
        return field


def real_rows(model: str, passes: int, threads: int, work: Path) -> list[list[str]]:
    """Network-only TRE of the cascade on each tuning pair (the pipeline's own run)."""
    # the only change: the model the pipeline runs
    with adapted_models(lambda network, card: (Cascade(network, passes).eval(), card)):
        rows = []
        for pair in tuning_breathing_pairs():
            started = time.perf_counter()
            _, _, metrics = registered(pair, work / f"{pair['id']}-{passes}", threads, model, 0)
            rows.append([pair["id"], str(passes),
                         f"{metrics['landmarks']['after']['mean']:.2f}",
                         metrics["run"]["network_start"].get("start", ""),
                         f"{time.perf_counter() - started:.1f}"])
            print(" | ".join(rows[-1]), flush=True)
    return rows


@torch.no_grad()
def synthetic_row(model: str, passes: int, count: int) -> list[str]:
    _, validation = build_sources(load_config(DEFAULT_CONFIG))
    network, _ = load_model(model)
    cascade = Cascade(network.eval(), passes)
    errors = []
    for index in range(count):
        pair = validation.pair(index)
        lungs = pair.fixed_mask[0, 0] > 0
        truth = pair.field[0].permute(1, 2, 3, 0)[lungs].double()
        output = cascade(pair.fixed, pair.moving, pair.grid)[0].permute(1, 2, 3, 0)[lungs]
        errors.append(agreement(output.double(), truth)["error_mm"])
    return [str(passes), str(count), f"{sum(errors) / len(errors):.2f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="name or path")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--synthetic-pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "network_cascade.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    made = header(__file__, args.threads)
    work = Path(tempfile.mkdtemp(prefix="network_cascade_"))
    real = [row for passes in args.passes
            for row in real_rows(args.model, passes, args.threads, work)]
    synthetic = [synthetic_row(args.model, passes, args.synthetic_pairs)
                 for passes in args.passes]
    lines = ["# A network run again on its own result (tuning pairs and validation pairs)", "",
             f"{made['date']}, {made['machine']}", "", f"Command: `{made['command']}`", "",
             f"Model: `{args.model}`", "",
             "## Real tuning pairs: network-only TRE (`--refine-iterations 0`)", "",
             *table(["pair", "passes", "TRE (mm)", "network start", "run time (s)"], real), "",
             f"## Synthetic validation pairs of `{DEFAULT_CONFIG.name}`: lung endpoint error",
             "", *table(["passes", "pairs", "error (mm)"], synthetic), ""]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
