"""Static checks on the engine's source: grammar, layering, Slicer-safety, size, lint."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "LungDeepReg" / "LungDeepRegLib"
SOURCES = sorted(ENGINE.rglob("*.py"))

# Layers only look down: a module may import its own subpackage or any lower layer.
LAYERS = {
    "errors": 0, "version": 0, "device": 0, "spatial": 0,
    "io": 1, "preprocess": 1,
    "metrics": 2, "losses": 2, "networks": 2,
    "data": 3, "models": 3, "reporting": 3, "qa": 3,
    "training": 4, "pipeline": 4,
    "logic": 5, "mrml": 5, "benchmarks": 5,
    "cli": 6, "__main__": 7, "__init__": 7,
}
FORBIDDEN_AT_MODULE_LEVEL = {"qt", "ctk", "slicer", "vtk"}


def component(path: Path) -> str:
    return path.relative_to(ENGINE).parts[0].removesuffix(".py")


def package_imports(path: Path) -> set[str]:
    """Top-level engine components imported by ``path`` (relative or absolute imports)."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(ENGINE).parts) - 1  # folders below the package root
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level <= depth:
                    continue  # stays inside the same subpackage
                names = (node.module or "").split(".")
                targets = [names[0]] if names[0] else [a.name for a in node.names]
                found.update(targets)
            elif node.module and node.module.startswith("LungDeepRegLib."):
                found.add(node.module.split(".")[1])
    return found


def test_sources_parse_with_python_310_grammar():
    for path in SOURCES:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_layers_only_look_down(path):
    source = component(path)
    assert source in LAYERS, f"add {source} to LAYERS in {__file__}"
    for target in package_imports(path):
        assert target in LAYERS, f"{path}: unknown component {target}"
        assert LAYERS[target] < LAYERS[source] or target == source, (
            f"{path.relative_to(ENGINE)} (layer {source}) imports {target}, a higher layer")


def test_no_gui_imports_at_module_level():
    for path in SOURCES:
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module.split(".")[0]]
            assert not FORBIDDEN_AT_MODULE_LEVEL & set(names), (
                f"{path}: module-level import of {names} (PythonSlicer has no qt/ctk/scene)")


def test_files_stay_small():
    too_long = {str(p.relative_to(REPO)): n for p in SOURCES
                if (n := len(p.read_text().splitlines())) > 400}
    assert not too_long, f"split these files: {too_long}"


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    result = subprocess.run([ruff, "check", "LungDeepReg", "Testing"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_imports_without_gui_modules():
    code = ("import sys, LungDeepRegLib, LungDeepRegLib.cli; "
            "bad = {'qt', 'ctk', 'slicer', 'vtk'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
