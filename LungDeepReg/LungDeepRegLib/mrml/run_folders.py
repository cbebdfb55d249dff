"""Housekeeping of the module's run folders: runs must not pile up in Slicer's temporary
folder.

Each finished run's folder (exported inputs, field files, metrics, QA report) belongs to the
result nodes made from it. The folder is deleted when none of them is left in the scene:
removed by the user, or refilled by a later run (a chosen output node is updated in place,
so it then belongs to the later run), and at scene close. A folder under an output folder
the user chose is never deleted: those are the files the user asked to keep.

Standard library only at import (the widget imports this at load time).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


class RunFolders:
    """Run folder -> IDs of the nodes made from it, swept when nodes leave the scene."""

    def __init__(self, scene=None) -> None:
        self.scene = scene
        self._owners: dict[Path, set[str]] = {}
        self._kept: set[Path] = set()
        self._observed = None
        self._tag: int | None = None

    @property
    def folders(self) -> list[Path]:
        return list(self._owners)

    def watch(self) -> RunFolders:
        """Sweep whenever a node is removed from the scene."""
        from .scene import resolve_scene

        self.unwatch()
        self._observed = resolve_scene(self.scene)
        self._tag = self._observed.AddObserver(self._observed.NodeRemovedEvent, self._removed)
        return self

    def unwatch(self) -> None:
        if self._tag is not None:
            self._observed.RemoveObserver(self._tag)
            self._observed = self._tag = None

    def _removed(self, caller=None, event=None) -> None:
        self.sweep()

    def add(self, folder: str | Path, nodes: Iterable, keep: bool = False) -> None:
        """``folder`` now belongs to ``nodes``; nodes a later run refilled leave their older
        folder (which goes once it has none left)."""
        folder = Path(folder)
        ids = {node.GetID() for node in nodes if node is not None and node.GetID()}
        for owned in self._owners.values():
            owned -= ids
        self._owners[folder] = ids
        if keep:
            self._kept.add(folder)
        self.sweep()

    def sweep(self) -> list[Path]:
        """Delete the folders none of whose nodes is in the scene any more."""
        from .scene import resolve_scene

        scene = resolve_scene(self.scene)
        gone = []
        for folder, owned in list(self._owners.items()):
            owned.intersection_update({i for i in owned if scene.GetNodeByID(i) is not None})
            if not owned:
                self._forget(folder)
                gone.append(folder)
        return gone

    def clear(self) -> None:
        """Scene close: every temporary run folder goes (kept ones stay on disk)."""
        for folder in list(self._owners):
            self._forget(folder)

    def _forget(self, folder: Path) -> None:
        del self._owners[folder]
        if folder in self._kept:
            self._kept.discard(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
