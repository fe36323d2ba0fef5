"""EnergyFlow quark/gluon .npz: reader, writer, published layout, bad input."""

from __future__ import annotations

import tracemalloc
import zipfile

import awkward as ak
import numpy as np
import pytest

from jettag.data.formats import (
    JetFileError,
    MissingKeyError,
    QGNpzReader,
    QGNpzWriter,
    open_dataset,
    write_qg_npz,
)
from jettag.data.formats._synthetic import random_jets

# PDG 2024 masses in GeV, written out independently of the library's table
MASS = {22: 0.0, 211: 0.13957039, 321: 0.493677, 130: 0.497611, 2112: 0.93956542052,
        2212: 0.93827208816, 11: 0.51099895e-3, 13: 0.1056583755}  # fmt: skip


def published_arrays(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (n, m, 4) = (pt, y, phi, pid) zero-padded and unsorted, y labels; float64."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, m, 4))
    pids = np.array([22, 211, -211, 321, -321, 130, 2112, -2112, 2212, -2212, 11, -11, 13, -13])
    for i in range(n):
        c = rng.integers(1, m + 1)
        X[i, :c, 0] = rng.exponential(10.0, c) + 0.1
        X[i, :c, 1] = rng.normal(0.0, 1.5, c)
        X[i, :c, 2] = rng.uniform(0.0, 2 * np.pi, c)
        X[i, :c, 3] = rng.choice(pids, c)
    y = rng.integers(0, 2, n).astype(np.float64)
    return X, y


def expected_p4(X: np.ndarray, massless: bool = False) -> list[np.ndarray]:
    out = []
    for jet in X:
        jet = jet[jet[:, 0] > 0]
        pt, y, phi, pid = jet.T
        m = np.zeros_like(pt) if massless else np.array([MASS[abs(int(p))] for p in pid])
        mt = np.sqrt(pt**2 + m**2)
        out.append(
            np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], 1)
        )
    return out


def jets_p4(jets: ak.Array) -> list[np.ndarray]:
    comps = [jets[f] for f in ("part_energy", "part_px", "part_py", "part_pz")]
    return [
        np.stack([ak.to_numpy(c[i]) for c in comps], 1).reshape(-1, 4) for i in range(len(jets))
    ]


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed])
@pytest.mark.parametrize("massless", [False, True])
def test_reads_files_written_by_numpy(tmp_path, saver, massless):
    X, y = published_arrays(30, 17)
    path = tmp_path / "QG_jets.npz"
    saver(path, X=X, y=y)
    reader = open_dataset(path, dtype=np.float64, massless=massless)
    assert isinstance(reader, QGNpzReader) and len(reader) == 30
    jets = reader.read()
    for got, want in zip(jets_p4(jets), expected_p4(X, massless), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12)
    np.testing.assert_array_equal(ak.to_numpy(jets.label), y.astype(int))
    pid = [X[i, X[i, :, 0] > 0, 3].astype(int).tolist() for i in range(30)]
    assert jets.part_pid.tolist() == pid  # stored order kept, ids kept


def test_float32_default_and_sort_by_pt(tmp_path):
    X, y = published_arrays(5, 9, seed=1)
    np.savez(tmp_path / "a.npz", X=X, y=y)
    jets = QGNpzReader(tmp_path / "a.npz", sort_by_pt=True).read()
    assert jets.part_px.type.content.content.primitive == "float32"
    pt = np.hypot(ak.to_numpy(ak.flatten(jets.part_px)), ak.to_numpy(ak.flatten(jets.part_py)))
    pts = ak.unflatten(pt, ak.num(jets.part_px))
    assert ak.all(pts[:, :-1] >= pts[:, 1:] * (1 - 1e-6))


def test_several_files_with_different_padding(tmp_path):
    sizes = {"QG_jets.npz": (7, 11), "QG_jets_1.npz": (5, 23), "QG_jets_10.npz": (3, 4),
             "QG_jets_2.npz": (6, 8)}  # fmt: skip
    arrays = {}
    for k, (name, (n, m)) in enumerate(sizes.items()):
        arrays[name] = published_arrays(n, m, seed=k)
        np.savez(tmp_path / name, X=arrays[name][0], y=arrays[name][1])
    reader = open_dataset(tmp_path / "QG_jets*.npz", dtype=np.float64)
    assert [p.name for p in reader.paths] == [
        "QG_jets.npz",
        "QG_jets_1.npz",
        "QG_jets_2.npz",
        "QG_jets_10.npz",
    ]  # natural order
    assert reader.file_lengths == [7, 5, 6, 3] and len(reader) == 21
    want = [p for name in ("QG_jets.npz", "QG_jets_1.npz", "QG_jets_2.npz", "QG_jets_10.npz")
            for p in expected_p4(arrays[name][0])]  # fmt: skip
    got = jets_p4(reader.read(5, 15))  # spans three files
    for g, w in zip(got, want[5:15], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-12)
    chunks = list(reader.iter_awkward(4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4, 1]
    assert ak.array_equal(ak.concatenate(chunks), reader.read())


def test_round_trip(tmp_path):
    chunk = random_jets(50, seed=2, min_particles=1, max_particles=25, dtype=np.float64)
    jets = chunk.to_awkward()
    path = tmp_path / "rt.npz"
    with QGNpzWriter(path) as writer:
        for a in range(0, 50, 12):
            writer.write(jets[a : a + 12])
    with np.load(path) as f:  # the published layout
        assert sorted(f.files) == ["X", "y"]
        X, y = f["X"], f["y"]
    assert X.dtype == np.float64 and X.shape == (50, int(chunk.counts.max()), 4)
    assert y.shape == (50,)
    np.testing.assert_array_equal(y, chunk.label)
    # zero padding after the last particle, phi within pi of the jet
    for i, c in enumerate(chunk.counts):
        assert np.all(X[i, c:] == 0) and np.all(X[i, :c, 0] > 0)
        if c:
            assert np.ptp(X[i, :c, 2]) < 2 * np.pi
    back = QGNpzReader(path, dtype=np.float64).read()
    for f in ("part_energy", "part_px", "part_py", "part_pz"):
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(back[f])),
            ak.to_numpy(ak.flatten(jets[f])),
            rtol=1e-12,
            atol=1e-9,
        )
    assert ak.array_equal(back.part_pid, jets.part_pid)
    assert ak.array_equal(back.label, jets.label)
    # written again from what was read: the stored X is reproduced
    write_qg_npz(tmp_path / "rt2.npz", back, compressed=True)
    with np.load(tmp_path / "rt2.npz") as f:
        np.testing.assert_allclose(f["X"], X, rtol=1e-12, atol=1e-12)


