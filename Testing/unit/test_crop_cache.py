"""Crop caches: the training CTs prepared once, so that training runs without SimpleITK
(as on a lent GPU machine). Real CTs, a real export through the CLI, a real training run in a
subprocess in which SimpleITK cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from training_helpers import tiny_config_text

from LungDeepRegLib.data.crop_cache import load_crops
from LungDeepRegLib.data.motion import MotionAtlas
from LungDeepRegLib.data.synthetic import SyntheticPairSource
from LungDeepRegLib.errors import InputError
from LungDeepRegLib.training.config import load_config
from LungDeepRegLib.training.sources import VALIDATION_SEED_OFFSET, build_sources

DEVICE_SCRIPT = Path(__file__).resolve().parents[1] / "benchmark" / "train_on_device.py"
SIZE = (24, 20, 24)
# stands in for a machine without SimpleITK: any import of it fails
WITHOUT_SIMPLEITK = """
import sys
class _NoSimpleITK:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "SimpleITK":
            raise ModuleNotFoundError("No module named 'SimpleITK'")
sys.meta_path.insert(0, _NoSimpleITK())
"""


def ct_paths(shared_data: Path) -> tuple[Path, Path]:
    return shared_data / "cip" / "ct-64.nrrd", shared_data / "totalseg" / "example_ct.nii.gz"


def write_config(folder: Path, cts: list[Path], excluded: list[Path]) -> Path:
    path = folder / "config.toml"
    path.write_text(tiny_config_text(
        data={"synthetic_cts": cts, "synthetic_kind": "mixed", "motion_atlas": "default",
              "atlas_share": 0.5, "atlas_exclude": excluded, "augment": True,
              "small_motion_share": 0.5, "validation_pairs": 1},
        train={"epochs_per_level": 1, "steps_per_epoch": 2, "checkpoint_every": 1, "seed": 3,
               "model_name": "from-cache"}))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    """(config over the CTs, crop cache exported from it by the real CLI)."""
    folder = tmp_path_factory.mktemp("crops")
    ct64, totalseg = ct_paths(shared_data)
    config = write_config(folder, [ct64, totalseg], excluded=[totalseg])
    cache = folder / "crops.npz"
    done = subprocess.run([sys.executable, "-m", "LungDeepRegLib", "train", "--config",
                           str(config), "--export-crops", str(cache)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "crop cache written" in done.stdout and cache.is_file()
    return config, cache


def test_pairs_from_a_crop_cache_match_pairs_from_the_cts(exported, shared_data):
    ct64, totalseg = ct_paths(shared_data)
    _, cache = exported
    options = {"size": SIZE, "seed": 11, "kind": "mixed", "atlas": MotionAtlas.load(),
               "augment": True}
    from_cts = SyntheticPairSource([ct64, totalseg], atlas_exclude=[totalseg], **options)
    expected = [from_cts.pair(i) for i in range(4)]  # exact distance maps, before the cache's
    from_cache = SyntheticPairSource([cache], **options)
    assert [c.name for c in from_cache.cases] == [str(ct64), str(totalseg)]
    assert from_cache.atlas_allowed == from_cts.atlas_allowed == [True, False]
    for index, want in enumerate(expected):
        got = from_cache.pair(index)
        assert got.kind == want.kind
        # the distance map is stored in 0.5 mm steps: the fade outside the lungs moves a
        # little (fields of up to 30 mm fade over 40-100 mm), far below a voxel
        difference = (got.field - want.field).abs()
        assert float(difference.max()) < 0.25 and float(difference.mean()) < 0.01
        # HU rounded to whole HU (1/4095 in network intensity), before any augmentation
        assert float((got.fixed - want.fixed).abs().mean()) < 1e-3


def test_training_and_validation_pairs_share_the_crops_read_once(exported):
    config, cache = exported
    training, validation = build_sources(load_config(config, [
        f"data.synthetic_cts={json.dumps([str(cache)])}", "data.atlas_exclude=[]"]))
    assert validation.cases is training.cases  # the cache was read once
    assert validation.seed == training.seed + VALIDATION_SEED_OFFSET
    assert not torch.equal(validation.pair(0).field, training.pair(0).field)


def test_a_cache_of_another_size_is_refused(exported):
    _, cache = exported
    with pytest.raises(InputError, match="export the crops at this input size") as error:
        SyntheticPairSource([cache], size=(32, 32, 32))
    assert str(cache) in str(error.value)


def test_a_file_that_is_no_crop_cache_is_refused_by_name(tmp_path):
    bogus = tmp_path / "not-crops.npz"
    bogus.write_bytes(b"this is no zip archive")
    with pytest.raises(InputError, match="not a readable crop cache") as error:
        load_crops(bogus)
    assert str(bogus) in str(error.value)


def run_device_script(config: Path, cache: Path, out: Path, *extra: str) -> dict:
    """``train_on_device.py`` in a subprocess where SimpleITK cannot be imported."""
    argv = [str(DEVICE_SCRIPT), "--config", str(config), "--crops", str(cache),
            "--out", str(out), *extra]
    script = WITHOUT_SIMPLEITK + textwrap.dedent(f"""
        import runpy
        sys.argv = {argv!r}
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as end:
            assert not end.code, end.code
        assert "SimpleITK" not in sys.modules
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "device_report.json").read_text())


