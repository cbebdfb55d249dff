"""The scene and node plumbing shared by the MRML adapters.

Every adapter takes an explicit ``scene``; ``None`` means ``slicer.mrmlScene``, which exists
only inside the Slicer application. With PyPI ``slicer-core`` (tests, PythonSlicer scripts)
the caller creates a ``vtkMRMLScene`` and passes it. ``slicer`` and ``vtk`` are imported
inside functions so that importing the engine never needs them.
"""

from __future__ import annotations

import numpy as np

# LPS <-> RAS: negate the first two axes (its own inverse)
FLIP_XY = np.diag([-1.0, -1.0, 1.0])


def resolve_scene(scene=None):
    """``scene``, or the application's scene when running inside 3D Slicer."""
    if scene is not None:
        return scene
    import slicer

    found = getattr(slicer, "mrmlScene", None)
    if found is None:
        raise ValueError("no MRML scene: outside the Slicer application pass scene= "
                         "(for example slicer.vtkMRMLScene())")
    return found


def reuse_or_add(scene, class_name: str, name: str = "", node=None):
    """``node`` when given (it must be a ``class_name``), else a new node in ``scene``.

    A given node keeps its name unless ``name`` is set, so that refreshing a result in
    place never renames what the user chose; a new node gets a unique name from ``name``.
    """
    if node is not None:
        if not node.IsA(class_name):
            raise TypeError(f"expected a {class_name}, got {node.GetClassName()}")
        if name:
            node.SetName(name)
        if node.GetScene() is None:
            resolve_scene(scene).AddNode(node)
        return node
    scene = resolve_scene(scene)
    created = scene.AddNewNodeByClass(class_name, name or "")
    if created is None:
        raise RuntimeError(f"the scene cannot create {class_name} nodes")
    return created


def ensure_display(node):
    """The node's display node, created with the scene's defaults when missing."""
    if node.GetDisplayNode() is None and node.GetScene() is not None:
        node.CreateDefaultDisplayNodes()
    return node.GetDisplayNode()


def vtk_matrix(linear: np.ndarray, translation=(0.0, 0.0, 0.0)):
    """A ``vtkMatrix4x4`` from a 3x3 linear part and a translation."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            matrix.SetElement(row, column, float(linear[row, column]))
        matrix.SetElement(row, 3, float(translation[row]))
    return matrix


def numpy_matrix(matrix) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 NumPy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def remove_nodes(scene, *nodes) -> None:
    """Remove temporary nodes together with their display and storage nodes."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        extra = []
        if node.IsA("vtkMRMLDisplayableNode"):
            extra += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for other in extra:
            if other is not None and other.GetScene() is not None:
                scene.RemoveNode(other)
