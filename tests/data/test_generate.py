"""The Pythia 8 + FastJet generator: determinism, physics of each recipe, files, resume."""

from __future__ import annotations

import argparse
import json

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jettag.data.generate import RECIPES, generate, generate_jets, get_recipe
from jettag.data.generate._engine import derive_seed, hadron_flavour
from jettag.data.generate.tracks import (
    TrackResolution,
    pca_covariance,
    perigee,
    smear,
)

pytestmark = pytest.mark.generate


def _kin(px, py, pz, e):
    pt = np.hypot(px, py)
    return {
        "pt": pt,
        "eta": np.arcsinh(pz / pt),
        "y": 0.5 * np.log((e + pz) / (e - pz)),
        "phi": np.arctan2(py, px),
        "m2": e**2 - px**2 - py**2 - pz**2,
    }


def _jet_sums(jets):
    """Jet four-momenta recomputed from the stored constituents (numpy, float64)."""
    return [
        ak.to_numpy(ak.sum(jets[f], axis=1)).astype(np.float64)
        for f in ("part_px", "part_py", "part_pz", "part_energy")
    ]


def _wrap(phi):
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _assert_same(a: ak.Array, b: ak.Array) -> None:
    assert a.fields == b.fields
    for f in a.fields:
        assert ak.all(ak.ravel(a[f]) == ak.ravel(b[f])), f


# ---------------------------------------------------------------------------------------
# jets shared by several tests (kept small: the default run must stay fast)


@pytest.fixture(scope="module")
def top_jets():
    return generate_jets("top-tagging", 100, seed=11, chunk_size=50)


@pytest.fixture(scope="module")
def qg_jets():
    return generate_jets("quark-gluon", 40, seed=12, chunk_size=40)


@pytest.fixture(scope="module")
def btag_jets():
    return generate_jets("b-tagging", 60, seed=13, chunk_size=60)


# ---------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_jets_for_any_worker_count():
    kw = dict(seed=3, chunk_size=5)
    one = generate_jets("top-tagging", 10, workers=1, **kw)
    two = generate_jets("top-tagging", 10, workers=2, **kw)
    again = generate_jets("top-tagging", 10, workers=1, **kw)
    _assert_same(one, two)
    _assert_same(one, again)
    other = generate_jets("top-tagging", 10, workers=1, seed=4, chunk_size=5)
    assert not np.array_equal(
        ak.to_numpy(ak.sum(one.part_px, axis=1)), ak.to_numpy(ak.sum(other.part_px, axis=1))
    )


def test_fewer_jets_are_a_prefix_of_more():
    small = generate_jets("top-tagging", 7, seed=5, chunk_size=10)  # top 0..6, qcd 0..6
    large = generate_jets("top-tagging", 10, seed=5, chunk_size=10)  # top 0..9, qcd 0..9
    _assert_same(small[:7], large[:7])
    _assert_same(small[7:], large[10:17])


def test_derived_seeds_are_valid_and_distinct():
    seeds = {derive_seed(0, "top-tagging", cls, k) for cls in ("top", "qcd") for k in range(500)}
    assert len(seeds) == 1000
    assert all(1 <= s <= 900_000_000 for s in seeds)
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(1, "a", 1)


# ---------------------------------------------------------------------------------------
# top tagging


def test_top_jets_cuts_and_labels(top_jets):
    opts = get_recipe("top-tagging").options()
    labels = ak.to_numpy(top_jets.label)
    assert sorted(np.unique(labels, return_counts=True)[1]) == [100, 100]
    px, py, pz, e = _jet_sums(top_jets)
    kin = _kin(px, py, pz, e)
    # No jet reaches 200 constituents, so the stored ones are the whole jet.
    assert ak.max(ak.num(top_jets.part_px)) < opts["max_constituents"]
    assert np.all((kin["pt"] > 550) & (kin["pt"] < 650))
    assert np.all(np.abs(kin["eta"]) < 2)
    cpt = np.hypot(top_jets.part_px, top_jets.part_py)
    assert ak.min(cpt) > opts["min_constituent_pt"]
    assert ak.all(cpt[:, :-1] >= cpt[:, 1:])  # pT-ordered
    # Anti-kT jets are nearly round: constituents lie within about R of the axis.
    ckin = _kin(top_jets.part_px, top_jets.part_py, top_jets.part_pz, top_jets.part_energy)
    dr = np.hypot(ckin["y"] - kin["y"], _wrap(ckin["phi"] - kin["phi"]))
    assert ak.max(dr) < 1.25 * opts["jet_radius"]
    assert ak.mean(dr < opts["jet_radius"]) > 0.99


