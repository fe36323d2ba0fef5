"""Model zoo: entries are a safetensors file plus a card; listing, loading, the card schema
and the integrity checks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jettag.hub import (
    ModelCardError,
    Tagger,
    TaggerFileError,
    UnknownTaggerError,
    list_pretrained,
    load_pretrained,
    pretrained_card,
    validate_model_card,
)
from jettag.hub.zoo import ZOO_DIR
from jettag.testing import random_jets

CARD = {
    "name": "qg-pfn-test",
    "title": "PFN quark/gluon tagger (test weights)",
    "summary": "A small PFN reading the PDG id; random weights for the tests.",
    "training": {
        "data": {"card": "generated-quark-gluon", "description": "generated jets, seed 1"},
        "size": {"train": 1000, "validation": 200},
        "recipe": ["AdamW, lr 1e-3, 2 epochs", "batch 128"],
        "command": "python benchmarks/train.py --model pfn --task qg",
    },
    "evaluation": {
        "data": {"card": "generated-quark-gluon", "description": "held-out seed 7"},
        "split": "test",
        "size": 500,
        "metrics": [
            {"name": "auc", "value": 0.81, "uncertainty": 0.01},
            {"name": "accuracy", "value": 0.74, "uncertainty": 0.02},
        ],
    },
    "intended_use": "Quark/gluon discrimination of particle-level jets in studies.",
    "limitations": [
        "trained on particle-level Pythia 8 jets, not on detector data",
        "pT range of the training sample only",
    ],
}


def make_entry(directory: Path, name: str = "qg-pfn-test", seed: int = 0) -> Tagger:
    torch.manual_seed(seed)
    tagger = Tagger.from_config(
        "pfn",
        {"phi_channels": [16, 16], "f_channels": [16], "pid": "float"},
        class_names=["gluon", "quark"],
        signal="quark",
        inputs={"x_fields": ["part_pid"]},
        card={**copy.deepcopy(CARD), "name": name},
    )
    tagger.save(directory / f"{name}.safetensors")
    return tagger


def pid_jets() -> object:
    from jettag.data import JetBatch

    jets = random_jets(6, 10, generator=0, layout="batch", dtype=torch.float32)
    ids = torch.tensor([22.0, 211.0, -211.0, 2112.0])[torch.arange(jets.num_particles) % 4]
    return JetBatch(jets.p4, jets.ptr, x=ids.unsqueeze(1))


def test_an_entry_is_listed_and_loads_ready_with_its_preprocessing(tmp_path: Path):
    tagger = make_entry(tmp_path)
    make_entry(tmp_path, "other-entry", seed=1)
    (tmp_path / "orphan.yaml").write_text("name: orphan\n")  # no weights: not an entry
    assert list_pretrained(directory=tmp_path) == ["other-entry", "qg-pfn-test"]
    loaded = load_pretrained("qg-pfn-test", directory=tmp_path)
    assert isinstance(loaded, Tagger) and not loaded.training
    assert loaded.inputs.x_fields == ("part_pid",)
    assert loaded.card["evaluation"]["metrics"][0] == {"name": "auc", "value": 0.81,
                                                        "uncertainty": 0.01}
    jets = pid_jets()
    np.testing.assert_array_equal(loaded.predict(jets).score, tagger.predict(jets).score)


def test_zoo_path_variable_adds_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    make_entry(tmp_path)
    monkeypatch.setenv("JETTAG_ZOO_PATH", str(tmp_path))
    assert "qg-pfn-test" in list_pretrained()
    assert load_pretrained("qg-pfn-test").class_names == ("gluon", "quark")


def test_unknown_and_malformed_names(tmp_path: Path):
    make_entry(tmp_path)
    with pytest.raises(UnknownTaggerError, match=r"no pretrained tagger 'top-pfn'.*qg-pfn-test"):
        load_pretrained("top-pfn", directory=tmp_path)
    with pytest.raises(UnknownTaggerError, match="expected lower-case letters"):
        load_pretrained("../qg-pfn-test", directory=tmp_path)
    assert isinstance(UnknownTaggerError("x"), KeyError)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("limitations"), r"'limitations' is a required property"),
        (lambda c: c["evaluation"]["metrics"][0].pop("uncertainty"),
         r"card.evaluation.metrics\[0\]: 'uncertainty' is a required property"),
        (lambda c: c["training"].pop("command"), r"card.training: 'command'"),
        (lambda c: c["training"]["size"].pop("train"), r"card.training.size: 'train'"),
        (lambda c: c["evaluation"]["metrics"].clear(), r"card.evaluation.metrics: \[\] should"),
        (lambda c: c.update(signal="top"), r"signal: 'top' is not one of the classes"),
        (lambda c: c["training"]["data"].update(card="lhc-run5"),
         r"training.data.card: 'lhc-run5' is not a jettag data card"),
        (lambda c: c["weights"].update(file="other.safetensors"),
         r"weights.file: expected 'qg-pfn-test.safetensors'"),
    ],
)
def test_card_schema_names_the_offending_key(tmp_path: Path, edit, message):
    make_entry(tmp_path)
    card_path = tmp_path / "qg-pfn-test.yaml"
    card = yaml.safe_load(card_path.read_text())
    validate_model_card(card)  # the saved card is complete
    edit(card)
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(ModelCardError, match=message):
        pretrained_card("qg-pfn-test", directory=tmp_path)
    with pytest.raises(ModelCardError, match=str(card_path).replace(".", r"\.")):
        load_pretrained("qg-pfn-test", directory=tmp_path)


def test_missing_or_altered_weights(tmp_path: Path):
    make_entry(tmp_path)
    weights = tmp_path / "qg-pfn-test.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(TaggerFileError, match="SHA-256"):
        load_pretrained("qg-pfn-test", directory=tmp_path)
    weights.unlink()
    assert list_pretrained(directory=tmp_path) == []  # an entry needs both files
    with pytest.raises(FileNotFoundError, match="weights of pretrained tagger 'qg-pfn-test'"):
        load_pretrained("qg-pfn-test", directory=tmp_path)


@pytest.mark.parametrize("name", list_pretrained(directory=ZOO_DIR))
def test_package_zoo_entries_are_complete_and_load(name: str):
    card = pretrained_card(name, directory=ZOO_DIR)
    tagger = load_pretrained(name, directory=ZOO_DIR)
    assert list(tagger.class_names) == card["classes"]
    jets = random_jets(4, 20, generator=0, layout="batch", dtype=tagger.dtype)
    if tagger.inputs.x_fields:
        from jettag.data import JetBatch

        x = torch.full((jets.num_particles, len(tagger.inputs.x_fields)), 211.0)
        jets = JetBatch(jets.p4, jets.ptr, x=x.to(tagger.dtype))
    probabilities = tagger.predict(jets).probabilities
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
