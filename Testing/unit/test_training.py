"""Training, headless and for real: CLI runs, resume after a kill, 2-process gloo training."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import tiny_config_text

import LungDeepRegLib
from LungDeepRegLib.errors import InputError
from LungDeepRegLib.logic import LungDeepRegLogic
from LungDeepRegLib.losses import TUNED_T, TUNED_WEIGHTS, LossWeights
from LungDeepRegLib.pipeline.refine import RefineConfig
from LungDeepRegLib.training.config import LossConfig, config_from_dict, load_config


def tiny_config(folder: Path, shared_data: Path, pairs: int = 1) -> Path:
    path = folder / "tiny.toml"
    path.write_text(tiny_config_text(
        data={"synthetic_cts": [shared_data / "cip" / "ct-64.nrrd"], "synthetic_kind": "mixed",
              "motion_atlas": "default", "atlas_share": 0.5, "augment": True,
              "validation_pairs": 1},
        train={"epochs_per_level": 2, "steps_per_epoch": 3, "pairs_per_step": pairs,
               "checkpoint_every": 1, "seed": 7, "model_name": "tiny"}))
    return path


def train_command(config: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "LungDeepRegLib", "train", "--config", str(config),
            "--output", str(output), *extra]


def weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(output / "tiny.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0.0 if not atol else 1e-5,
                                   msg=key)


@pytest.fixture(scope="module")
def reference_run(shared_data, tmp_path_factory) -> Path:
    """One uninterrupted CLI run, shared by the tests that compare against it."""
    folder = tmp_path_factory.mktemp("reference")
    output = folder / "out"
    result = subprocess.run(train_command(tiny_config(folder, shared_data), output),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return output


def test_cli_training_writes_model_card_and_log(reference_run):
    card = json.loads((reference_run / "tiny.json").read_text())
    assert card["architecture"]["levels"] == 2 and card["architecture"]["base_filters"] == 4
    assert card["training"]["seed"] == 7 and "train --config" in card["training"]["command"]
    assert len(card["sha256"]) == 64
    assert (reference_run / "tiny.md").is_file()
    records = [json.loads(line) for line in
               (reference_run / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r and "total" in r]
    assert len(steps) == 2 * 2 * 3  # levels x epochs x steps
    assert all(r["t"] == pytest.approx(0.2 / 2 ** r["stage"]) for r in steps)
    assert {"ngf", "curvature", "volume", "mask", "endpoint_error"} <= set(steps[0])
    validations = [r for r in records if "validation" in r]
    assert len(validations) == 2 * 2  # one per epoch and level
    assert all(torch.isfinite(torch.tensor(v["validation"]["total"])) for v in validations)
    # the learning curve: validation against the run's optimiser steps, named in the card
    assert card["training"]["learning_curve"] == "tiny.learning_curve.csv"
    with open(reference_run / "tiny.learning_curve.csv", newline="") as handle:
        curve = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in curve] == [3, 6, 9, 12]
    assert [int(row["level"]) for row in curve] == [1, 1, 2, 2]
    assert float(curve[-1]["endpoint_error"]) == pytest.approx(
        validations[-1]["validation"]["endpoint_error"], abs=1e-4)
    data = card["training"]["data"]
    assert data["motion_atlas"] == "motion_atlas.npz" and data["augment"] is True


def test_same_seed_same_weights(reference_run, shared_data, tmp_path):
    config = load_config(tiny_config(tmp_path, shared_data),
                         [f'train.output_dir="{tmp_path / "again"}"'])
    result = LungDeepRegLogic().train(config)
    assert result.status == "finished"
    assert_same_weights(load_file(result.model_path), weights(reference_run))


def test_resuming_a_finished_run_exports_its_trained_weights(reference_run, shared_data,
                                                            tmp_path):
    """``--resume`` on a finished run re-exports the model (e.g. with a newer card): the
    trained weights, not a freshly initialised network."""
    output = tmp_path / "finished"
    shutil.copytree(reference_run, output)
    (output / "tiny.safetensors").unlink()
    resumed = subprocess.run(train_command(tiny_config(tmp_path, shared_data), output,
                                           "--resume"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(output), weights(reference_run))


def test_resume_after_kill_gives_same_weights(reference_run, shared_data, tmp_path):
    config, output = tiny_config(tmp_path, shared_data), tmp_path / "killed"
    process = subprocess.Popen(train_command(config, output), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    log = output / "train_log.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill once level 2 has started
        if log.is_file() and '"stage": 1, "step": 1' in log.read_text():
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output / "tiny.safetensors").exists(), "the run finished before the kill"

    resumed = subprocess.run(train_command(config, output, "--resume"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert '"event": "resume"' in log.read_text()
    assert_same_weights(weights(output), weights(reference_run))


def test_fine_tuning_starts_from_the_stored_model(reference_run, shared_data, tmp_path):
    """``train.init_model`` loads a stored model's weights into every level (no level is
    re-initialised from the coarser one): at learning rate 0 the export is the stored model
    itself, and the learning curve starts (step 0) with the stored model's validation."""
    stored = reference_run / "tiny.safetensors"
    config = load_config(tiny_config(tmp_path, shared_data), [
        f'train.init_model="{stored}"', "train.learning_rate=0.0",
        f'train.output_dir="{tmp_path / "tuned"}"'])
    result = LungDeepRegLogic().train(config)
    assert result.status == "finished"
    assert_same_weights(load_file(result.model_path), weights(reference_run))
    with open(tmp_path / "tuned" / "tiny.learning_curve.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0]["step"] == "0" and len(rows) == 1 + 2 * 2  # start + 2 levels x 2 epochs
    card = json.loads((tmp_path / "tuned" / "tiny.json").read_text())
    assert card["training"]["config"]["train"]["init_model"] == str(stored)


def test_fine_tuning_refuses_a_model_of_another_architecture(shared_data, tmp_path):
    shipped = Path(LungDeepRegLib.__file__).parent / "models" / "lungdeepreg-popi-cpu.json"
    config = load_config(tiny_config(tmp_path, shared_data),
                         [f'train.init_model="{shipped}"'])
    with pytest.raises(InputError, match="lungdeepreg-popi-cpu.*architecture"):
        LungDeepRegLogic().train(config)


def test_two_gloo_processes_match_one_process_on_the_union(shared_data, tmp_path):
    config = tiny_config(tmp_path, shared_data, pairs=2)
    single = subprocess.run(train_command(config, tmp_path / "single"), capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "LungDeepRegLib", "train", "--config",
                str(config), "--output", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    distributed = subprocess.run(torchrun, capture_output=True, text=True, timeout=600,
                                 env=env)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    card = json.loads((tmp_path / "ddp" / "tiny.json").read_text())
    assert card["training"]["world_size"] == 2
    assert_same_weights(weights(tmp_path / "ddp"), weights(tmp_path / "single"), atol=1e-5)


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rat = 0.1\n")
    with pytest.raises(InputError, match="unknown key.*learning_rat"):
        load_config(bad)
    config = load_config(None, ["train.learning_rate=0.5", 'loss.similarity="ncc"'])
    assert config.train.learning_rate == 0.5 and config.loss.similarity == "ncc"
    with pytest.raises(InputError, match="no training data"):
        LungDeepRegLogic().train(config)


def test_default_config_uses_the_tuned_loss_weights():
    """default.toml, the config dataclass and the instance optimisation agree on the tuned
    weights (one source: losses.TUNED_WEIGHTS, from the loss-weight tuning benchmark)."""
    loss = load_config(None).loss
    weights = loss.weights
    assert (weights.ngf, weights.curvature, weights.volume, weights.mask, weights.keypoints) == (
        TUNED_WEIGHTS.ngf, TUNED_WEIGHTS.curvature, TUNED_WEIGHTS.volume, TUNED_WEIGHTS.mask,
        TUNED_WEIGHTS.keypoints)
    assert loss.t_coarsest == TUNED_T == RefineConfig().t
    assert RefineConfig().weights == TUNED_WEIGHTS
    assert LossConfig() == loss


def test_loss_weights_stay_flat_keys_of_the_loss_section(tmp_path):
    """The weights are one LossWeights inside the config, but TOML files, --set overrides,
    Config.to_dict and the shipped model card's config block keep ``[loss] curvature = ...``."""
    path = tmp_path / "weights.toml"
    path.write_text("[loss]\ncurvature = 10.0\nvolume = 0.01\n")
    config = load_config(path, ["loss.mask=0.5"])
    assert config.loss.weights == LossWeights(curvature=10.0, volume=0.01, mask=0.5)
    flat = config.to_dict()["loss"]
    assert (flat["curvature"], flat["volume"], flat["mask"]) == (10.0, 0.01, 0.5)
    assert "weights" not in flat and config_from_dict(config.to_dict()).loss == config.loss
    with pytest.raises(InputError, match="unknown key.*weights"):
        load_config(None, ['loss.weights={"curvature": 1}'])
    with pytest.raises(InputError, match="curvature must be >= 0"):
        load_config(None, ["loss.curvature=-1"])
    card = json.loads((Path(LungDeepRegLib.__file__).parent / "models"
                       / "lungdeepreg-popi-cpu.json").read_text())
    shipped = config_from_dict(card["training"]["config"]).loss
    assert shipped.weights == LossWeights(curvature=10.0, volume=0.01)  # the paper's
    assert shipped.to_flat() == card["training"]["config"]["loss"]


def test_manifest_pairs_train_unsupervised(shared_data, tmp_path):
    """A manifest of real pairs (here the tiny CT against a shifted copy, with lung labels
    and keypoints) trains through the same logic call."""
    import numpy as np
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))
    shifted = sitk.Resample(ct, ct, sitk.TranslationTransform(3, (4.0, 0.0, 6.0)),
                            sitk.sitkLinear, -1024)
    sitk.WriteImage(shifted, str(tmp_path / "moving.nrrd"))
    lungs = str(shared_data / "cip" / "wholeLung-64.nrrd")
    points = np.array([[0.0, 0.0, 0.0], [10.0, -20.0, 30.0]]) + np.array(ct.GetOrigin()) + 60
    np.savetxt(tmp_path / "fixed.csv", points, delimiter=",")
    np.savetxt(tmp_path / "moving.csv", points + [4.0, 0.0, 6.0], delimiter=",")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "fixed,moving,fixed_lobes,moving_lobes,fixed_keypoints,moving_keypoints,"
        f"keypoint_format\n{shared_data / 'cip' / 'ct-64.nrrd'},moving.nrrd,{lungs},{lungs},"
        "fixed.csv,moving.csv,csv\n")
    config = load_config(None, [
        f'data.manifest="{manifest}"', "model.levels=1", "model.base_filters=4",
        "model.depth=2", "model.input_size=[24, 20, 24]", "train.epochs_per_level=1",
        "train.steps_per_epoch=2", "loss.keypoints=1.0", "data.validation_pairs=1",
        f'train.output_dir="{tmp_path / "out"}"', 'train.model_name="manifest"'])
    result = LungDeepRegLogic().train(config)
    assert result.status == "finished" and result.model_path.is_file()
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").open()]
    steps = [r for r in log if "total" in r]
    assert "keypoints" in steps[0] and "mask" in steps[0]
    assert "endpoint_error" not in steps[0]  # no known field for real pairs
