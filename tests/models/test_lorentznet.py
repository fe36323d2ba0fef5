"""LorentzNet model: parameter count, inputs (beams, mass and PID scalars, PDG masses), the two
readouts, and the symmetries: Lorentz invariance without beams, invariance under rotations
about the beam axis with beams (and not under boosts, even along the beam axis), permutation,
padding and batch independence."""

from __future__ import annotations

import math

import pytest
import torch

from jettag import physics
from jettag.data import JetBatch
from jettag.models.lorentznet import (
    PID_MASSES,
    LorentzNet,
    LorentzNetInputs,
    default_config,
    lorentznet,
)
from jettag.testing import (
    assert_batch_independent,
    assert_lorentz_invariant,
    assert_padding_invariant,
    assert_permutation_invariant,
    random_jets,
)

F64 = torch.float64
PIDS = torch.tensor([22, 211, -211, 321, 2212, -2112, 130, 11, -13])


def _model(**config) -> LorentzNet:
    """A float64 LorentzNet in eval mode with non-trivial BatchNorm statistics and coordinate
    updates large enough to matter."""
    torch.manual_seed(0)
    model = lorentznet(**{"hidden_channels": 8, "num_layers": 3, "c_weight": 1.0, **config})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.BatchNorm1d):
                bn.running_mean.normal_(0.0, 0.5, generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)
        for block in model.blocks:
            if block.phi_x is not None:
                block.phi_x[-1].weight.mul_(20.0)
    return model.double().eval()


def _jets(n_jets: int = 5, n_particles: int = 12, seed: int = 0, pid: bool = False) -> JetBatch:
    jets = random_jets(n_jets, n_particles, generator=seed, massive=True, min_particles=1,
                       layout="batch")
    if pid:
        ids = PIDS[torch.arange(jets.num_particles) % len(PIDS)].to(F64).unsqueeze(1)
        jets = JetBatch(jets.p4, jets.ptr, x=ids)
    return jets


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


def test_parameter_counts_match_the_published_model() -> None:
    top = lorentznet(**default_config("top"))
    assert sum(p.numel() for p in top.parameters()) == 224_072
    qg = lorentznet(**default_config("qg"))
    assert sum(p.numel() for p in qg.parameters()) == 227_096
    assert top.num_classes == qg.num_classes == 2
    assert LorentzNet.default_config("top") == default_config("top")
    assert [b.update_x for b in top.blocks] == [True] * 5 + [False]
    assert "224,072" in repr(top)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="task: expected one of"):
        default_config("jetclass")
    with pytest.raises(ValueError, match="readout must be 'mean' or 'padded_mean'"):
        LorentzNet(readout="max")
    with pytest.raises(ValueError, match="scalars='pid' gives 8 node scalars, found num_scalars=3"):
        LorentzNet(scalars="pid", num_scalars=3)
    with pytest.raises(ValueError, match="needs num_scalars >= 1"):
        LorentzNet(scalars="x")
    with pytest.raises(ValueError, match="beams=False"):
        LorentzNet(scalars="pid", beams=True)


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


def test_mass_inputs_prepend_beams_with_mass_scalars() -> None:
    p4 = torch.tensor([[5.0, 3, 0, 4], [13, 5, 12, 0], [5, 0, 0, 3]], dtype=F64)
    jets = JetBatch.from_counts(p4, [2, 0, 1])
    scalars, x, ptr = LorentzNetInputs("mass")(jets)
    assert ptr.tolist() == [0, 4, 6, 9]
    beam = torch.tensor([math.sqrt(2), 0, 0, 1], dtype=F64)
    for start in ptr[:-1].tolist():
        torch.testing.assert_close(x[start], beam)
        torch.testing.assert_close(x[start + 1], beam * torch.tensor([1, 1, 1, -1]))
    torch.testing.assert_close(x[[2, 3, 8]], p4)
    log2 = math.log(2)
    expected = torch.tensor([[0, log2], [0, log2], [0, 0], [0, 0], [0, log2], [0, log2],
                             [0, log2], [0, log2], [math.log(5), 0]], dtype=F64)
    torch.testing.assert_close(scalars, expected, rtol=0, atol=1e-12)


