"""JetClass ROOT: reader, writer, published layout (mixed label dtypes), bad input."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from jettag.data.formats import (
    JETCLASS_LABELS,
    JetClassReader,
    JetClassWriter,
    JetFileError,
    MissingKeyError,
    open_dataset,
    write_jetclass_root,
)
from jettag.data.formats._synthetic import random_jets

LABEL_DTYPES = [np.float32] + [np.bool_] * 5 + [np.int32] * 4  # as in the published files
PART_FLOATS = ["part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi",
               "part_d0val", "part_d0err", "part_dzval", "part_dzerr", "part_charge"]  # fmt: skip
PART_INTS = ["part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
             "part_isMuon"]  # fmt: skip
JET_FLOATS = ["jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass",
              "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4"]  # fmt: skip


def jetclass_data(n: int, seed: int = 0) -> dict:
    """Branches in the JetClass layout, built independently of the library."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 20, n)
    total = int(counts.sum())
    data = {}
    for name in PART_FLOATS:
        data[name] = ak.unflatten(rng.normal(0, 10, total).astype(np.float32), counts)
    data["part_energy"] = ak.unflatten(rng.uniform(50, 100, total).astype(np.float32), counts)
    for name in PART_INTS:
        data[name] = ak.unflatten(rng.integers(0, 2, total).astype(np.int32), counts)
    label = rng.integers(0, 10, n)
    for k, (name, dtype) in enumerate(zip(JETCLASS_LABELS, LABEL_DTYPES, strict=True)):
        data[name] = (label == k).astype(dtype)
    for name in JET_FLOATS:
        data[name] = rng.normal(0, 1, n).astype(np.float32)
    data["aux_genpart_pt"] = rng.normal(0, 1, n).astype(np.float32)
    return data, label, counts


