"""The package's layers point one way: no import cycle between modules or packages, and no import upwards.

Every import statement counts, including those inside functions (a function-local import hides a
cycle from the interpreter, not from this test). The order is the one the README's layout states.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("framework", "models", "datamodules")

#: top to bottom; a module may import its own layer package and the layers below it, nothing above
LAYERS: tuple[tuple[str, ...], ...] = (
    ("framework.experiments",),
    ("framework.callbacks",),
    ("framework.evaluation",),
    ("framework.modules",),
    ("framework.tuning",),
    ("framework.metrics",),
    ("framework.samplers",),
    ("framework.oracles",),
    ("framework.diffusion",),
    ("framework.config",),
    ("framework.schema",),
    ("framework.io",),
    ("models", "datamodules"),
)
#: layers that must run without Lightning (a sampler sees a model only through the denoiser interface)
NO_LIGHTNING = ("framework.tuning", "framework.samplers", "framework.oracles", "framework.diffusion", "models")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (resolved: `from .x import y` is module x, or x.y when y is a module)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    found.discard(name)
    return found


def third_party_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def layer_of(name: str) -> tuple[int, str]:
    for level, packages in enumerate(LAYERS):
        for pkg in packages:
            if name == pkg or name.startswith(pkg + "."):
                return level, pkg
    raise AssertionError(f"module {name} belongs to no layer; add its package to LAYERS (and to the README's layout)")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items() if name not in PACKAGES}


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle of the directed graph as a list of nodes, or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_every_module_belongs_to_a_layer(graph):
    for name in graph:
        layer_of(name)


def test_no_module_cycle(graph):
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down(graph):
    upward = []
    for name, targets in graph.items():
        level, pkg = layer_of(name)
        for target in targets:
            t_level, t_pkg = layer_of(target)
            if t_pkg != pkg and t_level <= level:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that do not point to a lower layer:\n" + "\n".join(sorted(upward))


def test_no_package_cycle(graph):
    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        pkg = layer_of(name)[1]
        packages.setdefault(pkg, set()).update(layer_of(t)[1] for t in targets if layer_of(t)[1] != pkg)
    cycle = find_cycle(packages)
    assert not cycle, "package cycle: " + " -> ".join(cycle)


def test_lower_layers_do_not_import_lightning():
    offenders = [name for name, path in all_modules().items()
                 if name.startswith(NO_LIGHTNING) and third_party_imports(path) & {"lightning", "pytorch_lightning"}]
    assert not offenders, f"these modules import Lightning: {offenders}"


def test_the_checker_sees_cycles_and_upward_imports():
    """The checks above can fail: a hand-made cycle is found, an upward import is named."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert layer_of("framework.diffusion.schedules")[0] > layer_of("framework.samplers.ddim")[0]
    known = {"framework.samplers", "framework.samplers.base", "framework.diffusion.denoiser"}
    path = ROOT / "framework" / "samplers" / "base.py"
    assert "framework.diffusion.denoiser" in imports_of("framework.samplers.base", path, known | set(all_modules()))
