"""Per-level U-Net and multilevel network: shapes, identity start, composition order,
progressive training (freezing, initialisation, gradient flow) and a CT forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.networks import (
    MultilevelNet,
    UNet,
    downsample,
    level_grid,
    mm_to_voxels,
    voxels_to_mm,
)
from LungDeepRegLib.spatial import (
    Grid,
    compose,
    image_to_tensor,
    mapped_points,
    resample_field,
    sample,
    warp,
)

# 32 x 28 x 24 voxels (z, y, x), anisotropic spacing, off-centre origin
GRID = Grid((24, 28, 32), (1.5, 1.25, 2.0), (-20.0, 35.0, 110.0))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def blob_pair(grid: Grid = GRID, shift_mm: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed and moving images in [0, 1]: two Gaussian blobs, moving shifted along x."""
    points = grid.points()
    centre = points.reshape(-1, 3).mean(0)

    def image(offset: float) -> torch.Tensor:
        total = torch.zeros(grid.shape)
        for dx in (-8.0, 8.0):
            c = centre + torch.tensor([dx + offset, 0.0, 0.0])
            total += torch.exp(-((points - c) ** 2).sum(-1) / (2 * 6.0**2))
        return total[None, None]

    return image(0.0), image(shift_mm)


def wave_field(grid: Grid, amplitude: float, phase: float = 0.0) -> torch.Tensor:
    """A smooth field of ``amplitude`` mm varying over ~40 mm: large motion for lungs."""
    p = grid.points().movedim(-1, 0)  # (3, z, y, x)
    k = 2 * math.pi / 40.0
    field = torch.stack((
        torch.sin(k * p[1] + phase) * torch.cos(k * p[2]),
        torch.cos(k * p[0] - phase),
        torch.sin(k * (p[0] + p[1]) + phase),
    ))
    return amplitude * field[None]


# ------------------------------------------------------------------------------ U-Net
@pytest.mark.parametrize("shape", [(32, 28, 24), (17, 13, 9), (5, 6, 7)])
def test_unet_output_shape_any_size(shape: tuple[int, int, int]) -> None:
    net = UNet(in_channels=2, base_filters=4, depth=3, final_init_std=0.1)
    out = net(torch.rand(2, 2, *shape))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all() and out.abs().max() > 0


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_unet_depth_configurable(depth: int) -> None:
    net = UNet(base_filters=2, depth=depth)
    assert net.size_multiple == 2 ** (depth - 1)
    assert net(torch.rand(1, 2, 9, 10, 11)).shape == (1, 3, 9, 10, 11)
    with pytest.raises(ValueError):
        UNet(depth=0)


def test_unet_zero_init_gives_identity() -> None:
    net = UNet(base_filters=4)
    out = net(torch.rand(1, 2, 32, 28, 24))
    assert torch.equal(out, torch.zeros_like(out))


def test_voxels_to_mm_uses_spacing_and_direction() -> None:
    raw = torch.randn(2, 3, 4, 5, 6)
    mm = voxels_to_mm(raw, GRID)
    spacing = torch.tensor(GRID.spacing).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(mm, raw * spacing)
    # a 90 degree rotation about z: index x runs along LPS y, index y along -x
    rotated = Grid(GRID.size, GRID.spacing, GRID.origin, (0, -1, 0, 1, 0, 0, 0, 0, 1))
    one_x = torch.zeros(1, 3, 1, 1, 1)
    one_x[:, 0] = 1.0
    torch.testing.assert_close(voxels_to_mm(one_x, rotated)[0, :, 0, 0, 0],
                               torch.tensor([0.0, 1.5, 0.0]))
    torch.testing.assert_close(mm_to_voxels(voxels_to_mm(raw, rotated), rotated), raw)


# ------------------------------------------------------------------- pyramid
def test_level_grids_share_extent_and_halve() -> None:
    model = MultilevelNet(levels=3, base_filters=2)
    grids = model.level_grids(GRID)
    assert grids[0] is GRID
    assert [g.size for g in grids] == [(24, 28, 32), (12, 14, 16), (6, 7, 8)]
    last = np.asarray(GRID.size) - 1
    for g in grids:
        np.testing.assert_allclose(g.index_to_physical([[0, 0, 0]]), [GRID.origin])
        np.testing.assert_allclose(g.index_to_physical([np.asarray(g.size) - 1]),
                                   GRID.index_to_physical([last]), atol=1e-9)


def test_downsample_keeps_constants_and_smooths() -> None:
    coarse = level_grid(GRID, 2)
    constant = torch.full((1, 1, *GRID.shape), 0.7)
    torch.testing.assert_close(downsample(constant, GRID, coarse),
                               torch.full((1, 1, *coarse.shape), 0.7))
    noise = torch.rand(1, 1, *GRID.shape)
    down = downsample(noise, GRID, coarse)
    assert down.shape == (1, 1, *coarse.shape)
    assert down.std() < 0.5 * noise.std()  # anti-aliasing removed most of the noise