def test_top_jet_mass_and_truth(top_jets):
    px, py, pz, e = _jet_sums(top_jets)
    mass = np.sqrt(np.clip(_kin(px, py, pz, e)["m2"], 0, None))
    top = ak.to_numpy(top_jets.label) == 1
    assert 160 < np.median(mass[top]) < 185
    assert np.median(mass[~top]) < 100
    truth = ak.to_numpy(top_jets.truth_p4)
    assert np.all(truth[~top] == 0)
    tkin = _kin(truth[top, 1], truth[top, 2], truth[top, 3], truth[top, 0])
    tmass = np.sqrt(tkin["m2"])
    # Breit-Wigner around Pythia's m_t = 173 GeV, width 1.4 GeV (tails down to 86 GeV)
    assert abs(np.median(tmass) - 173) < 1.0
    assert np.mean(np.abs(tmass - 173) < 5) > 0.85
    jkin = _kin(px[top], py[top], pz[top], e[top])
    assert np.all(np.hypot(tkin["eta"] - jkin["eta"], _wrap(tkin["phi"] - jkin["phi"])) < 0.8)


def test_massless_option(top_jets):
    p = np.sqrt(top_jets.part_px**2 + top_jets.part_py**2 + top_jets.part_pz**2)
    assert ak.all(abs(top_jets.part_energy - p) <= 1e-9 * top_jets.part_energy)
    massive = generate_jets(
        "top-tagging", 5, seed=2, chunk_size=5, massless=False, min_constituent_pt=0.0
    )
    m2 = massive.part_energy**2 - massive.part_px**2 - massive.part_py**2 - massive.part_pz**2
    # charged pions and heavier hadrons keep their mass: m^2 well above rounding
    assert ak.mean(m2 > 0.01) > 0.3
    assert ak.min(np.hypot(massive.part_px, massive.part_py)) < 1.0


# ---------------------------------------------------------------------------------------
# quark / gluon


def test_quark_gluon_jets(qg_jets):
    labels = ak.to_numpy(qg_jets.label)
    assert sorted(np.unique(labels, return_counts=True)[1]) == [40, 40]
    kin = _kin(*_jet_sums(qg_jets))
    assert np.all((kin["pt"] > 500) & (kin["pt"] < 550))
    assert np.all(np.abs(kin["y"]) < 2.0)
    allowed = {11, 13, 22, 130, 211, 321, 2112, 2212}
    assert set(np.unique(np.abs(ak.to_numpy(ak.flatten(qg_jets.part_pid))))) <= allowed
    n = ak.to_numpy(ak.num(qg_jets.part_px))
    # gluons radiate more (C_A / C_F = 9/4): clearly more constituents
    assert n[labels == 1].mean() + 5 < n[labels == 0].mean()
    # massive constituents: particle-level four-momenta with PDG masses
    m2 = _kin(qg_jets.part_px, qg_jets.part_py, qg_jets.part_pz, qg_jets.part_energy)["m2"]
    assert ak.max(m2) > 0.8


def test_quark_gluon_rapidity_option():
    jets = generate_jets("quark-gluon", 3, seed=1, chunk_size=3, max_rapidity=1.0)
    assert np.all(np.abs(_kin(*_jet_sums(jets))["y"]) < 1.0)


# ---------------------------------------------------------------------------------------
# b tagging


