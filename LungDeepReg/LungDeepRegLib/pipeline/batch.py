"""Many pairs from a manifest: isolated, resumable, shardable.

Manifest (CSV): ``fixed,moving`` and optionally ``id``, ``fixed_mask``, ``moving_mask``,
``fixed_lobes``, ``moving_lobes``, ``fixed_landmarks``, ``moving_landmarks``,
``landmark_format``; paths relative to the manifest. Each pair writes into ``OUT/<id>``;
a pair whose ``metrics.json`` exists is skipped, so a re-run resumes. A failing pair is
recorded with its error and the others go on. ``--shard i/n`` (or torchrun's RANK and
WORLD_SIZE) processes every n-th pair, so several processes or machines share one manifest.
"""

from __future__ import annotations

import csv
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io.atomic import write_json, write_text
from .outputs import METRICS_FILE
from .register import RegistrationInputs, RegistrationOptions, register

COLUMNS = ("fixed_mask", "moving_mask", "fixed_lobes", "moving_lobes", "fixed_landmarks",
           "moving_landmarks")


@dataclass
class BatchItem:
    pair_id: str
    inputs: RegistrationInputs


def read_batch_manifest(path: str | Path) -> list[BatchItem]:
    """Pairs of a batch manifest; errors name the manifest and the row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"fixed", "moving"} <= set(rows[0]):
        raise InputError(path, "needs a header with at least the columns fixed,moving")
    items, seen = [], set()
    for number, row in enumerate(rows, start=1):
        pair_id = (row.get("id") or f"pair{number:04d}").strip()
        if pair_id in seen:
            raise InputError(path, f"row {number}: duplicate id {pair_id!r}")
        seen.add(pair_id)
        paths = {key: str(path.parent / row[key]) if row.get(key) else None
                 for key in ("fixed", "moving", *COLUMNS)}
        inputs = RegistrationInputs(
            **{key: Path(value) if value and "lobes" not in key else value
               for key, value in paths.items()},
            landmark_format=row.get("landmark_format") or None)
        items.append(BatchItem(pair_id, inputs))
    return items


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (1-based i) or, under torchrun, the process's rank; default ``(1, 1)``."""
    if text:
        index, _, count = text.partition("/")
        shard = (int(index), int(count))
        if not 1 <= shard[0] <= shard[1]:
            raise InputError(text, "a shard is i/n with 1 <= i <= n")
        return shard
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")) + 1, world


def run_batch(items: list[BatchItem], out_dir: Path, options: RegistrationOptions,
              shard: tuple[int, int] = (1, 1),
              on_pair: Callable[[BatchItem, dict], None] | None = None) -> list[dict]:
    """Register this shard's pairs; returns one summary row per pair (also written)."""
    out_dir = Path(out_dir)
    mine = items[shard[0] - 1::shard[1]]
    rows = []
    for item in mine:
        row = _run_one(item, out_dir / item.pair_id, options)
        rows.append(row)
        if on_pair is not None:
            on_pair(item, row)
    suffix = "" if shard[1] == 1 else f"_shard{shard[0]}of{shard[1]}"
    write_summary(rows, out_dir, suffix)
    return rows


def _run_one(item: BatchItem, pair_dir: Path, options: RegistrationOptions) -> dict:
    row = {"id": item.pair_id, "fixed": str(item.inputs.fixed), "moving": str(item.inputs.moving)}
    if (pair_dir / METRICS_FILE).is_file():
        metrics = json.loads((pair_dir / METRICS_FILE).read_text())
        return {**row, "status": "skipped (done before)", **_metric_columns(metrics)}
    try:
        result = register(item.inputs, pair_dir, options)
    except InputError as error:
        return {**row, "status": "failed", "error": str(error)}
    except Exception as error:  # one bad pair must not stop the batch
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return {**row, "status": "failed", "error": detail}
    return {**row, "status": "done", **_metric_columns(result.metrics)}


def _metric_columns(metrics: dict) -> dict:
    columns = {"folding_fraction": metrics["jacobian"]["folding_fraction"],
               "sd_log_jacobian": metrics["jacobian"]["sd_log_jacobian"],
               "runtime_s": metrics["run"]["total_runtime_s"]}
    if "landmarks" in metrics:
        columns["tre_before_mm"] = metrics["landmarks"]["before"]["mean"]
        columns["tre_after_mm"] = metrics["landmarks"]["after"]["mean"]
    return columns


def write_summary(rows: list[dict], out_dir: Path, suffix: str = "") -> None:
    """``summary<suffix>.csv`` and ``.json`` (written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"summary{suffix}.json", rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_csv_cell(row.get(column, "")) for column in columns))
    write_text(out_dir / f"summary{suffix}.csv", "\n".join(lines) + "\n")


def _csv_cell(value: object) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text
