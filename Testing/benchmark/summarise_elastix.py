"""Issue 14's targets on the real POPI pairs, from one ``bench pairs`` results folder.

    python Testing/benchmark/summarise_elastix.py --pairs RESULTS_DIR [--method lungdeepreg]
        [--baseline elastix] [--name popi_vs_elastix]

``--pairs`` is the output of ``lungdeepreg bench pairs Testing/benchmark/popi_all_pairs.csv``
with ``--method`` and ``--baseline`` among its methods. Every pair is labelled tuning or
evaluation by ``data_split.toml``; per pair: TRE mean / p95 / max of both, their ratio, wall
times and their ratio, folding; pooled over the landmarks of each role: the same. Then the
targets of issue 14 on the evaluation pairs, each with its verdict: mean TRE <= 0.8x the
baseline's, no pair worse than the baseline, no folding, wall time <= 0.5x on every pair.
The other methods of the run get their pooled TRE in a last table. Writes
``Testing/benchmark/results/NAME.md`` and ``.json`` with this command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from provenance import command_line

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROLES = ("evaluation", "tuning")


def roles() -> dict[str, str]:
    split = tomllib.loads((HERE / "data_split.toml").read_text(encoding="utf-8"))
    return {case: role for role in ROLES for case in split[role]["popi_pairs"]}


def stats(errors: list[float]) -> dict:
    values = np.asarray(errors, dtype=float)
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)),
            "max": float(values.max()), "n": int(values.size)}


def by_case(results: dict) -> dict[str, dict[str, dict]]:
    """``{case: {method: row}}`` of the finished rows (the identity row gives the start)."""
    cases: dict[str, dict[str, dict]] = {}
    for row in results["rows"]:
        if row.get("status") == "done" and "tre_per_landmark" in row:
            cases.setdefault(row["case"], {})[row["method"]] = row
    return cases


def pair_row(case: str, role: str, rows: dict[str, dict], method: str, baseline: str) -> dict:
    ours, theirs = rows[method], rows[baseline]
    row = {"case": case, "role": role,
           "initial": {k: ours["tre_initial"][k] for k in ("mean", "p95", "max")}}
    for name, source in ((method, ours), (baseline, theirs)):
        row[name] = {**stats(source["tre_per_landmark"]), "time_s": source["time_s"],
                     "folding_fraction": source["folding_fraction"],
                     "sd_log_jacobian": source["sd_log_jacobian"],
                     "resumed_from_an_earlier_run": bool(source.get("resumed"))}
    row["tre_ratio"] = row[method]["mean"] / row[baseline]["mean"]
    row["time_ratio"] = row[method]["time_s"] / row[baseline]["time_s"]
    return row


def pooled(cases: dict[str, dict[str, dict]], names: list[str], method: str) -> dict | None:
    errors = [e for case in names if method in cases[case]
              for e in cases[case][method]["tre_per_landmark"]]
    return stats(errors) if errors else None


def worst_landmarks(cases: dict[str, dict[str, dict]], names: list[str], method: str,
                    baseline: str, count: int = 8) -> list[dict]:
    """The ``count`` landmarks that ``method`` maps worst, with the baseline's error and the
    motion to find there (the identity's error), so a large error can be told from a hard
    landmark."""
    found = []
    for case in names:
        rows = cases[case]
        start = rows.get("identity", {}).get("tre_per_landmark")
        for index, error in enumerate(rows[method]["tre_per_landmark"]):
            found.append({"case": case, "landmark": index + 1, "error_mm": error,
                          "baseline_mm": rows[baseline]["tre_per_landmark"][index],
                          "initial_mm": None if start is None else start[index]})
    return sorted(found, key=lambda item: -item["error_mm"])[:count]


def verdicts(rows: list[dict], pooled_ours: dict, pooled_theirs: dict, method: str,
             baseline: str) -> list[dict]:
    ratio = pooled_ours["mean"] / pooled_theirs["mean"]
    worse = [r["case"] for r in rows if r["tre_ratio"] > 1.0]
    folded = [r["case"] for r in rows if r[method]["folding_fraction"] > 0]
    slow = [r["case"] for r in rows if r["time_ratio"] > 0.5]
    return [
        {"target": "mean TRE <= 0.8x the baseline's (pooled landmarks)",
         "measured": f"{ratio:.2f}", "met": ratio <= 0.8},
        {"target": "no pair worse than the baseline", "met": not worse,
         "measured": ", ".join(f"{r['case']} {r['tre_ratio']:.2f}" for r in rows
                               if r["case"] in worse) or "none worse"},
        {"target": "folding 0 % in the lung", "met": not folded,
         "measured": ", ".join(folded) or "no folding"},
        {"target": "wall time <= 0.5x the baseline's on every pair", "met": not slow,
         "measured": f"max ratio {max(r['time_ratio'] for r in rows):.3f}"},
    ]


def markdown(summary: dict) -> str:
    m, b = summary["method"], summary["baseline"]
    lines = [f"# {m} against {b} on the POPI pairs", "",
             f"Command: `{summary['command']}`", "",
             f"From: `{summary['source_command']}` ({summary['source_date']}).", "",
             "TRE in mm over the 41 landmarks of each pair (mean / p95 / max); ratio = "
             f"{m} / {b} (mean TRE, wall time). Rows resumed from an earlier run of the same "
             "method on the same inputs are marked *resumed*.", ""]
    for role in ROLES:
        rows = [r for r in summary["pairs"] if r["role"] == role]
        if not rows:
            continue
        lines += [f"## {role} pairs", "",
                  f"| pair | initial | {m} | {b} | TRE ratio | time (s) {m} / {b} | time ratio "
                  f"| folding (%) {m} / {b} |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            tre = lambda s: f"{s['mean']:.2f} / {s['p95']:.2f} / {s['max']:.2f}"  # noqa: E731
            mark = " *resumed*" if r[b]["resumed_from_an_earlier_run"] else ""
            lines.append(f"| {r['case']} | {tre(r['initial'])} | {tre(r[m])} | {tre(r[b])}"
                         f"{mark} | {r['tre_ratio']:.2f} | {r[m]['time_s']:.1f} / "
                         f"{r[b]['time_s']:.0f} | {r['time_ratio']:.3f} | "
                         f"{100 * r[m]['folding_fraction']:.4f} / "
                         f"{100 * r[b]['folding_fraction']:.4f} |")
        pool = summary["pooled"][role]
        lines += ["", f"Pooled over {pool[m]['n']} landmarks: {m} {pool[m]['mean']:.2f} / "
                  f"{pool[m]['p95']:.2f} / {pool[m]['max']:.2f} mm, {b} "
                  f"{pool[b]['mean']:.2f} / {pool[b]['p95']:.2f} / {pool[b]['max']:.2f} mm "
                  f"(ratio {pool[m]['mean'] / pool[b]['mean']:.2f}).", ""]
    lines += ["## Targets of issue 14 on the evaluation pairs", "",
              "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {v['target']} | {v['measured']} | {'yes' if v['met'] else '**no**'} |"
              for v in summary["targets"]]
    lines += ["", f"## The worst landmarks of {m} (evaluation pairs)", "",
              f"| pair | landmark (1-based) | motion to find (initial) | {m} | {b} |",
              "|---|---|---|---|---|"]
    for w in summary["worst_landmarks"]:
        initial = "–" if w["initial_mm"] is None else f"{w['initial_mm']:.2f}"
        lines.append(f"| {w['case']} | {w['landmark']} | {initial} | {w['error_mm']:.2f} | "
                     f"{w['baseline_mm']:.2f} |")
    lines += ["", "## Every method of the run, pooled TRE (mean / p95 / max, mm)", "",
              "| method | evaluation | tuning |", "|---|---|---|"]
    for name, values in summary["all_methods"].items():
        cells = [f"{v['mean']:.2f} / {v['p95']:.2f} / {v['max']:.2f}" if v else "–"
                 for v in (values.get(role) for role in ROLES)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--method", default="lungdeepreg")
    parser.add_argument("--baseline", default="elastix")
    parser.add_argument("--name", default="popi_vs_elastix")
    args = parser.parse_args()
    results = json.loads((args.pairs / "results.json").read_text(encoding="utf-8"))
    cases, role_of = by_case(results), roles()
    complete = [c for c in cases if c in role_of and {args.method, args.baseline} <= set(cases[c])]
    rows = [pair_row(c, role_of[c], cases[c], args.method, args.baseline)
            for c in sorted(complete)]
    names = {role: [r["case"] for r in rows if r["role"] == role] for role in ROLES}
    pools = {role: {m: pooled(cases, names[role], m) for m in (args.method, args.baseline)}
             for role in ROLES if names[role]}
    methods = sorted({m for c in cases.values() for m in c})
    summary = {
        "command": command_line(__file__),
        "source_command": results["meta"]["command"], "source_date": results["meta"]["date"],
        "method": args.method, "baseline": args.baseline, "pairs": rows, "pooled": pools,
        "targets": verdicts([r for r in rows if r["role"] == "evaluation"],
                            pools["evaluation"][args.method],
                            pools["evaluation"][args.baseline], args.method, args.baseline),
        "worst_landmarks": worst_landmarks(cases, names.get("evaluation", []), args.method,
                                           args.baseline),
        "all_methods": {m: {role: pooled(cases, [c for c in cases if role_of.get(c) == role], m)
                            for role in ROLES} for m in methods},
        "missing_baseline": sorted(c for c in cases if c in role_of and c not in complete),
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
