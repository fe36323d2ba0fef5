"""LorentzNet-release checkpoints: jettag's LorentzNet against outputs recorded from the
authors' code (seeded random weights and the two published checkpoints), importer errors,
and (slow) the published checkpoints' AUC on jets from jettag's generator.

The fixture ``tests/fixtures/lorentznet_release_outputs.npz`` (4 KB) was written by a script
run outside this repository, next to unmodified copies of ``models.py``, ``top/collate.py``
and ``qg/dataset.py`` of github.com/sdogsq/LorentzNet-release (GPL-3.0; an empty stub module
stood in for ``energyflow``, which ``qg/dataset.py`` imports but its ``collate_fn`` does not
use), torch 2.13 CPU. The script:

1. made 5 jets of 7, 3, 11, 1 and 5 constituents with ``numpy.random.default_rng(2024)``:
   per jet an axis ((0.3, 1.0), (-1.2, -2.9), (1.5, 3.05), (0, 0), (-0.4, -1.7) in
   (eta, phi)), pT = 550 * Dirichlet(0.7) + 1 GeV, eta and phi = axis + 0.25 * normal
   (phi wrapped), a PDG id drawn from +-{22, 11, 13, 130, 211, 321, 2112, 2212}, then a
   mass uniform in [0.1, 1] GeV; stored as ``p4`` (E, px, py, pz) float64, ``pid``,
   ``counts``. ``qg_pad_to`` = 16.
2. top inputs: each jet zero-padded to 200 as a dict ``{"Pmu", "label" (1 = particle),
   "Nobj", "is_signal"}``, batched by the release's ``collate_fn(scale=1, add_beams=True,
   beam_mass=1)`` (pads to the longest jet, prepends the beams), node scalars passed
   through ``psi`` as ``top_tagging.py`` does. q/g inputs: (pT, y, phi) of ``p4`` with the
   energyflow PDG mass of |pid| (``PID_MASSES``) -> four-momenta, zero-padded to 16 rows,
   sklearn one-hot of |pid| over (11, 13, 22, 130, 211, 321, 2112, 2212), batched by
   ``qg/dataset.py``'s ``collate_fn``.
3. models ``LorentzNet(n_scalar, n_hidden=72, n_class=2, n_layers=6, c_weight, dropout=0.2)``
   in eval mode: ``random_top`` (n_scalar 2, c_weight 5e-3, weights of
   :func:`_random_release_state_dict` with seed 11), ``random_qg`` (8, 1e-3, seed 12),
   ``checkpoint_top`` / ``checkpoint_qg`` (the published ``best-val-model.pt``, ``module.``
   stripped). Outputs (logits) in float64 (``model.double()``, inputs float64) and in float32
   (suffix ``_f32``); ``checkpoint_top_massless``: the top checkpoint in float64 on the same
   jets with E = |p|.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jettag.data import JetBatch
from jettag.hub.lorentznet import (
    RELEASE_PAD_TO,
    load_lorentznet_release,
    release_to_jettag_state_dict,
)
from jettag.models.lorentznet import default_config, lorentznet

F64 = torch.float64
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lorentznet_release_outputs.npz"
TOP = "lorentznet-release_top_best-val-model.pt"
QG = "lorentznet-release_qg_best-val-model.pt"


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return dict(data)


def _fixture_jets(recorded: dict[str, np.ndarray], *, massless: bool = False) -> JetBatch:
    p4 = torch.from_numpy(recorded["p4"])
    if massless:
        p4 = torch.cat([p4[:, 1:].norm(dim=1, keepdim=True), p4[:, 1:]], dim=1)
    pid = torch.from_numpy(recorded["pid"]).to(F64).unsqueeze(1)
    return JetBatch.from_counts(p4, recorded["counts"].tolist(), x=pid)


def _release_name(key: str) -> str:
    return key.replace("blocks.", "LGEBs.", 1).replace("decoder.", "graph_dec.", 1)


def _random_release_state_dict(task: str, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights under the release's key names (the recording script's rule):
    in sorted key order, float64 draws rounded to float32 -- 2-d weights normal / sqrt(fan
    in), other weights 1 + 0.2 normal, biases 0.2 normal, running means 0.3 normal, running
    variances uniform in [0.5, 2], num_batches_tracked 0."""
    shapes = {_release_name(k): v.shape for k, v in lorentznet(**default_config(task))
              .state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        if key.endswith("running_var"):
            value = 0.5 + 1.5 * torch.rand(shape, generator=gen, dtype=F64)
        elif key.endswith("running_mean"):
            value = 0.3 * torch.randn(shape, generator=gen, dtype=F64)
        elif key.endswith("weight") and len(shape) == 2:
            value = torch.randn(shape, generator=gen, dtype=F64) / math.sqrt(shape[1])
        elif key.endswith("weight"):
            value = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=F64)
        else:
            value = 0.2 * torch.randn(shape, generator=gen, dtype=F64)
        out[key] = value.float()
    return out


