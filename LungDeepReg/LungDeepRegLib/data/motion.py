"""Real breathing motion for synthetic pairs: fields registered on real 4D CT, carried over
to other CTs in lung-normalised coordinates.

The analytic breathing model (:func:`.fields.breathing_field`) gets the main direction of
lung motion right, but not its details: the dorsal/ventral difference, the hysteresis of
the two lungs, the rotation of the lower lobes, the sliding along the chest wall. Real 4D
CT holds all of them. Following the idea of motion atlases built from 4D CT (Ehrhardt et
al. 2011, IEEE TMI: a mean motion model carried to a new patient by an inter-subject
mapping), a :class:`MotionAtlas` stores a few inhale-to-exhale fields, each resampled onto
a small grid spanning its own fixed lungs' bounding box (plus a margin), in LPS mm.

:meth:`MotionAtlas.draw` carries one of them to another CT's lung crop by the simplest
inter-subject map there is: the axis-aligned scaling of one lung bounding box onto the
other. A point ``p`` of the target has normalised position ``q = (p - lo_t) / ext_t``; the
atlas displacement at ``q`` is scaled per axis by ``ext_t / ext_a`` (a longer lung moves
more), then by a random amplitude (shallow to deep breaths), jittered per axis, and
mirrored left-right at random. Elastic details the simple map gets wrong are covered by the
random smooth field that :func:`.pairs.make_pair` composes with it.

The atlas is made by ``Testing/benchmark/make_motion_atlas.py`` from the declared tuning
pairs only (``Testing/benchmark/data_split.toml``) and ships as ``motion_atlas.npz`` beside
this module (a derived sample of the POPI model, CREATIS / Léon Bérard Cancer Center).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial import Grid
from .fields import outside_fade, uniform

DEFAULT_ATLAS = Path(__file__).with_name("motion_atlas.npz")
AMPLITUDE_RANGE = (0.3, 1.4)  # times the atlas field: shallow to deeper than the source
AXIS_JITTER = 0.2  # each axis' displacement scaled by U(1 - j, 1 + j) on top
# Outside the lungs the registered fields hold what the registration made of chest wall,
# body and the air around it (unconstrained there, up to 27 mm): they fade to zero over
# this distance from the target's lungs, as the analytic breathing model does.
OUTSIDE_DECAY_MM = 40.0


@dataclass(frozen=True)
class MotionAtlas:
    """Real inhale-to-exhale fields on their lungs' bounding boxes.

    ``fields``: ``(K, 3, z, y, x)`` float32 LPS mm (fixed = inhale to moving = exhale),
    sampled on an axis-aligned LPS box from ``lower - margin * extent`` to
    ``upper + margin * extent`` of each field's fixed lungs; ``extents``: ``(K, 3)`` the
    lungs' bounding box sizes in mm (x, y, z); ``names``: where each field came from.
    """

    fields: torch.Tensor
    extents: torch.Tensor
    margin: float
    names: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ATLAS) -> MotionAtlas:
        """Read an atlas written by :meth:`save` (plain arrays, nothing unpickled)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(torch.from_numpy(data["fields"].astype(np.float32)),
                       torch.from_numpy(data["extents"].astype(np.float32)),
                       float(data["margin"]), tuple(str(n) for n in data["names"]))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, fields=self.fields.numpy().astype(np.float32),
                            extents=self.extents.numpy(), margin=np.float64(self.margin),
                            names=np.asarray(self.names))

    def draw(self, grid: Grid, lung_mask: torch.Tensor, generator: torch.Generator
             ) -> torch.Tensor:
        """One atlas field carried onto ``grid`` (the lungs ``lung_mask`` > 0 on it).

        Returns ``(1, 3, z, y, x)`` float32 LPS mm, fixed (inhale) to moving (exhale).
        """
        index = int(torch.randint(len(self.names), (), generator=generator))
        amplitude = uniform(generator, *AMPLITUDE_RANGE)
        jitter = [uniform(generator, 1 - AXIS_JITTER, 1 + AXIS_JITTER) for _ in range(3)]
        mirror = uniform(generator, 0.0, 1.0) < 0.5
        lower, extent = lung_box(grid, lung_mask)
        points = grid.points().reshape(-1, 3).double()
        normalised = (points - lower) / extent  # 0..1 over the target lungs
        if mirror:  # a left-right mirrored patient: x positions and x motion flip
            normalised[:, 0] = 1.0 - normalised[:, 0]
        field = self._sample(index, normalised)  # (3, N) mm on the atlas' lungs
        scale = extent / self.extents[index].double()
        scale = scale * torch.tensor(jitter, dtype=torch.float64) * amplitude
        if mirror:
            scale[0] = -scale[0]
        field = (field * scale[:, None]).float().reshape(1, 3, *grid.shape)
        mask = lung_mask.reshape(grid.shape) > 0
        return field * outside_fade(mask, grid, OUTSIDE_DECAY_MM) if bool(mask.any()) else field

    def _sample(self, index: int, normalised: torch.Tensor) -> torch.Tensor:
        """Atlas field ``index`` at lung-normalised points ``(N, 3)``; returns ``(3, N)``."""
        box = 1.0 + 2.0 * self.margin
        coordinates = 2.0 * (normalised + self.margin) / box - 1.0  # grid_sample's -1..1
        coordinates = coordinates.float().reshape(1, 1, 1, -1, 3)
        values = F.grid_sample(self.fields[index:index + 1], coordinates, mode="bilinear",
                               padding_mode="border", align_corners=True)
        return values.reshape(3, -1).double()


def lung_box(grid: Grid, lung_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower corner and size (LPS mm, x y z, float64) of the lungs' axis-aligned bounding
    box: the voxel centres where ``lung_mask`` > 0 (the whole grid when it is empty)."""
    points = grid.points(dtype=torch.float64)
    inside = lung_mask.reshape(grid.shape) > 0
    chosen = points[inside] if bool(inside.any()) else points.reshape(-1, 3)
    lower, upper = chosen.min(dim=0).values, chosen.max(dim=0).values
    return lower, (upper - lower).clamp(min=1.0)


def atlas_from_fields(fields: list[tuple[str, torch.Tensor, Grid, torch.Tensor]],
                      size: tuple[int, int, int] = (24, 20, 24), margin: float = 0.1
                      ) -> MotionAtlas:
    """Resample ``(name, field (1, 3, z, y, x), its grid, fixed lung mask)`` onto atlas
    boxes of ``size`` (x, y, z) voxels spanning each lung box plus ``margin`` of its size."""
    resampled, extents = [], []
    for _name, field, grid, mask in fields:
        lower, extent = lung_box(grid, mask)
        axes = [torch.linspace(-margin, 1 + margin, n, dtype=torch.float64) for n in size]
        z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        normalised = torch.stack((x, y, z), dim=-1)
        points = lower + normalised * extent  # (z, y, x, 3) LPS mm
        coordinates = grid.physical_to_normalized(points.float())[None]
        values = F.grid_sample(field.float(), coordinates, mode="bilinear",
                               padding_mode="border", align_corners=True)
        resampled.append(values[0])
        extents.append(extent.float())
    return MotionAtlas(torch.stack(resampled), torch.stack(extents), margin,
                       tuple(name for name, *_ in fields))
