"""The instance optimisation's own Adam: the same steps as ``torch.optim.Adam``, and a
registration that never imports TorchDynamo (the 1.1 s that ``torch.optim`` costs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from LungDeepRegLib.pipeline.adam import Adam


def _quadratic_loss(parameter: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # an uneven bowl, so that the per-voxel scaling of Adam matters
    return ((parameter - target) ** 2 * torch.linspace(0.1, 10.0, target.numel())
            .view_as(target)).sum()


@pytest.mark.parametrize("lr", [0.5, 0.01])
def test_steps_equal_torch_adam_bit_for_bit(lr):
    generator = torch.Generator().manual_seed(5)
    target = torch.randn((1, 3, 4, 5, 6), generator=generator)
    start = torch.randn((1, 3, 4, 5, 6), generator=generator)
    ours = start.clone().requires_grad_(True)
    theirs = start.clone().requires_grad_(True)
    our_adam, their_adam = Adam(ours, lr=lr), torch.optim.Adam([theirs], lr=lr)
    for _ in range(25):
        our_adam.zero_grad()
        their_adam.zero_grad(set_to_none=True)
        _quadratic_loss(ours, target).backward()
        _quadratic_loss(theirs, target).backward()
        our_adam.step()
        their_adam.step()
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, start)  # it moved
    assert our_adam.steps == 25


def test_a_step_without_a_gradient_changes_nothing():
    parameter = torch.ones(3, requires_grad=True)
    adam = Adam(parameter, lr=1.0)
    adam.step()
    assert adam.steps == 0 and torch.equal(parameter, torch.ones(3))


def test_refuses_a_parameter_without_grad():
    with pytest.raises(ValueError, match="requires grad"):
        Adam(torch.zeros(3), lr=1.0)


def test_refinement_does_not_import_torchdynamo():
    """TorchDynamo costs 1.1 s to import; nothing on the registration path needs it."""
    script = textwrap.dedent("""
        import sys
        import torch
        from LungDeepRegLib.pipeline.refine import refine
        from LungDeepRegLib.pipeline.refine_config import RefineConfig
        from LungDeepRegLib.spatial import Grid
        grid = Grid((16, 16, 16), (4.0, 4.0, 4.0))
        fixed = torch.rand((1, 1, 16, 16, 16), generator=torch.Generator().manual_seed(1))
        moving = torch.roll(fixed, 1, dims=2)
        config = RefineConfig(size=(16, 16, 16), levels=2, iterations=(3, 3))
        result = refine(fixed, moving, grid, config=config)
        assert result.iterations == [3, 3], result.iterations
        print("torch._dynamo" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
