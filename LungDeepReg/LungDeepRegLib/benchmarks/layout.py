"""Finding and reading a public lung benchmark in a user's own copy of it.

DIR-Lab 4DCT and DIR-Lab COPDgene ship headerless raw ``.img`` volumes and 300-row
landmark files of 1-based voxel indices, and their folder and file names vary between cases
and downloads (``Case1Pack``/``case6pack``/``Case8Deploy``, ``ExtremePhases``/
``extremePhases``, ``_s`` suffixes, ``Case1_300_...`` vs ``case6_dirLab300_...``, a zip that
unpacks to ``copd1/copd1/``). A :class:`Layout` describes a data set by case-insensitive
name patterns, and files are matched by name anywhere a few folders below the root, so the
official tree, a renamed one and a flattened one all work. Every problem becomes a
:class:`~.case.CaseError` naming the file at fault, so that the other cases still run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..io.geometry import Dataset, case_grid, geometry_table
from ..io.images import read_raw_image
from ..io.landmarks import read_landmarks
from ..metrics.landmarks import TREProtocol, check_inside
from ..spatial.grid import Grid
from .case import BenchCase, CaseError

LANDMARKS_PER_CASE = 300
MAX_DEPTH = 5  # root/<download>/<CaseNPack>/<Images>/<file>, with one level to spare
IMAGE_ROLES = ("fixed", "moving")
POINT_ROLES = ("fixed_points", "moving_points")
ROLES = IMAGE_ROLES + POINT_ROLES


@dataclass(frozen=True)
class Layout:
    """The naming of one data set.

    Patterns are regular expressions matched case-insensitively against whole names;
    ``{n}`` stands for the case number (leading zeros allowed). ``official`` holds the
    documented path of the case folder (``"folder"``) and of each role's file relative to
    the root, shown in messages so that a user sees what was expected where.
    """

    dataset: Dataset
    prefix: str  # case names are prefix + number: "case1", "copd1"
    phases: tuple[str, str]  # (fixed, moving) phase names, for messages: ("T00", "T50")
    folder: str
    files: dict[str, str]  # role (see ROLES) -> file name pattern
    official: dict[str, str]  # "folder" and each role -> documented relative path


@dataclass(frozen=True)
class LocatedCase:
    """The four files of one case, found but not read yet."""

    name: str
    number: int
    paths: dict[str, Path]  # role -> file


class Tree(NamedTuple):
    """Files and folders below a root (scanned once per discovery)."""

    files: list[Path]
    folders: list[Path]


# ----------------------------------------------------------------------------- finding
def case_numbers(layout: Layout, cases: Iterable[int | str] | None) -> list[int]:
    """Requested case numbers (``3``, ``"3"``, ``"case3"``), in order, without repeats.

    None asks for every case of the data set's geometry table: a case the user's copy lacks
    is then reported as missing rather than silently left out of the table.
    """
    known = sorted(int(key) for key in geometry_table(layout.dataset)["cases"])
    if cases is None:
        return known
    numbers = []
    for case in cases:
        text = str(case).strip().lower().removeprefix(layout.prefix)
        if not text.isdigit() or int(text) not in known:
            raise InputError(f"{layout.dataset} case {case}",
                             f"unknown case; choose among {known}")
        numbers.append(int(text))
    return list(dict.fromkeys(numbers))


def scan(root: Path, max_depth: int = MAX_DEPTH) -> Tree:
    """Files and folders at most ``max_depth`` levels below ``root``; hidden names (such
    as macOS ``._case1_T00_s.img`` companions) are skipped."""
    files, folders = [], []
    for top, dirnames, filenames in os.walk(root):
        depth = len(Path(top).relative_to(root).parts)
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        folders += [Path(top, name) for name in dirnames]
        files += [Path(top, name) for name in sorted(filenames) if not name.startswith(".")]
        if depth + 1 >= max_depth:
            dirnames[:] = []
    return Tree(files, folders)


def locate_cases(layout: Layout, root: str | Path, cases: Iterable[int | str] | None = None
                 ) -> list[LocatedCase | CaseError]:
    """Find the files of each requested case under ``root`` without reading them."""
    root = _root_folder(root)
    numbers = case_numbers(layout, cases)
    tree = scan(root)
    return [locate(layout, tree, root, number) for number in numbers]


def locate(layout: Layout, tree: Tree, root: Path, number: int) -> LocatedCase | CaseError:
    """The files of case ``number``; a :class:`CaseError` when one is missing or ambiguous."""
    name = f"{layout.prefix}{number}"
    folders = _matching(tree.folders, layout.folder, number)
    found = {role: _matching(tree.files, layout.files[role], number) for role in ROLES}
    if not folders and not any(found.values()):
        expected = root / _official(layout, "folder", number)
        return CaseError(name, str(expected), f"case folder not found under {root}")
    paths = {}
    for role in ROLES:
        hits = found[role]
        if not hits:
            return CaseError(name, str(_expected(layout, role, number, root, folders)),
                             f"{_label(layout, role)} not found (no file named like it "
                             f"under {root})")
        if len(hits) > 1:
            listed = ", ".join(str(hit) for hit in hits)
            return CaseError(name, str(hits[0]), f"{len(hits)} files could be the "
                             f"{_label(layout, role)}: {listed}; keep one")
        paths[role] = hits[0]
    return LocatedCase(name, number, paths)


def _root_folder(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(root, "benchmark root folder not found" if not root.exists()
                         else "is not a folder; give the folder holding the cases")
    return root


def _matching(paths: list[Path], pattern: str, number: int) -> list[Path]:
    regex = re.compile(pattern.replace("{n}", f"0*{number}"), re.IGNORECASE)
    return [path for path in paths if regex.fullmatch(path.name)]


def _official(layout: Layout, key: str, number: int) -> Path:
    return Path(layout.official[key].replace("{n}", str(number)))


def _expected(layout: Layout, role: str, number: int, root: Path, folders: list[Path]) -> Path:
    """Where the missing file should be: inside the case folder found, else the official
    path under the root."""
    official = _official(layout, role, number)
    if not folders:
        return root / official
    return max(folders, key=lambda folder: len(folder.parts)).joinpath(*official.parts[1:])


def _label(layout: Layout, role: str) -> str:
    phase = layout.phases[0 if role.startswith("fixed") else 1]
    return f"{phase} image" if role in IMAGE_ROLES else f"{phase} landmark file"


# ----------------------------------------------------------------------------- reading
def discover(layout: Layout, root: str | Path, cases: Iterable[int | str] | None = None,
             round_to_voxel: bool = True) -> list[BenchCase | CaseError]:
    """Find and read every requested case; the cases that fail come back as CaseErrors.

    Raises :class:`InputError` only for a bad request as a whole (no such root folder, an
    unknown case number).
    """
    return [found if isinstance(found, CaseError) else load(layout, found, round_to_voxel)
            for found in locate_cases(layout, root, cases)]


def load(layout: Layout, located: LocatedCase, round_to_voxel: bool = True
         ) -> BenchCase | CaseError:
    """Read one case's landmarks (first: cheap and the likelier to be wrong) and images.

    Images are raw little-endian int16 on the shipped geometry, stored as HU + 1024 (the
    offset :func:`~..io.images.read_raw_image` applies by default), read with identity
    direction and zero origin so that a 1-based landmark index ``i`` lies at
    ``(i - 1) * spacing``. T00/iBH (inhale) is fixed, T50/eBH (exhale) moving.
    """
    grid = case_grid(layout.dataset, located.number)
    try:
        points = {role: read_case_points(located.paths[role], grid) for role in POINT_ROLES}
        images = {role: read_raw_image(located.paths[role], grid.size, grid.spacing)
                  for role in IMAGE_ROLES}
    except InputError as error:
        return CaseError(located.name, error.source or str(located.paths["fixed"]), error.problem)
    return BenchCase(
        name=located.name, fixed=images["fixed"], moving=images["moving"],
        fixed_points=points["fixed_points"], moving_points=points["moving_points"],
        protocol=TREProtocol.dirlab(round_to_voxel),
        sources={role: str(path) for role, path in located.paths.items()},
    )


def read_case_points(path: Path, grid: Grid) -> np.ndarray:
    """A landmark file of the protocol: 300 rows of 1-based indices inside the image (an
    optional elastix-style header is skipped, whatever it says)."""
    points = read_landmarks(path, "dirlab", grid)
    if len(points) != LANDMARKS_PER_CASE:
        raise InputError(path, f"holds {len(points)} landmarks; the protocol pairs "
                         f"{LANDMARKS_PER_CASE} per image")
    check_inside(points, grid, path)
    return points
