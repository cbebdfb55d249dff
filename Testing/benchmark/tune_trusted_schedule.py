"""May the refinement do fewer steps after a trusted network start? (tuning cases only)

Usage: ``python Testing/benchmark/tune_trusted_schedule.py [--model lungdeepreg-allct-af10-cpu]
[--schedule 40,30 --schedule 40,15 ...] [--demo-seeds 2024 2025 2026] [--threads 2]``

Issue 15 asks that a network's start let the refinement do less. A trusted start
(``refinement.trust_ratio`` in the model card) already skips the affine start's coarse
levels; this measures whether the network's own schedule (``RefineConfig.after_network``,
steps per level coarse to fine, default 40 + 30) can be shortened too. On the declared
tuning cases of ``tune_network_trust.py`` (POPI 00-50, 00-60 and synthetic pairs of the demo
sample) each schedule runs with the card's trust ratio; printed and written per case: the
start refined, TRE mean/p95/max and the refinement's and the whole run's time. Writes
``results/trusted_schedule.md`` with this command.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from provenance import header
from tune_network_trust import RESULTS, run, tuning_cases

from LungDeepRegLib.models.store import model_card
from LungDeepRegLib.pipeline import refine_config
from LungDeepRegLib.pipeline.network import trust_ratio


def with_schedule(steps: tuple[int, ...]):
    """``RefineConfig.after_network`` with ``steps`` per level (replaced for the caller)."""
    def after_network(cls):
        return cls(levels=len(steps), iterations=steps, learning_rate=0.25)
    return classmethod(after_network)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lungdeepreg-allct-af10-cpu")
    parser.add_argument("--schedule", action="append", default=None,
                        help="steps per level, coarse to fine, e.g. 40,30 (repeatable)")
    parser.add_argument("--demo-seeds", type=int, nargs="*", default=[2024, 2025, 2026])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "trusted_schedule.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    made = header(__file__, args.threads)
    schedules = [tuple(int(v) for v in s.split(",")) for s in args.schedule or ["40,30"]]
    ratio = trust_ratio(model_card(args.model))
    work = Path(tempfile.mkdtemp(prefix="trusted_schedule_"))
    cases = tuning_cases(args.demo_seeds, work)
    original = refine_config.RefineConfig.after_network
    lines = ["# Fewer refinement steps after a trusted network start? (tuning cases)", "",
             f"{made['date']}, {made['machine']}", "", f"Command: `{made['command']}`", "",
             f"Model {args.model}, trust ratio {ratio} (its card's).", "",
             "| case | schedule (steps per level) | refined from | TRE mean / p95 / max (mm) "
             "| refinement (s) | total (s) |", "|---|---|---|---|---|---|"]
    try:
        for steps in schedules:
            refine_config.RefineConfig.after_network = with_schedule(steps)
            for index, (name, inputs) in enumerate(cases):
                row = run(inputs, args.model, args.threads, ratio,
                          work / f"{'-'.join(map(str, steps))}-{index}")
                tre = " / ".join(f"{v:.2f}" for v in row["tre"])
                lines.append(f"| {name} | {' + '.join(map(str, steps))} | "
                             f"{row['refined_from']} | {tre} | {row['refine_s']:.1f} | "
                             f"{row['total_s']:.1f} |")
                print(lines[-1], flush=True)
    finally:
        refine_config.RefineConfig.after_network = original
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