def write_independent(path, data, tree="tree", chunks=1):
    """uproot TTree with jagged branches (one counter per branch, like separate vectors)."""
    n = len(data["jet_pt"])
    with uproot.recreate(path) as f:
        types = {
            k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()
        }
        t = f.mktree(tree, types)
        step = -(-n // chunks)
        for a in range(0, n, step):
            t.extend({k: v[a : a + step] for k, v in data.items()})


def test_reads_uproot_written_jetclass_layout(tmp_path):
    data, label, counts = jetclass_data(40)
    path = tmp_path / "HToBB_120.root"
    write_independent(path, data, chunks=3)
    with uproot.open(path) as f:  # the fixture really has the mixed label dtypes
        assert f["tree"]["label_QCD"].typename == "float"
        assert f["tree"]["label_Hbb"].typename == "bool"
        assert f["tree"]["label_Tbl"].typename == "int32_t"
    reader = open_dataset(path)
    assert isinstance(reader, JetClassReader) and len(reader) == 40
    jets = reader.read()
    np.testing.assert_array_equal(ak.to_numpy(jets.label), label)
    for name in (*PART_FLOATS, *PART_INTS, *JET_FLOATS):
        assert ak.array_equal(jets[name], data[name]), name
    assert ak.to_numpy(ak.num(jets.part_px)).tolist() == counts.tolist()
    fields = ak.fields(jets)
    assert fields[:4] == ["part_energy", "part_px", "part_py", "part_pz"]
    assert "aux_genpart_pt" not in fields and not any(f.startswith("label_") for f in fields)
    assert not any(f.startswith("npart") for f in fields)  # counter branches skipped
    assert "aux_genpart_pt" in ak.fields(JetClassReader(path, aux=True).read(0, 2))
    only = JetClassReader(path, branches=["jet_pt"]).read(0, 2)
    assert ak.fields(only) == ["part_energy", "part_px", "part_py", "part_pz", "label", "jet_pt"]


def test_reads_rntuple_with_record_column(tmp_path):
    data, label, _ = jetclass_data(12, seed=1)
    part = ak.zip({k.removeprefix("part_"): data.pop(k) for k in [*PART_FLOATS, *PART_INTS]})
    with uproot.recreate(tmp_path / "rn.root") as f:
        f["tree"] = {"part": part, **data}  # uproot 5.7 writes an RNTuple this way
    jets = JetClassReader(tmp_path / "rn.root").read()
    np.testing.assert_array_equal(ak.to_numpy(jets.label), label)
    assert ak.array_equal(jets.part_isPhoton, part.isPhoton)
    assert ak.array_equal(jets.part_energy, part.energy)


def test_chunked_read_equals_whole_read(tmp_path):
    data, *_ = jetclass_data(57, seed=2)
    write_independent(tmp_path / "a.root", data, chunks=4)
    write_independent(tmp_path / "b.root", jetclass_data(13, seed=3)[0])
    reader = JetClassReader([tmp_path / "a.root", tmp_path / "b.root"])
    whole = reader.read()
    assert len(whole) == 70
    pieces = list(reader.iter_awkward(16))
    assert [len(p) for p in pieces] == [16, 16, 16, 16, 6]
    assert ak.array_equal(ak.concatenate(pieces), whole)
    assert ak.array_equal(reader.read(50, 63), whole[50:63])
    batch = next(reader.iter_batches(8, x_fields=["part_charge", "part_isPhoton"]))
    assert batch.x.shape == (int(batch.counts.sum()), 2) and batch.label.tolist() == (
        whole.label[:8].tolist()
    )


def test_round_trip_and_published_dtypes(tmp_path):
    chunk = random_jets(45, seed=4, num_classes=10)
    jets = chunk.to_awkward()
    path = tmp_path / "rt.root"
    with JetClassWriter(path) as writer:
        for a in range(0, 45, 10):
            writer.write(jets[a : a + 10])
    with uproot.open(path) as f:
        tree = f["tree"]
        assert tree.num_entries == 45
        types = {k: tree[k].typename for k in tree.keys()}
    assert types["part_px"] == "float[]" and types["part_pid"] == "int32_t[]"
    assert types["label_QCD"] == "float" and types["label_Hqql"] == "bool"
    assert types["label_Zqq"] == "int32_t" and types["jet_nparticles"] == "float"
    assert types["truth_p4"] == "float[4]"
    keys = list(types)
    assert keys.index("part_px") < keys.index("part_energy") < keys.index("label_QCD")
    back = JetClassReader(path).read()
    for f in ("part_energy", "part_px", "part_py", "part_pz", "part_pid", "label", "truth_p4"):
        assert ak.array_equal(back[f], jets[f], dtype_exact=False), f
    # derived kinematics, as ParT/JetClass define them
    px, py = ak.sum(jets.part_px, axis=1), ak.sum(jets.part_py, axis=1)
    np.testing.assert_allclose(ak.to_numpy(back.jet_pt), np.hypot(px, py), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(ak.to_numpy(back.jet_nparticles), chunk.counts)


def test_writer_rejects_bad_labels_and_leaves_no_file(tmp_path):
    jets = random_jets(5, seed=0).to_awkward()
    jets = ak.with_field(jets, np.array([0, 1, 10, 2, 3]), "label")
    with pytest.raises(ValueError, match="label 10 out of range"):
        write_jetclass_root(tmp_path / "x.root", jets)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ bad input


def test_wrong_tree_names_file_and_tree(tmp_path):
    data, *_ = jetclass_data(5)
    write_independent(tmp_path / "t.root", data, tree="Events")
    with pytest.raises(MissingKeyError, match=r"t\.root: no tree 'tree'.*\['Events'\]"):
        len(JetClassReader(tmp_path / "t.root"))
    assert len(JetClassReader(tmp_path / "t.root", tree="Events")) == 5


def test_missing_branch_names_file_and_branch(tmp_path):
    data, *_ = jetclass_data(5)
    del data["label_Tbl"]
    write_independent(tmp_path / "m.root", data)
    with pytest.raises(
        MissingKeyError, match=r"m\.root: tree 'tree' lacks branch\(es\) \['label_Tbl'\]"
    ):
        JetClassReader(tmp_path / "m.root").read()
    data2, *_ = jetclass_data(5)
    del data2["part_energy"]
    write_independent(tmp_path / "e.root", data2)
    with pytest.raises(MissingKeyError, match=r"e\.root.*part_energy"):
        JetClassReader(tmp_path / "e.root").read()


def test_label_not_one_hot_names_entry(tmp_path):
    data, *_ = jetclass_data(8)
    data["label_QCD"] = np.ones(8, np.float32)  # now two labels are set everywhere but class 0
    write_independent(tmp_path / "l.root", data)
    with pytest.raises(JetFileError, match=r"l\.root: entry \d+ has label branches .*one-hot"):
        JetClassReader(tmp_path / "l.root").read()


def test_nan_momentum_names_entry(tmp_path):
    data, _, counts = jetclass_data(10, seed=5)
    j = int(np.flatnonzero(counts)[3])
    px = ak.to_numpy(ak.flatten(data["part_px"])).copy()
    px[int(counts[:j].sum())] = np.nan
    data["part_px"] = ak.unflatten(px, counts)
    write_independent(tmp_path / "nan.root", data)
    with pytest.raises(JetFileError, match=rf"nan\.root: entry {j} .*non-finite.*part_px"):
        JetClassReader(tmp_path / "nan.root").read()


def test_truncated_file_names_the_file(tmp_path):
    data, *_ = jetclass_data(300)
    path = tmp_path / "trunc.root"
    write_independent(path, data, chunks=3)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(JetFileError, match=r"trunc\.root"):
        JetClassReader(path).read()
