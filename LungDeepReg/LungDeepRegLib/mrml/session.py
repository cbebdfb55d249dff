"""One registration as the Slicer widget runs it: nodes out to files, outputs back as nodes.

The widget itself only handles Qt; this is its scene side, so that real-MRML tests
(``slicer-core``) cover what the module does. Before the background job, the selected nodes
are written where the command line reads them (:func:`export_inputs`); after it, the
command's output folder becomes nodes (:func:`load_results`). Nodes are only created once
the job has finished, so a cancelled or failed run leaves nothing half made in the scene.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.images import read_image, write_image
from ..io.landmarks import read_landmarks, write_csv
from ..io.lobes import LOBE_NAMES
from ..io.transforms import read_field
from ..spatial import Grid
from .colors import show_jacobian
from .markups import markups_to_points, points_to_markups, tre_markups_by_group
from .masks import write_lung_mask
from .scene import remove_nodes
from .segmentations import labels_to_segmentation_node, segmentation_node_to_labels
from .tables import landmark_table, lobe_table
from .transforms import field_to_transform_node, set_reference_roles
from .volumes import image_to_volume_node, volume_node_to_image

METRICS_FILE = "metrics.json"  # written last by the command line: its presence means done


def export_inputs(folder: str | Path, fixed, moving, fixed_lobes=None, moving_lobes=None,
                  fixed_landmarks=None, moving_landmarks=None, lung_mask=None,
                  lung_segment: str = "") -> dict[str, Path | str]:
    """Write the chosen nodes into ``folder``; returns keyword arguments of
    :func:`.job.register_arguments` (inputs only).

    Volumes keep their own geometry (parent transforms are not applied, so a moving volume
    shown under an earlier result is registered as acquired). Lobes and landmarks need both
    sides, as on the command line: one side alone is an :class:`InputError`. ``lung_mask``
    (a segmentation, its segment ``lung_segment`` or those named lung; or a label map) is
    written 0/1 on the fixed grid as ``--fixed-mask``.
    """
    for kind, pair in (("lobes", (fixed_lobes, moving_lobes)),
                       ("landmarks", (fixed_landmarks, moving_landmarks))):
        given = [node for node in pair if node is not None]
        if len(given) == 1:
            raise InputError(given[0].GetName(), f"{kind} need both a fixed and a moving node")
    folder = Path(folder)
    fixed_image = volume_node_to_image(fixed)
    arguments: dict[str, Path | str] = {
        "fixed": write_image(fixed_image, folder / "fixed.nrrd"),
        "moving": write_image(volume_node_to_image(moving), folder / "moving.nrrd"),
    }
    if lung_mask is not None:
        arguments["fixed_mask"] = write_lung_mask(lung_mask, fixed_image,
                                                  folder / "fixed_mask.nrrd", lung_segment)
    if fixed_lobes is not None and moving_lobes is not None:
        for key, node, volume in (("fixed_lobes", fixed_lobes, fixed),
                                  ("moving_lobes", moving_lobes, moving)):
            labels = segmentation_node_to_labels(node, volume_node_to_image(volume))
            arguments[key] = write_image(labels, folder / f"{key}.nrrd")
    if fixed_landmarks is not None and moving_landmarks is not None:
        for key, node in (("fixed_landmarks", fixed_landmarks),
                          ("moving_landmarks", moving_landmarks)):
            points, labels = markups_to_points(node)
            arguments[key] = write_csv(folder / f"{key}.csv", points, labels)
        arguments["landmark_format"] = "csv"
    return arguments


def pair_to_nodes(inputs, scene=None, prefix: str = "Sample") -> dict[str, object]:
    """Volumes (and landmarks, when given) of a pair on disk (``RegistrationInputs``, for
    example ``LungDeepRegLogic().demo_pair(folder)``) as nodes named ``prefix ...``."""
    nodes: dict[str, object] = {}
    for key, phase in (("fixed", "inhale"), ("moving", "exhale")):
        image = read_image(getattr(inputs, key), kind="any")
        nodes[key] = image_to_volume_node(image, scene, f"{prefix} {phase} ({key})")
        path = getattr(inputs, f"{key}_landmarks")
        if path is not None:
            fmt = (inputs.moving_landmark_format if key == "moving" else None) \
                or inputs.landmark_format
            points = read_landmarks(path, fmt, Grid.from_image(image))
            nodes[f"{key}_landmarks"] = points_to_markups(points, scene,
                                                          f"{prefix} {phase} landmarks")
    return nodes


@dataclass
class SceneResults:
    """The nodes made from one registration's output folder, and its metrics."""

    metrics: dict
    transform: object
    warped: object
    jacobian: object
    lobe_table: object | None = None
    landmark_table: object | None = None
    tre_markups: list = field(default_factory=list)
    report: Path | None = None
    warped_lobes: object | None = None  # segmentation of the warped moving lobes

    @property
    def folding_fraction(self) -> float:
        return float(self.metrics["jacobian"]["folding_fraction"])

    def tables(self) -> list:
        return [t for t in (self.lobe_table, self.landmark_table) if t is not None]

    def nodes(self) -> list:
        """Every node made from the output folder (its files are no longer needed by them,
        but the report and the folder go together: see ``run_folders``)."""
        return [n for n in (self.transform, self.warped, self.jacobian, self.warped_lobes,
                            *self.tables(), *self.tre_markups) if n is not None]

    @property
    def warnings(self) -> list[str]:
        """The engine's failed self-checks (``metrics.json["warnings"]``), as sentences."""
        return warning_messages(self.metrics)

    def summary(self) -> str:
        """Folding (always), then TRE and mean lobe Dice when measured: the widget's line."""
        jacobian = self.metrics["jacobian"]
        parts = [f"Folding {100 * self.folding_fraction:.4f} % of {jacobian['region']} "
                 f"({jacobian['folding_count']} voxels), SD log J "
                 f"{jacobian['sd_log_jacobian']:.3f}"]
        if "landmarks" in self.metrics:
            before, after = (self.metrics["landmarks"][k] for k in ("before", "after"))
            parts.append(f"TRE {before['mean']:.2f} -> {after['mean']:.2f} mm "
                         f"(n={after['n']})")
        return "; ".join(parts)


