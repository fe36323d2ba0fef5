"""The package's model zoo against its cards: every entry loads ready for analysis, and its
taggers, run on jets generated here with seeds never used in training (0, 1 and 2 are the
train, validation and test seeds of every zoo run), reproduce the AUC their cards state.

"Reproduce" means: the AUC measured on the new jets lies within three combined standard
deviations of the card's, the card's (bootstrap) uncertainty and the new sample's
(bootstrap) uncertainty added in quadrature. The default run checks the cheapest top
tagger end to end (generator -> ROOT file written with uproot -> ``jettag predict`` in a
fresh process -> parquet -> AUC) on 200 jets; ``-m slow`` checks every entry that way on
1,000 jets and the top taggers with ``Tagger.predict`` on 2,000 more.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jettag.hub import Tagger, TaggerFileError, list_pretrained, load_pretrained, pretrained_card
from jettag.hub.tagger import TaggerInputs
from jettag.hub.zoo import ZOO_DIR

ENTRIES = list_pretrained(directory=ZOO_DIR)
RECIPES = {"top": "top-tagging", "qg": "quark-gluon", "btag": "b-tagging"}
TASK_OF_CARD = {"generated-top-tagging": "top", "generated-quark-gluon": "qg",
                "generated-b-tagging": "btag"}
# Generator seeds for these tests; the zoo's runs used 0 (train), 1 (val) and 2 (test).
FAST_SEED, SLOW_SEED = 2027, 4242
IRC_SAFE = ("rpcn-irc", "efn")


def _task(name: str) -> str:
    return TASK_OF_CARD[pretrained_card(name, directory=ZOO_DIR)["evaluation"]["data"]["card"]]


def _card_metric(name: str, metric: str) -> tuple[float, float]:
    card = pretrained_card(name, directory=ZOO_DIR)
    for entry in card["evaluation"]["metrics"]:
        if entry["name"] == metric:
            return float(entry["value"]), float(entry["uncertainty"])
    raise AssertionError(f"{name}: the card states no {metric}")


def _check_auc(name: str, labels: np.ndarray, scores: np.ndarray, task: str) -> float:
    from jettag.metrics import summary

    measured = summary(labels, scores, task, bootstrap=200, seed=1)
    auc, std = measured["auc"], measured["auc_std"]
    card_auc, card_std = _card_metric(name, "auc")
    combined = math.hypot(card_std, std)
    print(f"{name}: AUC {auc:.4f} +- {std:.4f} on {len(labels)} new jets; card "
          f"{card_auc:.4f} +- {card_std:.4f}; pull {(auc - card_auc) / combined:+.2f}")
    assert abs(auc - card_auc) <= 3 * combined, (name, auc, std, card_auc, card_std)
    return auc


# ------------------------------------------------------------------------------- the zoo


def test_the_zoo_holds_the_promised_taggers():
    """ParticleNet-Lite and LorentzNet for top, a quark/gluon tagger, an IRC-safe tagger and
    a b-tagger, all in a few MB."""
    cards = {n: pretrained_card(n, directory=ZOO_DIR) for n in ENTRIES}
    by_task: dict[str, set[str]] = {}
    for name, card in cards.items():
        by_task.setdefault(_task(name), set()).add(card["model"]["architecture"])
    assert {"particlenet-lite", "lorentznet"} <= by_task.get("top", set()), by_task
    assert by_task.get("qg"), by_task
    assert any(set(IRC_SAFE) & archs for archs in by_task.values()), by_task
    assert by_task.get("btag"), by_task
    size = sum((ZOO_DIR / f"{n}.safetensors").stat().st_size for n in ENTRIES)
    assert size < 5_000_000, size


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_loads_in_eval_mode_with_its_preprocessing_and_a_complete_card(name: str):
    card = pretrained_card(name, directory=ZOO_DIR)
    tagger = load_pretrained(name)
    assert isinstance(tagger, Tagger) and tagger.name == name
    assert not any(m.training for m in tagger.modules())
    assert tagger.inputs == TaggerInputs.from_dict(card["inputs"])
    assert list(tagger.class_names) == card["classes"] and tagger.signal_name == card["signal"]
    # trained and measured on generated jets with different seeds
    train, test = card["training"]["data"], card["evaluation"]["data"]
    assert train["card"] == test["card"] and train["generator_seed"] != test["generator_seed"]
    assert card["training"]["size"]["train"] > 0 and card["evaluation"]["size"] >= 1000
    auc, std = _card_metric(name, "auc")
    assert 0.5 < auc < 1 and 0 < std < 0.05
    assert "particle-level" in " ".join(card["limitations"])


def test_tampered_or_swapped_zoo_weights_fail_with_a_clear_error(tmp_path: Path):
    """A copy of an entry with one bit of a weight flipped fails its checksum; another
    entry's weights under its name, even with the checksum forged into the card, are
    refused because the card's model disagrees with the weights' description."""
    import hashlib

    import yaml

    if len(ENTRIES) < 2:
        pytest.fail(f"expected several zoo entries, found {ENTRIES}")
    name, other = ENTRIES[0], ENTRIES[1]
    card_path, weights = tmp_path / f"{name}.yaml", tmp_path / f"{name}.safetensors"
    card_path.write_bytes((ZOO_DIR / f"{name}.yaml").read_bytes())
    raw = bytearray((ZOO_DIR / f"{name}.safetensors").read_bytes())
    raw[-3] ^= 0x40
    weights.write_bytes(bytes(raw))
    with pytest.raises(TaggerFileError, match=rf"{name}\.safetensors: SHA-256 .* differs"):
        load_pretrained(name, directory=tmp_path)
    swapped = (ZOO_DIR / f"{other}.safetensors").read_bytes()
    weights.write_bytes(swapped)
    with pytest.raises(TaggerFileError, match="SHA-256"):
        load_pretrained(name, directory=tmp_path)
    card = yaml.safe_load(card_path.read_text())
    card["weights"]["sha256"] = hashlib.sha256(swapped).hexdigest()
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(TaggerFileError, match="the card disagrees with the weights: model"):
        load_pretrained(name, directory=tmp_path)


# ------------------------------------------------------------- new jets, files, the CLI


def _generate(task: str, per_class: int, seed: int, *, cached: bool = False):
    """Jets of the task's recipe as an awkward array; ``cached``: through the generator's
    cache ($JETTAG_DATA or ~/.cache/jettag), so that a second slow run generates nothing."""
    pytest.importorskip("pythia8mc", reason="needs the generate extra (pythia8mc)")
    pytest.importorskip("fastjet", reason="needs the generate extra (fastjet)")
    from jettag.data.generate import generate, generate_jets

    if not cached:
        return generate_jets(RECIPES[task], per_class, seed=seed, workers=1, shuffle=True)
    from jettag.data.formats import open_dataset

    path = generate(RECIPES[task], per_class, seed=seed, workers=1, progress=False)
    with open_dataset(path) as reader:
        return reader.read_chunk(0, len(reader)).to_awkward()


def _write_root(jets, path: Path) -> dict[str, str]:
    """A ROOT TTree 'jets' as an analysis might have it: one jagged branch per particle
    variable, named ``pf_*`` (``pf_e`` for the energy), and the label (not read by jettag
    predict). Returns the --branch mapping from jettag's canonical names."""
    import awkward as ak
    import uproot

    fields = [f for f in jets.fields if f.startswith("part_") and f != "part_x"]
    mapping = {f: "pf_e" if f == "part_energy" else f.replace("part_", "pf_", 1) for f in fields}
    branches = {mapping[f]: ak.values_astype(jets[f], np.float32) for f in fields}
    with uproot.recreate(path) as handle:
        handle["jets"] = {**branches, "label": ak.to_numpy(jets["label"])}
    return mapping


