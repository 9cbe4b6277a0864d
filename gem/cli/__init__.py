"""The `gem` command. Each command group lives in its own module with a ``register(subparsers)``.

Handlers import heavy libraries (torch, sentence-transformers) inside themselves, so
``gem --help`` stays fast. Bad input exits 2 with a one-line reason (set GEM_DEBUG=1 for the
traceback).

Arguments are decoded once, here, after parsing (``check_arguments``): Python gives bytes of argv
that are not UTF-8 as lone surrogates ("\\udce9"); a text argument holding one is an error naming
the argument, a file or folder argument (``PATH_ARGUMENTS``; not ``--workspace``, which must be
UTF-8) keeps them (the file system takes them back as the original bytes) and messages show them
as ``\\xe9`` escapes. A value quoted in an error is cut to ``gem.store.MESSAGE_VALUE_CHARS``
characters, an error line to ``MESSAGE_CHARS``; stdout, too, shows what it cannot encode as escapes.
"""
from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys

# argument dests that name files or folders: they may hold any bytes the file system does. Not the
# workspace: its Parquet files are read by path, and pyarrow takes only UTF-8 paths
PATH_ARGUMENTS = frozenset({"inputs", "ids_file", "input", "model", "out", "precomputed", "results",
                            "save_json", "swarm", "weights", "bundle"})
MESSAGE_CHARS = 400  # the most of an error line gem prints (a backstop: values are cut to 80 first)


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
    else gem.store.WorkspaceNotFound (exit 2: the path and "create it with `gem ingest`"). Only
    `gem ingest` makes a workspace."""
    from gem.store import existing_workspace as existing

    return existing(args.workspace)


class ArgumentError(ValueError):
    """An argument that cannot be used as given (not UTF-8): exit 2, naming the argument."""


def shown(text: str) -> str:
    """An argument as printable text: bytes that are not UTF-8 as ``\\xe9`` escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate Python's argv decoding never makes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _argument_names(parser: argparse.ArgumentParser, out: dict | None = None) -> dict[str, str]:
    """dest -> how usage names it (--tag, QUERY), over the parser and all its subparsers."""
    out = {} if out is None else out
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _argument_names(sub, out)
        elif action.dest not in out:
            longs = [o for o in action.option_strings if o.startswith("--")]
            out[action.dest] = (longs or action.option_strings or [action.metavar or action.dest.upper()])[0]
    return out


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every string argument decoded once: a text argument that is not valid UTF-8 is an
    ArgumentError naming it; a path argument (``PATH_ARGUMENTS``) may hold any bytes a file name
    can (surrogate escapes), not more."""
    from gem.store import short

    names = None

    def check(dest: str, value) -> None:
        nonlocal names
        if isinstance(value, (list, tuple)):
            for item in value:
                check(dest, item)
            return
        if not isinstance(value, str):
            return
        try:
            if dest in PATH_ARGUMENTS:
                os.fsencode(value)
            else:
                value.encode("utf-8")
        except UnicodeEncodeError:
            names = names or _argument_names(parser)
            what = "a file name" if dest in PATH_ARGUMENTS else "valid UTF-8 text"
            raise ArgumentError(f"argument {names.get(dest, dest)}: '{short(shown(value))}' is not {what}; "
                                "give it in UTF-8") from None

    for dest, value in vars(args).items():
        if dest not in ("handler", "command"):
            check(dest, value)


_QUOTED = re.compile(r"(['\"])([^'\"]{81,}?)\1")


def cut_message(message: str) -> str:
    """One error line as printed: values quoted in it cut to 80 characters, the line to 400."""
    from gem.store import short

    text = _QUOTED.sub(lambda m: m.group(1) + short(m.group(2)) + m.group(1), shown(message))
    return short(text, MESSAGE_CHARS)


class GemParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors go through ``cut_message``: an invalid choice of 2,000
    characters is not echoed whole."""

    def error(self, message: str):
        super().error(cut_message(message))


def build_parser() -> argparse.ArgumentParser:
    parser = GemParser(
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
        export,    # export, verify
        scale,     # distill, label
        mixlab,    # mixlab design|proxy|fit|best
        curate,    # search, flag
    ]


def main(argv: list[str] | None = None) -> int:
    _escape_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(parser, args)
        return int(args.handler(args) or 0)
    except (ValueError, OSError, KeyError, sqlite3.Error) as exc:
        # sqlite3.Error: a database failure not already explained (gem.taxonomy raises TaxonomyError,
        # a ValueError naming the file and the remedy)
        if os.environ.get("GEM_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, sqlite3.Error):
            message = f"database error: {message}"
        print(f"gem {args.command}: error: {cut_message(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gem {args.command}: interrupted", file=sys.stderr)
        return 130


def _escape_output() -> None:
    """stdout shows what it cannot encode (a file name that is not UTF-8) as escapes, as stderr
    does, instead of failing halfway through the output."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") == "strict":
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError, TypeError):  # a stream that cannot change (already written to)
                pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
