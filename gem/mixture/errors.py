"""The mixture package's two errors: bad input (``MixtureError``) and a bundle that does not
validate (``BundleError``). Both are ValueErrors, so the CLI reports them as usage errors."""
from __future__ import annotations


class MixtureError(ValueError):
    """Bad mixture input: the message says which domain / file and what to do."""


class BundleError(ValueError):
    """An export bundle that does not validate."""
