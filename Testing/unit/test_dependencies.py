"""The Slicer dependency installer's decisions: what is installed, what is never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from LungDeepRegLib.mrml import dependencies as deps
from LungDeepRegLib.mrml import gpu

REPO = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ABSENT = "lungdeepreg-no-such-package-for-tests>=1.0"


def versions(**installed: str):
    """A ``version_of`` over a fixed table (distribution name -> version)."""
    table = {deps.requirement_name(name): version for name, version in installed.items()}
    return lambda name: table.get(deps.requirement_name(name))


def test_requirements_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert list(deps.ENGINE_REQUIREMENTS) == project["dependencies"]


def test_requirement_names_are_normalised():
    assert deps.requirement_name("SimpleITK>=2.4") == "simpleitk"
    assert deps.requirement_name("tomli>=2.0; python_version < '3.11'") == "tomli"
    assert deps.requirement_name("Foo_Bar.baz ==1") == "foo-bar-baz"
    assert deps.is_provided_by_slicer("numpy>=1.23") and deps.is_provided_by_slicer("VTK")
    assert not deps.is_provided_by_slicer("nibabel>=5.0")


def test_plan_never_touches_slicers_own_packages():
    plan = deps.plan_installation(deps.ENGINE_REQUIREMENTS, versions(tqdm="4.66.0"))
    assert plan.torch == "torch>=2.1"
    names = [deps.requirement_name(r) for r in plan.packages]
    assert set(names) - {"tomli"} == {"nibabel", "safetensors", "matplotlib"}  # tomli: < 3.11
    assert set(plan.kept) == {"numpy>=1.23", "SimpleITK>=2.4"}  # missing, yet kept
    assert "SimpleITK" in deps.confirmation_message(plan)


def test_plan_upgrades_too_old_packages_but_not_slicers():
    installed = versions(torch="2.4.0", numpy="1.20.0", SimpleITK="2.4.1", nibabel="4.0.2",
                         safetensors="0.4.5", tqdm="4.66.0", matplotlib="3.9.0", tomli="2.0.1")
    plan = deps.plan_installation(deps.ENGINE_REQUIREMENTS, installed)
    assert plan.torch is None and plan.packages == ["nibabel>=5.0"]
    assert plan.kept == ["numpy>=1.23"]


def test_nothing_to_do_when_everything_is_installed():
    plan = deps.plan_installation(deps.ENGINE_REQUIREMENTS, installed_everything())
    assert plan.empty and not plan.kept


def installed_everything():
    return versions(torch="2.4.0", numpy="1.26.4", SimpleITK="2.4.1", nibabel="5.2.1",
                    safetensors="0.4.5", tqdm="4.66.0", matplotlib="3.9.0", tomli="2.0.1")


def test_ensure_asks_first_and_installs_one_by_one():
    installed: list[str] = []
    requirements = [ABSENT, "numpy>=99999", "lungdeepreg-other-absent>=2"]
    questions: list[str] = []

    def decline(message: str) -> bool:
        questions.append(message)
        return False

    assert not deps.ensure_dependencies(decline, installed.append, installed.append,
                                        requirements)
    assert installed == [] and ABSENT in questions[0]
    assert deps.ensure_dependencies(lambda message: True, installed.append, installed.append,
                                    requirements)
    assert installed == [ABSENT, "lungdeepreg-other-absent>=2"]  # numpy: never


def test_ensure_does_nothing_when_satisfied():
    def never(message: str) -> bool:
        raise AssertionError("asked although nothing is missing")

    assert deps.ensure_dependencies(never, requirements=["numpy>=1.0", "SimpleITK"])


def test_failed_install_names_the_local_wheel_command():
    def offline(requirement: str) -> None:
        raise OSError("Could not find a version that satisfies the requirement")

    with pytest.raises(deps.DependencyError) as caught:
        deps.ensure_dependencies(lambda message: True, offline, offline, [ABSENT])
    message = str(caught.value)
    assert ABSENT in message and "offline" in message
    assert "PythonSlicer -m pip install /path/to/lungdeepreg_no_such_package_for_tests-" \
        in message
    assert "slicer.util.pip_install" in message


def test_constraints_pin_slicers_packages_at_their_installed_versions():
    text = deps.constraints_text()
    assert f"numpy=={metadata.version('numpy')}\n" in text
    assert f"SimpleITK=={metadata.version('SimpleITK')}\n" in text
    assert "torch" not in text


@pytest.mark.parametrize(("choice", "cuda", "free", "expected"), [
    ("CPU", False, None, ""),
    ("Auto", True, 8 * 1024**3, ""),
    ("Auto", False, None, "no CUDA GPU"),
    ("CUDA", False, None, "CUDA was chosen"),
    ("CUDA", True, 1024**3, "1.0 GB of GPU memory"),
])
def test_device_warning(choice, cuda, free, expected):
    warning = deps.device_warning(choice, cuda, free)
    assert (expected in warning) if expected else warning == ""


# ------------------------------------------------------------- a broken torch, the GPU probe
BROKEN_TORCH = ('raise OSError("[WinError 126] The specified module could not be found. '
                'Error loading \\"c10.dll\\" or one of its dependencies.")\n')


def broken_torch_path(tmp_path: Path) -> str:
    """A folder whose ``torch`` fails to import as a broken Windows install does."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(BROKEN_TORCH)
    return os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])


