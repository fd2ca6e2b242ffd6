"""The package's import structure, read from the source with ``ast`` (nothing is imported).

- Every module of ``AttentionMambaSegLib`` has a layer (CONTRIBUTING.md, "Layers"), and no module imports
  one of a higher layer, at module level or inside a function.
- The package's modules import each other without a cycle at module level.
- No module imports another module's private (``_underscore``) name; dunder names such as ``__version__``
  are public.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "AttentionMambaSegLib"
PACKAGE_DIR = REPO / "AttentionMambaSeg" / PACKAGE
MODULE_NAME = "AttentionMambaSeg"  # the Slicer module file
MODULE_FILE = REPO / "AttentionMambaSeg" / f"{MODULE_NAME}.py"

#: The layers, lowest first, by the first path component under the package (CONTRIBUTING.md, "Layers"). An import
#: may only go to the same or a lower layer. The package's own ``__init__`` (``__version__``) is below every layer.
LAYER_TABLE = (
    ("ops",),
    ("model",),
    ("card", "terminology", "devices", "outputs", "metrics"),
    (
        "images",
        "dicom",
        "writers",
        "masks",
        "slicing",
        "normalization",
        "stacking",
        "postprocessing",
        "package",
        "model_store",
        "registry",
        "dicom_seg",
    ),
    ("inference",),
    (
        "clinical",
        "evaluation",
        "evaluation_report",
        "shifts",
        "datasets",
        "dataset_validation",
        "losses",
        "training",
        "distributed",
    ),
    ("mrml",),
    ("slicer", "cli"),
)
LAYERS = {name: layer for layer, names in enumerate(LAYER_TABLE) for name in names}
MODULE_FILE_LAYER = 8
ROOT_LAYER = -1


@dataclass(frozen=True)
class Import:
    """One imported package module (or a name of it) as written in one file."""

    importer: str  # dotted module name of the importing file
    target: str  # dotted name of the package module the import reaches
    name: str | None  # the imported name (``from target import name``), None for a whole module
    path: Path
    line: int
    module_level: bool  # executed when the importer is imported (not inside a function, not TYPE_CHECKING)

    def where(self) -> str:
        return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"


def _module_name(path: Path) -> str:
    if path == MODULE_FILE:
        return MODULE_NAME
    parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package and the Slicer module file."""
    files = sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    return {_module_name(p): p for p in [*files, MODULE_FILE]}


def _is_package(module: str) -> bool:
    return _sources()[module].name == "__init__.py"


def _longest_known(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is a module of the package (``a.b.C`` -> ``a.b``)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in _sources():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module):
    """(node, module_level) for every import statement; module level = run when the file is imported."""

    def visit(node: ast.AST, module_level: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, module_level
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), False)
                for statement in child.orelse:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), module_level)
            else:
                yield from visit(child, module_level)

    yield from visit(tree, True)


def _resolve_relative(importer: str, level: int, module: str | None) -> str:
    package = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


