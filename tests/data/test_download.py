"""Downloads against a local HTTP server (127.0.0.1 only) with Range support written here."""

from __future__ import annotations

import copy
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jettag.cli.data import register
from jettag.data.cards import DataCard, load_card
from jettag.data.download import (
    BASE_URL_ENV,
    ChecksumError,
    DownloadError,
    download,
    download_file,
    resolve_url,
    select_files,
)

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to connect anywhere but this machine."""
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOOPBACK:
            raise AssertionError(f"test tried to contact a non-loopback address: {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.delenv(BASE_URL_ENV, raising=False)


class _Server:
    """Files served from memory; records every request; can cut a transfer short once."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.truncate_once: dict[str, int] = {}
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                range_header = self.headers.get("Range")
                server.log.append((name, range_header))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "not found")
                    return
                start = 0
                if range_header and not server.ignore_range:
                    assert range_header.startswith("bytes=") and range_header.endswith("-")
                    start = int(range_header[len("bytes=") : -1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.truncate_once.pop(name, None)
                if cut is not None:
                    # Announce the whole body, send part of it, then drop the connection.
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


def _payload(n: int, seed: int = 0) -> bytes:
    # Deterministic, non-repeating bytes (so a misplaced resume would change the hash).
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def _card(files: dict[str, bytes | None], *, md5: bool = False) -> DataCard:
    """A copy of the quark-gluon card whose files are ``files`` (None = no checksum)."""
    data = copy.deepcopy(load_card("quark-gluon").data)
    data["files"] = []
    for name, content in files.items():
        checksum = None
        if content is not None:
            algo = "md5" if md5 else "sha256"
            checksum = {algo: hashlib.new(algo, content).hexdigest()}
        data["files"].append(
            {
                "name": name,
                "url": f"https://example.invalid/records/1/files/{name}",
                "split": "train",
                "size": None,
                "checksum": checksum,
                "default": True,
            }
        )
    data["splits"] = [{"name": "train", "files": list(files), "description": "test files"}]
    return DataCard(data)


def test_good_file_is_verified_and_in_place(server: _Server, tmp_path: Path) -> None:
    content = _payload(300_000)
    server.files["a.npz"] = content
    card = _card({"a.npz": content})
    paths = download(card, tmp_path, base_url=server.url, progress=False)
    assert paths == [tmp_path / "a.npz"]
    assert paths[0].read_bytes() == content
    assert not (tmp_path / "a.npz.part").exists()
    assert server.log == [("a.npz", None)]
    # A second call finds the verified file and contacts nobody.
    assert download(card, tmp_path, base_url=server.url, progress=False) == paths
    assert len(server.log) == 1


def test_md5_checksum_is_used_when_no_sha256(server: _Server, tmp_path: Path) -> None:
    content = _payload(10_000, seed=3)
    server.files["b.npz"] = content
    card = _card({"b.npz": content}, md5=True)
    assert card.files[0].checksum.algorithm == "md5"
    (path,) = download(card, tmp_path, base_url=server.url, progress=False)
    assert path.read_bytes() == content


def test_corrupt_file_raises_naming_file_and_both_hashes(server: _Server, tmp_path: Path) -> None:
    good = _payload(50_000)
    bad = bytearray(good)
    bad[12345] ^= 0xFF
    server.files["c.npz"] = bytes(bad)
    card = _card({"c.npz": good})
    expected = hashlib.sha256(good).hexdigest()
    actual = hashlib.sha256(bytes(bad)).hexdigest()
    with pytest.raises(ChecksumError) as info:
        download(card, tmp_path, base_url=server.url, progress=False)
    message = str(info.value)
    assert "c.npz" in message and expected in message and actual in message
    assert "sha256" in message
    assert not (tmp_path / "c.npz").exists()
    assert not (tmp_path / "c.npz.part").exists()


def test_interrupted_transfer_resumes_with_range(server: _Server, tmp_path: Path) -> None:
    content = _payload(400_000, seed=1)
    server.files["d.npz"] = content
    server.truncate_once["d.npz"] = 150_000
    card = _card({"d.npz": content})
    with pytest.raises(DownloadError, match=r"d\.npz") as info:
        download(card, tmp_path, base_url=server.url, progress=False, retries=0)
    assert "resumes" in str(info.value)
    part = tmp_path / "d.npz.part"
    assert part.stat().st_size == 150_000
    assert part.read_bytes() == content[:150_000]
    assert not (tmp_path / "d.npz").exists()

    (path,) = download(card, tmp_path, base_url=server.url, progress=False)
    assert path.read_bytes() == content
    assert not part.exists()
    assert server.log == [("d.npz", None), ("d.npz", "bytes=150000-")]


def test_retry_within_one_call_resumes(server: _Server, tmp_path: Path) -> None:
    content = _payload(200_000, seed=2)
    server.files["e.npz"] = content
    server.truncate_once["e.npz"] = 70_001
    card = _card({"e.npz": content})
    (path,) = download(card, tmp_path, base_url=server.url, progress=False, retries=2)
    assert path.read_bytes() == content
    assert server.log == [("e.npz", None), ("e.npz", "bytes=70001-")]


def test_server_ignoring_range_restarts_cleanly(server: _Server, tmp_path: Path) -> None:
    content = _payload(100_000, seed=4)
    server.files["f.npz"] = content
    server.ignore_range = True
    (tmp_path / "f.npz.part").write_bytes(content[:30_000])
    card = _card({"f.npz": content})
    (path,) = download(card, tmp_path, base_url=server.url, progress=False)
    assert path.read_bytes() == content
    assert server.log == [("f.npz", "bytes=30000-")]


def test_complete_part_file_is_finished_after_416(server: _Server, tmp_path: Path) -> None:
    content = _payload(20_000, seed=5)
    server.files["g.npz"] = content
    (tmp_path / "g.npz.part").write_bytes(content)
    card = _card({"g.npz": content})
    (path,) = download(card, tmp_path, base_url=server.url, progress=False)
    assert path.read_bytes() == content
    assert server.log == [("g.npz", "bytes=20000-")]


def test_missing_checksum_is_refused_before_any_request(server: _Server, tmp_path: Path) -> None:
    content = _payload(1000)
    server.files["h.npz"] = content
    card = _card({"h.npz": None})
    with pytest.raises(ValueError, match=r"h\.npz.*not recorded.*--no-verify"):
        download(card, tmp_path, base_url=server.url, progress=False)
    assert server.log == []
    (path,) = download(card, tmp_path, base_url=server.url, progress=False, verify=False)
    assert path.read_bytes() == content


def test_http_error_names_the_file(server: _Server, tmp_path: Path) -> None:
    card = _card({"missing.npz": b"x"})
    with pytest.raises(DownloadError, match=r"missing\.npz.*HTTP 404"):
        download(card, tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "missing.npz").exists()


def test_size_mismatch_is_an_error(server: _Server, tmp_path: Path) -> None:
    content = _payload(5000)
    server.files["s.bin"] = content
    url = f"{server.url}/s.bin"
    with pytest.raises(DownloadError, match="expected 4000 bytes, received 5000"):
        download_file(
            url, tmp_path / "s.bin", checksum=None, size=4000, verify=False, progress=False
        )
    assert not (tmp_path / "s.bin").exists()
    assert not (tmp_path / "s.bin.part").exists()


def test_base_url_from_environment(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = _payload(2048, seed=6)
    server.files["QG_jets.npz"] = content
    card = _card({"QG_jets.npz": content})
    assert resolve_url(card.files[0]) == card.files[0].url
    monkeypatch.setenv(BASE_URL_ENV, server.url + "/")
    assert resolve_url(card.files[0]) == f"{server.url}/QG_jets.npz"
    (path,) = download(card, tmp_path, progress=False)
    assert path.read_bytes() == content


def test_existing_corrupt_file_is_reported_not_overwritten(server: _Server, tmp_path: Path) -> None:
    content = _payload(3000, seed=7)
    server.files["k.npz"] = content
    card = _card({"k.npz": content})
    (tmp_path / "k.npz").write_bytes(b"old")
    with pytest.raises(ChecksumError, match="overwrite"):
        download(card, tmp_path, base_url=server.url, progress=False)
    assert server.log == []
    (path,) = download(card, tmp_path, base_url=server.url, progress=False, overwrite=True)
    assert path.read_bytes() == content


def test_select_files_by_name_pattern_and_split() -> None:
    card = load_card("quark-gluon")
    default = select_files(card)
    assert [f.name for f in default][:2] == ["QG_jets.npz", "QG_jets_1.npz"]
    assert len(default) == 20
    assert all(f.checksum is not None and f.checksum.algorithm == "sha256" for f in default)
    assert [f.name for f in select_files(card, ["test"])] == ["QG_jets_18.npz", "QG_jets_19.npz"]
    assert len(select_files(card, ["QG_jets_withbc_*.npz"])) == 20
    with pytest.raises(KeyError, match=r"QG_jets_99\.npz"):
        select_files(card, ["QG_jets_99.npz"])
    with pytest.raises(ValueError, match="no files to download"):
        select_files(load_card("generated-top-tagging"))


def test_cli_download_with_card_file(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    content = _payload(64_000, seed=8)
    server.files["cli.npz"] = content
    card_path = tmp_path / "local-card.yaml"
    card_path.write_text(yaml.safe_dump(_card({"cli.npz": content}).data), encoding="utf-8")
    parser = argparse.ArgumentParser(prog="jettag")
    register(parser.add_subparsers())
    out_dir = tmp_path / "out"
    args = parser.parse_args(
        [
            "data",
            "download",
            str(card_path),
            "--dir",
            str(out_dir),
            "--base-url",
            server.url,
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    assert (out_dir / "cli.npz").read_bytes() == content
    assert str(out_dir / "cli.npz") in capsys.readouterr().out

    args = parser.parse_args(
        ["data", "download", str(card_path), "--dir", str(out_dir), "--file", "nothing*", "--quiet"]
    )
    assert args.func(args) == 1
    assert "nothing*" in capsys.readouterr().err
