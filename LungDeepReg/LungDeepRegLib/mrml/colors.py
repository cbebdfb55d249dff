"""The Jacobian determinant map on a diverging colour scale centred at det J = 1.

Blue where the registration compresses tissue (det J < 1), white where volume is kept, red
where it expands (det J > 1), and a distinct green at det J <= 0, where the transform folds
(not invertible). The scale spans det J 0..2; a scalar volume display maps its window onto
the colour node's range, so :func:`show_jacobian` sets window 2 / level 1 to keep 1 white.
"""

from __future__ import annotations

from .scene import ensure_display, resolve_scene

JACOBIAN_RANGE = (0.0, 2.0)
JACOBIAN_COLOR_NAME = "LungDeepReg Jacobian"
_ROLE_ATTRIBUTE = "LungDeepReg.Role"
_ROLE = "JacobianColors"
FOLD_COLOR = (0.0, 0.8, 0.0)
# (det J, RGB): a cool-warm diverging ramp through white at 1
_RAMP = ((0.01, (0.23, 0.30, 0.75)), (0.5, (0.55, 0.67, 0.96)), (1.0, (1.0, 1.0, 1.0)),
         (1.5, (0.94, 0.60, 0.49)), (2.0, (0.71, 0.02, 0.15)))


def jacobian_color_node(scene=None):
    """The scene's Jacobian colour node (a ``vtkMRMLProceduralColorNode``), made once."""
    import slicer
    import vtk

    scene = resolve_scene(scene)
    existing = scene.GetNodesByClass("vtkMRMLProceduralColorNode")
    for index in range(existing.GetNumberOfItems()):
        candidate = existing.GetItemAsObject(index)
        if candidate.GetAttribute(_ROLE_ATTRIBUTE) == _ROLE:
            return candidate
    transfer = vtk.vtkColorTransferFunction()
    transfer.SetColorSpaceToRGB()
    transfer.AddRGBPoint(JACOBIAN_RANGE[0], *FOLD_COLOR)
    for value, color in _RAMP:
        transfer.AddRGBPoint(value, *color)
    transfer.ClampingOn()
    node = slicer.vtkMRMLProceduralColorNode()
    node.SetName(JACOBIAN_COLOR_NAME)
    node.SetAttribute(_ROLE_ATTRIBUTE, _ROLE)
    node.SetAttribute("Category", "LungDeepReg")
    node.SetDescription("det J: blue < 1 (compression), white = 1, red > 1 (expansion), "
                        "green <= 0 (folding)")
    node.SetAndObserveColorTransferFunction(transfer)
    scene.AddNode(node)
    return node


def show_jacobian(volume_node, scene=None, legend: bool = True):
    """Colour a Jacobian determinant volume with :func:`jacobian_color_node`, centred at 1.

    Adds a colour legend titled "det J" when the scene supports legends (inside Slicer).
    Returns the volume's display node.
    """
    scene = resolve_scene(scene if scene is not None else volume_node.GetScene())
    color = jacobian_color_node(scene)
    display = ensure_display(volume_node)
    if display is None:
        raise ValueError(f"volume {volume_node.GetName()!r} is not in a scene")
    low, high = JACOBIAN_RANGE
    display.SetAndObserveColorNodeID(color.GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(high - low, (high + low) / 2.0)
    if legend:
        _add_legend(scene, volume_node)
    return display


def _add_legend(scene, volume_node) -> None:
    import slicer

    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        return  # bare MRML without the Colors module: no legends to show
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume_node)
    if legend is not None:
        legend.SetTitleText("det J")
        legend.SetVisibility(True)
