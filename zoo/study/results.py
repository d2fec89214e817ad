"""Runs as `zoo report` reads them: the files each run left behind, finished or not.

Reads each run's recipe.yaml, metrics.jsonl, summary.json, eval_*.json and env.json;
nothing is recomputed. Runs are listed in the order of the sweep that made them (its
sweep.json), else in natural order (patch_size=8 before patch_size=16).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.io import read_json, read_jsonl
from zoo.recipe import read_yaml, section_keys, yaml_value
from zoo.runs import METRICS_FILE, RECIPE_FILE, SUMMARY_FILE
from zoo.study.cells import cell_order

SPLIT_NAMES = {"val": "validation", "test": "test"}


@dataclass
class Run:
    path: Path
    label: str
    recipe: dict[str, Any]  # flattened: section.key -> value
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]  # empty until the run finished
    evals: dict[str, dict[str, Any]]  # split -> eval_<split>.json
    env: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.summary.get("status") == "finished"

    def eval_checkpoint(self, split: str) -> str | None:
        """The checkpoint `zoo eval` read for eval_<split>.json: `last` or `best` when it is
        the one the run's link names (compared by folder name: run folders get moved),
        else its folder's name."""
        path = self.evals.get(split, {}).get("checkpoint")
        if not isinstance(path, str):
            return None
        for link in ("last", "best"):
            if (self.path / "checkpoints" / link).resolve().name == Path(path).name:
                return link
        return Path(path).name

    def final_acc(self, split: str) -> float | None:
        if self.finished:
            return self.summary.get(f"final_{split}_acc")
        return self.metrics[-1].get(f"{split}_acc") if self.metrics else None


def logged_splits(runs: list[Run]) -> list[str]:
    """The splits the runs evaluated while training, val first; the first one is plotted."""
    found = {k.removesuffix("_acc") for r in runs for m in r.metrics for k in m}
    return [s for s in SPLIT_NAMES if s in found] or ["val"]


def _natural(path: Path) -> list[Any]:
    """Sort key that puts patch_size=8 before patch_size=16."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def in_sweep_order(paths: list[Path]) -> list[Path]:
    """Runs that sit in a sweep's folder, put in its cell order, within the places their
    natural order gave them; cells the sweep does not list keep their order, after it."""
    out = list(paths)
    slots: dict[Path, list[int]] = {}
    for i, p in enumerate(paths):
        slots.setdefault(p.parent, []).append(i)
    for parent, places in slots.items():
        rank = {name: i for i, name in enumerate(cell_order(parent))}
        if rank:
            siblings = sorted((paths[i] for i in places), key=lambda p: rank.get(p.name, len(rank)))
            for i, p in zip(places, siblings, strict=True):
                out[i] = p
    return out


def find_runs(roots: list[Path]) -> list[Run]:
    """Every folder holding a recipe.yaml under `roots` (a root may be a run itself)."""
    paths: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise ZooError(f"{root}: no such directory")
        found = in_sweep_order(sorted((p.parent for p in root.rglob(RECIPE_FILE)), key=_natural))
        for run in found:
            if not any(parent in paths for parent in run.parents) and run not in paths:
                paths.append(run)
    if not paths:
        raise ZooError(
            f"no runs under {', '.join(map(str, roots))} (a run is a folder with {RECIPE_FILE}, "
            "made by `zoo run` or `zoo sweep`)"
        )
    common = Path(os.path.commonpath([p.resolve() for p in paths]))
    runs = []
    for p in paths:
        label = str(p.resolve().relative_to(common)) if len(paths) > 1 else p.name
        evals = {f.stem.removeprefix("eval_"): read_json(f) for f in sorted(p.glob("eval_*.json"))}
        runs.append(Run(
            path=p, label=label, recipe=section_keys(read_yaml(p / RECIPE_FILE)),
            metrics=[r for r in read_jsonl(p / METRICS_FILE)
                     if any(f"{s}_acc" in r for s in SPLIT_NAMES)],
            summary=read_json(p / SUMMARY_FILE), evals=evals, env=read_json(p / "env.json"),
        ))
    return runs


def varied_keys(runs: list[Run]) -> list[str]:
    """Recipe keys whose value is not the same in every run, in recipe order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.recipe))
    return [k for k in keys if len({yaml_value(r.recipe.get(k)) for r in runs}) > 1]


def readable(value: Any) -> str:
    """A recipe value as a table or an axis shows it: ints as ints, floats to three
    significant digits (0.0961538 -> 0.0962, 1234.5 -> 1234), inside lists and specs too."""
    if isinstance(value, float):
        text = f"{value:.3g}"
        return f"{value:.0f}" if "e+" in text and abs(value) < 1e6 else text
    return value if isinstance(value, str) else yaml_value(_rounded(value))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.3g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
