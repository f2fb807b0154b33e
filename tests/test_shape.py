"""The code's shape: no function over 80 lines, no import circle between modules.

Both came back once with work that arrived after a clean-up; these keep them out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LONGEST = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "tippingpoint").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "split these: " + "; ".join(long)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports at its top level, under
    ``if TYPE_CHECKING:`` too (a circle of types is a circle of design); imports inside
    functions run later, on demand, and are left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    top = ast.parse(path.read_text()).body
    for node in top + [n for i in top if _type_checking(i) for n in i.body]:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles: " + "; ".join(circles)


_IDENTITY = re.compile(
    r"\.mqtt\b(?!_)|\bmqtt\b(?!_)|has_mqtt|['\"]mqtts?['\"]|mqtt://|\.websocket\b|['\"]wss?['\"]"
    r"|mqtt-sweep|mqtt-hold"
)
PROTOCOL_BRANCHES = 7
"""Tests of a protocol's identity in src/ (see docs/ARCHITECTURE.md, "Protocols as
layers"): 75 before the protocol tables. Lower it when a branch goes; a new protocol
should need none."""


NAMES_MQTT = re.compile("mqtt", re.IGNORECASE)
"""Any test whose text names MQTT, its own options included (95 before the tables)."""


def protocol_branches(pattern: re.Pattern[str] = _IDENTITY) -> list[str]:
    """The tests of if, while, ternaries, comprehension filters and asserts whose text
    matches ``pattern``: by default those that ask which protocol this is
    (``exp.mqtt``, ``origin.websocket``, a scheme compared with "mqtt"). The counts in
    docs/ARCHITECTURE.md: ``python -c "from tests.test_shape import *;
    print(len(protocol_branches()), len(protocol_branches(NAMES_MQTT)))"``."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            tests: list[ast.expr] = []
            if isinstance(node, ast.If | ast.While | ast.IfExp | ast.Assert):
                tests.append(node.test)
            elif isinstance(node, ast.comprehension):
                tests.extend(node.ifs)
            found += [
                f"{name}:{t.lineno}: {ast.unparse(t)}"
                for t in tests
                if pattern.search(ast.unparse(t))
            ]
    return found


def test_branches_on_a_protocol_do_not_grow() -> None:
    found = protocol_branches()
    assert len(found) <= PROTOCOL_BRANCHES, (
        f"{len(found)} tests of a protocol's identity, more than {PROTOCOL_BRANCHES}: ask "
        "the tables (schemes.SCHEMES, plan.COSTS, bench.apps, bench.kinds) instead:\n"
        + "\n".join(found)
    )
