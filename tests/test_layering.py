"""The structure the architecture page promises, checked on the source itself.

- ``protocols/`` imports nothing of the project (it is sans-I/O and stands alone);
- ``firmware_sim/`` and ``gateway/`` never import each other (the demo starts the
  simulator as a process of its own);
- ``bench/`` does not import ``tests/``, and nothing edits ``sys.path``;
- there is no import cycle among the modules of a package;
- no module of gateway/, protocols/, firmware_sim/ or bench/ is over 500 lines, at
  most three are over 400, and gateway/ has at most 12 modules directly in it.

Every import counts, including those under ``if TYPE_CHECKING:`` and inside
functions: a cycle hidden from the interpreter is still one for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "protocols", "firmware_sim", "bench", "tests")
SOURCE_PACKAGES = ("gateway", "protocols", "firmware_sim", "bench")
MAX_LINES = 500
LONG_LINES = 400
MAX_LONG_MODULES = 3
MAX_GATEWAY_TOP_MODULES = 12


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> Iterator[Path]:
    yield from sorted((REPO / package).rglob("*.py"))


ALL_MODULES = {module_name(p): p for pkg in PACKAGES for p in modules(pkg)}


def imported(path: Path) -> set[str]:
    """The project modules ``path`` imports (a name imported from a package counts as
    that submodule when one exists, else as the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in ALL_MODULES else source)
    return {name for name in found if name.split(".")[0] in PACKAGES}


GRAPH = {name: imported(path) for name, path in ALL_MODULES.items()}


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("protocols", {"gateway", "firmware_sim", "bench", "tests"}),
        ("firmware_sim", {"gateway", "bench", "tests"}),
        ("gateway", {"firmware_sim", "bench", "tests"}),
        ("bench", {"tests"}),
    ],
)
def test_no_import_crosses_a_layer(importer: str, forbidden: set[str]) -> None:
    crossing = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if top(name) == importer
        for target in targets
        if top(target) in forbidden
    )
    assert crossing == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", SOURCE_PACKAGES)
def test_no_import_cycles(package: str) -> None:
    # A package's __init__ that re-exports its submodules is not a cycle of the design.
    graph = {
        name: {t for t in targets if not (name.startswith(t + ".") and t in ALL_MODULES)}
        for name, targets in GRAPH.items()
        if top(name) == package
    }
    assert cycles(graph) == []


def test_nothing_edits_sys_path() -> None:
    editing = [
        name
        for name, path in ALL_MODULES.items()
        if "sys.path.insert" in path.read_text(encoding="utf-8")
        or "sys.path.append" in path.read_text(encoding="utf-8")
    ]
    assert editing == [name for name in editing if name == "tests.test_layering"]


def test_modules_stay_small() -> None:
    lengths = {
        module_name(p): len(p.read_text(encoding="utf-8").splitlines())
        for pkg in SOURCE_PACKAGES
        for p in modules(pkg)
    }
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    long = {name: n for name, n in lengths.items() if n > LONG_LINES}
    assert too_long == {}
    assert len(long) <= MAX_LONG_MODULES, long


def test_gateway_is_folders_a_newcomer_reads() -> None:
    top_level = [p.name for p in (REPO / "gateway").glob("*.py") if p.name != "__init__.py"]
    assert len(top_level) <= MAX_GATEWAY_TOP_MODULES, sorted(top_level)
    for folder in ("transports", "intake", "ops", "registry", "stores", "api"):
        assert (REPO / "gateway" / folder / "__init__.py").is_file(), folder