def test_btag_jets_labels_and_significance(btag_jets):
    labels = ak.to_numpy(btag_jets.label)
    assert sorted(np.unique(labels)) == [0, 1]
    assert np.all(ak.to_numpy(btag_jets.jet_flavour)[labels == 1] == 5)
    kin = _kin(*_jet_sums(btag_jets))
    assert np.all(kin["pt"] > 30) and np.all(np.abs(kin["eta"]) < 2.5)
    track = btag_jets.part_istrack == 1
    assert ak.all(btag_jets.part_charge[track] != 0)
    assert ak.all(btag_jets.part_d0err[~track] == 0)
    sig = abs(btag_jets.part_d0val[track]) / btag_jets.part_d0err[track]
    frac_b = ak.mean(ak.flatten(sig[labels == 1] > 3))
    frac_l = ak.mean(ak.flatten(sig[labels == 0] > 3))
    # prompt tracks: |d0|/sigma > 3 for ~0.3%; b jets carry displaced B-decay tracks
    assert frac_l < 0.03
    assert frac_b > 0.15
    # the truth production vertices of b-jet tracks are displaced
    r = np.hypot(btag_jets.part_vtx_x, btag_jets.part_vtx_y)[track]
    assert ak.mean(ak.flatten(r[labels == 1] > 0.01)) > 0.3
    assert ak.mean(ak.flatten(r[labels == 0] > 0.01)) < 0.05


def test_btag_pca_and_covariance_are_consistent(btag_jets):
    t = ak.to_numpy(ak.flatten(btag_jets.part_istrack)) == 1
    get = {
        f: ak.to_numpy(ak.flatten(btag_jets[f]))[t]
        for f in btag_jets.fields
        if f.startswith("part_")
    }
    d0, phi0 = get["part_d0val"], get["part_phi0"]
    assert np.allclose(get["part_pca_x"], d0 * np.sin(phi0))
    assert np.allclose(get["part_pca_y"], -d0 * np.cos(phi0))
    assert np.allclose(get["part_pca_z"], get["part_dzval"])
    cov = np.zeros((t.sum(), 3, 3))
    for i, a in enumerate("xyz"):
        for j, b in enumerate("xyz"):
            key = f"part_cov_{min(a, b)}{max(a, b)}"
            cov[:, i, j] = get[key]
    assert np.all(np.linalg.eigvalsh(cov) > -1e-15)
    n = np.stack([np.sin(phi0), -np.cos(phi0), np.zeros_like(phi0)], axis=1)
    assert np.allclose(np.einsum("ni,nij,nj->n", n, cov, n), get["part_d0err"] ** 2)
    assert np.allclose(cov[:, 2, 2], get["part_dzerr"] ** 2)


def test_perigee_geometry():
    rng = np.random.default_rng(0)
    n = 1000
    x, y, z = rng.normal(0, 2.0, (3, n))
    px, py, pz = rng.normal(0, 3.0, (3, n))
    q = rng.choice([-1.0, 1.0], n)
    for bfield in (0.0, 2.0):
        p = perigee(x, y, z, px, py, pz, q, bfield=bfield)
        r = np.hypot(p["pca_x"], p["pca_y"])
        assert np.allclose(r, np.abs(p["d0"]))
        # at the PCA the momentum is perpendicular to the radius vector
        assert np.allclose(
            p["pca_x"] * np.cos(p["phi0"]) + p["pca_y"] * np.sin(p["phi0"]), 0, atol=1e-9
        )
        # the PCA is at least as close to the beam as the production point
        assert np.all(r <= np.hypot(x, y) + 1e-12)
    # known straight-line case: produced at (0, d) moving along +x -> d0 = -d, z0 = z
    p = perigee([0.0], [1.5], [3.0], [5.0], [0.0], [5.0], [1.0], bfield=0.0)
    assert np.allclose([p["d0"][0], p["z0"][0], p["phi0"][0]], [-1.5, 3.0, 0.0])
    # prompt tracks have d0 = z0 = 0, and the helix tends to the line at high pT
    zero = perigee(np.zeros(n), np.zeros(n), np.zeros(n), px, py, pz, q, bfield=2.0)
    assert np.allclose(zero["d0"], 0, atol=1e-9) and np.allclose(zero["z0"], 0, atol=1e-9)
    fast = perigee(x, y, z, 1e4 * px, 1e4 * py, 1e4 * pz, q, bfield=2.0)
    line = perigee(x, y, z, px, py, pz, q, bfield=0.0)
    assert np.allclose(fast["d0"], line["d0"], atol=1e-4)
    assert np.allclose(fast["z0"], line["z0"], atol=1e-4)


