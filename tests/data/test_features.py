"""Model inputs against closed forms on hand-made jets, and the card-declared preprocessing."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from jettag import physics
from jettag.data import JetBatch
from jettag.data.cards import CARD_DIR
from jettag.data.features import (
    KINEMATIC_FEATURES,
    LORENTZNET_PIDS,
    PID_FEATURES,
    Preprocessor,
    add_beams,
    kinematic_features,
    lorentznet_inputs,
    particle_features,
    pdg_charge,
    pid_features,
    pid_one_hot,
)
from jettag.nn.lorentz import psi

F64 = torch.float64


def _massless(pt: float, eta: float, phi: float) -> list[float]:
    """(E, px, py, pz) of a massless particle, written out (independent of jettag.physics)."""
    return [pt * math.cosh(eta), pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)]


def _jets(*jets: list[list[float]], dtype: torch.dtype = F64) -> JetBatch:
    rows = [p for jet in jets for p in jet]
    p4 = torch.tensor(rows, dtype=dtype).reshape(-1, 4)
    return JetBatch.from_counts(p4, [len(j) for j in jets])


def _random_jets(counts: list[int], seed: int = 0, dtype: torch.dtype = F64) -> JetBatch:
    g = torch.Generator().manual_seed(seed)
    n = sum(counts)
    pt = 1.0 + 100.0 * torch.rand(n, generator=g, dtype=F64)
    eta = 0.4 * torch.randn(n, generator=g, dtype=F64) - 1.2
    phi = physics.wrap_phi(2.9 + 0.4 * torch.randn(n, generator=g, dtype=F64))
    m = 0.2 * torch.rand(n, generator=g, dtype=F64)
    return JetBatch.from_counts(physics.from_ptetaphim(pt, eta, phi, m).to(dtype), counts)


# --------------------------------------------------------------------------------------
# Kinematic variables
# --------------------------------------------------------------------------------------


def test_two_particle_jet_matches_closed_forms() -> None:
    a, b = (30.0, 0.5, 0.1), (10.0, 0.3, -0.2)
    jets = _jets([_massless(*a), _massless(*b)])
    out = kinematic_features(jets)
    assert out.shape == (2, len(KINEMATIC_FEATURES)) and out.dtype == F64

    e_a, e_b = a[0] * math.cosh(a[1]), b[0] * math.cosh(b[1])
    px = a[0] * math.cos(a[2]) + b[0] * math.cos(b[2])
    py = a[0] * math.sin(a[2]) + b[0] * math.sin(b[2])
    pz = a[0] * math.sinh(a[1]) + b[0] * math.sinh(b[1])
    jet_pt, jet_e = math.hypot(px, py), e_a + e_b
    jet_eta, jet_phi = math.asinh(pz / jet_pt), math.atan2(py, px)
    assert jet_eta > 0  # no sign flip for this jet
    for row, (pt, eta, phi), e in ((0, a, e_a), (1, b, e_b)):
        deta, dphi = eta - jet_eta, phi - jet_phi
        expected = [
            math.log(pt),
            math.log(e),
            math.log(pt / jet_pt),
            math.log(e / jet_e),
            math.hypot(deta, dphi),
            deta,
            dphi,
        ]
        torch.testing.assert_close(out[row], torch.tensor(expected, dtype=F64), rtol=0, atol=1e-12)


def test_deta_flips_sign_with_the_jet_eta() -> None:
    forward = [_massless(20.0, 1.3, 0.0), _massless(10.0, 1.1, 0.05)]
    backward = [[e, x, y, -z] for e, x, y, z in forward]
    jets = _jets(forward, backward)
    names = ["part_deta", "part_etarel", "part_dphi"]
    out = particle_features(jets, names)
    # Mirroring z flips eta and eta_jet, so eta - eta_jet flips and the sign-flipped one stays.
    torch.testing.assert_close(out[2:, 0], out[:2, 0])
    torch.testing.assert_close(out[2:, 1], -out[:2, 1])
    torch.testing.assert_close(out[2:, 2], out[:2, 2])
    assert (out[:, 0] * out[:, 1] != 0).all()
    # A jet exactly at eta = 0 counts as positive (np.sign 0 -> +1 in the reference).
    central = _jets([_massless(10.0, 0.2, 0.0), _massless(10.0, -0.2, 0.0)])
    deta, etarel = particle_features(central, ["part_deta", "part_etarel"]).unbind(1)
    torch.testing.assert_close(deta, etarel)
    torch.testing.assert_close(deta, torch.tensor([0.2, -0.2], dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("phi0", [math.pi - 1e-3, -math.pi + 1e-3, math.pi / 2])
def test_delta_phi_is_wrapped_across_pi(phi0: float) -> None:
    # Two equal-pT particles at phi0 +- 0.1, on both sides of the phi = +-pi seam for the
    # first two cases; the jet axis is at phi0 exactly, so d-phi is -+0.1.
    jets = _jets([_massless(25.0, 0.7, phi0 - 0.1), _massless(25.0, 0.7, phi0 + 0.1)])
    for axis in ("p4", "centroid"):
        deta, dphi, dr = particle_features(
            jets, ["part_deta", "part_dphi", "part_deltaR"], jet_axis=axis
        ).unbind(1)
        torch.testing.assert_close(dphi, torch.tensor([-0.1, 0.1], dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(dr, torch.hypot(deta, dphi))
        assert (dr < 0.2).all()


def test_centroid_axis_of_a_symmetric_pair() -> None:
    jets = _jets([_massless(15.0, 0.9, 0.4), _massless(15.0, 1.5, 0.4)])
    deta, dphi = particle_features(jets, ["part_deta", "part_dphi"], jet_axis="centroid").unbind(1)
    torch.testing.assert_close(deta, torch.tensor([-0.3, 0.3], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(dphi, torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="jet_axis"):
        particle_features(jets, ["part_deta"], jet_axis="centre")  # type: ignore[arg-type]


def test_empty_jets_give_no_rows_and_no_nan() -> None:
    full = _random_jets([3, 4], seed=1)
    p4 = full.p4
    jets = JetBatch.from_counts(p4, [0, 3, 0, 0, 4, 0])
    names = [*KINEMATIC_FEATURES, "part_mask", "part_px", "part_eta"]
    out = particle_features(jets, names)
    assert out.shape == (7, len(names))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, particle_features(full, names))
    empty = JetBatch.from_counts(p4[:0], [0, 0])
    assert particle_features(empty, names).shape == (0, len(names))
    pre = Preprocessor.from_card("top-tagging")
    padded, mask = pre.padded(jets)
    assert not mask[[0, 2, 3, 5]].any()
    for values in padded.values():
        assert torch.isfinite(values).all()
        assert (values[[0, 2, 3, 5]] == 0).all()
    packed_empty = pre(empty)
    assert all(v.shape[0] == 0 for v in packed_empty.values())


def test_features_do_not_depend_on_the_other_jets() -> None:
    jets = _random_jets([5, 1, 7, 2], seed=2)
    together = kinematic_features(jets)
    alone = torch.cat([kinematic_features(jets[i]) for i in range(len(jets))])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)
    swapped = kinematic_features(jets[[2, 0, 3, 1]])
    order = torch.cat([torch.arange(int(jets.ptr[i]), int(jets.ptr[i + 1])) for i in (2, 0, 3, 1)])
    torch.testing.assert_close(swapped, together[order], rtol=0, atol=0)


def test_float32_and_float64_agree() -> None:
    jets = _random_jets([6, 9], seed=3)
    f64 = kinematic_features(jets)
    f32 = kinematic_features(jets.to(dtype=torch.float32))
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-4)


def test_unknown_variable_and_bad_inputs_are_reported() -> None:
    jets = _random_jets([2], seed=4)
    with pytest.raises(KeyError, match="part_nonsense"):
        particle_features(jets, ["part_nonsense"])
    with pytest.raises(KeyError, match="pid"):
        particle_features(jets, ["part_charge"])
    with pytest.raises(KeyError, match="part_d0val"):
        particle_features(jets, ["part_d0"])
    with pytest.raises(ValueError, match=r"inputs\['pid'\].*\(2,\)"):
        particle_features(jets, ["part_charge"], inputs={"pid": torch.tensor([211])})
    with pytest.raises(ValueError, match="x_names"):
        particle_features(jets, ["part_charge"], x_names=["pid"])


# --------------------------------------------------------------------------------------
# Particle identification
# --------------------------------------------------------------------------------------


def test_pdg_charge_of_common_particles() -> None:
    table = {
        211: 1,
        -211: -1,
        321: 1,
        -321: -1,
        2212: 1,
        -2212: -1,
        2112: 0,
        130: 0,
        310: 0,
        11: -1,
        -11: 1,
        13: -1,
        -13: 1,
        22: 0,
        12: 0,
        3112: -1,
        3222: 1,
        3122: 0,
        3312: -1,
        3334: -1,
        411: 1,
        421: 0,
        431: 1,
        511: 0,
        521: 1,
        -521: -1,
        4122: 1,
    }
    ids = torch.tensor(list(table))
    torch.testing.assert_close(
        pdg_charge(ids), torch.tensor(list(table.values()), dtype=torch.get_default_dtype())
    )
    # ids stored as floats (the quark/gluon files) are read the same way
    torch.testing.assert_close(pdg_charge(ids.double()), pdg_charge(ids))


def test_pid_flags_match_the_reference_definitions() -> None:
    # utils/convert_qg_datasets.py: charged hadron = +-211, +-321, +-2212; neutral hadron =
    # 130, +-2112; photon 22; electron +-11; muon +-13; charge +1 for 211/321/2212/-11/-13.
    ids = [22, 11, -11, 13, -13, 211, -211, 321, -321, 130, 2112, -2112, 2212, -2212]
    pid = torch.tensor(ids, dtype=torch.float64)
    out = pid_features(pid, dtype=F64)
    expected = []
    for i in ids:
        charge = (i in (211, 321, 2212, -11, -13)) - (i in (-211, -321, -2212, 11, 13))
        expected.append(
            [
                charge,
                abs(i) in (211, 321, 2212),
                i in (130, 2112, -2112),
                i == 22,
                abs(i) == 11,
                abs(i) == 13,
            ]
        )
    torch.testing.assert_close(out, torch.tensor(expected, dtype=F64))
    jets = _jets([_massless(10.0, 0.1 * k, 0.0) for k in range(len(ids))])
    named = particle_features(jets, PID_FEATURES, inputs={"pid": pid})
    torch.testing.assert_close(named, out)
    weighted = particle_features(jets, ["part_isCHad", "part_isNHad"], inputs={"pid": pid})
    chad = [
        1.0 if abs(i) == 211 else 0.5 if abs(i) == 321 else 0.2 if abs(i) == 2212 else 0.0
        for i in ids
    ]
    nhad = [1.0 if i == 130 else 0.2 if abs(i) == 2112 else 0.0 for i in ids]
    torch.testing.assert_close(weighted, torch.tensor([chad, nhad], dtype=F64).T)


def test_pid_from_a_column_of_x() -> None:
    jets = _random_jets([2, 1], seed=5)
    pid = torch.tensor([211.0, 22.0, -13.0], dtype=F64)
    with_x = JetBatch(jets.p4, jets.ptr, x=torch.stack([pid, torch.ones(3, dtype=F64)], 1))
    a = particle_features(with_x, PID_FEATURES, x_names=["pid", "other"])
    b = particle_features(jets, PID_FEATURES, inputs={"pid": pid})
    torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------
# Preprocessing declared in the cards
# --------------------------------------------------------------------------------------


def _yaml_feature_set(card: str, feature_set: str) -> dict:
    # Read the card text directly, so the check does not go through the code under test.
    data = yaml.safe_load((CARD_DIR / f"{card}.yaml").read_text())
    return data["features"]["sets"][feature_set]


def test_top_kin_preprocessing_is_the_reference_formula() -> None:
    jets = _random_jets([4, 130, 0, 9], seed=6, dtype=torch.float32)
    # A very soft particle drives log pT far below the clip.
    p4 = jets.p4.clone()
    p4[0] = torch.tensor(_massless(1e-4, 0.1, 0.2))
    jets = JetBatch(p4, jets.ptr)
    pre = Preprocessor.from_card("top-tagging")
    packed = pre(jets)
    spec = _yaml_feature_set("top-tagging", "kin")
    # The published numbers of top_kin.yaml, restated here to catch an edited card.
    published = {
        "part_pt_log": (1.7, 0.7),
        "part_e_log": (2.0, 0.7),
        "part_logptrel": (-4.7, 0.7),
        "part_logerel": (-4.7, 0.7),
        "part_deltaR": (0.2, 4.0),
    }
    for group_name, group in spec["groups"].items():
        assert group["length"] == 128
        assert group["pad_mode"] == ("constant" if group_name == "mask" else "wrap")
        names = [v["name"] for v in group["vars"]]
        assert pre.names(group_name) == names
        raw = particle_features(jets, names)
        for i, var in enumerate(group["vars"]):
            got = packed[group_name][:, i]
            if var.get("centre") is None:
                assert var["name"] not in published
                torch.testing.assert_close(got, raw[:, i], rtol=0, atol=0)
            else:
                assert (var["centre"], var["scale"]) == published[var["name"]]
                assert var["clip"] == [-5, 5]
                expected = ((raw[:, i] - var["centre"]) * var["scale"]).clamp(-5, 5)
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert packed["features"][0, 0] == -5.0  # clipped
    assert packed["vectors"][:, :3].abs().max() > 5.0  # untransformed momenta are not clipped
    assert [v["name"] for v in spec["groups"]["features"]["vars"]] == list(KINEMATIC_FEATURES)


def test_jetclass_full_transforms_and_clips_the_impact_parameters() -> None:
    jets = _random_jets([3], seed=7)
    inputs = {
        "part_charge": torch.tensor([1.0, 0.0, -1.0], dtype=F64),
        "part_isChargedHadron": torch.tensor([1.0, 0.0, 1.0], dtype=F64),
        "part_isNeutralHadron": torch.tensor([0.0, 1.0, 0.0], dtype=F64),
        "part_isPhoton": torch.zeros(3, dtype=F64),
        "part_isElectron": torch.zeros(3, dtype=F64),
        "part_isMuon": torch.zeros(3, dtype=F64),
        "part_d0val": torch.tensor([0.05, 0.0, -3.0], dtype=F64),
        "part_d0err": torch.tensor([0.01, 0.0, 4.0], dtype=F64),
        "part_dzval": torch.tensor([-0.2, 0.0, 0.7], dtype=F64),
        "part_dzerr": torch.tensor([-0.5, 0.0, 0.3], dtype=F64),
    }
    pre = Preprocessor.from_card("jetclass", "full")
    features = pre(jets, inputs=inputs)["features"]
    names = pre.names("features")
    col = {n: features[:, i] for i, n in enumerate(names)}
    torch.testing.assert_close(col["part_d0"], torch.tanh(inputs["part_d0val"]))
    torch.testing.assert_close(col["part_dz"], torch.tanh(inputs["part_dzval"]))
    torch.testing.assert_close(col["part_d0err"], torch.tensor([0.01, 0.0, 1.0], dtype=F64))
    torch.testing.assert_close(col["part_dzerr"], torch.tensor([0.0, 0.0, 0.3], dtype=F64))
    torch.testing.assert_close(col["part_charge"], inputs["part_charge"])
    # A stored branch passed as an input replaces the computed variable.
    stored = torch.tensor([0.5, -0.5, 0.25], dtype=F64)
    points = pre(jets, inputs={**inputs, "part_deta": stored})["points"]
    torch.testing.assert_close(points[:, 0], stored)


def test_packed_and_padded_agree() -> None:
    jets = _random_jets([5, 0, 12, 1, 3], seed=8)
    pid = torch.tensor(
        [
            211,
            -211,
            22,
            130,
            2112,
            11,
            -13,
            321,
            -321,
            2212,
            22,
            22,
            211,
            22,
            130,
            211,
            -211,
            22,
            2112,
            13,
            11,
        ],
        dtype=torch.int64,
    )
    pre = Preprocessor.from_card("quark-gluon", "kinpid")
    packed = pre(jets, inputs={"pid": pid})
    padded, mask = pre.padded(jets, inputs={"pid": pid})
    assert mask.shape == (5, 128)
    torch.testing.assert_close(mask.sum(1), jets.counts)
    for name, values in padded.items():
        assert values.shape == (5, 128, packed[name].shape[1])
        torch.testing.assert_close(values[mask], packed[name], rtol=0, atol=0)
    # Wrap padding repeats the jet's own particles; the mask group is padded with zeros.
    third = padded["features"][2]
    torch.testing.assert_close(third[12:24], third[:12], rtol=0, atol=0)
    torch.testing.assert_close(padded["features"][3], packed["features"][17].expand(128, -1))
    torch.testing.assert_close(padded["mask"][..., 0], mask.to(F64))
    assert (padded["features"][1] == 0).all()
    # Channels-first layout (weaver's) is the transpose.
    cf, _ = pre.padded(jets, inputs={"pid": pid}, channels_first=True)
    torch.testing.assert_close(cf["points"], padded["points"].transpose(1, 2))
    # Truncation keeps each jet's first particles.
    short, short_mask = pre.padded(jets, inputs={"pid": pid}, length=4)
    assert short["features"].shape == (5, 4, 13)
    torch.testing.assert_close(short["features"][2], packed["features"][5:9])
    torch.testing.assert_close(short_mask.sum(1), jets.counts.clamp(max=4))


def test_constant_padding_uses_the_declared_pad_value() -> None:
    spec = {
        "jet_axis": "p4",
        "groups": {
            "features": {
                "length": 6,
                "pad_mode": "constant",
                "vars": [
                    {
                        "name": "part_pt_log",
                        "centre": 1.0,
                        "scale": 2.0,
                        "clip": None,
                        "pad_value": -9.0,
                    },
                    {"name": "part_mask"},
                ],
            }
        },
    }
    pre = Preprocessor(spec, name="custom")
    jets = _random_jets([2, 0], seed=9)
    padded, mask = pre.padded(jets)
    out = padded["features"]
    raw = particle_features(jets, ["part_pt_log"])[:, 0]
    torch.testing.assert_close(out[0, :2, 0], (raw - 1.0) * 2.0)
    assert (out[0, 2:, 0] == -9.0).all() and (out[1, :, 0] == -9.0).all()
    assert (out[..., 1] == mask.to(F64)).all()
    with pytest.raises(ValueError, match="pad_mode"):
        Preprocessor({"groups": {"g": {"length": 2, "pad_mode": "edge", "vars": []}}})


@pytest.mark.parametrize(
    ("card", "feature_set"),
    [
        ("top-tagging", "kin"),
        ("quark-gluon", "kin"),
        ("quark-gluon", "kinpid"),
        ("quark-gluon", "kinpidplus"),
        ("jetclass", "kin"),
        ("generated-top-tagging", "kin"),
        ("generated-quark-gluon", "kinpid"),
    ],
)
def test_every_card_feature_set_evaluates(card: str, feature_set: str) -> None:
    jets = _random_jets([7, 2], seed=10)
    pid = torch.tensor([211, 22, 22, -211, 130, 2112, 11, 321, 22])
    pre = Preprocessor.from_card(card, feature_set)
    packed = pre(jets, inputs={"pid": pid})
    for name, values in packed.items():
        assert values.shape == (9, len(pre.names(name)))
        assert torch.isfinite(values).all()


# --------------------------------------------------------------------------------------
# LorentzNet
# --------------------------------------------------------------------------------------


def _lorentznet_reference(p4_padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LorentzNet-release top/collate.py, restated for padded (B, N, 4): beams, then scalars."""
    b = p4_padded.shape[0]
    beams = torch.tensor(
        [[math.sqrt(2.0), 0, 0, 1], [math.sqrt(2.0), 0, 0, -1]], dtype=p4_padded.dtype
    ).expand(b, 2, 4)
    pmu = torch.cat([beams, p4_padded], dim=1)
    labels = torch.cat([torch.ones(b, 2), -torch.ones(b, p4_padded.shape[1])], dim=1)
    one_hot = torch.stack([labels == -1, labels == 1], dim=-1).to(pmu.dtype)  # sorted (-1, 1)
    mass = (2 * pmu[..., 0] ** 2 - (pmu**2).sum(-1)).abs().sqrt().unsqueeze(-1)
    return pmu, psi(one_hot * mass)


