"""Model cards: the JSON record that describes a stored model, and its Markdown rendering.

A card says what network the weights belong to (``architecture``), what input it expects
(``input``), how it was trained (``training``: data, exact command, seed, wall time,
hardware, configuration), how well it did (``metrics``), which weights file it describes
(``sha256`` of the ``.safetensors`` file) and under which terms (``license``,
``attribution``). :mod:`.store` writes and reads cards; this module only builds, checks and
renders them.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..networks import MultilevelNet
from ..version import __version__

CARD_FORMAT = "lungdeepreg-model-card/1"
ARCHITECTURE_TYPE = "MultilevelNet"
INTENSITY = "(HU + 1024) / 4095 clipped to [0, 1]"
DEFAULT_LICENSE = "Apache-2.0"
DEFAULT_ATTRIBUTION = (
    "Network architecture after Hering et al., mlVIRNet (MICCAI 2019) and MedIA 2021. "
    "Weights trained with LungDeepReg."
)
_POSITIVE_FIELDS = ("levels", "base_filters", "depth", "image_channels")
_PADDINGS = ("border", "fill")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def architecture_of(model: MultilevelNet) -> dict[str, Any]:
    """The card's ``architecture`` entry for ``model`` (enough to rebuild it)."""
    return {
        "type": ARCHITECTURE_TYPE,
        "levels": model.num_levels,
        "base_filters": int(model.nets[0].head.in_channels),
        "depth": int(model.nets[0].depth),
        "image_channels": int(model.image_channels),
        "padding": model.padding,
        "active_levels": model.active_levels,
    }


def check_architecture(architecture: object, source: str | Path | None) -> dict[str, Any]:
    """Validate an ``architecture`` entry; return it complete (defaults filled in)."""
    if not isinstance(architecture, dict):
        raise InputError(source, "model card has no 'architecture' object")
    if architecture.get("type") != ARCHITECTURE_TYPE:
        raise InputError(source, f"architecture type {architecture.get('type')!r} is not "
                                 f"supported (expected {ARCHITECTURE_TYPE!r})")
    checked: dict[str, Any] = {"type": ARCHITECTURE_TYPE}
    for field in _POSITIVE_FIELDS:
        value = architecture.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(source, f"architecture.{field} must be a positive integer, "
                                     f"found {value!r}")
        checked[field] = value
    checked["padding"] = architecture.get("padding", "border")
    if checked["padding"] not in _PADDINGS:
        raise InputError(source, f"architecture.padding must be one of {_PADDINGS}, "
                                 f"found {checked['padding']!r}")
    active = architecture.get("active_levels", checked["levels"])
    if isinstance(active, bool) or not isinstance(active, int) \
            or not 1 <= active <= checked["levels"]:
        raise InputError(source, f"architecture.active_levels must be in "
                                 f"1..{checked['levels']}, found {active!r}")
    checked["active_levels"] = active
    return checked


def build_network(architecture: dict[str, Any]) -> MultilevelNet:
    """A fresh :class:`MultilevelNet` for a checked ``architecture`` entry."""
    model = MultilevelNet(
        levels=architecture["levels"],
        base_filters=architecture["base_filters"],
        depth=architecture["depth"],
        image_channels=architecture["image_channels"],
        padding=architecture["padding"],
    )
    model.active_levels = architecture["active_levels"]
    return model


def complete_card(card: dict[str, Any], name: str, architecture: dict[str, Any]) -> dict:
    """A full card from the caller's partial ``card``: name, architecture and defaults set.

    ``sha256`` is left ``None`` for the writer to fill in. A ``name`` or an architecture
    field in ``card`` that contradicts the model being saved is a programming error; the
    architecture written is always the model's own (:func:`architecture_of`).
    """
    given = copy.deepcopy(card)
    if given.get("name", name) != name:
        raise ValueError(f"card name {given['name']!r} differs from the model name {name!r}")
    stated = given.get("architecture") or {}
    clashes = {k: v for k, v in stated.items() if architecture.get(k, v) != v}
    if clashes:  # only the fields the caller states are compared
        raise ValueError(f"card architecture {clashes} differs from the model's "
                         f"{architecture}")
    full: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": name,
        "version": str(given.pop("version", "1")),
        "description": given.pop("description", ""),
        "architecture": architecture,
        "input": {"intensity": INTENSITY, **given.pop("input", {})},
        "training": given.pop("training", {}),
        "metrics": given.pop("metrics", {}),
        "sha256": None,
        "created": given.pop("created", datetime.date.today().isoformat()),
        "engine_version": given.pop("engine_version", __version__),
        "license": given.pop("license", DEFAULT_LICENSE),
        "attribution": given.pop("attribution", DEFAULT_ATTRIBUTION),
    }
    for key in ("format", "name", "architecture", "sha256"):
        given.pop(key, None)
    full.update(given)  # anything else the caller recorded is kept as is
    return full


