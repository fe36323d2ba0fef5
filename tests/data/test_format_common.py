"""Shared reader/writer machinery: JetChunk, format detection, open_dataset, atomic writes."""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest
import torch

from jettag.data import JetBatch
from jettag.data.formats import (
    FORMATS,
    JetChunk,
    JetFileError,
    detect_format,
    open_dataset,
    open_writer,
    resolve_paths,
)
from jettag.data.formats._synthetic import random_jets

WRITABLE = {
    "top-hdf5": "jets.h5",
    "qg-npz": "jets.npz",
    "jetclass-root": "jets.root",
    "parquet": "jets.parquet",
}


def test_chunk_awkward_and_batch_conversions_are_exact():
    chunk = random_jets(20, seed=0)
    jets = chunk.to_awkward()
    assert ak.fields(jets) == [
        "part_energy",
        "part_px",
        "part_py",
        "part_pz",
        "part_pid",
        "label",
        "truth_p4",
    ]
    back = JetChunk.from_awkward(jets)
    np.testing.assert_array_equal(back.p4, chunk.p4)
    np.testing.assert_array_equal(back.counts, chunk.counts)
    np.testing.assert_array_equal(
        back.particle_fields["part_pid"], chunk.particle_fields["part_pid"]
    )
    batch = chunk.to_batch(x_fields=["part_pid"])
    ref = JetBatch.from_awkward(jets, x_fields=["part_pid"])
    assert torch.equal(batch.p4, ref.p4) and torch.equal(batch.ptr, ref.ptr)
    assert torch.equal(batch.x, ref.x) and torch.equal(batch.label, ref.label)
    assert torch.equal(batch.truth_p4, ref.truth_p4)
    again = JetChunk.from_batch(batch)
    np.testing.assert_array_equal(again.p4, chunk.p4)
    assert batch.to(torch.float64).dtype == torch.float64


def test_chunk_take_slice_concatenate():
    chunk = random_jets(12, seed=1)
    idx = [11, 0, 5, 5, 3]
    taken = chunk.take(idx).to_awkward()
    assert ak.array_equal(taken, chunk.to_awkward()[idx])
    sl = chunk.slice(3, 9).to_awkward()
    assert ak.array_equal(sl, chunk.to_awkward()[3:9])
    cat = JetChunk.concatenate([chunk.slice(0, 4), chunk.slice(4, 12)])
    assert ak.array_equal(cat.to_awkward(), chunk.to_awkward())
    with pytest.raises(ValueError, match="different fields"):
        JetChunk.concatenate([chunk, random_jets(2, truth=False)])


def test_jet_dicts_collate_to_the_batch():
    chunk = random_jets(7, seed=2)
    items = [chunk.jet_dict(i, x_fields=["part_pid"]) for i in range(7)]
    batch = JetBatch.collate(items)
    ref = chunk.to_batch(x_fields=["part_pid"])
    for name in ("p4", "ptr", "x", "label"):
        assert torch.equal(getattr(batch, name), getattr(ref, name)), name
    assert torch.equal(batch.fields["truth_p4"], ref.fields["truth_p4"])


@pytest.mark.parametrize("fmt", sorted(WRITABLE))
def test_open_writer_and_open_dataset_round_trip(tmp_path, fmt):
    if fmt == "top-hdf5":
        pytest.importorskip("tables")
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    jets = random_jets(9, seed=3, min_particles=1, num_classes=2, dtype=np.float64).to_awkward()
    path = tmp_path / WRITABLE[fmt]
    with open_writer(path) as writer:
        writer.write(jets[:4])
        assert not path.exists()  # only the .partial exists while writing
        # (the npz and parquet writers create it when they finish or at the first flush)
        assert writer.partial_path.exists() or fmt in ("qg-npz", "parquet")
        writer.write(jets[4:])
    assert path.exists() and not writer.partial_path.exists()
    assert detect_format(path) == fmt
    reader = open_dataset(path, dtype=np.float64)
    assert reader.format == fmt and len(reader) == 9
    back = reader.read()
    assert ak.array_equal(back.label, jets.label)
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(back.part_px)), ak.to_numpy(ak.flatten(jets.part_px)), rtol=1e-6
    )
    # readers pickle (for DataLoader workers) without their open handles
    clone = pickle.loads(pickle.dumps(reader))
    assert ak.array_equal(clone.read(2, 5).label, jets.label[2:5])
    reader.close()
    clone.close()
    # unknown extension: detected from the first bytes
    renamed = path.rename(tmp_path / "jets.data")
    assert detect_format(renamed) == fmt
    assert len(open_dataset(renamed)) == 9