def test_smearing_pulls_and_resolution_model():
    rng = np.random.default_rng(1)
    n = 20000
    pt = np.full(n, 2.0)
    true = {"d0": np.full(n, 0.1), "z0": np.full(n, -0.3), "phi0": np.full(n, 0.4)}
    res = TrackResolution()
    out = smear(true, pt, np.zeros(n), res, rng)
    assert np.allclose(out["d0err"], np.hypot(0.010, 0.140 / 2.0))
    for key in ("d0", "z0"):
        pull = (out[key] - true[key]) / out[f"{key}err"]
        assert abs(pull.mean()) < 0.05 and abs(pull.std() - 1) < 0.05
    # smearing in one call equals smearing in two consecutive calls
    a = smear(true, pt, np.zeros(n), res, np.random.default_rng(7))
    r2 = np.random.default_rng(7)
    half = {k: v[: n // 2] for k, v in true.items()}
    rest = {k: v[n // 2 :] for k, v in true.items()}
    b1 = smear(half, pt[: n // 2], np.zeros(n // 2), res, r2)
    b2 = smear(rest, pt[n // 2 :], np.zeros(n - n // 2), res, r2)
    assert np.array_equal(a["d0"], np.concatenate([b1["d0"], b2["d0"]]))
    cov = pca_covariance(
        np.array([0.0]), np.array([0.3]), np.array([0.01]), np.array([1e-3]), np.array([0.05])
    )
    assert np.isclose(cov["cov_xx"][0] + cov["cov_yy"][0], 0.01**2)


def test_hadron_flavour():
    ids = np.array([511, -521, 5122, 10513, 421, -4122, 443, 553, 211, 2212, 22, 5, 21, 2103])
    assert hadron_flavour(ids).tolist() == [5, 5, 5, 5, 4, 4, 4, 5, 0, 0, 0, 0, 0, 0]


# ---------------------------------------------------------------------------------------
# options, files, cache, resume, CLI


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown recipe 'tops'"):
        generate_jets("tops", 10)
    with pytest.raises(ValueError, match="no option 'massles'"):
        generate_jets("top-tagging", 10, massles=True)
    with pytest.raises(ValueError, match="n_jets must be a positive integer"):
        generate_jets("top-tagging", 0)
    with pytest.raises(ValueError, match="option 'massless' expects"):
        get_recipe("top-tagging").options({"massless": "yes"})
    assert set(RECIPES) == {"top-tagging", "quark-gluon", "b-tagging"}


def test_generate_file_cache_and_resume(tmp_path):
    pytest.importorskip("tables")
    from jettag.data.formats import TopHDF5Reader

    kw = dict(seed=21, chunk_size=5, progress=False)
    reference = generate("top-tagging", 10, data_dir=tmp_path / "a", **kw)
    assert reference.suffix == ".h5" and reference.parent == tmp_path / "a" / "generated"
    meta = json.loads(reference.with_name(reference.name + ".json").read_text())
    assert meta["n_jets_per_class"] == 10 and meta["options"]["massless"] is True
    assert not (tmp_path / "a" / "generated" / "work").exists()  # chunks removed when done
    mtime = reference.stat().st_mtime_ns
    assert generate("top-tagging", 10, data_dir=tmp_path / "a", **kw) == reference
    assert reference.stat().st_mtime_ns == mtime  # reused, not rewritten

    # interrupt after two of the four units, then resume
    class Interrupt(Exception):
        pass

    done = []

    def hook(unit):
        done.append(unit)
        if len(done) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate("top-tagging", 10, data_dir=tmp_path / "b", _on_unit=hook, **kw)
    out_dir = tmp_path / "b" / "generated"
    assert not list(out_dir.glob("*.h5")) and not list(out_dir.rglob("*.partial"))
    assert len(list(out_dir.rglob("*.npz"))) == 2  # the completed chunks
    done.clear()
    resumed = generate("top-tagging", 10, data_dir=tmp_path / "b", _on_unit=done.append, **kw)
    assert len(done) == 2  # only the missing units ran
    assert not list(out_dir.rglob("*.partial"))
    a = TopHDF5Reader(reference).read(0, 20)
    b = TopHDF5Reader(resumed).read(0, 20)
    _assert_same(a, b)
    # the file holds the jets of generate_jets, shuffled block by block
    mem = generate_jets("top-tagging", 10, seed=21, chunk_size=5, shuffle=True)
    assert np.allclose(
        ak.to_numpy(ak.flatten(a.part_px)), ak.to_numpy(ak.flatten(mem.part_px)).astype(np.float32)
    )
    assert np.array_equal(ak.to_numpy(a.label), ak.to_numpy(mem.label))


def test_cli_generate_quark_gluon(tmp_path, capsys):
    from jettag.cli.generate import register

    parser = argparse.ArgumentParser(prog="jettag")
    register(parser.add_subparsers())
    out = tmp_path / "qg.npz"
    args = parser.parse_args(
        [
            "generate",
            "quark-gluon",
            "-n",
            "3",
            "--seed",
            "3",
            "-q",
            "--chunk-size",
            "3",
            "--data-dir",
            str(tmp_path),
            "-o",
            str(out),
        ]
    )
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with np.load(out) as z:
        x, y = z["X"], z["y"]
    assert x.shape[0] == 6 and x.shape[2] == 4 and sorted(y.tolist()) == [0] * 3 + [1] * 3
    real = x[..., 0] > 0
    assert np.all(np.abs(x[..., 1][real]) < 4) and set(np.abs(x[..., 3][real])) <= {
        11.0,
        13.0,
        22.0,
        130.0,
        211.0,
        321.0,
        2112.0,
        2212.0,
    }
    bad = parser.parse_args(["generate", "quark-gluon", "--massless"])
    with pytest.raises(ValueError, match="--massless applies to the top-tagging recipe"):
        bad.func(bad)


@pytest.mark.slow
def test_btag_root_file_round_trip(tmp_path):
    from jettag.data.formats import JetClassReader

    path = generate(
        "b-tagging",
        30,
        seed=4,
        workers=2,
        chunk_size=15,
        with_charm=True,
        data_dir=tmp_path,
        progress=False,
    )
    jets = JetClassReader(path, label_branches=("label_light", "label_b", "label_c")).read(0, 90)
    assert sorted(np.unique(ak.to_numpy(jets.label), return_counts=True)[1]) == [30, 30, 30]
    for field in (
        "part_d0val",
        "part_d0err",
        "part_dzval",
        "part_dzerr",
        "part_pca_x",
        "part_cov_xx",
        "part_charge",
        "jet_pt",
    ):
        assert field in jets.fields


@pytest.mark.slow
def test_workers_do_not_change_files(tmp_path):
    one = generate(
        "b-tagging", 40, seed=8, workers=1, chunk_size=20, data_dir=tmp_path / "1", progress=False
    )
    two = generate(
        "b-tagging", 40, seed=8, workers=2, chunk_size=20, data_dir=tmp_path / "2", progress=False
    )
    import uproot

    a = uproot.open(one)["tree"].arrays()
    b = uproot.open(two)["tree"].arrays()
    _assert_same(a, b)
