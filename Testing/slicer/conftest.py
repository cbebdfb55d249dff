"""Real MRML from PyPI ``slicer-core`` (no Qt, no application): a fresh scene per test with
the module logics that the Slicer application would create (volumes, transforms,
segmentations, colors, markups, tables).

Where slicer-core cannot be installed the test modules skip themselves
(``pytest.importorskip("slicer")`` before anything imports vtk), so nothing here imports
slicer at module level.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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
