"""The package's layers, read from its imports: every ``import`` of a gem module in gem/**/*.py (at
module level and inside functions, relative or absolute) is an edge of the module graph. The graph
has no cycle, no module imports one of a higher layer (``LAYERS``), and gem never imports streamlit
or the app's pages. No gem module is imported: the source is parsed (``ast``).

Importing ``gem.a.b`` runs ``gem/a/__init__.py`` first, so an edge to a submodule is also one to
its packages (not to the importer's own packages: those are already being imported).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gem"

# layer -> (what it is, modules or packages). A module may import its own layer or lower ones, never
# a higher one; a package's entry covers its submodules ("gem" is only the package's __init__, which
# gives ``gem.GEM`` from gem.model). Every gem module must be listed.
LAYERS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("the workspace on disk, array checks, vMF maths, the GEMM kernel, devices, web access",
        ("gem.store", "gem.arrays", "gem.sphere", "gem.gemm", "gem.devices", "gem.access")),
    1: ("estimators, metrics, embeddings, corpora, maps, the stress test, the lambda sweep, plots, naming",
        ("gem", "gem.model", "gem.baselines", "gem.metrics", "gem.embed", "gem.corpus", "gem.layout", "gem.stress",
         "gem.sweep", "gem.plots", "gem.naming")),
    2: ("on arrays and the curation database: GIS and keywords; the taxonomy; the document flags",
        ("gem.gis", "gem.taxonomy", "gem.flags")),
    3: ("runs on disk: FitSettings + fit_run (without the excluded documents), reading runs",
        ("gem.runs",)),
    4: ("a saved run joined to GIS, the taxonomy and the flags",
        ("gem.workspace_ops",)),
    5: ("the fit policy; search", ("gem.refit", "gem.search")),
    6: ("mixtures and their lab; the student and labelling",
        ("gem.mixture", "gem.mixlab", "gem.distill", "gem.label")),
    7: ("the command line", ("gem.cli", "gem.__main__")),
}
FORBIDDEN = ("streamlit", "pages")  # the app sits on the package, never the other way round
# A package's old names of functions that moved up, resolved on first use by its module-level
# ``__getattr__`` (PEP 562) for callers outside gem; they are listed in its ``MOVED``, and no gem
# module, page or the app may use them (their new home is the import to write). These imports, and
# only those inside ``__getattr__``, are no edge of the graph.
COMPAT = {("gem.taxonomy", "gem.workspace_ops")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _packages(name: str) -> list[str]:
    """``name``'s enclosing packages, outermost first: gem.a.b -> [gem, gem.a]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module name an ``ImportFrom`` in module ``name`` (file ``path``) reads from."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path, modules) -> list[tuple[str, int, str]]:
    """(imported name, line, where) of every import in ``path``: gem modules resolved to the module
    (``from gem.x import y`` names gem.x.y when that is a module), others by their top-level name;
    ``where`` is "getattr" inside the module-level ``__getattr__``, else "code"."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lazy = {line for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            for line in range(node.lineno, node.end_lineno + 1)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        where = "getattr" if node.lineno in lazy else "code"
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, where) for a in node.names]
            continue
        source = _resolve(node, name, path)
        out.append((source, node.lineno, where))
        out += [(f"{source}.{a.name}", node.lineno, where) for a in node.names if f"{source}.{a.name}" in modules]
    return out


def _graph():
    """module -> {imported gem module: first line}, and the forbidden imports (module, name, line)."""
    modules = _modules()
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    forbidden = []
    for name, path in modules.items():
        own = set(_packages(name)) | {name}
        for target, line, where in _imports(name, path, modules):
            top = target.split(".")[0]
            if top in FORBIDDEN:
                forbidden.append((name, target, line))
            if top != "gem":
                continue
            while target not in modules:  # gem.x.name (a function, a class): the module gem.x
                target = target.rpartition(".")[0]
            if where == "getattr" and (name, target) in COMPAT:
                continue
            for t in _packages(target) + [target]:
                if t not in own:
                    edges[name].setdefault(t, line)
    return modules, edges, forbidden


def _layer_of(module: str) -> int | None:
    best, layer = -1, None
    for n, (_, names) in LAYERS.items():
        for entry in names:
            covers = module == entry or (entry != "gem" and module.startswith(entry + "."))
            if covers and len(entry) > best:
                best, layer = len(entry), n
    return layer


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(_cycle_path(sorted(comp), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _cycle_path(comp: list[str], edges) -> list[str]:
    """One cycle through the component's first module (breadth-first back to it), for the message."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start]
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def test_every_module_has_a_layer():
    modules, _, _ = _graph()
    assert modules, f"no modules found under {PACKAGE}"
    missing = [m for m in modules if _layer_of(m) is None]
    assert not missing, f"put these modules in a layer of tests/test_layers.py LAYERS: {', '.join(missing)}"


