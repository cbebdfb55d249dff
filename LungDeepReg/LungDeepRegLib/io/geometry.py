"""Geometry tables of the DIR-Lab 4DCT and COPDgene reference cases (shipped with the engine).

The raw ``.img`` files carry no header: these tables give each case's size and spacing.
Images are read with identity direction and zero origin, the community convention.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Literal

from ..errors import InputError
from ..spatial.grid import Grid

Dataset = Literal["dirlab", "copdgene"]
_TABLES = {"dirlab": "dirlab_4dct_geometry.json", "copdgene": "copdgene_geometry.json"}


@cache
def geometry_table(dataset: Dataset) -> dict:
    """The whole table: ``cases`` (size_xyz, spacing_mm) and, for DIR-Lab, the published
    initial TRE per case."""
    if dataset not in _TABLES:
        raise InputError(dataset, f"unknown dataset; choose one of {sorted(_TABLES)}")
    text = resources.files(__package__.rsplit(".", 1)[0]).joinpath("data", _TABLES[dataset])
    return json.loads(text.read_text())


def case_grid(dataset: Dataset, case: int | str) -> Grid:
    """Grid of a reference case (identity direction, zero origin)."""
    key = str(case).lower().removeprefix("copd").removeprefix("case")
    cases = geometry_table(dataset)["cases"]
    if key not in cases:
        raise InputError(f"{dataset} case {case}", f"no geometry known; cases: {sorted(cases)}")
    entry = cases[key]
    return Grid(tuple(entry["size_xyz"]), tuple(entry["spacing_mm"]))
