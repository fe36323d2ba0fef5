"""PFN and EFN taggers: inputs as energyflow prepares them, IRC safety, symmetries, counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jettag import physics
from jettag.data import JetBatch
from jettag.models.deep_sets import (
    EFN,
    PFN,
    PID2FLOAT,
    EnergyFlowInputs,
    ParticleFlowInputs,
    default_config,
    efn,
    pfn,
)
from jettag.testing import (
    assert_batch_independent,
    assert_collinear_safe,
    assert_ir_safe,
    assert_padding_invariant,
    assert_permutation_invariant,
    random_jets,
)

F64 = torch.float64
PIDS = torch.tensor([22.0, 211, -211, 321, -321, 130, 2112, -2112, 2212, -2212, 11, -11, 13, -13])


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dense(*sizes: int) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _jets(n_jets: int = 6, n_particles: int = 14, *, seed: int = 0, pid: bool = False,
          massive: bool = True) -> JetBatch:
    batch = random_jets(n_jets, n_particles, generator=seed, massive=massive, layout="batch",
                        min_particles=2)
    if not pid:
        return batch
    g = torch.Generator().manual_seed(seed)
    x = PIDS[torch.randint(len(PIDS), (batch.num_particles,), generator=g)].to(F64)
    return JetBatch(batch.p4, batch.ptr, x=x[:, None])


def _models() -> list[tuple[str, torch.nn.Module, bool]]:
    torch.manual_seed(0)
    small = {"phi_channels": (32, 32, 16), "f_channels": (32, 16)}
    return [
        ("efn-centroid-y", EFN(**small).double().eval(), False),
        ("efn-p4-eta", EFN(**small, axis="p4", coords="etaphi").double().eval(), False),
        ("pfn-pid-float", PFN(**small, pid="float").double().eval(), True),
        ("pfn-pid-onehot", PFN(**small, pid="onehot", axis="p4").double().eval(), True),
    ]


# ----------------------------------------------------------------------------- inputs


def test_inputs_match_energyflow_preprocessing():
    """z = pT / sum pT and (y, phi) minus their pT-weighted average, as efn_example.py does."""
    batch = _jets(5, 12, seed=1)
    z, angles = EnergyFlowInputs()(batch)
    ptyphim = physics.to_ptyphim(batch.p4)
    for j in range(batch.num_jets):
        lo, hi = int(batch.ptr[j]), int(batch.ptr[j + 1])
        pt, y, phi = ptyphim[lo:hi, 0], ptyphim[lo:hi, 1], ptyphim[lo:hi, 2]
        # energyflow averages phi as stored; unwrap around the leading particle first, which
        # is what energyflow's stored jets (phi near the jet, not split at +-pi) amount to.
        lead = phi[pt.argmax()]
        phi = lead + physics.delta_phi(phi, lead)
        y_avg = (pt * y).sum() / pt.sum()
        phi_avg = (pt * phi).sum() / pt.sum()
        torch.testing.assert_close(z[lo:hi], pt / pt.sum(), rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(angles[lo:hi, 0], y - y_avg, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(angles[lo:hi, 1], phi - phi_avg, rtol=1e-12, atol=1e-12)
        # Centred on the pT-weighted centroid: the z-weighted mean angles vanish.
        torch.testing.assert_close((z[lo:hi, None] * angles[lo:hi]).sum(0),
                                   torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)


def test_inputs_p4_axis_and_pseudorapidity():
    batch = _jets(4, 10, seed=2)
    _, angles_y = EnergyFlowInputs(axis="p4")(batch)
    _, angles_eta = EnergyFlowInputs(axis="p4", coords="etaphi")(batch)
    jet = physics.jet_p4(batch.p4, batch=batch.batch)[batch.batch]
    y = physics.rapidity(batch.p4) - physics.rapidity(jet)
    eta = physics.eta(batch.p4) - physics.eta(jet)
    dphi = physics.delta_phi(physics.phi(batch.p4), physics.phi(jet))
    torch.testing.assert_close(angles_y, torch.stack([y, dphi], 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(angles_eta, torch.stack([eta, dphi], 1), rtol=1e-12, atol=1e-12)
    # Massive constituents: rapidity and pseudorapidity differ, massless ones agree.
    assert not torch.allclose(angles_y[:, 0], angles_eta[:, 0])
    massless = _jets(4, 10, seed=2, massive=False)
    a, b = EnergyFlowInputs()(massless)[1], EnergyFlowInputs(coords="etaphi")(massless)[1]
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_inputs_jet_across_phi_boundary_and_empty_jets():
    pt = torch.tensor([100.0, 50.0, 10.0], dtype=F64)
    phi = torch.tensor([math.pi - 0.05, -math.pi + 0.05, math.pi - 0.15], dtype=F64)
    p4 = physics.from_ptyphim(pt, torch.zeros(3, dtype=F64), phi, torch.zeros(3, dtype=F64))
    batch = JetBatch.from_counts(p4, [0, 3, 0])
    z, angles = EnergyFlowInputs()(batch)
    centre = (100 * (math.pi - 0.05) + 50 * (math.pi + 0.05) + 10 * (math.pi - 0.15)) / 160
    expected = torch.tensor([math.pi - 0.05, math.pi + 0.05, math.pi - 0.15], dtype=F64) - centre
    torch.testing.assert_close(angles[:, 1], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z.sum(), torch.tensor(1.0, dtype=F64))
    logits = EFN().double()(batch)
    assert logits.shape == (3, 2) and bool(torch.isfinite(logits).all())
    # Both empty jets give the same logits: F applied to a zero latent vector.
    torch.testing.assert_close(logits[0], logits[2])


def test_pid_encodings():
    x = torch.tensor([[5.0, 211.0], [0.0, -2212.0], [1.0, 22.0], [2.0, 3122.0]])
    p4 = torch.tensor([[10.0, 6.0, 0.0, 8.0], [5.0, 3.0, 0.1, 4.0], [7.0, 0.0, 5.0, 4.0],
                       [3.0, 0.0, 2.0, 2.0]])
    batch = JetBatch.from_counts(p4, [2, 2], x=x)
    as_float = ParticleFlowInputs(pid="float", pid_column=1)(batch)
    assert as_float.shape == (4, 4)
    torch.testing.assert_close(as_float[:, 3], torch.tensor([0.1, 0.9, 0.0, 0.0]))
    onehot = ParticleFlowInputs(pid="onehot", pid_column=1)
    assert onehot.out_channels == 18 == 3 + len(PID2FLOAT) + 1
    code = onehot(batch)[:, 3:]
    torch.testing.assert_close(code.sum(1), torch.ones(4))
    keys = list(PID2FLOAT)
    assert code[:, :-1].argmax(1).tolist()[:3] == [keys.index(211), keys.index(-2212),
                                                   keys.index(22)]
    assert code[:, -1].tolist() == [0.0, 0.0, 0.0, 1.0]  # 3122 (Lambda) is "other"
    kinematics = ParticleFlowInputs()(batch)
    torch.testing.assert_close(as_float[:, :3], kinematics)
    with pytest.raises(ValueError, match=r"column 2 of JetBatch\.x, found x with 2 column"):
        ParticleFlowInputs(pid="float", pid_column=2)(batch)
    with pytest.raises(ValueError, match="found no x"):
        PFN(pid="float")(JetBatch.from_counts(p4, [4]))


# ----------------------------------------------------------------------------- symmetries


@pytest.mark.parametrize(("name", "model", "pid"), _models(), ids=[m[0] for m in _models()])
def test_permutation_padding_batch(name, model, pid):
    batch = _jets(5, 12, seed=3, pid=pid)
    assert_permutation_invariant(model, batch, n_trials=3)
    assert_padding_invariant(model, batch, n_trials=2)
    assert_batch_independent(model, batch, n_trials=2)


@pytest.mark.parametrize(("axis", "coords"), [("centroid", "yphi"), ("p4", "etaphi")])
def test_efn_is_infrared_and_collinear_safe(axis, coords):
    torch.manual_seed(1)
    model = EFN(phi_channels=(32, 32, 16), f_channels=(32, 16), axis=axis, coords=coords)
    model.eval()
    batch = _jets(6, 14, seed=4)
    ir = assert_ir_safe(model, batch, n_trials=4)
    assert ir.n_compared == 4 * 6 * 2  # 4 trials x 6 jets x 2 logits
    col = assert_collinear_safe(model, batch, n_trials=4)
    assert col.ratio < 1.0


def test_efn_soft_sensitivity_vanishes_linearly():
    """Soft emissions move the EFN by O(soft scale): the change shrinks 100x per 100x."""
    torch.manual_seed(4)
    model = EFN(phi_channels=(32, 32, 16), f_channels=(32, 16)).eval()
    batch = _jets(6, 14, seed=9)
    errors = [
        assert_ir_safe(model, batch, soft_scale=scale, zero_momentum=False, n_trials=2,
                       rtol=0.0, atol=1e-2, generator=7).error
        for scale in (1e-4, 1e-6)
    ]
    assert 1e-8 < errors[1] < errors[0] < 1e-2
    assert 30 < errors[0] / errors[1] < 300


def test_efn_default_config_is_irc_safe_in_float64():
    model = EFN(**EFN.default_config("qg")).eval()
    batch = _jets(4, 20, seed=5)
    assert_ir_safe(model, batch, n_trials=2)
    assert_collinear_safe(model, batch, n_trials=2)


@pytest.mark.parametrize("pid", [None, "float"])
def test_pfn_is_not_infrared_or_collinear_safe(pid):
    torch.manual_seed(2)
    model = PFN(phi_channels=(32, 32, 16), f_channels=(32, 16), pid=pid).eval()
    batch = _jets(6, 14, seed=6, pid=pid is not None)
    with pytest.raises(AssertionError, match="IR safety violated"):
        assert_ir_safe(model, batch, n_trials=2)
    with pytest.raises(AssertionError, match="Collinear safety violated"):
        assert_collinear_safe(model, batch, n_trials=2)


# ----------------------------------------------------------------------------- configs


def test_default_parameter_counts():
    phi, f = (100, 100, 128), (100, 100, 100)
    head = 100 * 2 + 2
    for task in ("top", "qg"):
        efn_model = efn(**EFN.default_config(task))
        assert _count(efn_model) == _dense(2, *phi) + _dense(128, *f) + head == 56630
    pfn_top = pfn(**PFN.default_config("top"))
    assert _count(pfn_top) == _dense(3, *phi) + _dense(128, *f) + head == 56730
    pfn_qg = pfn(**PFN.default_config("qg"))
    assert _count(pfn_qg) == _dense(4, *phi) + _dense(128, *f) + head == 56830
    # The paper's latent dimension 256 (commented values in the energyflow examples).
    assert _count(EFN(phi_channels=(100, 100, 256))) == 56630 + (100 * 128 + 128) + 128 * 100
    assert pfn_qg.num_classes == efn_model.num_classes == 2


def test_configs_and_factories():
    assert PFN.default_config("qg")["pid"] == "float"
    assert PFN.default_config("top")["pid"] is None
    assert default_config("top", "efn") == EFN.default_config("top")
    assert default_config("qg") == PFN.default_config("qg")
    with pytest.raises(ValueError, match="task: expected one of"):
        PFN.default_config("jetclass")
    with pytest.raises(ValueError, match="model"):
        default_config("top", "lorentznet")
    with pytest.raises(ValueError, match="num_classes"):
        EFN(num_classes=0)
    with pytest.raises(ValueError, match="axis"):
        EFN(axis="beam")
    with pytest.raises(ValueError, match="coords"):
        PFN(coords="xy")
    with pytest.raises(ValueError, match="pid"):
        PFN(pid="full")
    model = pfn(num_classes=5, phi_channels=(8,), f_channels=()).double()
    assert model(_jets(3, 6, seed=7)).shape == (3, 5)


def test_head_matches_encoder_and_float32():
    torch.manual_seed(3)
    model = EFN(phi_channels=(16, 8), f_channels=(12,)).eval()
    batch = _jets(3, 8, seed=8).to(dtype=torch.float32)
    z, angles = model.inputs(batch)
    latent = model.encoder.latent(z, angles, batch.ptr)
    logits = model(batch)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, model.head(model.encoder.f(latent)))
