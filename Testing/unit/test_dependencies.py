"""The Slicer dependency installer's decisions: what is installed, what is never touched."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from LungDeepRegLib.mrml import dependencies as deps

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
