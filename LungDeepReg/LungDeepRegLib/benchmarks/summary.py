"""Summaries of benchmark rows: pooled TRE, per-method means, ratios to elastix, targets.

The mean row of a table pools all landmarks of its cases (DIR-Lab's 8.46 (6.58) mm for the
identity is the pooled mean and population SD); folding, time and memory are means over the
cases; the worst folding is the maximum.
"""

from __future__ import annotations

import numpy as np

FOLDING_TARGET = 0.0005  # 0.05 % of the lung voxels
TIME_TARGET = 0.5  # at most half of elastix's wall time


TRE_KEYS = ("mean", "sd", "p75", "p95", "max")  # the TRE columns of the tables


def groups(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(row.get("group", "") for row in rows))


def methods_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(row["method"] for row in rows if row.get("method")))


def done_rows(rows: list[dict], group: str | None = None) -> list[dict]:
    return [row for row in rows if row["status"] == "done"
            and (group is None or row.get("group", "") == group)]


def flat(row: dict) -> dict:
    """The scalar columns of a row (missing ones absent)."""
    values = {key: row.get(key) for key in ("case", "group", "method", "status", "error",
                                             "sd_log_jacobian", "time_s", "peak_memory_gb")}
    for key in TRE_KEYS:
        if "tre" in row and key in row["tre"]:  # rows of older runs have no p95
            values[f"tre_{key}"] = row["tre"][key]
    if "tre_initial" in row:
        values["tre_initial_mean"] = row["tre_initial"]["mean"]
    if "epe" in row:
        values["epe_mean"] = row["epe"]["mean"]
    if row.get("folding_fraction") is not None:
        values["folding_percent"] = 100.0 * row["folding_fraction"]
    return {key: value for key, value in values.items() if value is not None}


def pooled_tre(rows: list[dict]) -> dict | None:
    """Mean, population SD, 75th and 95th percentile and max over all landmarks of
    ``rows`` (the 95th: the tail that a mean hides, as in the Learn2Reg TRE30/TRE95)."""
    errors = np.concatenate([row["tre_per_landmark"] for row in rows
                             if row.get("tre_per_landmark")] or [np.zeros(0)])
    if errors.size == 0:
        return None
    return {"mean": float(errors.mean()), "sd": float(errors.std()),
            "p75": float(np.percentile(errors, 75)), "p95": float(np.percentile(errors, 95)),
            "max": float(errors.max()),
            "n": int(errors.size)}


def method_summary(rows: list[dict], method: str) -> dict:
    """Pooled TRE and mean EPE, folding, time and memory of one method's finished rows."""
    mine = [row for row in rows if row["method"] == method and row["status"] == "done"]
    summary = {"cases": len(mine), "tre": pooled_tre(mine)}
    for key, pick in (("epe", lambda r: r["epe"]["mean"] if "epe" in r else None),
                      ("folding_fraction", lambda r: r.get("folding_fraction")),
                      ("max_folding_fraction", lambda r: r.get("folding_fraction")),
                      ("sd_log_jacobian", lambda r: r.get("sd_log_jacobian")),
                      ("time_s", lambda r: r.get("time_s")),
                      ("peak_memory_gb", lambda r: r.get("peak_memory_gb"))):
        values = [v for v in map(pick, mine) if v is not None]
        reduce = max if key == "max_folding_fraction" else np.mean
        summary[key] = float(reduce(values)) if values else None
    return summary


def versus_elastix(rows: list[dict], method: str) -> dict | None:
    """TRE and time ratios to elastix over the cases both finished (None without elastix)."""
    done = {(r["case"], r["method"]): r for r in rows if r["status"] == "done"}
    cases = [case for case, name in done if name == method and (case, "elastix") in done]
    if not cases or method == "elastix":
        return None
    ours = [done[(case, method)] for case in cases]
    theirs = [done[(case, "elastix")] for case in cases]
    ratio = {"cases": len(cases),
             "time_ratio": sum(r["time_s"] for r in ours) / sum(r["time_s"] for r in theirs)}
    tre_ours, tre_theirs = pooled_tre(ours), pooled_tre(theirs)
    if tre_ours and tre_theirs:
        ratio["tre_ratio"] = tre_ours["mean"] / tre_theirs["mean"]
    epe = [(r["epe"]["mean"], s["epe"]["mean"]) for r, s in zip(ours, theirs, strict=True)
           if "epe" in r and "epe" in s]
    if epe:
        ratio["epe_ratio"] = sum(a for a, _ in epe) / sum(b for _, b in epe)
    return ratio


def targets(rows: list[dict], method: str = "lungdeepreg") -> dict | None:
    """The issue's targets for ``method`` against elastix, where both ran."""
    ratio = versus_elastix(rows, method)
    if ratio is None:
        return None
    mine = [row for row in rows if row["method"] == method and row["status"] == "done"]
    worst = max(row["folding_fraction"] for row in mine)
    checks = {"worst_folding_fraction": worst, "folding_ok": worst <= FOLDING_TARGET,
              "time_ratio": ratio["time_ratio"], "time_ok": ratio["time_ratio"] <= TIME_TARGET}
    if "tre_ratio" in ratio:
        checks.update(tre_ratio=ratio["tre_ratio"], tre_ok=ratio["tre_ratio"] < 1.0)
    if "epe_ratio" in ratio:
        checks.update(epe_ratio=ratio["epe_ratio"], epe_ok=ratio["epe_ratio"] < 1.0)
    return checks
