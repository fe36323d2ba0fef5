"""Parquet (particle_transformer conversions): reader, writer, layout, bad input."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet")

from jettag.data.formats import (  # noqa: E402
    JetFileError,
    MissingKeyError,
    ParquetReader,
    ParquetWriter,
    open_dataset,
    write_parquet,
)
from jettag.data.formats._synthetic import random_jets  # noqa: E402


def part_style(n: int, seed: int = 0) -> ak.Array:
    """Fields and order of ParT's convert_qg_datasets.py output, built independently."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 15, n)
    total = int(counts.sum())

    def jag(values):
        return ak.unflatten(values, counts)

    pid = rng.choice([22.0, 211.0, -211.0, 130.0], total).astype(np.float32)
    v = {
        "label": rng.integers(0, 2, n).astype(np.float64),  # y of the npz files
        "jet_pt": rng.uniform(500, 550, n).astype(np.float32),
        "jet_eta": rng.normal(0, 1, n).astype(np.float32),
        "jet_phi": rng.uniform(-3, 3, n).astype(np.float32),
        "jet_energy": rng.uniform(500, 900, n).astype(np.float32),
        "jet_mass": rng.uniform(0, 100, n).astype(np.float32),
        "jet_nparticles": counts,
        "part_px": jag(rng.normal(0, 10, total).astype(np.float32)),
        "part_py": jag(rng.normal(0, 10, total).astype(np.float32)),
        "part_pz": jag(rng.normal(0, 10, total).astype(np.float32)),
        "part_energy": jag(rng.uniform(20, 40, total).astype(np.float32)),
        "part_deta": jag(rng.normal(0, 0.2, total).astype(np.float32)),
        "part_dphi": jag(rng.normal(0, 0.2, total).astype(np.float32)),
        "part_pid": jag(pid),
        "part_isChargedHadron": jag((np.abs(pid) == 211).astype(np.float32)),
        "part_charge": jag(np.sign(pid) * (np.abs(pid) == 211).astype(np.float32)),
    }
    return ak.Array(v)


def test_reads_ak_to_parquet_files(tmp_path):
    arr = part_style(30)
    path = tmp_path / "train_file_0.parquet"
    ak.to_parquet(arr, path, compression="LZ4", compression_level=4)  # as ParT does
    reader = open_dataset(path)
    assert isinstance(reader, ParquetReader) and len(reader) == 30
    jets = reader.read()
    assert ak.fields(jets)[:4] == ["part_energy", "part_px", "part_py", "part_pz"]
    for f in ak.fields(arr):
        if f != "label":
            assert ak.array_equal(jets[f], arr[f]), f
    assert jets.label.type.content.primitive == "int64"
    np.testing.assert_array_equal(ak.to_numpy(jets.label), ak.to_numpy(arr.label).astype(int))


