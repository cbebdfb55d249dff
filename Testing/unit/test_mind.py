"""MIND-SSC descriptors (losses.features): the properties the refinement relies on."""

from __future__ import annotations

import pytest
import torch

from LungDeepRegLib.losses import MIND_CHANNELS, mind_ssc
from LungDeepRegLib.losses.features import ssc_pairs


def blobs(shape=(24, 26, 28), seed=0) -> torch.Tensor:
    """A smooth random volume with structure at a few voxels' scale."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 1, *shape), generator=generator)
    return torch.nn.functional.avg_pool3d(noise, 3, stride=1, padding=1)


def test_twelve_pairs_of_neighbours_sqrt2_apart():
    pairs = ssc_pairs()
    assert len(pairs) == MIND_CHANNELS == 12
    for p, q in pairs:
        assert sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) == 2
    assert len({frozenset(pair) for pair in pairs}) == 12


def test_descriptor_range_and_shape():
    image = blobs()
    descriptor = mind_ssc(image)
    assert descriptor.shape == (1, 12, *image.shape[2:])
    assert float(descriptor.min()) > 0.0
    assert torch.allclose(descriptor.amax(1), torch.ones(1, *image.shape[2:]))


def test_invariant_to_a_linear_intensity_change():
    """A HU offset or a contrast change (another scanner, another kernel) changes nothing."""
    image = blobs()
    assert torch.allclose(mind_ssc(image), mind_ssc(3.0 * image - 0.4), atol=1e-5)


def test_flat_image_is_all_ones():
    descriptor = mind_ssc(torch.full((1, 1, 10, 10, 10), 0.3))
    assert torch.allclose(descriptor, torch.ones_like(descriptor))


def test_moves_with_the_image():
    """Shifting the image shifts the descriptor (away from the borders)."""
    image = blobs(seed=1)
    shifted = torch.roll(image, shifts=(2, -3), dims=(2, 4))
    moved = torch.roll(mind_ssc(image), shifts=(2, -3), dims=(2, 4))
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6), slice(6, -6))
    assert torch.allclose(mind_ssc(shifted)[inner], moved[inner], atol=1e-5)


def test_tells_structures_apart():
    """Two different images differ more than an image and its noisy copy."""
    image, other = blobs(seed=2), blobs(seed=3)
    noisy = image + 0.01 * torch.randn(image.shape, generator=torch.Generator().manual_seed(4))
    same = (mind_ssc(image) - mind_ssc(noisy)).square().mean()
    different = (mind_ssc(image) - mind_ssc(other)).square().mean()
    assert float(different) > 3 * float(same)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="expects"):
        mind_ssc(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="dilation"):
        mind_ssc(torch.zeros(1, 1, 8, 8, 8), dilation=0)
