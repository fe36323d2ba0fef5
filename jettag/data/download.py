"""Download the files of a data card: streamed, resumable, verified, then moved into place.

Each file is streamed into ``<name>.part`` next to its destination with a progress bar. An
interrupted transfer (a dropped connection, a timeout, Ctrl-C) leaves the ``.part`` file;
the next attempt asks the server for the remaining bytes only (HTTP ``Range``) and appends
them. When the transfer is complete the file is checked against the checksum published
in the card (sha256 when the card has one, else md5) and only then renamed to its final
name, so a file under its final name is always complete and verified. A file whose
checksum does not match is deleted, ``.part`` included, and :class:`ChecksumError` names
the file and both hashes.

A file without a published checksum is refused unless ``verify=False`` (``--no-verify``):
an unverified download is a choice, not a default. Nothing is downloaded unless
:func:`download` (``jettag data download``) is called. HTTP uses only the standard library.

The server can be replaced for mirrors and tests: ``base_url=`` (or the environment
variable ``JETTAG_DOWNLOAD_BASE``) maps every file of the card to ``<base_url>/<name>``.

Example:
    >>> from jettag.data.download import download
    >>> paths = download("quark-gluon", "~/data/qg", files=["QG_jets.npz"])  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from jettag._version import __version__
from jettag.data.cards import Checksum, DataCard, FileEntry, load_card

__all__ = [
    "BASE_URL_ENV",
    "ChecksumError",
    "DownloadError",
    "download",
    "download_file",
    "file_digest",
    "resolve_url",
    "select_files",
    "verify_file",
]

#: Environment variable that, when set, replaces the server of every card URL.
BASE_URL_ENV = "JETTAG_DOWNLOAD_BASE"

_CHUNK = 1 << 20
_USER_AGENT = f"jettag/{__version__} (+https://github.com/jettag/jettag)"
# Errors after which a transfer is worth resuming.
_TRANSIENT = (
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    ConnectionError,
    TimeoutError,
    urllib.error.URLError,
)


class ChecksumError(ValueError):
    """A downloaded file does not match the checksum published in its data card."""


class DownloadError(OSError):
    """A file could not be downloaded (HTTP error, or the transfer kept failing)."""


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file (``algorithm`` is a :mod:`hashlib` name, e.g. ``"sha256"``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(
    path: str | os.PathLike[str], checksum: Checksum, *, name: str | None = None
) -> None:
    """Check a file against a published checksum.

    Raises:
        ChecksumError: naming the file (``name`` or the path), the algorithm, the expected
            and the actual digest.
    """
    actual = file_digest(path, checksum.algorithm)
    if actual != checksum.value.lower():
        raise ChecksumError(
            f"{name or path}: {checksum.algorithm} checksum mismatch: expected "
            f"{checksum.value}, found {actual}. The download is corrupt or the file "
            "changed on the server; it was deleted. Retry the download, or report the "
            "mismatch if it persists."
        )


def resolve_url(entry: FileEntry, base_url: str | None = None) -> str:
    """The URL to fetch ``entry`` from: the card's URL, or ``<base_url>/<name>``.

    ``base_url`` defaults to the environment variable ``JETTAG_DOWNLOAD_BASE``.
    """
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    if base is None:
        return entry.url
    return base.rstrip("/") + "/" + urllib.parse.quote(entry.name)


def select_files(card: DataCard, files: Sequence[str] | None = None) -> list[FileEntry]:
    """The files of ``card`` to download: its default files, or those matching ``files``.

    ``files`` holds names or shell-style patterns (``"QG_jets_1?.npz"``) or split names
    (``"test"``).

    Raises:
        KeyError: a name or pattern matches no file (the message lists the card's files).
    """
    if not card.files:
        raise ValueError(
            f"data card {card.name!r} describes a {card.kind} dataset with no files to "
            f"download; see its recipe (jettag data show {card.name})"
        )
    if not files:
        return [f for f in card.files if f.default]
    chosen: list[FileEntry] = []
    for pattern in files:
        hits = [f for f in card.files if fnmatch.fnmatchcase(f.name, pattern) or f.split == pattern]
        if not hits:
            raise KeyError(
                f"no file of data card {card.name!r} matches {pattern!r}; its files are "
                f"{', '.join(f.name for f in card.files)}"
            )
        chosen += [f for f in hits if f not in chosen]
    return chosen


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/200" or "bytes */200"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _transfer(
    url: str, part: Path, *, timeout: float, progress: bool, label: str, expected_size: int | None
) -> None:
    """Fetch the rest of ``url`` into ``part`` (appending from its current size).

    Returns when the server has sent everything it announced; raises a transient error
    (to be retried) when the connection drops early.
    """
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # The range starts at or past the end: the .part file may already be whole.
            total = _total_from_content_range(err.headers.get("Content-Range"))
            if total is not None and total == offset:
                return
            part.unlink()
            raise http.client.IncompleteRead(b"") from err
        raise DownloadError(
            f"{label}: the server answered HTTP {err.code} {err.reason} for {url}"
        ) from err
    with response:
        status = response.status
        if offset and status != 206:
            # The server ignored the Range header: start over.
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = offset + remaining if remaining is not None else expected_size
        mode = "ab" if offset else "wb"
        received = 0
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if remaining is not None and received < remaining:
            raise http.client.IncompleteRead(b"", remaining - received)


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    checksum: Checksum | None,
    size: int | None = None,
    verify: bool = True,
    overwrite: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part`` and verifying it.

    Args:
        url: http(s) URL (or ``file:`` URL).
        dest: final path; the data is first written to ``<dest>.part``.
        checksum: published checksum; required unless ``verify=False``.
        size: expected size in bytes, checked when given.
        verify: check the checksum; ``False`` accepts the file as received.
        overwrite: download again even if ``dest`` exists.
        retries: how many times to resume after a dropped connection or timeout.
        timeout: socket timeout in seconds.
        progress: show a progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``verify`` is on and no checksum is known.
        ChecksumError: the complete file does not match (it is deleted).
        DownloadError: an HTTP error, or the transfer still failed after ``retries``
            resumptions (the ``.part`` file is kept for the next attempt).
    """
    dest = Path(dest).expanduser()
    label = dest.name
    if verify and checksum is None:
        raise ValueError(
            f"{label}: no checksum is recorded for this file, so it cannot be verified; "
            "pass verify=False (jettag data download --no-verify) to download it unverified"
        )
    if dest.exists() and not overwrite:
        if verify and checksum is not None:
            try:
                verify_file(dest, checksum, name=str(dest))
            except ChecksumError as err:
                raise ChecksumError(
                    f"{dest} exists but does not match its checksum ({err}); delete it or "
                    "pass overwrite=True (--overwrite) to download it again"
                ) from err
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if overwrite and part.exists():
        part.unlink()
    attempt = 0
    while True:
        try:
            _transfer(
                url, part, timeout=timeout, progress=progress, label=label, expected_size=size
            )
            break
        except _TRANSIENT as err:
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{label}: transfer from {url} failed after {retries} resumption(s) "
                    f"({type(err).__name__}: {err}); {have} bytes are kept in {part} and the "
                    "next attempt resumes from there"
                ) from err
            time.sleep(min(2.0 ** (attempt - 1), 30.0) * 0.1)
    if size is not None:
        got = part.stat().st_size
        if got != size:
            part.unlink()
            raise DownloadError(
                f"{label}: expected {size} bytes, received {got}; the partial file was deleted"
            )
    if verify and checksum is not None:
        try:
            verify_file(part, checksum, name=label)
        except ChecksumError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest


