"""Model weights and model cards shipped inside the engine package.

Each model is ``<name>.safetensors`` beside ``<name>.json`` (its model card). pip installs
and the Slicer module find the same files because they live in the package.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent


def available_models() -> list[dict]:
    """Model cards of the shipped models, sorted by name."""
    cards = []
    for card_path in sorted(MODEL_DIR.glob("*.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card.setdefault("name", card_path.stem)
        cards.append(card)
    return cards