def test_row_groups_and_chunks(tmp_path):
    arr = part_style(70, seed=1)
    path = tmp_path / "rg.parquet"
    ak.to_parquet_row_groups((arr[a : a + 20] for a in range(0, 70, 20)), path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    reader = ParquetReader(path)
    whole = reader.read()
    assert ak.array_equal(whole.part_px, arr.part_px)
    assert ak.array_equal(reader.read(15, 47).part_pid, arr.part_pid[15:47])  # spans 3 groups
    pieces = list(reader.iter_awkward(9))
    assert sum(len(p) for p in pieces) == 70
    assert ak.array_equal(ak.concatenate(pieces), whole)


def test_one_hot_labels_are_converted(tmp_path):
    arr = part_style(6, seed=2)
    label = np.array([0, 3, 9, 1, 0, 5])
    arr = arr[[f for f in ak.fields(arr) if f != "label"]]
    from jettag.data.formats import JETCLASS_LABELS

    for k, name in enumerate(JETCLASS_LABELS):
        arr = ak.with_field(arr, (label == k).astype(np.int32), name)
    ak.to_parquet(arr, tmp_path / "oh.parquet")
    jets = ParquetReader(tmp_path / "oh.parquet").read()
    np.testing.assert_array_equal(ak.to_numpy(jets.label), label)
    assert not any(f.startswith("label_") for f in ak.fields(jets))


def test_round_trip_exact_with_part_fields(tmp_path):
    chunk = random_jets(40, seed=3, num_classes=5)
    jets = chunk.to_awkward()
    path = tmp_path / "rt.parquet"
    with ParquetWriter(path) as writer:
        for a in range(0, 40, 15):
            writer.write(jets[a : a + 15])
    file = pq.ParquetFile(path)
    assert file.metadata.num_row_groups == 3
    names = file.schema_arrow.names
    assert names[:2] == ["label", "truth_p4"]  # ParT order: label, jet fields, particles
    assert names.index("part_px") < names.index("part_energy") < names.index("part_pid")
    for f in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles",
              "part_deta", "part_dphi"):  # fmt: skip
        assert f in names
    back = ParquetReader(path).read()
    for f in ak.fields(jets):
        assert ak.array_equal(back[f], jets[f]), f
    # independent kinematics: the jet four-momentum is the constituent sum
    px, py = ak.sum(jets.part_px, axis=1), ak.sum(jets.part_py, axis=1)
    np.testing.assert_allclose(ak.to_numpy(back.jet_pt), np.hypot(px, py), rtol=1e-5, atol=1e-4)
    phi = np.arctan2(ak.to_numpy(py), ak.to_numpy(px))
    part_phi = np.arctan2(jets.part_py, jets.part_px)
    dphi = (part_phi - phi + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(back.part_dphi)), ak.to_numpy(ak.flatten(dphi)), atol=1e-5
    )
    # read again by ak.from_parquet, the way ParT's dataloader would
    assert ak.array_equal(ak.from_parquet(path).part_px, jets.part_px)


def test_writer_schema_mismatch_and_atomicity(tmp_path):
    a = random_jets(5, seed=0).to_awkward()
    b = random_jets(5, seed=1, truth=False).to_awkward()
    path = tmp_path / "mm.parquet"
    with pytest.raises(ValueError, match="same fields"):
        write_parquet(path, [a, b])
    assert list(tmp_path.iterdir()) == []
    write_parquet(path, [])  # no jets: still a valid, empty file
    assert len(ParquetReader(path)) == 0


# ------------------------------------------------------------------ bad input


def test_missing_momentum_column(tmp_path):
    arr = part_style(4)
    ak.to_parquet(arr[[f for f in ak.fields(arr) if f != "part_energy"]], tmp_path / "m.parquet")
    with pytest.raises(MissingKeyError, match=r"m\.parquet: no column\(s\) \['part_energy'\]"):
        len(ParquetReader(tmp_path / "m.parquet"))


def test_truncated_file(tmp_path):
    path = tmp_path / "t.parquet"
    ak.to_parquet(part_style(100), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(JetFileError, match=r"t\.parquet: cannot open"):
        ParquetReader(path).read()


def test_nan_and_negative_label(tmp_path):
    arr = part_style(10, seed=4)
    counts = ak.to_numpy(ak.num(arr.part_px))
    j = int(np.flatnonzero(counts)[2])
    e = ak.to_numpy(ak.flatten(arr.part_energy)).copy()
    e[int(counts[:j].sum())] = np.inf
    ak.to_parquet(
        ak.with_field(arr, ak.unflatten(e, counts), "part_energy"), tmp_path / "n.parquet"
    )
    with pytest.raises(JetFileError, match=rf"n\.parquet: entry {j} .*non-finite.*part_energy"):
        ParquetReader(tmp_path / "n.parquet").read()
    lab = ak.to_numpy(arr.label).copy()
    lab[6] = -1
    ak.to_parquet(ak.with_field(arr, lab, "label"), tmp_path / "l.parquet")
    with pytest.raises(JetFileError, match=r"l\.parquet: entry 6 has label -1"):
        ParquetReader(tmp_path / "l.parquet").read()
