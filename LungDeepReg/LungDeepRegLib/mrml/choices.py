"""The model choices the Slicer widget offers, and the model card it shows for each.

The list and the cards come from the engine's model store (``models.store``), which needs
torch; before torch is installed, or when it is installed but does not load (a missing DLL
raises OSError, not ImportError), the widget still offers "auto" and "none", and the card
area says what is wrong and how to fix it. Importable without torch (the store is imported
inside), so the panel always builds.
"""

from __future__ import annotations

from ..errors import InputError
from .dependencies import torch_problem_message

AUTO, NONE = "auto", "none"
NO_TORCH = "Model cards are shown once PyTorch is installed (Apply offers to install it)."
NO_NETWORK = "No network: instance optimisation alone (slower; no model needed)."


def model_choices() -> list[tuple[str, str]]:
    """``(label, value)`` pairs; ``value`` is what ``--model`` takes."""
    try:
        from ..models.store import model_names

        names = model_names()
    except Exception:  # torch missing or broken: model_card_text says which
        names = []
    return [("auto (default model)", AUTO), *((name, name) for name in names),
            ("none (instance optimisation only)", NONE)]


def model_card_text(value: str) -> str:
    """The Markdown model card of a choice (a name, a path, ``auto`` or ``none``)."""
    if value == NONE:
        return NO_NETWORK
    try:
        from ..models.store import resolve_model
        from ..pipeline.register import DEFAULT_MODEL
    except Exception as error:  # missing, or broken (OSError): say which and what to do
        return engine_import_problem(error)
    try:
        files = resolve_model(DEFAULT_MODEL if value == AUTO else value)
        return files.markdown.read_text(encoding="utf-8")
    except (InputError, OSError) as error:  # a trained model without its card, say
        return f"No model card: {error}"


def engine_import_problem(error: BaseException) -> str:
    """What the card area says when the engine's model store does not import."""
    if isinstance(error, ModuleNotFoundError):
        if error.name == "torch":
            return NO_TORCH
        return f"Model cards need the Python package {error.name}: Apply offers to install it."
    return torch_problem_message(f"{type(error).__name__}: {error}")
