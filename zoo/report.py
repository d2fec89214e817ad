"""`zoo report`: compare runs from the files they leave behind, finished or not.

Reads each run's recipe.yaml, metrics.jsonl, summary.json, eval_*.json and env.json, and
writes report.md (a table over the recipe keys that differ between the runs), report.csv
and three plots: accuracy per epoch, accuracy vs parameters, accuracy vs throughput, on the
split the runs evaluated while training (val, or test for runs that report the test set as
papers do). Nothing is recomputed: every number is one the run measured itself.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.io import atomic_write, read_jsonl
from zoo.recipe import read_yaml, section_keys, yaml_value
from zoo.runs import METRICS_FILE, RECIPE_FILE, SUMMARY_FILE

SPLIT_NAMES = {"val": "validation", "test": "test"}


def plot_titles(split: str) -> dict[str, str]:
    """File name -> title of the three plots, for the split the runs evaluated."""
    name = SPLIT_NAMES[split]
    return {
        f"{split}_acc.png": f"{name} accuracy per epoch",
        "acc_vs_params.png": f"final {name} accuracy vs parameters",
        "acc_vs_throughput.png": f"final {name} accuracy vs training throughput",
    }


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

    def final_acc(self, split: str) -> float | None:
        if self.finished:
            return self.summary.get(f"final_{split}_acc")
        return self.metrics[-1].get(f"{split}_acc") if self.metrics else None


def logged_splits(runs: list[Run]) -> list[str]:
    """The splits the runs evaluated while training, val first; the first one is plotted."""
    found = {k.removesuffix("_acc") for r in runs for m in r.metrics for k in m}
    return [s for s in SPLIT_NAMES if s in found] or ["val"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _natural(path: Path) -> list[Any]:
    """Sort key that puts patch_size=8 before patch_size=16."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(roots: list[Path]) -> list[Run]:
    """Every folder holding a recipe.yaml under `roots` (a root may be a run itself)."""
    paths: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise ZooError(f"{root}: no such directory")
        found = sorted((p.parent for p in root.rglob(RECIPE_FILE)), key=_natural)
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
        evals = {f.stem.removeprefix("eval_"): _read_json(f) for f in sorted(p.glob("eval_*.json"))}
        runs.append(Run(
            path=p, label=label, recipe=section_keys(read_yaml(p / RECIPE_FILE)),
            metrics=[r for r in read_jsonl(p / METRICS_FILE)
                     if any(f"{s}_acc" in r for s in SPLIT_NAMES)],
            summary=_read_json(p / SUMMARY_FILE), evals=evals, env=_read_json(p / "env.json"),
        ))
    return runs


def varied_keys(runs: list[Run]) -> list[str]:
    """Recipe keys whose value is not the same in every run, in recipe order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.recipe))
    return [k for k in keys if len({yaml_value(r.recipe.get(k)) for r in runs}) > 1]


def device(env: dict[str, Any]) -> str:
    if env.get("gpus"):
        return str(env["gpus"][0]) + (f" x{len(env['gpus'])}" if len(env["gpus"]) > 1 else "")
    return f"CPU ({env['cpu_count']} cores)" if env.get("cpu_count") else "?"


def table(runs: list[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one row per run, raw values (the CSV); report.md formats them."""
    keys = varied_keys(runs)
    logged = logged_splits(runs)
    best = ["best_val_acc"] if "val" in logged else []
    splits = sorted({s for r in runs for s in r.evals})
    columns = ["run", *keys, "status", "epochs", "params", *best,
               *(f"final_{s}_acc" for s in logged), *(f"{s}_acc" for s in splits),
               "img_per_s", "wall_time", "device"]
    rows = []
    for r in runs:
        last = r.metrics[-1] if r.metrics else {}
        accs = [m["val_acc"] for m in r.metrics if "val_acc" in m]
        s = r.summary if r.finished else {}
        rows.append({
            "run": r.label,
            **{k: r.recipe.get(k) for k in keys},
            "status": "finished" if r.finished else "incomplete",
            "epochs": s.get("epochs", last.get("epoch")),
            "params": s.get("params"),
            **({"best_val_acc": s.get("best_val_acc", max(accs) if accs else None)} if best else {}),
            **{f"final_{sp}_acc": r.final_acc(sp) for sp in logged},
            **{f"{sp}_acc": r.evals.get(sp, {}).get("acc") for sp in splits},
            "img_per_s": s.get("img_per_s", last.get("img_per_s")),
            "wall_time": s.get("wall_time", last.get("time")),
            "device": device(r.env),
        })
    return columns, rows


