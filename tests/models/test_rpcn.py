"""rPCN taggers: exact C_n invariance about the centroid, equivariant feature maps, generic-angle
tolerance, permutation/padding/batch independence, IRC safety, configs and counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jettag import physics
from jettag.data import JetBatch
from jettag.models.deep_sets import EFN
from jettag.models.rpcn import RPCN, IRCSafeRPCN, default_config, rpcn, rpcn_irc
from jettag.testing import (
    assert_batch_independent,
    assert_collinear_safe,
    assert_ir_safe,
    assert_padding_invariant,
    assert_permutation_invariant,
    assert_so2_invariant,
    random_jets,
)

F64 = torch.float64
PIDS = torch.tensor([22.0, 211, -211, 321, 130, 2112, 2212, 11, -13])
SMALL = {"num_rotations": 8, "phi_channels": (16, 16), "conv_channels": (16, 16),
         "f_channels": (16,)}


def _jets(n_jets: int = 6, n_particles: int = 14, *, seed: int = 0,
          pid: bool = False) -> JetBatch:
    batch = random_jets(n_jets, n_particles, generator=seed, massive=True, layout="batch",
                        min_particles=2)
    if not pid:
        return batch
    g = torch.Generator().manual_seed(seed)
    x = PIDS[torch.randint(len(PIDS), (batch.num_particles,), generator=g)].to(F64)
    return JetBatch(batch.p4, batch.ptr, x=x[:, None])


def _rotate(batch: JetBatch, angle: float | torch.Tensor) -> JetBatch:
    """Every jet turned about its pT-weighted centroid in (eta, phi), pT and mass kept."""
    p4 = physics.rotate_about_jet_axis(batch.p4, angle, batch=batch.batch,
                                       num_jets=batch.num_jets, kind="centroid")
    return JetBatch(p4, batch.ptr, x=batch.x)


def _model(cls: type, seed: int = 0, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    return cls(**{**cls.default_config("top"), **config}).double().eval()


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dense(*sizes: int) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


MODELS = [(RPCN, False), (RPCN, True), (IRCSafeRPCN, False)]
IDS = ["rpcn", "rpcn-pid", "rpcn-irc"]


def _build(cls: type, pid: bool, **config) -> torch.nn.Module:
    extra = {"pid": "float"} if pid else {}
    return _model(cls, **extra, **config)


# ----------------------------------------------------------------------------- C_n exactness


@pytest.mark.parametrize(("cls", "pid"), MODELS, ids=IDS)
def test_invariant_under_every_element_of_cn_exactly(cls, pid):
    """Rotations about the centroid by 2 pi k / n, every k, change no logit beyond 1e-10."""
    model = _build(cls, pid)
    n = model.lift.num_rotations
    batch = _jets(6, 20, seed=1, pid=pid)
    with torch.no_grad():
        ref = model(batch)
        worst = max(float((model(_rotate(batch, 2 * math.pi * k / n)) - ref).abs().max())
                    for k in range(1, n))
        # One independent element of C_n per jet.
        steps = torch.tensor([3, 15, 8, 1, 0, 11], dtype=F64)
        worst = max(worst, float((model(_rotate(batch, steps * 2 * math.pi / n)) - ref).abs()
                                 .max()))
    assert worst < 1e-10, worst
    assert float(ref.std(0).max()) > 1e-3  # the logits do depend on the jet


@pytest.mark.parametrize(("cls", "pid"), MODELS, ids=IDS)
def test_feature_maps_shift_cyclically_under_cn_rotations(cls, pid):
    """Rotating jet b by 2 pi m_b / n rolls its lift and every group-convolution map by m_b."""
    model = _build(cls, pid, **SMALL)
    n = model.lift.num_rotations
    batch = _jets(5, 12, seed=2, pid=pid)
    steps = torch.tensor([1, 0, 7, 4, 2])
    with torch.no_grad():
        ref = model.feature_maps(batch)
        got = model.feature_maps(_rotate(batch, steps.to(F64) * (2 * math.pi / n)))
    assert len(ref) == 1 + len(SMALL["conv_channels"])
    for layer, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert a.shape == (batch.num_jets, n, b.shape[2])
        for jet in range(batch.num_jets):
            torch.testing.assert_close(a[jet], b[jet].roll(int(steps[jet]), dims=0), rtol=0,
                                       atol=1e-10, msg=f"feature map {layer}, jet {jet}")
        assert float(b.std(1).max()) > 1e-3  # maps vary over the group: the roll is a test


@pytest.mark.parametrize("cls", [RPCN, IRCSafeRPCN])
def test_generic_angles_tolerance(cls):
    """Only C_n is exact. For random angles the default (C16) logits move by 1-3% of what the
    same network without the group (n = 1) moves, and C32 shrinks that further."""
    batch = _jets(8, 30, seed=11)
    errors = {}
    for n in (1, 16, 32):
        model = _model(cls, seed=0, num_rotations=n, kernel_size=min(3, n))
        report = assert_so2_invariant(model, batch, n_trials=5, rtol=0.0, atol=10.0,
                                      generator=0)
        errors[n] = report.error
    assert errors[1] > 0.05  # without the group, rotations change the logits at O(1)
    assert 1e-6 < errors[16] < 0.05 * errors[1], errors
    assert errors[32] < errors[16], errors
    with pytest.raises(AssertionError, match="SO\\(2\\) invariance"):
        assert_so2_invariant(_model(cls), batch, n_trials=2)


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize(("cls", "pid"), MODELS, ids=IDS)
def test_permutation_padding_batch(cls, pid):
    model = _build(cls, pid, **SMALL)
    batch = _jets(5, 12, seed=3, pid=pid)
    assert_permutation_invariant(model, batch, n_trials=3)
    assert_padding_invariant(model, batch, n_trials=2)
    assert_batch_independent(model, batch, n_trials=2)


# ----------------------------------------------------------------------------- IRC safety


def test_irc_safe_rpcn_is_infrared_and_collinear_safe():
    model = _model(IRCSafeRPCN, seed=1)
    batch = _jets(6, 14, seed=4)
    ir = assert_ir_safe(model, batch, n_trials=4)
    assert ir.n_compared == 4 * 6 * 2
    assert assert_collinear_safe(model, batch, n_trials=4).ratio < 1.0
    pooled = _model(IRCSafeRPCN, seed=1, pool="max", **SMALL)
    assert_ir_safe(pooled, batch, n_trials=2)
    assert_collinear_safe(pooled, batch, n_trials=2)


@pytest.mark.parametrize("pid", [False, True])
def test_rpcn_is_not_infrared_or_collinear_safe(pid):
    model = _build(RPCN, pid)
    batch = _jets(6, 14, seed=6, pid=pid)
    with pytest.raises(AssertionError, match="IR safety violated"):
        assert_ir_safe(model, batch, n_trials=2)
    with pytest.raises(AssertionError, match="Collinear safety violated"):
        assert_collinear_safe(model, batch, n_trials=2)


# ----------------------------------------------------------------------------- configs


def test_default_configs_parameter_counts_and_factories():
    phi, conv, f = (64, 64, 64), (64, 64, 64), (64,)
    trunk = 3 * (64 * 64 * 3 + 64) + _dense(64, *f) + (64 * 2 + 2)
    counts = {
        ("rpcn", "top"): _dense(3, *phi) + trunk,  # (d_eta, d_phi, z)
        ("rpcn", "qg"): _dense(4, *phi) + trunk,  # + PDG id code
        ("rpcn-irc", "top"): _dense(2, *phi) + trunk,
        ("rpcn-irc", "qg"): _dense(2, *phi) + trunk,
    }
    assert counts == {("rpcn", "top"): 49922, ("rpcn", "qg"): 49986,
                      ("rpcn-irc", "top"): 49858, ("rpcn-irc", "qg"): 49858}
    factories = {"rpcn": (rpcn, RPCN), "rpcn-irc": (rpcn_irc, IRCSafeRPCN)}
    efn_count = _count(EFN(**EFN.default_config("top")))
    for (name, task), expected in counts.items():
        factory, cls = factories[name]
        config = default_config(task, name)
        assert config == cls.default_config(task)
        assert conv == config["conv_channels"] and phi == config["phi_channels"]
        model = factory(**config)
        assert type(model) is cls and model.num_classes == 2
        assert _count(model) == expected
        assert 0.8 < expected / efn_count < 1.0  # comparable to the EFN (56,630)
    assert default_config("qg")["pid"] == "float" and default_config("top")["pid"] is None
    assert "pid" not in default_config("qg", "rpcn-irc")
    with pytest.raises(ValueError, match="task: expected one of"):
        default_config("w")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model: expected 'rpcn' or 'rpcn-irc'"):
        default_config("top", "efn")  # type: ignore[arg-type]


def test_empty_jets_float32_and_gradients():
    torch.manual_seed(5)
    model = IRCSafeRPCN(**SMALL)
    jets = _jets(3, 10, seed=7).to(dtype=torch.float32)
    p4 = jets.p4
    batch = JetBatch(p4, torch.tensor([0, 0, int(jets.ptr[1]), int(jets.ptr[1]),
                                       int(jets.ptr[-1])]))
    logits = model(batch)
    assert logits.shape == (4, 2) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())
    torch.testing.assert_close(logits[0], logits[2])  # both empty jets: zero lifted map
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    model64 = IRCSafeRPCN(**SMALL).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    torch.testing.assert_close(model64(batch.to(dtype=F64)), logits.double().detach(),
                               rtol=1e-4, atol=1e-4)


def test_configuration_errors():
    with pytest.raises(ValueError, match="kernel_size: a filter of 5 angular steps"):
        RPCN(num_rotations=4, kernel_size=5)
    with pytest.raises(ValueError, match="pool: expected 'mean' or 'max'"):
        IRCSafeRPCN(pool="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="phi_channels"):
        RPCN(phi_channels=())
    with pytest.raises(ValueError, match="found no x"):
        RPCN(pid="float")(_jets(2, 5))
    model = RPCN(**SMALL)
    assert "RotationalParticleConv(2 + 1 -> C8 x 16, hidden=(16,))" in repr(model)
    assert "CyclicGroupConv(16 -> 16, kernel_size=3)" in repr(model)
