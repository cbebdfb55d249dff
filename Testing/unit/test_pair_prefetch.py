"""Training pairs made ahead by worker processes (train.pair_workers): the same pairs in the
same order as the trainer makes them itself, workers that end when the stream is closed, and
a real training run with workers."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import tiny_config_text

from LungDeepRegLib.data.motion import MotionAtlas
from LungDeepRegLib.data.synthetic import SyntheticPairSource
from LungDeepRegLib.training.prefetch import pair_stream


@pytest.fixture(scope="module")
def source(shared_data) -> SyntheticPairSource:
    return SyntheticPairSource([shared_data / "cip" / "ct-64.nrrd"], size=(24, 20, 24),
                               seed=9, kind="mixed", atlas=MotionAtlas.load(), augment=True)


def test_workers_make_the_same_pairs_in_the_asked_order(source):
    indices = [5, 1, 7, 1_000_002]
    expected = [source.pair(index) for index in indices]
    stream = pair_stream(source, indices, workers=2)
    for want in expected:
        got = next(stream)
        # one CPU thread in a worker: float sums may round differently than on several
        for name in ("fixed", "moving", "field", "fixed_mask"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name),
                                       atol=1e-4, rtol=1e-4, msg=name)
    with pytest.raises(StopIteration):
        next(stream)


def test_closing_the_stream_ends_the_workers(source):
    stream = pair_stream(source, list(range(40)), workers=2)
    next(stream)
    assert multiprocessing.active_children()  # the workers run ahead
    stream.close()
    deadline = time.monotonic() + 10.0
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()


def train(folder: Path, ct: Path, workers: int) -> dict[str, torch.Tensor]:
    config = folder / f"workers{workers}.toml"
    config.write_text(tiny_config_text(
        data={"synthetic_cts": [ct], "synthetic_kind": "mixed", "motion_atlas": "default",
              "augment": True, "validation_pairs": 1},
        train={"epochs_per_level": 1, "steps_per_epoch": 3, "pair_workers": workers,
               "seed": 5, "model_name": "prefetched"}))
    output = folder / f"run{workers}"
    done = subprocess.run([sys.executable, "-m", "LungDeepRegLib", "train", "--config",
                           str(config), "--output", str(output)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((output / "prefetched.json").read_text())
    assert card["training"]["config"]["train"]["pair_workers"] == workers
    return load_file(output / "prefetched.safetensors")


def test_training_with_pair_workers_learns_what_training_without_them_learns(
        tmp_path, shared_data):
    ct = shared_data / "cip" / "ct-64.nrrd"
    alone, prefetched = train(tmp_path, ct, 0), train(tmp_path, ct, 2)
    assert alone.keys() == prefetched.keys()
    for key in alone:
        torch.testing.assert_close(prefetched[key], alone[key], atol=1e-3, rtol=1e-3, msg=key)
