"""Many pairs from a manifest: isolated, resumable, shardable.

Manifest (CSV): ``fixed,moving`` and optionally ``id``, ``fixed_mask``, ``moving_mask``,
``fixed_lobes``, ``moving_lobes``, ``fixed_landmarks``, ``moving_landmarks``,
``landmark_format``; paths relative to the manifest. Each pair writes into ``OUT/<id>``
(an id is a plain folder name, unique in the manifest). A re-run resumes: a pair is skipped
only when its ``metrics.json`` records the fingerprint of the same input files (path, size,
modification time) and options; a pair whose inputs changed is registered again. A failing
pair (bad input, a bad id, a missing file column) is recorded with its error and the others
go on. ``--shard i/n`` (or torchrun's RANK and WORLD_SIZE) processes every n-th pair, so
several processes or machines share one manifest.
"""

from __future__ import annotations

import csv
import json
import os
import re
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io.atomic import write_json, write_text
from .outputs import METRICS_FILE, input_fingerprint
from .register import RegistrationInputs, RegistrationOptions, register
from .validate import check_options, check_out_dir

COLUMNS = ("fixed_mask", "moving_mask", "fixed_lobes", "moving_lobes", "fixed_landmarks",
           "moving_landmarks")
REQUIRED = ("fixed", "moving")
# a plain folder name: no separator, no "."/"..", not hidden (the staging folders are)
PAIR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class BatchItem:
    pair_id: str
    inputs: RegistrationInputs | None
    error: str | None = None  # why this row cannot run (recorded as a failed pair)


def read_batch_manifest(path: str | Path) -> list[BatchItem]:
    """Pairs of a batch manifest; errors name the manifest and the row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not set(REQUIRED) <= set(rows[0]):
        raise InputError(path, "needs a header with at least the columns fixed,moving")
    items = [_item(path, number, row) for number, row in enumerate(rows, start=1)]
    _refuse_shared_ids(items)
    return items


def _item(manifest: Path, number: int, row: dict) -> BatchItem:
    pair_id = ((row.get("id") or "").strip() or f"pair{number:04d}")
    if not PAIR_ID.fullmatch(pair_id) or pair_id in (".", ".."):
        return BatchItem(pair_id, None, f"row {number}: id {pair_id!r} is not a plain name "
                                        "(letters, digits, '.', '_', '-'; starting with a "
                                        "letter or digit): it names the pair's output folder")
    missing = [key for key in REQUIRED if not (row.get(key) or "").strip()]
    if missing:
        return BatchItem(pair_id, None, f"row {number}: no {' or '.join(missing)} file given")
    paths = {key: str(manifest.parent / row[key].strip()) if (row.get(key) or "").strip()
             else None for key in (*REQUIRED, *COLUMNS)}
    inputs = RegistrationInputs(
        **{key: Path(value) if value and "lobes" not in key else value
           for key, value in paths.items()},
        landmark_format=(row.get("landmark_format") or "").strip() or None)
    return BatchItem(pair_id, inputs)


def _refuse_shared_ids(items: list[BatchItem]) -> None:
    """Rows that share an id would share (and overwrite) one output folder: none of them
    may own it, so all of them fail. Compared ignoring case, as some file systems do."""
    rows: dict[str, list[int]] = {}
    for number, item in enumerate(items, start=1):
        rows.setdefault(item.pair_id.casefold(), []).append(number)
    for item in items:
        shared = rows[item.pair_id.casefold()]
        if len(shared) > 1 and item.error is None:
            item.inputs, item.error = None, (
                f"id {item.pair_id!r} is used by rows {', '.join(map(str, shared))}; "
                "ids must be unique")


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
    check_options(options)  # the same for every pair: refused once, before any work
    check_out_dir(out_dir)
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
    if item.error is not None:
        return {"id": item.pair_id, "status": "failed", "error": item.error}
    row = {"id": item.pair_id, "fixed": str(item.inputs.fixed), "moving": str(item.inputs.moving)}
    try:
        earlier = _earlier_result(pair_dir, input_fingerprint(item.inputs, options))
    except OSError as error:  # an input vanished between the manifest and now
        return {**row, "status": "failed", "error": f"{error.filename}: {error.strerror}"}
    if earlier is not None:
        return {**row, "status": "skipped (done before)", **_metric_columns(earlier)}
    try:
        # warnings are the pair's own (its self-checks): kept in its row, named by its id
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = register(item.inputs, pair_dir, options)
    except InputError as error:
        return {**row, "status": "failed", "error": str(error)}
    except Exception as error:  # one bad pair must not stop the batch
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return {**row, "status": "failed", "error": detail}
    messages = list(dict.fromkeys(str(warning.message) for warning in caught))
    return {**row, "status": "done", **_metric_columns(result.metrics), "warnings": messages}


def _earlier_result(pair_dir: Path, fingerprint: str) -> dict | None:
    """The metrics of an earlier run made from the same inputs and options, else None (no
    run, an unreadable file, or outputs that belong to other inputs: registered again)."""
    try:
        metrics = json.loads((pair_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    run = metrics.get("run") if isinstance(metrics, dict) else None
    return metrics if isinstance(run, dict) and run.get("fingerprint") == fingerprint else None


def _metric_columns(metrics: dict) -> dict:
    columns = {"folding_fraction": metrics["jacobian"]["folding_fraction"],
               "sd_log_jacobian": metrics["jacobian"]["sd_log_jacobian"],
               "runtime_s": metrics["run"]["total_runtime_s"]}
    if "landmarks" in metrics:
        columns["tre_before_mm"] = metrics["landmarks"]["before"]["mean"]
        columns["tre_after_mm"] = metrics["landmarks"]["after"]["mean"]
    columns["failed_checks"] = ";".join(w["check"] for w in metrics.get("warnings") or [])
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
    if isinstance(value, list):
        value = "; ".join(map(str, value))
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text
