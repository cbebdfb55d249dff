"""Tiny training configurations for tests: real runs of a few steps on a 24x20x24 lung crop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_MODEL = {"levels": 2, "base_filters": 4, "depth": 2, "input_size": [24, 20, 24]}


def tiny_config_text(data: dict[str, Any], train: dict[str, Any]) -> str:
    """TOML of the tiny model with these ``[data]`` and ``[train]`` entries."""
    lines: list[str] = []
    for section, entries in {"model": TINY_MODEL, "data": data, "train": train}.items():
        lines.append(f"[{section}]")
        # JSON strings, numbers, booleans and lists are TOML values too
        lines += [f"{key} = {json.dumps(_plain(value))}" for key, value in entries.items()]
        lines.append("")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
