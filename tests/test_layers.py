"""The package's shape (DESIGN.md "Layers", docs/architecture.md): imports point one way,
down the layers, function-level imports included; modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# bottom to top; a module may import only from its own layer's group or lower ones
LAYERS = [
    ["errors"],
    ["io", "device", "image_ops", "kinds", "typecheck"],
    ["registry"],
    ["schema", "catalog"],
    ["recipe"],
    ["model", "data", "checkpoint"],
    ["convert", "runs"],
    ["evaluate", "attention", "predict", "export", "finetune"],
    ["train"],
    ["study"],
    ["cli"],
]
RANK = {group: i for i, layer in enumerate(LAYERS) for group in layer}
MAX_MODULE_LINES = 360
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of zoo/ but zoo/__init__ (the lazy
    public API) and zoo/__main__."""
    out = {}
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts not in (("zoo",), ("zoo", "__main__")):
            out[".".join(parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The zoo modules `path` imports anywhere in its file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zoo":
            named = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in named if n in known} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zoo.")}
    return {m for m in found if m in known}


def group(module: str) -> str:
    return module.split(".")[1]


def test_every_module_has_a_layer():
    assert {group(m) for m in modules()} <= set(RANK), set(map(group, modules())) - set(RANK)


def test_imports_point_down_the_layers():
    mods = modules()
    edges = {m: imports(p, set(mods)) for m, p in mods.items()}
    assert edges["zoo.cli"] and edges["zoo.train.trainer"]  # the walk does find imports
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
              if RANK[group(b)] > RANK[group(a)]]
    assert not upward, "; ".join(upward)


def test_no_import_circle():
    mods = modules()
    edges = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}

    def circle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    circles = [c for m in sorted(edges) if (c := circle_from(m))]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)


def test_modules_and_functions_stay_small():
    """A function may run longer where a comment on its `def` line says why."""
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and "#" not in lines[node.lineno - 1]:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "; ".join(too_long)
