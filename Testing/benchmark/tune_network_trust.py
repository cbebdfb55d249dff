"""Choose when the refinement may skip the affine start (a model card's
``refinement.trust_ratio``, :func:`LungDeepRegLib.pipeline.network.trust_ratio`).

Usage: ``python Testing/benchmark/tune_network_trust.py --model NAME_OR_PATH [--threads 2]
[--demo-seeds 2024 2025 ...] [--output results/network_trust.md]``

On the declared *tuning* breathing pairs (``Testing/benchmark/data_split.toml``) each pair
is registered twice with the model: never trusting the network (both starts refined on
their coarse levels, the better one finished) and always trusting it (the network's start
alone, the affine start only compared at the end). Printed and written per pair: the
network's NGF in the lung as a share of the affine start's (what ``TRUST_RATIO`` is
compared with), TRE mean/p95/max and the run times of both. The model's card then gets a
ratio above the shares at which trusting cost no accuracy on these pairs (the policies
are set in the card in memory only; nothing is written to it).

``--demo-seeds`` adds synthetic breathing pairs of the bundled sample (POPI phase 00, the
tuning CT; seed 2024 is ``lungdeepreg demo``'s own pair), 100 landmarks moved by the known
field: the pair on which trusting once went wrong (see ``pipeline.network.TRUST_RATIO``).
Writes ``--output`` (default ``Testing/benchmark/results/network_trust.md``) with this
command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import torch
from network_motion_share import adapted_models
from tune_self_checks import tuning_breathing_pairs

from LungDeepRegLib.pipeline import network
from LungDeepRegLib.pipeline.demo import build_demo_pair
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = {"never trust (both starts)": 0.0, "always trust (network start only)": 1e9}


def tuning_cases(demo_seeds: list[int], work: Path) -> list[tuple[str, RegistrationInputs]]:
    """The declared POPI tuning pairs and the demo-sample pairs of ``demo_seeds``."""
    cases = [(pair["id"], RegistrationInputs(
        fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
        fixed_landmarks=Path(pair["fixed_landmarks"]),
        moving_landmarks=Path(pair["moving_landmarks"]),
        landmark_format=pair["landmark_format"]))
        for pair in tuning_breathing_pairs()]
    return cases + [(f"demo sample, seed {seed}", build_demo_pair(work / f"demo-{seed}", seed))
                    for seed in demo_seeds]


def run(inputs: RegistrationInputs, model: str, threads: int, ratio: float, out: Path) -> dict:
    """``register`` with the model's card asking for ``ratio`` (in memory only)."""
    def with_ratio(net: torch.nn.Module, card: dict) -> tuple[torch.nn.Module, dict]:
        return net, {**card, "refinement": {**card.get("refinement", {}), "trust_ratio": ratio}}
    with adapted_models(with_ratio):
        metrics = register(inputs, out, RegistrationOptions(model=model, threads=threads,
                                                            report=False)).metrics
    scores = metrics["run"]["network_start"]["ngf_in_lung"]
    start = metrics["run"]["network_start"]["start"]
    after = metrics["landmarks"]["after"]
    return {"share": scores[start] / scores[network.NO_NETWORK],
            "refined_from": metrics["run"]["network_start"].get("refined_from"),
            "kept": metrics["run"]["network_start"].get("kept"),
            "tre": (after["mean"], after["p95"], after["max"]),
            "refine_s": metrics["run"]["runtime_s"]["instance optimisation"],
            "total_s": metrics["run"]["total_runtime_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--demo-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--output", type=Path, default=RESULTS / "network_trust.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="network_trust_"))
    lines = ["# When to refine the network's start alone (tuning pairs only)", "",
             f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             "| pair | policy | network NGF / affine NGF | refined from | kept | TRE mean / p95 "
             "/ max (mm) | refinement (s) | total (s) |", "|---|---|---|---|---|---|---|---|"]
    for index, (name, inputs) in enumerate(tuning_cases(args.demo_seeds, work)):
        for policy, ratio in POLICIES.items():
            row = run(inputs, args.model, args.threads, ratio, work / f"{index}-{ratio}")
            tre = " / ".join(f"{v:.2f}" for v in row["tre"])
            lines.append(f"| {name} | {policy} | {row['share']:.3f} | "
                         f"{row['refined_from']} | {row['kept']} | {tre} | "
                         f"{row['refine_s']:.1f} | {row['total_s']:.1f} |")
            print(lines[-1], flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
