"""The widget's background command, run for real with the test interpreter.

``build_command`` is the function the Slicer widget calls (with PythonSlicer); here it gets
``sys.executable`` and an environment without the editable install's path tricks, so the
engine must be found through the PYTHONPATH the function sets.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from LungDeepRegLib.cli import build_parser
from LungDeepRegLib.mrml.job import (
    ENGINE_PATH,
    BackgroundJob,
    build_command,
    format_progress,
    parse_progress,
    register_arguments,
    train_arguments,
)


def run_until_done(job: BackgroundJob, timeout_s: float = 120) -> tuple[list, list[str]]:
    """Follow the job as a script would; returns the distinct progress seen and the log."""
    seen = []

    def record() -> None:
        if job.progress is not None and (not seen or seen[-1] != job.progress):
            seen.append(job.progress)

    log = job.follow(record, interval_s=0.05, timeout_s=timeout_s)
    record()
    return seen, log


def test_progress_lines_round_trip():
    assert parse_progress(format_progress(0.35, "refinement level 1/3, step 0")) == \
        (0.35, "refinement level 1/3, step 0")
    assert parse_progress("PROGRESS 1.000 done\n") == (1.0, "done")
    assert parse_progress("PROGRESS 0.5") == (0.5, "")
    tqdm_bar = "level 1/2:  50%|#####     | 1/2 [00:01<00:01, loss=0.1]"
    assert parse_progress(f"{tqdm_bar}PROGRESS 0.250 level 1/2: step 1/2") == \
        (0.25, "level 1/2: step 1/2")
    for other in ("", "outputs in /tmp/x", "PROGRESS x step", "PROGRESSIVE 0.5 y"):
        assert parse_progress(other) is None


def test_build_command_carries_the_engine_path_on_its_command_line():
    """A launcher may replace PYTHONPATH (PythonSlicer does): the engine folder travels in
    the ``-c`` bootstrap, and the caller's PYTHONPATH is left alone."""
    argv, env = build_command("PythonSlicer", ["info"], base_env={"PYTHONPATH": "/elsewhere"})
    assert argv[:5] == ["PythonSlicer", "-u", "-X", "utf8", "-c"] and argv[6:] == ["info"]
    assert repr(str(ENGINE_PATH)) in argv[5]
    assert env["PYTHONPATH"] == "/elsewhere" and env["PYTHONUNBUFFERED"] == "1"
    assert (ENGINE_PATH / "LungDeepRegLib" / "cli" / "__init__.py").is_file()


