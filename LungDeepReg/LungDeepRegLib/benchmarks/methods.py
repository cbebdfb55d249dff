"""The registration methods a benchmark compares, by name.

Each method (but ``identity``) is one child process that writes a displacement field file
(fixed to moving, LPS mm) into its work folder; every method gets the same thread count.
The LungDeepReg variants run the product's own command, ``python -m LungDeepRegLib register``
(without the HTML report), so the benchmark measures what a user runs.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..pipeline.refine_config import REGIONS, SIMILARITY_WEIGHTS
from ..spatial import Grid
from . import elastix

IDENTITY = "identity"


@dataclass(frozen=True)
class Method:
    """A named method; ``register_args`` are the extra options of ``lungdeepreg register``."""

    name: str
    description: str
    kind: str  # "lungdeepreg", "elastix" or "identity"
    register_args: tuple[str, ...] = ()
    refines: bool = False  # whether --refine-iterations (the bench option) applies

    @property
    def folder(self) -> str:
        """The method's work folder name (a ':MODEL' path may hold slashes)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)


METHODS = {method.name: method for method in (
    Method(IDENTITY, "initial state: no registration (identity transform)", "identity"),
    Method("lungdeepreg", "LungDeepReg: affine, multilevel network, instance optimisation",
           "lungdeepreg", refines=True),
    Method("lungdeepreg-net", "LungDeepReg network only (--refine-iterations 0)",
           "lungdeepreg", ("--refine-iterations", "0")),
    Method("lungdeepreg-opt", "LungDeepReg instance optimisation only (--model none)",
           "lungdeepreg", ("--model", "none"), refines=True),
    Method("affine", "LungDeepReg affine pre-alignment only (--model none "
                     "--refine-iterations 0)", "lungdeepreg",
           ("--model", "none", "--refine-iterations", "0")),
    Method("elastix", elastix.DESCRIPTION, "elastix"),
)}
DEFAULT_METHODS = "lungdeepreg,lungdeepreg-net,lungdeepreg-opt,elastix,affine"


