"""weaver-core ParticleNet: same weights, same jets, same outputs; the published Particle
Transformer repository checkpoints; importer round trips and error messages.

weaver-core is a test-only dependency (``pip install weaver-core``); the comparisons skip
without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jettag.data import JetBatch
from jettag.data.features import Preprocessor
from jettag.hub.weaver import load_weaver_particlenet, to_weaver_state_dict
from jettag.models.particlenet import (
    LITE_BLOCKS,
    LITE_FC,
    PARTICLENET_BLOCKS,
    PARTICLENET_FC,
    particlenet,
    particlenet_lite,
)
from jettag.testing import random_jets

ARCHITECTURES = {
    "full": (PARTICLENET_BLOCKS, PARTICLENET_FC),
    "lite": (LITE_BLOCKS, LITE_FC),
}
# Particle Transformer repository checkpoints: input features and the stored variables of
# JetClass they need beyond the momenta (fed through JetBatch.x).
PID_NAMES = (
    "part_charge",
    "part_isChargedHadron",
    "part_isNeutralHadron",
    "part_isPhoton",
    "part_isElectron",
    "part_isMuon",
)
CHECKPOINTS = {
    "kin": (7, ()),
    "kinpid": (13, PID_NAMES),
    "full": (17, (*PID_NAMES, "part_d0val", "part_d0err", "part_dzval", "part_dzerr")),
}


@pytest.fixture(scope="module")
def weaver_particlenet():
    module = pytest.importorskip("weaver.nn.model.ParticleNet")
    return module.ParticleNet


def _randomize_batchnorm(module: nn.Module, seed: int) -> None:
    """Non-trivial affine parameters and running statistics in every BatchNorm."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.weight.uniform_(0.5, 1.5, generator=gen)
                bn.bias.normal_(0.0, 0.3, generator=gen)
                bn.running_mean.normal_(0.0, 0.5, generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)


def _weaver_inputs(pre: Preprocessor, jets: JetBatch, x_names=None, length=None):
    """Channels-first padded (points, features, mask) as weaver-core takes them."""
    groups, mask = pre.padded(jets, x_names=x_names, length=length, channels_first=True)
    return groups["points"], groups["features"], mask[:, None].to(groups["features"].dtype)


def _jets(n_jets: int, seed: int, *, n_max: int = 60, dtype=torch.float32) -> JetBatch:
    # At least 17 particles: weaver-core takes padded slots as neighbours in shorter jets.
    return random_jets(n_jets, n_max, generator=seed, min_particles=17, layout="batch", dtype=dtype)


