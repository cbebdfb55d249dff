"""Numbers of the report from the metrics dictionary: summary box, verdicts, tables."""

from __future__ import annotations

import numpy as np

from .charts import tre_values, worst_order
from .html import Check, table
from .text import (
    MISSING,
    fmt,
    label_sort_key,
    label_title,
    mean_sd,
    number,
    percent,
    seconds,
    voxels,
)

FOLDING_LIMIT = 0.001  # 0.1 %: the order of folding the seed paper reports on COPDGene
TRE_STATS = (("mean", "mean"), ("sd", "SD (population)"), ("median", "median"),
             ("p75", "75th percentile"), ("p95", "95th percentile"), ("max", "max"))


def summary_rows(title: str, metrics: dict, jacobian: dict | None) -> list[tuple[str, str]]:
    """Key numbers for the box at the top of the page."""
    landmarks = metrics.get("landmarks") or {}
    run = metrics.get("run") or {}  # how register records the run (pipeline/outputs.py)
    model = run.get("model") or {}
    rows = [("Case", title), ("Direction", str(run.get("direction") or MISSING))]
    if landmarks:
        before, after = landmarks.get("before") or {}, landmarks.get("after") or {}
        rows += [
            ("TRE mean (SD)", f"{mean_sd(before)} \u2192 {mean_sd(after)}"),
            ("TRE max", f"{fmt(before.get('max'))} \u2192 {fmt(after.get('max'))} mm"),
            ("Landmarks", f"{after.get('n', MISSING)} used, "
                          f"{after.get('excluded', 0)} excluded"),
        ]
    else:
        rows.append(("TRE", "no landmarks given"))
    if jacobian:
        rows += [("Folding (det J \u2264 0)",
                  f"{percent(jacobian.get('folding_fraction'))} of "
                  f"{jacobian.get('region', 'whole image')} "
                  f"({voxels(jacobian.get('folding_count', MISSING))})"),
                 ("SD log J", fmt(jacobian.get("sd_log_jacobian"), 3))]
    else:
        rows.append(("Folding (det J \u2264 0)", "not measured"))
    dice = mean_dice(metrics.get("labels"))
    rows.append(("Mean Dice", f"{fmt(dice[0], 3)} \u2192 {fmt(dice[1], 3)}"
                 if metrics.get("labels") else "no label maps given"))
    rows += [("Runtime (total)", seconds(run.get("total_runtime_s",
                                                total_runtime(run.get("runtime_s"))))),
             ("Device", str(run.get("device") or MISSING)),
             ("Model", str(model.get("name") or MISSING)),
             ("Model sha256", str(model.get("sha256") or MISSING))]
    if run.get("network_start"):
        rows.append(("Network start", network_part(run["network_start"])))
    elif run.get("refinement"):  # optimisation alone: which start it refined, what it kept
        refinement = run["refinement"]
        rows.append(("Refinement", f"from the {refinement.get('refined_from', MISSING)} "
                                   f"start; kept: {refinement.get('kept', MISSING)}"))
    return rows


def network_part(start: dict) -> str:
    """Which start the refinement continued and what was kept (pipeline.register)."""
    refined = start.get("refined_from")
    if refined is None:  # network only (--refine-iterations 0)
        return f"network only, from the {start.get('start', MISSING)} start"
    how = (" alone (trusted)" if start.get("trusted") else
           " alone (the network's start matched far worse)" if start.get("dropped") else "")
    kept = start.get("kept", MISSING)
    return f"refined from the {refined} start{how}; kept: {kept}"


def checks(metrics: dict, jacobian: dict | None) -> list[Check]:
    """Verdict lines: what improved, what needs a look. Thresholds are stated in the text."""
    found: list[Check] = []
    landmarks = metrics.get("landmarks") or {}
    before = number((landmarks.get("before") or {}).get("mean"))
    after = number((landmarks.get("after") or {}).get("mean"))
    if before is not None and after is not None:
        if after < before:
            change = 100.0 * (before - after) / before if before > 0 else 0.0
            found.append(Check("ok", f"Mean TRE reduced by {change:.0f} % "
                                     f"({before:.2f} \u2192 {after:.2f} mm)."))
        else:
            found.append(Check("warn", f"Mean TRE did not decrease ({before:.2f} \u2192 "
                                       f"{after:.2f} mm): check the registration."))
        _, tre_before, tre_after = tre_values(landmarks)
        worse = int(np.count_nonzero(tre_after > tre_before))
        if worse:
            found.append(Check("info", f"{worse} landmark(s) are further apart after "
                                       "registration than before."))
    fraction = number((jacobian or {}).get("folding_fraction"))
    if fraction is not None:
        region = (jacobian or {}).get("region", "whole image")
        if fraction == 0:
            found.append(Check("ok", f"No folding (det J \u2264 0) in the {region}."))
        else:
            status = "warn" if fraction >= FOLDING_LIMIT else "info"
            found.append(Check(status, f"Folding in {percent(fraction)} of the {region} "
                                       f"(attention threshold {percent(FOLDING_LIMIT)})."))
    dice_before, dice_after = mean_dice(metrics.get("labels"))
    if dice_before is not None and dice_after is not None:
        status = "ok" if dice_after >= dice_before else "warn"
        found.append(Check(status, f"Mean Dice {dice_before:.3f} \u2192 {dice_after:.3f}."))
    return found