def parse_methods(text: str) -> list[Method]:
    """Methods of a comma list, ``identity`` first (always measured: the initial state).

    A LungDeepReg method that runs a network takes another model after a colon
    (``lungdeepreg-net:lungdeepreg-popi-cpu``, or a path), so that two models are compared
    side by side in one run. A LungDeepReg method that refines takes modifiers after ``@``:
    a similarity with an optional weight (``lungdeepreg-opt@mind``, ``lungdeepreg@ncc=2``:
    ``register --similarity ncc --similarity-weight 2``) and a fine level
    (``lungdeepreg@fine=2``: ``--fine-spacing 2``) and the region the similarity is
    measured over (``lungdeepreg@lung``: ``--similarity-region lung``) and the discrete
    search (``lungdeepreg-opt@search``: ``--search replace``), e.g.
    ``lungdeepreg-opt@mind@fine=2``.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if _base(name) not in METHODS]
    if unknown:
        raise InputError("--methods", f"unknown method(s) {', '.join(unknown)}; choose from "
                                      f"{', '.join(METHODS)}")
    ordered = [IDENTITY] + [name for name in dict.fromkeys(names) if name != IDENTITY]
    return [_with_modifiers(name) for name in ordered]


MODIFIER = re.compile(r"[a-z]+(=[0-9.]+)?")


def _split_modifiers(name: str) -> tuple[str, list[str]]:
    """``name`` without its ``@`` modifiers, and the modifiers in order."""
    modifiers: list[str] = []
    rest = name
    while True:
        head, at, suffix = rest.rpartition("@")
        if not at or not MODIFIER.fullmatch(suffix):
            return rest, modifiers[::-1]
        rest = head
        modifiers.append(suffix)


def _base(name: str) -> str:
    return _split_modifiers(name)[0].partition(":")[0]


def _modifier_args(modifier: str, name: str) -> tuple[tuple[str, ...], str]:
    """``register`` options and a description of one modifier of method ``name``."""
    key, _, value = modifier.partition("=")
    if key == "fine":
        if not value:
            raise InputError("--methods", f"{name}: '@fine' needs a spacing, e.g. @fine=2")
        return ("--fine-spacing", value), f"fine level {value} mm"
    if key == "search" and not value:
        return ("--search", "replace"), "discrete search instead of the affine start"
    if key in REGIONS and not value:
        return ("--similarity-region", key), f"similarity over the {key}"
    if key not in SIMILARITY_WEIGHTS:
        raise InputError("--methods", f"unknown modifier {key!r} in {name}; choose a "
                                      f"similarity ({', '.join(SIMILARITY_WEIGHTS)}), a region "
                                      f"({', '.join(REGIONS)}), search or fine")
    weighted = ("--similarity-weight", value) if value else ()
    return ("--similarity", key, *weighted), \
        f"similarity {key}" + (f" weighted {value}" if value else "")


def _with_modifiers(name: str) -> Method:
    rest, modifiers = _split_modifiers(name)
    method = _with_model(rest)
    if not modifiers:
        return method
    if method.kind != "lungdeepreg" or not method.refines:
        raise InputError("--methods", f"{rest} does not refine: it takes no '@' modifier")
    args, labels = list(method.register_args), [method.description]
    for modifier in modifiers:
        extra, label = _modifier_args(modifier, name)
        args += extra
        labels.append(label)
    return Method(name, ", ".join(labels), method.kind, tuple(args), method.refines)


def _with_model(name: str) -> Method:
    base, _, model = name.partition(":")
    method = METHODS[base]
    if not model:
        return method
    if method.kind != "lungdeepreg" or "--model" in method.register_args:
        raise InputError("--methods", f"{base} runs no network: it takes no ':MODEL'")
    return Method(name, f"{method.description}, model {model}", method.kind,
                  (*method.register_args, "--model", model), method.refines)


@dataclass(frozen=True)
class RunSettings:
    """What every method shares: threads, device, time limit, output grid."""

    threads: int = 2
    device: str = "cpu"
    timeout_s: float | None = None
    refine_iterations: int | None = None  # caps the refinement (quick runs, tests)
    output_spacing_mm: float = 2.0


@dataclass(frozen=True)
class CaseFiles:
    """A case's inputs as written into ``<case>/inputs``."""

    fixed: Path
    moving: Path
    lung_mask: Path  # the fixed lung mask every method is judged in (given or automatic)
    mask_given: bool  # False: automatic (the pipeline computes the same one itself)
    output_grid: Grid  # where every field is evaluated


def unavailable_reason(method: Method) -> str | None:
    """Why ``method`` cannot run on this machine, or None."""
    return elastix.unavailable_reason() if method.kind == "elastix" else None


def command(method: Method, files: CaseFiles, work: Path, settings: RunSettings
            ) -> list[str] | None:
    """The method's command line (None for the identity, which runs nothing)."""
    if method.kind == "identity":
        return None
    if method.kind == "elastix":
        grid = files.output_grid
        return elastix.driver_command(files.fixed, files.moving, files.lung_mask, work,
                                      settings.threads, grid.size, grid.spacing, grid.origin)
    args = [sys.executable, "-m", "LungDeepRegLib", "register", "--fixed", str(files.fixed),
            "--moving", str(files.moving), "--out", str(work), "--no-report",
            "--threads", str(settings.threads), "--device", settings.device,
            "--output-spacing", str(settings.output_spacing_mm), *method.register_args]
    if files.mask_given:
        args += ["--fixed-mask", str(files.lung_mask)]
    if method.refines and settings.refine_iterations is not None:
        args += ["--refine-iterations", str(settings.refine_iterations)]
    return args


def field_file(method: Method, work: Path) -> Path:
    """Where the method leaves its displacement field."""
    return work / (elastix.FIELD_FILE if method.kind == "elastix" else "field.nrrd")
