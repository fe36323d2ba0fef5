"""Top Quark Tagging Reference Dataset HDF5: reader, writer, published layout, bad input."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")
h5py = pytest.importorskip("h5py")
pytest.importorskip("tables")

from jettag.data.formats import (  # noqa: E402
    JetFileError,
    MissingKeyError,
    TopHDF5Reader,
    TopHDF5Writer,
    open_dataset,
    top_hdf5_columns,
    write_top_hdf5,
)
from jettag.data.formats._synthetic import random_jets  # noqa: E402

COLUMNS = [f"{v}_{i}" for i in range(200) for v in ("E", "PX", "PY", "PZ")] + [
    "truthE",
    "truthPX",
    "truthPY",
    "truthPZ",
]


def published_frame(n: int, seed: int = 0, max_particles: int = 60) -> tuple:
    """A DataFrame in the published layout (fixture recipe of the notes), and the truth."""
    rng = np.random.default_rng(seed)
    values = np.zeros((n, 804), dtype=np.float32)
    counts = rng.integers(0, max_particles, n)
    for i, c in enumerate(counts):
        e = np.sort(rng.uniform(1.0, 300.0, c))[::-1]
        p = rng.normal(0.0, 1.0, (c, 3))
        p = p / np.linalg.norm(p, axis=1, keepdims=True) * e[:, None] * 0.99
        values[i, : 4 * c] = np.column_stack([e, p]).reshape(-1)
    values[:, 800:] = rng.normal(0.0, 500.0, (n, 4))
    labels = rng.integers(0, 2, n)
    df = pd.DataFrame(values, columns=COLUMNS)
    df["ttv"] = np.int64(0)
    df["is_signal_new"] = labels.astype(np.int64)
    return df, counts, values, labels


def expected_p4(values: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return [values[i, : 4 * c].reshape(c, 4) for i, c in enumerate(counts)]


def jets_p4(jets: ak.Array) -> list[np.ndarray]:
    comps = [jets[f] for f in ("part_energy", "part_px", "part_py", "part_pz")]
    return [
        np.stack([ak.to_numpy(c[i]) for c in comps], axis=1).reshape(-1, 4)
        for i in range(len(jets))
    ]


@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_reads_files_written_by_pandas(tmp_path, fmt):
    df, counts, values, labels = published_frame(40)
    path = tmp_path / "test.h5"
    df.to_hdf(path, key="table", mode="w", format=fmt)
    reader = open_dataset(path)
    assert isinstance(reader, TopHDF5Reader)
    assert len(reader) == 40
    jets = reader.read()
    assert ak.to_numpy(ak.num(jets.part_energy)).tolist() == counts.tolist()
    for got, want in zip(jets_p4(jets), expected_p4(values, counts), strict=True):
        np.testing.assert_array_equal(got, want)  # exact, in pT order
    np.testing.assert_array_equal(ak.to_numpy(jets.label), labels)
    np.testing.assert_array_equal(ak.to_numpy(jets.truth_p4), values[:, 800:])
    assert ak.to_numpy(jets.ttv).tolist() == [0] * 40
    assert jets.part_energy.type.content.content.primitive == "float32"


def test_column_order_is_taken_from_the_file(tmp_path):
    df, counts, values, labels = published_frame(10, seed=3)
    shuffled = df[list(df.columns[::-1])]  # PZ_199 first, E_0 last; ints first
    path = tmp_path / "reordered.h5"
    shuffled.to_hdf(path, key="table", mode="w", format="table")
    with h5py.File(path) as f:
        # pandas stores the integer block first now: the attribute names the columns
        assert f["table/table"].dtype.names == ("index", "values_block_0", "values_block_1")
    jets = TopHDF5Reader(path).read()
    for got, want in zip(jets_p4(jets), expected_p4(values, counts), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ak.to_numpy(jets.label), labels)


def test_padding_is_zero_four_vector_not_zero_energy_only(tmp_path):
    df, *_ = published_frame(2, seed=1)
    df.iloc[0, :8] = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # E = 0 but p != 0: kept
    path = tmp_path / "pad.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    jets = TopHDF5Reader(path).read(0, 1)
    assert float(jets.part_energy[0, 0]) == 0.0 and float(jets.part_px[0, 0]) == 1.0


def test_writer_matches_pandas_to_hdf_structure(tmp_path):
    df, *_ = published_frame(25, seed=2)
    ref = tmp_path / "ref.h5"
    df.to_hdf(ref, key="table", mode="w", format="table")
    jets = TopHDF5Reader(ref).read()
    mine = tmp_path / "mine.h5"
    with TopHDF5Writer(mine) as writer:  # chunk by chunk
        for a in range(0, 25, 7):
            writer.write(jets[a : a + 7])
    assert writer.num_written == 25

    def structure(path):
        out = {}
        with h5py.File(path) as f:

            def visit(name, obj):
                attrs = {
                    k: (v.tobytes() if isinstance(v, np.ndarray) else v)
                    for k, v in obj.attrs.items()
                }
                out[name] = (type(obj).__name__, getattr(obj, "shape", None), attrs)
                if isinstance(obj, h5py.Dataset):
                    out[name] += (obj.dtype, obj[()].tobytes())

            f.visititems(visit)
        return out

    assert structure(mine) == structure(ref)  # same groups, dtypes, attributes and bytes
    pd.testing.assert_frame_equal(pd.read_hdf(mine, key="table"), df)
    assert list(pd.read_hdf(mine, key="table").columns) == top_hdf5_columns()
    with h5py.File(mine) as f:
        table = f["table/table"]
        assert table.dtype["values_block_0"] == np.dtype(("<f4", (804,)))
        assert table.dtype["values_block_1"] == np.dtype(("<i8", (2,)))


def test_round_trip_exact(tmp_path):
    chunk = random_jets(60, seed=5, max_particles=40)
    jets = chunk.to_awkward()
    path = write_top_hdf5(tmp_path / "rt.h5", (jets[a : a + 16] for a in range(0, 60, 16)))
    back = TopHDF5Reader(path).read()
    for f in ("part_energy", "part_px", "part_py", "part_pz", "label", "truth_p4"):
        assert ak.array_equal(back[f], jets[f]), f
    assert set(ak.fields(back)) == {
        "part_energy",
        "part_px",
        "part_py",
        "part_pz",
        "label",
        "truth_p4",
        "ttv",
    }


def test_chunked_read_equals_whole_read(tmp_path):
    df, *_ = published_frame(53, seed=4)
    path = tmp_path / "c.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    reader = TopHDF5Reader(path)
    whole = reader.read()
    pieces = list(reader.iter_awkward(10))
    assert [len(p) for p in pieces] == [10, 10, 10, 10, 10, 3]
    assert ak.array_equal(ak.concatenate(pieces), whole)
    batches = list(reader.iter_batches(16))
    assert sum(len(b) for b in batches) == 53
    assert ak.array_equal(reader.read(17, 29), whole[17:29])


def test_writer_truncates_only_when_asked(tmp_path):
    jets = random_jets(3, seed=0, min_particles=5, max_particles=8).to_awkward()
    with pytest.raises(ValueError, match="num_constituents=4"):
        write_top_hdf5(tmp_path / "t.h5", jets, num_constituents=4)
    assert not (tmp_path / "t.h5").exists()
    assert not (tmp_path / "t.h5.partial").exists()
    path = write_top_hdf5(tmp_path / "t.h5", jets, num_constituents=4, truncate=True)
    back = TopHDF5Reader(path).read()
    assert ak.array_equal(back.part_px, jets.part_px[:, :4])


def test_writer_failure_leaves_no_file(tmp_path):
    jets = random_jets(4, seed=0, num_classes=3).to_awkward()
    jets = ak.with_field(jets, np.array([0, 1, 2, 1]), "label")
    path = tmp_path / "bad.h5"
    with pytest.raises(ValueError, match="is_signal_new"):
        with TopHDF5Writer(path) as writer:
            writer.write(jets[:2])
            writer.write(jets[2:])
    assert not path.exists() and not (tmp_path / "bad.h5.partial").exists()


# ------------------------------------------------------------------ bad input


def test_truncated_file_names_the_file(tmp_path):
    df, *_ = published_frame(200)
    path = tmp_path / "trunc.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(JetFileError, match=r"trunc\.h5"):
        TopHDF5Reader(path).read()


def test_wrong_key_names_file_and_key(tmp_path):
    df, *_ = published_frame(3)
    path = tmp_path / "k.h5"
    df.to_hdf(path, key="jets", mode="w", format="table")
    with pytest.raises(MissingKeyError, match=r"k\.h5.*'table'.*found \['jets'\]"):
        len(TopHDF5Reader(path))
    assert len(TopHDF5Reader(path, key="jets")) == 3


def test_missing_column(tmp_path):
    df, *_ = published_frame(3)
    path = tmp_path / "m.h5"
    df.drop(columns=["is_signal_new"]).to_hdf(path, key="table", mode="w", format="table")
    with pytest.raises(MissingKeyError, match=r"m\.h5.*is_signal_new"):
        TopHDF5Reader(path).read()


def test_nan_momentum_names_file_and_entry(tmp_path):
    df, *_ = published_frame(10, seed=7)
    df.loc[6, "PX_0"] = np.nan
    df.loc[6, "E_0"] = 10.0
    path = tmp_path / "nan.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    reader = TopHDF5Reader(path)
    assert len(reader.read(0, 6)) == 6
    with pytest.raises(JetFileError, match=r"nan\.h5: entry 6 .*non-finite.*part_px"):
        reader.read()


def test_label_out_of_range_names_file_and_entry(tmp_path):
    df, *_ = published_frame(5)
    df.loc[3, "is_signal_new"] = 2
    path = tmp_path / "lab.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    with pytest.raises(JetFileError, match=r"lab\.h5: entry 3 has is_signal_new = 2"):
        TopHDF5Reader(path).read()


def test_not_a_pandas_store(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_group("table").create_dataset("data", data=np.zeros(3))
    with pytest.raises(JetFileError, match=r"plain\.h5.*neither a pandas table-format"):
        TopHDF5Reader(path).read()


def test_streaming_memory_is_bounded(tmp_path):
    """Peak memory of a chunked pass does not grow with the number of rows."""
    peaks = []
    for n in (400, 1600):
        df, *_ = published_frame(n, seed=n, max_particles=30)
        path = tmp_path / f"mem{n}.h5"
        df.to_hdf(path, key="table", mode="w", format="table")
        reader = TopHDF5Reader(path)
        len(reader)
        tracemalloc.start()
        total = sum(len(c) for c in reader.iter_chunks(100))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert total == n
        peaks.append(peak)
    whole_file = 1600 * 806 * 4
    assert peaks[1] < 1.3 * peaks[0]
    assert peaks[1] < whole_file / 3


# ------------------------------------------------------------------ fast paths


def tricky_frame(n: int = 100) -> tuple:
    """Published layout with every padding corner case the reader must keep or drop."""
    df, counts, values, labels = published_frame(n, seed=11)
    values = values.copy()
    values[0, :] = 0.0  # no constituents
    values[1, :800] = np.abs(values[1, :800]) + 1.0  # all 200 constituents
    values[2, 4:8] = 0.0  # a zero four-vector between real ones: dropped
    values[3, 4 * counts[3] : 4 * counts[3] + 4] = -0.0  # negative zeros are padding
    values[4, 0] = 0.0  # E = 0 with p != 0: kept
    values[5, 796:800] = [7.0, 1.0, 2.0, 3.0]  # a real constituent after the padding: kept
    values[6, 4 * 199 + 1] = -0.0  # one -0.0 component among zeros: padding
    df = pd.DataFrame(values[:, :804], columns=COLUMNS)
    df["ttv"] = np.arange(n, dtype=np.int64) % 3
    df["is_signal_new"] = labels.astype(np.int64)
    dense = values[:, :800].reshape(n, 200, 4)
    real = (dense != 0).any(axis=2)
    return df, [dense[i][real[i]] for i in range(n)], labels, counts


def generic_jets(path, monkeypatch):
    """Jets read by the generic (h5py structured read + float mask) path."""
    from jettag.data.formats import top_hdf5

    with monkeypatch.context() as m:
        m.setattr(top_hdf5, "_p4_offset", lambda *args: None)
        reader = TopHDF5Reader(path)
        assert reader._handle(0).layout.p4_offset is None
        return reader.read()


@pytest.mark.parametrize("route", ["mmap", "hdf5"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_fast_paths_equal_the_generic_path(tmp_path, monkeypatch, route, interleaved):
    """Both fast routes return exactly what the generic path returns, at any range."""
    from jettag.data.formats import top_hdf5

    df, expected, labels, counts = tricky_frame(100)
    assert counts[2] > 2 and counts[3] < 200  # the corner cases below are where intended
    path = tmp_path / "f.h5"
    if interleaved:  # chunks of the table not adjacent in the file: several mapped runs
        with pd.HDFStore(path, mode="w") as store:
            for a in range(0, 100, 30):
                store.append("table", df.iloc[a : a + 30], format="table", index=False)
                store.append("other", pd.DataFrame({"x": np.arange(5000.0)}), format="table")
    else:
        df.to_hdf(path, key="table", mode="w", format="table")
    reference = generic_jets(path, monkeypatch)
    # small pieces and scan blocks: every loop runs several times, pieces end mid-chunk
    monkeypatch.setattr(top_hdf5, "_PIECE_ROWS", 7)
    monkeypatch.setattr(top_hdf5, "_SCAN_ROWS", 3)
    if route == "hdf5":
        monkeypatch.setattr(top_hdf5._MappedChunks, "open", classmethod(lambda *a: None))
    reader = TopHDF5Reader(path)
    handle = reader._handle(0)
    assert handle.layout.p4_offset == 8  # after the int64 index
    mapped = handle.mapped(handle.file["table/table"])
    assert (mapped is not None) == (route == "mmap")
    jets = reader.read()
    assert ak.to_list(jets) == ak.to_list(reference)
    for got, want in zip(jets_p4(jets), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    num = ak.to_numpy(ak.num(jets.part_energy))
    assert num[:7].tolist() == [0, 200, counts[2] - 1, *counts[3:5], counts[5] + 1, counts[6]]
    assert float(jets.part_energy[4, 0]) == 0.0 and float(jets.part_px[4, 0]) != 0.0
    assert [float(jets[f][5, -1]) for f in ("part_energy", "part_px", "part_py", "part_pz")] == [
        7.0,
        1.0,
        2.0,
        3.0,
    ]
    np.testing.assert_array_equal(ak.to_numpy(jets.label), labels)
    np.testing.assert_array_equal(ak.to_numpy(jets.ttv), np.arange(100) % 3)
    for a, b in [(13, 77), (39, 41), (0, 1), (99, 100), (50, 50)]:
        assert ak.to_list(reader.read(a, b)) == ak.to_list(reference[a:b])


def test_compressed_file_is_read_through_hdf5(tmp_path, monkeypatch):
    df, expected, *_ = tricky_frame(60)
    path = tmp_path / "z.h5"
    df.to_hdf(path, key="table", mode="w", format="table", complevel=5, complib="zlib")
    reader = TopHDF5Reader(path)
    handle = reader._handle(0)
    assert handle.mapped(handle.file["table/table"]) is None  # compressed: no memory map
    jets = reader.read()
    assert ak.to_list(jets) == ak.to_list(generic_jets(path, monkeypatch))
    for got, want in zip(jets_p4(jets), expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_memory_maps_are_released_after_each_piece(tmp_path, monkeypatch):
    from jettag.data.formats import top_hdf5

    df, *_ = published_frame(300, seed=9)
    path = tmp_path / "maps.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    monkeypatch.setattr(top_hdf5, "_PIECE_ROWS", 50)
    reader = TopHDF5Reader(path, threads=1)  # with threads, a read ahead may be mapped
    seen = []
    for chunk in reader.iter_chunks(64):
        seen.append(Path("/proc/self/maps").read_text().count(str(path)))
        assert len(chunk)
    assert seen == [0] * len(seen)  # nothing of the file stays mapped between reads
    handle = reader._handle(0)
    assert handle.mapped(handle.file["table/table"]) is not None  # and the map route ran


def test_file_truncated_after_opening_names_the_file(tmp_path):
    df, *_ = published_frame(300, seed=2)
    path = tmp_path / "cut.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    reader = TopHDF5Reader(path)
    assert len(reader) == 300  # the file is open and its layout known
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(JetFileError, match=r"cut\.h5.*truncated"):
        reader.read()


def test_file_truncated_while_reading_names_the_file(tmp_path, monkeypatch):
    from jettag.data.formats import top_hdf5

    df, *_ = published_frame(300, seed=3)
    path = tmp_path / "shrunk.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    monkeypatch.setattr(top_hdf5, "_PIECE_ROWS", 40)
    chunks = TopHDF5Reader(path).iter_chunks(40)
    assert len(next(chunks)) == 40  # the memory map is set up and in use
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(JetFileError, match=r"shrunk\.h5: rows \d+\.\.\d+ lie past the end"):
        for _ in chunks:
            pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 16},
        {"batch_size": 16, "drop_last": True, "start": 5, "stop": 90},
        {"batch_size": 7, "dtype": torch.float64},
        {"batch_size": 1000},
    ],
)
def test_iter_batches_equal_validated_batches(tmp_path, kwargs):
    """The reader's batches (built without re-validation) equal the base class's batches."""
    from jettag.data.formats import JetReader

    df, *_ = tricky_frame(100)
    path = tmp_path / "b.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    reader = TopHDF5Reader(path)
    ours = list(reader.iter_batches(**kwargs))
    theirs = list(JetReader.iter_batches(reader, **kwargs))
    assert [len(b) for b in ours] == [len(b) for b in theirs] and ours
    for a, b in zip(ours, theirs, strict=True):
        assert a.p4.dtype == b.p4.dtype == kwargs.get("dtype", torch.float32)
        assert torch.equal(a.p4, b.p4) and torch.equal(a.ptr, b.ptr)
        assert torch.equal(a.label, b.label)
        assert a.fields.keys() == b.fields.keys() == {"truth_p4", "ttv"}
        for k in a.fields:
            assert torch.equal(a.fields[k], b.fields[k])
            assert a.fields[k].dtype == b.fields[k].dtype


def test_iter_batches_report_nan_without_the_check(tmp_path):
    df, *_ = published_frame(10, seed=7)
    df.loc[6, "PX_0"] = np.nan
    df.loc[6, "E_0"] = 10.0
    path = tmp_path / "nanb.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    with pytest.raises(JetFileError, match=r"nanb\.h5: entry 6 .*non-finite"):
        list(TopHDF5Reader(path).iter_batches(4))
    # check=False skips the reader's check; JetBatch's own validation still refuses NaN
    with pytest.raises(ValueError, match="finite"):
        list(TopHDF5Reader(path, check=False).iter_batches(4))


def test_ttv_in_the_float_block(tmp_path, monkeypatch):
    """ttv stored as float32 (805 floats + 1 int64 per row, rows of 3236 bytes) reads the same."""
    df, expected, labels, _ = tricky_frame(50)
    df["ttv"] = df["ttv"].astype(np.float32)
    path = tmp_path / "ttv.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    with h5py.File(path) as f:
        table = f["table/table"]
        assert table.dtype["values_block_0"] == np.dtype(("<f4", (805,)))
        assert table.dtype["values_block_1"] == np.dtype(("<i8", (1,)))
        assert table.dtype.itemsize == 3236
    reader = TopHDF5Reader(path)
    handle = reader._handle(0)
    assert handle.layout.p4_offset == 8
    assert handle.mapped(handle.file["table/table"]) is not None
    jets = reader.read()
    assert ak.to_list(jets) == ak.to_list(generic_jets(path, monkeypatch))
    for got, want in zip(jets_p4(jets), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ak.to_numpy(jets.label), labels)
    np.testing.assert_array_equal(ak.to_numpy(jets.ttv), np.arange(50) % 3)


@pytest.mark.parametrize("scan_rows", [512, 8])
def test_packing_copies_constituents_bit_for_bit(monkeypatch, scan_rows):
    # Any bit pattern (NaN payloads, signalling-NaN pairs, -0.0, subnormals) survives the
    # fast path's 16-byte gather unchanged; all-zero constituents (either sign) are padding.
    from jettag.data.formats import top_hdf5
    from jettag.data.formats.top_hdf5 import _pack_constituents

    monkeypatch.setattr(top_hdf5, "_SCAN_ROWS", scan_rows)  # one pass, or several

    rng = np.random.default_rng(7)
    n, m, offset = 37, 9, 8
    words = rng.integers(0, 2**32, size=(n, m, 4), dtype=np.uint64).astype(np.uint32)
    words[rng.random((n, m)) < 0.3] = 0
    words[0, 1] = [0x80000000, 0, 0x80000000, 0]          # -0.0 everywhere: padding
    words[1, 2] = [0x7FA00001, 0xFFF00001, 0x7FF80000, 1]  # NaN payloads, a subnormal
    raw = np.zeros((n, offset + 16 * m + 4), dtype=np.uint8)
    raw[:, offset : offset + 16 * m] = words.view(np.uint8).reshape(n, 16 * m)
    out = np.full(n * m + 5, np.void(b"\xab" * 16), dtype="V16")
    counts, end = _pack_constituents(raw, offset, m, out, 3)
    floats = words.view(np.float32)
    real = (floats != 0).any(-1)
    np.testing.assert_array_equal(counts, real.sum(1))
    assert end == 3 + real.sum()
    got = out[3:end].view(np.uint32).reshape(-1, 4)
    np.testing.assert_array_equal(got, words[real])
    # nothing written outside out[pos:end]
    assert out[:3].tobytes() == out[end:].tobytes()[:48] == b"\xab" * 48


# ------------------------------------------------------------------ parallel reads


def _threaded_file(tmp_path, n=300, name="par.h5"):
    df, *_ = tricky_frame(n)
    path = tmp_path / name
    df.to_hdf(path, key="table", mode="w", format="table")
    return df, path


def _reader_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("jettag-read")]


@pytest.mark.parametrize("kwargs", [{}, {"start": 13, "stop": 287}, {"dtype": torch.float64}])
def test_parallel_reads_equal_one_thread(tmp_path, monkeypatch, kwargs):
    from jettag.data.formats import top_hdf5

    _, path = _threaded_file(tmp_path)
    monkeypatch.setattr(top_hdf5, "_PIECE_ROWS", 30)
    monkeypatch.setattr(TopHDF5Reader, "read_size", 40)
    import threading

    one = list(TopHDF5Reader(path, threads=1).iter_batches(20, **kwargs))
    names = []
    read = TopHDF5Reader._read_checked

    def spy(self, *args):
        names.append(threading.current_thread().name)
        return read(self, *args)

    monkeypatch.setattr(TopHDF5Reader, "_read_checked", spy)
    many = list(TopHDF5Reader(path, threads=3).iter_batches(20, **kwargs))
    assert len(set(names)) > 1 and all(n.startswith("jettag-read") for n in names)
    assert len(one) == len(many) > 5
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a.p4, b.p4) and torch.equal(a.ptr, b.ptr)
        assert torch.equal(a.label, b.label)
        assert all(torch.equal(a.fields[k], b.fields[k]) for k in a.fields)
    chunks = list(TopHDF5Reader(path, threads=3).iter_chunks(50))
    assert [len(c) for c in chunks] == [50] * 6
    assert not _reader_threads()


def test_parallel_read_error_names_file_and_entry(tmp_path, monkeypatch):
    df, *_ = published_frame(300, seed=5)
    df.loc[250, "is_signal_new"] = 3
    path = tmp_path / "badpar.h5"
    df.to_hdf(path, key="table", mode="w", format="table")
    monkeypatch.setattr(TopHDF5Reader, "read_size", 40)
    reader = TopHDF5Reader(path, threads=3)
    got = []
    with pytest.raises(JetFileError, match=r"badpar\.h5: entry 250 has is_signal_new = 3"):
        for batch in reader.iter_batches(40):
            got.append(len(batch))
    assert got == [40] * 6  # every batch before the bad one arrived, in order
    assert not _reader_threads()


def test_parallel_reads_stopped_early_leave_nothing_behind(tmp_path, monkeypatch):
    _, path = _threaded_file(tmp_path)
    monkeypatch.setattr(TopHDF5Reader, "read_size", 40)
    batches = TopHDF5Reader(path, threads=3).iter_batches(40)
    assert len(next(batches)) == 40
    batches.close()
    assert not _reader_threads()
    if Path("/proc/self/maps").exists():
        assert str(path) not in Path("/proc/self/maps").read_text()


def test_reader_threads_option(tmp_path, monkeypatch):
    _, path = _threaded_file(tmp_path, n=20)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises((ValueError, TypeError), match="threads"):
            TopHDF5Reader(path, threads=bad)
    reader = TopHDF5Reader(path)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert reader._num_threads() == 4  # capped
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert reader._num_threads() == 2
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    assert reader._num_threads() == 1  # DataLoader workers read one piece at a time
    assert TopHDF5Reader(path, threads=3)._num_threads() == 3
