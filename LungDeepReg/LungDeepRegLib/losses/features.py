"""Image descriptors compared by a similarity term instead of raw intensities.

MIND-SSC (Heinrich et al., "Towards realtime multimodal fusion for image-guided
interventions using self-similarity context", MICCAI 2013, eqs. 1-3 with the SSC
neighbourhood of section 2.2): at every voxel, how alike the small patches around pairs of
its six neighbours are. Each of the 12 pairs of six-neighbours that lie ``sqrt(2) d`` apart
gives one channel,

    D_pq(x)  = mean_{r in patch} (I(x + p + r) - I(x + q + r))^2
    V(x)     = mean_pq D_pq(x)                       (local noise estimate)
    MIND_pq  = exp(-D_pq(x) / V(x)),  divided by its maximum over the 12 channels.

The descriptor is invariant to a linear change of intensity (HU offset, contrast) and
describes local structure (vessels, fissures, airway walls), which is why ConvexAdam
(Siebert, Hansen & Heinrich 2021) compares the MIND-SSC of both lung CTs by their squared
difference, the choice of the refinement's ``similarity="mind"``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

#: The six-neighbourhood (z, y, x), in voxels of one dilation step.
SIX_NEIGHBOURS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
MIND_CHANNELS = 12


def ssc_pairs() -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The 12 pairs of six-neighbours at squared distance 2 (opposite ones are left out:
    their patches lie 2d apart and carry the same information as two of the 12)."""
    pairs = []
    for p, q in itertools.combinations(SIX_NEIGHBOURS, 2):
        if sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) == 2:
            pairs.append((p, q))
    return pairs


def _shifted(padded: torch.Tensor, offset: tuple[int, int, int], pad: int,
             shape: tuple[int, int, int]) -> torch.Tensor:
    """``I(x + offset)`` from an image padded by ``pad`` voxels on every side."""
    (dz, dy, dx), (d, h, w) = offset, shape
    return padded[..., pad + dz:pad + dz + d, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2,
             epsilon: float = 1e-3) -> torch.Tensor:
    """MIND-SSC descriptor ``(N, 12, z, y, x)`` of ``image`` ``(N, 1, z, y, x)``, in (0, 1].

    Args:
        image: one-channel images.
        radius: patch half-size in voxels (a box of ``2 radius + 1`` voxels per side).
        dilation: distance ``d`` of the six neighbours from the voxel, in voxels.
        epsilon: floor of the noise estimate relative to its image mean (flat regions,
            e.g. air outside the body, would otherwise divide by zero).

    Border voxels repeat the image's edge (replicate padding), as the refinement's border-
    extended moving crop does.
    """
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError(f"mind_ssc expects (N, 1, z, y, x), got {tuple(image.shape)}")
    if radius < 0 or dilation < 1:
        raise ValueError("mind_ssc needs radius >= 0 and dilation >= 1")
    shape = tuple(image.shape[2:])
    padded = F.pad(image, (dilation,) * 6, mode="replicate")
    distances = torch.cat([
        (_shifted(padded, tuple(dilation * c for c in p), dilation, shape)
         - _shifted(padded, tuple(dilation * c for c in q), dilation, shape)).square()
        for p, q in ssc_pairs()], dim=1)
    if radius > 0:  # patch mean by a box filter (replicate edges, no zero padding)
        width = 2 * radius + 1
        distances = F.avg_pool3d(F.pad(distances, (radius,) * 6, mode="replicate"), width,
                                 stride=1)
    variance = distances.mean(1, keepdim=True)
    floor = variance.flatten(1).mean(1).view(-1, 1, 1, 1, 1)
    variance = torch.maximum(variance, floor * epsilon + torch.finfo(image.dtype).tiny)
    descriptor = torch.exp(-distances / variance)
    return descriptor / descriptor.amax(1, keepdim=True)