# ---------------------------------------------------------------- multilevel net
def test_untrained_model_is_identity_float32() -> None:
    model = MultilevelNet(levels=3, base_filters=4)
    fixed, moving = blob_pair()
    field = model(fixed.double(), moving.double(), GRID)
    assert field.dtype == torch.float32 and field.shape == (1, 3, *GRID.shape)
    assert torch.equal(field, torch.zeros_like(field))
    with pytest.raises(ValueError):
        model(fixed[:, :, 1:], moving, GRID)


def explicit_composition(output, grid: Grid) -> torch.Tensor:
    """u = u_fine + u_coarse o (id + u_fine), level by level, from the returned increments."""
    field, field_grid = None, None
    for level in output.levels:
        if field is None:
            field = level.increment
        else:
            field = compose(field, level.increment, level.grid, first_grid=field_grid)
        field_grid = level.grid
    return field if field_grid is grid else resample_field(field, field_grid, grid)


def test_output_is_composition_not_sum_for_large_motion(monkeypatch) -> None:
    model = MultilevelNet(levels=3, base_filters=4, final_init_std=0.1)
    network_increment = model.increment

    def large_increment(level, fixed, warped, grid):
        # the network's own output plus a known wave of 12 mm: lung-scale motion
        return network_increment(level, fixed, warped, grid) + wave_field(grid, 12.0, level)

    monkeypatch.setattr(model, "increment", large_increment)
    fixed, moving = blob_pair()
    output = model.forward_levels(fixed, moving, GRID)
    assert [level.level for level in output.levels] == [2, 1, 0]

    expected = explicit_composition(output, GRID)
    torch.testing.assert_close(output.field, expected, atol=1e-5, rtol=0)

    # each finer level saw its moving image warped by the coarser composed field
    for coarse, fine in zip(output.levels[:-1], output.levels[1:], strict=True):
        current = resample_field(coarse.field, coarse.grid, fine.grid)
        warped = sample(fine.moving, fine.grid, mapped_points(current, fine.grid),
                        padding="border")
        torch.testing.assert_close(fine.warped, warped, atol=1e-6, rtol=0)

    plain_sum = sum(resample_field(level.increment, level.grid, GRID) for level in output.levels)
    assert (output.field - plain_sum).abs().max() > 2.0  # mm: a sum is wrong here


