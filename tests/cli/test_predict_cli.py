"""``jettag predict`` (and ``jettag export``) end to end: ROOT files written here with
jagged branches of any names, other input formats, one row per entry with its entry number,
empty jets, refusal to overwrite, clear errors and no partial files."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

from jettag import cli
from jettag.data import JetBatch
from jettag.hub import Tagger, read_onnx_metadata
from jettag.testing import random_jets

EMPTY = 3  # entry of the jet without constituents


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # until `predict` and `export` are listed in jettag.cli._SUBCOMMANDS
    missing = tuple(
        m for m in ("jettag.cli.predict", "jettag.cli.export") if m not in cli._SUBCOMMANDS
    )
    monkeypatch.setattr(cli, "_SUBCOMMANDS", (*cli._SUBCOMMANDS, *missing))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def jets() -> JetBatch:
    """Eight jets, entry 3 without constituents."""
    jets = random_jets(8, 16, generator=7, min_particles=2, massive=True, layout="batch",
                       dtype=torch.float32)
    counts = jets.counts.clone()
    keep = torch.ones(jets.num_particles, dtype=torch.bool)
    keep[jets.ptr[EMPTY] : jets.ptr[EMPTY + 1]] = False
    counts[EMPTY] = 0
    return JetBatch.from_counts(jets.p4[keep], counts)


@pytest.fixture(scope="module")
def tagger_file(workdir: Path) -> Path:
    torch.manual_seed(0)
    tagger = Tagger.from_config("efn", {"phi_channels": [16, 16], "f_channels": [16]},
                                class_names=["QCD", "top"], signal="top")
    return tagger.save(workdir / "top-efn.safetensors")


def write_root(path: Path, jets: JetBatch, *, names: dict[str, str], tree: str = "Events",
               extra: dict[str, np.ndarray] | None = None) -> None:
    """A TTree with one jagged branch per component (own names) sharing a counter."""
    counts = jets.counts.numpy()
    p4 = jets.p4.numpy()
    components = {"part_energy": p4[:, 0], "part_px": p4[:, 1], "part_py": p4[:, 2],
                  "part_pz": p4[:, 3], **(extra or {})}
    record = ak.zip({names.get(k, k): ak.unflatten(v, counts) for k, v in components.items()})
    with uproot.recreate(path) as f:
        t = f.mktree(tree, {"PF": record.type.content, "event": np.int64},
                     field_name=lambda outer, inner: inner, counter_name=lambda c: "nPF")
        t.extend({"PF": record, "event": np.arange(len(jets)) + 1000})


def run(*argv: str) -> int:
    return cli.main(["predict", *map(str, argv)])


PF_NAMES = {"part_energy": "PF_e", "part_px": "PF_px", "part_py": "PF_py", "part_pz": "PF_pz"}
PF_ARGS = [a for k, v in PF_NAMES.items() for a in ("--branch", f"{k}={v}")]


def read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table[name].to_numpy() for name in table.column_names}


def check_scores(columns: dict[str, np.ndarray], tagger_file: Path, jets: JetBatch) -> None:
    expected = Tagger.load(tagger_file).predict(jets.to_awkward())
    assert list(columns) == ["entry", "prob_QCD", "prob_top", "score", "empty"]
    np.testing.assert_array_equal(columns["entry"], np.arange(len(jets)))
    np.testing.assert_array_equal(columns["empty"], (np.arange(len(jets)) == EMPTY).astype(int))
    assert np.isnan(columns["score"][EMPTY]) and np.isnan(columns["prob_QCD"][EMPTY])
    np.testing.assert_allclose(columns["score"], expected.score, rtol=1e-6)
    np.testing.assert_allclose(columns["prob_QCD"], expected.probabilities[:, 0], rtol=1e-6)


def test_root_with_branch_mapping_gives_one_row_per_entry(workdir, tagger_file, jets, capsys):
    source = workdir / "events.root"
    write_root(source, jets, names=PF_NAMES)
    out = workdir / "scores.parquet"
    code = run("--model", tagger_file, "--input", source, "--tree", "Events", *PF_ARGS,
               "--output", out, "--chunk-size", "3", "--batch-size", "2", "--quiet")
    assert code == 0
    check_scores(read_parquet(out), tagger_file, jets)
    assert "8 jets scored" in capsys.readouterr().err
    # ROOT output: a friend-able tree with the same rows
    out_root = workdir / "scores.root"
    assert run("--model", tagger_file, "--input", source, "--tree", "Events", *PF_ARGS,
               "--output", out_root, "--quiet") == 0
    scores = uproot.open(out_root)["scores"].arrays(library="np")
    check_scores({k: scores[k] for k in ("entry", "prob_QCD", "prob_top", "score", "empty")},
                 tagger_file, jets)


def test_pt_eta_phi_mass_branches_give_the_same_scores(workdir, tagger_file, jets):
    p4 = jets.p4.double()
    pt = torch.hypot(p4[:, 1], p4[:, 2])
    eta = torch.asinh(p4[:, 3] / pt)
    phi = torch.atan2(p4[:, 2], p4[:, 1])
    mass = (p4[:, 0] ** 2 - (p4[:, 1:] ** 2).sum(1)).clamp_min(0).sqrt()
    extra = {"part_pt": pt.numpy(), "part_eta": eta.numpy(), "part_phi": phi.numpy(),
             "part_mass": mass.numpy()}
    source = workdir / "cylindrical.root"
    write_root(source, jets, names={"part_pt": "pf_pt", "part_eta": "pf_eta",
                                    "part_phi": "pf_phi", "part_mass": "pf_m"}, extra=extra)
    out = workdir / "cylindrical.parquet"
    code = run("--model", tagger_file, "--input", source, "--tree", "Events", "--quiet",
               "--branch", "part_pt=pf_pt", "--branch", "part_eta=pf_eta",
               "--branch", "part_phi=pf_phi", "--branch", "part_mass=pf_m", "--output", out)
    assert code == 0
    columns = read_parquet(out)
    expected = Tagger.load(tagger_file).predict(jets).score
    np.testing.assert_allclose(columns["score"], expected, rtol=1e-4, equal_nan=True)


def test_existing_output_is_never_overwritten_without_the_flag(workdir, tagger_file, jets,
                                                               capsys):
    source = workdir / "events2.root"
    write_root(source, jets, names=PF_NAMES)
    out = workdir / "kept.parquet"
    out.write_bytes(b"analysis results")
    code = run("--model", tagger_file, "--input", source, "--tree", "Events", *PF_ARGS,
               "--output", out, "--quiet")
    assert code == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"analysis results"
    assert run("--model", tagger_file, "--input", source, "--tree", "Events", *PF_ARGS,
               "--output", out, "--quiet", "--overwrite") == 0
    check_scores(read_parquet(out), tagger_file, jets)


def no_leftovers(directory: Path, before: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} == before


def test_missing_branch_tree_and_unreadable_file_are_clear_errors(tmp_path, tagger_file, jets,
                                                                  capsys):
    source = tmp_path / "events.root"
    write_root(source, jets, names=PF_NAMES)
    before = {p.name for p in tmp_path.iterdir()}
    out = tmp_path / "s.parquet"
    assert run("--model", tagger_file, "--input", source, "--tree", "Events",
               "--output", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert "no branch for part_px (branch 'part_px')" in err and "--branch part_px=" in err
    assert "PF_px" in err and str(source) in err
    assert run("--model", tagger_file, "--input", source, "--tree", "Jets", *PF_ARGS,
               "--output", out, "--quiet") == 2
    assert "no tree 'Jets'" in capsys.readouterr().err
    assert run("--model", tagger_file, "--input", source, "--tree", "Events",
               "--branch", "part_px", "--output", out) == 2
    assert "CANONICAL=BRANCH" in capsys.readouterr().err
    broken = tmp_path / "broken.root"
    broken.write_bytes(source.read_bytes()[:300])  # truncated
    assert run("--model", tagger_file, "--input", broken, "--output", out, "--quiet") == 2
    assert "broken.root: cannot open" in capsys.readouterr().err
    assert run("--model", tagger_file, "--input", tmp_path / "absent.root", "--output", out) == 2
    assert "absent.root" in capsys.readouterr().err
    assert run("--model", "no-such-tagger", "--input", source, "--output", out) == 2
    assert "no pretrained tagger 'no-such-tagger'" in capsys.readouterr().err
    assert run("--model", tagger_file, "--input", source, "--output", tmp_path / "s.csv") == 2
    assert "unsupported output extension" in capsys.readouterr().err
    no_leftovers(tmp_path, before | {"broken.root"})


def test_failure_mid_run_leaves_no_partial_output(tmp_path, tagger_file, jets, capsys):
    p4 = jets.p4.clone()
    p4[-1, 1] = float("nan")  # the last jet is broken: found in the last chunk
    source = tmp_path / "nan.root"
    write_root(source, _unchecked(p4, jets.ptr), names=PF_NAMES)
    before = {p.name for p in tmp_path.iterdir()}
    code = run("--model", tagger_file, "--input", source, "--tree", "Events", *PF_ARGS,
               "--output", tmp_path / "s.root", "--chunk-size", "2", "--quiet")
    assert code == 2
    assert "finite" in capsys.readouterr().err
    no_leftovers(tmp_path, before)


def _unchecked(p4: torch.Tensor, ptr: torch.Tensor) -> JetBatch:
    """A batch holding a NaN (JetBatch refuses those; the file writer must not care)."""
    batch = JetBatch.__new__(JetBatch)
    batch._set(p4, ptr, None, None, {})
    return batch


def test_other_input_formats_and_tagger_fields(tmp_path, tagger_file, jets, capsys):
    from jettag.data.formats import write_parquet, write_qg_npz, write_top_hdf5

    labelled = JetBatch(jets.p4, jets.ptr, label=torch.zeros(len(jets), dtype=torch.int64))
    write_parquet(tmp_path / "jets.parquet", labelled)
    write_top_hdf5(tmp_path / "top.h5", labelled)
    for name in ("jets.parquet", "top.h5"):
        out = tmp_path / f"{name}.scores.parquet"
        assert run("--model", tagger_file, "--input", tmp_path / name, "--output", out,
                   "--quiet") == 0
        check_scores(read_parquet(out), tagger_file, jets)
    # a quark/gluon tagger reads the PDG id of the npz files; ROOT files need a mapping
    torch.manual_seed(1)
    qg = Tagger.from_config("pfn", {"phi_channels": [8], "f_channels": [8], "pid": "float"},
                            inputs={"x_fields": ["part_pid"]})
    qg_file = qg.save(tmp_path / "qg.safetensors")
    pid = np.array([211, -211, 22, 130])[np.arange(jets.num_particles) % 4]
    array = ak.with_field(labelled.to_awkward(), ak.unflatten(pid, jets.counts.numpy()),
                          "part_pid")
    write_qg_npz(tmp_path / "QG_jets.npz", array)
    assert run("--model", qg_file, "--input", tmp_path / "QG_jets.npz",
               "--output", tmp_path / "qg.parquet", "--quiet") == 0
    columns = read_parquet(tmp_path / "qg.parquet")
    assert len(columns["entry"]) == len(jets) and columns["empty"].tolist()[EMPTY] == 1
    source = tmp_path / "events.root"
    write_root(source, jets, names=PF_NAMES)
    assert run("--model", qg_file, "--input", source, "--tree", "Events", *PF_ARGS,
               "--output", tmp_path / "b.parquet", "--quiet") == 2
    assert "part_pid (branch 'part_pid')" in capsys.readouterr().err


def test_export_command_writes_a_verified_onnx_file(tmp_path, tagger_file, capsys):
    out = tmp_path / "tagger.onnx"
    assert cli.main(["export", "--model", str(tagger_file), "--format", "onnx",
                     "--output", str(out)]) == 0
    assert read_onnx_metadata(out)["class_names"] == ["QCD", "top"]
    assert "probabilities over ['QCD', 'top']" in capsys.readouterr().err
    assert cli.main(["export", "--model", str(tagger_file), "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
