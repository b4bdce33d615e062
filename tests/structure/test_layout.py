"""The shape of the code, checked from its source: no import cycle inside fortress/proxy (imports under
TYPE_CHECKING count), the pipeline independent of the proxy, and no backend-type string compared outside
fortress/backends/ (code asks the backend's kind instead)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every fortress module a file imports, at any depth (function bodies and TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("fortress.")}


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def proxy_graph() -> dict[str, set[str]]:
    files = {module_of(p): p for p in (ROOT / "fortress" / "proxy").glob("*.py") if p.name != "__init__.py"}
    return {name: imported_modules(path) & files.keys() for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path (first node repeated at the end), or [] when the graph has none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for following in sorted(graph[node]):
            cycle = visit(following, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return []


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_inside_the_proxy() -> None:
    graph = proxy_graph()
    assert "fortress.proxy.exchange" in graph and graph["fortress.proxy.protocol"]  # the parse found them
    assert find_cycle(graph) == []


def test_the_pipeline_does_not_import_the_proxy() -> None:
    for path in (ROOT / "fortress" / "pipeline").glob("*.py"):
        assert not {m for m in imported_modules(path) if m.startswith("fortress.proxy")}, path.name


_TYPE_COMPARE = re.compile(
    r"""(?:\b|_)type\s*(==|!=|\bin\b|\bnot in\b)\s*[\(\[{]?\s*["'](ollama|openai|anthropic)["']"""
    r"""|["'](ollama|openai|anthropic)["']\s*(==|!=)\s*\w+\.type\b"""
)


def test_no_backend_type_compared_outside_the_kinds() -> None:
    offenders = []
    for folder in ("fortress", "admin", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "fortress" / "backends") or path.is_relative_to(
                ROOT / "fortress" / "sim"
            ):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _TYPE_COMPARE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert _TYPE_COMPARE.search('if b.type == "openai":') and _TYPE_COMPARE.search("t.type != 'ollama'")
    assert _TYPE_COMPARE.search('"/v1" if backend_type == "openai" else "/api"')
    assert offenders == []
