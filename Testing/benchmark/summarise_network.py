"""Issue 15's figures in one file: real-pair rows, synthetic rows and timing of a model.

    python Testing/benchmark/summarise_network.py --pairs RESULTS_DIR --model-label new \\
        [--synthetic Testing/benchmark/results/network_models.json]

``--pairs`` is the output folder of one ``lungdeepreg bench pairs`` run over
``Testing/benchmark/popi_all_pairs.csv`` with the methods ``affine``, ``lungdeepreg-opt``,
``lungdeepreg-net:<previous>``, ``lungdeepreg-net:<new>`` and ``lungdeepreg:<new>`` (all
measured side by side in that run). For every pair, labelled tuning or evaluation by
``data_split.toml``: TRE mean/p95/max of each method, the network-only TRE as a share of
the affine's, the full pipeline's TRE and wall time as shares of optimisation alone, and
which start the full pipeline refined and kept (from its ``metrics.json``). Writes
``Testing/benchmark/results/network_all_ct.md`` and ``.json`` with this command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from LungDeepRegLib.pipeline.network import NETWORK_STARTS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def roles() -> dict[str, str]:
    split = tomllib.loads((HERE / "data_split.toml").read_text(encoding="utf-8"))
    return {case: role for role in ("tuning", "evaluation")
            for case in split[role]["popi_pairs"]}


def pair_rows(folder: Path, label: str) -> tuple[list[dict], list[str]]:
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    rows: dict[str, dict] = {}
    for row in results["rows"]:
        if row.get("status") != "done" or "field" not in row:  # identity: no field
            continue
        case = rows.setdefault(row["case"], {"case": row["case"]})
        case[row["method"]] = {"tre": [row["tre"][k] for k in ("mean", "p95", "max")],
                               "time_s": row["time_s"], "field": row["field"]}
        case["initial"] = [row["tre_initial"][k] for k in ("mean", "p95", "max")]
    methods = [m for m in results["meta"]["methods"] if m != "identity"]
    full = next(m for m in methods if m.startswith("lungdeepreg:") and m.endswith(label))
    for case in rows.values():
        if full in case:
            metrics = json.loads((Path(case[full]["field"]).parent / "metrics.json")
                                 .read_text(encoding="utf-8"))
            case["network_start"] = metrics["run"].get("network_start", {})
    return list(rows.values()), methods


def markdown(report: dict) -> str:
    methods, label = report["methods"], report["model_label"]
    net = next(m for m in methods if m.startswith("lungdeepreg-net:") and m.endswith(label))
    full = next(m for m in methods if m.startswith("lungdeepreg:") and m.endswith(label))
    lines = ["# The network on real pairs (POPI, all ten pairs)", "",
             f"Command: `{report['command']}`", "",
             f"Pairs run: `{report['pairs_command']}`", "",
             "TRE mean / p95 / max in mm; tuning pairs are labelled (they chose the refinement "
             "schedule and hold the motion atlas' fields).", "",
             "| pair | role | initial | " + " | ".join(methods) + " | net / affine | "
             "full / opt TRE | full / opt time | start refined (kept) |",
             "|---|---|---|" + "---|" * len(methods) + "---|---|---|---|"]
    for case in report["rows"]:
        cells = [" / ".join(f"{v:.2f}" for v in case[m]["tre"]) if m in case else "failed"
                 for m in methods]
        start = case.get("network_start", {})
        trusted = (" (trusted)" if start.get("trusted") else
                   " (network start dropped)" if start.get("dropped") else "")
        ratio = _ratio(case, net, "affine")
        lines.append(f"| {case['case']} | {case['role']} | "
                     f"{' / '.join(f'{v:.2f}' for v in case['initial'])} | "
                     + " | ".join(cells) + f" | {ratio} | {_ratio(case, full, 'lungdeepreg-opt')}"
                     f" | {_ratio(case, full, 'lungdeepreg-opt', 'time_s')} | "
                     f"{_start_label(start.get('refined_from'))}{trusted} "
                     f"({_start_label(start.get('kept'))}) |")
    lines += ["", _network_start_count(report["rows"]), "",
              "Means over the pairs of each role (TRE mean, time in s):", "",
              "| role | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for role, means in report["means"].items():
        lines.append(f"| {role} | " + " | ".join(
            f"{means[m]['tre']:.2f} mm, {means[m]['time_s']:.1f} s" for m in methods) + " |")
    return "\n".join(lines) + "\n"


def _start_label(name: str | None) -> str:
    """A start's name in ``metrics.json`` as a reader takes it: the network's starts are named
    by the pre-alignment they continue ("affine", "identity")."""
    return {None: "?", "affine": "network after affine",
            "identity": "network from identity"}.get(name, name)


def _network_start_count(rows: list[dict]) -> str:
    """How often the full pipeline refined from a network's start (issue 15 asks for it)."""
    starts = [row.get("network_start", {}).get("refined_from") for row in rows]
    known = [name for name in starts if name is not None]
    network = sum(name in NETWORK_STARTS for name in known)
    return (f"The full pipeline refined from the network's start on {network} of {len(known)} "
            "pairs (the others: from the affine start without the network).")


def _ratio(case: dict, a: str, b: str, key: str = "tre") -> str:
    if a not in case or b not in case:
        return "n/a"
    value = (case[a][key][0] / case[b][key][0]) if key == "tre" else case[a][key] / case[b][key]
    return f"{value:.2f}"


def means(rows: list[dict], methods: list[str]) -> dict:
    out = {}
    for role in ("evaluation", "tuning"):
        chosen = [r for r in rows if r["role"] == role and all(m in r for m in methods)]
        if chosen:
            out[role] = {m: {"tre": sum(r[m]["tre"][0] for r in chosen) / len(chosen),
                             "time_s": sum(r[m]["time_s"] for r in chosen) / len(chosen)}
                         for m in methods}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--model-label", required=True, help="the new model's name or path")
    parser.add_argument("--output", type=Path, default=RESULTS / "network_all_ct.json")
    args = parser.parse_args()
    rows, methods = pair_rows(args.pairs, args.model_label)
    role = roles()
    for row in rows:
        row["role"] = role.get(row["case"], "not declared")
    pairs_meta = json.loads((args.pairs / "results.json").read_text())["meta"]
    report = {"command": shlex.join(["python", *sys.argv]),
              "pairs_command": pairs_meta["command"], "model_label": args.model_label,
              "methods": methods, "rows": rows, "means": means(rows, methods)}
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.output.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
