"""Top Quark Tagging Reference Dataset HDF5: reader, writer, published layout, bad input."""

from __future__ import annotations

import tracemalloc

import awkward as ak
import numpy as np
import pytest

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
