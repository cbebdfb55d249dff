"""The Markdown report of a benchmark, laid out like the seed papers' DIR-Lab tables."""

from __future__ import annotations

from pathlib import Path

from .methods import IDENTITY
from .summary import (
    FOLDING_TARGET,
    TIME_TARGET,
    TRE_KEYS,
    done_rows,
    groups,
    method_summary,
    methods_of,
    pooled_tre,
    targets,
    versus_elastix,
)

NA = "–"


def to_markdown(rows: list[dict], meta: dict, plots: dict[str, Path]) -> str:
    lines = [f"# {meta.get('title', 'LungDeepReg benchmark')}", "",
             f"Measured {meta.get('date', '')} on {meta.get('hardware', '')}.", "",
             f"Code: {meta.get('code', 'unknown')}.", "",
             f"Command: `{meta.get('command', '')}`", "", "## Protocol", ""]
    lines += [f"- **{key}**: {value}" for key, value in meta.get("protocol", {}).items()]
    lines += [f"- **method `{name}`**: {text}" for name, text in meta.get("methods", {}).items()]
    for group in groups(rows):
        mine = [row for row in rows if row.get("group", "") == group]
        lines += ["", f"## {group or 'Results'}", ""] + _group_tables(mine)
        if group in plots:
            lines += ["", f"![cumulative TRE]({plots[group].name})"]
    lines += _failures(rows)
    return "\n".join(lines) + "\n"


def _label(method: str) -> str:
    return "initial" if method == IDENTITY else method


def _number(value: float | None, digits: int = 2) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _group_tables(rows: list[dict]) -> list[str]:
    methods = methods_of(rows)
    cases = list(dict.fromkeys(row["case"] for row in rows if row.get("method")))
    cell = {(r["case"], r["method"]): r for r in rows if r.get("method")}
    lines = []
    if pooled_tre(done_rows(rows)):
        lines += ["### TRE (mm), mean (SD)", ""]
        body = [[case] + [_tre_cell(cell.get((case, m))) for m in methods] for case in cases]
        body.append(["**mean**"] + [_pooled_cell(rows, m) for m in methods])
        lines += _table(["case"] + [_label(m) for m in methods], body) + [""]
    if any("epe" in row for row in rows):
        lines += ["### Mean endpoint error in the lung (mm)", ""]
        body = [[case] + [_epe_cell(cell.get((case, m))) for m in methods] for case in cases]
        body.append(["**mean**"] + [_number(method_summary(rows, m)["epe"]) for m in methods])
        lines += _table(["case"] + [_label(m) for m in methods], body) + [""]
    for method in methods:
        lines += [f"### {_label(method)}", ""] + _method_table(rows, method, cases, cell) + [""]
    return lines + _ratios(rows, methods)


def _tre_cell(row: dict | None) -> str:
    if row is None or row["status"] != "done":
        return row["status"] if row else NA
    return f"{row['tre']['mean']:.2f} ({row['tre']['sd']:.2f})" if "tre" in row else NA


def _pooled_cell(rows: list[dict], method: str) -> str:
    tre = pooled_tre([r for r in done_rows(rows) if r["method"] == method])
    return f"**{tre['mean']:.2f} ({tre['sd']:.2f})**" if tre else NA


def _epe_cell(row: dict | None) -> str:
    if row is None or row["status"] != "done":
        return row["status"] if row else NA
    return _number(row["epe"]["mean"]) if "epe" in row else NA


def _method_table(rows: list[dict], method: str, cases: list[str], cell: dict) -> list[str]:
    header = ["case", "TRE mean", "SD", "p75", "p95", "max", "EPE", "folding (%)", "SD log J",
              "time (s)", "memory (GB)"]
    body = []
    for case in cases:
        row = cell.get((case, method))
        if row is None or row["status"] != "done":
            body.append([case, row["status"] if row else NA] + [""] * (len(header) - 2))
            continue
        tre = row.get("tre") or {}
        body.append([case] + [_number(tre.get(k)) for k in TRE_KEYS]
                    + [_number(row["epe"]["mean"]) if "epe" in row else NA,
                       _number(100 * row["folding_fraction"], 4),
                       _number(row["sd_log_jacobian"], 3), _number(row["time_s"], 1),
                       _number(row["peak_memory_gb"], 2)])
    summary = method_summary(rows, method)
    tre = summary["tre"] or {}
    folding = summary["folding_fraction"]
    body.append(["**mean**"] + [_number(tre.get(k)) for k in TRE_KEYS]
                + [_number(summary["epe"]),
                   NA if folding is None else f"{100 * folding:.4f}",
                   _number(summary["sd_log_jacobian"], 3), _number(summary["time_s"], 1),
                   _number(summary["peak_memory_gb"], 2)])
    return _table(header, body)


def _ratios(rows: list[dict], methods: list[str]) -> list[str]:
    ratios = {m: versus_elastix(rows, m) for m in methods if m not in (IDENTITY, "elastix")}
    ratios = {m: r for m, r in ratios.items() if r}
    if not ratios:
        return []
    body = [[m, _number(r.get("tre_ratio")), _number(r.get("epe_ratio")),
             _number(r["time_ratio"]), str(r["cases"])] for m, r in ratios.items()]
    lines = ["### Versus elastix (ratio of means over the cases both finished)", ""]
    lines += _table(["method", "TRE ratio", "EPE ratio", "time ratio", "cases"], body)
    checks = targets(rows)
    if checks:
        lines += ["", "Targets for `lungdeepreg`:", ""]
        if "tre_ok" in checks:
            lines.append(f"- lower TRE than elastix: {_yes(checks['tre_ok'])} "
                         f"(ratio {checks['tre_ratio']:.2f})")
        if "epe_ok" in checks:
            lines.append(f"- lower EPE than elastix: {_yes(checks['epe_ok'])} "
                         f"(ratio {checks['epe_ratio']:.2f})")
        lines.append(f"- folding at most {100 * FOLDING_TARGET:.2f} % of the lung in every "
                     f"case: {_yes(checks['folding_ok'])} (worst "
                     f"{100 * checks['worst_folding_fraction']:.4f} %)")
        lines.append(f"- at most {TIME_TARGET:.0%} of elastix's wall time: "
                     f"{_yes(checks['time_ok'])} (ratio {checks['time_ratio']:.2f})")
    return lines


def _yes(flag: bool) -> str:
    return "**yes**" if flag else "**no**"


def _failures(rows: list[dict]) -> list[str]:
    bad = [row for row in rows if row["status"] not in ("done",)]
    if not bad:
        return []
    body = [[row["case"], row.get("method") or NA, row["status"],
             str(row.get("error", "")).replace("\n", " ").replace("|", "/")[:300]]
            for row in bad]
    return ["", "## Not measured", ""] + _table(["case", "method", "status", "reason"], body)