def test_lorentznet_top_inputs_match_the_reference_collate() -> None:
    jets = _random_jets([3, 0, 5], seed=11)
    out = lorentznet_inputs(jets)
    torch.testing.assert_close(out.counts, jets.counts + 2)
    pmu, nodes = _lorentznet_reference(jets.to_padded()[0])
    mask = torch.cat([torch.ones(3, 2, dtype=torch.bool), jets.to_padded()[2]], dim=1)
    torch.testing.assert_close(out.p4, pmu[mask], rtol=0, atol=0)
    # The reference's E^2 - p^2 cancels at high momentum; jettag's (E - p)(E + p) does not.
    torch.testing.assert_close(out.x, nodes[mask], rtol=1e-7, atol=1e-9)
    # beams: (sqrt 2, 0, 0, +-1) first in each jet, scalars (0, log 2)
    first = out.ptr[:-1]
    torch.testing.assert_close(out.x[first], torch.tensor([[0.0, math.log(2.0)]] * 3, dtype=F64))
    particles = out.x[
        torch.ones(out.num_particles, dtype=torch.bool).index_fill(
            0, torch.cat([first, first + 1]), False
        )
    ]
    m = physics.mass(jets.p4)
    torch.testing.assert_close(particles[:, 0], torch.log1p(m))
    assert (particles[:, 1] == 0).all()


