"""What plugins there are, read from their files without running them, so `zoo list` answers
before torch would have finished loading.

A file is read when each use of `register` in it is `@register("kind", "name")` on a
top-level function, or on a class with its own docstring and `__init__` (or no base class),
whose defaults are literals. Any other file (a loop of registrations, a computed default,
an inherited docstring) is imported through the registry, as are entry-point packages (they
may register from submodules), so the listing is always what `zoo run` would find.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

from zoo import kinds, registry
from zoo.errors import ZooError

Entry = tuple[str, dict[str, Any]]  # (kind, what Plugin.describe() gives)


class NeedsImport(Exception):
    """The file does more than `read` can follow; importing it is the only faithful reading."""


def _register_call(node: ast.expr) -> tuple[str, str] | None:
    """(kind, name) of a decorator `register("kind", "name")` with literal strings of a known
    kind, else None."""
    if not (isinstance(node, ast.Call) and _names_register(node.func) and not node.keywords):
        return None
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if len(args) != 2 or len(node.args) != 2 or args[0] not in kinds.KINDS:
        return None
    return args[0], args[1]


def _names_register(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "register") or (
        isinstance(node, ast.Attribute) and node.attr == "register")


def _params(fn: ast.FunctionDef, kind: str, method: bool) -> tuple[dict[str, Any], list[str]]:
    """A signature's recipe parameters with their literal defaults, and the required ones."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = list(zip(positional, defaults, strict=True))[1 if method else 0:]
    pairs += list(zip(a.kwonlyargs, a.kw_defaults, strict=True))
    params, required = {}, []
    for arg, default in pairs:
        if arg.arg in kinds.KINDS[kind].context:
            continue
        if default is None:
            required.append(arg.arg)
            params[arg.arg] = None
            continue
        try:
            params[arg.arg] = ast.literal_eval(default)
        except ValueError as e:  # a computed default: only running the file gives its value
            raise NeedsImport from e
    return params, required


def _describe(node: ast.FunctionDef | ast.ClassDef, kind: str, name: str, file: str) -> dict[str, Any]:
    if len(node.decorator_list) > 1:
        raise NeedsImport  # another decorator may replace the signature or the docstring
    doc = ast.get_docstring(node)
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if doc is None or node.keywords or (init is None and node.bases):
            raise NeedsImport  # an inherited docstring or __init__, or a metaclass
        params, required = _params(init, kind, method=True) if init else ({}, [])
    else:
        params, required = _params(node, kind, method=False)
    first = (doc or "").strip().splitlines()
    return {"name": name, "doc": first[0] if first else "", "params": params,
            "required": required, "file": file}


def read(path: Path) -> list[Entry]:
    """The plugins a file registers, read without running it; NeedsImport where that cannot
    be exact, a ZooError with file:line for a syntax error."""
    path = path.resolve()
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as e:
        raise ZooError(f"{e.filename}:{e.lineno}: syntax error in plugin file: {e.msg}") from e
    except OSError as e:
        raise NeedsImport from e  # the registry says what is wrong with the path
    found, understood = [], set()
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        for dec in node.decorator_list:
            if (reg := _register_call(dec)) is not None:
                found.append((reg[0], _describe(node, *reg, str(path))))
                understood.add(id(dec.func))
    for n in ast.walk(tree):  # a renamed import, or a use of register not read above
        if (isinstance(n, ast.alias) and n.name == "register" and n.asname) or (
                _names_register(n) and id(n) not in understood):
            raise NeedsImport
    return found


def _imported(source: Path | importlib.metadata.EntryPoint) -> list[Entry]:
    """The plugins a source registers when imported: those defined in its file, or under its
    package's folder for an entry point (imported once per process, so found by file)."""
    registry.load(source)
    if isinstance(source, Path):
        homes = [source.resolve()]
    else:
        module = sys.modules[source.module]
        homes = [Path(p).resolve() for p in getattr(module, "__path__", [module.__file__])]
    return [(k, p.describe()) for k, r in registry.REGISTRIES.items() for p in r.plugins.values()
            if any(h == (f := Path(p.file).resolve()) or h in f.parents for h in homes)]


def catalog(kind: str | None = None, pattern: str = "*", extra: tuple[str | Path, ...] = ()
            ) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """{kind: [plugin descriptions, by name]} of every source in loading order (one kind if
    given, names matching `pattern`), and the one-line errors of the sources that failed."""
    chosen = [registry.registry(kind).kind] if kind else list(kinds.KINDS)
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    errors: list[str] = []
    for source in registry.sources(extra):
        try:
            try:
                entries = read(source) if isinstance(source, Path) else _imported(source)
            except NeedsImport:
                entries = _imported(source)
            for k, info in entries:
                if (k, info["name"]) in seen:
                    registry.check_unique(k, info["name"], seen[k, info["name"]]["file"], info["file"])
                seen[k, info["name"]] = info
        except ZooError as e:
            errors.append(str(e))
    found = {k: sorted((i for (kk, n), i in seen.items() if kk == k and fnmatch.fnmatch(n, pattern)),
                       key=lambda i: i["name"]) for k in chosen}
    return found, errors
