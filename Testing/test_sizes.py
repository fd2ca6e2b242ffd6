"""Sizes of the code under AttentionMambaSeg/: no function over 80 lines, no file over 600 lines.

The numba and Triton kernels are exempt: files under ``ops/`` whose name contains ``numba`` or ``triton``, and
functions compiled by a ``jit`` decorator of numba or Triton anywhere (a kernel is one function by nature).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE = REPO / "AttentionMambaSeg"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600
JIT_MODULES = ("numba", "nb", "triton")
JIT_NAMES = ("jit", "njit")


def _python_files() -> list[Path]:
    return sorted(p for p in CODE.rglob("*.py") if "__pycache__" not in p.parts)


def _is_kernel_file(path: Path) -> bool:
    parts = path.relative_to(CODE).parts
    return "ops" in parts[:-1] and any(word in path.stem for word in ("numba", "triton"))


def _decorator_name(decorator: ast.expr) -> str:
    """``@numba.njit(cache=True)`` -> "numba.njit"; ``@triton.jit`` -> "triton.jit"."""
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_jit(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in function.decorator_list:
        name = _decorator_name(decorator)
        module, _, last = name.rpartition(".")
        if last in JIT_NAMES and (not module or module.split(".")[0] in JIT_MODULES):
            return True
        if name.split(".")[0] == "triton":  # @triton.autotune(...), @triton.heuristics(...) above @triton.jit
            return True
    return False


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _qualified_functions(tree: ast.Module):
    """(qualified name, node) for every function and method, nested ones included."""

    def visit(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{child.name}", child
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def test_the_code_is_found():
    files = _python_files()
    assert CODE / "AttentionMambaSeg.py" in files and len(files) > 20


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _python_files():
        if _is_kernel_file(path):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, function in _qualified_functions(tree):
            lines = function.end_lineno - function.lineno + 1  # from `def` to the last line of the body
            if lines > MAX_FUNCTION_LINES and not _is_jit(function):
                long.append((lines, f"  {_relative(path)}:{function.lineno}: {name} ({lines} lines)"))
    if long:
        pytest.fail(
            f"{len(long)} function(s) over {MAX_FUNCTION_LINES} lines, longest first: split each into named steps "
            "(numba and Triton kernels are exempt):\n" + "\n".join(text for _, text in sorted(long, reverse=True)),
            pytrace=False,
        )


def test_no_file_is_longer_than_600_lines():
    long = []
    for path in _python_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES and not _is_kernel_file(path):
            long.append((lines, f"  {_relative(path)} ({lines} lines)"))
    if long:
        pytest.fail(
            f"{len(long)} file(s) over {MAX_FILE_LINES} lines, longest first: split each by concern (numba and "
            "Triton kernel files under ops/ are exempt):\n" + "\n".join(text for _, text in sorted(long, reverse=True)),
            pytrace=False,
        )


def test_kernels_are_recognised_by_their_file_name_and_their_jit_decorator():
    assert _is_kernel_file(CODE / "AttentionMambaSegLib/ops/scan_numba.py")
    assert _is_kernel_file(CODE / "AttentionMambaSegLib/ops/triton_kernels.py")
    assert not _is_kernel_file(CODE / "AttentionMambaSegLib/ops/dispatch.py")
    assert not _is_kernel_file(CODE / "AttentionMambaSegLib/numba_helpers.py")  # not under ops/
    source = """
@numba.njit(cache=True, parallel=True)
def a(): pass
@njit
def b(): pass
@triton.autotune(configs=[])
@triton.jit
def c(): pass
@functools.cache
def d(): pass
@torch.jit.script
def e(): pass
"""
    jitted = {f.name: _is_jit(f) for f in ast.parse(source).body}
    assert jitted == {"a": True, "b": True, "c": True, "d": False, "e": False}
