"""``batch`` resumes only what still belongs to its inputs, and cannot mix up results.

A pair counts as done only when its ``metrics.json`` records the fingerprint of the same
input files and options; ids are plain, unique folder names; a row without a required file
fails alone. Real images: the POPI light pair, copied so that a test can replace one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.pipeline.batch import read_batch_manifest, run_batch
from LungDeepRegLib.pipeline.outputs import input_fingerprint
from LungDeepRegLib.pipeline.register import RegistrationOptions

FAST = RegistrationOptions(model="none", refine_iterations=2, report=False, threads=2)


@pytest.fixture
def pair(shared_data, tmp_path) -> Path:
    """A folder with fixed.nii.gz (phase 00) and moving.nii.gz (phase 50)."""
    light = shared_data / "popi_light"
    shutil.copy(light / "popi_light_00.nii.gz", tmp_path / "fixed.nii.gz")
    shutil.copy(light / "popi_light_50.nii.gz", tmp_path / "moving.nii.gz")
    return tmp_path


def _manifest(folder: Path, *rows: str) -> Path:
    path = folder / "pairs.csv"
    path.write_text("\n".join(("id,fixed,moving", *rows)) + "\n")
    return path


def _fingerprint(out: Path, pair_id: str) -> str:
    return json.loads((out / pair_id / "metrics.json").read_text())["run"]["fingerprint"]


def test_resume_skips_same_inputs_and_reruns_changed_ones(pair, shared_data):
    items = read_batch_manifest(_manifest(pair, "p1,fixed.nii.gz,moving.nii.gz"))
    out = pair / "out"
    assert [row["status"] for row in run_batch(items, out, FAST)] == ["done"]
    first = _fingerprint(out, "p1")
    assert first == input_fingerprint(items[0].inputs, FAST)

    again = run_batch(items, out, dataclasses.replace(FAST, threads=1))  # threads: no effect
    assert again[0]["status"] == "skipped (done before)"
    assert input_fingerprint(items[0].inputs, dataclasses.replace(FAST, refine_iterations=3)
                             ) != first  # another option: registered again

    shutil.copy(shared_data / "popi_light" / "popi_light_60.nii.gz", pair / "moving.nii.gz")
    rerun = run_batch(items, out, FAST)
    assert rerun[0]["status"] == "done"
    assert _fingerprint(out, "p1") not in (first, None)


def test_bad_ids_shared_ids_and_missing_files_fail_alone(pair, shared_data):
    """Through the real command line: one good pair registers; each bad row is a failed
    pair with its reason; nothing is written outside --out. A pair of two subjects
    registers but carries its failed self-checks, named by its id."""
    shutil.copy(shared_data / "cip" / "ct-64.nrrd", pair / "stranger.nrrd")
    manifest = _manifest(
        pair, "good,fixed.nii.gz,moving.nii.gz", "strangers,fixed.nii.gz,stranger.nrrd",
        "twin,fixed.nii.gz,moving.nii.gz",
        "TWIN,fixed.nii.gz,moving.nii.gz", "../escape,fixed.nii.gz,moving.nii.gz",
        f"{pair / 'absolute'},fixed.nii.gz,moving.nii.gz", "..,fixed.nii.gz,moving.nii.gz",
        "nomoving,fixed.nii.gz,")
    out = pair / "out"
    result = subprocess.run(
        [sys.executable, "-m", "LungDeepRegLib", "batch", str(manifest), "--out", str(out),
         "--model", "none", "--refine-iterations", "2", "--no-report", "--threads", "2"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    rows = {row["id"]: row for row in json.loads((out / "summary.json").read_text())}
    assert rows["good"]["status"] == "done" and rows["good"]["warnings"] == []
    assert rows["strangers"]["status"] == "done"
    assert "match_affine" in rows["strangers"]["failed_checks"]
    assert any("barely match" in message for message in rows["strangers"]["warnings"])
    assert "warning: strangers: after pre-alignment" in result.stderr
    for twin in ("twin", "TWIN"):
        assert rows[twin]["status"] == "failed" and "used by rows 3, 4" in rows[twin]["error"]
    for bad in ("../escape", str(pair / "absolute"), ".."):
        assert rows[bad]["status"] == "failed" and "not a plain name" in rows[bad]["error"]
    assert "row 8: no moving file given" in rows["nomoving"]["error"]
    assert "error: nomoving: row 8" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good", "strangers", "summary.csv",
                                                    "summary.json"]
    assert not (pair / "escape").exists() and not (pair / "absolute").exists()


def test_options_that_cannot_work_stop_the_batch_before_any_pair(pair):
    items = read_batch_manifest(_manifest(pair, "p1,fixed.nii.gz,moving.nii.gz"))
    with pytest.raises(InputError) as refused:
        run_batch(items, pair / "out", dataclasses.replace(FAST, device="tpu"))
    assert refused.value.source == "--device"
    assert not (pair / "out").exists()
