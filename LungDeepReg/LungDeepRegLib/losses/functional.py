"""Registration losses as stateless functions (style of deepali's ``losses.functional``).

Units fixed by the project (docs/CONVENTIONS.md): tensors ``(N, C, z, y, x)``; displacement
fields ``(N, 3, z, y, x)`` in LPS mm on the fixed grid, ``T(x) = x + u(x)``; image gradients
per mm; every loss is a MEAN over its domain (the voxels of ``mask`` where one is given,
as a weighted mean), never an integral. An empty mask gives 0, not NaN.

Each function first reduces to one value per batch sample, then ``reduction`` combines the
samples: ``"mean"`` (default), ``"sum"`` or ``"none"`` (a ``(N,)`` tensor).

Main reference: Hering et al., "CNN-based lung CT registration with multiple anatomical
constraints", MedIA 2021 (loss L = D_NGF + alpha R_curv + beta B_mask + gamma V_vcc + delta K).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..spatial import Grid, jacobian_determinant, spatial_gradient

Reduction = Literal["mean", "sum", "none"]


# ------------------------------------------------------------------------------- helpers
def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` ``(N, 1, ...)`` per sample, weighted by ``mask``: shape ``(N,)``."""
    if mask is None:
        return values.flatten(1).mean(1)
    weight = torch.broadcast_to(mask.to(values.dtype), values.shape)
    total = (values * weight).flatten(1).sum(1)
    # clamp rather than torch.where: an empty mask gives 0 / tiny = 0 with finite gradients
    count = weight.flatten(1).sum(1).clamp_min(torch.finfo(values.dtype).tiny)
    return total / count


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() != 5:
        raise ValueError(f"{what}: expected (N, C, z, y, x), got {tuple(a.shape)}")


def _check_grid(tensor: torch.Tensor, grid: Grid) -> None:
    if tuple(tensor.shape[2:]) != grid.shape:
        raise ValueError(f"tensor spatial shape {tuple(tensor.shape[2:])} != grid {grid.shape}")