def _logits(model: torch.nn.Module, jets: JetBatch) -> np.ndarray:
    with torch.no_grad():
        return model.double()(jets.to(dtype=F64)).numpy()


# ------------------------------------------------------------------------------------------
# Agreement with the released code
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "seed"), [("top", 11), ("qg", 12)])
def test_random_weights_match_released_code(recorded, task: str, seed: int) -> None:
    pad_to = None if task == "top" else int(recorded["qg_pad_to"])
    state = {"module." + k: v for k, v in _random_release_state_dict(task, seed).items()}
    model = load_lorentznet_release(state, readout="padded_mean", pad_to=pad_to).model
    assert model.num_scalars == (2 if task == "top" else 8)
    got = _logits(model, _fixture_jets(recorded))
    np.testing.assert_allclose(got, recorded[f"random_{task}"], rtol=0, atol=1e-5)
    # all the machinery matters: the per-jet mean readout gives other logits
    mean = load_lorentznet_release(state, readout="mean").model
    assert np.abs(_logits(mean, _fixture_jets(recorded)) - got).max() > 1e-3


@pytest.mark.parametrize(("task", "name"), [("top", TOP), ("qg", QG)])
def test_published_checkpoints_match_released_code(recorded, reference_dir, task, name) -> None:
    pad_to = None if task == "top" else int(recorded["qg_pad_to"])
    model = load_lorentznet_release(reference_dir / name, pad_to=pad_to).model
    got = _logits(model, _fixture_jets(recorded))
    np.testing.assert_allclose(got, recorded[f"checkpoint_{task}"], rtol=0, atol=1e-5)


def test_top_checkpoint_on_massless_constituents(recorded, reference_dir) -> None:
    """On massless constituents the mass scalar psi(sqrt|E^2 - p^2|) is rounding noise of
    order sqrt(eps) E, computed differently by the two codes, and the top checkpoint is
    sensitive to it: agreement is then ~1e-4 in float64 (and ~0.5 in float32)."""
    model = load_lorentznet_release(reference_dir / TOP, pad_to=None).model
    got = _logits(model, _fixture_jets(recorded, massless=True))
    np.testing.assert_allclose(got, recorded["checkpoint_top_massless"], rtol=0, atol=1e-3)


def test_imported_tagger_predicts_on_massless_inputs_and_round_trips(
    recorded, reference_dir, tmp_path
) -> None:
    """The imported top Tagger makes constituents massless itself: its score on massive jets
    equals the raw model's on the same jets made massless; saved and reloaded, it gives the
    same scores."""
    from jettag.hub import Tagger

    tagger = load_lorentznet_release(reference_dir / TOP, pad_to=None).double()
    jets = _fixture_jets(recorded)
    massless = _fixture_jets(recorded, massless=True)
    with torch.no_grad():
        expected = tagger.model(massless.to(dtype=F64)).softmax(-1)[:, 1].numpy()
    score = tagger.predict(jets.to(dtype=F64), device="cpu", batch_size=64).score
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-9)
    tagger.save(tmp_path / "top.safetensors")
    again = Tagger.load(tmp_path / "top.safetensors")
    assert again.dtype == F64 and again.inputs.massless
    np.testing.assert_allclose(again.predict(jets.to(dtype=F64), device="cpu", batch_size=64)
                               .score, expected, rtol=0, atol=1e-9)


def test_imported_model_setup(reference_dir) -> None:
    top_tagger = load_lorentznet_release(reference_dir / TOP)
    qg_tagger = load_lorentznet_release(reference_dir / QG)
    assert top_tagger.class_names == ("QCD", "top") and top_tagger.signal_name == "top"
    assert qg_tagger.class_names == ("gluon", "quark") and qg_tagger.signal_name == "quark"
    assert top_tagger.inputs.massless and top_tagger.inputs.x_fields == ()
    assert not qg_tagger.inputs.massless and qg_tagger.inputs.x_fields == ("part_pid",)
    top, qg = top_tagger.model, qg_tagger.model
    assert not top.training and not qg.training
    assert (top.inputs.scalars, top.inputs.beams, top.c_weight) == ("mass", True, 5e-3)
    assert (qg.inputs.scalars, qg.inputs.beams, qg.inputs.pdg_masses) == ("pid", False, True)
    assert qg.c_weight == 1e-3 and qg.pad_to == RELEASE_PAD_TO["qg"] == 139
    assert top.pad_to == RELEASE_PAD_TO["top"]
    assert top.readout == qg.readout == "padded_mean"
    assert sum(p.numel() for p in top.parameters()) == 224_072