def check_card(card: object, source: str | Path) -> dict[str, Any]:
    """Validate a card read from ``source``; return it with its architecture completed."""
    if not isinstance(card, dict):
        raise InputError(source, "model card must be a JSON object")
    digest = card.get("sha256")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise InputError(source, f"model card needs 'sha256' (64 lower-case hex digits), "
                                 f"found {digest!r}")
    return {**card, "architecture": check_architecture(card.get("architecture"), source)}


# ---------------------------------------------------------------------------- Markdown
def _cell(value: object) -> str:
    """A value as one Markdown table cell."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested metric dicts as ``(dotted.name, value)`` rows."""
    rows: list[tuple[str, object]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _wall_time(seconds: object) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "not recorded"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d} (h:mm:ss, {seconds} s)"


def _summary(card: dict) -> list[str]:
    arch = card.get("architecture", {})
    inp = card.get("input", {})
    size = inp.get("size_xyz")
    rows = [
        ("Architecture", f"{arch.get('type')}: {arch.get('levels')} levels, "
                         f"{arch.get('base_filters')} base filters, U-Net depth "
                         f"{arch.get('depth')}, {arch.get('image_channels')} image channel(s), "
                         f"{arch.get('padding', 'border')} padding"),
        ("Input size (x, y, z)", " x ".join(map(str, size)) if size else "not recorded"),
        ("Intensity", inp.get("intensity", INTENSITY)),
        ("Crop", inp.get("crop", "not recorded")),
        ("Created", card.get("created", "not recorded")),
        ("Engine version", card.get("engine_version", "not recorded")),
        ("SHA-256 of weights", f"`{card.get('sha256')}`"),
    ]
    return ["| Field | Value |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows)]


def _training(training: dict) -> list[str]:
    lines = [
        f"- Data: {_cell(training.get('data', 'not recorded'))}",
        f"- Seed: {_cell(training.get('seed', 'not recorded'))}",
        f"- Wall time: {_wall_time(training.get('wall_time_s'))}",
        f"- Hardware: {_cell(training.get('hardware', 'not recorded'))}",
        "", "Command:", "", "```", str(training.get("command", "not recorded")), "```",
    ]
    if training.get("config"):
        lines += ["", "Configuration:", "", "```json",
                  json.dumps(training["config"], indent=2), "```"]
    return lines


def _metrics(metrics: dict) -> list[str]:
    rows = _flatten(metrics)
    if not rows:
        return ["No metrics recorded."]
    return ["| Metric | Value |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows)]


def render_card_markdown(card: dict[str, Any]) -> str:
    """The human-readable ``<name>.md`` for a card (generated; edit the JSON instead)."""
    lines = [f"# Model `{card.get('name')}` (version {card.get('version', '?')})", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    lines += ["<!-- generated from the JSON model card; do not edit by hand -->", ""]
    lines += _summary(card) + ["", "## Training", ""] + _training(card.get("training", {}))
    lines += ["", "## Metrics", ""] + _metrics(card.get("metrics", {}))
    if card.get("refinement"):  # pipeline settings measured for this model
        lines += ["", "## Refinement", "", "| Setting | Value |", "|---|---|",
                  *(f"| {k} | {_cell(v)} |" for k, v in _flatten(card["refinement"]))]
    lines += ["", "## License and attribution", "",
              f"License: {card.get('license', 'not recorded')}", "",
              str(card.get("attribution", "")), ""]
    return "\n".join(lines)
