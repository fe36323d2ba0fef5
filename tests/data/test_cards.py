"""Data cards: every card follows the schema, broken cards are rejected, renderings are current."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jettag.cli.data import register
from jettag.data.cards import (
    CARD_DIR,
    SCHEMA,
    CardError,
    DataCard,
    list_cards,
    load_card,
    render_markdown,
    schema_json,
    validate_card,
)

RENDERED = Path(__file__).resolve().parents[2] / "data_cards"
EXPECTED = {
    "top-tagging",
    "quark-gluon",
    "jetclass",
    "generated-top-tagging",
    "generated-quark-gluon",
    "generated-b-tagging",
}


def _raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((CARD_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def test_the_expected_cards_are_shipped() -> None:
    assert set(list_cards()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_card_validates_against_the_schema(name: str) -> None:
    import jsonschema

    raw = _raw(name)
    jsonschema.Draft202012Validator(SCHEMA).validate(raw)  # the schema alone
    card = load_card(name)  # the schema plus the cross-checks
    assert card.name == name == raw["name"]
    assert card.feature_set()  # the default feature set exists
    if card.kind == "public":
        assert card.source["record"] is not None and card.source["doi"].startswith("10.5281/")
        assert any(f.default for f in card.files)
    else:
        assert card.files == ()


def _broken(mutate: Any, name: str = "quark-gluon") -> dict[str, Any]:
    data = copy.deepcopy(_raw(name))
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("licence"), "'licence' is a required property"),
        (
            lambda d: d["files"][0]["checksum"].update(sha256="abc123"),
            r"card\.files\[0\]\.checksum",
        ),
        (lambda d: d["files"][0]["checksum"].update(sha1="0" * 40), "sha1"),
        (lambda d: d["files"][0].update(size=-1), r"files\[0\]\.size"),
        (lambda d: d["files"][0].update(url=None), r"files\[0\]\.url"),
        (lambda d: d.update(kind="mirror"), r"card\.kind"),
        (
            lambda d: d["features"]["sets"]["kin"]["groups"]["points"].update(pad_mode="edge"),
            "pad_mode",
        ),
        (
            lambda d: d["features"]["sets"]["kin"]["groups"]["features"]["vars"][0].update(
                centre="x"
            ),
            "centre",
        ),
        (lambda d: d["splits"][0]["files"].append("QG_jets_99.npz"), "QG_jets_99.npz"),
        (lambda d: d["features"].update(default="missing"), "features.default"),
        (lambda d: d["labels"]["classes"].reverse(), "0..K-1"),
        (
            lambda d: d["features"]["sets"]["kin"]["groups"]["features"]["vars"][0].update(
                clip=[5, -5]
            ),
            r"clip of part_pt_log",
        ),
        (lambda d: d.update(surprise=True), "surprise"),
        (lambda d: d["files"].append(copy.deepcopy(d["files"][0])), "unique"),
    ],
)
def test_a_broken_card_fails(mutate: Any, message: str) -> None:
    data = _broken(mutate)
    with pytest.raises(CardError, match=message) as info:
        validate_card(data, source="broken.yaml")
    assert "broken.yaml" in str(info.value)


def test_a_generated_card_with_files_fails() -> None:
    top = _raw("top-tagging")
    data = _broken(lambda d: d.update(files=top["files"][:1]), "generated-top-tagging")
    with pytest.raises(CardError, match="generated card lists no files"):
        DataCard(data)


def test_load_card_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"available cards: .*top-tagging"):
        load_card("top-taging")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_card(tmp_path / "nothing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(bad)
    bad.write_text("- a list\n")
    with pytest.raises(CardError, match="mapping"):
        load_card(bad)
    good = tmp_path / "copy.yaml"
    good.write_text((CARD_DIR / "jetclass.yaml").read_text())
    assert load_card(good).name == "jetclass"


def test_rendered_markdown_is_up_to_date() -> None:
    if not RENDERED.is_dir():
        pytest.skip(f"{RENDERED} not present (installed package without the repository)")
    stale = [
        name
        for name in list_cards()
        if not (RENDERED / f"{name}.md").is_file()
        or (RENDERED / f"{name}.md").read_text(encoding="utf-8") != render_markdown(load_card(name))
    ]
    assert not stale, (
        f"data_cards/ renderings out of date for {stale}; run `jettag data render --out data_cards`"
    )
    orphans = {p.stem for p in RENDERED.glob("*.md")} - set(list_cards()) - {"README"}
    assert not orphans, f"data_cards/ has renderings of cards that no longer exist: {orphans}"
    assert (RENDERED / "schema.json").read_text(encoding="utf-8") == schema_json()
    readme = (RENDERED / "README.md").read_text(encoding="utf-8")
    assert all(f"[`{name}`]({name}.md)" in readme for name in list_cards())


def test_schema_json_is_the_schema() -> None:
    assert json.loads(schema_json()) == SCHEMA


def test_rendering_says_not_recorded_for_missing_numbers() -> None:
    text = render_markdown(load_card("top-tagging"))
    assert "| `train.h5` | train | 1,211,000 | not recorded | not recorded | yes |" in text
    assert "md5: `4fca2e47afbf321b0f201da6b804c404`" in text
    assert "--no-verify" in text


def test_published_numbers() -> None:
    """Spot checks of numbers copied from published sources (see each card's provenance)."""
    qg = load_card("quark-gluon")
    first = qg.file("QG_jets.npz")
    assert first.checksum.algorithm == "sha256"
    assert first.checksum.value == (
        "3f27a02eab06e8b83ccc9d25638021e6e24c9361341730961f9d560dee12c257"
    )
    assert first.checksums["md5"] == "f5d052f10a79c6e8b9382637aca0ef52"
    assert qg.file("QG_jets_19.npz").checksums["md5"] == "6753508e34014cc69714a01fca20ec38"
    assert qg.file("QG_jets_withbc_19.npz").checksums["md5"] == ("5fd9bcfa8baafb6b3f6efb5114420976")
    assert sum(f.jets for f in qg.files if f.default) == 2_000_000
    assert qg.recipe["jets"]["abs_rapidity_max"] == 2.0
    assert any("1.7" in c for c in qg.caveats)
    jc = load_card("jetclass")
    assert jc.file("JetClass_Pythia_val_5M.tar").checksums == {
        "md5": "7235ccb577ed85023ea3ab4d5e6160cf"
    }
    assert [c["field"] for c in jc.labels["classes"]] == [
        "label_QCD",
        "label_Hbb",
        "label_Hcc",
        "label_Hgg",
        "label_H4q",
        "label_Hqql",
        "label_Zqq",
        "label_Wqq",
        "label_Tbqq",
        "label_Tbl",
    ]
    top = load_card("top-tagging")
    assert [f.jets for f in top.files if f.default] == [1_211_000, 403_000, 404_000]
    assert all(f.checksum is None for f in top.files if f.default)
    gen = load_card("generated-top-tagging")
    assert gen.recipe["jets"]["massless_constituents"] is True
    assert gen.recipe["jets"]["pt_min_gev"] == 550 and gen.recipe["jets"]["pt_max_gev"] == 650


def test_generated_cards_follow_the_generator_defaults() -> None:
    pytest.importorskip("awkward")
    from jettag.data.generate import btag, quark_gluon, top

    t = load_card("generated-top-tagging").recipe
    assert t["sqrt_s_tev"] * 1000 == top.DEFAULTS["ecm"]
    assert t["mpi"] == top.DEFAULTS["mpi"]
    assert t["jets"]["radius"] == top.DEFAULTS["jet_radius"]
    assert (t["jets"]["pt_min_gev"], t["jets"]["pt_max_gev"]) == (
        top.DEFAULTS["min_jet_pt"],
        top.DEFAULTS["max_jet_pt"],
    )
    assert t["jets"]["abs_eta_max"] == top.DEFAULTS["max_abs_eta"]
    assert t["jets"]["max_constituents"] == top.DEFAULTS["max_constituents"]
    assert t["jets"]["constituent_pt_min_gev"] == top.DEFAULTS["min_constituent_pt"]
    assert t["jets"]["massless_constituents"] == top.DEFAULTS["massless"]
    assert set(t["pythia"]) <= set(top.pythia_settings("top", top.DEFAULTS))
    q = load_card("generated-quark-gluon").recipe
    assert q["sqrt_s_tev"] * 1000 == quark_gluon.DEFAULTS["ecm"]
    assert q["mpi"] == quark_gluon.DEFAULTS["mpi"]
    assert q["jets"]["radius"] == quark_gluon.DEFAULTS["jet_radius"]
    assert q["jets"]["abs_rapidity_max"] == quark_gluon.DEFAULTS["max_rapidity"]
    assert set(q["pythia"]) <= set(quark_gluon.pythia_settings("quark", quark_gluon.DEFAULTS))
    b = load_card("generated-b-tagging").recipe
    assert b["sqrt_s_tev"] * 1000 == btag.DEFAULTS["ecm"]
    assert b["jets"]["radius"] == btag.DEFAULTS["jet_radius"]
    assert b["jets"]["pt_min_gev"] == btag.DEFAULTS["min_jet_pt"]
    assert b["jets"]["abs_eta_max"] == btag.DEFAULTS["max_abs_eta"]
    assert set(b["pythia"]) <= set(btag.pythia_settings("b", btag.DEFAULTS))
    labels = {c["name"]: c["value"] for c in load_card("generated-b-tagging").labels["classes"]}
    assert labels == btag.CLASSES


def test_generated_cards_name_their_recipe() -> None:
    pytest.importorskip("awkward")
    from jettag.data.generate import get_recipe

    for name in ("top-tagging", "quark-gluon", "b-tagging"):
        card = load_card(f"generated-{name}")
        assert card.source["generator_module"] == get_recipe(name).module
        assert f'generate("{name}"' in card.source["command"]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jettag")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_show_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPECTED)
    assert "no files" in out and "20/41 files" in out
    assert _cli(["data", "show", "top-tagging"]) == 0
    assert capsys.readouterr().out == render_markdown(load_card("top-tagging"))
    assert _cli(["data", "show", "jetclass", "--format", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == _raw("jetclass")
    assert _cli(["data", "render", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "quark-gluon.md").read_text() == render_markdown(load_card("quark-gluon"))
    assert (tmp_path / "schema.json").is_file()
