"""``jettag data``: list, show and download datasets described by data cards.

Subcommands:

- ``jettag data list``: one line per card (name, kind, files, title).
- ``jettag data show NAME [--format markdown|yaml]``: print a card.
- ``jettag data download NAME --dir DIR [--file F ...] [--base-url URL] [--no-verify]``:
  fetch the card's files, resumable and checksum-verified.
- ``jettag data render --out DIR``: regenerate the Markdown renderings and the JSON schema
  (the repository's ``data_cards/``).

``NAME`` is a card name (``jettag data list``) or the path of a card YAML file.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jettag.data.cards import list_cards, load_card, render_all

__all__ = ["register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` command group to the ``jettag`` sub-parsers."""
    parser = subparsers.add_parser(
        "data",
        help="list, show and download datasets (data cards)",
        description="Datasets described by data cards: list them, print one, download its "
        "files (resumable, checksum-verified), or render the cards to Markdown.",
    )
    parser.set_defaults(func=lambda args: _help(parser))
    sub = parser.add_subparsers(title="data commands", metavar="COMMAND")

    p_list = sub.add_parser("list", help="list the data cards")
    p_list.set_defaults(func=_cmd_list)

    p_show = sub.add_parser("show", help="print a data card")
    p_show.add_argument("name", help="card name (see `jettag data list`) or path of a card YAML")
    p_show.add_argument("--format", choices=("markdown", "yaml"), default="markdown",
                        help="output format (default: markdown)")
    p_show.set_defaults(func=_cmd_show)

    p_dl = sub.add_parser(
        "download",
        help="download the files of a data card",
        description="Download a dataset's files into DIR. Transfers resume after an "
        "interruption (a `.part` file is kept) and every file is checked against the "
        "checksum published in its card before it gets its final name.",
    )
    p_dl.add_argument("name", help="card name (see `jettag data list`) or path of a card YAML")
    p_dl.add_argument("--dir", required=True, help="directory to download into")
    p_dl.add_argument("--file", action="append", dest="files", metavar="FILE",
                      help="file name, shell pattern or split to download (repeatable); "
                      "default: the card's default files")
    p_dl.add_argument("--base-url", default=None,
                      help="fetch every file from BASE_URL/<name> instead of the card's URL "
                      "(default: $JETTAG_DOWNLOAD_BASE if set)")
    p_dl.add_argument("--no-verify", action="store_true",
                      help="do not check checksums (needed for files without a recorded one)")
    p_dl.add_argument("--overwrite", action="store_true", help="download files that exist")
    p_dl.add_argument("--retries", type=int, default=3,
                      help="resumptions after a dropped connection (default: 3)")
    p_dl.add_argument("--timeout", type=float, default=60.0,
                      help="socket timeout in seconds (default: 60)")
    p_dl.add_argument("--quiet", action="store_true", help="no progress bars")
    p_dl.set_defaults(func=_cmd_download)

    p_render = sub.add_parser("render", help="write the cards as Markdown and the JSON schema")
    p_render.add_argument("--out", required=True, help="output directory (e.g. data_cards)")
    p_render.set_defaults(func=_cmd_render)
    return parser


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_cards():
        card = load_card(name)
        n_default = sum(f.default for f in card.files)
        files = f"{n_default}/{len(card.files)} files" if card.files else "no files"
        rows.append((name, card.kind, files, card.title))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    card = load_card(args.name)
    if args.format == "yaml":
        if card.path is not None:
            sys.stdout.write(card.path.read_text(encoding="utf-8"))
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump(card.data, sort_keys=False))
    else:
        sys.stdout.write(card.to_markdown())
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from jettag.data.download import DownloadError, download

    try:
        paths = download(
            args.name,
            args.dir,
            files=args.files,
            base_url=args.base_url,
            verify=not args.no_verify,
            overwrite=args.overwrite,
            retries=args.retries,
            timeout=args.timeout,
            progress=not args.quiet,
        )
    except (DownloadError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"jettag: error: {message}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    for path in render_all(args.out):
        print(path)
    return 0
