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


def test_similarity_choice_reaches_the_refinement_schedule():
    """``register --similarity``/``--similarity-weight`` -> options -> the refinement's
    config: MIND compares descriptors by MSE, NCC and NGF intensities; bad names refused."""
    from LungDeepRegLib.cli import build_parser
    from LungDeepRegLib.cli.register import options_from
    from LungDeepRegLib.pipeline.crops import refine_config
    from LungDeepRegLib.pipeline.refine_config import RefineConfig, with_similarity

    args = build_parser().parse_args(["register", "--fixed", "f.nii", "--moving", "m.nii",
                                      "--out", "o", "--similarity", "mind",
                                      "--similarity-weight", "2.5"])
    options = options_from(args)
    assert (options.similarity, options.similarity_weight) == ("mind", 2.5)
    config = refine_config(None, False, None, options.similarity, options.similarity_weight)
    assert config.features == "mind"
    assert (config.weights.ngf, config.weights.ncc, config.weights.mse) == (0.0, 0.0, 2.5)
    assert refine_config(None, True).features == "intensity"
    ncc = with_similarity(RefineConfig(), "ncc")
    assert ncc.features == "intensity" and ncc.weights.ncc > 0 and ncc.weights.ngf == 0
    with pytest.raises(ValueError, match="similarity must be one of"):
        with_similarity(RefineConfig(), "mutual-information")
    with pytest.raises(ValueError, match="features must be one of"):
        RefineConfig(features="gradients")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["register", "--fixed", "f", "--moving", "m", "--out", "o",
                                   "--similarity", "mi"])
    # where it is measured: the whole crop by default, the lung mask on request
    lung = options_from(build_parser().parse_args(
        ["register", "--fixed", "f", "--moving", "m", "--out", "o",
         "--similarity-region", "lung"]))
    assert not refine_config(None, False).use_mask
    assert refine_config(None, False, None, "ngf", None, lung.similarity_region).use_mask
    with pytest.raises(ValueError, match="similarity region"):
        with_similarity(RefineConfig(), "ngf", region="body")
