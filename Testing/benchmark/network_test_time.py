"""Test-time averaging of the network: does a mirrored pass or a second model help (tuning pairs)?

Usage: ``python Testing/benchmark/network_test_time.py --model NAME_OR_PATH
[--second PATH] [--threads 2] [--output results/network_test_time.md]``

A cheap way to a better network-only result without training is to average fields: the
network's field with its field for the left-right mirrored pair (the training data holds
mirrored patients, ``data/motion.py``), or with a second model's field (an ensemble of two
fine-tuning rounds from other draws of pairs). Each costs one more network pass. On each
declared *tuning* pair this runs ``register --refine-iterations 0`` with ``--model`` as it
ships and with each average in place of it (``adapted_models``: in memory, nothing written)
and reports the mean TRE and the network step's time, all in this one run. Writes
``results/network_test_time.md`` with this command.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from network_motion_share import RESULTS, adapted_models, registered, table
from provenance import header
from torch import nn
from tune_self_checks import tuning_breathing_pairs

from LungDeepRegLib.models.store import load_model
from LungDeepRegLib.spatial import Grid

Network = Callable[[torch.Tensor, torch.Tensor, Grid], torch.Tensor]


def mirrored_field(network: Network, fixed: torch.Tensor, moving: torch.Tensor,
                   grid: Grid) -> torch.Tensor:
    """``network``'s field for the pair mirrored along the grid's first (x) index axis,
    mirrored back: the arrays flip along x and the field's component along that axis (the
    direction matrix's first column) changes sign."""
    field = network(fixed.flip(-1), moving.flip(-1), grid).flip(-1)
    axis = torch.tensor(grid.direction, dtype=field.dtype).view(3, 3)[:, 0].view(1, 3, 1, 1, 1)
    return field - 2 * (field * axis).sum(1, keepdim=True) * axis


class AveragedNetwork(nn.Module):
    """The mean of the fields of ``networks`` (and of their mirrored passes if ``mirror``)."""

    def __init__(self, networks: list[nn.Module], mirror: bool) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.mirror = mirror

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, grid: Grid) -> torch.Tensor:
        fields = []
        for network in self.networks:
            fields.append(network(fixed, moving, grid))
            if self.mirror:
                fields.append(mirrored_field(network, fixed, moving, grid))
        return torch.stack(fields).mean(0)


class MirroredOnly(nn.Module):
    """The mirrored pass alone: how far the mirrored patient is from the training data."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, grid: Grid) -> torch.Tensor:
        return mirrored_field(self.network, fixed, moving, grid)


def variants(second: str | None) -> dict[str, Callable]:
    """Label -> ``adapted_models`` adapter."""
    chosen = {"as shipped": lambda network, card: (network, card),
              "mirrored pass alone": lambda network, card: (
                  MirroredOnly(network), card),
              "mean with mirrored pass": lambda network, card: (
                  AveragedNetwork([network], mirror=True), card)}
    if second:
        other = load_model(second)[0]
        chosen[f"mean with {Path(second).stem}"] = lambda network, card: (
            AveragedNetwork([network, other], mirror=False), card)
        chosen[f"mean with {Path(second).stem}, both mirrored too"] = lambda network, card: (
            AveragedNetwork([network, other], mirror=True), card)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lungdeepreg-allct-af10-cpu", help="name or path")
    parser.add_argument("--second", help="a second model (path) to average with")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "network_test_time.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    made = header(__file__, args.threads)
    work = Path(tempfile.mkdtemp(prefix="network_test_time_"))
    rows = []
    for pair in tuning_breathing_pairs():
        for label, adapt in variants(args.second).items():
            folder = work / pair["id"] / "".join(c if c.isalnum() else "_" for c in label)
            with adapted_models(adapt):
                metrics = registered(pair, folder, args.threads, args.model, 0)[2]
            seconds = metrics["run"]["runtime_s"]
            rows.append([pair["id"], label, f"{metrics['landmarks']['after']['mean']:.3f}",
                         f"{seconds.get('network', 0.0):.2f}",
                         f"{metrics['run']['total_runtime_s']:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    lines = ["# Test-time averaging of the network (tuning pairs, network only)", "",
             f"{made['date']}, {made['machine']}", "", f"Command: `{made['command']}`", "",
             f"Model: `{args.model}`. TRE: mean over the pair's landmarks (mm), "
             "`--refine-iterations 0`; times: the pipeline's own, in s.", "",
             *table(["pair", "network", "TRE (mm)", "network (s)", "total (s)"], rows), ""]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
