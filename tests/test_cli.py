"""The `gem` parser: every command module is imported plainly and every command it registers is in
`gem --help`."""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pytest

import gem.cli
from gem.cli import build_parser, command_modules, main

CLI_DIR = Path(gem.cli.__file__).parent


def _commands_of(module) -> list[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    module.register(sub)
    return list(sub.choices)


def test_every_module_with_register_is_a_command_module():
    with_register = {
        path.stem for path in CLI_DIR.glob("*.py")
        if path.stem != "__init__" and any(isinstance(node, ast.FunctionDef) and node.name == "register"
                                           for node in ast.parse(path.read_text(encoding="utf-8")).body)
    }
    assert with_register and with_register == {m.__name__.rpartition(".")[2] for m in command_modules()}


def test_help_lists_every_command_of_every_module(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    shown = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ") and line.split()}
    for module in command_modules():
        commands = _commands_of(module)
        assert commands, f"{module.__name__} registers no command"
        missing = [c for c in commands if c not in shown]
        assert not missing, f"gem --help does not list {missing} of {module.__name__}"


def test_a_command_module_that_cannot_be_imported_fails_loudly(monkeypatch):
    monkeypatch.delattr(gem.cli, "sweep")
    monkeypatch.setitem(sys.modules, "gem.cli.sweep", None)  # import of gem.cli.sweep: ImportError
    with pytest.raises(ImportError, match="gem.cli.sweep"):
        build_parser()
