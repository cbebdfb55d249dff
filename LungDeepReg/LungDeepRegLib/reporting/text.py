"""Number formatting and names shared by the figures and the HTML page.

Metrics may come straight from :func:`LungDeepRegLib.pipeline.evaluation.evaluate` (label keys
are ints, NaN floats) or back from ``metrics.json`` (label keys are strings, NaN written as
null); every helper here accepts both.
"""

from __future__ import annotations

import math

LOBE_NAMES = {1: "left upper", 2: "left lower", 3: "right upper", 4: "right middle",
              5: "right lower"}
MISSING = "n/a"


def label_name(label: int | str) -> str:
    """Lobe name for the engine's lobe labels 1..5, ``"label k"`` for any other id."""
    try:
        number = int(label)
    except (TypeError, ValueError):
        return f"label {label}"
    return LOBE_NAMES.get(number, f"label {number}")


def label_title(label: int | str) -> str:
    """``"3: right upper"`` for a lobe, ``"label 9"`` for any other id."""
    name = label_name(label)
    return name if name.startswith("label ") else f"{label}: {name}"


def label_sort_key(label: int | str) -> tuple[int, str]:
    """Numeric labels first in numeric order, anything else after them."""
    try:
        return int(label), ""
    except (TypeError, ValueError):
        return 1 << 30, str(label)


def number(value: object) -> float | None:
    """A finite float, or None for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def fmt(value: object, digits: int = 2, unit: str = "") -> str:
    """Fixed-point text with an optional unit; ``n/a`` when the value is missing."""
    result = number(value)
    if result is None:
        return MISSING
    text = f"{result:.{digits}f}"
    return f"{text} {unit}" if unit else text


def percent(fraction: object) -> str:
    """A fraction as a percentage with two significant figures for small values
    (folding is often well below 0.01 %, where fixed decimals would print 0.00)."""
    result = number(fraction)
    if result is None:
        return MISSING
    value = 100.0 * result
    if value == 0.0:
        return "0 %"
    digits = max(2, 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f} %"


def seconds(value: object) -> str:
    """Runtime in seconds: two decimals below 10 s, one above."""
    result = number(value)
    if result is None:
        return MISSING
    return f"{result:.2f} s" if result < 10 else f"{result:.1f} s"


def mean_sd(summary: dict | None, unit: str = "mm") -> str:
    """``mean (SD) unit`` from a TRE summary, ``n/a`` without one."""
    if not summary or number(summary.get("mean")) is None:
        return MISSING
    return f"{fmt(summary.get('mean'))} ({fmt(summary.get('sd'))}) {unit}"


def voxels(count: object) -> str:
    """``"1 voxel"``, ``"3 voxels"``."""
    return f"{count} voxel" if count == 1 else f"{count} voxels"
