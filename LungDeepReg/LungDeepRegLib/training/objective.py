"""The training objective for one pair: the paper's unsupervised loss, optionally plus
supervision by a known field.

    L = D_NGF + alpha R_curv + beta B_mask + gamma V_vcc(t) + delta K_kp   (Hering 2021, Eq. 5)
        + w_sup * EPE(u, u_true)                                           (synthetic pairs)

Pairs are duck-typed: ``fixed``, ``moving`` ((1, 1, z, y, x), intensities in [0, 1]) and
``grid`` are required; ``field`` (known fixed-to-moving displacement), ``fixed_mask``,
``fixed_labels`` and ``moving_labels`` (0 background, 1.. lungs or lobes), ``fixed_points`` and
``moving_points`` ((P, 3) LPS mm keypoints) are used when present.
"""

from __future__ import annotations

from typing import Any

import torch

from ..losses import RegistrationLoss, endpoint_error, one_hot
from ..spatial import warp
from .config import LossConfig

NUM_LABELS = 6  # background + up to 5 lobes (left/right lungs use 1 and 2)


def build_loss(config: LossConfig) -> RegistrationLoss:
    weights = config.weights.with_similarity(config.similarity, weight=config.weights.ngf)
    epsilon = None if config.ngf_epsilon == "auto" else float(config.ngf_epsilon)
    return RegistrationLoss(weights, ngf_epsilon=epsilon)


def pair_loss(model: torch.nn.Module, pair: Any, loss: RegistrationLoss, config: LossConfig,
              t: float, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of one pair and its unweighted terms (for the log)."""
    fixed, moving = pair.fixed.to(device), pair.moving.to(device)
    grid = pair.grid
    field = model(fixed, moving, grid)
    warped = warp(moving, grid, field, grid, fill=0.0)  # 0 = -1024 HU after scaling
    mask = _optional(pair, "fixed_mask", device)
    fixed_lobes = warped_lobes = None
    fixed_labels = _optional(pair, "fixed_labels", device)
    moving_labels = _optional(pair, "moving_labels", device)
    if fixed_labels is not None and moving_labels is not None and config.weights.mask > 0:
        fixed_lobes = one_hot(fixed_labels.long(), NUM_LABELS, background=False)
        moving_lobes = one_hot(moving_labels.long(), NUM_LABELS, background=False)
        warped_lobes = warp(moving_lobes, grid, field, grid)  # linear, as in the paper
    points = {}
    if getattr(pair, "fixed_points", None) is not None and config.weights.keypoints > 0:
        points = {"fixed_points": pair.fixed_points.to(device)[None],
                  "moving_points": pair.moving_points.to(device)[None]}
    total, terms = loss(fixed=fixed, warped=warped, field=field, grid=grid, t=t,
                        fixed_mask=mask, fixed_lobes=fixed_lobes, warped_lobes=warped_lobes,
                        **points)
    target = _optional(pair, "field", device)
    if target is not None and config.supervised > 0:
        epe = endpoint_error(field, target, mask=mask)
        total = total + config.supervised * epe
        terms["endpoint_error"] = epe
    return total, {name: float(value.detach()) for name, value in terms.items()}


def _optional(pair: Any, name: str, device: torch.device) -> torch.Tensor | None:
    value = getattr(pair, name, None)
    if value is None:
        return None
    value = value.to(device=device, dtype=torch.float32)
    return value if value.dim() == 5 else value.reshape(1, 1, *value.shape[-3:])