def _predict_cli(model: str, source: Path, output: Path, mapping: dict[str, str]) -> None:
    """``jettag predict`` in a fresh process started outside the repository."""
    env = {k: v for k, v in os.environ.items() if k != "JETTAG_ZOO_PATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    branches = [arg for item in mapping.items() for arg in ("--branch", "=".join(item))]
    done = subprocess.run(
        [sys.executable, "-m", "jettag.cli", "predict", "--model", model, "--input",
         str(source), "--tree", "jets", *branches, "--output", str(output), "--device", "cpu",
         "--quiet"],
        cwd=output.parent, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert done.returncode == 0, done.stderr


def _scores_from_file(name: str, jets, tmp_path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    source, output = tmp_path / f"{name}-jets.root", tmp_path / f"{name}-scores.parquet"
    _predict_cli(name, source, output, _write_root(jets, source))
    table = pq.read_table(output).to_pydict()
    assert table["entry"] == list(range(len(jets)))
    assert not any(table["empty"])
    return np.asarray(table["score"])


def test_cli_on_a_new_root_file_reproduces_the_card_auc(tmp_path: Path):
    """ParticleNet-Lite top: 200 new jets -> ROOT -> jettag predict -> AUC as on the card;
    the file's scores equal Tagger.predict on the same jets."""
    name = "top-particlenet-lite"
    if name not in ENTRIES:
        pytest.fail(f"{name} is missing from the package zoo ({ENTRIES})")
    jets = _generate("top", 100, FAST_SEED)
    scores = _scores_from_file(name, jets, tmp_path)
    import awkward as ak

    # the ROOT file stores float32 momenta, as Tagger.predict computes in float32
    direct = load_pretrained(name).predict(ak.values_astype(jets, np.float32)).score
    np.testing.assert_allclose(scores, direct, rtol=1e-5, atol=1e-6)
    _check_auc(name, ak.to_numpy(jets["label"]), scores, "top")


@pytest.mark.slow
@pytest.mark.generate
@pytest.mark.parametrize("name", ENTRIES)
def test_cli_reproduces_every_card_on_new_jets(name: str, tmp_path: Path):
    import awkward as ak

    task = _task(name)
    jets = _generate(task, 500, SLOW_SEED, cached=True)
    scores = _scores_from_file(name, jets, tmp_path)
    _check_auc(name, ak.to_numpy(jets["label"]), scores, task)


@pytest.fixture(scope="module")
def new_top_jets():
    return _generate("top", 1000, SLOW_SEED + 1, cached=True)


@pytest.mark.slow
@pytest.mark.generate
@pytest.mark.parametrize("name", [n for n in ENTRIES if n.startswith("top-")])
def test_top_taggers_reach_their_card_auc_on_2000_new_jets(name: str, new_top_jets):
    import awkward as ak

    assert _task(name) == "top"
    scores = load_pretrained(name).predict(new_top_jets, batch_size=256).score
    _check_auc(name, ak.to_numpy(new_top_jets["label"]), scores, "top")
