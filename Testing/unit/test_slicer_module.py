"""Static checks of the Slicer module (real Slicer cannot run here): the module file, its .ui,
its CMake packaging, and that it loads before torch is installed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "LungDeepReg"
MODULE_FILE = MODULE_DIR / "LungDeepReg.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LungDeepReg.ui"
ENGINE = MODULE_DIR / "LungDeepRegLib"
GUI = MODULE_DIR / "LungDeepRegGUI"  # Qt-side panels of the widget (not Slicer modules)
GUI_FILES = sorted(GUI.glob("*.py"))
PANELS = [path for path in GUI_FILES if path.name.endswith("_panel.py")]  # helpers: no ui
# engine modules the module file may import at load time: standard library only inside
LOAD_TIME_ENGINE_MODULES = {"LungDeepRegLib.mrml.job", "LungDeepRegLib.mrml.dependencies",
                            "LungDeepRegLib.mrml.choices", "LungDeepRegLib.mrml.runs"}
# what the panels use before torch is there (or while it is broken): standard library only
PANEL_ENGINE_MODULES = {*LOAD_TIME_ENGINE_MODULES, "LungDeepRegLib.mrml.gpu",
                        "LungDeepRegLib.mrml.masks", "LungDeepRegLib.mrml.mask_preview",
                        "LungDeepRegLib.mrml.run_folders"}
TESTING_CMAKE = MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt"


def module_tree(path: Path = MODULE_FILE) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 10))


def ui_root() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


def cmake_list(text: str, variable: str) -> list[str]:
    """The entries of ``set(<variable> ...)`` with ``${MODULE_NAME}`` expanded."""
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.DOTALL)
    assert match, f"set({variable} ...) not found"
    lines = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [entry.replace("${MODULE_NAME}", "LungDeepReg") for entry in lines if entry]


def module_files() -> tuple[set[str], set[str]]:
    """(.py files, other files) of the engine, the GUI panels and the module's Resources,
    module-relative."""
    scripts, resources = {"LungDeepReg.py"}, set()
    for root in (ENGINE, GUI, MODULE_DIR / "Resources"):
        for path in root.rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            relative = path.relative_to(MODULE_DIR).as_posix()
            (scripts if path.suffix == ".py" else resources).add(relative)
    return scripts, resources


def test_module_parses_with_python_310_grammar():
    assert GUI_FILES, f"no panels in {GUI}"
    for path in (MODULE_FILE, *GUI_FILES):
        module_tree(path)


def test_ui_is_well_formed_and_declares_its_custom_widgets():
    root = ui_root()
    assert root.tag == "ui" and root.findtext("class") == "LungDeepReg"
    classes = {w.get("class") for w in root.iter("widget")}
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {c for c in classes if c.startswith(("qMRML", "qSlicer", "ctk"))}
    assert custom <= declared, f"declare these in <customwidgets>: {custom - declared}"


def ui_names_used(tree: ast.Module) -> set[str]:
    """Every ``self.ui.<name>`` and ``ui.<name>`` in ``tree``."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "ui"
                    and isinstance(owner.value, ast.Name) and owner.value.id == "self") \
                    or (isinstance(owner, ast.Name) and owner.id == "ui"):
                used.add(node.attr)
    return used


@pytest.mark.parametrize("path", [MODULE_FILE, *PANELS], ids=lambda p: p.name)
def test_every_widget_the_code_uses_exists_in_the_ui(path):
    names = {w.get("name") for w in ui_root().iter("widget")}
    used = ui_names_used(module_tree(path))
    assert used, f"{path.name} uses no self.ui names?"
    assert used <= names, f"not in {UI_FILE.name}: {sorted(used - names)}"


def test_panels_import_the_engine_lazily():
    """The widget creates its panels in setup(): a panel may import Qt and Slicer at load
    time, never the engine (torch may be missing until the user agrees to install it)."""
    for path in GUI_FILES:
        for node in module_tree(path).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                    alias.name for alias in node.names]
                assert not any(n.startswith("LungDeepReg") for n in names), (path.name, names)


def test_every_bound_widget_has_a_parameter():
    """connectGui fails on a SlicerParameterName the parameter node does not declare."""
    bound = {p.findtext("string") for p in ui_root().iter("property")
             if p.get("name") == "SlicerParameterName"}
    wrapper = next(node for node in module_tree().body if isinstance(node, ast.ClassDef)
                   and any(getattr(d, "id", "") == "parameterNodeWrapper"
                           for d in node.decorator_list))
    parameters = {item.target.id for item in wrapper.body if isinstance(item, ast.AnnAssign)}
    assert bound and bound <= parameters, f"undeclared parameters: {bound - parameters}"


def test_module_metadata_names_category_and_sources():
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert 'self.parent.categories = ["Registration"]' in source
    for citation in ("Hering", "mlVIRNET", "multiple anatomical constraints", "Castillo",
                     "Vandemeulebroucke", "COPDGene", "DIR-Lab"):
        assert citation in source, citation


