"""ParticleNet / ParticleNet-Lite: published parameter counts, inputs from a JetBatch,
symmetries (permutation, padding, batch independence), training, configuration errors.

Numerical agreement with weaver-core's ParticleNet is in tests/hub/test_weaver.py."""

from __future__ import annotations

import doctest

import pytest
import torch

import jettag.hub.weaver
import jettag.models.particlenet
import jettag.nn.edge_conv
from jettag.data import JetBatch
from jettag.models.particlenet import (
    ParticleNet,
    ParticleNetInputs,
    default_config,
    particlenet,
    particlenet_lite,
)
from jettag.testing import (
    assert_batch_independent,
    assert_padding_invariant,
    assert_permutation_invariant,
    random_jets,
)


def _num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_published_parameter_counts():
    # arXiv:1902.08570: 366k and 26k parameters (7 input features, 2 classes, no fusion).
    assert _num_parameters(particlenet(input_dims=7, num_classes=2)) == 366_160
    assert _num_parameters(particlenet_lite(input_dims=7, num_classes=2)) == 26_416
    assert _num_parameters(particlenet()) == 366_160  # top-tagging inputs by default


def test_fusion_width_follows_weaver():
    # clip(floor(C / 128) * 128, 128, 1024) channels for the C concatenated block outputs.
    full = particlenet(use_fusion=True)
    lite = particlenet_lite(use_fusion=True)
    assert full.fusion[0].weight.shape == (384, 64 + 128 + 256)
    assert lite.fusion[0].weight.shape == (128, 32 + 64)
    assert full.head[0].in_features == 384


def test_repr_says_the_map():
    assert repr(particlenet()) == (
        "ParticleNet(7 -> 2, blocks=[(k=16, [64, 64, 64]), (k=16, [128, 128, 128]), "
        "(k=16, [256, 256, 256])], fc=[256], fusion=False, fts_bn=True, params=366,160)"
    )
    assert repr(ParticleNetInputs("quark-gluon:kinpid", x_names=["pid"])) == (
        "ParticleNetInputs('quark-gluon:kinpid', features=13, x_names=['pid'])"
    )


def test_default_config_per_task():
    top = particlenet_lite(**default_config("top"))
    qg = particlenet_lite(**ParticleNet.default_config("qg"))
    assert (top.input_dims, top.num_classes) == (7, 2)
    assert (qg.input_dims, qg.num_classes) == (13, 2)
    with pytest.raises(ValueError, match="task"):
        default_config("higgs")


def test_forward_on_jetbatch_equals_forward_tensors():
    jets = random_jets(5, 30, generator=0, layout="batch", dtype=torch.float32)
    model = particlenet_lite().eval()
    points, features = model.inputs(jets)
    assert points.shape == (jets.num_particles, 2) and features.shape == (jets.num_particles, 7)
    expected = model.forward_tensors(points, features, jets.ptr)
    torch.testing.assert_close(model(jets), expected, rtol=0, atol=0)


def test_qg_inputs_read_the_pdg_id_from_x():
    jets = random_jets(4, 25, generator=1, layout="batch", dtype=torch.float32)
    pid = torch.tensor([211, -211, 22, 130, 11, 2112, 321, -13])
    pid = pid[torch.arange(jets.num_particles) % 8].to(torch.float32)
    jets = JetBatch(jets.p4, jets.ptr, x=pid[:, None])
    model = particlenet_lite(**default_config("qg")).eval()
    _, features = model.inputs(jets)
    # Columns 5..10: charge, charged hadron, neutral hadron, photon, electron, muon.
    assert features[0, 5:11].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert features[2, 5:11].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    out = model(jets)
    assert out.shape == (4, 2) and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="x_names"):
        model(random_jets(2, 5, generator=2, layout="batch", dtype=torch.float32))


@pytest.mark.parametrize(
    "factory", [particlenet_lite, pytest.param(particlenet, marks=pytest.mark.slow)]
)
def test_permutation_and_padding_invariance_and_batch_independence(factory):
    jets = random_jets(4, 24, generator=3, min_particles=2, layout="batch")
    model = factory().eval()
    assert_permutation_invariant(model, jets, generator=4, n_trials=2)
    assert_padding_invariant(model, jets, generator=5, n_trials=2)
    assert_batch_independent(model, jets, generator=6, n_trials=2)


def test_training_mode_is_not_batch_independent():
    # Negative control for the eval-mode checks: BatchNorm batch statistics mix the jets.
    jets = random_jets(4, 20, generator=7, min_particles=10, layout="batch")
    model = particlenet_lite(fc=[(128, 0.0)]).train()
    with pytest.raises(AssertionError, match="atch"):
        assert_batch_independent(model, jets, generator=8, n_trials=1)


def test_empty_and_single_particle_jets():
    jets = random_jets(5, 12, generator=9, min_particles=0, layout="batch", dtype=torch.float32)
    p4 = jets.p4[: int(jets.ptr[3])]
    batch = JetBatch.from_counts(p4, [*jets.counts[:3].tolist(), 0])
    single = JetBatch.from_counts(jets.p4[:1], [1])
    model = particlenet_lite().eval()
    out = model(batch)
    assert out.shape == (4, 2) and bool(torch.isfinite(out).all())
    # An empty jet pools to zeros: its logits are the head's response to a zero vector.
    torch.testing.assert_close(out[3], model.head(torch.zeros(1, 64))[0])
    assert bool(torch.isfinite(model(single)).all())


def test_training_step_updates_every_parameter():
    torch.manual_seed(10)
    jets = random_jets(6, 20, generator=10, min_particles=8, layout="batch", dtype=torch.float32)
    model = particlenet_lite(use_fusion=True).train()
    loss = torch.nn.functional.cross_entropy(model(jets), torch.tensor([0, 1, 0, 1, 1, 0]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
        assert float(param.grad.abs().sum()) > 0, name
    assert int(model.blocks[1].norms[2].num_batches_tracked) == 1


def test_float64():
    jets = random_jets(3, 18, generator=11, layout="batch")
    model = particlenet_lite().double().eval()
    out64 = model(jets)
    out32 = model.float()(jets.to(dtype=torch.float32))
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)


def test_configuration_errors():
    with pytest.raises(ValueError, match="input_dims=13 but inputs"):
        ParticleNet(13, inputs="top-tagging:kin")
    with pytest.raises(ValueError, match="give input_dims"):
        ParticleNet()
    with pytest.raises(ValueError, match="x_names goes with"):
        ParticleNet(7, x_names=["pid"])
    with pytest.raises(ValueError, match="blocks"):
        ParticleNet(7, blocks=[])
    with pytest.raises(KeyError, match="no feature set 'nope'"):
        ParticleNet(inputs="top-tagging:nope")
    model = ParticleNet(7)
    jets = random_jets(2, 5, generator=12, layout="batch", dtype=torch.float32)
    with pytest.raises(ValueError, match="forward_tensors"):
        model(jets)
    with pytest.raises(ValueError, match=r"features must be \(P, 7\)"):
        model.forward_tensors(torch.randn(4, 2), torch.randn(4, 6), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="points must be"):
        model.forward_tensors(torch.randn(3, 2), torch.randn(4, 7), torch.tensor([0, 4]))


@pytest.mark.parametrize(
    "module", [jettag.nn.edge_conv, jettag.models.particlenet, jettag.hub.weaver]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
