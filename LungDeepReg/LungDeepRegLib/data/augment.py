"""What real scans vary in, applied to a synthetic pair: resolution and slice thickness,
HU calibration, noise, and a moving field of view that does not cover the lungs.

A network trained on one well-resolved CT deformed by smooth fields sees inputs cleaner
than most clinical pairs: the POPI light phases are 5x5x6 mm, Lung-PET-CT-Dx has 5-8 mm
slices, scanners differ by tens of HU, and an exhale scan is often cut at the apex or the
base. Each pair therefore gets, from its own generator (so it stays reproducible):

* blur of either image along z (thick slices) and in-plane (a soft kernel or coarse
  pixels), as a Gaussian of up to ``MAX_BLUR_VOXELS`` crop voxels;
* a HU offset of up to ``MAX_OFFSET_HU`` and noise of up to ``MAX_NOISE_HU`` per image;
* with probability ``CUT_PROBABILITY``, the moving image cut by a plane across one axis in
  its outer ``MAX_CUT_SHARE``, the lost side filled by repeating the last kept slice (as
  the pipeline fills a moving crop beyond the moving field of view,
  :func:`~LungDeepRegLib.pipeline.multistart.border_extended`).

The ground-truth field and the masks are unchanged: a network must still report the motion
where the moving image is blurred or cut (the supervised term teaches it to extrapolate).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..networks import gaussian_smooth
from ..preprocess.crop import HU_MAX, HU_MIN
from .fields import uniform
from .pairs import SyntheticPair

MAX_BLUR_VOXELS = (1.2, 1.2, 2.0)  # Gaussian sigma (x, y, z) in crop voxels
MAX_OFFSET_HU = 40.0
MAX_NOISE_HU = 40.0
CUT_PROBABILITY = 0.25
MAX_CUT_SHARE = 0.2  # of the axis, from either end
HU_RANGE = HU_MAX - HU_MIN  # network intensity 1.0 in HU


def augment_pair(pair: SyntheticPair, generator: torch.Generator) -> SyntheticPair:
    """``pair`` with both images degraded as a clinical scan may be (module docstring)."""
    fixed = _degrade(pair.fixed, generator)
    moving = _degrade(pair.moving, generator)
    moving = _cut_field_of_view(moving, generator)
    return replace(pair, fixed=fixed, moving=moving)


def _degrade(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, HU offset and noise of one ``(1, 1, z, y, x)`` image in network intensities."""
    sigma = tuple(uniform(generator, 0.0, high) for high in MAX_BLUR_VOXELS)
    offset = uniform(generator, -MAX_OFFSET_HU, MAX_OFFSET_HU) / HU_RANGE
    noise_sd = uniform(generator, 0.0, MAX_NOISE_HU) / HU_RANGE
    noise = torch.randn(tuple(image.shape), generator=generator).to(image.device)
    blurred = gaussian_smooth(image, sigma) if max(sigma) > 0.3 else image
    return (blurred + offset + noise_sd * noise).clamp(0.0, 1.0)


def _cut_field_of_view(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """With probability ``CUT_PROBABILITY``, repeat the slice at a random plane near one end
    of a random axis over everything beyond it."""
    cut = uniform(generator, 0.0, 1.0) < CUT_PROBABILITY
    axis = 2 + int(torch.randint(3, (), generator=generator))  # z, y or x dimension
    from_start = uniform(generator, 0.0, 1.0) < 0.5
    share = uniform(generator, 0.05, MAX_CUT_SHARE)
    if not cut:
        return image
    length = image.shape[axis]
    kept = max(1, int(round(length * share)))
    if from_start:
        edge = image.narrow(axis, kept, 1)
        return torch.cat((edge.expand_as(image.narrow(axis, 0, kept)),
                          image.narrow(axis, kept, length - kept)), dim=axis)
    edge = image.narrow(axis, length - kept - 1, 1)
    return torch.cat((image.narrow(axis, 0, length - kept),
                      edge.expand_as(image.narrow(axis, length - kept, kept))), dim=axis)
