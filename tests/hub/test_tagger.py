"""Tagger: predictions on every input kind agree and keep input order; empty jets; input
preprocessing; exact save/load round trips; damaged, tampered and mismatched files fail
with messages naming the problem, and loading never runs code from a file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from jettag.data import JetBatch
from jettag.hub import StateDictMismatchError, Tagger, TaggerFileError, TaggerInputs
from jettag.models import create
from jettag.testing import random_jets

SMALL = {"phi_channels": [16, 16], "f_channels": [16]}


def efn_tagger(seed: int = 0, **kwargs) -> Tagger:
    torch.manual_seed(seed)
    kwargs.setdefault("class_names", ["QCD", "top"])
    kwargs.setdefault("signal", "top")
    return Tagger.from_config("efn", SMALL, **kwargs)


def pfn_pid_tagger(seed: int = 0, card: dict | None = None, **inputs) -> Tagger:
    torch.manual_seed(seed)
    return Tagger.from_config(
        "pfn",
        {**SMALL, "pid": "float"},
        class_names=["gluon", "quark"],
        signal="quark",
        inputs={"x_fields": ["part_pid"], **inputs},
        card=card,
    )


def jets_with_empty(n_jets: int = 9, seed: int = 3) -> JetBatch:
    """Jets of 1..14 particles with jets 2 and 6 emptied."""
    jets = random_jets(n_jets, 14, generator=seed, min_particles=1, layout="batch",
                       dtype=torch.float32)
    counts = jets.counts.clone()
    keep = torch.ones(jets.num_particles, dtype=torch.bool)
    for j in (2, 6):
        keep[jets.ptr[j] : jets.ptr[j + 1]] = False
        counts[j] = 0
    return JetBatch.from_counts(jets.p4[keep], counts)


def with_pids(jets: JetBatch, seed: int = 0) -> JetBatch:
    ids = torch.tensor([22.0, 211.0, -211.0, 130.0, 2112.0, 321.0, 11.0])
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(ids), (jets.num_particles,), generator=generator)
    return JetBatch(jets.p4, jets.ptr, x=ids[pick].unsqueeze(1))


# ------------------------------------------------------------------------ predictions


def test_predict_agrees_on_awkward_jetbatch_and_padded_numpy_in_input_order():
    tagger = efn_tagger()
    jets = jets_with_empty()
    from_batch = tagger.predict(jets, batch_size=4)
    from_awkward = tagger.predict(jets.to_awkward(), batch_size=4)
    p4, _, mask = jets.to_padded()
    from_padded = tagger.predict(p4.numpy(), mask=mask.numpy(), batch_size=4)
    # without a mask, all-zero four-vectors are padding (the top-tagging convention)
    from_zero_padding = tagger.predict(p4.numpy(), batch_size=4)
    for other in (from_awkward, from_padded, from_zero_padding):
        np.testing.assert_array_equal(other.probabilities, from_batch.probabilities)
        np.testing.assert_array_equal(other.empty, from_batch.empty)
    # other batch sizes and each jet alone give the same rows (up to float32 rounding of
    # differently sized matrix products), in input order
    for batch_size in (1, 3, 100):
        np.testing.assert_allclose(tagger.predict(jets, batch_size=batch_size).probabilities,
                                   from_batch.probabilities, rtol=1e-6)
    for j in (0, 5, 8):
        alone = tagger.predict(jets[j]).probabilities
        np.testing.assert_allclose(alone[0], from_batch.probabilities[j], rtol=1e-6)
    reversed_order = tagger.predict(jets[list(range(len(jets)))[::-1]]).probabilities
    np.testing.assert_allclose(reversed_order[::-1], from_batch.probabilities, rtol=1e-6)


def test_probabilities_are_softmax_of_logits_and_score_is_the_signal_class():
    tagger = efn_tagger()
    jets = random_jets(6, 10, generator=1, layout="batch", dtype=torch.float32)
    prediction = tagger.predict(jets)
    expected = torch.softmax(tagger(jets), dim=-1).detach().numpy()
    np.testing.assert_allclose(prediction.probabilities, expected, rtol=1e-6)
    np.testing.assert_allclose(prediction.probabilities.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(prediction.score, prediction.probabilities[:, 1])
    np.testing.assert_array_equal(np.asarray(prediction), prediction.probabilities)
    assert list(prediction.columns()) == ["prob_QCD", "prob_top", "score", "empty"]


def test_empty_jets_get_nan_and_a_flag_and_are_never_run():
    tagger = efn_tagger()
    prediction = tagger.predict(jets_with_empty())
    assert prediction.empty.tolist() == [j in (2, 6) for j in range(9)]
    assert np.isnan(prediction.probabilities[[2, 6]]).all()
    assert np.isnan(prediction.score[[2, 6]]).all()
    assert np.isfinite(np.delete(prediction.probabilities, [2, 6], axis=0)).all()
    only_empty = JetBatch.from_counts(torch.zeros(0, 4), [0, 0])
    assert np.isnan(tagger.predict(only_empty).probabilities).all()


def test_features_reach_the_model_in_x_fields_order_for_every_input_kind():
    tagger = pfn_pid_tagger()
    jets = with_pids(random_jets(7, 12, generator=2, layout="batch", dtype=torch.float32))
    from_batch = tagger.predict(jets).probabilities
    array = jets.to_awkward()
    array = ak.with_field(array, ak.unflatten(jets.x[:, 0].numpy(), jets.counts.numpy()),
                          "part_pid")
    from_awkward = tagger.predict(array[[f for f in array.fields if f != "part_x"]])
    p4, x, mask = jets.to_padded()
    from_padded = tagger.predict(p4, mask=mask, features=x)
    np.testing.assert_array_equal(from_awkward.probabilities, from_batch)
    np.testing.assert_array_equal(from_padded.probabilities, from_batch)
    # the PDG id matters: photons everywhere give other scores
    photons = JetBatch(jets.p4, jets.ptr, x=torch.full_like(jets.x, 22.0))
    assert not np.allclose(tagger.predict(photons).probabilities, from_batch)
    with pytest.raises(ValueError, match=r"part_pid.*JetBatch.x.*no x"):
        tagger.predict(JetBatch(jets.p4, jets.ptr))


def test_max_particles_keeps_the_hardest_constituents_and_massless_drops_masses():
    jets = random_jets(5, 20, generator=4, min_particles=8, massive=True, layout="batch",
                       dtype=torch.float32)
    tagger = efn_tagger(inputs={"max_particles": 6, "massless": True})
    plain = efn_tagger()
    # shuffle the particles inside each jet: the hardest six must still be found
    order = torch.cat([torch.randperm(int(c), generator=torch.Generator().manual_seed(1))
                       + int(s) for s, c in zip(jets.ptr[:-1], jets.counts, strict=True)])
    shuffled = JetBatch(jets.p4[order], jets.ptr)
    kept = []
    for j in range(len(jets)):
        p4 = jets[j].p4
        top = p4[torch.argsort(torch.hypot(p4[:, 1], p4[:, 2]), descending=True)[:6]]
        top = torch.cat([torch.linalg.vector_norm(top[:, 1:], dim=1, keepdim=True),
                         top[:, 1:]], 1)
        kept.append({"p4": top})
    expected = plain.predict(JetBatch.collate(kept)).probabilities
    np.testing.assert_allclose(tagger.predict(shuffled).probabilities, expected, rtol=1e-5)
    prepared = tagger.prepare(shuffled)
    assert prepared.counts.tolist() == [6] * 5
    assert torch.allclose(prepared.p4[:, 0], torch.linalg.vector_norm(prepared.p4[:, 1:], dim=1))


def test_invalid_arguments_name_what_was_expected():
    tagger = efn_tagger()
    with pytest.raises(ValueError, match=r"\(B, N, 4\)"):
        tagger.predict(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, N\) = \(2, 5\)"):
        tagger.predict(np.ones((2, 5, 4)), mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="batch_size"):
        tagger.predict(np.ones((2, 5, 4)), batch_size=0)
    with pytest.raises(ValueError, match="expected jets as an awkward Array"):
        tagger.predict([1, 2, 3])
    with pytest.raises(ValueError, match="mask= and features= go with padded"):
        tagger.predict(jets_with_empty(), mask=np.ones((9, 14), bool))
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu'"):
        tagger.predict(jets_with_empty(), device="gpu0")
    with pytest.raises(ValueError, match="finite"):
        tagger.predict(np.full((1, 2, 4), np.nan), mask=np.ones((1, 2), bool))
    with pytest.raises(ValueError, match=r"3 class names .* num_classes=2"):
        Tagger.from_model(create("efn", **SMALL), class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="signal: 'higgs' is not one of the classes"):
        Tagger.from_model(create("efn", **SMALL), class_names=["a", "b"], signal="higgs")
    with pytest.raises(ValueError, match="max_particles"):
        TaggerInputs(max_particles=0)


# ------------------------------------------------------------------------ files


def test_save_load_round_trip_is_exact(tmp_path: Path):
    card = {"name": "qg-pfn-test", "title": "test tagger", "limitations": ["toy weights"]}
    tagger = pfn_pid_tagger(seed=5, card=card, massless=True, max_particles=9)
    path = tagger.save(tmp_path / "qg-pfn-test")
    assert path == tmp_path / "qg-pfn-test.safetensors"
    jets = with_pids(jets_with_empty(), seed=2)
    expected = tagger.predict(jets).probabilities
    for source in (path, tmp_path / "qg-pfn-test.yaml", tmp_path / "qg-pfn-test"):
        loaded = Tagger.load(source)
        assert not loaded.training
        assert loaded.name == "qg-pfn-test"
        assert loaded.class_names == ("gluon", "quark") and loaded.signal_name == "quark"
        assert loaded.inputs == tagger.inputs
        assert loaded.card["limitations"] == ["toy weights"]
        for key, value in tagger.model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[key], value), key
        np.testing.assert_array_equal(loaded.predict(jets).probabilities, expected)
    # the weights file alone (card deleted) is enough
    (tmp_path / "qg-pfn-test.yaml").unlink()
    np.testing.assert_array_equal(Tagger.load(path).predict(jets).probabilities, expected)
    # re-saving a loaded tagger writes the same tensors
    Tagger.load(path).save(tmp_path / "again.safetensors")
    again, first = load_file(tmp_path / "again.safetensors"), load_file(path)
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_float64_tagger_round_trip(tmp_path: Path):
    tagger = efn_tagger().to(torch.float64)
    tagger.save(tmp_path / "t64.safetensors")
    loaded = Tagger.load(tmp_path / "t64.safetensors")
    assert loaded.dtype == torch.float64
    jets = random_jets(4, 9, generator=0, layout="batch")
    np.testing.assert_array_equal(loaded.predict(jets).probabilities,
                                  tagger.predict(jets).probabilities)


def test_save_refuses_taggers_it_could_not_rebuild(tmp_path: Path):
    model = create("efn", **SMALL)
    with pytest.raises(ValueError, match="no architecture"):
        Tagger.from_model(model).save(tmp_path / "a")
    etaphi = create("efn", **SMALL, coords="etaphi")
    incomplete = Tagger.from_model(etaphi, architecture="efn", config=SMALL)
    with pytest.raises(ValueError, match="misses an option"):
        incomplete.save(tmp_path / "b")
    wrong_size = Tagger.from_model(model, architecture="efn", config={"phi_channels": [8, 16]})
    with pytest.raises(StateDictMismatchError):
        wrong_size.save(tmp_path / "c")
    assert not list(tmp_path.iterdir())
    ok = Tagger.from_model(model, architecture="efn", config=SMALL)
    ok.save(tmp_path / "d")
    with pytest.raises(FileExistsError):
        ok.save(tmp_path / "d", overwrite=False)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return efn_tagger().save(tmp_path / "tagger.safetensors")


def header_of(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size])["__metadata__"]


def test_mismatched_weights_list_missing_unexpected_and_shape_mismatches(saved: Path):
    state = load_file(saved)
    state.pop("head.bias")
    state["encoder.extra.weight"] = torch.zeros(3)
    state["encoder.phi.0.weight"] = torch.zeros(32, 2)
    save_file(state, saved, metadata=header_of(saved))
    (saved.with_suffix(".yaml")).unlink()  # the card's checksum would fail first
    with pytest.raises(StateDictMismatchError) as info:
        Tagger.load(saved)
    err = info.value
    assert err.missing == ["head.bias"]
    assert err.unexpected == ["encoder.extra.weight"]
    assert err.mismatched == [("encoder.phi.0.weight", "(16, 2) float32", "(32, 2) float32")]
    message = str(err)
    assert str(saved) in message
    assert "1 missing key(s): head.bias" in message
    assert "1 unexpected key(s): encoder.extra.weight" in message
    assert "encoder.phi.0.weight (file (32, 2) float32, model (16, 2) float32)" in message


def test_wrong_dtype_and_non_finite_weights_are_refused(saved: Path):
    saved.with_suffix(".yaml").unlink()
    state = load_file(saved)
    state["head.weight"] = state["head.weight"].to(torch.float16)
    save_file(state, saved, metadata=header_of(saved))
    with pytest.raises(StateDictMismatchError, match=r"head.weight \(file \(2, 16\) float16"):
        Tagger.load(saved)
    state["head.weight"] = torch.full((2, 16), float("nan"))
    save_file(state, saved, metadata=header_of(saved))
    with pytest.raises(TaggerFileError, match=r"head.weight.*NaN or infinite"):
        Tagger.load(saved)


def test_truncated_and_corrupt_headers_fail_safely(saved: Path):
    raw = saved.read_bytes()
    saved.with_suffix(".yaml").unlink()
    saved.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(TaggerFileError, match="truncated, damaged"):
        Tagger.load(saved)
    saved.write_bytes(b"\xff" * 8 + raw[8:])
    with pytest.raises(TaggerFileError, match="not a readable safetensors file"):
        Tagger.load(saved)
    size = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + size].replace(b'"format":"jettag-tagger"', b'"format":"keras-h5-file"')
    saved.write_bytes(raw[:8] + header + raw[8 + size :])
    with pytest.raises(TaggerFileError, match="not a jettag tagger"):
        Tagger.load(saved)
    saved.write_bytes(b"")
    with pytest.raises(TaggerFileError):
        Tagger.load(saved)


def test_altered_weights_fail_the_card_checksum(saved: Path):
    raw = bytearray(saved.read_bytes())
    raw[-3] ^= 0x40  # one bit of the last weight: still a valid safetensors file
    saved.write_bytes(bytes(raw))
    with pytest.raises(TaggerFileError, match=r"SHA-256 .* differs"):
        Tagger.load(saved)


def test_card_that_contradicts_the_weights_is_refused(saved: Path):
    card_path = saved.with_suffix(".yaml")
    card = yaml.safe_load(card_path.read_text())
    card["classes"] = ["top", "QCD"]
    card_path.write_text(yaml.safe_dump(card))
    with pytest.raises(TaggerFileError, match=r"disagrees with the weights: classes"):
        Tagger.load(saved)


class _Marker:
    """Unpickling this would create a file: proof that a loader ran code."""

    path = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_loading_never_runs_code_from_a_file(tmp_path: Path):
    marker = tmp_path / "code-ran"
    _Marker.path = str(marker)
    payload = pickle.dumps({"weights": _Marker()})
    for name in ("evil.pt", "evil.safetensors"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(TaggerFileError):
            Tagger.load(tmp_path / name)
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['touch code-ran']\n")
    with pytest.raises(TaggerFileError, match="model card YAML"):
        Tagger.load(tmp_path / "evil.yaml")
    assert not marker.exists()


def test_unknown_architecture_and_missing_files(tmp_path: Path, saved: Path):
    with pytest.raises(FileNotFoundError, match="no such tagger weights file"):
        Tagger.load(tmp_path / "absent.safetensors")
    header = header_of(saved)
    description = json.loads(header["jettag"])
    description["model"]["architecture"] = "transformer-xxl"
    header["jettag"] = json.dumps(description)
    save_file(load_file(saved), saved, metadata=header)
    saved.with_suffix(".yaml").unlink()
    with pytest.raises(TaggerFileError, match="unknown architecture 'transformer-xxl'"):
        Tagger.load(saved)
