"""Run one command as a child process and measure it: wall time and peak memory.

Every method of a benchmark runs in its own process, so that its peak memory is its own and
a crash or a hang of one method cannot take the others down. Peak memory is ``ru_maxrss``
as ``os.wait4`` reports it (KiB on Linux): the largest resident set of the child or of any
descendant it waited for (a driver script running elastix reports elastix's).

Why a launcher: Linux carries a process's high-water RSS across ``fork`` and ``exec``, so a
child forked straight from the benchmark process (which holds torch, images and fields)
would report at least the benchmark's own size. The benchmark therefore starts this module
as a small launcher process (``python -m LungDeepRegLib.benchmarks.measure --report R --
command ...``), which starts the command, waits for it with ``os.wait4`` and writes its
exit status, wall time and peak RSS to ``R``. Output goes to log files, not pipes, so a
chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TAIL_LINES = 15


@dataclass
class Measurement:
    """What one command did: exit status, wall time, peak memory and its output."""

    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_kib: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def peak_memory_gb(self) -> float:
        return self.peak_rss_kib / 1024**2

    def failure(self) -> str:
        """A one-paragraph reason for a failed run: exit status and the stderr tail."""
        head = (f"timed out after {self.wall_s:.0f} s" if self.timed_out
                else f"exit status {self.returncode}")
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        tail = "\n".join(lines[-TAIL_LINES:])
        return f"{head}: {tail}" if tail else head


def run_measured(command: Sequence[str], log_dir: Path, timeout_s: float | None = None,
                 env: dict[str, str] | None = None) -> Measurement:
    """Run ``command`` through the launcher; output in ``log_dir/stdout.log``/``stderr.log``.

    The launcher gets its own session, so a timeout kills it with all its descendants.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [str(part) for part in command]
    report = log_dir / "measurement.json"
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-m", "LungDeepRegLib.benchmarks.measure", "--report",
                str(report), "--", *command]
    out_path, err_path = log_dir / "stdout.log", log_dir / "stderr.log"
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(launcher, stdout=out, stderr=err, env=env,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process.pid)
            returncode = process.wait()
        wall = time.perf_counter() - started
    measured = json.loads(report.read_text()) if report.is_file() else {}
    return Measurement(command, measured.get("returncode", returncode),
                       measured.get("wall_s", wall), measured.get("maxrss_kib", 0),
                       _read(out_path), _read(err_path), timed_out)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(pid, signal.SIGKILL)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def child_environment(threads: int) -> dict[str, str]:
    """The environment of every method's process: the same thread count for all."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "LUNGDEEPREG_THREADS"):
        env[name] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("RANK", None)  # a benchmark under torchrun must not shard the register command
    env.pop("WORLD_SIZE", None)
    return env


def launch(report: Path, command: Sequence[str]) -> int:
    """The launcher: run ``command``, write its status, wall time and peak RSS to ``report``."""
    started = time.perf_counter()
    try:
        process = subprocess.Popen(list(command))
    except OSError as error:
        print(f"cannot start {command[0]}: {error}", file=sys.stderr)
        return 127
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = returncode = os.waitstatus_to_exitcode(status)
    report.write_text(json.dumps({"returncode": returncode, "wall_s": wall,
                                  "maxrss_kib": int(usage.ru_maxrss)}))
    return 0 if returncode == 0 else (returncode if returncode > 0 else 1)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 4 or argv[0] != "--report" or argv[2] != "--":
        print("usage: python -m LungDeepRegLib.benchmarks.measure --report FILE -- COMMAND...",
              file=sys.stderr)
        return 2
    return launch(Path(argv[1]), argv[3:])


if __name__ == "__main__":
    raise SystemExit(main())
