"""Multilevel registration network (Hering et al., mlVIRNet 2019; MedIA 2021).

One :class:`~.unet.UNet` per pyramid level. Coarsest first, each level sees its fixed image
``F_l`` and its moving image ``M_l`` warped by the field composed so far, predicts an
increment ``u_l`` and composes it with that field. The paper writes the result
``y = y_1 o y_2 o ... o y_L``; with our fixed-to-moving maps ``T(x) = x + u(x)`` the finest
increment acts first on a fixed point, so in displacements, level by level,

    u = u_l + u_coarser o (id + u_l)          (spatial.flow.compose(first=u_coarser, second=u_l))

which differs from the plain sum ``u_l + u_coarser`` whenever the motion is large compared
with the scale on which ``u_coarser`` varies (lung motion: tens of mm).

Level numbering: ``level = 0`` is the finest (the network grid itself), ``level = L - 1`` the
coarsest; the paper's ``l`` is ``level + 1``. ``nets[level]`` is that level's U-Net.

Progressive training (paper Sec. 2.4): train the coarsest network alone, then switch on the
next finer one, initialised from the coarser one's weights, while the coarser ones stay
frozen. :attr:`MultilevelNet.active_levels` counts the active levels from the coarsest;
:meth:`MultilevelNet.grow` does the whole step. Whatever is active, :meth:`forward` returns
the composed field on the full-resolution grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..spatial import Grid, compose, mapped_points, resample_field, sample
from ..spatial.sampling import Padding
from .pyramid import downsample, level_grid
from .unet import UNet, voxels_to_mm


@dataclass
class LevelOutput:
    """What one active level saw and produced (everything on ``grid``, mm for fields)."""

    level: int
    grid: Grid
    fixed: torch.Tensor  # F_l
    moving: torch.Tensor  # M_l
    warped: torch.Tensor  # M_l warped by the coarser levels' composed field (network input)
    increment: torch.Tensor  # u_l predicted by nets[level]
    field: torch.Tensor  # composed field after this level: u_l + u_coarser o (id + u_l)


@dataclass
class MultilevelOutput:
    """Result of :meth:`MultilevelNet.forward_levels`."""

    field: torch.Tensor  # composed field of the finest active level, on the input grid
    levels: list[LevelOutput]  # active levels, coarsest first


class MultilevelNet(nn.Module):
    """Pyramid of U-Nets whose increments are composed coarse to fine.

    Args:
        levels: pyramid levels ``L`` (paper: 3); level ``k`` is downsampled by ``2^k``.
        base_filters: filters of each U-Net at its full resolution (paper: 16).
        depth: resolution levels of each U-Net (paper: 3).
        image_channels: channels of each of the fixed and moving images.
        final_init_std: initial weight scale of each U-Net's output layer (0: identity).
        padding: how the moving image is continued outside its grid when warped for the
            next level: ``"border"`` (default; a lung crop ends in tissue, and zeros would
            create a spurious edge) or ``"fill"`` with 0.
    """

    def __init__(
        self,
        levels: int = 3,
        base_filters: int = 16,
        depth: int = 3,
        image_channels: int = 1,
        final_init_std: float = 0.0,
        padding: Padding = "border",
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.nets = nn.ModuleList(
            UNet(2 * image_channels, base_filters, depth, final_init_std=final_init_std)
            for _ in range(levels)
        )
        self.image_channels = image_channels
        self.padding: Padding = padding
        self._active_levels = levels
        self._frozen: set[int] = set()

    # ------------------------------------------------------------- progressive training
    @property
    def num_levels(self) -> int:
        return len(self.nets)

    @property
    def active_levels(self) -> int:
        """Number of active levels counted from the coarsest (``1..num_levels``)."""
        return self._active_levels

    @active_levels.setter
    def active_levels(self, count: int) -> None:
        if not 1 <= count <= self.num_levels:
            raise ValueError(f"active_levels must be in 1..{self.num_levels}, got {count}")
        self._active_levels = int(count)

    @property
    def finest_active_level(self) -> int:
        return self.num_levels - self._active_levels

    @property
    def frozen_levels(self) -> frozenset[int]:
        return frozenset(self._frozen)

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in 0..{self.num_levels - 1}, got {level}")

    def freeze_level(self, level: int) -> None:
        """Stop training ``nets[level]``: no gradients, eval mode (kept through ``train()``)."""
        self._check_level(level)
        self._frozen.add(level)
        self.nets[level].requires_grad_(False)
        self.nets[level].eval()

    def freeze_coarser(self, level: int) -> None:
        """Freeze every level coarser than ``level`` (``level + 1 .. L - 1``)."""
        self._check_level(level)
        for coarser in range(level + 1, self.num_levels):
            self.freeze_level(coarser)

    def unfreeze(self, level: int | None = None) -> None:
        """Make ``level`` (default: every level) trainable again."""
        for k in range(self.num_levels) if level is None else (level,):
            self._check_level(k)
            self._frozen.discard(k)
            self.nets[k].requires_grad_(True)
            self.nets[k].train(self.training)

    def init_from_previous(self, level: int) -> None:
        """Copy the weights of the next coarser network into ``nets[level]`` (paper: each
        finer network starts from the previous one). The copies are independent tensors."""
        self._check_level(level)
        if level + 1 >= self.num_levels:
            raise ValueError(f"level {level} is the coarsest: there is no previous network")
        self.nets[level].load_state_dict(self.nets[level + 1].state_dict())

    def grow(self, init: bool = True, freeze: bool = True) -> int:
        """Switch on the next finer level; optionally initialise it from the coarser one and
        freeze all coarser levels. Returns the new finest active level."""
        self.active_levels = self._active_levels + 1
        level = self.finest_active_level
        if init:
            self.init_from_previous(level)
        if freeze:
            self.freeze_coarser(level)
        return level

    def train(self, mode: bool = True) -> MultilevelNet:
        super().train(mode)
        for level in self._frozen:  # frozen levels stay in eval mode
            self.nets[level].eval()
        return self

    # ------------------------------------------------------------------ registration
    def level_grids(self, grid: Grid) -> list[Grid]:
        """Grids of all levels, finest (``grid`` itself) first; all share one extent."""
        return [level_grid(grid, level) for level in range(self.num_levels)]

    def increment(
        self, level: int, fixed: torch.Tensor, warped: torch.Tensor, grid: Grid
    ) -> torch.Tensor:
        """``u_l`` in mm on ``grid`` from the level's fixed and warped moving images."""
        # a frozen level whose inputs carry no gradient needs no autograd graph: saves the
        # memory of its activations while the finer level trains
        skip_graph = level in self._frozen and not (fixed.requires_grad or warped.requires_grad)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not skip_graph):
            raw = self.nets[level](torch.cat((fixed, warped), dim=1))
        return voxels_to_mm(raw, grid)

    def forward_levels(
        self, fixed: torch.Tensor, moving: torch.Tensor, grid: Grid
    ) -> MultilevelOutput:
        """Run the active levels coarse to fine, keeping every level's inputs and fields.

        Args:
            fixed, moving: ``(N, image_channels, z, y, x)`` on ``grid``, intensities ~[0, 1].
            grid: the network grid both images are sampled on.
        """
        expected = (self.image_channels, *grid.shape)
        for name, image in (("fixed", fixed), ("moving", moving)):
            if image.dim() != 5 or tuple(image.shape[1:]) != expected:
                raise ValueError(f"{name} must be (N, {', '.join(map(str, expected))}), "
                                 f"got {tuple(image.shape)}")
        if fixed.shape[0] != moving.shape[0]:
            raise ValueError("fixed and moving must have the same batch size")
        dtype = self.nets[0].head.weight.dtype
        fixed, moving = fixed.to(dtype), moving.to(dtype)
        grids = self.level_grids(grid)

        outputs: list[LevelOutput] = []
        field: torch.Tensor | None = None
        field_grid = grid
        for level in range(self.num_levels - 1, self.finest_active_level - 1, -1):
            g = grids[level]
            fixed_l = downsample(fixed, grid, g)
            moving_l = downsample(moving, grid, g)
            if field is None:
                warped = moving_l
            else:
                current = resample_field(field, field_grid, g)
                warped = sample(moving_l, g, mapped_points(current, g), padding=self.padding)
            u_l = self.increment(level, fixed_l, warped, g)
            # compose with the coarser field on its own grid: one interpolation, not two
            field = u_l if field is None else compose(field, u_l, g, first_grid=field_grid)
            field_grid = g
            outputs.append(LevelOutput(level, g, fixed_l, moving_l, warped, u_l, field))

        assert field is not None  # at least one level is always active
        if field_grid is not grid:
            field = resample_field(field, field_grid, grid)
        return MultilevelOutput(field.float(), outputs)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Displacement ``(N, 3, z, y, x)`` in LPS mm on ``grid``: ``W(x) = M(x + u(x))``."""
        return self.forward_levels(fixed, moving, grid).field