def mean_dice(labels: dict | None) -> tuple[float | None, float | None]:
    """Mean Dice over the labels with a value, before and after (None when none)."""
    result = []
    for side in ("before", "after"):
        values = [number(v.get("dice")) for v in ((labels or {}).get(side) or {}).values()]
        values = [v for v in values if v is not None]
        result.append(float(np.mean(values)) if values else None)
    return result[0], result[1]


def total_runtime(runtime: dict | None) -> float | None:
    """The ``total`` entry when present, else the sum of the steps."""
    if not runtime:
        return None
    if number(runtime.get("total")) is not None:
        return number(runtime["total"])
    values = [number(v) for v in runtime.values()]
    return sum(v for v in values if v is not None)


def tre_summary_table(landmarks: dict) -> str:
    before, after = landmarks.get("before") or {}, landmarks.get("after") or {}
    rows = [(name, fmt(before.get(key)), fmt(after.get(key))) for key, name in TRE_STATS]
    rows.append(("landmarks used", before.get("n", MISSING), after.get("n", MISSING)))
    rows.append(("excluded", before.get("excluded", 0), after.get("excluded", 0)))
    return table(("statistic (mm)", "before", "after"), rows, "TRE summary")


def worst_table(landmarks: dict, count: int = 20) -> str:
    index, before, after = tre_values(landmarks)
    order = worst_order(after)[:count]
    rows = [(f"#{index[k]}", fmt(before[k]), fmt(after[k]), fmt(after[k] - before[k]))
            for k in order]
    return table(("landmark", "TRE before (mm)", "TRE after (mm)", "change (mm)"), rows,
                 f"The {len(order)} landmarks with the largest TRE after registration")


def landmark_qa_summary_table(summary: dict) -> str:
    """TRE statistics of all pairs beside those of the pairs not flagged (and, after a
    correction in Slicer, before and after it)."""
    columns = [(key, name) for key, name in (
        ("all", "all pairs"), ("without_flagged", "without flagged pairs"),
        ("before_correction", "before correction"), ("after_correction", "after correction"))
        if key in summary]
    rows = [(name, *(fmt(summary[key].get(stat)) for key, _ in columns))
            for stat, name in TRE_STATS if stat != "median"]
    rows.append(("pairs", *(summary[key].get("n", MISSING) for key, _ in columns)))
    return table(("statistic (mm)", *(name for _, name in columns)), rows,
                 "TRE with and without the flagged pairs")


def flagged_pairs_table(flagged: list[dict], count: int = 20) -> str:
    rows = [(point["label"], fmt(point["tre"]), "; ".join(point.get("reasons") or []))
            for point in flagged[:count]]
    return table(("landmark", "TRE (mm)", "why it is flagged"), rows,
                 f"Flagged pairs, most suspicious first (first {len(rows)})")


def labels_table(labels: dict) -> str:
    before, after = labels.get("before") or {}, labels.get("after") or {}
    rows = []
    for key in sorted(set(before) | set(after), key=label_sort_key):
        b, a = before.get(key) or {}, after.get(key) or {}
        notes = "; ".join(dict.fromkeys(n for n in (b.get("note"), a.get("note")) if n))
        rows.append((label_title(key), fmt(b.get("dice"), 3), fmt(a.get("dice"), 3),
                     fmt(b.get("asd_mm")), fmt(a.get("asd_mm")), fmt(b.get("hd95_mm")),
                     fmt(a.get("hd95_mm")), fmt(a.get("hd_mm")),
                     fmt(a.get("volume_fixed_ml"), 1), fmt(b.get("volume_moving_ml"), 1),
                     fmt(a.get("volume_moving_ml"), 1), notes or ""))
    headers = ("label", "Dice before", "Dice after", "ASD before (mm)", "ASD after (mm)",
               "HD95 before (mm)", "HD95 after (mm)", "HD after (mm)", "volume fixed (ml)",
               "volume moving (ml)", "volume warped (ml)", "note")
    return table(headers, rows, "Per-label overlap and surface distances")


def jacobian_table(jacobian: dict) -> str:
    rows = [("region", jacobian.get("region", "whole image")),
            ("voxels in region", jacobian.get("voxels", MISSING)),
            ("folded voxels (det J \u2264 0)", jacobian.get("folding_count", MISSING)),
            ("folding fraction", percent(jacobian.get("folding_fraction"))),
            ("SD of log det J", fmt(jacobian.get("sd_log_jacobian"), 4)),
            ("mean det J", fmt(jacobian.get("mean_det"), 4)),
            ("min det J", fmt(jacobian.get("min_det"), 4)),
            ("max det J", fmt(jacobian.get("max_det"), 4))]
    return table(("statistic", "value"), rows, "Jacobian determinant statistics")


def runtime_table(runtime: dict) -> str:
    rows = [(str(step), seconds(value)) for step, value in runtime.items() if step != "total"]
    rows.append(("total", seconds(total_runtime(runtime))))
    return table(("step", "time"), rows, "Runtime per step")


def software_table(versions: dict, model: dict, device: object) -> str:
    rows = [(str(name), str(version)) for name, version in versions.items()]
    rows += [("model", str(model.get("name") or MISSING)),
             ("model sha256", str(model.get("sha256") or MISSING)),
             ("device", str(device or MISSING))]
    return table(("component", "version / value"), rows, "Software, model and device")