def test_the_engine_is_found_without_any_pythonpath(tmp_path):
    """``-S`` skips the editable install's ``.pth`` and PYTHONPATH holds only the site
    packages: what imports the engine is the bootstrap alone, here a copy of it in a folder
    with an awkward name (quotes, a non-ASCII letter)."""
    odd = tmp_path / "Slicer's \"extensions\" ü"
    shutil.copytree(ENGINE_PATH / "LungDeepRegLib", odd / "LungDeepRegLib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.safetensors", "samples"))
    argv, env = build_command(sys.executable, ["--version"], engine_path=odd)
    interpreter, *rest = argv
    site_packages = os.pathsep.join(site.getsitepackages())
    result = subprocess.run([interpreter, "-S", *rest], capture_output=True, text=True,
                            env={**env, "PYTHONPATH": site_packages}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lungdeepreg ")


def test_arguments_are_the_cli_flags(tmp_path):
    parser = build_parser()
    args = parser.parse_args(register_arguments(
        "f.nii.gz", "m.nii.gz", tmp_path, fixed_lobes="fl.nrrd", moving_lobes="ml.nrrd",
        fixed_landmarks="f.mrk.json", moving_landmarks="m.mrk.json",
        landmark_format="mrk-json", model="none", refine_iterations=0, device="cuda",
        threads=2, output_spacing=0, report=False))
    assert (args.command, args.model, args.refine_iterations, args.device) == \
        ("register", "none", 0, "cuda")
    assert (args.fixed_lobes, args.landmark_format, args.output_spacing, args.no_report) == \
        ("fl.nrrd", "mrk-json", 0.0, True)
    defaults = parser.parse_args(register_arguments("f", "m", tmp_path))
    assert defaults.refine_iterations is None and defaults.output_spacing == 2.0
    train = parser.parse_args(train_arguments(tmp_path / "out", config="c.toml",
                                              manifest="pairs.csv", device="cpu", resume=True))
    assert (train.command, str(train.config), train.resume) == ("train", "c.toml", True)
    assert train.overrides == ['data.manifest="pairs.csv"', 'train.device="cpu"']


def pair_job(shared_data: Path, out: Path) -> BackgroundJob:
    popi = shared_data / "popi_light"
    arguments = register_arguments(popi / "popi_light_00.nii.gz", popi / "popi_light_50.nii.gz",
                                   out, model="none", refine_iterations=5, threads=1,
                                   report=False)
    argv, env = build_command(sys.executable, arguments)
    return BackgroundJob(argv, env, cleanup=out, cwd=out.parent)


def test_register_runs_in_the_background(shared_data, tmp_path):
    out = tmp_path / "result"
    job = pair_job(shared_data, out).start()
    seen, log = run_until_done(job)
    assert job.returncode == 0, "\n".join(log)
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 4
    assert seen[-1][1] == "done"
    assert any(line.startswith("outputs in") for line in log)
    for name in ("field.nrrd", "field.h5", "warped_moving.nrrd", "jacobian.nrrd"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["model"]["name"] == "none"


def test_cancel_stops_the_process_and_leaves_nothing(shared_data, tmp_path):
    out = tmp_path / "result"
    job = pair_job(shared_data, out).start()
    deadline = time.monotonic() + 60
    while job.progress is None:
        assert time.monotonic() < deadline and not job.finished, "no progress line"
        job.poll()
        time.sleep(0.02)
    job.cancel()
    assert job.cancelled and job.process.poll() is not None
    if sys.platform != "win32":
        with pytest.raises(ProcessLookupError):
            os.killpg(job.process.pid, 0)  # nothing of its process group is left
    assert not (out / "metrics.json").exists() and not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_cancel_without_waiting_returns_at_once(tmp_path):
    """The widget's Cancel: a child that ignores SIGTERM is killed after the grace time by a
    background thread; the caller does not wait for it (it used to, up to 5 s)."""
    out = tmp_path / "result"
    out.mkdir()
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('PROGRESS 0.100 working', file=sys.stderr, flush=True); time.sleep(60)")
    job = BackgroundJob([sys.executable, "-c", code], cleanup=out).start()
    deadline = time.monotonic() + 30
    while job.progress is None:
        assert time.monotonic() < deadline, "no progress line"
        job.poll()
        time.sleep(0.02)
    started = time.monotonic()
    job.cancel(grace_s=1.0, wait=False)
    assert time.monotonic() - started < 0.5
    assert job.cancelled and job.process.poll() is None  # still ignoring the SIGTERM
    assert job.wait_stopped(15)
    assert job.process.poll() is not None and not out.exists()


def test_failure_is_reported_and_discarded(tmp_path):
    out = tmp_path / "result"
    out.mkdir()
    argv, env = build_command(sys.executable, register_arguments(
        tmp_path / "missing.nii.gz", tmp_path / "missing.nii.gz", out))
    job = BackgroundJob(argv, env, cleanup=out).start()
    _, log = run_until_done(job, timeout_s=60)
    assert job.returncode == 2 and any("missing.nii.gz" in line for line in log)
    job.discard()
    assert not out.exists()


TINY_TRAINING = """
[model]
levels = 1
base_filters = 4
depth = 2
input_size = [16, 16, 16]

[data]
synthetic_cts = ["{ct}"]
validation_pairs = 1

[train]
epochs_per_level = 1
steps_per_epoch = 2
model_name = "tiny"
"""


def test_training_runs_in_the_background(shared_data, tmp_path):
    """The Train tab's command: progress lines, and the model offered afterwards."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAINING.format(ct=shared_data / "cip" / "ct-64.nrrd"))
    arguments = train_arguments(tmp_path / "out", config=config, device="cpu")
    job = BackgroundJob(*build_command(sys.executable, arguments)).start()
    seen, log = run_until_done(job, timeout_s=300)
    assert job.returncode == 0, "\n".join(log)
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[-1][1] == "level 1/1: step 2/2"
    written = [line for line in log if line.startswith("model written to ")]
    assert written and Path(written[-1].removeprefix("model written to ")).is_file()
