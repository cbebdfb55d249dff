"""Put a model's measured figures into its model card (JSON and the generated Markdown).

    python Testing/benchmark/card_figures.py --model lungdeepreg-allct-cpu \\
        --synthetic Testing/benchmark/results/network_models.json --synthetic-label new \\
        --real Testing/benchmark/results/network_all_ct.json [--description "..."]

``--synthetic`` is the JSON of ``bench_network_models.py`` (``--synthetic-label``: the model's
label there) or the ``results.json`` of a ``lungdeepreg bench synthetic`` run
(``--synthetic-label``: the network-only method of the model, e.g.
``lungdeepreg-net:PATH``). The figures are copied from the benchmark results files named
(each with its command), never typed in: per synthetic group the network-only and affine
EPE, and per role of the real POPI pairs the mean TRE of every method. The weights are not
touched: the card's sha256 still matches them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from LungDeepRegLib.benchmarks.summary import done_rows, groups, method_summary
from LungDeepRegLib.io.atomic import write_json, write_text
from LungDeepRegLib.models.card import render_card_markdown
from LungDeepRegLib.models.store import resolve_model, verify_checksum

ROOT = Path(__file__).resolve().parents[2]


def synthetic_figures(path: Path, label: str) -> dict:
    report = json.loads(path.read_text(encoding="utf-8"))
    if "rows" in report:
        return bench_synthetic_figures(path, report, label)
    figures = {"source": str(path.resolve().relative_to(ROOT)), "command": report["command"],
               "pairs_per_group": next(iter(report["synthetic"].values()))["pairs"]}
    for group, data in report["synthetic"].items():
        summary = data["summary"]
        figures[group] = {name: {"epe_lung_mm": round(summary[name]["epe_mm"], 3),
                                 "tre_300_mm": round(summary[name]["tre_mm"], 3)}
                          for name in ("initial", "affine", label)}
    return figures


def bench_synthetic_figures(path: Path, report: dict, label: str) -> dict:
    """Mean lung EPE and TRE per group of a ``lungdeepreg bench synthetic`` run."""
    figures = {"source": str(path.resolve().relative_to(ROOT)),
               "command": report["meta"]["command"]}
    methods = {"initial": "identity", "affine": "affine", label: label}
    for group in groups(report["rows"]):
        rows = done_rows(report["rows"], group)
        summaries = {name: method_summary(rows, method) for name, method in methods.items()}
        figures[group] = {name: {"epe_lung_mm": round(summary["epe"], 3),
                                 "tre_300_mm": round(summary["tre"]["mean"], 3),
                                 "pairs": summary["cases"]}
                          for name, summary in summaries.items()}
    return figures


def real_figures(path: Path) -> dict:
    report = json.loads(path.read_text(encoding="utf-8"))
    figures = {"source": str(path.resolve().relative_to(ROOT)),
               "command": report["pairs_command"]}
    for role, means in report["means"].items():
        figures[f"POPI {role} pairs, mean TRE (mm)"] = {
            method: round(values["tre"], 3) for method, values in means.items()}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--synthetic", type=Path, required=True)
    parser.add_argument("--synthetic-label", required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--description", default=None)
    args = parser.parse_args()
    files = resolve_model(args.model)
    card = json.loads(files.card.read_text(encoding="utf-8"))
    verify_checksum(files.weights, card["sha256"])
    card["metrics"]["held_out_synthetic_pairs"] = synthetic_figures(args.synthetic,
                                                                    args.synthetic_label)
    card["metrics"]["real_pairs"] = real_figures(args.real)
    if args.description is not None:
        card["description"] = args.description
    write_json(files.card, card)
    write_text(files.markdown, render_card_markdown(card))
    print(f"updated {files.card} and {files.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
