"""ONNX export: onnxruntime reproduces PyTorch (1e-4) on jets of varied multiplicity and
batch sizes other than the tracing example; metadata; clear errors for models that cannot
be exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from jettag.data import JetBatch
from jettag.hub import OnnxExportError, Tagger, export_onnx, read_onnx_metadata
from jettag.hub.export import PaddedTagger
from jettag.testing import random_jets

ort = pytest.importorskip("onnxruntime")

SMALL = {"phi_channels": [16, 16], "f_channels": [16]}
PIDS = torch.tensor([22.0, 211.0, -211.0, 130.0, 2112.0, 321.0, -11.0, 13.0, 999.0])


def padded_jets(num_jets: int, num_particles: int, seed: int, *, features: bool = False):
    """Padded jets of 1..num_particles particles with gaps in the mask and an empty jet;
    garbage (NaN) under the mask, which must be ignored."""
    jets = random_jets(num_jets, num_particles, generator=seed, min_particles=1,
                       massive=True, dtype=torch.float32)
    p4, mask = jets.p4.clone(), jets.mask.clone()
    mask[0] = False
    # move the real particles of jet 1 to the end of its row (padding first)
    count = int(jets.mask[1].sum())
    p4[1] = torch.roll(p4[1], num_particles - count, dims=0)
    mask[1] = torch.roll(jets.mask[1], num_particles - count)
    p4[~mask] = float("nan")
    x = None
    if features:
        generator = torch.Generator().manual_seed(seed)
        x = PIDS[torch.randint(len(PIDS), mask.shape, generator=generator)].unsqueeze(-1)
    return p4, mask, x


def run_onnx(path: Path, p4, mask, x=None) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"p4": p4.numpy(), "mask": mask.numpy()}
    if x is not None:
        feed["features"] = x.numpy()
    return session.run(["probabilities"], feed)[0]


def assert_parity(tagger: Tagger, path: Path, *, features: bool = False) -> None:
    for num_jets, num_particles, seed in ((1, 4, 1), (5, 17, 2), (12, 9, 3), (19, 30, 4)):
        p4, mask, x = padded_jets(max(num_jets, 2), num_particles, seed, features=features)
        found = run_onnx(path, p4, mask, x)
        expected = tagger.predict(p4, mask=mask, features=x).probabilities
        assert found.shape == expected.shape == (max(num_jets, 2), tagger.num_classes)
        np.testing.assert_array_equal(np.isnan(found).any(1), ~mask.any(1).numpy())
        np.testing.assert_allclose(found, expected, atol=1e-4, rtol=0)
        assert np.isfinite(found[1:]).all()


def test_efn_onnx_matches_pytorch_on_other_batch_sizes_and_multiplicities(tmp_path: Path):
    torch.manual_seed(0)
    tagger = Tagger.from_config("efn", SMALL, class_names=["QCD", "top"], signal="top")
    path = export_onnx(tagger, tmp_path / "efn.onnx")
    assert_parity(tagger, path)
    # the packed PyTorch model on the same jets
    p4, mask, _ = padded_jets(6, 11, 5)
    packed = torch.softmax(tagger(JetBatch.from_padded(p4, mask)), -1).detach().numpy()
    np.testing.assert_allclose(run_onnx(path, p4, mask)[1:], packed[1:], atol=1e-4)


def test_pfn_with_pid_features_and_preprocessing(tmp_path: Path):
    torch.manual_seed(1)
    tagger = Tagger.from_config(
        "pfn",
        {**SMALL, "pid": "onehot", "coords": "etaphi", "axis": "p4"},
        class_names=["gluon", "quark"],
        inputs={"x_fields": ["part_pid"], "massless": True, "max_particles": 7},
    )
    path = export_onnx(tagger, tmp_path / "pfn.onnx")
    assert_parity(tagger, path, features=True)
    wrapper = PaddedTagger(tagger)
    p4, mask, x = padded_jets(8, 15, 9, features=True)
    with torch.no_grad():
        np.testing.assert_allclose(wrapper(p4, mask, x).numpy(),
                                   tagger.predict(p4, mask=mask, features=x).probabilities,
                                   atol=1e-5)


def test_particlenet_lite_onnx_matches_pytorch(tmp_path: Path):
    torch.manual_seed(2)
    tagger = Tagger.from_config("particlenet-lite", {}, class_names=["QCD", "top"])
    for module in tagger.modules():  # trained-looking normalisation statistics
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(tagger, tmp_path / "pnet.onnx", verify=False)
    assert_parity(tagger, path)


@pytest.mark.parametrize(
    ("task", "options", "inputs"),
    [
        ("top", {"readout": "padded_mean"}, {"massless": True}),  # beams, batch-wise divisor
        ("qg", {"readout": "mean"}, {"x_fields": ["part_pid"]}),  # PDG masses and one-hot ids
    ],
)
def test_lorentznet_onnx_matches_pytorch(tmp_path: Path, task, options, inputs):
    from jettag.models.lorentznet import default_config, lorentznet

    torch.manual_seed(3)
    model = lorentznet(**{**default_config(task), "hidden_channels": 8, "num_layers": 2,
                          **options})
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    tagger = Tagger.from_model(model, inputs=inputs)
    path = export_onnx(tagger, tmp_path / "lorentznet.onnx", verify=False)
    features = bool(inputs.get("x_fields"))
    # "padded_mean" divides by the longest jet of the batch: compare whole batches
    for num_jets, num_particles, seed in ((3, 5, 1), (9, 21, 2)):
        p4, mask, x = padded_jets(num_jets, num_particles, seed, features=features)
        expected = tagger.predict(p4, mask=mask, features=x).probabilities
        np.testing.assert_allclose(run_onnx(path, p4, mask, x), expected, atol=1e-4)


def test_metadata_describes_inputs_classes_and_card(tmp_path: Path):
    torch.manual_seed(0)
    card = {
        "name": "qg-pfn-test",
        "title": "test",
        "limitations": "particle-level Pythia jets only",
        "evaluation": {"split": "test", "metrics": [{"name": "auc", "value": 0.8,
                                                     "uncertainty": 0.01}]},
    }
    tagger = Tagger.from_config(
        "pfn", {**SMALL, "pid": "float"}, class_names=["gluon", "quark"], signal="quark",
        inputs={"x_fields": ["part_pid"]}, card=card,
    )
    path = export_onnx(tagger, tmp_path / "m.onnx", verify=False)
    meta = read_onnx_metadata(path)
    assert meta["class_names"] == ["gluon", "quark"] and meta["signal"] == "quark"
    assert meta["inputs"]["p4"]["unit"] == "GeV"
    assert meta["inputs"]["p4"]["shape"] == ["jets", "particles", 4]
    assert meta["inputs"]["mask"]["dtype"] == "bool"
    assert meta["inputs"]["features"]["columns"] == ["part_pid"]
    assert meta["units"] == "GeV" and "(E, px, py, pz)" in meta["input_convention"]
    assert meta["preprocessing"] == {"x_fields": ["part_pid"], "massless": False,
                                     "max_particles": None}
    assert meta["architecture"] == "pfn" and meta["config"]["pid"] == "float"
    assert meta["card"]["limitations"] == "particle-level Pythia jets only"
    assert meta["card"]["evaluation"]["metrics"][0]["value"] == 0.8
    from jettag import __version__

    assert meta["version"] == __version__
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["p4", "mask", "features"]
    assert session.get_inputs()[0].shape == ["jets", "particles", 4]
    assert session.get_outputs()[0].shape == ["jets", 2]


class _Bessel(nn.Module):
    """A model whose padded path uses an operator without an ONNX conversion."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, jets: JetBatch) -> torch.Tensor:
        return self.linear(torch.special.bessel_j0(jets.p4)).sum(0).expand(len(jets), 2)

    def forward_padded(self, p4, mask, x):
        return self.linear(torch.special.bessel_j0(p4)).sum(1)


class _NoPadded(_Bessel):
    forward_padded = None


def test_unexportable_models_give_clear_errors(tmp_path: Path):
    with pytest.raises(OnnxExportError, match=r"operator aten::special_bessel_j0 has no ONNX"):
        export_onnx(Tagger.from_model(_Bessel()), tmp_path / "b.onnx")
    with pytest.raises(OnnxExportError, match=r"_NoPadded has no padded compute path"):
        export_onnx(Tagger.from_model(_NoPadded()), tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir())  # no partial files left


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path):
    torch.manual_seed(0)
    tagger = Tagger.from_config("efn", SMALL)
    target = tmp_path / "t.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(tagger, target)
    assert target.read_bytes() == b"keep me"
    export_onnx(tagger, target, overwrite=True, verify=False)
    assert read_onnx_metadata(target)["architecture"] == "efn"