def test_writer_streams_through_a_spool_and_is_atomic(tmp_path):
    jets = random_jets(6, seed=0, min_particles=1).to_awkward()
    path = tmp_path / "x.npz"
    writer = QGNpzWriter(path)
    writer.write(jets)
    assert not path.exists() and not writer.partial_path.exists()
    writer.close()
    assert path.exists() and len(QGNpzReader(path)) == 6
    with pytest.raises(ValueError, match="part_pid"):
        write_qg_npz(tmp_path / "nopid.npz", random_jets(3, pid=False).to_awkward())
    assert not (tmp_path / "nopid.npz").exists()


def test_compressed_member_streams_with_bounded_memory(tmp_path):
    peaks = []
    for n in (500, 2000):
        X, y = published_arrays(n, 40, seed=n)
        np.savez_compressed(tmp_path / f"m{n}.npz", X=X, y=y)
        reader = QGNpzReader(tmp_path / f"m{n}.npz")
        len(reader)
        tracemalloc.start()
        total = sum(len(c) for c in reader.iter_chunks(100))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert total == n
    assert peaks[1] < 1.3 * peaks[0]
    assert peaks[1] < 2000 * 40 * 4 * 8 / 3


# ------------------------------------------------------------------ bad input


def test_missing_array_names_file(tmp_path):
    X, _ = published_arrays(3, 5)
    np.savez(tmp_path / "noy.npz", X=X)
    with pytest.raises(MissingKeyError, match=r"noy\.npz: no array 'y'.*found \['X'\]"):
        len(QGNpzReader(tmp_path / "noy.npz"))


def test_truncated_and_corrupt_files(tmp_path):
    X, y = published_arrays(50, 30)
    path = tmp_path / "trunc.npz"
    np.savez(path, X=X, y=y)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(JetFileError, match=r"trunc\.npz.*(truncated|corrupt)"):
        QGNpzReader(path).read()
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(JetFileError, match=r"junk\.npz"):
        QGNpzReader(bad).read()


def test_truncated_compressed_member(tmp_path):
    X, _ = published_arrays(50, 30)
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w") as fp:
            np.lib.format.write_array_header_1_0(
                fp, {"descr": "<f8", "fortran_order": False, "shape": (60, 30, 4)}
            )
            fp.write(X.tobytes())  # 50 rows of the 60 announced
        with zf.open("y.npy", "w") as fp:
            np.lib.format.write_array(fp, np.zeros(60))
    reader = QGNpzReader(path)
    assert len(reader.read(0, 40)) == 40
    with pytest.raises(JetFileError, match=r"z\.npz.*truncated"):
        reader.read(40, 60)


def test_nan_names_entry(tmp_path):
    X, y = published_arrays(10, 5)
    X[7, 0, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=y)
    with pytest.raises(JetFileError, match=r"nan\.npz: entry 7 .*non-finite"):
        QGNpzReader(tmp_path / "nan.npz").read()


def test_label_out_of_range(tmp_path):
    X, y = published_arrays(10, 5)
    y[4] = 3
    np.savez(tmp_path / "y.npz", X=X, y=y)
    with pytest.raises(JetFileError, match=r"y\.npz: entry 4 has y = 3\.0; expected 0 or 1"):
        QGNpzReader(tmp_path / "y.npz").read()


def test_unknown_pid_names_entry_and_id(tmp_path):
    X, y = published_arrays(10, 5)
    X[8, 0, 3] = 999
    np.savez(tmp_path / "pid.npz", X=X, y=y)
    with pytest.raises(JetFileError, match=r"pid\.npz: entry 8 .*PDG id 999"):
        QGNpzReader(tmp_path / "pid.npz").read()
    assert len(QGNpzReader(tmp_path / "pid.npz", massless=True).read()) == 10


def test_wrong_shape(tmp_path):
    np.savez(tmp_path / "s.npz", X=np.zeros((4, 3)), y=np.zeros(4))
    with pytest.raises(JetFileError, match=r"s\.npz: X has shape \(4, 3\)"):
        len(QGNpzReader(tmp_path / "s.npz"))
