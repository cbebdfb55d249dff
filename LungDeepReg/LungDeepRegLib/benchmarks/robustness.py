"""``bench robustness manifest.csv``: the pairs of a manifest with cut fields of view.

Clinical CTs come cropped: reconstructions around one lung, fields of view that cut the
lungs at the side, the front or the apex. Each pair of the manifest is registered uncut and
with the fixed and/or the moving image cut (:data:`CUTS`), without masks, as a user would.
Every variant is judged on the landmarks that lie inside both cut images, against the uncut
registration *on the same landmarks* (:func:`robustness_table`): the target is a mean TRE
within 10 % of the uncut one, and no silent failure: a variant more than twice as bad must
carry a self-check warning (``metrics.json["warnings"]`` of its run).

Cuts are index ranges of the image, placed by the image's own automatic lung mask, so the
geometry (spacing, direction, origin of the kept voxels) is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..preprocess import lung_labels
from ..spatial import Grid
from .case import BenchCase, CaseError

Cut = Callable[[sitk.Image, np.ndarray], tuple[list[int], list[int]]]
SIDES = ("fixed", "moving", "both")
TRE_TOLERANCE = 1.10  # a variant's mean TRE within 10 % of the uncut pair's
SILENT_FAILURE_RATIO = 2.0  # worse than this must carry a warning


def _lung_box(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lung bounding box (x, y, z) in voxel indices, inclusive."""
    zz, yy, xx = np.nonzero(labels)
    return (np.array([xx.min(), yy.min(), zz.min()]),
            np.array([xx.max(), yy.max(), zz.max()]))


def _lung_side_x(labels: np.ndarray, label: int) -> tuple[int, int]:
    xs = np.nonzero(labels == label)[2]
    return int(xs.min()), int(xs.max())