def test_module_loads_without_torch():
    """Slicer loads every module at startup: the module file may import only the engine's
    standard-library modules, and those must import (and answer) with torch absent."""
    imported = {node.module for node in module_tree().body
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("LungDeep")}
    for node in module_tree().body:
        if isinstance(node, ast.ImportFrom) and node.module == "LungDeepRegLib.mrml":
            imported.discard(node.module)
            imported |= {f"LungDeepRegLib.mrml.{alias.name}" for alias in node.names}
    assert imported <= LOAD_TIME_ENGINE_MODULES, imported - LOAD_TIME_ENGINE_MODULES
    code = ("import sys\n"
            "for name in ('torch', 'SimpleITK', 'numpy'): sys.modules[name] = None\n"
            + "".join(f"import {name}\n" for name in sorted(PANEL_ENGINE_MODULES))
            + "from LungDeepRegLib.mrml import choices\n"
            "assert [v for _, v in choices.model_choices()] == ['auto', 'none']\n"
            "assert choices.model_card_text('auto') == choices.NO_TORCH\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODULE_DIR)


def test_model_choices_show_the_shipped_cards():
    from LungDeepRegLib.models.store import model_names
    from LungDeepRegLib.mrml import choices
    from LungDeepRegLib.pipeline.register import DEFAULT_MODEL

    values = [value for _, value in choices.model_choices()]
    assert values == ["auto", *model_names(), "none"] and len(values) >= 3
    assert choices.model_card_text("auto").startswith(f"# Model `{DEFAULT_MODEL}`")
    assert choices.model_card_text("none") == choices.NO_NETWORK


def test_module_cmakelists_lists_every_file():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "file(GLOB" not in text.replace(" ", ""), "list files by name: a glob hides gaps"
    scripts, resources = module_files()
    listed_scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    listed_resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert not scripts - set(listed_scripts), (
        f"add to MODULE_PYTHON_SCRIPTS: {sorted(scripts - set(listed_scripts))}")
    assert not resources - set(listed_resources), (
        f"add to MODULE_PYTHON_RESOURCES: {sorted(resources - set(listed_resources))}")
    stale = [e for e in listed_scripts + listed_resources if not (MODULE_DIR / e).is_file()]
    assert not stale, f"listed but missing: {stale}"
    assert len(listed_scripts) == len(set(listed_scripts))
    assert "WITH_GENERIC_TESTS" in text


def test_module_test_is_registered_in_the_modules_testing_folder():
    """Slicer's layout: ``LungDeepReg/Testing/Python/CMakeLists.txt`` registers the module
    test, and a skip (no torch) is reported as a skip, not as a pass or a failure."""
    module = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"if\(BUILD_TESTING\)\s+#[^\n]*\n\s+add_subdirectory\(Testing\)", module)
    assert "add_subdirectory(Python)" in (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text()
    testing = TESTING_CMAKE.read_text(encoding="utf-8")
    assert "slicer_add_python_unittest(SCRIPT ${_module_dir}/${MODULE_NAME}.py)" in testing
    assert re.search(r'SKIP_REGULAR_EXPRESSION "[^"]+"', testing)


@pytest.mark.parametrize(("variable", "expected"), [
    ("EXTENSION_CATEGORY", "Registration"), ("EXTENSION_DEPENDS", "PyTorch"),
    ("EXTENSION_HOMEPAGE", "https://"), ("EXTENSION_CONTRIBUTORS", ""),
    ("EXTENSION_DESCRIPTION", "lung"), ("EXTENSION_ICONURL", ".png"),
    ("EXTENSION_SCREENSHOTURLS", ".png"),
])
def test_extension_metadata(variable, expected):
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf'set\({variable}\s+"([^"]*)"\)', text)
    assert match and match.group(1).strip(), f"{variable} is not set"
    assert expected in match.group(1)
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(LungDeepReg)" in text


