"""Settings of the instance optimisation, read by :mod:`.refine` and by :mod:`.optimise`.

They live in their own module so that imports go one way: :mod:`.optimise` (one pyramid
level) and :mod:`.refine` (the pyramid) both read the config, and :mod:`.refine` calls
:mod:`.optimise`; with the config defined in :mod:`.refine`, :mod:`.optimise` had to import
it back (a cycle). The schedule's reasons are in :mod:`.refine`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..losses import TUNED_T, TUNED_WEIGHTS, LossWeights

#: What the similarity terms compare: the images, or their MIND-SSC descriptors.
FEATURES = ("intensity", "mind")
#: The refinement's similarity choices (``--similarity``) and their default weights against
#: the tuned curvature and volume weights: NGF (the paper's), local NCC on intensities, and
#: the mean squared difference of MIND-SSC descriptors (ConvexAdam's).
SIMILARITY_WEIGHTS = {"ngf": 1.0, "ncc": 1.0, "mind": 1.0}
#: Where the similarity is measured (``--similarity-region``): the whole lung crop (the
#: default, :attr:`RefineConfig.use_mask` False) or the fixed lung mask only (the paper's).
REGIONS = ("crop", "lung")


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`.refine.refine`; the defaults register from identity
    (``--model none``).

    Attributes:
        size: finest refinement grid (x, y, z) voxels over the crop's extent.
        spacing_mm: when set, the finest grid gets about this spacing instead of ``size``.
        levels: pyramid levels (each halves the grid); 3 from identity, 1-2 after a network.
        iterations: maximal Adam steps per level, coarse to fine (last value repeated).
        learning_rate: Adam step (about mm per step) on the finest level, doubled per coarser
            level, where the voxels (and the motion left to find) are larger.
        weights: loss weights (ngf 1, curvature alpha, volume gamma, mask beta of Hering
            2021); the keypoint term is never computed here (no keypoints are given).
        t: psi_t threshold of the volume change control on every level.
        update_sigma: Gaussian smoothing of each update, voxels of the level; 0 = none.
        tolerance, window: a level stops when the best loss of the last ``window`` steps is
            less than ``tolerance`` (relative) below the best loss before them.
        use_mask: restrict the similarity to the fixed lung mask when one is given (as in
            the paper; ``--similarity-region lung``). Off by default: over the whole lung
            crop (lungs + 10 mm, the mediastinum between them) the lung boundary and the
            vessels near it take part, and on the tuning data the mean lung EPE went
            0.400 -> 0.353 mm (four synthetic pairs, every pair better) and the POPI light
            tuning pairs 1.85 -> 1.76 and 1.91 -> 1.85 mm mean TRE (p95 4.38 -> 2.90 and
            4.33 -> 3.36 mm); the two POPI landmarks 47-55 mm outside the lungs, which
            hardly move, were mapped worse (5.6 -> 6.0 and 5.3 -> 7.3 mm) until the field
            outside the crop followed the body (:func:`.fields.toward_body`)
            (Testing/benchmark/results/refinement_ablation.md, sections 3 and 4).
        fine_spacing_mm: when set, one more level after the pyramid, on the crop grid itself
            with about this spacing (never finer than the fixed image, at most
            ``fine_max_voxels`` voxels): the fixed image's native detail inside the lungs.
            The caller makes the crop at that resolution (:func:`fine_crop_size`).
        fine_iterations: Adam steps of that level, at half the finest pyramid level's
            learning rate (its voxels are about half as large).
        fine_max_voxels: voxel budget of that level (float32: 2.5 M voxels are 30 MB per
            field or image; one step about 1-2 s on two CPU cores).
        features: what the similarity terms compare on every level: ``"intensity"`` (the
            images themselves) or ``"mind"`` (their MIND-SSC descriptors,
            :func:`~LungDeepRegLib.losses.mind_ssc`, made once per level).
    """

    size: tuple[int, int, int] = (96, 80, 96)
    spacing_mm: float | None = None
    levels: int = 3
    iterations: tuple[int, ...] = (100, 60, 30)
    learning_rate: float = 0.5
    weights: LossWeights = TUNED_WEIGHTS
    t: float = TUNED_T
    update_sigma: float = 1.0
    tolerance: float = 1e-3
    window: int = 20
    use_mask: bool = False
    fine_spacing_mm: float | None = None
    fine_iterations: int = 20
    fine_max_voxels: int = 2_500_000
    features: str = "intensity"

    def __post_init__(self) -> None:
        if self.levels < 1 or not self.iterations or min(self.iterations) < 0:
            raise ValueError("refinement needs >= 1 level and non-negative iterations")
        if self.learning_rate <= 0 or self.window < 1 or self.tolerance < 0:
            raise ValueError("learning_rate and window must be positive, tolerance >= 0")
        if self.fine_spacing_mm is not None and (self.fine_spacing_mm <= 0
                                                 or self.fine_max_voxels < 27):
            raise ValueError("fine_spacing_mm must be positive and fine_max_voxels >= 27")
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")

    @classmethod
    def after_network(cls) -> RefineConfig:
        """Fine-tuning of a network's output, which has found the large motion already:
        48x40x48 and 96x80x96, 40 + 30 steps of 0.25 mm (0.5 on the coarser level). From
        starts 2 mm off this gave 0.35 mm, one level of 40 steps 0.44 mm (0.38 at 0.5 mm)."""
        return cls(levels=2, iterations=(40, 30), learning_rate=0.25)

    def level_iterations(self) -> list[int]:
        """Maximal steps of each level, coarse to fine."""
        steps = list(self.iterations[: self.levels])
        return steps + [steps[-1]] * (self.levels - len(steps))

    def crop_size(self, extent_mm: tuple[float, float, float]) -> tuple[int, int, int]:
        """Voxels (x, y, z) of the crop the refinement needs over ``extent_mm`` (first to
        last voxel centre): ``size``, or with ``fine_spacing_mm`` the fine level's grid,
        shrunk evenly to ``fine_max_voxels`` and never coarser than ``size``."""
        if self.fine_spacing_mm is None:
            return self.size
        extent = np.asarray(extent_mm, dtype=float)
        size = np.round(extent / self.fine_spacing_mm) + 1
        if np.prod(size) > self.fine_max_voxels:  # same spacing on every axis, coarser
            size = np.floor((size - 1) * (self.fine_max_voxels / np.prod(size)) ** (1 / 3)) + 1
        return tuple(int(max(n, s)) for n, s in zip(size, self.size, strict=True))


def with_similarity(config: RefineConfig, name: str, weight: float | None = None,
                    region: str = "crop") -> RefineConfig:
    """``config`` with ``name`` (a key of :data:`SIMILARITY_WEIGHTS`) as its only
    similarity term, weighted ``weight`` (default: the table's), measured over ``region``
    (one of :data:`REGIONS`)."""
    if name not in SIMILARITY_WEIGHTS:
        raise ValueError(f"similarity must be one of {tuple(SIMILARITY_WEIGHTS)}, got {name!r}")
    if region not in REGIONS:
        raise ValueError(f"similarity region must be one of {REGIONS}, got {region!r}")
    config = replace(config, use_mask=region == "lung")
    weight = SIMILARITY_WEIGHTS[name] if weight is None else weight
    if name == "mind":
        return replace(config, features="mind",
                       weights=config.weights.with_similarity("mse", weight))
    return replace(config, features="intensity",
                   weights=config.weights.with_similarity(name, weight))
