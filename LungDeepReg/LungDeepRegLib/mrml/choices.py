"""The model choices the Slicer widget offers, and the model card it shows for each.

The list and the cards come from the engine's model store (``models.store``), which needs
torch; before torch is installed the widget still offers "auto" and "none", and the card
area says how to get the rest. Importable without torch (the store is imported inside).
"""

from __future__ import annotations

from ..errors import InputError

AUTO, NONE = "auto", "none"
NO_TORCH = "Model cards are shown once PyTorch is installed (Apply offers to install it)."
NO_NETWORK = "No network: instance optimisation alone (slower; no model needed)."


def model_choices() -> list[tuple[str, str]]:
    """``(label, value)`` pairs; ``value`` is what ``--model`` takes."""
    try:
        from ..models.store import model_names
    except ImportError:  # torch is not installed yet
        names = []
    else:
        names = model_names()
    return [("auto (default model)", AUTO), *((name, name) for name in names),
            ("none (instance optimisation only)", NONE)]


def model_card_text(value: str) -> str:
    """The Markdown model card of a choice (a name, a path, ``auto`` or ``none``)."""
    if value == NONE:
        return NO_NETWORK
    try:
        from ..models.store import resolve_model
        from ..pipeline.register import DEFAULT_MODEL
    except ImportError:
        return NO_TORCH
    try:
        files = resolve_model(DEFAULT_MODEL if value == AUTO else value)
        return files.markdown.read_text(encoding="utf-8")
    except (InputError, OSError) as error:  # a trained model without its card, say
        return f"No model card: {error}"
