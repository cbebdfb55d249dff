"""Real-motion atlas (data.motion) and clinical-scan augmentation (data.augment).

The shipped atlas (two POPI tuning-pair fields) is carried onto the tiny real COPDGene CT
at 48x40x48, so the module takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from crop_helpers import lung_crop_case

from LungDeepRegLib.data import SyntheticPairSource, make_pair
from LungDeepRegLib.data.augment import augment_pair
from LungDeepRegLib.data.fields import without_affine_part
from LungDeepRegLib.data.motion import (
    AMPLITUDE_RANGE,
    AXIS_JITTER,
    DEFAULT_ATLAS,
    MotionAtlas,
    atlas_from_fields,
    lung_box,
)
from LungDeepRegLib.data.synthetic import SMALL_MOTION_SCALE
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.spatial import Grid, compose, jacobian_determinant

SIZE = (48, 40, 48)


@pytest.fixture(scope="module")
def ct_path(shared_data):
    return shared_data / "cip" / "ct-64.nrrd"


@pytest.fixture(scope="module")
def case(ct_path):
    return lung_crop_case(read_image(ct_path), SIZE)


def box_grid(size=(20, 16, 24), spacing=(10.0, 10.0, 10.0)) -> tuple[Grid, torch.Tensor]:
    """A grid whose 'lung' is the whole grid but one voxel at each border."""
    grid = Grid(size, spacing, (-100.0, -80.0, -120.0))
    mask = torch.zeros((1, 1, *grid.shape))
    mask[..., 1:-1, 1:-1, 1:-1] = 1
    return grid, mask


def test_the_shipped_atlas_holds_the_tuning_pairs_only_and_loads_without_pickle():
    atlas = MotionAtlas.load(DEFAULT_ATLAS)
    assert len(atlas.names) == 2 and all("tuning" in name for name in atlas.names)
    assert {"popi-light-00-50", "popi-light-00-60"} == {n.split()[0] for n in atlas.names}
    with np.load(DEFAULT_ATLAS, allow_pickle=False) as data:  # plain arrays only
        assert data["fields"].dtype == np.float32
    # real breathing: the inhale-to-exhale motion is mostly cranio-caudal and upwards
    # (superior is +z in LPS: the exhale diaphragm lies higher)
    z_motion = atlas.fields[:, 2]
    assert float(z_motion.abs().mean()) > float(atlas.fields[:, 0].abs().mean())
    assert float(z_motion.mean()) > 1.0


def test_a_field_is_carried_over_scaled_by_the_lung_boxes(tmp_path):
    grid, mask = box_grid()
    constant = torch.zeros((1, 3, *grid.shape))
    constant[:, 2] = 10.0  # 10 mm upwards everywhere
    atlas = atlas_from_fields([("constant", constant, grid, mask)])
    atlas.save(tmp_path / "atlas.npz")
    atlas = MotionAtlas.load(tmp_path / "atlas.npz")
    _, extent = lung_box(grid, mask)
    assert torch.allclose(atlas.extents[0].double(), extent)
    # a target whose lungs are twice as tall: the motion doubles (times amplitude, jitter)
    target, target_mask = box_grid(spacing=(10.0, 10.0, 20.0))
    for seed in range(4):
        field = atlas.draw(target, target_mask, torch.Generator().manual_seed(seed))
        inside = field[0, :, target_mask[0, 0] > 0]
        low = 20.0 * AMPLITUDE_RANGE[0] * (1 - AXIS_JITTER)
        high = 20.0 * AMPLITUDE_RANGE[1] * (1 + AXIS_JITTER)
        assert low <= float(inside[2].min()) and float(inside[2].max()) <= high
        # uniform inside (the fade outside the lungs reaches a little way in: 3 voxels off)
        core = field[0, 2, 3:-3, 3:-3, 3:-3]
        assert float(core.max() - core.min()) < 0.01 * float(core.mean())
        assert float(inside[:2].abs().max()) < 1e-4


def test_mirrored_draws_flip_the_left_right_motion():
    grid, mask = box_grid()
    lateral = torch.zeros((1, 3, *grid.shape))
    x = grid.points()[..., 0]
    lateral[0, 0] = torch.where(x > 0, 5.0, 0.0)  # only the patient's left half moves, +x
    atlas = atlas_from_fields([("left", lateral, grid, mask)])
    signs = set()
    for seed in range(12):
        field = atlas.draw(grid, mask, torch.Generator().manual_seed(seed))[0, 0]
        moving = field.abs() > 1.0
        signs.add((bool((x[moving] > 0).all()), float(field[moving].mean()) > 0))
    # unmirrored: the left half moves to +x; mirrored: the right half moves to -x
    assert signs == {(True, True), (False, False)}


def test_atlas_pairs_are_invertible_reproducible_and_spare_excluded_cts(case, ct_path):
    atlas = MotionAtlas.load()
    source = SyntheticPairSource([ct_path], SIZE, seed=3, atlas=atlas, atlas_share=1.0)
    pair = source.pair(0)
    assert pair.kind == "atlas"
    assert float(jacobian_determinant(pair.field, pair.grid).min()) > 0.1
    inside = pair.fixed_mask[0, 0] > 0
    # the inverse holds in the lung (a few voxels at the crop's edge may not settle)
    consistency = compose(pair.field, pair.inverse_field, pair.grid)[0][:, inside]
    assert float(consistency.abs().max()) < 0.1
    assert torch.equal(source.pair(0).moving, pair.moving)
    excluded = SyntheticPairSource([ct_path], SIZE, seed=3, atlas=atlas, atlas_share=1.0,
                                   atlas_exclude=[ct_path])
    assert {excluded.pair(i).kind for i in range(3)} == {"breathing"}


def test_augmentation_degrades_the_images_but_keeps_the_truth(case):
    hu, labels, grid = case
    pair = make_pair(hu, labels, grid, torch.Generator().manual_seed(0), labels=labels)
    cut_seen = False
    for seed in range(12):
        augmented = augment_pair(pair, torch.Generator().manual_seed(seed))
        assert torch.equal(augmented.field, pair.field)
        assert torch.equal(augmented.fixed_mask, pair.fixed_mask)
        assert float(augmented.moving.min()) >= 0.0 and float(augmented.moving.max()) <= 1.0
        assert not torch.equal(augmented.fixed, pair.fixed)
        cut_seen |= _has_repeated_end_slab(augmented.moving)
    assert cut_seen  # about one pair in four has its moving field of view cut
    assert not _has_repeated_end_slab(pair.moving)


def _has_repeated_end_slab(image: torch.Tensor, slices: int = 3) -> bool:
    """Whether the first or last ``slices`` slices along some axis are all equal."""
    for axis in (2, 3, 4):
        length = image.shape[axis]
        for start in (0, length - slices):
            slab = image.narrow(axis, start, slices)
            if torch.equal(slab, slab.narrow(axis, 0, 1).expand_as(slab)):
                return True
    return False


def test_affine_free_pairs_keep_only_what_an_affine_cannot_explain(ct_path):
    """The residual motion the pipeline's affine pre-alignment leaves: refitting an affine
    map to the field in the lung finds (almost) nothing, while motion remains."""
    source = SyntheticPairSource([ct_path], SIZE, seed=3, kind="mixed", affine_free=True)
    pair = source.pair(0)
    inside = pair.fixed_mask[0, 0] > 0
    again = without_affine_part(pair.field, pair.grid, pair.fixed_mask)
    assert float((pair.field - again)[0][:, inside].abs().max()) < 0.05  # no affine part
    plain = SyntheticPairSource([ct_path], SIZE, seed=3, kind="mixed").pair(0)
    residual = float(pair.field[0][:, inside].norm(dim=0).mean())
    assert 0.5 < residual < float(plain.field[0][:, inside].norm(dim=0).mean())


def test_small_motion_pairs_scale_the_same_field_toward_none(ct_path):
    """``small_motion_share`` 1: every pair moves by the field it would have had, scaled
    by one factor in [0, SMALL_MOTION_SCALE] (breaths between nearby phases); share 0
    leaves the stream as it was, and a share outside [0, 1] is refused."""
    options = {"kind": "mixed", "affine_free": True}
    plain = SyntheticPairSource([ct_path], SIZE, seed=3, **options)
    small = SyntheticPairSource([ct_path], SIZE, seed=3, small_motion_share=1.0, **options)
    unchanged = SyntheticPairSource([ct_path], SIZE, seed=3, small_motion_share=0.0, **options)
    scales = []
    for index in range(2):
        full, scaled = plain.pair(index).field, small.pair(index).field
        scale = float((full * scaled).sum() / (full * full).sum())
        assert 0.0 <= scale <= SMALL_MOTION_SCALE
        assert float((scaled - scale * full).abs().max()) < 1e-3 + 1e-3 * float(full.abs().max())
        assert torch.allclose(unchanged.pair(index).field, full, atol=1e-4)
        scales.append(scale)
    assert scales[0] != scales[1]  # drawn per pair
    with pytest.raises(ValueError, match="small_motion_share"):
        SyntheticPairSource([ct_path], SIZE, small_motion_share=1.5)
