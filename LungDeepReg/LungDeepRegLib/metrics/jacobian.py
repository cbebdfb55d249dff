"""Regularity of a deformation from its Jacobian determinant.

``det`` is ``det(I + du/dx)`` as :func:`LungDeepRegLib.spatial.flow.jacobian_determinant`
returns it: a torch tensor ``(N, 1, z, y, x)``; any torch tensor or NumPy array works, and
all its voxels count (every batch element). A ``mask`` (boolean, or numeric with non-zero =
inside) selects the region; it must broadcast to ``det`` (a ``(z, y, x)`` lung mask does).
Without a mask the region is the whole image. The region is always reported with the
numbers, because folding inside the lungs and in the whole field of view differ.

- Folding: ``det <= 0`` (the map is not locally invertible there).
- SD of log-Jacobian: population standard deviation (ddof 0) of ``log(max(det, 1e-9))``
  over the region; folded voxels enter at ``log(1e-9)``, so folding raises it sharply.

An empty region gives NaN values (and a count of 0), never an error.
"""

from __future__ import annotations

import numpy as np
import torch

DET_FLOOR = 1e-9
ArrayLike = torch.Tensor | np.ndarray


def folding_fraction(det: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Fraction of region voxels with ``det <= 0`` (NaN for an empty region)."""
    values = _region_values(det, mask)
    return float(np.count_nonzero(values <= 0) / values.size) if values.size else float("nan")


def sd_log_jacobian(det: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Standard deviation (ddof 0) of ``log(max(det, 1e-9))`` over the region."""
    values = _region_values(det, mask)
    return float(np.log(np.maximum(values, DET_FLOOR)).std()) if values.size else float("nan")


def jacobian_summary(det: ArrayLike, mask: ArrayLike | None = None) -> dict[str, float | int | str]:
    """Folding, SD of log-Jacobian and det statistics over the region, with its name.

    Returns keys ``region`` ("lung mask" with a mask, else "whole image"), ``voxels``,
    ``folding_count``, ``folding_fraction``, ``sd_log_jacobian``, ``mean_det``, ``min_det``,
    ``max_det``.
    """
    values = _region_values(det, mask)
    empty = values.size == 0
    nan = float("nan")
    return {
        "region": "whole image" if mask is None else "lung mask",
        "voxels": int(values.size),
        "folding_count": int(np.count_nonzero(values <= 0)),
        "folding_fraction": folding_fraction(values),
        "sd_log_jacobian": sd_log_jacobian(values),
        "mean_det": nan if empty else float(values.mean()),
        "min_det": nan if empty else float(values.min()),
        "max_det": nan if empty else float(values.max()),
    }


def _as_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _region_values(det: ArrayLike, mask: ArrayLike | None) -> np.ndarray:
    """The determinants inside the region, flat, float64."""
    det_array = _as_numpy(det).astype(np.float64, copy=False)
    if mask is None:
        return det_array.ravel()
    mask_array = _as_numpy(mask) != 0
    try:
        mask_array = np.broadcast_to(mask_array, det_array.shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask_array.shape} does not fit det of shape "
                         f"{det_array.shape}") from None
    return det_array[mask_array]
