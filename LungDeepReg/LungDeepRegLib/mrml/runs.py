"""The module's registrations, independent of the module panel.

A run is one Apply: the chosen nodes written out, the engine's command line in a
background process, its outputs loaded back as nodes. Everything a run needs to finish
(input and output nodes, settings, folder) is captured in a :class:`RunRequest` when it
starts, so it finishes the same whether the panel is still shown or the user went to
another module meanwhile (the widget's parameter node is disconnected on exit). The widget
only wires Qt to :class:`Registrations`; real-MRML tests drive the same class.

Standard library only at import (the widget imports this at load time, before torch).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .job import (
    DEFAULT_SEARCH,
    BackgroundJob,
    build_command,
    make_run_folder,
    register_arguments,
)
from .run_folders import RunFolders


@dataclass
class RunRequest:
    """What Apply read from the panel: node references and settings (a snapshot)."""

    fixed: object
    moving: object
    fixed_lobes: object | None = None
    moving_lobes: object | None = None
    fixed_landmarks: object | None = None
    moving_landmarks: object | None = None
    lung_mask: object | None = None  # segmentation or label map volume; None: automatic
    lung_segment: str = ""  # a chosen segment ID; "": the segments named lung
    model: str = "auto"
    device: str = "auto"
    refine_iterations: int | None = None  # None: the tuned schedule
    fixed_is: str = "inhale"
    output_spacing: float | None = None  # None: the CLI default; 0: the fixed grid
    similarity: str = "ngf"  # of the instance optimisation (--similarity)
    search: str = DEFAULT_SEARCH  # the discrete search's use (--search)
    report: bool = True
    transform: object | None = None  # chosen output nodes (None: new ones)
    warped: object | None = None
    jacobian: object | None = None
    output_folder: str = ""  # the user's folder (kept); "": temporary (removed later)

    @classmethod
    def from_parameters(cls, p, output_folder: str = "") -> RunRequest:
        """From the module's parameter node (``LungDeepRegParameterNode``)."""
        return cls(
            fixed=p.fixedVolume, moving=p.movingVolume, fixed_lobes=p.fixedLobes,
            moving_lobes=p.movingLobes, fixed_landmarks=p.fixedLandmarks,
            moving_landmarks=p.movingLandmarks, lung_mask=p.lungMask,
            lung_segment=p.lungMaskSegment, model=p.model, device=p.device.lower(),
            refine_iterations=None if p.refineIterations < 0 else p.refineIterations,
            fixed_is="exhale" if p.fixedIsExhale else "inhale",
            output_spacing=p.outputSpacing, similarity=p.similarity, search=p.search,
            report=p.writeReport,
            transform=p.outputTransform, warped=p.outputWarped, jacobian=p.outputJacobian,
            output_folder=str(output_folder or ""))

    def problem(self) -> str:
        """Why Apply cannot start ("" when it can)."""
        if not (self.fixed and self.moving) or self.fixed == self.moving:
            return "Select two different volumes."
        inputs = (self.fixed, self.moving)
        if any(node is not None and node in inputs for node in (self.warped, self.jacobian)):
            return "An output volume would overwrite an input volume."
        return ""


@dataclass
class RegistrationRun:
    request: RunRequest
    folder: Path  # the run's own folder: inputs/ and registration/
    job: BackgroundJob

    @property
    def out_dir(self) -> Path:
        return self.folder / "registration"

    @property
    def keep(self) -> bool:
        return bool(self.request.output_folder)


@dataclass
class RunOutcome:
    run: RegistrationRun
    results: object | None = None  # session.SceneResults; None when the run failed
    log_tail: list[str] | None = None

    def status(self) -> str:
        """The panel's status line."""
        if self.results is None:
            return "Registration failed; see the log."
        where = (f"Files in {self.run.out_dir}" if self.run.keep else
                 "Files in a temporary folder, removed with the results "
                 "(choose an output folder to keep them)")
        warnings = self.results.warnings
        checks = f" {len(warnings)} self-check warning(s): see below." if warnings else ""
        return f"Done. {where}.{checks}"

    def warning_text(self) -> str:
        """The engine's failed self-checks, one per line ("" when all passed)."""
        if self.results is None or not self.results.warnings:
            return ""
        return "\n".join(f"\u26a0 {message}" for message in self.results.warnings)


class Registrations:
    """Starts, follows, cancels and finishes registration runs; owns the results and the
    run folders.

    Args:
        interpreter: returns the background interpreter (PythonSlicer in Slicer).
        temporary_base: where runs without an output folder go (Slicer's temporary path).
        scene: the MRML scene (None: Slicer's).
    """

    def __init__(self, interpreter: Callable[[], str], temporary_base: str | Path,
                 scene=None) -> None:
        self.interpreter, self.temporary_base = interpreter, Path(temporary_base)
        self.scene = scene
        self.current: RegistrationRun | None = None
        self.results = None  # session.SceneResults of the last finished run
        self.last_run: RegistrationRun | None = None  # the run that made ``results``
        self.folders = RunFolders(scene)

    def start(self, request: RunRequest) -> RegistrationRun:
        """Export the inputs and start the command; raises before anything runs when the
        inputs are wrong (and leaves no folder behind)."""
        from . import session

        if self.current is not None:
            raise RuntimeError("a registration is running already")
        if problem := request.problem():
            raise ValueError(problem)
        base = Path(request.output_folder) if request.output_folder else self.temporary_base
        folder = make_run_folder(base, request.fixed.GetName())
        try:
            inputs = session.export_inputs(
                folder / "inputs", request.fixed, request.moving, request.fixed_lobes,
                request.moving_lobes, request.fixed_landmarks, request.moving_landmarks,
                request.lung_mask, request.lung_segment)
            arguments = register_arguments(
                out=folder / "registration", model=request.model, device=request.device,
                refine_iterations=request.refine_iterations, fixed_is=request.fixed_is,
                output_spacing=request.output_spacing, similarity=request.similarity,
                search=request.search,
                report=request.report, **inputs)
            argv, env = build_command(self.interpreter(), arguments)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.current = RegistrationRun(request, folder,
                                       BackgroundJob(argv, env, cleanup=folder).start())
        return self.current

    @property
    def finished(self) -> bool:
        """The current run's process has ended and all its output was polled."""
        return self.current is not None and self.current.job.finished

    def finish(self, log_tail: list[str] | None = None) -> RunOutcome:
        """Load the finished run's outputs into the scene with the nodes it started with."""
        from . import session

        run, self.current = self.current, None
        if run is None:
            raise RuntimeError("no registration to finish")
        if run.job.returncode != 0:
            run.job.discard()
            return RunOutcome(run, None, log_tail)
        request = run.request
        try:
            results = session.load_results(
                run.out_dir, request.fixed, request.moving, self.scene,
                transform=request.transform, warped=request.warped,
                jacobian=request.jacobian, previous=self.results)
        except Exception:
            if not run.keep:
                run.job.discard()
            raise
        self.results, self.last_run = results, run
        self.folders.add(run.folder, results.nodes(), keep=run.keep)
        return RunOutcome(run, results, log_tail)

    def cancel(self) -> bool:
        """Stop the current run at once; the kill and the folder's removal finish in the
        background. False when nothing was running."""
        if self.current is None:
            return False
        self.current.job.cancel(wait=False)
        self.current = None
        return True

    def close_scene(self) -> None:
        """The scene goes: stop a run, forget results, delete temporary run folders."""
        self.cancel()
        self.results = self.last_run = None
        self.folders.clear()