def affine_field(grid: Grid, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """u(p) = A p + b on ``grid``, ``(1, 3, z, y, x)``."""
    return (grid.points() @ matrix.T + offset).movedim(-1, 0)[None]


def test_analytic_composition_affine_coarse_constant_fine(monkeypatch) -> None:
    """u_coarse = A p + b, u_fine = c  =>  u(p) = c + A (p + c) + b (fine acts first)."""
    matrix = torch.tensor([[0.10, 0.05, 0.0], [-0.04, 0.08, 0.02], [0.0, 0.06, -0.12]])
    offset = torch.tensor([-3.0, 5.0, -12.0])
    shift = torch.tensor([2.0, -3.0, 6.0])
    constant = shift.view(1, 3, 1, 1, 1)

    def known(level, fixed, warped, grid):
        if level == 1:
            return affine_field(grid, matrix, offset)
        return constant.expand(1, 3, *grid.shape).clone()

    model = MultilevelNet(levels=2, base_filters=2)
    monkeypatch.setattr(model, "increment", known)
    fixed, moving = blob_pair()
    field = model(fixed, moving, GRID)

    points = GRID.points()
    expected = (shift + (points + shift) @ matrix.T + offset).movedim(-1, 0)[None]
    wrong_order = (shift + points @ matrix.T + offset).movedim(-1, 0)[None]
    # border padding makes the affine field constant outside the grid: compare inside
    inside = torch.from_numpy(GRID.contains((points + shift).reshape(-1, 3).numpy(), margin=0))
    inside = inside.reshape(GRID.shape)
    assert inside.float().mean() > 0.5
    error = (field - expected)[0].movedim(0, -1)[inside]
    assert error.abs().max() < 1e-4
    # the other order differs by A c (about 0.5 mm here): the test pins the convention
    assert ((wrong_order - expected)[0].movedim(0, -1)[inside]).abs().max() > 0.4


def test_constant_shifts_add_up(monkeypatch) -> None:
    shifts = {0: [1.0, -2.0, 0.5], 1: [4.0, 3.0, -6.0], 2: [-10.0, 7.0, 20.0]}

    def known(level, fixed, warped, grid):
        return torch.tensor(shifts[level]).view(1, 3, 1, 1, 1).expand(1, 3, *grid.shape)

    model = MultilevelNet(levels=3, base_filters=2)
    monkeypatch.setattr(model, "increment", known)
    field = model(*blob_pair(), GRID)
    total = torch.tensor(shifts[0]) + torch.tensor(shifts[1]) + torch.tensor(shifts[2])
    torch.testing.assert_close(field, total.view(1, 3, 1, 1, 1).expand_as(field))


# ------------------------------------------------------------ progressive training
def test_fewer_active_levels_give_full_resolution_field() -> None:
    model = MultilevelNet(levels=3, base_filters=4, final_init_std=0.1)
    model.active_levels = 2
    output = model.forward_levels(*blob_pair(), GRID)
    assert [level.level for level in output.levels] == [2, 1]
    assert output.field.shape == (1, 3, *GRID.shape)
    finest = output.levels[-1]
    torch.testing.assert_close(output.field, resample_field(finest.field, finest.grid, GRID))
    with pytest.raises(ValueError):
        model.active_levels = 0


def test_init_from_previous_copies_independent_weights() -> None:
    model = MultilevelNet(levels=3, base_filters=4, final_init_std=0.1)
    model.init_from_previous(1)
    source, target = model.nets[2].state_dict(), model.nets[1].state_dict()
    assert all(torch.equal(source[k], target[k]) for k in source)
    with torch.no_grad():
        model.nets[1].head.weight.add_(1.0)
    assert not torch.equal(model.nets[1].head.weight, model.nets[2].head.weight)
    with pytest.raises(ValueError):
        model.init_from_previous(2)  # the coarsest has no previous network


def mse_loss(model: MultilevelNet, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    field = model(fixed, moving, GRID)
    return ((warp(moving, GRID, field, GRID) - fixed) ** 2).mean()


def test_gradient_reaches_active_levels_only() -> None:
    model = MultilevelNet(levels=3, base_filters=4, final_init_std=0.1)
    fixed, moving = blob_pair()
    model.active_levels = 2  # levels 2 and 1; level 0 is off
    mse_loss(model, fixed, moving).backward()
    assert all(p.grad is None for p in model.nets[0].parameters())
    for level in (1, 2):
        assert model.nets[level].head.weight.grad.abs().sum() > 0

    model.zero_grad(set_to_none=True)
    model.freeze_coarser(1)
    mse_loss(model, fixed, moving).backward()
    assert all(p.grad is None for p in model.nets[2].parameters())
    assert all(p.grad is None for p in model.nets[0].parameters())
    assert model.nets[1].head.weight.grad.abs().sum() > 0


def test_frozen_level_unchanged_while_finer_level_trains() -> None:
    model = MultilevelNet(levels=2, base_filters=4, final_init_std=0.1)
    model.active_levels = 1
    assert model.grow() == 0  # level 0 on, initialised from level 1, level 1 frozen
    assert model.frozen_levels == {1}
    model.train()
    assert not model.nets[1].training and model.nets[0].training

    frozen = {k: v.clone() for k, v in model.nets[1].state_dict().items()}
    before = {k: v.clone() for k, v in model.nets[0].state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    fixed, moving = blob_pair()
    for _ in range(3):
        optimizer.zero_grad()
        mse_loss(model, fixed, moving).backward()
        optimizer.step()

    after_frozen = model.nets[1].state_dict()
    assert all(torch.equal(frozen[k], after_frozen[k]) for k in frozen)
    after = model.nets[0].state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "head.weight" in changed and any(k.startswith("encoders.0") for k in changed)

    model.unfreeze()
    assert model.frozen_levels == set()
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------- real data
def test_forward_on_ct_crop(shared_data) -> None:
    image = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"), sitk.sitkFloat32)
    crop = image[16:40, 18:46, 24:56]  # x, y, z: 24 x 28 x 32 voxels, geometry kept
    tensor, grid = image_to_tensor(crop)
    assert grid.shape == (32, 28, 24)
    scaled = (tensor.clamp(-1024, 3071) + 1024) / 4095
    moving = torch.roll(scaled, shifts=2, dims=2)
    model = MultilevelNet(levels=3, base_filters=4, final_init_std=0.05)
    output = model.forward_levels(scaled, moving, grid)
    assert output.field.shape == (1, 3, *grid.shape)
    assert torch.isfinite(output.field).all()
    assert 0 < output.field.abs().max() < 50
    assert [tuple(level.fixed.shape[2:]) for level in output.levels] == [
        (8, 7, 6), (16, 14, 12), (32, 28, 24)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_forward_on_cuda() -> None:
    model = MultilevelNet(levels=3, base_filters=4, final_init_std=0.1)
    fixed, moving = blob_pair()
    expected = model(fixed, moving, GRID)
    field = model.cuda()(fixed.cuda(), moving.cuda(), GRID)
    assert field.is_cuda and field.dtype == torch.float32
    torch.testing.assert_close(field.cpu(), expected, atol=1e-4, rtol=1e-4)