# ----------------------------------------------------------------------------------- NGF
def ngf_edge_parameter(fixed: torch.Tensor, warped: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Automatic NGF edge parameter ``e`` per sample, shape ``(N,)``, intensity per mm.

    Haber & Modersitzki (2006) choose ``e`` relative to the mean gradient magnitude. The NGF
    formula uses ONE ``e`` for both images (so that NGF(F, F) = 0 exactly), so we take the
    average of both images' mean gradient magnitudes (over the whole image, all channels):

        e = ( mean|grad F| + mean|grad M(y)| ) / 2

    It is homogeneous of degree 1 in the intensities, hence scaling both images by one factor
    ``a`` scales ``e`` by ``a`` and leaves NGF unchanged. The arithmetic (not geometric) mean
    keeps ``e > 0`` when only one image is flat (e.g. a warped image outside its domain).
    ``e`` is an estimated constant, not a parameter to optimise: it is computed without
    gradient, so a network cannot lower the loss by changing the edge level.
    """
    _check_pair(fixed, warped, "ngf_edge_parameter")
    with torch.no_grad():
        return _edge_from_gradients(spatial_gradient(fixed, grid), spatial_gradient(warped, grid))


def _edge_from_gradients(grad_f: torch.Tensor, grad_m: torch.Tensor) -> torch.Tensor:
    mean_f = _magnitude(grad_f.detach()).flatten(1).mean(1)
    mean_m = _magnitude(grad_m.detach()).flatten(1).mean(1)
    return 0.5 * (mean_f + mean_m)


def _magnitude(gradient: torch.Tensor) -> torch.Tensor:
    """``|gradient|`` over dim 2 of ``(N, C, 3, z, y, x)``: square, sum, root, because
    ``Tensor.norm(dim=2)`` reduces over that strided axis 25x slower on the CPU (1.05 s
    against 0.04 s at 192x160x192)."""
    return gradient.square().sum(dim=2).sqrt()


def ngf_distance(
    fixed: torch.Tensor,
    warped: torch.Tensor,
    grid: Grid,
    epsilon: float | None = None,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Normalized gradient field distance D_NGF (Haber & Modersitzki 2006; Hering 2021).

        D_NGF = mean_x [ 1 - <grad M(y), grad F>_e^2 / (|grad M(y)|_e^2 |grad F|_e^2) ]

    with ``<u, v>_e = u.v + e^2`` and ``|v|_e^2 = <v, v>_e``, so each voxel lies in [0, 1]
    (Cauchy-Schwarz on the vectors (u, e), (v, e)) and NGF(F, F) = 0 exactly.

    Args:
        fixed, warped: ``(N, C, z, y, x)`` fixed image and moving image warped onto ``grid``.
            Several channels are averaged.
        grid: fixed grid; gradients are per mm, honouring spacing and direction.
        epsilon: edge parameter ``e`` in intensity per mm; ``None`` = automatic,
            see :func:`ngf_edge_parameter` (invariant to scaling both images' intensities;
            held constant, so the gradient is that of NGF at fixed ``e``).
        mask: ``(N, 1, z, y, x)`` weights of the mean (the paper: fixed lung mask).
    """
    _check_pair(fixed, warped, "ngf_distance")
    _check_grid(fixed, grid)
    if epsilon is not None and epsilon < 0:
        raise ValueError(f"NGF epsilon must be >= 0, got {epsilon}")
    grad_f = spatial_gradient(fixed, grid)
    grad_m = spatial_gradient(warped, grid)
    if epsilon is None:
        e2 = _edge_from_gradients(grad_f, grad_m).square().view(-1, 1, 1, 1, 1)
    else:
        e2 = torch.as_tensor(float(epsilon) ** 2, dtype=fixed.dtype, device=fixed.device)
    inner = (grad_m * grad_f).sum(2) + e2
    norm_m = (grad_m * grad_m).sum(2) + e2
    norm_f = (grad_f * grad_f).sum(2) + e2
    denominator = norm_m * norm_f
    # only with e = 0: a zero denominator gets the e -> 0 limit, 1 where both gradients
    # vanish (alike), 0 where one does; the safe divisor keeps gradients finite
    positive = denominator > 0
    safe = torch.where(positive, denominator, torch.ones_like(denominator))
    limit = (norm_m == norm_f).to(inner.dtype)
    ratio = torch.where(positive, inner.square() / safe, limit)
    per_voxel = (1.0 - ratio).mean(1, keepdim=True)
    return _reduce(_masked_mean(per_voxel, mask), reduction)


# ---------------------------------------------------------------------------- curvature
def curvature_regularizer(
    field: torch.Tensor,
    grid: Grid,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Curvature regulariser R_curv (Fischer & Modersitzki 2003; Hering et al. 2021).

        R_curv = mean_x  sum_c (Laplace u_c(x))^2     (Laplace u in mm^-1: mm / mm^2)

    The Laplacian is rotation invariant, so with an orthonormal direction matrix it equals
    the sum over index axes of the second differences divided by spacing^2. It is evaluated
    on interior voxels only (no padding), which makes R_curv exactly 0 for affine fields;
    ``mask`` (full grid) is cropped to the interior alike. Each axis needs >= 3 voxels.
    """
    if field.dim() != 5 or field.shape[1] != 3:
        raise ValueError(f"field must be (N, 3, z, y, x), got {tuple(field.shape)}")
    _check_grid(field, grid)
    if min(grid.shape) < 3:
        raise ValueError(f"curvature needs >= 3 voxels per axis, got {grid.shape}")
    sx, sy, sz = grid.spacing
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    centre = 2.0 * field[inner]
    d2z = field[:, :, 2:, 1:-1, 1:-1] - centre + field[:, :, :-2, 1:-1, 1:-1]
    d2y = field[:, :, 1:-1, 2:, 1:-1] - centre + field[:, :, 1:-1, :-2, 1:-1]
    d2x = field[:, :, 1:-1, 1:-1, 2:] - centre + field[:, :, 1:-1, 1:-1, :-2]
    laplacian = d2x / sx**2 + d2y / sy**2 + d2z / sz**2
    per_voxel = laplacian.square().sum(1, keepdim=True)
    return _reduce(_masked_mean(per_voxel, None if mask is None else mask[inner]), reduction)


# ------------------------------------------------------------------------ volume change
def volume_change_penalty(det: torch.Tensor, t: float) -> torch.Tensor:
    """Volume change penalty psi_t of V_vcc (Hering et al. 2021), element-wise on det.

        psi_t(z) = (z - 1)^2 / z                     for z >= t
        psi_t(z) = (1 - 1/t^2) z + 2 (1 - t) / t     for z <  t   (C^1 linear continuation)

    psi(1) = 0 and psi(z) = psi(1/z) on [t, 1/t]; the linear branch keeps the value and
    gradient finite for folding (z <= 0), where the rational branch would blow up.
    """
    if not 0.0 < t <= 1.0:
        raise ValueError(f"volume change threshold t must be in (0, 1], got {t}")
    # clamp before dividing: torch.where would otherwise back-propagate NaN from 1/0
    safe = det.clamp_min(t)
    rational = (safe - 1.0).square() / safe
    linear = (1.0 - 1.0 / t**2) * det + 2.0 * (1.0 - t) / t
    return torch.where(det >= t, rational, linear)


def volume_change_control(
    field: torch.Tensor,
    grid: Grid,
    t: float,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """V_vcc = mean_x psi_t(det(I + du/dx)) (Hering et al. 2021), derivatives in mm/mm."""
    det = jacobian_determinant(field, grid)
    return _reduce(_masked_mean(volume_change_penalty(det, t), mask), reduction)


# ------------------------------------------------------------------------------ labels
def one_hot(labels: torch.Tensor, num_classes: int, background: bool = True,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer labels ``(N, 1, z, y, x)`` in ``0 .. num_classes-1`` to ``(N, K, z, y, x)``.

    ``background=False`` drops channel 0 (e.g. keep only the lobes 1..5).
    """
    if labels.dim() != 5 or labels.shape[1] != 1:
        raise ValueError(f"labels must be (N, 1, z, y, x), got {tuple(labels.shape)}")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("labels must be integer valued")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    encoded = F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).to(dtype)
    return encoded if background else encoded[:, 1:]


def mask_alignment(
    fixed_onehot: torch.Tensor,
    warped_moving_onehot: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Mask alignment B_mask (Hering et al. 2021): 1/2 SSD of one-hot label maps.

        B_mask = mean_x  1/2 sum_k (L_F,k(x) - L_M,k(y(x)))^2

    ``warped_moving_onehot`` is the one-hot moving map warped LINEARLY (soft, differentiable).
    """
    _check_pair(fixed_onehot, warped_moving_onehot, "mask_alignment")
    per_voxel = 0.5 * (fixed_onehot - warped_moving_onehot).square().sum(1, keepdim=True)
    return _reduce(_masked_mean(per_voxel, mask), reduction)


# --------------------------------------------------------------------------- keypoints
def keypoint_loss(
    mapped_fixed_points: torch.Tensor,
    moving_points: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Keypoint loss K (Hering et al. 2021, term K): mean squared distance in mm^2.

        K = mean_i || y(k_F,i) - k_M,i ||^2

    Args:
        mapped_fixed_points: ``(N, P, 3)`` or ``(P, 3)`` fixed keypoints mapped by
            ``y(x) = x + u(x)``, LPS mm.
        moving_points: corresponding moving keypoints, same shape.
        mask: ``(N, P)`` or ``(P,)`` point weights (e.g. 0 for padding points).
    """
    if mapped_fixed_points.shape != moving_points.shape or moving_points.shape[-1] != 3:
        raise ValueError("keypoints must be matching (N, P, 3) or (P, 3) tensors")
    squared = (mapped_fixed_points - moving_points).square().sum(-1)
    squared = squared.reshape(-1, 1, squared.shape[-1])
    weight = None if mask is None else mask.reshape(-1, 1, squared.shape[-1])
    return _reduce(_masked_mean(squared, weight), reduction)


# ------------------------------------------------------------------ intensity measures
def local_ncc(
    fixed: torch.Tensor,
    warped: torch.Tensor,
    window: int = 9,
    mask: torch.Tensor | None = None,
    epsilon: float = 1e-5,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Local normalised cross correlation loss, ``1 - mean_x NCC_w(x)`` in [0, 2].

        NCC_w = (cov_w(F, M) + eps) / sqrt((var_w(F) + eps) (var_w(M) + eps))

    over a cubic window of ``window`` voxels (odd; voxels, not mm). The signed NCC is used
    (anti-correlation is a mismatch for CT/CT). ``eps`` (intensity^2) regularises flat
    windows like NGF's ``e``: by Cauchy-Schwarz NCC_w <= 1 and identical images give 0 loss
    everywhere. Border windows are truncated (mean over the voxels inside the image).
    """
    _check_pair(fixed, warped, "local_ncc")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"NCC window must be odd and >= 1, got {window}")
    stats = torch.cat((fixed, warped, fixed * fixed, warped * warped, fixed * warped), 1)
    local = F.avg_pool3d(stats, window, stride=1, padding=window // 2, count_include_pad=False)
    mf, mm, ff, mm2, fm = local.chunk(5, dim=1)
    # rounding can make E[x^2] - E[x]^2 slightly negative; variances are >= 0
    var_f = (ff - mf * mf).clamp_min(0.0) + epsilon
    var_m = (mm2 - mm * mm).clamp_min(0.0) + epsilon
    ncc = (fm - mf * mm + epsilon) / torch.sqrt(var_f * var_m)
    per_voxel = 1.0 - ncc.mean(1, keepdim=True)
    return _reduce(_masked_mean(per_voxel, mask), reduction)


def mse(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None,
        reduction: Reduction = "mean") -> torch.Tensor:
    """Mean squared intensity difference, ``mean_x (F(x) - M(y(x)))^2`` (channels averaged)."""
    _check_pair(fixed, warped, "mse")
    per_voxel = (fixed - warped).square().mean(1, keepdim=True)
    return _reduce(_masked_mean(per_voxel, mask), reduction)


def endpoint_error(field: torch.Tensor, target_field: torch.Tensor,
                   mask: torch.Tensor | None = None, reduction: Reduction = "mean"
                   ) -> torch.Tensor:
    """Mean endpoint error ``mean_x ||u(x) - u*(x)||`` in mm (supervised training, Eppenhof
    et al. 2020 / Sokooti et al. 2017 with synthetic ground-truth fields)."""
    _check_pair(field, target_field, "endpoint_error")
    # vector_norm's backward is defined as 0 at a zero difference (no NaN)
    per_voxel = torch.linalg.vector_norm(field - target_field, dim=1, keepdim=True)
    return _reduce(_masked_mean(per_voxel, mask), reduction)
