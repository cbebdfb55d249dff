"""Registration losses: exact identities, analytic values, units, masks and finite gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from geometry_helpers import ROTATED

from LungDeepRegLib.losses import (
    CurvatureLoss,
    EndpointErrorLoss,
    KeypointLoss,
    LocalNCCLoss,
    LossWeights,
    MaskAlignmentLoss,
    MSELoss,
    NGFLoss,
    RegistrationLoss,
    VolumeChangeLoss,
    curvature_regularizer,
    endpoint_error,
    keypoint_loss,
    local_ncc,
    map_points,
    mask_alignment,
    mse,
    ngf_distance,
    ngf_edge_parameter,
    one_hot,
    volume_change_control,
    volume_change_penalty,
)
from LungDeepRegLib.spatial import Grid, image_to_tensor, jacobian_determinant, warp

# (x, y, z) size 18 x 20 x 24 -> tensors (z, y, x) = (24, 20, 18); 2.5 mm slices
GRID = Grid((18, 20, 24), (0.9, 1.3, 2.5), (-30.0, 12.0, 40.0), tuple(ROTATED.ravel()))


def smooth_field(grid: Grid, amplitude: float = 4.0, batch: int = 1) -> torch.Tensor:
    p = grid.points(dtype=torch.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    ux = amplitude * torch.sin(2 * math.pi * y / 40.0 + 0.3)
    uy = amplitude * torch.cos(2 * math.pi * z / 50.0) * torch.sin(2 * math.pi * x / 30.0)
    uz = amplitude * torch.sin(2 * math.pi * (x + y) / 45.0 + 1.0)
    return torch.stack((ux, uy, uz))[None].expand(batch, -1, -1, -1, -1).clone()


def random_image(grid: Grid, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *grid.shape, generator=gen, dtype=torch.float64)


@pytest.fixture(scope="module")
def ct(shared_data) -> tuple[torch.Tensor, Grid]:
    """The CIP CT crop, HU clipped to [-1024, 3071] and scaled by (HU + 1024) / 4095."""
    image = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))
    image = image[12:52, 12:52, 20:60]  # a 40^3 crop keeps the tests fast
    tensor, grid = image_to_tensor(image, dtype=torch.float64)
    return (tensor.clamp(-1024.0, 3071.0) + 1024.0) / 4095.0, grid


@pytest.fixture(scope="module")
def ct_pair(ct) -> tuple[torch.Tensor, torch.Tensor, Grid]:
    fixed, grid = ct
    warped = warp(fixed, grid, smooth_field(grid, amplitude=6.0), grid)
    return fixed, warped, grid


# ----------------------------------------------------------------------------------- NGF
@pytest.mark.parametrize("epsilon", [None, 0.01, 0.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ngf_of_ct_with_itself_is_zero(ct, epsilon, dtype):
    image, grid = ct
    value = ngf_distance(image.to(dtype), image.to(dtype), grid, epsilon=epsilon)
    assert abs(value.item()) < 1e-6


def test_ngf_of_random_image_with_itself_is_zero():
    image = random_image(GRID)
    assert ngf_distance(image, image, GRID).abs().item() < 1e-6
    assert ngf_distance(image, image, GRID, epsilon=0.5).abs().item() < 1e-6


def test_ngf_of_shifted_image_is_positive_and_at_most_one(ct):
    image, grid = ct
    shifted = torch.roll(image, shifts=3, dims=-1)
    value = ngf_distance(image, shifted, grid).item()
    assert 0.05 < value <= 1.0


def test_ngf_automatic_epsilon_is_invariant_to_intensity_scale(ct_pair):
    fixed, warped, grid = ct_pair
    a = 7.3
    auto, auto_scaled = (ngf_distance(s * fixed, s * warped, grid) for s in (1.0, a))
    assert auto.item() > 0.05
    assert auto_scaled.item() == pytest.approx(auto.item(), rel=1e-9)
    edge, edge_scaled = (ngf_edge_parameter(s * fixed, s * warped, grid) for s in (1.0, a))
    torch.testing.assert_close(edge_scaled, a * edge)
    # a fixed edge parameter is an absolute level: scaling the images changes NGF
    fixed_e = ngf_distance(fixed, warped, grid, epsilon=edge.item())
    fixed_e_scaled = ngf_distance(a * fixed, a * warped, grid, epsilon=edge.item())
    assert fixed_e.item() == pytest.approx(auto.item(), rel=1e-9)
    assert abs(fixed_e_scaled.item() - fixed_e.item()) > 0.01


def test_ngf_edge_parameter_is_mean_gradient_magnitude_for_a_ramp():
    grid = Grid((10, 9, 8), (0.5, 1.0, 2.0), direction=tuple(ROTATED.ravel()))
    p = grid.points(dtype=torch.float64)
    ramp = (0.3 * p[..., 0] - 0.4 * p[..., 2])[None, None]  # |grad| = 0.5 per mm
    edge = ngf_edge_parameter(ramp, 2.0 * ramp, grid)
    torch.testing.assert_close(edge, torch.tensor([0.75], dtype=torch.float64))


# ----------------------------------------------------------------------------- curvature
def test_curvature_of_affine_field_is_zero():
    p = GRID.points(dtype=torch.float64)
    matrix = torch.tensor([[0.1, -0.2, 0.05], [0.3, 0.02, -0.1], [-0.07, 0.15, 0.2]],
                          dtype=torch.float64)
    field = (p @ matrix.T + torch.tensor([3.0, -5.0, 7.0], dtype=torch.float64))
    field = field.movedim(-1, 0)[None]
    assert curvature_regularizer(field, GRID).item() < 1e-8


def test_curvature_of_smooth_nonlinear_field_is_positive():
    assert curvature_regularizer(smooth_field(GRID), GRID).item() > 1e-4


def test_curvature_matches_analytic_laplacian_of_quadratic_field():
    p = GRID.points(dtype=torch.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    c, d = 0.01, -0.003
    # Laplace(c x^2) = 2c, Laplace(y z) = 0, Laplace(d |p|^2) = 6d (in physical mm)
    field = torch.stack((c * x**2, 0.02 * y * z, d * (x**2 + y**2 + z**2)))[None]
    expected = (2 * c) ** 2 + (6 * d) ** 2
    value = curvature_regularizer(field, GRID).item()
    assert value == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------- volume change
def psi(z: float, t: float) -> float:
    return (z - 1) ** 2 / z if z >= t else (1 - 1 / t**2) * z + 2 * (1 - t) / t


def test_volume_change_penalty_values():
    t = 0.2
    z = torch.tensor([1.0, 2.0, 0.5, t, 0.1, 0.0, -1.0, 5.0], dtype=torch.float64)
    value = volume_change_penalty(z, t)
    expected = torch.tensor([psi(v, t) for v in z.tolist()], dtype=torch.float64)
    torch.testing.assert_close(value, expected)
    assert value[:3].tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert value[4:7].tolist() == pytest.approx([5.6, 8.0, 32.0])  # -24 z + 8


def test_volume_change_penalty_is_symmetric_in_log_scale():
    t = 0.2
    z = torch.linspace(t, 1.0, 17, dtype=torch.float64)
    torch.testing.assert_close(volume_change_penalty(z, t), volume_change_penalty(1 / z, t))


@pytest.mark.parametrize("t", [0.2, 0.1, 0.05])
def test_volume_change_penalty_is_c1_at_threshold(t):
    delta = 1e-9
    z = torch.tensor([t - delta, t, t + delta], dtype=torch.float64, requires_grad=True)
    value = volume_change_penalty(z, t)
    (slope,) = torch.autograd.grad(value.sum(), z)
    assert value[0].item() == pytest.approx(value[2].item(), abs=1e-6)
    assert value[1].item() == pytest.approx(psi(t, t), rel=1e-12)
    assert slope.tolist() == pytest.approx([1 - 1 / t**2] * 3, rel=1e-5)


def test_volume_change_penalty_is_finite_for_folding():
    z = torch.tensor([-10.0, -1.0, 0.0, 1e-30], dtype=torch.float64, requires_grad=True)
    value = volume_change_penalty(z, 0.2)
    (slope,) = torch.autograd.grad(value.sum(), z)
    assert torch.isfinite(value).all() and torch.isfinite(slope).all()
    assert (value > 0).all()


def test_volume_change_control_of_uniform_scaling():
    p = GRID.points(dtype=torch.float64)
    field = (0.25 * p).movedim(-1, 0)[None]  # det = 1.25^3 everywhere
    z = 1.25**3
    assert volume_change_control(field, GRID, 0.2).item() == pytest.approx(psi(z, 0.2))


# ------------------------------------------------------------------------ labels / masks
def test_one_hot_encodes_and_drops_background():
    labels = torch.tensor([0, 1, 2, 5, 3]).view(1, 1, 1, 1, 5)
    encoded = one_hot(labels, 6)
    assert encoded.shape == (1, 6, 1, 1, 5)
    assert torch.equal(encoded.argmax(1, keepdim=True), labels)
    assert torch.equal(one_hot(labels, 6, background=False), encoded[:, 1:])
    with pytest.raises(ValueError):
        one_hot(labels, 5)


def test_mask_alignment_counts_mislabelled_voxels():
    labels = torch.zeros(1, 1, 6, 6, 6, dtype=torch.long)
    labels[:, :, 1:4, 1:5, 1:5] = 1
    labels[:, :, 4:, 1:5, 1:5] = 2
    other = torch.roll(labels, shifts=1, dims=2)
    differing = (labels != other).sum().item()
    value = mask_alignment(one_hot(labels, 3), one_hot(other, 3))
    # each mislabelled voxel contributes 1/2 (1 + 1) = 1
    assert value.item() == pytest.approx(differing / labels.numel())
    assert mask_alignment(one_hot(labels, 3), one_hot(labels, 3)).item() == 0.0


# ---------------------------------------------------------------------- points, EPE, MSE
def test_keypoint_loss_is_exact_on_known_points():
    moving = torch.tensor([[[0.0, 0.0, 0.0], [10.0, 5.0, -3.0], [1.0, 1.0, 1.0]]])
    offsets = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 2.0, 2.0]]])
    assert keypoint_loss(moving + offsets, moving).item() == pytest.approx((25 + 4 + 9) / 3)
    weights = torch.tensor([[1.0, 0.0, 1.0]])
    assert keypoint_loss(moving + offsets, moving, weights).item() == pytest.approx(17.0)


def test_map_points_follows_the_field():
    field = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1, 1)
    field = field.expand(1, 3, *GRID.shape)
    fixed_points = torch.from_numpy(GRID.index_to_physical(np.array([[2.0, 3.5, 7.25]])))[None]
    mapped = map_points(field, GRID, fixed_points)
    assert keypoint_loss(mapped, fixed_points).item() == pytest.approx(9.0)


def test_endpoint_error_of_constant_shift():
    target = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1, 1)
    target = target.expand(2, 3, *GRID.shape)
    field = torch.zeros_like(target)
    assert endpoint_error(field, target).item() == pytest.approx(5.0)
    assert endpoint_error(target, target).item() == 0.0


def test_mse_and_local_ncc_values():
    fixed = random_image(GRID)
    assert mse(fixed, fixed + 0.5).item() == pytest.approx(0.25)
    assert abs(local_ncc(fixed, fixed).item()) < 1e-6
    assert abs(local_ncc(fixed, 3.0 * fixed + 2.0).item()) < 1e-3  # affine intensity change
    assert local_ncc(fixed, 1.0 - fixed).item() > 1.99  # anti-correlated: worst
    assert 0.8 < local_ncc(fixed, random_image(GRID, seed=1), window=5).item() < 1.2


def test_reduction_none_gives_one_value_per_sample():
    fixed = random_image(GRID)
    per_sample = mse(fixed, torch.zeros_like(fixed), reduction="none")
    assert per_sample.shape == (2,)
    assert mse(fixed, torch.zeros_like(fixed)).item() == pytest.approx(per_sample.mean().item())


# --------------------------------------------------------------------- masks, gradients
def region_pair():
    """Inputs identical (or identity field) for z < 12 and different for z >= 12."""
    changed = (torch.arange(GRID.shape[0], dtype=torch.float64) >= 12).view(1, 1, -1, 1, 1)
    fixed = random_image(GRID)
    moving = fixed + changed * random_image(GRID, seed=3)
    field = changed * smooth_field(GRID, batch=2)
    labels = (4 * random_image(GRID, seed=4)).long()
    other = torch.where(changed.bool(), (4 * random_image(GRID, seed=5)).long(), labels)
    return fixed, moving, field, one_hot(labels, 4).double(), one_hot(other, 4).double()


def masked_losses(mask):
    fixed, moving, field, lobes, other = region_pair()
    target = torch.zeros_like(field)
    return {
        "ngf": ngf_distance(fixed, moving, GRID, mask=mask),
        "ncc": local_ncc(fixed, moving, mask=mask),
        "mse": mse(fixed, moving, mask=mask),
        "curvature": curvature_regularizer(field, GRID, mask=mask),
        "volume": volume_change_control(field, GRID, 0.2, mask=mask),
        "mask": mask_alignment(lobes, other, mask=mask),
        "epe": endpoint_error(field, target, mask=mask),
    }


def test_mask_restricts_every_loss():
    z = torch.arange(GRID.shape[0]).view(1, 1, -1, 1, 1).expand(2, 1, *GRID.shape)
    unchanged = (z < 7).double()  # margin of the 9-voxel NCC window
    changed = (z >= 14).double()
    for name, value in masked_losses(unchanged).items():
        assert abs(value.item()) < 1e-6, name
    for name, value in masked_losses(changed).items():
        assert value.item() > 1e-3, name
    unmasked, doubled = masked_losses(None), masked_losses(2.0 * torch.ones_like(unchanged))
    for name, value in unmasked.items():
        assert doubled[name].item() == pytest.approx(value.item()), name


def test_empty_mask_gives_zero_without_nan():
    fixed, moving, field, lobes, other = region_pair()
    field.requires_grad_(True)
    empty = torch.zeros(2, 1, *GRID.shape, dtype=torch.float64)
    warped = warp(moving, GRID, field, GRID)
    values = [ngf_distance(fixed, warped, GRID, mask=empty), local_ncc(fixed, warped, mask=empty),
              mse(fixed, warped, mask=empty), curvature_regularizer(field, GRID, mask=empty),
              volume_change_control(field, GRID, 0.2, mask=empty),
              endpoint_error(field, torch.zeros_like(field), mask=empty)]
    for value in values:
        assert value.item() == 0.0
        (grad,) = torch.autograd.grad(value, field, retain_graph=True)
        assert torch.isfinite(grad).all()


def folding_field() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    field = 3.0 * torch.randn(2, 3, *GRID.shape, generator=gen, dtype=torch.float64)
    assert (jacobian_determinant(field, GRID) <= 0).any()  # really folds
    return field


def test_every_loss_has_finite_gradients_on_folding_fields():
    fixed, moving, _, lobes, _ = region_pair()
    field = folding_field().requires_grad_(True)
    warped = warp(moving, GRID, field, GRID)
    warped_lobes = warp(lobes, GRID, field, GRID)
    points = torch.from_numpy(GRID.index_to_physical(np.array([[2.0, 3.0, 4.0],
                                                               [10.5, 7.0, 20.0]])))
    points = points[None].expand(2, -1, -1)
    losses = {
        "ngf_auto": ngf_distance(fixed, warped, GRID),
        "ngf_fixed": ngf_distance(fixed, warped, GRID, epsilon=0.1),
        "ngf_zero": ngf_distance(fixed, warped, GRID, epsilon=0.0),
        "ncc": local_ncc(fixed, warped), "mse": mse(fixed, warped),
        "curvature": curvature_regularizer(field, GRID),
        "volume": volume_change_control(field, GRID, 0.05),
        "mask": mask_alignment(lobes, warped_lobes),
        "keypoints": keypoint_loss(map_points(field, GRID, points), points + 1.0),
        "epe": endpoint_error(field, torch.zeros_like(field)),
    }
    for name, value in losses.items():
        (grad,) = torch.autograd.grad(value, field, retain_graph=True)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), name
        assert grad.abs().max() > 0, name


def test_endpoint_error_gradient_is_finite_where_fields_agree():
    field = torch.zeros(1, 3, *GRID.shape, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(endpoint_error(field, torch.zeros_like(field)), field)
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------------------ modules
def test_modules_match_functions():
    fixed, moving, field, lobes, other = region_pair()
    mask = torch.ones(2, 1, *GRID.shape, dtype=torch.float64)
    pts = torch.rand(2, 5, 3, dtype=torch.float64)
    pairs = [
        (NGFLoss()(fixed=fixed, warped=moving, grid=GRID, mask=mask),
         ngf_distance(fixed, moving, GRID, mask=mask)),
        (CurvatureLoss()(field=field, grid=GRID), curvature_regularizer(field, GRID)),
        (VolumeChangeLoss(0.1)(field=field, grid=GRID), volume_change_control(field, GRID, 0.1)),
        (MaskAlignmentLoss()(fixed=lobes, warped=other), mask_alignment(lobes, other)),
        (KeypointLoss()(mapped_points=pts, moving_points=pts + 1), keypoint_loss(pts, pts + 1)),
        (LocalNCCLoss(5)(fixed=fixed, warped=moving), local_ncc(fixed, moving, 5)),
        (MSELoss()(fixed=fixed, warped=moving), mse(fixed, moving)),
        (EndpointErrorLoss()(field=field, target=0 * field), endpoint_error(field, 0 * field)),
    ]
    for module_value, function_value in pairs:
        assert module_value.item() == function_value.item()


def test_registration_loss_combines_weighted_terms():
    fixed, moving, field, lobes, other = region_pair()
    points = torch.from_numpy(GRID.index_to_physical(np.array([[3.0, 4.0, 5.0]])))
    points = points[None].expand(2, -1, -1)
    weights = LossWeights(keypoints=0.5)
    loss = RegistrationLoss(weights)
    total, terms = loss(fixed=fixed, warped=moving, field=field, grid=GRID, t=0.1,
                        fixed_lobes=lobes, warped_lobes=other,
                        fixed_points=points, moving_points=points)
    assert set(terms) == {"ngf", "curvature", "mask", "volume", "keypoints"}
    expected = sum(getattr(weights, name) * value for name, value in terms.items())
    assert total.item() == pytest.approx(expected.item())
    assert terms["volume"].item() == volume_change_control(field, GRID, 0.1).item()
    # optional inputs missing: those terms are skipped; similarity chosen by the weights
    ncc_loss = RegistrationLoss(LossWeights().with_similarity("ncc", 2.0))
    total, terms = ncc_loss(fixed=fixed, warped=moving, field=field, grid=GRID)
    assert set(terms) == {"ncc", "curvature", "volume"}
    assert total.item() == pytest.approx(
        2.0 * terms["ncc"].item() + 10.0 * terms["curvature"].item()
        + 0.01 * terms["volume"].item())
    with pytest.raises(ValueError):
        LossWeights().with_similarity("ssd")
    with pytest.raises(ValueError):
        LossWeights(ngf=-1.0)