def test_paths_globs_and_errors(tmp_path):
    for name in ("f_10.npz", "f_2.npz", "f_1.npz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in resolve_paths(tmp_path, extensions=(".npz",))] == [
        "f_1.npz",
        "f_2.npz",
        "f_10.npz",
    ]
    assert [p.name for p in resolve_paths(str(tmp_path / "f_*.npz"))] == [
        "f_1.npz",
        "f_2.npz",
        "f_10.npz",
    ]
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        open_dataset(tmp_path / "missing.h5")
    with pytest.raises(FileNotFoundError, match="matches no files"):
        open_dataset(str(tmp_path / "nothing_*.root"))
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        open_dataset(tmp_path / "f_1.npz", format="csv")
    (tmp_path / "mystery.bin").write_bytes(b"hello world")
    with pytest.raises(JetFileError, match=r"mystery\.bin: cannot tell the format"):
        open_dataset(tmp_path / "mystery.bin")
    (tmp_path / "a.root").write_bytes(b"")
    with pytest.raises(ValueError, match="several formats"):
        open_dataset([tmp_path / "f_1.npz", tmp_path / "a.root"])
    assert set(FORMATS) == set(WRITABLE)


def test_writers_accept_jetbatch_with_features(tmp_path):
    pytest.importorskip("pyarrow")
    chunk = random_jets(10, seed=4, num_classes=10)
    base = chunk.to_batch(x_fields=["part_pid"])
    batch = JetBatch(base.p4, base.ptr, x=torch.cat([base.x, -base.x], 1), label=base.label)
    pq_path = open_writer(tmp_path / "b.parquet")
    pq_path.write(batch)
    back = open_dataset(pq_path.close()).read_batch()
    assert torch.equal(back.x, batch.x) and torch.equal(back.p4, batch.p4)
    root = open_writer(tmp_path / "b.root")
    root.write(batch)
    back = open_dataset(root.close()).read_batch(x_fields=["part_x_0", "part_x_1"])
    assert torch.equal(back.x, batch.x) and torch.equal(back.label, batch.label)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_check_finite_fast_pass_is_exact(dtype):
    """The one-sum shortcut neither misses a non-finite value nor flags an overflowing sum."""
    big = np.finfo(dtype).max
    chunk = JetChunk(np.full((6, 4), big, dtype=dtype), np.array([2, 4]))
    with np.errstate(over="ignore"):
        assert not np.isfinite(chunk.p4.sum())  # the sum overflows: the exact check decides
    chunk.check_finite("big")  # every value is finite: no error
    for bad in (np.nan, np.inf, -np.inf):
        p4 = np.ones((6, 4), dtype=dtype)
        p4[4, 2] = bad
        with pytest.raises(JetFileError, match=r"src: entry 11 .*constituent 2, part_py"):
            JetChunk(p4, np.array([2, 4])).check_finite("src", first_entry=10)
    p4 = np.ones((6, 4), dtype=dtype)
    p4[0, 0], p4[5, 3] = np.inf, -np.inf  # inf - inf: the sum is NaN, still caught
    with pytest.raises(JetFileError, match=r"src: entry 0 "):
        JetChunk(p4, np.array([2, 4])).check_finite("src")