def download(
    card: str | DataCard,
    directory: str | os.PathLike[str],
    *,
    files: Sequence[str] | None = None,
    base_url: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> list[Path]:
    """Download the files of a data card into ``directory``.

    Args:
        card: a card name (``"quark-gluon"``) or a :class:`~jettag.data.cards.DataCard`.
        directory: where the files go (created if needed).
        files: names, shell patterns or split names to download; default: the card's
            default files.
        base_url: fetch every file from ``<base_url>/<name>`` instead of the card's URL
            (default: the environment variable ``JETTAG_DOWNLOAD_BASE``, if set).
        verify: check each file against its published checksum (files without one are
            refused unless this is ``False``).
        overwrite, retries, timeout, progress: as in :func:`download_file`.

    Returns:
        The paths of the downloaded (or already present and verified) files.

    Raises:
        ValueError: the card has no files, or ``verify`` is on and a selected file has no
            checksum (checked for all files before anything is fetched).
        KeyError: a requested file matches nothing in the card.
        ChecksumError, DownloadError: as in :func:`download_file`.
    """
    if not isinstance(card, DataCard):
        card = load_card(card)
    entries = select_files(card, files)
    if verify:
        missing = [e.name for e in entries if e.checksum is None]
        if missing:
            raise ValueError(
                f"data card {card.name!r} records no checksum for {', '.join(missing)} "
                "(not recorded), so these files cannot be verified; pass verify=False "
                "(jettag data download --no-verify) to download them unverified"
            )
    out_dir = Path(directory).expanduser()
    return [
        download_file(
            resolve_url(entry, base_url),
            out_dir / entry.name,
            checksum=entry.checksum,
            size=entry.size,
            verify=verify,
            overwrite=overwrite,
            retries=retries,
            timeout=timeout,
            progress=progress,
        )
        for entry in entries
    ]
