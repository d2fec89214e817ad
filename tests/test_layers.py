"""The package's imports point one way (DESIGN.md "Layers"): no module of zoo/ reaches
itself again through other modules' imports, function-level imports included."""

from __future__ import annotations

import ast

from tests.conftest import ROOT


def zoo_imports() -> dict[str, set[str]]:
    """module -> the zoo modules it imports anywhere in its file (zoo/__init__ left out: it
    only names the public API, lazily)."""
    modules = {p.stem: p for p in (ROOT / "zoo").glob("*.py") if p.stem != "__init__"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zoo":
                parts = node.module.split(".")
                targets = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names
                           if a.name.startswith("zoo.") and len(a.name.split(".")) > 1]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def test_no_import_circle_in_the_package():
    edges = zoo_imports()
    assert edges["cli"] and edges["trainer"]  # the walk does find imports

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
