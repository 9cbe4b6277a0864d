"""The `gem` command. Each command group lives in its own module with a ``register(subparsers)``.

Handlers import heavy libraries (torch, sentence-transformers) inside themselves, so
``gem --help`` stays fast. Bad input exits 2 with a one-line reason (set GEM_DEBUG=1 for the
traceback).
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys


def add_workspace_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--workspace", "-w", required=required, metavar="WS", help="workspace folder")


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts (``--k``, ``--n-init``): an integer >= 1, else the option's error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def existing_workspace(args):
    """The ``--workspace`` of a command that reads one: a gem.store.Workspace of an existing folder,
    else FileNotFoundError (exit 2)."""
    from gem.store import Workspace

    ws = Workspace(args.workspace)
    if not ws.root.is_dir():
        raise FileNotFoundError(f"{ws.root}: no such workspace folder")
    return ws


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gem",
        description="GEM curation studio: embed a corpus, cluster it on the hypersphere, curate, export mixtures.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    return parser


def command_modules() -> list:
    """The command groups' modules, in ``gem --help`` order. Plain imports: a missing or renamed
    module is an ImportError here, never a command silently left out."""
    from . import curate, data, export, fit, mixlab, scale, sweep, taxonomy, topics

    return [
        data,      # ingest, embed, info, layout
        fit,       # fit, compare
        sweep,     # sweep
        taxonomy,  # taxonomy
        topics,    # topics list|merge|split|unmerge|unsplit
        export,    # export
        scale,     # distill, label
        mixlab,    # mixlab design|proxy|fit|best
        curate,    # search, flag
    ]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError, KeyError, sqlite3.Error) as exc:
        # sqlite3.Error: a database failure not already explained (gem.taxonomy raises TaxonomyError,
        # a ValueError naming the file and the remedy)
        if os.environ.get("GEM_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, sqlite3.Error):
            message = f"database error: {message}"
        print(f"gem {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gem {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
