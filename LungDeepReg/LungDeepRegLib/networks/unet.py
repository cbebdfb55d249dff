"""The per-level U-Net of the multilevel registration network.

Architecture after Hering et al. (mlVIRNet, 2019; MedIA 2021, Sec. 2.2): ``depth``
resolution levels (3 in the paper) with ``base_filters`` (16) filters doubling per level;
every block is two times 3x3x3 convolution + instance normalisation + ReLU; 2x2x2 average
pooling down, 2x2x2 transposed convolution up, skip connections by concatenation, and a
final 1x1x1 convolution to the three displacement components.

Output units. :meth:`UNet.forward` returns a displacement in *voxel steps* of the grid the
input lives on, along the index axes (x, y, z). :func:`voxels_to_mm` turns it into the
engine's convention (LPS mm on the grid) through the grid's ``D diag(spacing)``; with an
identity direction that is a per-component multiplication by the spacing. Predicting in
voxels keeps the raw output O(1) for every pyramid level (a coarse level's voxel is twice
as large in mm), so the finer networks can start from the coarser one's weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..spatial import Grid


class ConvBlock(nn.Sequential):
    """Two times (3x3x3 convolution, instance norm, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # no conv bias: the instance norm right after removes any constant offset
            layers += [
                nn.Conv3d(c_in, out_channels, kernel_size=3, padding=1, bias=False),
                nn.InstanceNorm3d(out_channels, affine=True),
                nn.ReLU(inplace=False),
            ]
        super().__init__(*layers)


class UNet(nn.Module):
    """3-D U-Net mapping ``(N, in_channels, z, y, x)`` to ``(N, 3, z, y, x)`` voxel steps.

    Args:
        in_channels: input channels (2: fixed image and warped moving image).
        base_filters: filters at full resolution; doubled at every coarser resolution.
        depth: number of resolution levels including the bottleneck (paper: 3).
        out_channels: output channels (3 displacement components).
        final_init_std: standard deviation of the final 1x1x1 convolution's initial weights;
            0 (default) gives an exact identity transform before training.

    Spatial sizes need not be divisible by ``2^(depth-1)``: the input is padded at the
    far end of each axis by edge replication and the output cropped back.
    """

    def __init__(
        self,
        in_channels: int = 2,
        base_filters: int = 16,
        depth: int = 3,
        out_channels: int = 3,
        final_init_std: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"U-Net depth must be >= 1, got {depth}")
        if base_filters < 1:
            raise ValueError(f"base_filters must be >= 1, got {base_filters}")
        self.depth = depth
        filters = [base_filters * 2**k for k in range(depth)]
        self.encoders = nn.ModuleList()
        c_in = in_channels
        for f in filters:
            self.encoders.append(ConvBlock(c_in, f))
            c_in = f
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for k in reversed(range(depth - 1)):
            self.upsamplers.append(nn.ConvTranspose3d(filters[k + 1], filters[k], 2, stride=2))
            self.decoders.append(ConvBlock(2 * filters[k], filters[k]))
        self.head = nn.Conv3d(filters[0], out_channels, kernel_size=1)
        self.reset_parameters(final_init_std)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes are padded internally to a multiple of this (``2^(depth-1)``)."""
        return 2 ** (self.depth - 1)

    def reset_parameters(self, final_init_std: float = 0.0) -> None:
        """Xavier (Glorot) uniform weights, zero biases, and a near-zero output layer.

        Xavier is the paper's initialisation of the coarsest network. The head starts at
        (or near) zero so that an untrained level predicts the identity and cannot wreck
        the coarser levels' result when it is switched on during progressive training.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if final_init_std > 0:
            nn.init.normal_(self.head.weight, std=final_init_std)
        else:
            nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Displacement in voxel steps along (x, y, z) index axes, ``(N, 3, z, y, x)``."""
        if x.dim() != 5:
            raise ValueError(f"U-Net input must be (N, C, z, y, x), got {tuple(x.shape)}")
        shape = x.shape[2:]
        m = self.size_multiple
        extra = [(-n) % m for n in shape]  # z, y, x
        if any(extra):
            # F.pad lists the last dim first: (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
            x = F.pad(x, [0, extra[2], 0, extra[1], 0, extra[0]], mode="replicate")
        skips: list[torch.Tensor] = []
        for k, encoder in enumerate(self.encoders):
            if k > 0:
                x = F.avg_pool3d(x, kernel_size=2)
            x = encoder(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for upsample, decoder in zip(self.upsamplers, self.decoders, strict=True):
            x = decoder(torch.cat((upsample(x), skips.pop()), dim=1))
        out = self.head(x)
        return out[:, :, : shape[0], : shape[1], : shape[2]]


def voxels_to_mm(displacement: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Voxel-step displacement ``(N, 3, ...)`` (index axes x, y, z) to LPS mm on ``grid``.

    ``u_mm = D diag(spacing) u_vox``: one raw unit is one voxel along each index axis.
    """
    matrix = torch.as_tensor(grid.index_to_physical_matrix, dtype=displacement.dtype,
                             device=displacement.device)
    return torch.einsum("ij,nj...->ni...", matrix, displacement)


def mm_to_voxels(displacement: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Inverse of :func:`voxels_to_mm`."""
    inverse = torch.linalg.inv(torch.as_tensor(grid.index_to_physical_matrix))
    matrix = inverse.to(dtype=displacement.dtype, device=displacement.device)
    return torch.einsum("ij,nj...->ni...", matrix, displacement)
