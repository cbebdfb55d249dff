"""Choose when the refinement may skip the affine start (``pipeline.network.TRUST_RATIO``).

Usage: ``python Testing/benchmark/tune_network_trust.py --model NAME_OR_PATH [--threads 2]``

On the declared *tuning* breathing pairs (``Testing/benchmark/data_split.toml``) each pair
is registered twice with the model: never trusting the network (both starts refined on
their coarse levels, the better one finished) and always trusting it (the network's start
alone, the affine start only compared at the end). Printed and written per pair: the
network's NGF in the lung as a share of the affine start's (what ``TRUST_RATIO`` is
compared with), TRE mean/p95/max and the run times of both. ``TRUST_RATIO`` is then the
largest share at which trusting cost no accuracy on these pairs. Writes
``Testing/benchmark/results/network_trust.md`` with this command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from tune_self_checks import declared_pairs

from LungDeepRegLib.pipeline import network
from LungDeepRegLib.pipeline.register import RegistrationInputs, RegistrationOptions, register

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = {"never trust (both starts)": 0.0, "always trust (network start only)": 1e9}


def run(pair: dict, model: str, threads: int, ratio: float, out: Path) -> dict:
    network.TRUST_RATIO = ratio
    inputs = RegistrationInputs(
        fixed=Path(pair["fixed"]), moving=Path(pair["moving"]),
        fixed_landmarks=Path(pair["fixed_landmarks"]),
        moving_landmarks=Path(pair["moving_landmarks"]),
        landmark_format=pair["landmark_format"])
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="network_trust_"))
    pairs = [p for p in declared_pairs() if p["role"] == "tuning" and p["kind"] == "same subject"]
    lines = ["# When to refine the network's start alone (tuning pairs only)", "",
             f"Command: `{shlex.join(['python', *sys.argv])}`", "",
             "| pair | policy | network NGF / affine NGF | refined from | kept | TRE mean / p95 "
             "/ max (mm) | refinement (s) | total (s) |", "|---|---|---|---|---|---|---|---|"]
    for pair in pairs:
        for policy, ratio in POLICIES.items():
            row = run(pair, args.model, args.threads, ratio, work / pair["id"] / str(ratio))
            tre = " / ".join(f"{v:.2f}" for v in row["tre"])
            lines.append(f"| {pair['id']} | {policy} | {row['share']:.3f} | "
                         f"{row['refined_from']} | {row['kept']} | {tre} | "
                         f"{row['refine_s']:.1f} | {row['total_s']:.1f} |")
            print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "network_trust.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