def test_the_device_script_trains_from_a_crop_cache_without_simpleitk(exported, tmp_path):
    config, cache = exported
    run = tmp_path / "run"
    setting = f"train.output_dir={json.dumps(str(run))}"
    # stopped by its time limit after the first step: the checkpoint comes back
    first = run_device_script(config, cache, tmp_path / "out1", "--set", setting,
                              "--stop-after", "0")
    assert first["training"]["status"] == "cancelled"
    assert first["training"]["steps_this_run"] == 1
    assert "checkpoint.pt" in first["returned"]
    assert first["environment"]["simpleitk"] is False
    assert first["pair_seconds"] > 0 and first["inference"]["fp32"]["median_s"] > 0
    # resumed: the other 3 steps (2 levels x 1 epoch x 2 steps), then the model and its card
    second = run_device_script(config, cache, tmp_path / "out2", "--set", setting, "--resume")
    assert second["training"]["status"] == "finished"
    assert second["training"]["steps_this_run"] == 3
    assert "from-cache.safetensors" in second["returned"]
    card = json.loads((tmp_path / "out2" / "from-cache.json").read_text())
    data = card["training"]["data"]
    # the card names the CTs inside the cache, and the one it keeps from the motion atlas
    assert data["synthetic_cts"] == ["ct-64.nrrd", "example_ct.nii.gz"]
    assert data["crop_caches"] == ["crops.npz"]
    assert data["atlas_exclude"] == ["example_ct.nii.gz"]
    assert data["small_motion_share"] == 0.5


def test_without_simpleitk_reading_a_ct_names_what_is_missing(shared_data):
    script = WITHOUT_SIMPLEITK + textwrap.dedent(f"""
        from LungDeepRegLib.data.synthetic import SyntheticPairSource
        try:
            SyntheticPairSource([{json.dumps(str(ct_paths(shared_data)[0]))}], size=(24, 20, 24))
        except ModuleNotFoundError as error:
            print(error)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert "No module named 'SimpleITK'" in done.stdout + done.stderr


def test_remembered_distances_equal_computed_ones(shared_data):
    from LungDeepRegLib.data import fields

    crop = SyntheticPairSource([ct_paths(shared_data)[0]], size=SIZE).cases[0]
    mask = crop.labels[0, 0] > 0
    fields._DISTANCES.clear()
    first = fields.outside_distance(mask, crop.grid)
    assert fields.outside_distance(mask, crop.grid) is first  # computed once per mask
    fields._DISTANCES.clear()
    torch.testing.assert_close(fields.outside_distance(mask, crop.grid), first)
