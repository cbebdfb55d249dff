"""The engine's Python requirements inside 3D Slicer, installed only when the user agrees.

Slicer ships its own SimpleITK, numpy and vtk, built against its libraries: replacing them
from PyPI can break Slicer itself, so they are never installed or upgraded here (and pip gets
a constraints file that pins them while it installs the rest). PyTorch comes from the PyTorch
extension's installer when that extension is present (it picks the CUDA build that fits the
driver), else from pip. The other requirements are installed one by one, so a failure names
the package that failed.

Standard library only, and nothing runs at import: the widget calls :func:`ensure_dependencies`
when the user presses Apply, with a callback that asks the user.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# The engine's requirements: pyproject.toml [project].dependencies (a test keeps them equal).
ENGINE_REQUIREMENTS = (
    "torch>=2.1", "numpy>=1.23", "SimpleITK>=2.4", "nibabel>=5.0", "safetensors>=0.4",
    "tqdm>=4.60", "matplotlib>=3.6", "tomli>=2.0; python_version < '3.11'",
)
PROVIDED_BY_SLICER = ("SimpleITK", "numpy", "vtk")  # never replaced
GPU_MEMORY_NEEDED = 4 * 1024**3  # the paper's network at full size (Hering et al. 2021)
TORCH_REINSTALL = "PythonSlicer -m pip install --force-reinstall torch"
Ask = Callable[[str], bool]
Installer = Callable[[str], object]


class DependencyError(RuntimeError):
    """A requirement could not be installed; the message says how to install it by hand."""


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement, normalised (PEP 503: lower case, '-')."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def is_provided_by_slicer(requirement: str) -> bool:
    return requirement_name(requirement) in {requirement_name(n) for n in PROVIDED_BY_SLICER}


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _packaging():
    """``packaging.requirements`` (or pip's copy of it), if importable."""
    try:
        from packaging import requirements
    except ImportError:
        try:
            from pip._vendor.packaging import requirements
        except ImportError:
            return None
    return requirements


def is_satisfied(requirement: str, version_of: Callable[[str], str | None] = installed_version
                 ) -> bool:
    """True when the requirement is met or does not apply here (its marker is false).

    Without ``packaging`` only presence is checked and markers count as true (pip, which
    evaluates them properly, is then the judge)."""
    requirements = _packaging()
    if requirements is None:
        return version_of(requirement_name(requirement)) is not None
    parsed = requirements.Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True
    version = version_of(parsed.name)
    return version is not None and parsed.specifier.contains(version, prereleases=True)


@dataclass
class InstallPlan:
    torch: str | None = None  # the torch requirement, when torch is missing or too old
    packages: list[str] = field(default_factory=list)  # pip-installed one by one
    kept: list[str] = field(default_factory=list)  # unmet, but Slicer's own: warn only

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.packages


def plan_installation(requirements: Sequence[str] = ENGINE_REQUIREMENTS,
                      version_of: Callable[[str], str | None] = installed_version
                      ) -> InstallPlan:
    """What to install: unmet requirements, torch apart, Slicer's own packages never."""
    plan = InstallPlan()
    for requirement in requirements:
        if is_satisfied(requirement, version_of):
            continue
        if is_provided_by_slicer(requirement):
            plan.kept.append(requirement)
        elif requirement_name(requirement) == "torch":
            plan.torch = requirement
        else:
            plan.packages.append(requirement)
    return plan


def confirmation_message(plan: InstallPlan) -> str:
    """What the user is asked before anything is downloaded."""
    items = ([f"PyTorch ({plan.torch}, about 1 to 3 GB)"] if plan.torch else []) + plan.packages
    text = ("LungDeepReg needs Python packages that are not installed in Slicer:\n  "
            + "\n  ".join(items) + "\n\nDownload and install them now? This can take minutes; "
            "Slicer's own SimpleITK, numpy and vtk are left unchanged.")
    if plan.kept:
        text += ("\n\nNote: Slicer's " + ", ".join(plan.kept) + " is older than the engine "
                 "asks for; it is kept (use a newer Slicer if registration fails).")
    return text


def offline_message(requirement: str, error: object) -> str:
    """Why the installation failed and how to install the package from a local wheel."""
    name = requirement_name(requirement)
    return (f"Could not install {requirement}: {error}\n\n"
            f"Slicer may be offline or behind a proxy. On a computer with internet access, "
            f"download the wheel for Slicer's Python (pip download \"{requirement}\" "
            f"--only-binary :all: --no-deps), copy it here, and install it with\n"
            f"  PythonSlicer -m pip install /path/to/{name.replace('-', '_')}-<version>-"
            f"<tags>.whl\n"
            f"or in Slicer's Python console:\n"
            f"  slicer.util.pip_install([r\"/path/to/{name.replace('-', '_')}-<version>-"
            f"<tags>.whl\"])\n"
            f"then restart Slicer.")


def constraints_text(version_of: Callable[[str], str | None] = installed_version) -> str:
    """A pip constraints file pinning Slicer's own packages at their installed versions."""
    lines = [f"{name}=={version}" for name in PROVIDED_BY_SLICER
             if (version := version_of(name)) is not None]
    return "".join(f"{line}\n" for line in lines)


def torch_problem_message(error: BaseException | str) -> str:
    """What the panel shows when ``import torch`` fails although torch is installed (on
    Windows typically an ``OSError`` for a DLL): the error and how to reinstall."""
    return (f"PyTorch is installed but cannot be loaded ({error}). Registration needs it. "
            f"Reinstall it: in the PyTorch extension (Extensions Manager), or from a shell "
            f"with\n  {TORCH_REINSTALL}\nthen restart Slicer (on Windows, also install the "
            f"Microsoft Visual C++ Redistributable if the error names a DLL).")


def import_torch() -> None:
    """Import torch here (the engine's in-process steps need it); no CUDA context."""
    import torch  # noqa: F401


def torch_problem(importer: Callable[[], object] = import_torch) -> str | None:
    """None when torch imports, else :func:`torch_problem_message` or, without torch, what
    installs it. Any exception counts: a broken torch raises OSError, not ImportError."""
    try:
        importer()
    except ModuleNotFoundError as error:
        if error.name == "torch":
            return (f"PyTorch is not installed: Apply offers to install it (or run "
                    f"{TORCH_REINSTALL.replace(' --force-reinstall', '')}).")
        return torch_problem_message(f"{type(error).__name__}: {error}")
    except Exception as error:  # OSError, RuntimeError, ...: a broken installation
        return torch_problem_message(f"{type(error).__name__}: {error}")
    return None


def ensure_dependencies(ask: Ask, pip_install: Installer | None = None,
                        install_torch: Installer | None = None,
                        requirements: Sequence[str] = ENGINE_REQUIREMENTS,
                        importer: Callable[[], object] = import_torch) -> bool:
    """Install what is missing once ``ask(message)`` returns True.

    Returns True when everything is present afterwards, False when the user declined.
    Raises :class:`DependencyError` (with :func:`offline_message`) when an install fails,
    or when torch is installed but does not import (:func:`torch_problem_message`).
    ``pip_install`` and ``install_torch`` default to Slicer's installers.
    """
    plan = plan_installation(requirements)
    if plan.empty:
        _check_import(importer)
        return True
    if not ask(confirmation_message(plan)):
        return False
    pip_install = pip_install or slicer_pip_install
    steps = [(plan.torch, install_torch or slicer_install_torch)] if plan.torch else []
    steps += [(requirement, pip_install) for requirement in plan.packages]
    for requirement, installer in steps:
        try:
            installer(requirement)
        except Exception as error:  # pip and the PyTorch installer raise many kinds
            raise DependencyError(offline_message(requirement, error)) from error
    _check_import(importer)
    return True


def _check_import(importer: Callable[[], object]) -> None:
    """Installed by the metadata is not enough: a broken torch (a missing DLL) must stop
    Apply with the reinstall command, not fail later inside the engine."""
    problem = torch_problem(importer)
    if problem is not None:
        raise DependencyError(problem)


def slicer_pip_install(requirement: str) -> None:
    """``slicer.util.pip_install`` of one requirement with Slicer's packages pinned."""
    import slicer

    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "slicer-constraints.txt"
        constraints.write_text(constraints_text(), encoding="utf-8")
        slicer.util.pip_install([requirement, "--constraint", str(constraints)])


def slicer_install_torch(requirement: str) -> None:
    """PyTorch through the PyTorch extension (CUDA build matched to the driver), else pip."""
    try:
        import PyTorchUtils
    except ImportError:
        slicer_pip_install(requirement)
        return
    version = requirement[len("torch"):].strip()
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=version or None)
    if torch is None:
        raise RuntimeError("the PyTorch extension did not install torch")


def device_warning(choice: str, cuda_available: bool, free_gpu_bytes: int | None,
                   needed_bytes: int = GPU_MEMORY_NEEDED) -> str:
    """A line for the widget when the chosen device will be slow or short of memory."""
    choice = choice.lower()
    if choice == "cpu":
        return ""
    if not cuda_available:
        prefix = "CUDA was chosen, but" if choice.startswith("cuda") else "Note:"
        return (f"{prefix} no CUDA GPU is available: registration runs on the CPU "
                f"(slower; minutes for a full-size CT).")
    if free_gpu_bytes is not None and free_gpu_bytes < needed_bytes:
        return (f"Only {free_gpu_bytes / 1024**3:.1f} GB of GPU memory is free (about "
                f"{needed_bytes / 1024**3:.0f} GB needed at full size); if CUDA runs out of "
                f"memory the engine falls back to the CPU.")
    return ""
