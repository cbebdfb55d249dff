"""The inner loop of :mod:`.refine`: one pyramid level of instance optimisation.

A level holds the fixed and moving images (and optional lung mask and one-hot labels)
downsampled from the crop grid by the Gaussian pyramid of the networks
(:func:`~LungDeepRegLib.networks.pyramid.downsample`), and its parameter is the
displacement field on the level grid (mm). Adam minimises the training loss of Hering et al.
(2021, MedIA) on it, each update smoothed before it is applied (see :mod:`.refine`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..device import intra_op_threads
from ..losses import RegistrationLoss, mind_ssc, ngf_edge_parameter, one_hot
from ..networks.pyramid import downsample, gaussian_smooth
from ..spatial import Grid, warp
from .adam import Adam
from .refine_config import RefineConfig

ProgressCallback = Callable[[float, str], None]
StopCallback = Callable[[], bool]
REPORT_EVERY = 10  # steps between progress reports
# Levels up to this many voxels (48x40x48 is 92 160) run on one CPU thread. Their steps are
# hundreds of tiny kernels, and with OpenMP threads that sleep at barriers
# (OMP_WAIT_POLICY=PASSIVE, see LungDeepRegLib/__init__.py) each kernel paid a wake-up:
# on 2 idle cores 34 and 102 ms per step at 24x20x24 and 48x40x48 on two threads, 16 and
# 60 ms on one (and 15/70 against 11/52 ms with the other core busy).
ONE_THREAD_MAX_VOXELS = 200_000
# Adam's epsilon (Kingma & Ba 2015, Algorithm 1): the common 1e-8. A larger one damps the
# steps where the loss is flat (past the moving field of view) and removed most residual
# folding on the tuning data, but cost accuracy on 6 of 8 tuning cases: mean TRE 0.660 (1e-8),
# 0.677 (1e-7), 0.730 mm (3e-7) (Testing/benchmark/ablate_adam_eps.py, results/adam_eps.md).
ADAM_EPS = 1e-8


def sub_progress(progress: ProgressCallback | None, begin: float, end: float
                 ) -> ProgressCallback | None:
    """Map a part's own 0..1 progress onto ``[begin, end]`` of the whole."""
    if progress is None:
        return None
    return lambda fraction, message: progress(begin + (end - begin) * fraction, message)


@dataclass
class Level:
    """Images of one pyramid level, all on ``grid``."""

    grid: Grid
    fixed: torch.Tensor
    moving: torch.Tensor
    mask: torch.Tensor | None
    fixed_onehot: torch.Tensor | None
    moving_onehot: torch.Tensor | None
    # the moving image outside its grid: air (0) for intensities, the descriptor of a flat
    # region (all channels 1) for MIND-SSC
    outside: float = 0.0


def check_inputs(grid: Grid, **tensors: torch.Tensor | None) -> None:
    """Raise ``ValueError`` unless every given tensor is ``(1, C, *grid.shape)``, with
    C = 3 for ``initial_field`` and 1 for the images, mask and label maps."""
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        channels = 3 if name == "initial_field" else 1
        if tensor.dim() != 5 or tuple(tensor.shape) != (1, channels, *grid.shape):
            raise ValueError(f"{name} must be (1, {channels}, {', '.join(map(str, grid.shape))})"
                             f", got {tuple(tensor.shape)}")


