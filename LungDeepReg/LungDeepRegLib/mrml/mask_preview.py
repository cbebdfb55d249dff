"""The panel's "Show lung mask": the automatic lung mask of the fixed volume over it,
before Apply, so that a bad mask (a lung lost, bowel gas taken) is caught before the run.

The mask is the registration's own (``lungdeepreg lung-mask`` calls the same
``preprocess.lung_labels``), computed in a background process like the registration, so
the panel stays responsive. It becomes a segmentation with a "Left lung" and a "Right lung"
segment: the user may correct it in Segment Editor and choose it as the lung mask.

Standard library only at import (the widget imports this at load time).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .job import BackgroundJob, build_command, lung_mask_arguments, make_run_folder

MASK_FILE = "lungs.nrrd"


def _key(fixed) -> tuple[str, int]:
    """What a shown mask was computed from: the node and its voxels' modification time."""
    image = fixed.GetImageData()
    return fixed.GetID(), image.GetMTime() if image is not None else 0


class LungMaskPreview:
    """Computes, shows and hides the automatic lung mask of one fixed volume at a time.

    Args:
        interpreter: returns the interpreter of the background command (PythonSlicer).
        base_folder: where the short-lived working folders go (deleted once loaded).
        scene: the MRML scene (None: Slicer's).
    """

    def __init__(self, interpreter: Callable[[], str], base_folder: Path, scene=None) -> None:
        self.interpreter, self.base_folder, self.scene = interpreter, Path(base_folder), scene
        self.node = None  # the segmentation shown
        self.source: tuple[str, int] | None = None  # what self.node was computed from
        self.job: BackgroundJob | None = None
        self.log: list[str] = []
        self._fixed = None

    def show(self, fixed) -> bool:
        """Show the mask of ``fixed``; True when it is being computed (see :meth:`poll`)."""
        from .masks import show_mask

        key = _key(fixed)
        if self._alive() and self.source == key:
            show_mask(self.node, True)
            return False
        if self.job is not None and self._fixed is fixed:
            return True  # already on its way
        self.cancel()
        self.job, self._fixed, self.log = self._start(fixed), fixed, []
        return True

    def _start(self, fixed) -> BackgroundJob:
        from ..io.images import write_image
        from .volumes import volume_node_to_image

        folder = make_run_folder(self.base_folder, f"lungmask-{fixed.GetName()}")
        try:
            image = write_image(volume_node_to_image(fixed), folder / "fixed.nrrd")
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        argv, env = build_command(self.interpreter(),
                                  lung_mask_arguments(image, folder / MASK_FILE))
        return BackgroundJob(argv, env, cleanup=folder).start()

    def hide(self) -> None:
        from .masks import show_mask

        self.cancel()
        if self._alive():
            show_mask(self.node, False)

    def cancel(self) -> None:
        """Stop a computation in progress (returns at once)."""
        if self.job is not None:
            self.job.cancel(wait=False)
            self.job = self._fixed = None

    @property
    def running(self) -> bool:
        return self.job is not None

    def poll(self) -> str | None:
        """None while computing (or idle); the panel's status line once finished."""
        if self.job is None:
            return None
        self.log += self.job.poll()
        if not self.job.finished:
            return None
        job, fixed = self.job, self._fixed
        self.job = self._fixed = None
        try:
            if job.returncode != 0:
                last = self.log[-1] if self.log else f"exit code {job.returncode}"
                return f"The lung mask could not be computed: {last}"
            if fixed.GetScene() is None:
                return ""  # the volume was removed meanwhile
            self._load(job.cleanup / MASK_FILE, fixed)
        finally:
            job.discard()  # the node holds the mask now: nothing refers to the folder
        volumes = [line for line in self.log if line.startswith(("lung volume", "warning"))]
        return "Automatic lung mask shown. " + " ".join(volumes)

    def _load(self, path: Path, fixed) -> None:
        from ..io.images import read_image
        from .masks import LUNG_COLORS, LUNG_NAMES, show_mask
        from .segmentations import labels_to_segmentation_node

        labels = read_image(path, kind="label")
        self.node = labels_to_segmentation_node(
            labels, self.scene, LUNG_NAMES, node=self.node if self._alive() else None,
            name=f"{fixed.GetName()} lung mask (automatic)", colors=LUNG_COLORS)
        self.node.SetAndObserveTransformNodeID(fixed.GetTransformNodeID())  # follows it
        self.source = _key(fixed)
        show_mask(self.node, True)

    def _alive(self) -> bool:
        return self.node is not None and self.node.GetScene() is not None