def _one_lung(label: int) -> Cut:
    """Keep the image columns of one lung (1 patient left, 2 right) and a 10 % margin."""
    def cut(image: sitk.Image, labels: np.ndarray) -> tuple[list[int], list[int]]:
        low, high = _lung_side_x(labels, label)
        margin = max(1, (high - low) // 10)
        lower, upper = [0, 0, 0], list(image.GetSize())
        lower[0], upper[0] = max(0, low - margin), min(upper[0], high + margin + 1)
        return lower, upper
    return cut


def _sides(image: sitk.Image, labels: np.ndarray) -> tuple[list[int], list[int]]:
    """Cut left, right and front at the lung's outer edge: the lungs touch three borders."""
    low, high = _lung_box(labels)
    lower, upper = [0, 0, 0], list(image.GetSize())
    lower[0], upper[0] = int(low[0]) + 1, int(high[0])
    front = _front_axis_end(image)
    if front == "low":
        lower[1] = int(low[1]) + 1
    else:
        upper[1] = int(high[1])
    return lower, upper


def _front_axis_end(image: sitk.Image) -> str:
    """Which end of the y index axis is anterior (LPS: anterior is -y)."""
    return "low" if image.GetDirection()[4] > 0 else "high"


def _apex(image: sitk.Image, labels: np.ndarray) -> tuple[list[int], list[int]]:
    """Cut away the top fifth of the lungs (superior is +z in LPS)."""
    low, high = _lung_box(labels)
    lower, upper = [0, 0, 0], list(image.GetSize())
    cut = int(round(0.2 * (high[2] - low[2])))
    if image.GetDirection()[8] > 0:
        upper[2] = int(high[2]) - cut + 1
    else:
        lower[2] = int(low[2]) + cut
    return lower, upper


CUTS: dict[str, Cut] = {"left-lung": _one_lung(1), "right-lung": _one_lung(2),
                        "sides": _sides, "apex": _apex}


def cut_image(image: sitk.Image, cut: Cut, labels: np.ndarray | None = None) -> sitk.Image:
    """``image`` restricted to the index range that ``cut`` chooses (geometry kept)."""
    if labels is None:
        labels = sitk.GetArrayFromImage(lung_labels(image))
    lower, upper = cut(image, labels)
    size = [int(u - lo) for lo, u in zip(lower, upper, strict=True)]
    return sitk.RegionOfInterest(image, size, [int(v) for v in lower])


def _inside(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Points within the voxel centres of ``image`` (no extrapolated border)."""
    return Grid.from_image(image).contains(points, margin=0.0)


def robustness_cases(cases: list[BenchCase | CaseError], cuts: list[str],
                     sides: list[str]) -> list[BenchCase | CaseError]:
    """Every case uncut, then with each cut on each side; each variant's landmarks are
    those inside both of its images (their 0-based numbers in ``sources["landmarks"]``)."""
    variants: list[BenchCase | CaseError] = []
    for case in cases:
        if isinstance(case, CaseError):
            variants.append(case)
            continue
        case.group = case.name  # the uncut pair heads its variants' group
        variants.append(case)
        if case.fixed_points is not None:
            case.sources["landmarks"] = json.dumps(list(range(len(case.fixed_points))))
        labels = {name: sitk.GetArrayFromImage(lung_labels(getattr(case, name)))
                  for name in ("fixed", "moving")}
        for cut_name in cuts:
            for side in sides:
                variants.append(_variant(case, cut_name, side, labels))
    return variants


def _variant(case: BenchCase, cut_name: str, side: str,
             labels: dict[str, np.ndarray]) -> BenchCase | CaseError:
    name = f"{case.name}~{side}-{cut_name}"
    images = {}
    for which in ("fixed", "moving"):
        image = getattr(case, which)
        images[which] = (cut_image(image, CUTS[cut_name], labels[which])
                         if side in (which, "both") else image)
    variant = replace(case, name=name, fixed=images["fixed"], moving=images["moving"],
                      group=case.name, fixed_lungs=None, sources=dict(case.sources))
    if case.fixed_points is not None:
        keep = (_inside(images["fixed"], case.fixed_points)
                & _inside(images["moving"], case.moving_points))
        if keep.sum() < 3:
            return CaseError(name, case.sources.get("fixed_points", case.name),
                             "fewer than 3 landmarks inside both cut images")
        variant.fixed_points = case.fixed_points[keep]
        variant.moving_points = case.moving_points[keep]
        variant.sources["landmarks"] = json.dumps(np.nonzero(keep)[0].tolist())
    return variant


def robustness_table(rows: list[dict], cases: list[BenchCase | CaseError],
                     method: str = "lungdeepreg") -> tuple[list[dict], str]:
    """Each variant against its uncut pair on the same landmarks; the rows and Markdown."""
    landmarks = {case.name: json.loads(case.sources["landmarks"]) for case in cases
                 if isinstance(case, BenchCase) and "landmarks" in case.sources}
    done = {row["case"]: row for row in rows
            if row.get("method") == method and row["status"] == "done"}
    table = []
    for case in cases:
        if isinstance(case, CaseError) or "~" not in case.name:
            continue
        table.append(_compare(case.name, case.group, done, landmarks))
    return table, _markdown(table, method)


def _compare(name: str, pair: str, done: dict[str, dict], landmarks: dict[str, list[int]]
             ) -> dict:
    row = {"pair": pair, "variant": name.split("~", 1)[1]}
    variant, uncut = done.get(name), done.get(pair)
    if variant is None or uncut is None:
        return {**row, "verdict": "not run" if variant is None else "no uncut result"}
    kept = landmarks.get(name, [])
    uncut_tre = np.asarray(uncut.get("tre_per_landmark") or [])
    variant_tre = np.asarray(variant.get("tre_per_landmark") or [])
    if len(uncut_tre) != len(landmarks.get(pair, [])) or len(variant_tre) != len(kept):
        return {**row, "verdict": "landmarks excluded: not comparable"}
    reference = float(uncut_tre[kept].mean())
    mean = float(variant_tre.mean())
    ratio = mean / reference
    warned = _warnings(variant)
    if ratio <= TRE_TOLERANCE:
        verdict = "within 10 %"
    elif ratio <= SILENT_FAILURE_RATIO or warned:
        verdict = "worse" + (", warned" if warned else "")
    else:
        verdict = "SILENT FAILURE"
    return {**row, "landmarks": len(kept), "uncut_tre_mm": round(reference, 3),
            "tre_mm": round(mean, 3), "ratio": round(ratio, 3),
            "folding_percent": round(100 * variant["folding_fraction"], 4),
            "warnings": warned, "verdict": verdict}


def _warnings(row: dict) -> list[str]:
    """The self-check warnings of a LungDeepReg run (its metrics.json beside the field)."""
    metrics = Path(row.get("field", "")).parent / "metrics.json"
    if not row.get("field") or not metrics.is_file():
        return []
    return [w["check"] for w in json.loads(metrics.read_text()).get("warnings") or []]


def _markdown(table: list[dict], method: str) -> str:
    lines = [f"## Cut fields of view ({method}, no masks)", "",
             "Each variant is judged on the landmarks inside both of its images, against the "
             "uncut registration of the same pair on the same landmarks. Target: mean TRE "
             f"within {round(100 * (TRE_TOLERANCE - 1))} % of the uncut pair's; a variant more "
             f"than {SILENT_FAILURE_RATIO:g}x worse must carry a warning.", "",
             "| pair | variant | landmarks | uncut TRE (same landmarks) | TRE | ratio | "
             "folding % | warnings | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['pair']} | {row['variant']} | {row.get('landmarks', '')} | "
                     f"{row.get('uncut_tre_mm', '')} | {row.get('tre_mm', '')} | "
                     f"{row.get('ratio', '')} | {row.get('folding_percent', '')} | "
                     f"{', '.join(row.get('warnings') or []) or 'none'} | {row['verdict']} |")
    ratios = [row["ratio"] for row in table if "ratio" in row]
    if ratios:
        within = sum(r <= TRE_TOLERANCE for r in ratios)
        silent = sum(row["verdict"] == "SILENT FAILURE" for row in table)
        lines += ["", f"{within} of {len(ratios)} variants within "
                      f"{round(100 * (TRE_TOLERANCE - 1))} %; mean ratio "
                      f"{np.mean(ratios):.3f}, worst {max(ratios):.3f}; silent failures: "
                      f"{silent}."]
    return "\n".join(lines) + "\n"
