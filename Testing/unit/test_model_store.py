"""Model store: safetensors weights + JSON/Markdown card; checksum and architecture checks
refuse corrupt or mismatched files before loading; nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.models import (
    available_models,
    file_sha256,
    load_model,
    model_card,
    model_names,
    read_header,
    render_card_markdown,
    resolve_model,
    save_model,
    verify_checksum,
)
from LungDeepRegLib.networks import MultilevelNet
from LungDeepRegLib.spatial import Grid

GRID = Grid((12, 10, 8), (2.0, 2.5, 3.0), (-10.0, 5.0, 20.0))
CARD = {
    "version": "0.3",
    "input": {"size_xyz": [12, 10, 8], "crop": {"margin_mm": 10}},
    "training": {"data": "synthetic | test", "command": "lungdeepreg train --seed 7",
                 "seed": 7, "wall_time_s": 3725.0, "hardware": "CPU",
                 "config": {"lr": 1e-4}},
    "metrics": {"tre_mm": {"mean": 1.2345678, "median": 1.1}, "folding_percent": 0.0},
}


def tiny_model() -> MultilevelNet:
    torch.manual_seed(0)
    model = MultilevelNet(levels=2, base_filters=4, final_init_std=0.1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # not the default init
    return model.eval()


def outputs(model: MultilevelNet) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    fixed, moving = torch.rand(2, 1, 1, *GRID.shape, generator=generator)
    with torch.no_grad():
        return model(fixed, moving, GRID)


@pytest.fixture()
def stored(tmp_path: Path) -> tuple[MultilevelNet, Path]:
    model = tiny_model()
    return model, save_model(model, tmp_path, "tiny", CARD)


def edit_card(path: Path, **changes: object) -> None:
    card = json.loads(path.read_text())
    for key, value in changes.items():
        card[key] = value
    path.write_text(json.dumps(card))


def test_round_trip_gives_identical_outputs(stored):
    model, weights = stored
    loaded, card = load_model(weights.parent / "tiny.json")
    assert not loaded.training
    assert torch.equal(outputs(model), outputs(loaded))
    assert card["architecture"]["base_filters"] == 4 and card["architecture"]["levels"] == 2
    again, _ = load_model("tiny", directory=weights.parent)  # by name from a directory
    assert torch.equal(outputs(model), outputs(again))


def test_card_and_markdown_written_with_checksum(stored):
    _, weights = stored
    assert weights.name == "tiny.safetensors"
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["sha256"] == file_sha256(weights) == verify_checksum(weights, card["sha256"])
    assert card["name"] == "tiny" and card["version"] == "0.3"
    assert card["architecture"]["type"] == "MultilevelNet"
    assert card["input"]["intensity"] == "(HU + 1024) / 4095 clipped to [0, 1]"
    assert card["training"]["command"] == "lungdeepreg train --seed 7"
    assert {"created", "license", "attribution"} <= card.keys()
    markdown = weights.with_suffix(".md").read_text()
    assert markdown == render_card_markdown(card)
    for text in (card["sha256"], "lungdeepreg train --seed 7", "| tre_mm.mean | 1.235 |",
                 "1:02:05", "synthetic \\| test", "12 x 10 x 8", "Apache-2.0"):
        assert text in markdown
    assert sorted(p.name for p in weights.parent.iterdir()) == [
        "tiny.json", "tiny.md", "tiny.safetensors"]  # no staging leftovers
    assert model_card(weights)["sha256"] == card["sha256"]


def test_weights_are_safetensors_not_pickle(stored):
    _, weights = stored
    data = weights.read_bytes()
    assert not data.startswith((b"\x80", b"PK"))  # pickle protocol / torch zip archive
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    assert header == read_header(weights)
    architecture = json.loads(header["__metadata__"]["architecture"])
    assert architecture["base_filters"] == 4 and architecture["levels"] == 2
    assert "nets.0.head.weight" in header


def test_flipped_byte_is_refused_by_checksum(stored):
    _, weights = stored
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum") as caught:
        load_model(weights)
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["sha256"] in str(caught.value) and file_sha256(weights) in str(caught.value)
    with pytest.raises(InputError, match="checksum"):
        verify_checksum(weights, card["sha256"])


def test_truncated_file_is_refused(stored):
    _, weights = stored
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError, match="checksum"):
        load_model(weights)
    with pytest.raises(InputError, match="truncated"):
        read_header(weights)
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(InputError, match="safetensors"):
        read_header(weights)


def test_pickle_with_matching_checksum_is_not_unpickled(stored):
    model, weights = stored
    torch.save(model.state_dict(), weights)  # a pickle archive in place of the weights
    edit_card(weights.with_suffix(".json"), sha256=file_sha256(weights))
    with pytest.raises(InputError, match="safetensors"):
        load_model(weights)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("base_filters", 8, "shape mismatches"),
    ("levels", 3, "missing keys"),
    ("levels", 1, "unexpected keys"),
])
def test_card_with_wrong_architecture_is_refused(stored, field, value, problem):
    _, weights = stored
    card_path = weights.with_suffix(".json")
    architecture = json.loads(card_path.read_text())["architecture"]
    architecture[field] = value
    architecture["active_levels"] = min(architecture["active_levels"], architecture["levels"])
    edit_card(card_path, architecture=architecture)
    with pytest.raises(InputError, match=problem) as caught:
        load_model(card_path)
    assert "metadata" in str(caught.value)  # the weights' own architecture is quoted


def test_card_problems_are_input_errors(stored):
    _, weights = stored
    card_path = weights.with_suffix(".json")
    edit_card(card_path, sha256="abc")
    with pytest.raises(InputError, match="sha256"):
        load_model(weights)
    card_path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read model card"):
        model_card(card_path)
    card_path.unlink()
    with pytest.raises(InputError, match="no model card"):
        load_model(weights)


def test_unknown_name_lists_available_models(stored, tmp_path):
    _, weights = stored
    save_model(tiny_model(), tmp_path, "other", {})
    with pytest.raises(InputError, match="unknown model") as caught:
        resolve_model("no-such-model", directory=tmp_path)
    assert "other, tiny" in str(caught.value)
    with pytest.raises(InputError, match="unknown model"):
        load_model("no-such-model")  # shipped models directory
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_invalid_names_and_contradicting_cards_are_rejected(tmp_path):
    model = tiny_model()
    for name in ("../escape", "a/b", "x.json", ""):
        with pytest.raises(ValueError):
            save_model(model, tmp_path, name, {})
    with pytest.raises(ValueError, match="name"):
        save_model(model, tmp_path, "good", {"name": "other"})
    assert list(tmp_path.iterdir()) == []


def test_available_models_still_reads_shipped_cards():
    cards = available_models()
    assert isinstance(cards, list)
    assert all("name" in card for card in cards)


def test_every_shipped_model_loads_with_its_checksum_and_the_default_is_one():
    """The weights in the package match their cards' SHA-256, and the default model is
    shipped, runs from the affine start alone (it learnt motion without its affine part) and
    carries its real-pair and unseen-CT figures, each from a results file in the repository."""
    from LungDeepRegLib.pipeline.network import network_starts, trust_ratio
    from LungDeepRegLib.pipeline.register import DEFAULT_MODEL

    root = Path(__file__).resolve().parents[2]
    assert DEFAULT_MODEL in model_names()
    for name in model_names():
        card = model_card(name)
        assert verify_checksum(resolve_model(name).weights, card["sha256"]) == card["sha256"]
    card = model_card(DEFAULT_MODEL)
    assert network_starts(card) == ("affine",)
    for figures in ("real_pairs", "held_out_synthetic_pairs"):
        assert (root / card["metrics"][figures]["source"]).is_file()
    # the default trusts its own start below a ratio measured for it on the tuning data
    assert 0.0 < trust_ratio(card) < 1.0
    assert (root / card["refinement"]["source"]).is_file()


def test_a_card_sets_its_own_trust_ratio_and_a_bad_one_is_named():
    """``refinement.trust_ratio`` of a card decides when its network's start is refined
    alone; a card without it falls back to the pipeline's default (never)."""
    from LungDeepRegLib.pipeline.network import TRUST_RATIO, trust_ratio

    assert trust_ratio({"name": "m"}) == TRUST_RATIO == 0.0
    assert trust_ratio({"name": "m", "refinement": {"trust_ratio": 0.85}}) == 0.85
    for bad in (-0.1, "0.9", True, float("nan")):
        with pytest.raises(InputError, match="model card 'm'.*trust_ratio"):
            trust_ratio({"name": "m", "refinement": {"trust_ratio": bad}})
    with pytest.raises(InputError, match="trust_ratio"):
        trust_ratio({"name": "m", "refinement": 0.85})


def test_store_never_unpickles():
    package = Path(__file__).resolve().parents[2] / "LungDeepReg" / "LungDeepRegLib" / "models"
    needle = "torch." + "load("
    for path in package.glob("*.py"):
        assert needle not in path.read_text(), path


def test_stated_architecture_is_checked_against_the_model(tmp_path):
    model = tiny_model()
    model.active_levels = 1  # e.g. exported part way through progressive training
    stated = {"type": "MultilevelNet", "levels": 2, "base_filters": 4, "depth": 3,
              "image_channels": 1}
    weights = save_model(model, tmp_path, "partial", {"architecture": stated})
    loaded, card = load_model(weights)
    assert loaded.active_levels == card["architecture"]["active_levels"] == 1
    assert torch.equal(outputs(model), outputs(loaded))
    with pytest.raises(ValueError, match="base_filters"):
        save_model(model, tmp_path, "wrong", {"architecture": {**stated, "base_filters": 8}})
