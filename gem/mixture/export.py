"""From a saved run to a validated bundle in one call: ``export_run`` is what `gem export` and the
app's Export button both do (``write_run_bundle`` its writing half, which the Mixture lab's export
shares), and ``export_command`` is the `gem export` line that writes the same
bundle (the app shows it under the button).
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Iterable, Mapping

from gem.mixture.bundle import FORMATS, parse_formats, validate_bundle, write_bundle
from gem.mixture.run_inputs import mixture_inputs_from_run
from gem.store import Workspace, sweep_leftovers

CLI_MAX_EPOCHS = 4.0     # `gem export --max-epochs` default
CLI_TEMPERATURE = 1.0    # `gem export --temperature` default


def export_run(ws, run_name: str, out_dir: str | os.PathLike, formats: str | Iterable[str] | None = "all", *,
               with_gis: bool = True, bundle_options: Mapping[str, Any] | None = None,
               **build) -> tuple[Path, dict]:
    """Read the saved run ``run_name`` (domains with the taxonomy's ids, documents, GIS unless
    ``with_gis`` is False, the taxonomy), build its mixture (``build``: strategy, level,
    token_budget, max_epochs, temperature, overrides, base, imported, as ``RunMixtureInputs.build``)
    and write it with ``write_run_bundle``. Returns (bundle path, ``validate_bundle`` report)."""
    inputs = mixture_inputs_from_run(ws, run_name, with_gis=with_gis)
    mixture, assignments = inputs.build(**build)
    return write_run_bundle(inputs, mixture, assignments, out_dir, formats, **dict(bundle_options or {}))


def write_run_bundle(inputs, mixture, assignments, out_dir: str | os.PathLike,
                     formats: str | Iterable[str] | None = "all", **bundle_options) -> tuple[Path, dict]:
    """Write a run's mixture as a bundle in ``out_dir`` (with the run's taxonomy; excluded
    documents left out and listed in excluded_documents.jsonl; ``bundle_options``: data_root,
    templates, seed of ``write_bundle``) and validate it. ``inputs``: the run's
    ``RunMixtureInputs``; ``mixture, assignments``: what its ``build`` (or a caller's variant of
    it) returned. Returns (bundle path, ``validate_bundle`` report). What a killed export left in
    ``out_dir``'s folder (hidden ``.<name>.tmp-*`` copies) is swept first."""
    sweep_leftovers(Path(out_dir).parent)
    path = write_bundle(out_dir, mixture, formats, assignments=assignments, taxonomy=inputs.taxonomy,
                        blocklist=inputs.excluded, **bundle_options)
    return path, validate_bundle(path)


def export_command(ws_root: str | os.PathLike, run_name: str, name: str, formats: str | Iterable[str] | None = "all",
                   *, strategy: str = "natural", level: str = "topic", token_budget: float | None = None,
                   max_epochs: float | None = CLI_MAX_EPOCHS, temperature: float = CLI_TEMPERATURE,
                   overrides: Mapping[str, float] | None = None) -> str:
    """The `gem export` command line that writes bundle ``name`` (into the workspace's exports
    folder) with these settings; options at the CLI's defaults are left out."""
    out = Workspace(ws_root).exports_dir / name
    args = ["gem", "export", "-w", str(ws_root), "--run", run_name, "--out", str(out), "--strategy", strategy]
    if level != "topic":
        args += ["--level", level]
    if token_budget:
        args += ["--budget-tokens", _number(token_budget)]
    if max_epochs is not None and float(max_epochs) != CLI_MAX_EPOCHS:
        args += ["--max-epochs", _number(max_epochs)]
    if strategy == "temperature" and float(temperature) != CLI_TEMPERATURE:
        args += ["--temperature", _number(temperature)]
    if overrides:
        args += ["--manual"] + [f"{k}={_number(v)}" for k, v in overrides.items()]
    chosen = parse_formats(formats) if formats else list(FORMATS)
    if set(chosen) != set(FORMATS):
        args += ["--formats", ",".join(chosen)]
    return " ".join(shlex.quote(a) for a in args)


def _number(x) -> str:
    """A float as the CLI reads it back exactly: 2000000000, 0.5, 0.123456789012."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)
