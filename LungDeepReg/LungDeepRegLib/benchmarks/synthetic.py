"""Held-out synthetic breathing pairs with a known dense field (``bench synthetic``).

Each CT is the fixed (inhale) image; the moving (exhale) image is made from it with a
breathing field of up to ``MAX_CC_MM`` cranio-caudal motion at the diaphragm and the density
change of compressed lung, exactly as the demo builds its pair
(:func:`..pipeline.demo.breathing_pair`). 300 lung voxel centres of the fixed image, moved
by the true field, are the landmarks, so TRE and endpoint error are measured against the
truth.

Two groups are reported apart: CTs no shipped model saw (by default Lung-PET-CT-Dx A0001,
the unseen CT of ``Testing/benchmark/data_split.toml``, when ``../shared/data`` is beside
the checkout; any CT with ``--ct``) and a training CT (the bundled 2 mm POPI phase 00
sample; every model card names POPI phase 00 among its training images). Until issue 15
the unseen CT was CIP ct-64, which the all-CT training now uses. Seeds: pair ``i`` of a
group uses ``pair_seed(BENCH_SEED, i)``, a stream no training or tuning run uses
(training 0, validation 1000, network benchmark 424242, refinement tuning 31337, demo 2024).
"""

from __future__ import annotations

from pathlib import Path

from ..data.synthetic import pair_seed
from ..errors import InputError
from ..io.images import read_image
from ..metrics.landmarks import map_points
from ..pipeline.demo import breathing_pair, lung_points, sample_path
from .case import BenchCase, CaseError, KnownField

BENCH_SEED = 271828
MAX_CC_MM = (15.0, 30.0)  # range of the cranio-caudal amplitude drawn per pair
POINTS = 300
UNSEEN_GROUP = "unseen CT"
TRAINING_GROUP = "training CT"


UNSEEN_CT = Path("lung_pet_ct_dx") / "lung_dx_a0001.nii.gz"  # under ../shared/data


def default_unseen_cts() -> list[Path]:
    """Lung-PET-CT-Dx A0001 from ``../shared/data`` beside the checkout, when it is there."""
    shared = Path(__file__).resolve().parents[4] / "shared" / "data" / UNSEEN_CT
    return [shared] if shared.is_file() else []


def synthetic_cases(pairs: int, unseen_cts: list[Path] | None = None,
                    training_ct: Path | None = None, only: set[str] | None = None
                    ) -> list[BenchCase | CaseError]:
    """``pairs`` cases per group: unseen CTs first (pairs shared out among them), then the
    training CT; with ``only``, just the cases of those names are built."""
    if pairs < 1:
        raise InputError("--pairs", "must be at least 1")
    unseen = default_unseen_cts() if unseen_cts is None else list(unseen_cts)
    groups = [(UNSEEN_GROUP, path) for path in unseen]
    groups.append((TRAINING_GROUP, training_ct or sample_path()))
    cases: list[BenchCase | CaseError] = []
    for group in (UNSEEN_GROUP, TRAINING_GROUP):
        paths = [path for name, path in groups if name == group]
        for index in range(pairs if paths else 0):
            name = case_name(group, paths[index % len(paths)], index)
            if only is None or name in only:
                cases.append(_case(name, group, paths[index % len(paths)], index))
    return cases


def case_name(group: str, path: Path, index: int) -> str:
    return f"{'unseen' if group == UNSEEN_GROUP else 'training'}-{_stem(path)}-{index:02d}"


def _case(name: str, group: str, path: Path, index: int) -> BenchCase | CaseError:
    seed = pair_seed(BENCH_SEED, index)
    try:
        ct = read_image(path)
        pair = breathing_pair(ct, seed, MAX_CC_MM)
        fixed_points = lung_points(pair.lung, pair.grid, seed % 2**32, POINTS)
    except (InputError, ValueError) as error:
        return CaseError(name, str(path), str(error))
    return BenchCase(
        name=name, fixed=pair.fixed, moving=pair.moving, fixed_points=fixed_points,
        moving_points=map_points(fixed_points, pair.field, pair.grid),
        known_field=KnownField(pair.field, pair.grid), group=group,
        sources={"fixed": str(path), "seed": f"pair_seed({BENCH_SEED}, {index})",
                 "fixed_points": f"{POINTS} lung voxels moved by the known field"})


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