def warning_messages(metrics: dict) -> list[str]:
    """``metrics["warnings"]`` (``{"check", "message"}`` entries) as text, read defensively:
    an older engine writes none, and an entry may be a plain string."""
    found = metrics.get("warnings", []) if isinstance(metrics, dict) else []
    messages = []
    for entry in found if isinstance(found, list) else []:
        if isinstance(entry, dict):
            text = str(entry.get("message") or entry.get("check") or "").strip()
        else:
            text = str(entry).strip()
        if text:
            messages.append(text)
    return messages


def is_finished(out_dir: str | Path) -> bool:
    return (Path(out_dir) / METRICS_FILE).is_file()


def load_results(out_dir: str | Path, fixed, moving, scene=None, name: str = "LungDeepReg",
                 transform=None, warped=None, jacobian=None,
                 previous: SceneResults | None = None) -> SceneResults:
    """Nodes for a finished registration in ``out_dir``.

    ``transform``, ``warped`` and ``jacobian`` are the user's chosen output nodes (updated in
    place and keeping their names) or None for new ones. Tables and TRE point lists of
    ``previous`` are replaced, so running again does not pile up old results.
    """
    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / METRICS_FILE).read_text(encoding="utf-8"))
    field_tensor, grid = read_field(out_dir / "field.nrrd")
    transform = field_to_transform_node(field_tensor, grid, scene, _new(f"{name} transform",
                                                                        transform), transform)
    set_reference_roles(transform, fixed, moving)
    warped = image_to_volume_node(read_image(out_dir / "warped_moving.nrrd", kind="any"),
                                  scene, _new(f"{name} warped", warped), warped)
    jacobian = image_to_volume_node(read_image(out_dir / "jacobian.nrrd", kind="any"),
                                    scene, _new(f"{name} Jacobian", jacobian), jacobian)
    show_jacobian(jacobian, scene)
    results = SceneResults(metrics, transform, warped, jacobian)
    if previous is not None:
        remove_nodes(scene, *previous.tre_markups)
    if "labels" in metrics:
        results.lobe_table = lobe_table(metrics, scene, _kept(previous, "lobe_table"),
                                        name=f"{name} lobe overlap")
    if "landmarks" in metrics:
        results.landmark_table = landmark_table(metrics, scene,
                                                _kept(previous, "landmark_table"),
                                                name=f"{name} landmark TRE")
        results.tre_markups = _tre_markups(out_dir, metrics, scene, name)
    lobes = out_dir / "warped_moving_lobes.nrrd"
    if lobes.is_file():
        results.warped_lobes = warped_lobes_node(
            read_image(lobes, kind="label"), metrics, scene, _kept(previous, "warped_lobes"),
            f"{name} warped moving lobes")
    report = out_dir / "report.html"
    results.report = report if report.is_file() else None
    return results


