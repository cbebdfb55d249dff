"""The network step of the pipeline: the network from two starts, and the candidates.

The shipped networks learnt breathing motion from identity-aligned synthetic pairs; after
a lung-aware affine pre-alignment the remaining motion can look unlike anything they saw
(the affine map already lifts the diaphragm, so the apex seems to move the other way), and
a network may then add back motion the affine part removed. On the demo pair the network
after the affine start left 6.5 mm TRE where the affine alone left 2.5 mm, while the same
network from the unaligned crop reached 1.3 mm. Real pairs can need the affine start
(patient shift between scans). So the network runs from both starts, and the affine start
without the network is a third candidate: on real POPI breathing (00 to 50) the network's
output matched worse than the affine alone. A model trained on motion without its affine
part runs from the affine start only (:func:`network_starts`).

Each candidate is scored by the NGF distance inside the fixed lung (the similarity term of
the loss, :func:`match_in_lung`). Network-only registration keeps the best of the three. The
instance optimisation goes on from the better network result *and* from the affine start,
and chooses between them after its coarse levels (:mod:`.multistart`): a start's match
before the refinement did not tell which one the refinement ends better from, unless the
network's result matches far worse than the affine start (``DROP_RATIO``), or far better for
a network measured to be trusted there (its card's ``refinement.trust_ratio``,
:func:`trust_ratio`): then its start alone is refined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import SimpleITK as sitk
import torch

from ..errors import InputError
from ..losses.functional import ngf_distance
from ..spatial import Grid, warp

NO_NETWORK = "affine, no network"
# Network NGF below this share of the affine start's: refine the network's start alone.
# How far a network may be trusted depends on the network, so a model card may set its own
# ratio (``refinement.trust_ratio``, :func:`trust_ratio`); this is the value for cards that
# do not, off (0.0). For lungdeepreg-popi-cpu trusting cost no accuracy on the two real
# tuning pairs (shares 0.90-0.92, 0.8-2.8 s saved, results/network_trust.md) but on the
# demo pair (synthetic, share 0.30) gave 0.69 instead of 0.45 mm and saved nothing: as
# multistart's docstring found, a weak network's start can leave the refinement in a worse
# basin although it matches better before it.
TRUST_RATIO = 0.0
# Network NGF above this multiple of the affine start's: the refinement leaves the network's
# start out (it is still compared at the end). On the two real tuning pairs, with the
# network's output also scaled by 1.5, 2, 3 and -1 to reach larger shares
# (results/network_drop.md, Testing/benchmark/tune_network_drop.py), the network's start won
# after the coarse levels only at shares 0.90 and 0.92 and lost at every share from 1.08
# to 1.55, by up to 3x in NGF; TRE after refinement from the affine start was within 0.02 mm
# where the network's start had won. 1.5 keeps a margin of 40 % above the largest winning
# share and still saves one start's coarse levels where a network fails on a pair.
DROP_RATIO = 1.5
CropPair = Callable[[sitk.Transform], tuple[Grid, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class NetworkResult:
    grid: Grid
    field: torch.Tensor | None  # (1, 3, z, y, x) mm on ``grid`` after ``start``; None:
    # the network did not improve on the affine start and is not used
    start: sitk.AffineTransform  # the pre-alignment the field continues
    start_name: str  # "affine", "identity" or "affine, no network"
    scores: dict[str, float]  # NGF distance in the lung of each start (lower is better)


NETWORK_STARTS = ("affine", "identity")


def network_starts(card: dict) -> tuple[str, ...]:
    """The starts a model runs from: both, or the affine start alone for a model trained on
    motion without its affine part (``data.affine_free`` in its card). Such a model never saw
    the global motion the identity start leaves: on the two POPI tuning pairs its
    identity-start result matched worse than the affine start without the network, and
    each pass costs about 3 s at 128x112x128 on 2 CPU threads
    (Testing/benchmark/results/network_affine_free.md)."""
    data = card.get("training", {}).get("data", {})
    return ("affine",) if data.get("affine_free") else NETWORK_STARTS


def network_candidates(model: torch.nn.Module, crop_pair: CropPair,
                       affine: sitk.AffineTransform,
                       starts: tuple[str, ...] = NETWORK_STARTS) -> dict[str, NetworkResult]:
    """Run ``model`` from each of ``starts`` (the affine and the identity start): the network
    results and the affine start without the network, each scored by :func:`match_in_lung`.

    ``crop_pair(transform)`` returns the crop grid, the fixed and the moving crop (network
    intensities, the moving one resampled through ``transform``) and the fixed lung mask.
    The candidates share one ``scores`` dictionary; the simplest comes first.
    """
    scores: dict[str, float] = {}
    candidates: dict[str, NetworkResult] = {}
    transforms = {"affine": affine, "identity": sitk.AffineTransform(3)}
    for name in starts:
        transform = transforms[name]
        grid, fixed, moving, mask = crop_pair(transform)
        with torch.inference_mode():
            if name == "affine":  # the start itself, without the network
                scores[NO_NETWORK] = match_in_lung(fixed, moving, grid, mask)
                candidates[NO_NETWORK] = NetworkResult(grid, None, transform, NO_NETWORK,
                                                       scores)
            field = model(fixed, moving, grid).float()
            scores[name] = match_in_lung(fixed, warp(moving, grid, field, grid), grid, mask)
            candidates[name] = NetworkResult(grid, field, transform, name, scores)
    return candidates


def best_candidate(candidates: dict[str, NetworkResult],
                   names: tuple[str, ...] | None = None) -> NetworkResult:
    """The candidate (of ``names``, default all) with the lowest score; ties go to the
    first, the simpler one."""
    names = names or tuple(candidates)
    return candidates[min(names, key=lambda name: candidates[name].scores[name])]


def trust_ratio(card: dict) -> float:
    """The share of the affine start's NGF below which ``card``'s network is trusted
    (``refinement.trust_ratio`` in the card, measured per model on the tuning data with
    ``Testing/benchmark/tune_network_trust.py``), else ``TRUST_RATIO``."""
    refinement = card.get("refinement", {})
    ratio = refinement.get("trust_ratio", TRUST_RATIO) if isinstance(refinement, dict) else None
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio >= 0:
        raise InputError(f"model card {card.get('name')!r}",
                         f"refinement.trust_ratio must be a number >= 0, found {ratio!r}")
    return float(ratio)


def trusted(candidates: dict[str, NetworkResult], network: NetworkResult,
            ratio: float = TRUST_RATIO) -> bool:
    """Whether ``network`` (one of ``candidates``) matches so much better than the affine
    start alone that the refinement need not try the affine start as well.

    The refinement then runs only the network's short schedule (no coarse levels of the
    affine start): the time a network should save. The affine start stays a candidate of
    the final comparison (:mod:`.multistart`), so a wrong trust costs accuracy, never
    correctness. ``ratio`` is the model's (:func:`trust_ratio`); 0.0 never trusts.
    """
    affine = candidates[NO_NETWORK].scores[NO_NETWORK]
    return network.scores[network.start_name] < ratio * affine


def outmatched(candidates: dict[str, NetworkResult], network: NetworkResult) -> bool:
    """Whether ``network`` (one of ``candidates``) matches so much worse than the affine
    start alone (NGF in the lung above ``DROP_RATIO`` times the affine start's) that its
    coarse levels would be spent on a start that loses: the refinement then runs from the
    affine start only, and the network's start stays a candidate of the final comparison
    (:mod:`.multistart`), like the identity."""
    affine = candidates[NO_NETWORK].scores[NO_NETWORK]
    return network.scores[network.start_name] > DROP_RATIO * affine


def match_in_lung(fixed: torch.Tensor, warped: torch.Tensor, grid: Grid,
                  mask: torch.Tensor | None) -> float:
    """NGF distance inside the fixed lung mask (the similarity term of the loss; lower is
    a better match): the one score by which starts are compared."""
    return float(ngf_distance(fixed, warped, grid, mask=mask))