# ------------------------------------------------------------------------------------------
# Importer errors
# ------------------------------------------------------------------------------------------


def test_key_mapping_round_trip() -> None:
    state = _random_release_state_dict("top", 0)
    mapped = release_to_jettag_state_dict({"module." + k: v for k, v in state.items()})
    assert set(mapped) == set(lorentznet().state_dict())
    assert mapped["blocks.5.phi_h.3.bias"] is state["LGEBs.5.phi_h.3.bias"]


def test_importer_names_bad_keys_and_shapes(tmp_path) -> None:
    state = _random_release_state_dict("top", 0)
    extra = {**state, "LGEBs.0.phi_q.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"not: \['LGEBs.0.phi_q.0.weight'\]"):
        load_lorentznet_release(extra)
    missing = {k: v for k, v in state.items() if k != "LGEBs.2.phi_m.0.bias"}
    with pytest.raises(ValueError, match=r"missing weights \(jettag names\): "
                                         r"\['blocks.2.phi_m.0.bias'\]"):
        load_lorentznet_release(missing)
    wrong = {**state, "LGEBs.1.phi_e.3.weight": torch.zeros(72, 71)}
    with pytest.raises(ValueError, match=r"wrong shape: \['blocks.1.phi_e.3.weight \(72, 71\) "
                                         r"\(expected \(72, 72\)\)'\]"):
        load_lorentznet_release(wrong)
    last_x = {**state, "LGEBs.5.phi_x.0.weight": torch.zeros(72, 72)}
    with pytest.raises(ValueError, match=r"unexpected weights .*blocks.5.phi_x.0.weight"):
        load_lorentznet_release(last_x)
    with pytest.raises(ValueError, match="task='qg' takes 8 input scalars but the weights have 2"):
        load_lorentznet_release(state, task="qg")
    odd = {**state, "embedding.weight": torch.zeros(72, 3)}
    with pytest.raises(ValueError, match="cannot tell the task from 3 input scalars"):
        load_lorentznet_release(odd)
    with pytest.raises(FileNotFoundError, match="no such LorentzNet-release checkpoint"):
        load_lorentznet_release(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk.pt: expected a PyTorch state dict"):
        load_lorentznet_release(junk)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=r"list.pt: expected a state dict \(str -> Tensor\)"):
        load_lorentznet_release(listed)


# ------------------------------------------------------------------------------------------
# Published checkpoints on generated jets (slow)
# ------------------------------------------------------------------------------------------


def _generated_auc(reference_dir, name: str, recipe: str, seed: int) -> tuple[float, float]:
    pytest.importorskip("pythia8mc", reason="needs the generate extra (pythia8mc)")
    pytest.importorskip("fastjet", reason="needs the generate extra (fastjet)")
    from jettag.data.generate import generate_jets
    from jettag.metrics import accuracy, roc_auc

    jets = generate_jets(recipe, 1000, seed=seed, workers=2, shuffle=True)
    x_fields = ["part_pid"] if recipe == "quark-gluon" else []
    batch = JetBatch.from_awkward(jets, x_fields=x_fields).to(dtype=torch.float32)
    model = load_lorentznet_release(reference_dir / name).model
    scores = []
    with torch.no_grad():
        for start in range(0, len(batch), 32):  # the authors' evaluation batch size
            scores.append(model(batch[start:start + 32]).softmax(-1)[:, 1])
    score = torch.cat(scores).numpy()
    label = batch.label.numpy()
    auc, acc = roc_auc(label, score), accuracy(label, score)
    print(f"{name} on {len(batch)} {recipe} jets: AUC {auc:.4f}, accuracy {acc:.4f}")
    return auc, acc


@pytest.mark.slow
@pytest.mark.generate
def test_top_checkpoint_auc_on_generated_top_tagging_jets(reference_dir) -> None:
    """2,000 jets of the ``top-tagging`` recipe (massless constituents, as the Delphes E-flow
    objects the checkpoint was trained on): AUC at least 0.94 (measured 0.991 with this
    seed; these top jets contain all three decay quarks)."""
    auc, acc = _generated_auc(reference_dir, TOP, "top-tagging", seed=7)
    assert auc >= 0.94, (auc, acc)


@pytest.mark.slow
@pytest.mark.generate
def test_qg_checkpoint_auc_on_generated_quark_gluon_jets(reference_dir) -> None:
    """2,000 jets of the ``quark-gluon`` recipe: AUC about 0.92 as on the published test set
    (0.916). Measured 0.907 with this seed and 0.932 on another 2,000 jets (statistical
    spread ~0.01); at least 0.89 asserted."""
    auc, acc = _generated_auc(reference_dir, QG, "quark-gluon", seed=7)
    assert auc >= 0.89, (auc, acc)
