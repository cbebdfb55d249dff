"""Progressive training of the multilevel network (Hering et al. 2019, 2021).

Stage ``s`` trains the network of pyramid level ``L - 1 - s`` (coarsest first) with the
coarser levels frozen; a new stage's network starts from the previous one's weights. Every
stage runs ``epochs_per_level x steps_per_epoch`` Adam steps, validates after each epoch,
checkpoints every ``checkpoint_every`` steps and at its end, and can resume after a kill.
Pairs are drawn by index, so a run's data depends only on (seed, stage, step, position):
resuming or splitting the work across ranks reproduces it exactly.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..device import resolve_device
from ..errors import InputError
from ..models.card import architecture_of
from ..models.store import load_model
from ..networks import MultilevelNet
from .checkpoint import TrainingState, load_checkpoint, save_checkpoint
from .config import Config
from .distributed import (
    DistributedContext,
    average_gradients,
    broadcast_parameters,
    init_distributed,
)
from .objective import build_loss, pair_loss
from .prefetch import PairSource, pair_stream

STAGE_STRIDE = 1_000_000  # pair indices of different stages never overlap
ProgressCallback = Callable[[float, str], None]


@dataclass
class TrainingResult:
    status: str  # "finished" | "cancelled"
    output_dir: Path
    model_path: Path | None  # filled in when the trained model is exported
    validation: dict[str, float]
    wall_time_s: float


def build_model(config: Config) -> MultilevelNet:
    """The network to train: random weights from the seed (the same on every rank and run),
    or a stored model's weights when ``train.init_model`` names one (fine-tuning)."""
    torch.manual_seed(config.train.seed)
    m = config.model
    model = MultilevelNet(levels=m.levels, base_filters=m.base_filters, depth=m.depth)
    if config.train.init_model:
        load_initial_weights(model, config.train.init_model)
    return model


def load_initial_weights(model: MultilevelNet, name_or_path: str) -> None:
    """Copy a stored model's weights into ``model`` (checksum-checked safetensors, never a
    pickle); the architectures must agree, the input size may differ (the network is fully
    convolutional)."""
    stored, _ = load_model(name_or_path)
    mine, theirs = _layers(model), _layers(stored)
    if mine != theirs:
        raise InputError(name_or_path, f"train.init_model: the stored model's architecture "
                                       f"{theirs} differs from [model] {mine}")
    model.load_state_dict(stored.state_dict(), strict=True)


def _layers(model: MultilevelNet) -> dict:
    """The architecture without the active levels (training switches those on itself)."""
    return {k: v for k, v in architecture_of(model).items() if k != "active_levels"}


