"""Live landmark QA in the scene: per-pair TRE, outlier flags and predicted partners that
follow every control point the user places, drags, confirms or deletes.

Pairs are rows: control point ``k`` of the fixed list pairs with control point ``k`` of
the moving list. Positions are read in each list's own coordinates (the image's own
space), so a moving list placed under the registration transform, together with the
moving volume, still holds moving-image coordinates. The registration field is read once
from the grid transform in the scene; each event then maps one fixed point
(:func:`~LungDeepRegLib.qa.update_pair`) and re-runs the numpy-only outlier rules.

Editing rules (see :mod:`.live_qa_nodes` for how the state shows on the points):

* placing a fixed point appends its predicted partner ``T(p)`` to the moving list, with
  the same label, unconfirmed (unselected); if the moving list already holds a point at
  that row (placed first by the user), that point is the partner, confirmed;
* dragging a fixed point re-maps it; an unconfirmed partner follows the new prediction;
* dragging a moving point, or selecting it, confirms the pair; unselecting it
  unconfirms it; :meth:`LiveLandmarkQA.confirm` does the same from code;
* deleting either point of a pair deletes the pair and the partner point;
* batched edits (events without a point index) re-read both lists (:meth:`refresh`).

The TRE summary covers the confirmed pairs: an unconfirmed prediction has TRE 0 by
construction and would only flatter the mean.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..qa import (
    LandmarkPairs,
    OutlierRule,
    PairStatus,
    add_pair,
    correction_summary,
    export_landmark_set,
    find_outliers,
    pair_landmarks,
    qa_document,
    remove_pair,
    tre_summary,
    update_pair,
    write_qa_json,
    write_qa_table,
)
from ..qa import markups_values as qa_values
from ..qa.export import VALUE_UNITS
from ..spatial import Grid
from .live_qa_nodes import (
    fill_qa_table,
    jump_views,
    paired_count,
    read_partners,
    read_point,
    read_points,
    set_point,
    set_point_values,
    volume_grid,
    world_position,
    write_point_states,
)
from .scene import resolve_scene, reuse_or_add
from .tables import TABLE
from .transforms import transform_node_to_field

_SAME_MM = 1e-9  # a PointModifiedEvent without a move (label, description, selection)


class LiveLandmarkQA:
    """Observe a fixed and a moving point list and keep a QA table up to date.

    Args:
        scene: the MRML scene (``None``: Slicer's scene).
        fixed_markups, moving_markups: point lists (the moving one may start empty:
            every fixed point then gets its predicted partner).
        transform_node: the registration's grid transform (fixed to moving, from parent).
        table_node: the table to fill (a new "Landmark QA" table when None).
        rule: outlier rule settings.
        fixed_volume, moving_volume: optional volume nodes: the grids of voxel-index export
            formats, and which slice views show the moving image (:meth:`jump_slices`).
        reference_grid: sampling grid for a transform that is not a grid transform.
    """

    def __init__(self, scene, fixed_markups, moving_markups, transform_node, table_node=None,
                 rule: OutlierRule | None = None, *, fixed_volume=None, moving_volume=None,
                 reference_grid: Grid | None = None) -> None:
        self.scene = resolve_scene(scene)
        self.fixed_node, self.moving_node = fixed_markups, moving_markups
        self.rule = rule or OutlierRule()
        self.fixed_volume, self.moving_volume = fixed_volume, moving_volume
        self.field, self.grid = transform_node_to_field(transform_node, reference_grid)
        name = "" if table_node is not None else "Landmark QA"
        self.table_node = reuse_or_add(self.scene, TABLE, name, table_node)
        self.last_status: PairStatus | None = None
        self._busy = False
        self._observers: list[tuple[object, int]] = []
        self._edited: set[str] = set()
        self._rows: list[int] = []
        self.pairs: LandmarkPairs
        self.refresh(initial=True)
        self._original_tre = self.pairs.tre[self.pairs.confirmed]
        self._observe()

    # ------------------------------------------------------------------ public API
    @property
    def summary(self) -> dict:
        """TRE mean, SD, median, p75, p95, max, n and error groups of the confirmed pairs,
        plus ``n_pairs``, ``n_flagged`` and ``n_unconfirmed``."""
        confirmed = self.pairs.confirmed
        return {**tre_summary(self.pairs.tre[confirmed]), "n_pairs": len(self.pairs),
                "n_flagged": len(self.report.flagged),
                "n_unconfirmed": int(len(confirmed) - confirmed.sum())}

    def pair_at_row(self, row: int) -> int:
        """The pair index shown in table row ``row`` (rows are sorted, pairs are not)."""
        return self._rows[row]

    def refresh(self, initial: bool = False) -> None:
        """Re-read both point lists and rebuild every pair. Fixed points without a defined
        partner get predicted ones (unconfirmed); extra moving points stay unpaired. On
        ``initial``, a ``confirmed`` measurement (an exported QA set) is honoured too."""
        fixed, labels, defined, _ = read_points(self.fixed_node)
        count = paired_count(defined)
        moving, usable, confirmed = read_partners(self.moving_node, count, initial)
        pairs = pair_landmarks(fixed[:count], fixed[:count], self.field, self.grid,
                               labels[:count], confirmed)
        partners = np.where(usable[:, None], moving, pairs.mapped)
        self.pairs = dataclasses.replace(pairs, moving=partners)
        self._publish(np.flatnonzero(~usable))

    def confirm(self, index: int, confirmed: bool = True) -> PairStatus:
        """Mark pair ``index`` as checked by a person (or not) and return its status."""
        return self._update(index, confirmed=confirmed)

    def centre_on(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """World RAS positions of the fixed and the moving point of pair ``index``."""
        return (world_position(self.fixed_node, index),
                world_position(self.moving_node, index))

    def jump_slices(self, index: int) -> int:
        """Centre the slice views on pair ``index`` (see :func:`.live_qa_nodes.jump_views`)."""
        fixed_ras, moving_ras = self.centre_on(index)
        moving_id = self.moving_volume.GetID() if self.moving_volume is not None else None
        return jump_views(self.scene, fixed_ras, moving_ras, moving_id)

    def export(self, folder: str | Path, fmt: str | None = None,
               moving_fmt: str | None = None) -> dict[str, Path]:
        """Write the corrected set (``<side>_landmarks_qa.mrk.json`` with TRE and flags,
        ``.csv``, the original text format ``fmt``) and ``landmark_qa.json``/``.csv`` with
        the before/after summary. Voxel formats (DIR-Lab) need ``fixed_volume``: the field's
        grid may be coarser than the image the indices refer to."""
        folder = Path(folder)
        fixed_grid = volume_grid(self.fixed_volume) if self.fixed_volume is not None else None
        moving_grid = (volume_grid(self.moving_volume) if self.moving_volume is not None
                       else fixed_grid)
        written = export_landmark_set(folder, self.pairs, self.report, fmt, fixed_grid,
                                      moving_grid, moving_fmt)
        document = qa_document(self.pairs, self.report)
        document["summary"].update(self.summary_before_after())
        written["qa_json"] = write_qa_json(folder / "landmark_qa.json", document)
        written["qa_csv"] = write_qa_table(folder / "landmark_qa.csv", self.pairs, self.report)
        return written

    def summary_before_after(self) -> dict:
        """TRE of the confirmed pairs as first read and now, and how many pairs changed."""
        changed = np.array([label in self._edited for label in self.pairs.labels], bool)
        return correction_summary(self._original_tre, self.pairs.tre[self.pairs.confirmed],
                                  changed)

    def stop(self) -> None:
        """Remove the observers: the lists and the table stay as they are."""
        for node, tag in self._observers:
            node.RemoveObserver(tag)
        self._observers.clear()

    # ------------------------------------------------------------------ event handlers
    def _observe(self) -> None:
        """PointModified covers drags (every step: one field sample), label and selection
        changes; PointPositionDefined a newly placed point (PointAdded comes before the
        position is defined while Slicer shows its preview point); PointRemoved deletions."""
        for side, node in (("fixed", self.fixed_node), ("moving", self.moving_node)):
            for event, handler in ((node.PointModifiedEvent, self._on_modified),
                                   (node.PointPositionDefinedEvent, self._on_defined),
                                   (node.PointRemovedEvent, self._on_removed)):
                tag = node.AddObserver(event, self._callback(handler, side))
                self._observers.append((node, tag))

    def _on_modified(self, side: str, index: int | None) -> None:
        if index is None:
            self.refresh()
            return
        if not 0 <= index < len(self.pairs):
            return  # a preview point, or a moving point still waiting for its fixed one
        position, label, defined, selected = read_point(self._node(side), index)
        if not defined:
            return
        if side == "fixed":
            if not np.allclose(position, self.pairs.fixed[index], rtol=0, atol=_SAME_MM):
                self._update(index, fixed_point=position)
            elif label != self.pairs.labels[index]:
                labels = list(self.pairs.labels)
                labels[index] = label
                self.pairs = dataclasses.replace(self.pairs, labels=tuple(labels))
                self._publish()
        elif not np.allclose(position, self.pairs.moving[index], rtol=0, atol=_SAME_MM):
            self._update(index, moving_point=position, confirmed=True)
        elif selected != bool(self.pairs.confirmed[index]):
            self._update(index, confirmed=selected)

    def _on_defined(self, side: str, index: int | None) -> None:
        if index is None or (index > len(self.pairs) and side == "fixed"):
            self.refresh()
        elif index < len(self.pairs):
            self._on_modified(side, index)
        elif side == "fixed":  # the next fixed point: a new pair
            position, label, _, _ = read_point(self.fixed_node, index)
            partner = None
            if index < self.moving_node.GetNumberOfControlPoints():
                moving, _, moving_defined, _ = read_point(self.moving_node, index)
                partner = moving if moving_defined else None
            self.pairs, self.last_status = add_pair(self.pairs, position, self.field,
                                                    self.grid, partner, label)
            self._edited.add(label)
            self._publish([] if partner is not None else [index])

    def _on_removed(self, side: str, index: int | None) -> None:
        if index is None:
            self.refresh()
            return
        if index >= len(self.pairs):
            return
        self.pairs = remove_pair(self.pairs, index)
        other = self.moving_node if side == "fixed" else self.fixed_node
        with self._writing():
            if index < other.GetNumberOfControlPoints():
                other.RemoveNthControlPoint(index)
        self._publish()

    # ------------------------------------------------------------------ updates
    def _update(self, index: int, **changes) -> PairStatus:
        before = self.pairs.moving[index].copy()
        self.pairs, status = update_pair(self.pairs, index, self.field, self.grid, **changes)
        self._edited.add(status.label)
        moved = "moving_point" not in changes and not np.array_equal(
            before, self.pairs.moving[index])
        self._publish([index] if moved else [])
        self.last_status = status
        return status

    def _publish(self, moved: Iterable[int] = ()) -> None:
        """Re-run the outlier rules and write positions, states, values and the table."""
        self.report = find_outliers(self.pairs, self.rule)
        values = qa_values(self.pairs, self.report)
        with self._writing():
            for k in sorted(int(k) for k in moved):
                set_point(self.moving_node, k, self.pairs.moving[k], self.pairs.labels[k])
            write_point_states(self.fixed_node, self.report, None)
            write_point_states(self.moving_node, self.report, self.pairs.confirmed)
            for node in (self.fixed_node, self.moving_node):
                set_point_values(node, values, VALUE_UNITS)
            self._rows = fill_qa_table(self.table_node, self.report, self.summary)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Our own writes to the lists: their events (delivered at EndModify, before this
        block ends) are ignored, so an update never triggers another one."""
        if self._busy:
            yield
            return
        self._busy = True
        states = [(node, node.StartModify()) for node in (self.fixed_node, self.moving_node)]
        try:
            yield
        finally:
            for node, state in reversed(states):
                node.EndModify(state)
            self._busy = False

    def _callback(self, handler, side: str):
        """A VTK observer passing the event's point index (``None`` for batched events)
        to ``handler(side, index)``, skipped while the QA writes to the lists itself."""
        import vtk

        @vtk.calldata_type(vtk.VTK_INT)
        def callback(caller, event, index=None) -> None:
            if not self._busy:
                handler(side, index)

        return callback

    def _node(self, side: str):
        return self.fixed_node if side == "fixed" else self.moving_node

