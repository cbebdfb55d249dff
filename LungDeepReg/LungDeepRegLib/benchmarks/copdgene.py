"""DIR-Lab COPDgene (Castillo et al. 2013) in a user's own copy.

The download unpacks to ``copd1/copd1/copd1_iBHCT.img``, ``copd1_eBHCT.img`` and landmarks
``copd1_300_iBH_xyz_r1.txt`` / ``copd1_300_eBH_xyz_r1.txt``, with or without a 2-line
elastix-style header (the numbers are 1-based DIR-Lab indices whatever a header says). Any
letter case, nesting and a header file beside the ``.img`` are accepted (see :mod:`.layout`).
Protocol: iBH (inspiration) fixed, eBH (expiration) moving, 300 pairs per case.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .case import BenchCase, CaseError
from .layout import Layout, LocatedCase, discover, locate_cases

COPDGENE = Layout(
    dataset="copdgene",
    prefix="copd",
    phases=("iBH", "eBH"),
    folder=r"copd{n}",
    files={
        "fixed": r"copd{n}_ibhct\.img",
        "moving": r"copd{n}_ebhct\.img",
        "fixed_points": r"copd{n}_300_ibh_xyz(_r\d+)?\.txt",
        "moving_points": r"copd{n}_300_ebh_xyz(_r\d+)?\.txt",
    },
    official={
        "folder": "copd{n}",
        "fixed": "copd{n}/copd{n}_iBHCT.img",
        "moving": "copd{n}/copd{n}_eBHCT.img",
        "fixed_points": "copd{n}/copd{n}_300_iBH_xyz_r1.txt",
        "moving_points": "copd{n}/copd{n}_300_eBH_xyz_r1.txt",
    },
)


def discover_copdgene(root: str | Path, cases: Iterable[int | str] | None = None,
                      round_to_voxel: bool = True) -> list[BenchCase | CaseError]:
    """Read COPDgene cases (all ten when ``cases`` is None) from the folder ``root``.

    Same contract as :func:`~.dirlab.discover_dirlab`: one BenchCase or CaseError per
    requested case, in order; InputError only for a missing root or an unknown case.
    """
    return discover(COPDGENE, root, cases, round_to_voxel)


def locate_copdgene(root: str | Path, cases: Iterable[int | str] | None = None
                    ) -> list[LocatedCase | CaseError]:
    """The files :func:`discover_copdgene` would read, found but not read (quick check)."""
    return locate_cases(COPDGENE, root, cases)
