"""The 3D Slicer MRML adapter: engine data <-> scene nodes, importing ``slicer`` lazily.

- :mod:`.volumes`: volume nodes <-> SimpleITK images (RAS <-> LPS geometry);
- :mod:`.transforms`: displacement fields <-> grid transform nodes, field files;
- :mod:`.markups`: landmark arrays <-> point lists with per-point values (TRE);
- :mod:`.segmentations`: lobe label maps <-> segmentation nodes;
- :mod:`.tables`: per-lobe and per-landmark metric tables;
- :mod:`.colors`: the Jacobian colour scale;
- :mod:`.live_qa`: live landmark QA that follows the point lists as they are edited.

Names are resolved on first use, so importing a standard-library-only module of this
package (``mrml.job``, ``mrml.dependencies``) needs neither torch nor SimpleITK.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "volumes": ("image_to_volume_node", "volume_node_to_image"),
    "transforms": ("field_to_transform_node", "transform_node_to_field",
                   "set_reference_roles", "load_field_file"),
    "markups": ("points_to_markups", "markups_to_points", "markups_values", "error_groups",
                "tre_markups_by_group", "save_markups_json", "load_markups_json",
                "ErrorGroup"),
    "segmentations": ("labels_to_segmentation_node", "segmentation_node_to_labels",
                      "lobe_code"),
    "tables": ("lobe_table", "landmark_table"),
    "colors": ("jacobian_color_node", "show_jacobian"),
    "live_qa": ("LiveLandmarkQA",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
