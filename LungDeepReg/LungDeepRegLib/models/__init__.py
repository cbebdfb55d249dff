"""Model weights and model cards shipped inside the engine package.

Each model is ``<name>.safetensors`` beside ``<name>.json`` (its model card) and
``<name>.md`` (the card rendered for people). pip installs and the Slicer module find the
same files because they live in the package. :mod:`.store` saves and loads models;
:mod:`.card` builds, checks and renders cards.
"""

from __future__ import annotations

import json

from .card import INTENSITY, architecture_of, build_network, render_card_markdown
from .store import (
    MODEL_DIR,
    ModelFiles,
    file_sha256,
    load_model,
    model_card,
    model_names,
    read_header,
    resolve_model,
    save_model,
    verify_checksum,
)

__all__ = [
    "INTENSITY", "MODEL_DIR", "ModelFiles", "architecture_of", "available_models",
    "build_network", "file_sha256", "load_model", "model_card", "model_names", "read_header",
    "render_card_markdown", "resolve_model", "save_model", "verify_checksum",
]


def available_models() -> list[dict]:
    """Model cards of the shipped models, sorted by name."""
    cards = []
    for card_path in sorted(MODEL_DIR.glob("*.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card.setdefault("name", card_path.stem)
        cards.append(card)
    return cards
