"""DIR-Lab 4DCT (Castillo et al. 2009, 2010) in a user's own copy.

The official tree is ``Case1Pack/Images/case1_T00_s.img`` with landmarks in
``Case1Pack/ExtremePhases/Case1_300_T00_xyz.txt``; cases 6-10 use ``extremePhases``,
``case6_dirLab300_T00_xyz.txt`` and images without ``_s``, and case 8 comes as
``Case8Deploy``. All of these, any letter case, ``-ssm`` suffixes and a header file beside
the ``.img`` are accepted (see :mod:`.layout`). Protocol: T00 (end inhale) fixed, T50 (end
exhale) moving, 300 landmark pairs per case, geometry from the table shipped with the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .case import BenchCase, CaseError
from .layout import Layout, LocatedCase, discover, locate_cases

_IMAGE = r"case{n}_{phase}([_-]s|[_-]ssm)?\.img"
_POINTS = r"case{n}_(dirlab)?300_{phase}_xyz\.txt"

DIRLAB = Layout(
    dataset="dirlab",
    prefix="case",
    phases=("T00", "T50"),
    folder=r"case{n}(pack|deploy)?",
    files={
        "fixed": _IMAGE.replace("{phase}", "t00"),
        "moving": _IMAGE.replace("{phase}", "t50"),
        "fixed_points": _POINTS.replace("{phase}", "t00"),
        "moving_points": _POINTS.replace("{phase}", "t50"),
    },
    official={
        "folder": "Case{n}Pack",
        "fixed": "Case{n}Pack/Images/case{n}_T00_s.img",
        "moving": "Case{n}Pack/Images/case{n}_T50_s.img",
        "fixed_points": "Case{n}Pack/ExtremePhases/Case{n}_300_T00_xyz.txt",
        "moving_points": "Case{n}Pack/ExtremePhases/Case{n}_300_T50_xyz.txt",
    },
)


def discover_dirlab(root: str | Path, cases: Iterable[int | str] | None = None,
                    round_to_voxel: bool = True) -> list[BenchCase | CaseError]:
    """Read DIR-Lab 4DCT cases (all ten when ``cases`` is None) from the folder ``root``.

    Returns one entry per requested case, in order: a :class:`BenchCase` (protocol
    ``TREProtocol.dirlab(round_to_voxel)``) or a :class:`CaseError` naming the file at fault
    (missing case folder or file, wrong file size for the geometry, a landmark file without
    300 rows or with unreadable numbers). Raises InputError for a missing root or an unknown
    case number.
    """
    return discover(DIRLAB, root, cases, round_to_voxel)


def locate_dirlab(root: str | Path, cases: Iterable[int | str] | None = None
                  ) -> list[LocatedCase | CaseError]:
    """The files :func:`discover_dirlab` would read, found but not read (quick check)."""
    return locate_cases(DIRLAB, root, cases)