def warped_lobes_node(labels, metrics: dict, scene=None, node=None, name: str = ""):
    """The warped moving lobes as a segmentation over the fixed image, each segment named
    with its Dice after registration (``Left upper lobe, warped (Dice 0.91)``) and holding
    Dice before and after as segment tags. Shown as outlines, so that the fixed lobes
    (filled) stay visible beside them."""
    after = _dice_by_code(metrics, "after")
    before = _dice_by_code(metrics, "before")
    names = {code: _lobe_segment_name(code, after.get(code)) for code in LOBE_NAMES}
    node = labels_to_segmentation_node(labels, scene, names, node=node, name=name)
    segmentation = node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        code = int(segment.GetLabelValue())
        for key, table in (("DiceBefore", before), ("DiceAfter", after)):
            if table.get(code) is not None:
                segment.SetTag(f"LungDeepReg.{key}", f"{table[code]:.4f}")
    display = node.GetDisplayNode()
    display.SetVisibility2DFill(False)  # outlines over the fixed lobes' fill
    display.SetVisibility2DOutline(True)
    return node


def _dice_by_code(metrics: dict, when: str) -> dict[int, float | None]:
    part = metrics.get("labels", {}).get(when, {}) if isinstance(metrics, dict) else {}
    found = {}
    for code, values in part.items():
        dice = values.get("dice") if isinstance(values, dict) else None
        found[int(code)] = None if dice is None or dice != dice else float(dice)  # NaN: None
    return found


def _lobe_segment_name(code: int, dice: float | None) -> str:
    lobe = f"{LOBE_NAMES[code].capitalize()} lobe, warped"
    return f"{lobe} (Dice {dice:.2f})" if dice is not None else lobe


def _kept(previous: SceneResults | None, attribute: str):
    """A node of the previous result to refill, unless the user removed it meanwhile (it
    is not brought back)."""
    node = getattr(previous, attribute, None)
    return node if node is not None and node.GetScene() is not None else None


def _new(name: str, node) -> str:
    """The name for a new node; a node the user chose keeps its own name."""
    return "" if node is not None else name


def _tre_markups(out_dir: Path, metrics: dict, scene, name: str) -> list:
    """The fixed landmarks with their TRE, one point list per error class."""
    rows = metrics["landmarks"]["per_landmark"]
    path = out_dir / "fixed_landmarks_tre.mrk.json"
    if not rows or not path.is_file():
        return []
    points = read_landmarks(path, "mrk-json")
    tre = [float(row["tre_mm"]) for row in rows]
    labels = [f"L{int(row['index'])}" for row in rows]
    return tre_markups_by_group(points, tre, scene, prefix=f"{name} TRE", labels=labels)
