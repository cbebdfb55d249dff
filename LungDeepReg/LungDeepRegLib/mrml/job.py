"""The background job of the Slicer widget: the engine's command line in a child process.

Why a process and not a thread: registration and training hold the interpreter for minutes;
in a child process Slicer stays responsive, Cancel stops the work at once, and a crash cannot
take the scene with it. The widget and the tests build the command with the same function,
:func:`build_command`, so what the tests run is what Slicer runs.

Standard library only: the widget imports this before it knows that torch is installed, and
the command line imports it for the progress-line format (one definition for writer and
reader).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PROGRESS_PREFIX = "PROGRESS"  # machine-readable lines: "PROGRESS <fraction> <step>"
ENGINE_PATH = Path(__file__).resolve().parents[2]  # the folder that holds LungDeepRegLib
PathLike = str | Path
# the engine's pipeline.discrete.DEFAULT_SEARCH_MODE, spelt out: this module must not load
# torch into Slicer's process (a test checks that they agree)
DEFAULT_SEARCH = "off"


def format_progress(fraction: float, step: str) -> str:
    """The line the command line prints on stderr for each step."""
    return f"{PROGRESS_PREFIX} {fraction:.3f} {step}"


def parse_progress(line: str) -> tuple[float, str] | None:
    """``(fraction, step)`` of a progress line, or None for any other output line.

    The marker may follow other text on the same line: a tqdm bar on the same stream is
    redrawn with a carriage return and no newline, so the next progress line is appended
    to it."""
    before, marker, rest = line.rpartition(f"{PROGRESS_PREFIX} ")
    if not marker or before[-1:].isalnum():
        return None
    parts = rest.strip().split(" ", 1)
    try:
        fraction = float(parts[0])
    except ValueError:
        return None
    return min(max(fraction, 0.0), 1.0), parts[1] if len(parts) == 2 else ""


# The child finds the engine through its command line, not through PYTHONPATH: PythonSlicer
# is a launcher that sets its own PYTHONPATH (Slicer's site-packages) for the real
# interpreter, so a PYTHONPATH set by the caller may not reach it. ``-u``: progress lines
# arrive as they are printed; ``-X utf8``: output is UTF-8 whatever the launcher's locale.
BOOTSTRAP = ("import sys; sys.path.insert(0, {engine!r}); "
             "from LungDeepRegLib.cli import main; sys.exit(main(sys.argv[1:]))")


def build_command(interpreter: PathLike, arguments: Sequence[PathLike],
                  engine_path: PathLike | None = None,
                  base_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The engine's command line (``lungdeepreg <arguments>``) under ``interpreter``, and
    the environment to start it with.

    ``interpreter`` is PythonSlicer inside Slicer (a launcher: it resets PYTHONPATH to
    Slicer's own before it starts the real interpreter) and ``sys.executable`` in the tests.
    A ``-c`` bootstrap puts the engine folder first on ``sys.path``, so the child runs the
    same engine as the module that started it whatever the launcher does to the
    environment, even where the engine is not pip-installed.
    """
    env = dict(os.environ if base_env is None else base_env)
    env["PYTHONUNBUFFERED"] = "1"  # also for an interpreter that ignores -u
    env["PYTHONIOENCODING"] = "utf-8"  # the reader decodes UTF-8 on every platform
    engine = str(Path(engine_path) if engine_path is not None else ENGINE_PATH)
    bootstrap = BOOTSTRAP.format(engine=engine)
    return [str(interpreter), "-u", "-X", "utf8", "-c", bootstrap, *map(str, arguments)], env


def _flags(values: dict[str, object]) -> list[str]:
    """``--flag value`` for every value that is set (None and "" mean: the CLI default)."""
    arguments: list[str] = []
    for flag, value in values.items():
        if value is not None and value != "":
            arguments += [flag, str(value)]
    return arguments


def register_arguments(fixed: PathLike, moving: PathLike, out: PathLike, *,
                       fixed_mask: PathLike | None = None,
                       fixed_lobes: PathLike | None = None, moving_lobes: PathLike | None = None,
                       fixed_landmarks: PathLike | None = None,
                       moving_landmarks: PathLike | None = None,
                       landmark_format: str | None = None, model: str = "auto",
                       refine_iterations: int | None = None, device: str = "auto",
                       threads: int | None = None, fixed_is: str = "inhale",
                       output_spacing: float | None = None, similarity: str = "ngf",
                       search: str = DEFAULT_SEARCH, report: bool = True) -> list[str]:
    """Arguments of ``lungdeepreg register`` for the widget's parameters.

    ``refine_iterations`` None keeps the tuned schedule; ``output_spacing`` None keeps the
    CLI default (about 2 mm), 0 the fixed image's own grid.
    """
    arguments = ["register", *_flags({
        "--fixed": fixed, "--moving": moving, "--out": out, "--fixed-mask": fixed_mask,
        "--fixed-lobes": fixed_lobes, "--moving-lobes": moving_lobes,
        "--fixed-landmarks": fixed_landmarks, "--moving-landmarks": moving_landmarks,
        "--landmark-format": landmark_format, "--model": model,
        "--refine-iterations": refine_iterations, "--device": device, "--threads": threads,
        "--fixed-is": fixed_is, "--output-spacing": output_spacing,
        "--similarity": None if similarity == "ngf" else similarity,
        "--search": None if search == DEFAULT_SEARCH else search})]
    return arguments if report else [*arguments, "--no-report"]


def lung_mask_arguments(image: PathLike, out: PathLike) -> list[str]:
    """Arguments of ``lungdeepreg lung-mask``: the automatic lung mask of one CT."""
    return ["lung-mask", "--image", str(image), "--out", str(out)]