def test_pid_inputs_one_hot_and_pdg_masses() -> None:
    pt = torch.tensor([50.0, 20.0, 7.0, 3.0], dtype=F64)
    y = torch.tensor([0.3, -1.0, 0.0, 2.0], dtype=F64)
    phi = torch.tensor([0.1, 3.0, -2.0, 1.0], dtype=F64)
    p4 = physics.from_ptyphim(pt, y, phi, torch.zeros(4, dtype=F64))  # massless as given
    pid = torch.tensor([211.0, -2212.0, 22.0, 3122.0])  # 3122 (Lambda) is not a class
    jets = JetBatch.from_counts(p4, [4], x=pid.to(F64).unsqueeze(1))
    scalars, x, ptr = LorentzNetInputs("pid", pdg_masses=True)(jets)
    assert ptr.tolist() == [0, 4]
    assert scalars.shape == (4, 8)
    assert scalars.argmax(1)[:3].tolist() == [4, 7, 2] and scalars[3].sum() == 0
    torch.testing.assert_close(physics.mass(x), torch.tensor(
        [PID_MASSES[211], PID_MASSES[2212], 0.0, 0.0], dtype=F64), rtol=0, atol=1e-9)
    torch.testing.assert_close(physics.to_ptyphim(x)[:, :3], torch.stack([pt, y, phi], 1))
    # without pdg_masses the momenta are untouched
    _, same, _ = LorentzNetInputs("pid")(jets)
    torch.testing.assert_close(same, p4, rtol=0, atol=0)


def test_pid_inputs_need_the_pdg_id() -> None:
    jets = _jets(2, 4)
    with pytest.raises(ValueError, match=r"PDG id of each particle in JetBatch.x\[:, 0\].*"
                                         r"x_fields=\['part_pid'\]"):
        lorentznet(**default_config("qg"))(jets)


def test_custom_x_scalars_with_beams() -> None:
    jets = random_jets(3, 6, generator=2, n_features=3, layout="batch")
    model = _model(scalars="x", beams=True, num_scalars=3)
    scalars, x, ptr = model.inputs(jets)
    assert scalars.shape == (jets.num_particles + 6, 3) and x.shape == (scalars.shape[0], 4)
    assert (scalars[ptr[:-1]] == 0).all() and model(jets).shape == (3, 2)


# ------------------------------------------------------------------------------------------
# Readout
# ------------------------------------------------------------------------------------------


def test_padded_mean_divides_by_the_padded_length() -> None:
    jets = _jets(4, 10, seed=3)
    model = _model()
    padded = _model(readout="padded_mean")
    fixed = _model(readout="padded_mean", pad_to=30)
    scalars, x, ptr = model.inputs(jets)
    counts = (ptr[1:] - ptr[:-1]).to(F64).unsqueeze(1)
    longest = int(jets.counts.max()) + 2  # beams included, as the released collate pads
    with torch.no_grad():
        torch.testing.assert_close(model(jets), model.forward_tensors(scalars, x, ptr))
        torch.testing.assert_close(
            padded(jets), model.forward_tensors(scalars, x, ptr, divisor=float(longest)))
        torch.testing.assert_close(
            fixed(jets), model.forward_tensors(scalars, x, ptr, divisor=32.0))
        # a jet longer than pad_to keeps its own length: the mean over its nodes
        short = _model(readout="padded_mean", pad_to=2)
        torch.testing.assert_close(short(jets)[counts[:, 0] >= 4], model(jets)[counts[:, 0] >= 4])
        # the two readouts agree for a jet as long as the padding
        full = int(torch.argmax(counts))
        torch.testing.assert_close(padded(jets)[full], model(jets)[full])
        # padded_mean depends on the rest of the batch (why "mean" is the default)
        alone = padded(jets[[0]])
    if int(jets.counts[0]) != int(jets.counts.max()):
        assert (alone - padded(jets)[0]).abs().max() > 1e-6


