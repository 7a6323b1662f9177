"""The package's import graph: no cycles, no private names across modules, layers kept.

Every ``import`` statement of every module is read from its source (the ones inside
functions too, which run later), so a lazy import that closes a cycle is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import latentsearch

PACKAGE = Path(latentsearch.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for each import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in MODULES:  # `from pkg import submodule`
                    out.append((target, None, node.lineno))
                else:
                    out.append((source, alias.name, node.lineno))
    return [(m, name, line) for m, name, line in out if m in MODULES]


GRAPH = {m: sorted({target for target, _, _ in _imports(m) if target != m}) for m in MODULES}


def _cycle() -> list[str] | None:
    """One import cycle, if there is any (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in GRAPH[m]:
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_walk_sees_the_whole_package():
    assert len(MODULES) > 30
    assert "latentsearch.collection.snapshot" in GRAPH["latentsearch.collection.reader"]
    # a lazy import inside a function counts
    assert "latentsearch.pipelines" in GRAPH["latentsearch.cli"]


def test_no_module_imports_one_that_imports_it_back():
    assert _cycle() is None, " -> ".join(_cycle())


def test_the_cycle_finder_finds_a_cycle():
    GRAPH["latentsearch.types"].append("latentsearch.cli")  # cli -> ... -> types -> cli
    try:
        assert _cycle() is not None
    finally:
        GRAPH["latentsearch.types"].remove("latentsearch.cli")


def test_no_private_name_is_imported_across_modules():
    found = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name} from {target}"
             for m in MODULES for target, name, line in _imports(m)
             if name is not None and name.startswith("_") and not name.startswith("__")]
    assert not found, "\n".join(found)


def test_encoders_do_not_import_the_storage_layer():
    found = [(m, n) for m in MODULES if m.startswith("latentsearch.encoders")
             for n in GRAPH[m] if n.startswith(("latentsearch.storage", "latentsearch.collection"))]
    assert not found


def test_storage_and_index_know_nothing_of_collections():
    lower = ("latentsearch.storage", "latentsearch.index", "latentsearch.io")
    found = [(m, n) for m in MODULES if m.startswith(lower)
             for n in GRAPH[m] if n.startswith(("latentsearch.collection", "latentsearch.pipelines",
                                                "latentsearch.report", "latentsearch.cli"))]
    assert not found