def train_arguments(output: PathLike, *, config: PathLike | None = None,
                    manifest: PathLike | None = None, device: str | None = None,
                    resume: bool = False, overrides: Sequence[str] = ()) -> list[str]:
    """Arguments of ``lungdeepreg train``: config file, manifest of real pairs, output."""
    settings = list(overrides)
    if manifest:
        settings.append(f"data.manifest={json.dumps(str(manifest))}")
    if device:
        settings.append(f"train.device={json.dumps(device)}")
    arguments = ["train", *_flags({"--config": config, "--output": output})]
    for setting in settings:
        arguments += ["--set", setting]
    return [*arguments, "--resume"] if resume else arguments


def make_run_folder(base: PathLike, label: str) -> Path:
    """A new, uniquely named folder under ``base`` for one run (time stamp and ``label``);
    the caller owns it, so cancel and failure may delete it whole."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
    return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-", dir=base))


def find_python_slicer(application_dir: PathLike) -> str | None:
    """PythonSlicer, the batch interpreter beside the Slicer executable (else on PATH)."""
    search = os.pathsep.join([str(application_dir), os.environ.get("PATH", "")])
    return shutil.which("PythonSlicer", path=search)


class BackgroundJob:
    """One engine command in a child process, polled without blocking (from a GUI timer).

    Two reader threads move stdout and stderr lines into a queue; :meth:`poll` drains it,
    keeps the latest progress and returns the other lines for the log. ``cleanup`` is an
    output folder this job's caller created: :meth:`cancel` and :meth:`discard` delete it,
    so a cancelled or failed run leaves nothing half made.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 cleanup: PathLike | None = None, cwd: PathLike | None = None) -> None:
        self.argv, self.env, self.cwd = list(argv), env, cwd
        self.cleanup = Path(cleanup) if cleanup is not None else None
        self.process: subprocess.Popen | None = None
        self.progress: tuple[float, str] | None = None
        self.cancelled = False
        self._stopper: threading.Thread | None = None  # the kill after a cancel
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 0

    def start(self) -> BackgroundJob:
        """Start the child in its own process group (so that cancel reaches its children)."""
        group = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
                 if sys.platform == "win32" else {"start_new_session": True})
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1, **group)
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            self._open_streams += 1
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()
        return self

    def _read(self, name: str, stream) -> None:
        with stream:
            for line in stream:  # text mode: "\r" (tqdm) also ends a line
                self._lines.put((name, line.rstrip("\r\n")))
        self._lines.put((name, None))

    def poll(self) -> list[str]:
        """New output lines (progress lines excluded; they update :attr:`progress`)."""
        lines = []
        while True:
            try:
                _, line = self._lines.get_nowait()
            except queue.Empty:
                return lines
            if line is None:
                self._open_streams -= 1
            elif (progress := parse_progress(line)) is not None:
                self.progress = progress
            elif line.strip():
                lines.append(line)

    @property
    def finished(self) -> bool:
        """The process has exited and all its output has been read by :meth:`poll`."""
        return (self.process is not None and self.process.poll() is not None
                and self._open_streams == 0 and self._lines.empty())

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def follow(self, tick: Callable[[], object] | None = None, interval_s: float = 0.1,
               timeout_s: float | None = None) -> list[str]:
        """Poll until the job has finished (scripts and tests; the widget polls from a
        timer); ``tick`` runs after every poll (to record progress, or process GUI events).
        Returns all output lines; on timeout the job is cancelled and TimeoutError raised."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        lines: list[str] = []
        while not self.finished:
            lines += self.poll()
            if tick is not None:
                tick()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"{' '.join(self.argv)} ran over {timeout_s} s:\n"
                                   + "\n".join(lines[-20:]))
            time.sleep(interval_s)
        return lines + self.poll()

    def cancel(self, grace_s: float = 5.0, wait: bool = True) -> None:
        """Stop the whole process tree (PythonSlicer is a launcher with a child), then
        delete the output folder: the command writes each file atomically, but a run cut
        short is still incomplete.

        ``wait=False`` (the widget's Cancel) returns at once: the tree is asked to stop now,
        and a daemon thread kills what is left after ``grace_s`` and deletes the folder
        (:meth:`wait_stopped` waits for that)."""
        self.cancelled = True
        running = self.process is not None and self.process.poll() is None
        if running:
            _ask_to_stop(self.process)
        self._stopper = threading.Thread(target=self._stop, args=(grace_s if running else 0.0,),
                                         daemon=True)
        self._stopper.start()
        if wait:
            self._stopper.join()

    def _stop(self, grace_s: float) -> None:
        if self.process is not None:
            _kill_tree(self.process, grace_s)
        self.discard()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        """True once a cancel has killed the tree and deleted the folder."""
        if self._stopper is not None:
            self._stopper.join(timeout_s)
            return not self._stopper.is_alive()
        return True

    def discard(self) -> None:
        """Delete the output folder this job owns (after a cancel or a failure)."""
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def _ask_to_stop(process: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (it leads its own session); Windows has no
    polite stop for a console-less tree, so there the kill comes at once."""
    if sys.platform != "win32":
        _signal_group(process.pid, signal.SIGTERM)


def _kill_tree(process: subprocess.Popen, grace_s: float) -> None:
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(grace_s, 1.0))
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace_s)
    _signal_group(process.pid, signal.SIGKILL)  # the rest of the tree, and a stuck leader
    process.wait()


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group has exited
        os.killpg(group, sig)