def test_no_import_cycle_between_gem_modules():
    _, edges, _ = _graph()
    cycles = _cycles(edges)
    text = "\n".join(" -> ".join(c) for c in cycles)
    assert not cycles, f"import cycles between gem modules (function-level imports count too):\n{text}"


def test_no_module_imports_a_higher_layer():
    modules, edges, _ = _graph()
    upward = []
    for source, targets in edges.items():
        a = _layer_of(source)
        for target, line in targets.items():
            b = _layer_of(target)
            if a is not None and b is not None and b > a:
                upward.append(f"{modules[source].relative_to(ROOT)}:{line}: {source} (layer {a}) imports "
                              f"{target} (layer {b})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))


def test_gem_never_imports_streamlit_or_the_pages():
    modules, _, forbidden = _graph()
    text = [f"{modules[m].relative_to(ROOT)}:{line}: {name}" for m, name, line in forbidden]
    assert not text, "gem imports the app's layer:\n" + "\n".join(text)


def _moved(module: str, modules) -> tuple[str, ...]:
    """The ``MOVED`` names of ``module`` (read from its source)."""
    tree = ast.parse(modules[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "MOVED" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def test_old_names_are_only_for_callers_outside_the_package():
    """A compatibility ``__getattr__`` resolves only its ``MOVED`` names, from the module it names,
    and nothing in gem, the pages or the app imports them from the old place."""
    modules = _modules()
    for source, target in COMPAT:
        moved = _moved(source, modules)
        assert moved, f"{source} lists no MOVED names"
        lazy = [(t, w) for t, _, w in _imports(source, modules[source], modules) if w == "getattr"]
        assert lazy and {t for t, _ in lazy} <= {target, target.rpartition(".")[0]}, lazy
        users = []
        files = list(modules.items()) + [(_module_name_outside(p), p) for p in
                                         sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"] if p.exists()]
        for name, path in files:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and _resolve(node, name, path) == source:
                    users += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                              if a.name in moved]
        assert not users, f"import these from {target}, not {source}:\n" + "\n".join(users)


def _module_name_outside(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("source, expected", [
    ("from . import gemm\n", {"gem.gemm"}),
    ("from .taxonomy.db import X\n", {"gem.taxonomy", "gem.taxonomy.db"}),
    ("def f():\n    from gem.runs import load_run\n", {"gem.runs"}),
    ("import gem.flags as fl\n", {"gem.flags"}),
])
def test_the_reader_sees_relative_absolute_and_function_level_imports(tmp_path, source, expected):
    """The parser itself: a module gem.x (here a file read as gem/x.py) importing ``source``."""
    path = tmp_path / "x.py"
    path.write_text(source)
    modules = {**_modules(), "gem.x": path}
    found = set()
    for target, _, _ in _imports("gem.x", path, modules):
        while target and target not in modules:
            target = target.rpartition(".")[0]
        found |= {t for t in _packages(target) + [target] if t not in ("gem", "gem.x")}
    assert found == expected