def _fmt(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column.endswith("_acc"):
        return f"{100 * value:.2f}"
    if column == "params":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"
    if column in ("img_per_s", "wall_time"):
        return f"{value:.0f}"
    if column == "epochs":
        return f"{value:g}"
    return md_text(value if isinstance(value, str) else yaml_value(value))


def md_text(text: str) -> str:
    """Text from a run (its folder name, recipe values) as inert Markdown table text: no
    HTML, no line breaks, no column breaks, whatever the run dir holds."""
    text = " ".join(text.split())
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, safe)
    return text


HEADERS = {
    "best_val_acc": "best val acc %", "final_val_acc": "final val acc %",
    "final_test_acc": "final test acc %",
    "img_per_s": "train img/s", "wall_time": "wall s",
}


def markdown(title: str, columns: list[str], rows: list[dict[str, Any]],
             plotted: dict[str, str]) -> str:
    heads = [HEADERS.get(c, c.replace("_acc", " acc %") if c.endswith("_acc") else c) for c in columns]
    lines = [
        f"# {md_text(title)}", "",
        f"{len(rows)} runs, {sum(r['status'] == 'finished' for r in rows)} finished. Every "
        "number is what the run itself measured and logged (see its env.json for the "
        "machine); throughput is training images per second in the last evaluated epoch.", "",
        "| " + " | ".join(heads) + " |",
        "|" + "|".join(" --- " for _ in heads) + "|",
        *("| " + " | ".join(_fmt(c, r[c]) for c in columns) + " |" for r in rows),
        "",
        *(f"![{what}]({name})" for name, what in plotted.items()),
        "",
    ]
    return "\n".join(lines)


def write_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: v if v is None or isinstance(v, str | int | float) else yaml_value(v)
                         for c, v in row.items()})
    return buf.getvalue()


def plots(runs: list[Run], rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """The three PNGs, drawn on bare Figures (Agg; no pyplot state, no display needed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    split = logged_splits(runs)[0]
    titles, name = plot_titles(split), SPLIT_NAMES[split]
    key = f"{split}_acc"
    out = {}
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for r in runs:
        points = [(m["epoch"], 100 * m[key]) for m in r.metrics if key in m]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=r.label)
    ax.set(xlabel="epoch", ylabel=f"{name} accuracy (%)", title=titles[f"{key}.png"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    out[f"{key}.png"] = _png(fig)
    for plot, x, xlabel in (
        ("acc_vs_params.png", "params", "parameters"),
        ("acc_vs_throughput.png", "img_per_s", "training images per second"),
    ):
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        points = [(r[x], 100 * r[f"final_{key}"], r["run"]) for r in rows
                  if r[x] is not None and r[f"final_{key}"] is not None]
        for px, py, label in points:
            ax.scatter(px, py)
            ax.annotate(label, (px, py), fontsize="x-small", xytext=(4, 4), textcoords="offset points")
        xs = [p[0] for p in points]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 10:  # model sizes often span decades
            ax.set_xscale("log")
        ax.margins(x=0.15, y=0.1)  # room for the labels
        ax.set(xlabel=xlabel, ylabel=f"final {name} accuracy (%)", title=titles[plot])
        ax.grid(alpha=0.3)
        out[plot] = _png(fig)
    return out


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write_report(roots: list[Path], out: Path) -> list[Path]:
    """Find the runs under `roots`, write report.md, report.csv and the plots into `out`."""
    runs = find_runs(roots)
    columns, rows = table(runs)
    files = {
        "report.md": markdown(f"Report: {', '.join(map(str, roots))}", columns, rows,
                              plot_titles(logged_splits(runs)[0])),
        "report.csv": write_csv(columns, rows),
        **plots(runs, rows),
    }
    for name, data in files.items():
        atomic_write(out / name, data)
    return [out / name for name in files]