def test_a_broken_torch_is_a_message_with_the_install_command(tmp_path):
    """Everything the panel calls in setup() and enter() survives an OSError from
    ``import torch`` (only ImportError was caught) and says how to reinstall."""
    code = """
import sys
from LungDeepRegLib.mrml import choices, dependencies
from LungDeepRegLib.mrml.gpu import GpuProbe
assert [value for _, value in choices.model_choices()] == ["auto", "none"]
card = choices.model_card_text("auto")
assert "OSError" in card and dependencies.TORCH_REINSTALL in card, card
problem = dependencies.torch_problem()
assert "c10.dll" in problem and dependencies.TORCH_REINSTALL in problem, problem
try:
    dependencies.ensure_dependencies(lambda message: True, requirements=["numpy"])
except dependencies.DependencyError as error:
    assert dependencies.TORCH_REINSTALL in str(error)
else:
    raise AssertionError("Apply would go on with a broken torch")
status = GpuProbe(sys.executable).start().wait()
assert "OSError" in status.error and not status.cuda_available, status
assert dependencies.TORCH_REINSTALL in status.warning("Auto")
"""
    env = {**os.environ, "PYTHONPATH": broken_torch_path(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_torch_problem_says_install_when_missing_and_nothing_when_fine():
    def missing() -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    assert "not installed" in deps.torch_problem(missing)
    assert deps.torch_problem(lambda: None) is None

    def broken() -> None:
        raise RuntimeError("CUDA driver too old")

    with pytest.raises(deps.DependencyError, match="RuntimeError: CUDA driver"):
        deps.ensure_dependencies(lambda message: True, requirements=["numpy"], importer=broken)


def test_gpu_probe_runs_torch_in_a_child_only():
    """The probe imports torch (and would create a CUDA context) in a child process: the
    process that asks, Slicer's, never imports torch."""
    code = """
import json, sys
from LungDeepRegLib.mrml.gpu import GpuProbe
status = GpuProbe(sys.executable).start().wait()
assert "torch" not in sys.modules
print(json.dumps([status.cuda_available, status.free_bytes, status.error]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    cuda, free, error = json.loads(result.stdout.strip().splitlines()[-1])
    assert error == ""
    assert (free is not None and free > 0) if cuda else free is None
    import torch

    assert cuda == torch.cuda.is_available()


def test_probe_output_without_an_answer_is_an_error():
    status = gpu.parse_probe_output("", "Segmentation fault\n", -11)
    assert status.error == "the GPU check failed: Segmentation fault"
    assert "cannot be loaded" in status.warning("CUDA")
    assert gpu.parse_probe_output('noise\n{"cuda": true, "free": 1024}\n', "", 0) == \
        gpu.GpuStatus(True, 1024)
    assert "1.0 GB" not in gpu.GpuStatus(True, 8 * 1024**3).warning("Auto")
    missing = gpu.parse_probe_output('{"cuda": false, "missing": true, "error": "x"}', "", 0)
    assert "not installed yet" in missing.warning("Auto")
