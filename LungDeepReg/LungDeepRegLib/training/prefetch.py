"""Training pairs made ahead, in worker processes, in the order the trainer asks for them.

A synthetic pair costs far more than the optimiser step it feeds when the step runs on a
GPU: on two CPU threads one pair took 1.4-1.7 s at 128x112x128 (mostly ``grid_sample`` in
the field inversion and warps) and 7.0 s at 192x160x192 (session 13). The trainer
knows in advance which pair indices each step uses (pairs depend on their index alone), so
``train.pair_workers`` processes can make them while the GPU trains; each worker uses one
CPU thread (PyTorch's ``DataLoader`` default) and the pairs come back through shared memory.
With 0 workers the trainer makes each pair itself when it needs it, as before.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from torch.utils.data import DataLoader, Dataset

PREFETCHED_PER_WORKER = 2  # pairs each worker keeps ready (DataLoader.prefetch_factor)


class PairSource(Protocol):
    def pair(self, index: int) -> Any: ...


class _ByIndex(Dataset):
    """``source.pair`` as a map-style dataset (the sampler gives the pair indices)."""

    def __init__(self, source: PairSource) -> None:
        self.source = source

    def __getitem__(self, index: int) -> Any:
        return self.source.pair(index)


def _start_method() -> str | None:
    """Fork where there is one: workers then share the cropped CTs, and the distance maps
    that a crop cache brought (:func:`LungDeepRegLib.data.fields.remember_outside_distance`),
    without copies, and need no SimpleITK to remake them (Python 3.14 no longer forks by
    default)."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def _unchanged(pair: Any) -> Any:
    return pair  # a pair is not collated into a batch: the loss takes it as it is


def pair_stream(source: PairSource, indices: Sequence[int], workers: int = 0) -> Iterator[Any]:
    """``source.pair(i)`` for each of ``indices`` in order; made by ``workers`` processes
    ahead of use when ``workers > 0``. Close the iterator to stop the workers early."""
    if workers <= 0:
        return (source.pair(index) for index in indices)
    loader = DataLoader(_ByIndex(source), sampler=list(indices), batch_size=None,
                        collate_fn=_unchanged, num_workers=workers,
                        prefetch_factor=PREFETCHED_PER_WORKER, persistent_workers=False,
                        multiprocessing_context=_start_method())
    return _closing(loader)


def _closing(loader: DataLoader) -> Iterator[Any]:
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        del iterator  # ends the worker processes now, not at garbage collection
