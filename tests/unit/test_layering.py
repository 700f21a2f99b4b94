"""Package layering: no package of lichen imports one above it.

Every module under ``src/lichen`` is parsed with :mod:`ast`; each import of another
top-level package (``lichen.<package>``, or a top-level module such as
``lichen.config``) is an edge. A package may import itself and packages in lower
layers only. Imports inside functions and under ``if TYPE_CHECKING:`` count too:
there are no exceptions, so the order below is the real dependency order
(docs/architecture.md, section 2).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lichen

SRC = Path(lichen.__file__).resolve().parent

# Bottom to top. ``lichen`` is the root package itself (``__version__``).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("lichen", "errors", "clock", "logs", "config", "tasks"),  # foundations
    ("periodic",),  # the one loop for periodic background work
    ("identity", "portcheck", "server", "metrics"),  # keys; port probe; uvicorn; Prometheus
    ("wire", "storage"),  # wire messages; tables, migrations, repositories
    ("transport", "engines", "ledger", "reputation", "ratelimit"),
    ("accounts",),  # accounts, API keys, sessions
    ("http",),  # HTTP plumbing every surface shares: errors, operator gate, auth, cookies
    ("privacy", "models"),  # the privacy policy and its enforcement; the model store
    ("tracker",),  # registry, membership, the node link
    ("routing", "node", "cluster"),  # scheduling over node links; the node agent; the bus
    ("audit",),  # spot checks of nodes (through the router)
    ("gateway",),  # the HTTP API
    ("web",),  # the web UI (and the privacy pages)
    ("roles",),  # wiring each role
    ("up",),  # ``lichen up``
    ("cli",),  # the ``lichen`` command
)


@dataclass(frozen=True)
class Edge:
    source: str  # top-level package of the importing module
    target: str  # top-level package imported
    module: str  # the importing module
    imported: str  # what it imports


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """``lichen.gateway.app`` for ``<root>/gateway/app.py``; whether it is a package."""
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _top(dotted: str, root_name: str) -> str | None:
    """The top-level package of a dotted name inside ``root_name``, else None."""
    parts = dotted.split(".")
    if parts[0] != root_name:
        return None
    return parts[1] if len(parts) > 1 else root_name


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if "." not in target:  # ``from lichen import config`` names modules
                yield from (f"{target}.{alias.name}" for alias in node.names)
            else:
                yield target


def package_edges(root: Path) -> list[Edge]:
    """Every import between two different top-level packages of the package at ``root``."""
    edges: list[Edge] = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        source = _top(module, root.name)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported in _imports(tree, module, is_package):
            target = _top(imported, root.name)
            if source and target and target != source:
                if target not in {p.stem for p in root.iterdir()} and target != root.name:
                    target = root.name  # ``from lichen import __version__``
                if target != source:
                    edges.append(Edge(source, target, module, imported))
    return edges


def violations(edges: Sequence[Edge], layers: Sequence[Sequence[str]]) -> list[str]:
    """Edges that do not point to a strictly lower layer."""
    rank = {package: i for i, layer in enumerate(layers) for package in layer}
    return [
        f"{e.module} imports {e.imported} ({e.source} may not import {e.target})"
        for e in edges
        if rank[e.target] >= rank[e.source]
    ]


def top_level_packages(root: Path) -> set[str]:
    names = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    return names | {root.name}


def test_every_package_has_a_layer() -> None:
    declared = [package for layer in LAYERS for package in layer]
    assert len(declared) == len(set(declared)), "a package is listed twice"
    assert top_level_packages(SRC) == set(declared)


def test_no_package_imports_one_above_it() -> None:
    edges = package_edges(SRC)
    # The parser sees the stack: a known downward edge from each end of it.
    pairs = {(e.source, e.target) for e in edges}
    assert {("gateway", "routing"), ("routing", "tracker"), ("cli", "roles")} <= pairs
    assert violations(edges, LAYERS) == []


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checker_finds_upward_imports(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    _write(root, "__init__.py", "__version__ = '1'\n")
    _write(root, "low/__init__.py", "")
    _write(
        root,
        "low/a.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high.b import B\n",
    )
    _write(root, "low/c.py", "def f() -> None:\n    from ..high import b\n")
    _write(root, "high/__init__.py", "from pkg import __version__\n")
    _write(root, "high/b.py", "import pkg.low.a\nfrom . import c\nclass B: ...\n")
    _write(root, "high/c.py", "")
    edges = package_edges(root)
    found = violations(edges, [("pkg",), ("low",), ("high",)])
    assert sorted(found) == [
        "pkg.low.a imports pkg.high.b (low may not import high)",
        "pkg.low.c imports pkg.high (low may not import high)",
    ]
    assert violations(edges, [("pkg",), ("high",), ("low",)]) == [
        "pkg.high.b imports pkg.low.a (high may not import low)"
    ]