# ------------------------------------------------------------------------------------------
# Symmetries
# ------------------------------------------------------------------------------------------


def test_without_beams_lorentz_invariant() -> None:
    model = _model(scalars="pid", pdg_masses=False)
    jets = _jets(pid=True)
    report = assert_lorentz_invariant(model, jets, generator=1, max_rapidity=1.5)
    assert report.n_compared == report.n_trials * 2 * len(jets)
    # the coordinates do move (the x update is exercised and stays equivariant)
    scalars, x, ptr = model.inputs(jets)
    with torch.no_grad():
        moved = model.blocks[0](model.embedding(scalars), x, ptr, scalars)[1]
    assert (moved - x).abs().max() > 1e-3


def _about_z(jets: JetBatch, gen: torch.Generator, *, rotate: bool, boost: bool) -> JetBatch:
    """Each jet rotated about z by a random angle and/or boosted along z (rapidity in
    [-1.5, 1.5]), in float64."""
    n = len(jets)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=F64).expand(n, 3)
    lam = torch.eye(4, dtype=F64).expand(n, 4, 4)
    if rotate:
        angle = 2 * math.pi * torch.rand(n, generator=gen, dtype=F64)
        lam = physics.lorentz_from_rotation(physics.rotation_matrix(z, angle)) @ lam
    if boost:
        rapidity = 3.0 * torch.rand(n, generator=gen, dtype=F64) - 1.5
        lam = physics.boost_matrix_rapidity(rapidity, z) @ lam
    moved = torch.einsum("pij,pj->pi", lam[jets.batch], jets.p4)
    return JetBatch(moved, jets.ptr, x=jets.x)


def test_with_beams_invariant_under_rotations_about_z_only() -> None:
    """The beams (sqrt 2, 0, 0, +-1) are fixed only by rotations about z: their sum is at
    rest, so any boost, even along z, moves them relative to the jet and changes the output."""
    model = _model()
    jets = _jets()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        ref = model(jets)
        for _ in range(4):
            out = model(_about_z(jets, gen, rotate=True, boost=False))
            torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-7)
        boosted = model(_about_z(jets, gen, rotate=True, boost=True))
    assert (boosted - ref).abs().max() > 1e-4
    # negative control: generic Lorentz transformations move the jets relative to the beams
    with pytest.raises(AssertionError, match="Lorentz invariance"):
        assert_lorentz_invariant(model, jets, generator=2)


def test_permutation_padding_and_batch_independence() -> None:
    qg = _model(**{**default_config("qg"), "c_weight": 1.0})
    for model, pid in ((_model(), False), (qg, True)):
        jets = _jets(4, 8, pid=pid)
        assert_permutation_invariant(model, jets, generator=3, n_trials=2)
        assert_padding_invariant(model, jets, generator=3, n_trials=2)
        assert_batch_independent(model, jets, generator=3, n_trials=2, max_single=2)


def test_padded_mean_is_batch_independent_only_with_fixed_pad_to() -> None:
    jets = _jets(4, 8)
    fixed = _model(readout="padded_mean", pad_to=6)  # some jets are longer than 6
    assert_padding_invariant(fixed, jets, generator=3, n_trials=2)
    assert_batch_independent(fixed, jets, generator=3, n_trials=2, max_single=2)
    with pytest.raises(AssertionError):
        assert_padding_invariant(_model(readout="padded_mean"), jets, generator=3)


def test_float32_training_step() -> None:
    model = lorentznet(hidden_channels=8, num_layers=2)
    jets = _jets(6, 8).to(dtype=torch.float32)
    loss = torch.nn.functional.cross_entropy(model.train()(jets), torch.tensor([0, 1] * 3))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
