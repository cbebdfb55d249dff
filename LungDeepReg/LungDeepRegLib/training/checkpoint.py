"""Training checkpoints: written atomically, loaded without unpickling arbitrary objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..io.atomic import atomic_output

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainingState:
    """Where a run stands: the stage (0 = coarsest level only) and the steps done in it."""

    stage: int = 0
    step: int = 0  # optimiser steps completed in this stage
    elapsed_s: float = 0.0  # training wall time before this process started


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainingState) -> Path:
    """Write ``checkpoint.pt`` atomically: a kill leaves the previous one intact."""
    path = Path(directory) / CHECKPOINT_NAME
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "stage": state.stage, "step": state.step, "elapsed_s": state.elapsed_s}
    with atomic_output(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_checkpoint(directory: Path) -> dict | None:
    """The last checkpoint in ``directory`` (tensors and plain values only), or None."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
