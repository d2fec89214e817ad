"""Plugin registry: one `Registry` per kind, filled by `@register` in plugin files.

A plugin is a class or factory whose signature is its schema. Some parameters are supplied
by zoo itself (the *context*, e.g. an attention layer's `dim`); the rest come from the
recipe, written as `name` or `{name: {param: value}}`, and are checked before construction.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import kinds
from zoo.errors import ZooError, brief, clip, first_line, suggest
from zoo.io import packaged_dir
from zoo.typecheck import check_type


@dataclass
class Plugin:
    """One registered plugin: what it is, where it came from, what it accepts."""

    kind: str
    name: str
    obj: Callable[..., Any]
    file: str
    line: int

    @property
    def doc(self) -> str:
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.obj)

    def params(self) -> dict[str, inspect.Parameter]:
        """Parameters a recipe may set (the context is zoo's, not the user's)."""
        ctx = kinds.KINDS[self.kind].context
        return {
            n: p
            for n, p in self.signature.parameters.items()
            if n not in ctx and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def hints(self) -> dict[str, Any]:
        """The parameters' type annotations, resolved; one that cannot be (a name imported
        only for type checkers) is left unchecked."""
        fn = self.obj.__init__ if inspect.isclass(self.obj) else self.obj
        out = {}
        for name, ann in getattr(fn, "__annotations__", {}).items():
            try:
                out[name] = eval(ann, getattr(fn, "__globals__", {})) if isinstance(ann, str) else ann
            except Exception:  # noqa: BLE001 - an annotation is only a hint
                continue
        return out

    def accepts_any(self) -> bool:
        return any(p.kind == p.VAR_KEYWORD for p in self.signature.parameters.values())

    def describe(self) -> dict[str, Any]:
        params = {}
        for n, p in self.params().items():
            params[n] = None if p.default is p.empty else p.default
        return {
            "name": self.name,
            "doc": self.doc,
            "params": params,
            "required": [n for n, p in self.params().items() if p.default is p.empty],
            "file": self.file,
        }


class Registry:
    """The plugins of one kind, by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self.plugins: dict[str, Plugin] = {}

    def add(self, plugin: Plugin) -> None:
        old = self.plugins.get(plugin.name)
        if old is not None:
            check_unique(self.kind, plugin.name, old.file, plugin.file)
        self.plugins[plugin.name] = plugin

    def get(self, name: str, path: str = "") -> Plugin:
        if name not in self.plugins and not _discovered:
            discover()  # the first lookup of a name not yet registered: load the built-ins
        if name not in self.plugins:
            where = f"{path}: " if path else ""
            known = ", ".join(sorted(self.plugins)) or "none"
            raise ZooError(
                f"{where}unknown {self.kind} '{clip(str(name))}'{suggest(name, self.plugins)}; "
                f"available: {known}"
            )
        return self.plugins[name]


def check_unique(kind: str, name: str, first: str, second: str) -> None:
    """One name, one plugin: the same name from a second file is an error naming both."""
    if Path(first).resolve() != Path(second).resolve():
        raise ZooError(f"{kind} '{name}' is registered twice: in {first} and in {second}; "
                       "rename one of them")


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in kinds.KINDS}


