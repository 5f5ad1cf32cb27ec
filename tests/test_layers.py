"""DESIGN.md's dependency rule, read off the source with ``ast`` (function-local imports included).

Layers, lowest first: ``orchestrator.config`` -> ``data`` -> ``math`` -> ``nn`` / ``report`` ->
``actors`` -> ``orchestrator.run`` -> ``jobs``. Each layer imports only the layers below it (and
its own modules); there are no import cycles between modules; nothing imports ``jobs``; the pure
layers (config, data, math) import neither ``ray`` nor ``actors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "actors", "jobs")

# what each layer may import besides itself
ALLOWED = {
    "config": set(),
    "data": {"config"},
    "math": {"config", "data"},
    "nn": {"config", "data", "math"},
    "report": {"config", "data", "math"},
    "actors": {"config", "data", "math", "nn"},
    "run": {"config", "data", "math", "nn", "report", "actors"},
    "jobs": {"config", "data", "math", "nn", "report", "actors", "run"},
}
PURE = {"config", "data", "math"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("actors", "jobs"):
        return parts[0]
    if parts[0] == "orchestrator" and len(parts) > 1:
        return parts[1]
    return None


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, resolved to a project module where
    ``from pkg import name`` names a submodule."""
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = me.split(".") if is_pkg else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (ROOT / (sub.replace(".", "/") + ".py")).is_file() or \
                    (ROOT / sub.replace(".", "/") / "__init__.py").is_file()
                out.append((sub if is_module else base, node.lineno))
    return out


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for p in project_files():
        me = module_name(p)
        g[me] = {m for m, _ in imports(p) if m.split(".")[0] in PACKAGES and m != me}
    return g


def test_every_orchestrator_module_lives_in_a_layer():
    loose = [module_name(p) for p in (ROOT / "orchestrator").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layer sub-packages: {loose}"
    layers = {p.name for p in (ROOT / "orchestrator").iterdir() if (p / "__init__.py").is_file()}
    assert layers == set(ALLOWED) - {"actors", "jobs"}, layers


def test_each_layer_imports_only_layers_below_it():
    bad = []
    for p in project_files():
        me = module_name(p)
        mine = layer(me)
        if mine is None:
            continue
        for m, line in imports(p):
            top = m.split(".")[0]
            if top in ("ray",) and mine in PURE:
                bad.append(f"{p.relative_to(ROOT)}:{line}: pure layer {mine} imports {m}")
            if top not in PACKAGES:
                continue
            other = layer(m)
            if other == "jobs" and m != me:
                bad.append(f"{p.relative_to(ROOT)}:{line}: imports {m} (nothing imports jobs)")
            elif other is not None and other != mine and other not in ALLOWED[mine]:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {mine} imports {m} ({other} is not below {mine})")
    assert not bad, "\n".join(bad)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if m not in g:
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    g = graph()
    # a package's __init__ is imported with any of its modules: not an edge that makes a cycle
    g = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in g.items()}
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


@pytest.mark.parametrize("edges, cyclic", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a"}}, True),
])
def test_cycle_finder_on_known_graphs(edges, cyclic):
    assert (find_cycle(edges) is not None) == cyclic


def test_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a pure module importing the run layer is reported."""
    pkg = tmp_path / "orchestrator" / "math"
    pkg.mkdir(parents=True)
    (tmp_path / "orchestrator" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "orchestrator" / "run").mkdir()
    (tmp_path / "orchestrator" / "run" / "__init__.py").write_text("")
    (tmp_path / "orchestrator" / "run" / "sweep.py").write_text("")
    bad = pkg / "bad.py"
    bad.write_text("def f():\n    from orchestrator.run import sweep\n    import ray\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        found = imports(bad)
    finally:
        ROOT = old
    mods = {m for m, _ in found}
    assert "orchestrator.run.sweep" in mods and "ray" in mods
    assert layer("orchestrator.run.sweep") not in ALLOWED[layer("orchestrator.math.bad")]