class Trainer:
    """Runs one training configuration; the logic class and the CLI both drive it."""

    def __init__(self, config: Config, train_source: PairSource,
                 validation_source: PairSource | None = None,
                 progress: ProgressCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.train_source, self.validation_source = train_source, validation_source
        self.progress, self.should_stop = progress, should_stop or (lambda: False)
        self.device = resolve_device(config.train.device)
        self.context: DistributedContext = init_distributed(self.device)
        if self.device.type == "cuda" and self.context.active:
            self.device = torch.device("cuda", self.context.local_rank)
        self.output_dir = Path(config.train.output_dir)
        self.model = build_model(config).to(self.device)
        self.loss = build_loss(config.loss)
        self.validation: dict[str, float] = {}

    # ------------------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> TrainingResult:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = load_checkpoint(self.output_dir) if resume else None
        state = TrainingState()
        if checkpoint is not None:
            state = TrainingState(checkpoint["stage"], checkpoint["step"],
                                  checkpoint["elapsed_s"])
        if checkpoint is not None:
            self._log({"event": "resume", "stage": state.stage, "step": state.step})
        if checkpoint is not None and state.stage >= self.config.model.levels:
            # a finished run: no stage loads the weights, so load them here (else the
            # export below would write the untrained network)
            self.model.active_levels = self.config.model.levels
            self.model.load_state_dict(checkpoint["model"])
        broadcast_parameters(self.model, self.context)
        if checkpoint is None and self.config.train.init_model:
            self.model.active_levels = 1  # the learning curve starts at the stored model
            self._validate(0, 0, self.config.loss.t_for_stage(0))
        started = time.perf_counter() - state.elapsed_s
        for stage in range(state.stage, self.config.model.levels):
            first_step = state.step if stage == state.stage else 0
            optimizer = self._enter_stage(stage, checkpoint if stage == state.stage else None,
                                          first_step)
            finished = self._train_stage(stage, first_step, optimizer, started)
            if not finished:
                return self._result("cancelled", None, started)
        return self._result("finished", None, started)

    def _enter_stage(self, stage: int, checkpoint: dict | None,
                     first_step: int) -> torch.optim.Optimizer:
        """Activate this stage's level, freeze coarser ones, build the optimiser."""
        model = self.model
        model.unfreeze()
        model.active_levels = stage + 1
        level = model.finest_active_level
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
        if stage > 0 and first_step == 0 and not self.config.train.init_model:
            model.init_from_previous(level)  # paper: finer net starts from the coarser one
        model.freeze_coarser(level)
        optimizer = torch.optim.Adam(self._trainable(), lr=self.config.train.learning_rate)
        if checkpoint is not None and first_step > 0:
            optimizer.load_state_dict(checkpoint["optimizer"])
        return optimizer

    def _train_stage(self, stage: int, first_step: int, optimizer: torch.optim.Optimizer,
                     started: float) -> bool:
        train = self.config.train
        total = train.epochs_per_level * train.steps_per_epoch
        t = self.config.loss.t_for_stage(stage)
        bar = tqdm(total=total, initial=first_step, desc=f"level {stage + 1}/"
                   f"{self.config.model.levels}", disable=not self.context.is_main,
                   dynamic_ncols=True, file=sys.stderr)
        # closing: an early stop also stops the pair workers of the unfinished stage
        with bar, closing(self._step_pairs(stage, first_step, total)) as pairs:
            for step in range(first_step, total):
                terms = self._optimizer_step(optimizer, t, next(pairs))
                bar.update(1)
                bar.set_postfix(loss=f"{terms['total']:.4f}")
                done = step + 1
                self._log({"stage": stage, "step": done, "t": t, **terms})
                self._report_progress(stage, done, total)
                if done % train.steps_per_epoch == 0:
                    self._validate(stage, done // train.steps_per_epoch, t)
                if done == total:
                    self._checkpoint(stage + 1, 0, optimizer, started)
                elif done % train.checkpoint_every == 0:
                    self._checkpoint(stage, done, optimizer, started)
                if self.should_stop():
                    self._checkpoint(stage, done, optimizer, started)
                    return False
        return True

    def _step_pairs(self, stage: int, first_step: int, total: int) -> Iterator[list[Any]]:
        """This rank's pairs of each step from ``first_step`` on, made ahead by
        ``train.pair_workers`` processes (:mod:`.prefetch`)."""
        per_step = self.config.train.pairs_per_step
        positions = self.context.my_positions(per_step)
        indices = [stage * STAGE_STRIDE + step * per_step + position
                   for step in range(first_step, total) for position in positions]
        stream = pair_stream(self.train_source, indices, self.config.train.pair_workers)
        try:
            for _ in range(first_step, total):
                yield [next(stream) for _ in positions]
        finally:
            stream.close()

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, t: float,
                        step_pairs: list[Any]) -> dict[str, float]:
        pairs = self.config.train.pairs_per_step
        sums: dict[str, float] = {}
        self.model.train()
        for pair in step_pairs:
            with self._autocast():
                total, terms = pair_loss(self.model, pair, self.loss, self.config.loss, t,
                                         self.device)
            total.backward()  # gradients sum over this rank's pairs
            for name, value in {"total": float(total.detach()), **terms}.items():
                sums[name] = sums.get(name, 0.0) + value
        average_gradients(self._trainable(), self.context, pairs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        count = max(1, len(step_pairs))
        return {name: value / count for name, value in sums.items()}

    # --------------------------------------------------------------------- helpers
    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _autocast(self):
        if self.device.type == "cuda" and self.config.train.mixed_precision:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def _validate(self, stage: int, epoch: int, t: float) -> None:
        if self.validation_source is None or not self.context.is_main:
            return
        sums: dict[str, float] = {}
        count = self.config.data.validation_pairs
        for index in range(count):
            total, terms = pair_loss(self.model, self.validation_source.pair(index), self.loss,
                                     self.config.loss, t, self.device)
            for name, value in {"total": float(total), **terms}.items():
                sums[name] = sums.get(name, 0.0) + value / count
        self.validation = sums
        self._log({"stage": stage, "epoch": epoch, "validation": sums})

    def _checkpoint(self, stage: int, step: int, optimizer: torch.optim.Optimizer,
                    started: float) -> None:
        if self.context.is_main:
            state = TrainingState(stage, step, time.perf_counter() - started)
            save_checkpoint(self.output_dir, self.model, optimizer, state)

    def _log(self, record: dict[str, Any]) -> None:
        if self.context.is_main:
            with open(self.output_dir / "train_log.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")

    def _report_progress(self, stage: int, done: int, total: int) -> None:
        if self.progress is not None and self.context.is_main:
            levels = self.config.model.levels
            self.progress((stage + done / total) / levels,
                          f"level {stage + 1}/{levels}: step {done}/{total}")

    def _result(self, status: str, model_path: Path | None, started: float) -> TrainingResult:
        return TrainingResult(status, self.output_dir, model_path, dict(self.validation),
                              time.perf_counter() - started)


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
