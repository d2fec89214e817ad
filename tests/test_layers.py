"""The package's shape (docs/architecture.md): imports point one way,
down the layers, function-level imports included; modules and functions stay small. zoo/ is
held to its layers; plugins/ sit above model/data; tools/ sit on top, and zoo imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# bottom to top; a module may import only from its own layer's group or lower ones
LAYERS = [
    ["errors"],
    ["io", "device", "image_ops", "kinds", "typecheck", "layers"],
    ["registry"],
    ["schema", "catalog"],
    ["recipe"],
    ["model", "data", "loaders", "checkpoint"],
    ["convert", "runs"],
    ["evaluate", "viz", "predict", "export", "finetune"],
    ["train"],
    ["study"],
    ["cli"],
]
RANK = {group: i for i, layer in enumerate(LAYERS) for group in layer}
MAX_MODULE_LINES = 360
MAX_FUNCTION_LINES = 60
# Plugins sit above model/data: a plugin imports zoo up to that layer, a visualizer up to
# zoo.viz (the maps it draws and the figure helpers), and no plugin imports another (they are
# loaded by path, through the registry).
PLUGIN_CEILING = {"visualizer": RANK["viz"]}  # by kind, the folder in plugins/
DEFAULT_PLUGIN_CEILING = RANK["model"]
# tools/: each package may import zoo, itself and what is named here (the CLIP code both share)
TOOL_IMPORTS = {"clip_common": set(), "compare": {"clip_common"}, "fp16": {"clip_common"},
                "clip_vs_resnet": {"compare"}, "fp16_profile": {"fp16"}}
# the names the folders install as (setup.cfg package_dir)
INSTALLED_AS = {"zoo_tools": "tools", "zoo._plugins": "plugins"}
ABOVE_ZOO = ("tools", "plugins", "benchmarks")


def modules(folder: str = "zoo") -> dict[str, Path]:
    """Dotted module name -> file, for every module under `folder` (zoo/, tools/, plugins/);
    for zoo/ all but zoo/__init__ (the lazy public API) and zoo/__main__."""
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts not in (("zoo",), ("zoo", "__main__")):
            out[".".join(parts)] = path
    return out


def _canonical(name: str) -> str:
    """A module name as the repository's folders spell it (zoo_tools.x -> tools.x)."""
    for installed, folder in INSTALLED_AS.items():
        if name == installed or name.startswith(installed + "."):
            return folder + name[len(installed):]
    return name


def statements(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """Every import in `path`, function-level ones included, as (module, names): `import a.b`
    is ("a.b", []), `from ..x import y` in tools.compare.run is ("tools.x", ["y"])."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            target = ".".join(filter(None, (base, node.module)))
            out.append((_canonical(target), [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(_canonical(a.name), []) for a in node.names]
    return out


def imports(path: Path, known: set[str], module: str = "") -> set[str]:
    """The modules of `known` that `path` imports: `from a import b` is a.b where that is a
    module, else a."""
    found = set()
    for target, names in statements(path, module):
        found |= {f"{target}.{n}" for n in names} & known or {target}
    return found & known


def roots(path: Path, module: str) -> set[str]:
    """The top-level packages `path` imports from."""
    return {target.split(".")[0] for target, _ in statements(path, module)}


def group(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def every_module() -> dict[str, Path]:
    return {**modules("zoo"), **modules("tools"), **modules("plugins")}


def test_every_module_has_a_layer():
    assert {group(m) for m in modules()} <= set(RANK), set(map(group, modules())) - set(RANK)
    tool_groups = {group(m) for m in modules("tools")} - {""}
    assert tool_groups <= set(TOOL_IMPORTS), tool_groups - set(TOOL_IMPORTS)


def test_imports_point_down_the_layers():
    mods = modules()
    edges = {m: imports(p, set(mods), m) for m, p in mods.items()}
    assert edges["zoo.cli"] and edges["zoo.train.trainer"]  # the walk does find imports
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
              if RANK[group(b)] > RANK[group(a)]]
    assert not upward, "; ".join(upward)


def test_zoo_never_imports_tools_plugins_or_benchmarks():
    """Not even inside a function: plugins are loaded by path and tools are found through
    the `zoo.commands` entry points, so zoo works without either."""
    found = {m: roots(p, m) & set(ABOVE_ZOO) for m, p in modules().items()}
    assert not {m: r for m, r in found.items() if r}


def test_tools_import_zoo_and_the_packages_beneath_them():
    """A tool package imports zoo (any layer), itself and the CLIP code both share; never the
    other tool, plugins or benchmarks."""
    tools, zoo = modules("tools"), set(modules())
    edges = {m: imports(p, set(tools) | zoo, m) for m, p in tools.items()}
    assert edges["tools.compare.run"] & zoo  # the walk does find imports, relative ones too
    assert "tools.clip_common.models" in edges["tools.compare.run"]
    wrong = [f"{a} -> {b}" for a, targets in edges.items() for b in targets - zoo
             if group(b) not in {group(a), *TOOL_IMPORTS.get(group(a), ())}]
    wrong += [f"{m} -> {r}" for m, p in tools.items()
              for r in roots(p, m) & {"plugins", "benchmarks"}]
    assert not wrong, "; ".join(wrong)


def test_plugins_sit_above_model_and_data():
    """A plugin imports zoo up to model/data (a visualizer up to zoo.viz), and no other plugin,
    tool or benchmark."""
    plugins, zoo = modules("plugins"), set(modules())
    edges = {m: imports(p, zoo, m) for m, p in plugins.items()}
    assert "zoo.registry" in edges["plugins.attention.diff"]  # the walk does find imports
    above = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
             if RANK[group(b)] > PLUGIN_CEILING.get(group(a), DEFAULT_PLUGIN_CEILING)]
    above += [f"{m} -> {r}" for m, p in plugins.items() for r in roots(p, m) & set(ABOVE_ZOO)]
    assert not above, "; ".join(above)


def test_no_import_circle():
    mods = every_module()
    edges = {m: imports(p, set(mods), m) - {m} for m, p in mods.items()}

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
    """In zoo/, tools/ and plugins/. A function may run longer where a comment on its `def`
    line says why."""
    too_long = []
    for name, path in every_module().items():
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
