"""A network run at a smaller crop than it was trained at: accuracy and time on the tuning pairs.

Usage: ``python Testing/benchmark/network_input_size.py --model NAME_OR_PATH
[--size 128,112,128 --size 96,80,96 ...] [--baseline lungdeepreg-popi-cpu] [--threads 2]``

The networks are fully convolutional, so a model trained on 128x112x128 crops also runs on
smaller ones (coarser voxels over the same lung box), in about the share of the voxels'
time. Whether a model may replace the default hangs on its time against the default's (the
rule in Testing/benchmark/README.md, "Should af7 replace the default?"): this measures what
a smaller crop costs in accuracy and saves in time. On each declared *tuning* pair it
runs ``register`` with optimisation alone, with ``--baseline`` (network only and full
pipeline), and with ``--model`` at each ``--size`` (network only and full pipeline; the size
replaces the card's ``input.size_xyz`` in memory, nothing is written). Times are the pipeline's own
(``total_runtime_s`` and its network step), all in this one run. Writes
``results/network_input_size.md`` with this command.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from network_motion_share import RESULTS, adapted_models, registered, table
from provenance import header
from tune_self_checks import tuning_breathing_pairs


def run(pair: dict, work: Path, threads: int, model: str, iterations: int | None,
        size: list[int] | None) -> dict:
    """``register`` with ``model``'s crops of ``size`` (x, y, z; None: as trained)."""
    def sized(network: torch.nn.Module, card: dict) -> tuple[torch.nn.Module, dict]:
        if size is None:
            return network, card
        return network, {**card, "input": {**card["input"], "size_xyz": list(size)}}
    with adapted_models(sized):
        return registered(pair, work, threads, model, iterations)[2]


def rows_for(pair: dict, work: Path, threads: int, variants: list[tuple]) -> list[list[str]]:
    rows = []
    for label, model, size, iterations in variants:
        tag = f"{label}-{'net' if iterations == 0 else 'full'}".replace(" ", "_")
        metrics = run(pair, work / pair["id"] / tag, threads, model, iterations, size)
        seconds = metrics["run"]["runtime_s"]
        rows.append([pair["id"], label, "network only" if iterations == 0 else "full",
                     f"{metrics['landmarks']['after']['mean']:.3f}",
                     f"{seconds.get('network', 0.0):.2f}",
                     f"{seconds.get('instance optimisation', 0.0):.2f}",
                     f"{metrics['run']['total_runtime_s']:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="name or path")
    parser.add_argument("--size", action="append", default=None,
                        help="x,y,z crop size (repeatable; default: as trained)")
    parser.add_argument("--baseline", default="lungdeepreg-popi-cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "network_input_size.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    made = header(__file__, args.threads)
    sizes = [[int(v) for v in s.split(",")] for s in args.size] if args.size else [None]
    variants = [("optimisation alone", "none", None, None),
                (f"{Path(args.baseline).stem}", args.baseline, None, 0),
                (f"{Path(args.baseline).stem}", args.baseline, None, None)]
    for size in sizes:
        label = f"{Path(args.model).stem} at {'x'.join(map(str, size)) if size else 'trained'}"
        variants += [(label, args.model, size, 0), (label, args.model, size, None)]
    work = Path(tempfile.mkdtemp(prefix="network_input_size_"))
    rows = [row for pair in tuning_breathing_pairs()
            for row in rows_for(pair, work, args.threads, variants)]
    lines = ["# A network at a smaller crop than it was trained at (tuning pairs)", "",
             f"{made['date']}, {made['machine']}", "", f"Command: `{made['command']}`", "",
             "TRE: mean over the pair's landmarks (mm); times: the pipeline's own, in s "
             "(network step, instance optimisation, whole run without start-up).", "",
             *table(["pair", "method", "mode", "TRE (mm)", "network (s)", "optimisation (s)",
                     "total (s)"], rows), ""]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