def test_extension_images_are_in_the_repository():
    """The icon and screenshot URLs point into this repository's main branch."""
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    urls = re.findall(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(\S+?\.png)", text)
    assert len(urls) >= 2
    for relative in urls:
        assert (REPO / relative).is_file(), relative


# --------------------------------------------------------------- LungDeepRegTest without torch
SLICER_STUBS = """
import sys, types, unittest
sys.modules["torch"] = None  # an extension build machine: PyTorch is not installed
import slicer
qt = types.ModuleType("qt")
qt.QTimer = type("QTimer", (), {"__init__": lambda self: setattr(
    self, "timeout", types.SimpleNamespace(connect=lambda slot: None)),
    "setInterval": lambda self, ms: None})
scripted = types.ModuleType("slicer.ScriptedLoadableModule")
scripted.ScriptedLoadableModule = scripted.ScriptedLoadableModuleLogic = type(
    "Base", (), {"__init__": lambda self, *args: None})
scripted.ScriptedLoadableModuleWidget = scripted.ScriptedLoadableModule
scripted.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,),
                                           {"delayDisplay": lambda self, text: print(text)})
wrapper = types.ModuleType("slicer.parameterNodeWrapper")
wrapper.parameterNodeWrapper = lambda cls: cls
wrapper.Choice = wrapper.WithinRange = lambda *args: None
sys.modules.update({"qt": qt, "slicer.ScriptedLoadableModule": scripted,
                    "slicer.parameterNodeWrapper": wrapper})
slicer.mrmlScene = slicer.vtkMRMLScene()
slicer.app = types.SimpleNamespace(temporaryPath=sys.argv[1], applicationDirPath=sys.argv[1],
                                   processEvents=lambda: None)
# what slicer.testing.runUnitTest does for slicer_add_python_unittest
suite = unittest.TestLoader().loadTestsFromName("LungDeepReg")
result = unittest.TextTestRunner(verbosity=2).run(suite)
print("RESULT", result.testsRun, len(result.skipped), result.wasSuccessful())
"""


def test_module_test_skips_cleanly_without_torch(tmp_path):
    """LungDeepRegTest run as Slicer's CTest runs it (unittest, module loaded from its
    folder), with Slicer's Qt-side modules stubbed and torch absent: one test, skipped, and
    a successful run; its output matches the CTest skip expression."""
    pytest.importorskip("slicer", reason="PyPI slicer-core is not installed")
    result = subprocess.run([sys.executable, "-c", SLICER_STUBS, str(tmp_path)],
                            capture_output=True, text=True, cwd=MODULE_DIR)
    output = result.stdout + result.stderr
    assert "RESULT 1 1 True" in output, output
    expression = re.search(r'SKIP_REGULAR_EXPRESSION "([^"]+)"',
                           TESTING_CMAKE.read_text(encoding="utf-8")).group(1)
    assert re.search(expression, output), output


def function_source(path: Path, name: str) -> ast.FunctionDef:
    return next(node for node in ast.walk(module_tree(path))
                if isinstance(node, ast.FunctionDef) and node.name == name)


def test_device_warning_reads_the_choice_from_the_combo_box():
    """The device slot is connected before the parameter node's: it must read the combo
    box (the new choice), not the parameter node (still the previous one)."""
    update = ast.unparse(function_source(GUI / "device_panel.py", "update"))
    assert "deviceComboBox.currentText" in update
    assert "_parameterNode" not in update and not re.search(r"\.device\b", update)


def test_no_torch_or_cuda_in_slicers_process_at_setup():
    """The module file and its panels never import torch themselves (the GPU check is a
    child process, mrml.gpu), and the old in-process probe is gone."""
    for path in (MODULE_FILE, *GUI_FILES):
        source = path.read_text(encoding="utf-8")
        assert "import torch" not in source and "probe_gpu" not in source, path.name
        assert "torch.cuda" not in source, path.name


def test_a_finished_run_never_reads_the_panels_parameter_node():
    """The widget's exit() sets its parameter node to None while a job may still run: what
    runs when the job ends (the poll and the results panel) must not use it."""
    poll = ast.unparse(function_source(MODULE_FILE, "onPoll"))
    assert "_parameterNode" not in poll
    assert "_parameterNode" not in (GUI / "results_panel.py").read_text(encoding="utf-8")


def test_search_choices_and_default_are_the_engines():
    """The module and the job builder spell the discrete search's choices out (no torch in
    Slicer's process); the list, the combo box, the default and the engine must agree."""
    from LungDeepRegLib.mrml.job import DEFAULT_SEARCH, register_arguments
    from LungDeepRegLib.pipeline.discrete import DEFAULT_SEARCH_MODE, SEARCH_MODES

    listed = next(node.value for node in module_tree().body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "SEARCHES")
    assert ast.literal_eval(listed) == list(SEARCH_MODES)
    combo = next(w for w in ui_root().iter("widget") if w.get("name") == "searchComboBox")
    assert [item.findtext("property/string") for item in combo.findall("item")] == \
        list(SEARCH_MODES)
    assert DEFAULT_SEARCH == DEFAULT_SEARCH_MODE == SEARCH_MODES[0]
    assert "--search" not in register_arguments("f.nrrd", "m.nrrd", "out")
    assert register_arguments("f.nrrd", "m.nrrd", "out", search="replace")[-2:] == [
        "--search", "replace"]


def test_similarity_choices_are_the_engines():
    """The module lists the similarities without importing the engine (torch); the list, the
    combo box's items and the engine's choices must agree."""
    from LungDeepRegLib.pipeline.refine_config import SIMILARITY_WEIGHTS

    listed = next(node.value for node in module_tree().body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "SIMILARITIES")
    assert ast.literal_eval(listed) == list(SIMILARITY_WEIGHTS)
    combo = next(w for w in ui_root().iter("widget") if w.get("name") == "similarityComboBox")
    items = [item.findtext("property/string") for item in combo.findall("item")]
    assert items == list(SIMILARITY_WEIGHTS)