def registry(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise ZooError(f"unknown plugin kind '{kind}'{suggest(kind, kinds.KINDS)}; kinds: {', '.join(kinds.KINDS)}")
    return REGISTRIES[kind]


def register(kind: str, name: str) -> Callable[[Callable], Callable]:
    """Decorator: `@register("attention", "diff")` on a class or factory."""
    reg = registry(kind)

    def deco(obj: Callable) -> Callable:
        try:
            file = inspect.getsourcefile(obj) or "<unknown>"
            line = inspect.getsourcelines(obj)[1]
        except (OSError, TypeError):
            file, line = "<unknown>", 0
        reg.add(Plugin(kind, name, obj, file, line))
        return obj

    return deco


def parse_spec(spec: Any, path: str) -> tuple[str, dict[str, Any]]:
    """`name` or `{name: {param: value}}` (or `{name: null}`) -> (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and len(spec) == 1:
        (name, params), = spec.items()
        if params is None:
            params = {}
        if isinstance(name, str) and isinstance(params, dict):
            return name, dict(params)
    raise ZooError(
        f"{path}: expected a plugin name or {{name: {{param: value}}}}, got {brief(spec)}"
    )


def spec_name(spec: Any) -> str:
    """The plugin name of a spec already validated (a recipe's, a built model's config)."""
    return parse_spec(spec, "spec")[0]


def check_params(plugin: Plugin, params: dict[str, Any], path: str) -> dict[str, Any]:
    """Fail on unknown, context-owned, missing or wrongly typed parameters, naming `path`;
    return them as the plugin gets them (ints widened to float where a float is wanted)."""
    allowed, hints = plugin.params(), plugin.hints()
    out = dict(params)
    for key, value in params.items():
        if key in kinds.KINDS[plugin.kind].context:
            raise ZooError(
                f"{path}.{clip(str(key))}: set by zoo for every {plugin.kind}, not by the recipe; remove it"
            )
        if key not in allowed and not plugin.accepts_any():
            raise ZooError(
                f"{path}.{clip(str(key))}: unknown parameter of {plugin.kind} '{plugin.name}'"
                f"{suggest(key, allowed)}; parameters: {', '.join(allowed) or 'none'}"
            )
        if key in hints:
            out[key] = check_type(hints[key], value, f"{path}.{key}")
    for key, p in allowed.items():
        if p.default is p.empty and key not in params:
            raise ZooError(f"{path}: {plugin.kind} '{plugin.name}' needs parameter '{key}'")
    return out


def build(kind: str, spec: Any, *, path: str | None = None, **context: Any) -> Any:
    """Construct the plugin `spec` names, passing the context it accepts and checked params;
    what it returns must keep its kind's contract (zoo.kinds)."""
    path = path or kind
    name, params = parse_spec(spec, path)
    plugin = registry(kind).get(name, path)
    params = check_params(plugin, params, path)
    sig = plugin.signature.parameters
    ctx = context if plugin.accepts_any() else {k: v for k, v in context.items() if k in sig}
    obj = plugin.obj(**ctx, **params)
    contract = kinds.KINDS[kind].contract
    where = f"{path}: {kind} '{name}' ({plugin.file}:{plugin.line})"
    if not isinstance(obj, contract):
        raise ZooError(f"{where} returned {type(obj).__name__}, not {contract.__name__}: "
                       f"{kinds.summary(contract)}")
    try:
        problem = kinds.KINDS[kind].probe(obj, context)
    except Exception as e:  # a plugin's bug can raise anything on the test input
        problem = f"fails on a tiny test input ({first_line(e)})"
    if problem:
        raise ZooError(f"{where} {problem}")
    return obj


# ---------------------------------------------------------------------------------------
# Discovery: built-in files, entry points, ZOO_PLUGIN_PATH, recipe `plugins:`, --plugins.

_loaded: set[Path] = set()
_discovered = False  # built-ins and entry points loaded once


def builtin_dir() -> Path:
    """The built-in plugins: `zoo._plugins` when installed, else this checkout's plugins/."""
    return packaged_dir("zoo._plugins", "plugins")


def _plugin_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if not p.name.startswith("_"))
    return [path]


def load_file(path: Path) -> None:
    """Import one plugin file by path; failures become one-line ZooErrors with file:line."""
    path = path.resolve()
    if path in _loaded:
        return
    if not path.exists():
        raise ZooError(
            f"plugin path {path} does not exist (named by ZOO_PLUGIN_PATH, a recipe's "
            "plugins: or --plugins)"
        )
    mod_name = f"zoo_plugin_{path.parent.name}_{path.stem}_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ZooError(f"{path}: not a Python plugin file (expected a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    _loaded.add(path)
    try:
        spec.loader.exec_module(module)
    except ZooError:
        raise
    except SyntaxError as e:
        raise ZooError(f"{e.filename}:{e.lineno}: syntax error in plugin file: {e.msg}") from e
    except Exception as e:
        line = next(
            (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
             if Path(f.filename).resolve() == path),
            0,
        )
        raise ZooError(
            f"{path}:{line}: plugin file failed to import: {type(e).__name__}: {e}"
        ) from e


def sources(extra: Iterable[str | Path] = ()) -> list[Path | importlib.metadata.EntryPoint]:
    """Every plugin source in the order they load: built-in files, installed packages' entry
    points (group `zoo.plugins`), then the files of ZOO_PLUGIN_PATH and of `extra`."""
    env = os.environ.get("ZOO_PLUGIN_PATH", "")
    user = [Path(p) for p in env.split(os.pathsep) if p] + [Path(p) for p in extra]
    return [*_plugin_files(builtin_dir()), *importlib.metadata.entry_points(group="zoo.plugins"),
            *(f for src in user for f in _plugin_files(src))]


def load(source: Path | importlib.metadata.EntryPoint) -> None:
    """Run one source's registrations; failures become one-line ZooErrors."""
    if isinstance(source, Path):
        load_file(source)
        return
    try:
        source.load()
    except ZooError:
        raise
    except Exception as e:
        raise ZooError(f"entry point {source.name} = {source.value}: failed to import: {e}") from e


def discover(extra: Iterable[str | Path] = (), strict: bool = True) -> list[str]:
    """Load every plugin source in order; return the error lines (raise the first if strict)."""
    global _discovered
    _discovered = True
    errors: list[str] = []
    for source in sources(extra):
        try:
            load(source)
        except ZooError as e:
            if strict:
                raise
            errors.append(str(e))
    return errors
