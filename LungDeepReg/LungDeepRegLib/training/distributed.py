"""Data-parallel training with torch.distributed, started by ``torchrun`` without code changes.

Every optimiser step consumes ``pairs_per_step`` pairs; rank ``r`` of ``W`` takes the pairs
whose position in the step is ``r, r + W, ...`` (disjoint shards). Gradients are summed
locally, all-reduced and divided so that every rank holds the gradient of the mean loss over
all pairs of the step: exactly what one process computes on the union of the shards. This is
DistributedDataParallel's averaging, done explicitly because the multilevel network changes
its trainable parameters between levels (frozen coarse levels, inactive fine ones), which
DDP's bucketing does not allow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def my_positions(self, pairs_per_step: int) -> list[int]:
        """Positions within a step that this rank computes."""
        return list(range(self.rank, pairs_per_step, self.world_size))


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(),
                              int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_parameters(module: torch.nn.Module, context: DistributedContext) -> None:
    """Start every rank from rank 0's weights."""
    if context.active:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(parameters: list[torch.nn.Parameter], context: DistributedContext,
                      pairs_per_step: int) -> None:
    """Turn locally summed per-pair gradients into the gradient of the mean over the step."""
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        if context.active:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
        parameter.grad.div_(pairs_per_step)


def shutdown(context: DistributedContext) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()