def one_hot_pair(fixed_labels: torch.Tensor | None, moving_labels: torch.Tensor | None,
                 config: RefineConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One-hot label maps without background (as in training), or None if unused."""
    if fixed_labels is None or moving_labels is None or config.weights.mask <= 0:
        return None
    classes = int(max(fixed_labels.max(), moving_labels.max())) + 1
    if classes < 2:
        return None
    return (one_hot(fixed_labels.long(), classes, background=False),
            one_hot(moving_labels.long(), classes, background=False))


def input_level(fixed: torch.Tensor, moving: torch.Tensor, grid: Grid,
                mask: torch.Tensor | None, labels: tuple[torch.Tensor, torch.Tensor] | None
                ) -> Level:
    """The inputs as the level on ``grid`` (the source of the pyramid).

    Copies: tensors made under ``torch.inference_mode`` (a network's output, its inputs)
    cannot take part in autograd, and the copies made outside it can.
    """
    def copy(image: torch.Tensor | None) -> torch.Tensor | None:
        return None if image is None else image.to(fixed.dtype).clone()

    onehots = (None, None) if labels is None else labels
    return Level(grid, copy(fixed), copy(moving), copy(mask), *map(copy, onehots))


def make_level(source: Level, target: Grid) -> Level:
    """``source`` smoothed and resampled onto ``target`` (Gaussian pyramid step).

    Each level is made from the next finer one, not from the input crop: smoothing the
    192x160x192 input for every level cost more than all coarse-level steps together, and
    Gaussian blurs compound to almost exactly the blur of one direct step.
    """
    def down(image: torch.Tensor | None) -> torch.Tensor | None:
        return None if image is None else downsample(image, source.grid, target)

    return Level(target, down(source.fixed), down(source.moving), down(source.mask),
                 down(source.fixed_onehot), down(source.moving_onehot))


def with_features(level: Level, features: str) -> Level:
    """The level with its images replaced by what the similarity compares.

    MIND-SSC descriptors are made from each level's own (smoothed, resampled) images, so
    their patches and neighbours scale with the level's voxels; the moving descriptor is
    then warped at every step instead of recomputed (as ConvexAdam does: one descriptor per
    level, and the warp of 12 channels costs less than the descriptor of a warped image).
    """
    if features == "intensity":
        return level
    with torch.no_grad():
        return replace(level, fixed=mind_ssc(level.fixed), moving=mind_ssc(level.moving),
                       outside=1.0)


class Budget:
    """Progress as the fraction of the planned work (steps weighted by voxels) done."""

    def __init__(self, grids: list[Grid], steps: list[int],
                 callback: ProgressCallback | None) -> None:
        costs = [float(np.prod(g.size)) * n for g, n in zip(grids, steps, strict=True)]
        self.voxels = [float(np.prod(g.size)) for g in grids]
        self.total = max(sum(costs), 1.0)
        self.done_before = np.concatenate(([0.0], np.cumsum(costs)))
        self.callback, self.levels = callback, len(grids)

    def report(self, level: int, step: int, loss: float) -> None:
        if self.callback is None:
            return
        fraction = (self.done_before[level] + self.voxels[level] * step) / self.total
        self.callback(min(float(fraction), 1.0),
                      f"refinement level {level + 1}/{self.levels}, step {step}, "
                      f"loss {loss:.4f}")


def _level_objective(level: Level, field: torch.Tensor, config: RefineConfig
                     ) -> RegistrationLoss:
    """The training loss with the automatic NGF edge parameter fixed for the level.

    :func:`ngf_edge_parameter` (Haber & Modersitzki's choice relative to the mean gradient
    magnitude) is taken once, from the fixed image and the moving image warped by the
    level's starting field: recomputing it every step costs about 40 % of a step on the
    CPU and barely changes it (the warped image's gradient statistics move little).
    """
    if config.weights.ngf <= 0:
        return RegistrationLoss(config.weights)
    with torch.no_grad():
        warped = warp(level.moving, level.grid, field, level.grid, fill=level.outside)
        edge = float(ngf_edge_parameter(level.fixed, warped, level.grid)[0])
    return RegistrationLoss(config.weights, ngf_epsilon=edge)


def optimise_level(level: Level, field: torch.Tensor, config: RefineConfig,
                   lr: float, steps: int, budget: Budget, index: int,
                   should_stop: StopCallback | None
                   ) -> tuple[torch.Tensor, list[float], bool]:
    """Adam on the level's displacement field; returns (field, loss per step, cancelled)."""
    small = field.device.type == "cpu" and np.prod(level.grid.size) <= ONE_THREAD_MAX_VOXELS
    with intra_op_threads(1 if small else torch.get_num_threads()):
        return _adam_steps(level, field, config, lr, steps, budget, index, should_stop)


def _adam_steps(level: Level, field: torch.Tensor, config: RefineConfig,
                lr: float, steps: int, budget: Budget, index: int,
                should_stop: StopCallback | None
                ) -> tuple[torch.Tensor, list[float], bool]:
    loss = _level_objective(level, field, config)
    parameter = field.detach().clone().requires_grad_(True)
    optimiser = Adam(parameter, lr=lr, eps=ADAM_EPS)
    sigma = (config.update_sigma,) * 3
    history: list[float] = []
    for step in range(steps):
        if should_stop is not None and should_stop():
            return parameter.detach(), history, True
        optimiser.zero_grad()
        value = _level_loss(level, parameter, loss, config)
        value.backward()
        before = parameter.detach().clone()
        optimiser.step()
        if config.update_sigma > 0:
            with torch.no_grad():  # apply the smoothed update instead of Adam's raw one
                parameter.copy_(before + gaussian_smooth(parameter - before, sigma))
        history.append(float(value.detach()))
        if step % REPORT_EVERY == 0:
            budget.report(index, step, history[-1])
        if _converged(history, config):
            break
    return parameter.detach(), history, False


def _level_loss(level: Level, field: torch.Tensor, loss: RegistrationLoss,
                config: RefineConfig) -> torch.Tensor:
    # air (-1024 HU, 0) outside the moving crop, exactly as in training
    warped = warp(level.moving, level.grid, field, level.grid, fill=level.outside)
    warped_lobes = None
    if level.moving_onehot is not None:
        warped_lobes = warp(level.moving_onehot, level.grid, field, level.grid)
    total, _ = loss(fixed=level.fixed, warped=warped, field=field, grid=level.grid,
                    t=config.t, fixed_mask=level.mask, fixed_lobes=level.fixed_onehot,
                    warped_lobes=warped_lobes)
    return total


def _converged(history: list[float], config: RefineConfig) -> bool:
    """Best loss of the last ``window`` steps within ``tolerance`` of the best before."""
    window = config.window
    if config.tolerance <= 0 or len(history) <= 2 * window:
        return False
    before = min(history[:-window])
    recent = min(history[-window:])
    return before - recent < config.tolerance * abs(before)