@cache
def _tree(module: str) -> ast.Module:
    path = _sources()[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def _imports() -> tuple[Import, ...]:
    found = []
    for importer, path in _sources().items():
        for node, module_level in _import_nodes(_tree(importer)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _longest_known(alias.name)
                    if target:
                        found.append(Import(importer, target, None, path, node.lineno, module_level))
                continue
            base = _resolve_relative(importer, node.level, node.module) if node.level else node.module or ""
            if _longest_known(base) is None:
                continue  # not a package module (the standard library, torch, ...)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in _sources():
                    found.append(Import(importer, submodule, None, path, node.lineno, module_level))
                else:
                    target = _longest_known(base)
                    found.append(Import(importer, target, alias.name, path, node.lineno, module_level))
    return tuple(found)


def _layer_key(module: str) -> str | None:
    """The first path component under the package (``inference.predictor`` -> ``inference``)."""
    if module == MODULE_NAME:
        return MODULE_NAME
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer(module: str) -> int | None:
    key = _layer_key(module)
    if key is None:
        return ROOT_LAYER
    return MODULE_FILE_LAYER if key == MODULE_NAME else LAYERS.get(key)


def _short(module: str) -> str:
    return module if module == MODULE_NAME else module.removeprefix(f"{PACKAGE}.")


# ------------------------------------------------------------------------------------------------- tests
def test_the_package_and_the_module_file_are_found():
    assert MODULE_FILE.is_file() and (PACKAGE_DIR / "__init__.py").is_file()
    assert len(_sources()) > 20 and len(_imports()) > 50


def test_every_package_module_has_a_layer():
    unknown: dict[str, list[str]] = {}
    for module in _sources():
        if _layer(module) is None:
            unknown.setdefault(_layer_key(module), []).append(_short(module))
    if unknown:
        pytest.fail(
            f"{len(unknown)} top-level name(s) of {PACKAGE} have no layer: add each to the layer table in "
            "CONTRIBUTING.md and to LAYER_TABLE in Testing/test_imports.py (or move the module into a package that has "
            "one):\n" + "\n".join(f"  {key}: {', '.join(sorted(modules))}" for key, modules in sorted(unknown.items())),
            pytrace=False,
        )


def test_no_module_imports_a_module_of_a_higher_layer():
    upward = []
    for imp in _imports():
        low, high = _layer(imp.importer), _layer(imp.target)
        if low is not None and high is not None and high > low:
            what = f"{_short(imp.target)}.{imp.name}" if imp.name else _short(imp.target)
            upward.append(
                f"  {imp.where()}: {_short(imp.importer)} (layer {low}) imports {what} (layer {high})"
                + ("" if imp.module_level else " inside a function")
            )
    if upward:
        pytest.fail(
            f"{len(upward)} import(s) go to a higher layer (CONTRIBUTING.md, 'Layers'): move the code down, or pass "
            "what it needs in from above:\n" + "\n".join(sorted(upward)),
            pytrace=False,
        )


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path that returns to its start) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        members, start = set(component), component[0]
        # breadth-first from start back to start inside the component: the shortest cycle through start
        previous: dict[str, str] = {}
        frontier, found = [start], None
        while frontier and found is None:
            following = []
            for v in frontier:
                for w in sorted(edges.get(v, ()) & members):
                    if w == start:
                        found = v
                        break
                    if w not in previous:
                        previous[w] = v
                        following.append(w)
                if found is not None:
                    break
            frontier = following
        path = [start]
        v = found
        while v is not None and v != start:
            path.append(v)
            v = previous[v]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def test_package_modules_import_each_other_without_a_cycle():
    edges: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], str] = {}
    for imp in _imports():
        if imp.module_level and imp.target != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.target)
            lines.setdefault((imp.importer, imp.target), imp.where())
    cycles = _cycles(edges)
    report = []
    for cycle in cycles:
        steps = [f"{_short(a)} -> {_short(b)} ({lines[a, b]})" for a, b in zip(cycle, cycle[1:])]
        report.append("  " + ", ".join(steps))
    if cycles:
        pytest.fail(
            f"{len(cycles)} import cycle(s) among the package's modules (module-level imports): move the shared code "
            "into a lower module:\n" + "\n".join(report),
            pytrace=False,
        )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _module_aliases(module: str) -> dict[str, str]:
    """Local name -> package module it is bound to by an import in ``module`` (``from . import mrml`` -> mrml)."""
    aliases = {}
    for node, _ in _import_nodes(_tree(module)):
        for alias in node.names:
            if isinstance(node, ast.Import):
                # import a.b.c binds a (to the package a); import a.b.c as x binds x to a.b.c
                bound, name = (alias.name, alias.asname) if alias.asname else ((alias.name.partition(".")[0],) * 2)
            else:
                base = _resolve_relative(module, node.level, node.module) if node.level else node.module or ""
                bound, name = f"{base}.{alias.name}", alias.asname or alias.name
            if bound in _sources():
                aliases[name] = bound
    return aliases


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None when the chain does not start with a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _private_attribute_uses(module: str):
    """(line, owner module, name) for each ``alias._name`` where alias is bound to another package module."""
    aliases = _module_aliases(module)
    if not aliases:
        return
    for node in ast.walk(_tree(module)):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _dotted(node)
        if not chain or chain[0] not in aliases:
            continue
        # the chain up to this attribute: alias[.submodule...].name
        owner = aliases[chain[0]]
        for part in chain[1:-1]:
            if f"{owner}.{part}" not in _sources():
                break
            owner = f"{owner}.{part}"
        else:
            if _is_private(chain[-1]) and owner != module and f"{owner}.{chain[-1]}" not in _sources():
                yield node.lineno, owner, chain[-1]


def test_no_module_imports_another_modules_private_name():
    private = []
    for imp in _imports():
        if imp.name is not None:
            # from X import _name: _name belongs to module X
            if _is_private(imp.name) and imp.importer != imp.target:
                private.append(f"  {imp.where()}: {_short(imp.importer)} imports {_short(imp.target)}.{imp.name}")
            continue
        # a private module (X/_m.py) belongs to its package X: modules inside X may import it
        parts = imp.target.split(".")
        for depth, part in enumerate(parts):
            owner = ".".join(parts[:depth])
            if _is_private(part) and not _inside(imp.importer, owner):
                private.append(
                    f"  {imp.where()}: {_short(imp.importer)} imports the private module {_short(imp.target)}"
                )
                break
    for module, path in _sources().items():
        for line, owner, name in sorted(set(_private_attribute_uses(module))):
            private.append(
                f"  {path.relative_to(REPO).as_posix()}:{line}: {_short(module)} uses {_short(owner)}.{name}"
            )
    if private:
        pytest.fail(
            f"{len(private)} use(s) of another module's private name: make the name public (no underscore) in the "
            "module that defines it, or move the code that needs it there:\n" + "\n".join(sorted(private)),
            pytrace=False,
        )


def test_a_cycle_is_found_and_reported_as_a_path_back_to_its_start():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    assert sorted(_cycles(edges)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []
