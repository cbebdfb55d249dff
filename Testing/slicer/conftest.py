"""Real MRML from PyPI ``slicer-core`` (no Qt, no application): a fresh scene per test with
the module logics that the Slicer application would create (volumes, transforms,
segmentations, colors, markups, tables); and stand-ins the module tests share (five lobe
labels of a real CT, a PythonSlicer-like launcher) as fixtures: the `slicer` package of
slicer-core imports every module of any `slicer` folder on sys.path, this one included, so
the tests here import no helper module of their own.

Where slicer-core cannot be installed the test modules skip themselves
(``pytest.importorskip("slicer")`` before anything imports vtk), so nothing here imports
slicer at module level.
"""

from __future__ import annotations

import os
import shlex
import site
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from geometry_helpers import rotation

_LOGICS = {"Volumes": "vtkSlicerVolumesLogic", "Transforms": "vtkSlicerTransformLogic",
           "Segmentations": "vtkSlicerSegmentationsModuleLogic",
           "Colors": "vtkSlicerColorLogic", "Markups": "vtkSlicerMarkupsLogic",
           "Tables": "vtkSlicerTablesLogic"}


@dataclass
class MRMLSession:
    """A scene as Slicer sets it up: application logic and module logics attached."""

    scene: object
    application: object
    logics: dict = field(default_factory=dict)


@pytest.fixture
def mrml(tmp_path_factory, monkeypatch) -> Iterator[MRMLSession]:
    slicer = pytest.importorskip("slicer", reason="PyPI slicer-core is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):  # the unrelated PyPI package named 'slicer'
        pytest.skip("the installed 'slicer' package is not slicer-core")
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    # an empty share folder: the colour logic finds no default colour files, quietly
    home = tmp_path_factory.mktemp("slicer-home")
    (home / "share" / "ColorFiles").mkdir(parents=True)
    application.SetHomeDirectory(str(home))
    application.SetShareDirectory("share")
    application.SetMRMLScene(scene)  # selection and interaction singletons
    logics = {}
    for module, class_name in _LOGICS.items():
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        application.SetModuleLogic(module, logic)
        logics[module] = logic
    # what ``scene=None`` resolves to inside Slicer; slicer-core has no application scene
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    session = MRMLSession(scene, application, logics)
    yield session
    scene.Clear(True)


@pytest.fixture
def scene(mrml: MRMLSession):
    return mrml.scene


# direction matrices the tests run under: ITK default, axes flipped, flipped and rotated
DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),  # an image stored in RAS order
    "flipped_rotated": np.diag([-1.0, 1.0, -1.0]) @ rotation(2, 17.0) @ rotation(0, -9.0),
}


@pytest.fixture(params=sorted(DIRECTIONS))
def direction(request) -> np.ndarray:
    return DIRECTIONS[request.param]


def make_image(array: np.ndarray, direction: np.ndarray, spacing=(1.6, 1.3, 2.5),
               origin=(-31.5, 12.25, -140.0)) -> sitk.Image:
    """An image from a ``[z, y, x]`` array with the given geometry."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.asarray(direction, dtype=np.float64).ravel()))
    return image


@pytest.fixture
def image_factory():
    """``make_image`` for the tests (conftest helpers are reached through fixtures)."""
    return make_image


def five_lobes(ct: sitk.Image) -> sitk.Image:
    """Engine lobe labels from the automatic left/right lungs cut along z (a stand-in for a
    real lobe segmentation: what matters here is five labelled regions)."""
    from LungDeepRegLib.preprocess import lung_labels

    lungs = sitk.GetArrayFromImage(lung_labels(ct))
    lobes = np.zeros_like(lungs, dtype=np.uint8)
    z = np.arange(lungs.shape[0])[:, None, None] * np.ones_like(lungs)
    for side, codes in ((1, (2, 1)), (2, (5, 4, 3))):
        inside = lungs == side
        cuts = np.quantile(z[inside], np.linspace(0, 1, len(codes) + 1)[1:-1])
        lobes[inside] = np.asarray(codes, dtype=np.uint8)[np.searchsorted(cuts, z[inside])]
    image = sitk.GetImageFromArray(lobes)
    image.CopyInformation(ct)
    return image


def fake_python_slicer(folder: Path) -> Path:
    """A ``PythonSlicer`` that behaves as Slicer's launcher does for what matters here: it
    throws the caller's environment away (``env -i``, keeping PATH and HOME) and sets its
    own PYTHONPATH (this interpreter's site-packages) before it starts the real interpreter.
    ``-S`` skips the ``.pth`` files, so the editable install's path entry is gone too: the
    engine imports only if the module's command line puts it on ``sys.path`` itself."""
    folder.mkdir(parents=True, exist_ok=True)
    own_path = os.pathsep.join(site.getsitepackages())
    launcher = folder / "PythonSlicer"
    launcher.write_text(
        "#!/bin/sh\n"
        f'exec env -i PATH="$PATH" HOME="$HOME" PYTHONPATH={shlex.quote(own_path)} '
        f'{shlex.quote(sys.executable)} -S "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
    return launcher


@pytest.fixture
def lobes_of():
    """``five_lobes``: stand-in lobe labels of a real CT."""
    return five_lobes


@pytest.fixture
def python_slicer(tmp_path) -> Path:
    """A PythonSlicer-like launcher (see :func:`fake_python_slicer`)."""
    return fake_python_slicer(tmp_path / "Slicer-bin")