def test_add_beams_keeps_x_labels_and_fields() -> None:
    jets = _random_jets([2, 0], seed=12)
    jets = JetBatch(
        jets.p4,
        jets.ptr,
        x=torch.ones(2, 3, dtype=F64),
        label=torch.tensor([1, 0]),
        fields={"truth_p4": torch.zeros(2, 4, dtype=F64)},
    )
    out, is_beam = add_beams(jets)
    assert out.num_particles == 6 and is_beam.tolist() == [True, True, False, False, True, True]
    assert (out.x[is_beam] == 0).all() and (out.x[~is_beam] == 1).all()
    torch.testing.assert_close(out.p4[~is_beam], jets.p4)
    assert out.label.tolist() == [1, 0] and "truth_p4" in out.fields
    torch.testing.assert_close(physics.mass(out.p4[is_beam]), torch.ones(4, dtype=F64))


def test_lorentznet_quark_gluon_one_hot() -> None:
    jets = _random_jets([3, 2], seed=13)
    pid = torch.tensor([211.0, -2212.0, 22.0, -11.0, 130.0], dtype=F64)
    out = lorentznet_inputs(jets, scalars="pid", pid=pid)
    assert out.num_particles == 5 and out.x.shape == (5, 8)
    columns = out.x.argmax(1).tolist()
    assert [LORENTZNET_PIDS[c] for c in columns] == [211, 2212, 22, 11, 130]
    assert (out.x.sum(1) == 1).all()
    with pytest.raises(ValueError, match=r"\[3122\]"):
        pid_one_hot(torch.tensor([211, 3122]))
    zero = pid_one_hot(torch.tensor([211, 3122]), unknown="zero")
    assert zero[1].sum() == 0 and zero[0, LORENTZNET_PIDS.index(211)] == 1
    with pytest.raises(ValueError, match="beams"):
        lorentznet_inputs(jets, scalars="pid", pid=pid, beams=True)
    with pytest.raises(ValueError, match="pid="):
        lorentznet_inputs(jets, scalars="pid")