@pytest.mark.parametrize("fusion", [False, True], ids=["", "fusion"])
@pytest.mark.parametrize("arch", ["full", "lite"])
def test_same_outputs_as_weaver_with_random_weights(weaver_particlenet, arch, fusion):
    torch.manual_seed(0)
    blocks, fc = ARCHITECTURES[arch]
    reference = weaver_particlenet(7, 5, conv_params=blocks, fc_params=fc, use_fusion=fusion)
    _randomize_batchnorm(reference, 1)
    reference.eval()
    model = load_weaver_particlenet(reference.state_dict(), inputs="top-tagging:kin").model
    assert model.block_params == tuple(blocks) and model.use_fusion == fusion
    jets = _jets(6, seed=2)
    with torch.no_grad():
        expected = reference(*_weaver_inputs(model.inputs.preprocessor, jets))
        got = model(jets)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_same_outputs_as_weaver_in_float64(weaver_particlenet):
    torch.manual_seed(3)
    reference = weaver_particlenet(
        7, 3, conv_params=PARTICLENET_BLOCKS, fc_params=PARTICLENET_FC, use_fusion=True
    )
    _randomize_batchnorm(reference, 3)
    reference = reference.double().eval()
    model = load_weaver_particlenet(reference.state_dict(), inputs="top-tagging:kin").model.double()
    jets = _jets(4, seed=4, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(*_weaver_inputs(model.inputs.preprocessor, jets))
        got = model(jets)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_training_mode_matches_weaver_without_padding(weaver_particlenet):
    # With every jet of the same length there is no padding, so weaver's BatchNorm statistics
    # over (B, C, N, k) are exactly jettag's over the P * k real edges: same outputs, same
    # running statistics after the step.
    torch.manual_seed(5)
    blocks, _ = ARCHITECTURES["lite"]
    reference = (
        weaver_particlenet(7, 2, conv_params=blocks, fc_params=[(128, 0.0)], use_fusion=True)
        .double()
        .train()
    )
    model = (
        load_weaver_particlenet(reference.state_dict(), inputs="top-tagging:kin", dropout=0.0)
        .model.double()
        .train()
    )
    jets = random_jets(5, 20, generator=6, min_particles=20, layout="batch")
    expected = reference(*_weaver_inputs(model.inputs.preprocessor, jets, length=20))
    got = model(jets)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    updated = to_weaver_state_dict(model)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(
            updated[key].reshape(value.shape), value, rtol=1e-9, atol=1e-9, msg=key
        )


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_particle_transformer_checkpoints(weaver_particlenet, reference_dir, name):
    path = reference_dir / f"particle_transformer_ParticleNet_{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    input_dims, x_names = CHECKPOINTS[name]
    tagger = load_weaver_particlenet(path, inputs=f"jetclass:{name}", x_names=x_names or None)
    model = tagger.model
    assert tagger.class_names[0] == "QCD" and len(tagger.class_names) == 10
    assert tagger.inputs.x_fields == tuple(x_names)
    assert (model.input_dims, model.num_classes, model.use_fusion) == (input_dims, 10, False)
    assert model.block_params == PARTICLENET_BLOCKS

    reference = weaver_particlenet(
        input_dims, 10, conv_params=PARTICLENET_BLOCKS, fc_params=PARTICLENET_FC, use_fusion=False
    )
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference.load_state_dict({key.removeprefix("mod."): value for key, value in state.items()})
    reference.eval()

    jets = random_jets(4, 128, generator=7, min_particles=17, layout="batch", dtype=torch.float32)
    if x_names:
        jets = JetBatch(jets.p4, jets.ptr, x=_stored_jetclass_variables(jets, len(x_names)))
    # The checkpoints take 128 slots, wrap-padded (weaver's layout); jettag takes packed jets.
    # float32 logits reach ~50 here, so they agree to float32 rounding (rtol 1e-5); float64
    # shows that the two compute the same function.
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        model, reference, jets = model.to(dtype), reference.to(dtype), jets.to(dtype=dtype)
        with torch.no_grad():
            inputs = _weaver_inputs(model.inputs.preprocessor, jets, x_names or None)
            expected = reference(*inputs)
            got = model(jets)
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def _stored_jetclass_variables(jets: JetBatch, n_columns: int) -> torch.Tensor:
    """Plausible JetClass charge, particle-ID flags and impact parameters per particle."""
    gen = torch.Generator().manual_seed(8)
    num = jets.num_particles
    kind = torch.randint(0, 5, (num,), generator=gen)  # ch. hadron, n. hadron, photon, e, mu
    flags = torch.nn.functional.one_hot(kind, 5).float()
    sign = torch.where(torch.rand(num, generator=gen) < 0.5, -1.0, 1.0)
    charge = torch.where((kind == 0) | (kind >= 3), sign, torch.zeros(num))
    columns = [charge[:, None], flags]
    if n_columns > 6:
        d0, dz = (0.1 * torch.randn(num, 2, generator=gen)).unbind(1)
        err = 0.05 * torch.rand(num, 2, generator=gen)
        columns.append(torch.stack([d0, err[:, 0], dz, err[:, 1]], dim=1))
    return torch.cat(columns, dim=1)


def test_round_trip_through_weaver_layout():
    model = particlenet_lite(use_fusion=True, num_classes=4)
    state = to_weaver_state_dict(model, prefix="mod.")
    assert state["mod.edge_convs.0.convs.0.weight"].shape == (32, 14, 1, 1)
    assert state["mod.edge_convs.1.sc.weight"].shape == (64, 32, 1)
    assert state["mod.fusion_block.0.weight"].shape == (128, 96, 1)
    assert state["mod.fc.0.0.weight"].shape == (128, 128)
    assert state["mod.fc.1.weight"].shape == (4, 128)
    loaded = load_weaver_particlenet(state).model
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # DistributedDataParallel's prefix on top of the wrapper's is stripped too.
    ddp = load_weaver_particlenet({f"module.{key}": value for key, value in state.items()}).model
    assert ddp.block_params == LITE_BLOCKS


def test_loads_a_file_with_weights_only(tmp_path):
    model = particlenet(num_classes=3)
    path = tmp_path / "particlenet.pt"
    torch.save(to_weaver_state_dict(model, prefix="mod."), path)
    loaded = load_weaver_particlenet(path, dropout=0.2).model
    assert loaded.fc_params == ((256, 0.2),) and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_number_of_neighbours_for_other_layouts():
    model = particlenet(blocks=[(5, (16, 16)), (3, (24, 24))], fc=[(32, 0.1)])
    state = to_weaver_state_dict(model)
    with pytest.raises(ValueError, match="pass k="):
        load_weaver_particlenet(state)
    assert load_weaver_particlenet(state, k=[5, 3]).model.block_params == model.block_params
    assert load_weaver_particlenet(state, k=4).model.block_params == ((4, (16, 16)), (4, (24, 24)))
    with pytest.raises(ValueError, match="k: expected one int or 2 values"):
        load_weaver_particlenet(state, k=[5, 3, 2])


def test_returns_a_tagger_that_saves_and_reloads(tmp_path):
    """The importer's Tagger: dataset class names, the x fields as input preprocessing,
    predict equal to the model's softmax, and a save/load round trip with equal outputs."""
    from jettag.hub import Tagger

    source = particlenet_lite(inputs="quark-gluon:kinpid", x_names=("pid",), num_classes=2)
    _randomize_batchnorm(source, 4)
    tagger = load_weaver_particlenet(
        to_weaver_state_dict(source), inputs="quark-gluon:kinpid", x_names=("pid",)
    )
    assert isinstance(tagger, Tagger) and not tagger.training
    assert tagger.class_names == ("gluon", "quark") and tagger.signal_name == "quark"
    assert tagger.inputs.x_fields == ("part_pid",)
    jets = random_jets(5, 30, generator=9, min_particles=8, layout="batch", dtype=torch.float32)
    pid = torch.tensor([211.0, -211.0, 22.0, 2112.0, 11.0]).repeat(jets.num_particles)
    jets = JetBatch(jets.p4, jets.ptr, x=pid[: jets.num_particles, None])
    with torch.no_grad():
        expected = source.eval()(jets).softmax(-1)[:, 1].numpy()
    torch.testing.assert_close(
        torch.from_numpy(tagger.predict(jets, device="cpu").score), torch.from_numpy(expected),
        rtol=1e-5, atol=1e-6,
    )
    tagger.save(tmp_path / "imported.safetensors")
    again = Tagger.load(tmp_path / "imported.safetensors")
    torch.testing.assert_close(
        torch.from_numpy(again.predict(jets, device="cpu").score), torch.from_numpy(expected),
        rtol=1e-5, atol=1e-6,
    )
    # a callable input pipeline cannot be rebuilt from a file: no architecture to save
    callable_inputs = load_weaver_particlenet(
        to_weaver_state_dict(source), inputs=source.inputs, x_fields=["part_pid"]
    )
    assert callable_inputs.architecture is None
    with pytest.raises(ValueError, match="has no architecture"):
        callable_inputs.save(tmp_path / "callable.safetensors")


def test_errors_name_keys_and_shapes(tmp_path):
    state = to_weaver_state_dict(particlenet_lite())
    with pytest.raises(ValueError, match=r"ParticleNet weights: \['extra.weight'\]"):
        load_weaver_particlenet({**state, "extra.weight": torch.zeros(3)})
    wrong = {**state, "edge_convs.1.bns.0.bias": torch.zeros(65)}
    with pytest.raises(ValueError, match=r"edge_convs.1.bns.0.bias \(65,\)"):
        load_weaver_particlenet(wrong)
    missing = {k: v for k, v in state.items() if k != "edge_convs.0.sc_bn.running_var"}
    with pytest.raises(ValueError, match=r"missing weights.*blocks.0.shortcut_norm.running_var"):
        load_weaver_particlenet(missing)
    with pytest.raises(ValueError, match="ParticleNetTagger"):
        load_weaver_particlenet({f"pn.{k}": v for k, v in state.items()})
    segmentation = {**state, "fc.0.0.weight": state["fc.0.0.weight"][..., None]}
    with pytest.raises(ValueError, match="segmentation"):
        load_weaver_particlenet(segmentation)
    with pytest.raises(FileNotFoundError, match=r"no-such\.pt"):
        load_weaver_particlenet(tmp_path / "no-such.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt: expected a PyTorch state dict"):
        load_weaver_particlenet(garbage)
    not_a_state = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state)
    with pytest.raises(ValueError, match=r"list.pt: expected a state dict \(str -> Tensor\)"):
        load_weaver_particlenet(not_a_state)
