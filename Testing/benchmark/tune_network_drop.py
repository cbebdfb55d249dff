"""Choose when the refinement may leave out the network's start (``pipeline.network.DROP_RATIO``).

Usage: ``python Testing/benchmark/tune_network_drop.py [--model NAME] [--threads 2]``

The refinement runs the coarse levels from the affine start and from the network's start and
finishes the better one (:mod:`LungDeepRegLib.pipeline.multistart`). When the network's
output matches far worse than the affine start alone, its coarse levels are time spent on a
start that loses. How far is far is measured here on the declared *tuning* breathing pairs
(``Testing/benchmark/data_split.toml``) only. The shipped network's start matches about as
well as the affine start on them (shares 0.9), so the network's output is also scaled by a
factor (1.5, 2, 3: a network that overshoots the motion; -1: one that points the wrong way),
which gives starts across the range of shares where the rule would act. Each run keeps both
starts (the rule off) and records the share (network NGF in the lung / the affine start's),
which start matched better after the coarse levels, the TRE and the refinement time. The
rule may act above the largest share at which the network's start still won.
Writes ``Testing/benchmark/results/network_drop.md`` with this command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import torch
from tune_self_checks import tuning_breathing_pairs

from LungDeepRegLib.pipeline import network
from LungDeepRegLib.pipeline import register as register_module
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register

RESULTS = Path(__file__).resolve().parent / "results"
SCALES = (1.0, 1.5, 2.0, 3.0, -1.0)


class ScaledNetwork(torch.nn.Module):
    """The network with its displacement multiplied by ``scale``."""

    def __init__(self, inner: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, grid) -> torch.Tensor:
        return self.inner(fixed, moving, grid) * self.scale


def run(pair: dict, model: str, threads: int, scale: float, out: Path) -> dict:
    load = register_module.load_model

    def scaled_load(*args, **kwargs):
        net, card = load(*args, **kwargs)
        return ScaledNetwork(net, scale), card

    register_module.load_model = scaled_load
    try:
        inputs = RegistrationInputs(
            fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
            fixed_landmarks=Path(pair["fixed_landmarks"]),
            moving_landmarks=Path(pair["moving_landmarks"]),
            landmark_format=pair["landmark_format"])
        metrics = register(inputs, out, RegistrationOptions(
            model=model, threads=threads, report=False)).metrics
    finally:
        register_module.load_model = load
    start = metrics["run"]["network_start"]
    after = start["ngf_in_lung_after_coarse_levels"]
    network_name = next(name for name in after if name != network.NO_NETWORK)
    tre = metrics["landmarks"]["after"]
    return {"share": start["ngf_in_lung"][network_name]
            / start["ngf_in_lung"][network.NO_NETWORK],
            "network_won": after[network_name] < after[network.NO_NETWORK],
            "after": (after[network.NO_NETWORK], after[network_name]),
            "tre": (tre["mean"], tre["p95"], tre["max"]),
            "refine_s": metrics["run"]["runtime_s"]["instance optimisation"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    network.DROP_RATIO = float("inf")  # keep both starts: see which one wins
    work = Path(tempfile.mkdtemp(prefix="network_drop_"))
    pairs = tuning_breathing_pairs()
    lines = ["# When to leave out the network's start (tuning pairs only)", "",
             f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             "| pair | network output x | network NGF / affine NGF | NGF after coarse levels "
             "(affine start / network start) | network start won | TRE mean / p95 / max "
             "(mm) | refinement (s) |", "|---|---|---|---|---|---|---|"]
    rows = []
    for pair in pairs:
        for scale in SCALES:
            row = run(pair, args.model, args.threads, scale, work / pair["id"] / str(scale))
            rows.append(row)
            tre = " / ".join(f"{v:.2f}" for v in row["tre"])
            lines.append(f"| {pair['id']} | {scale:g} | {row['share']:.3f} | "
                         f"{row['after'][0]:.4f} / {row['after'][1]:.4f} | "
                         f"{'yes' if row['network_won'] else 'no'} | {tre} | "
                         f"{row['refine_s']:.1f} |")
            print(lines[-1], flush=True)
    won = [row["share"] for row in rows if row["network_won"]]
    lost = [row["share"] for row in rows if not row["network_won"]]
    lines += ["", f"Largest share at which the network's start won: "
                  f"{max(won) if won else float('nan'):.3f}; smallest at which it lost: "
                  f"{min(lost) if lost else float('nan'):.3f}."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "network_drop.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
