"""The report's plots, drawn on bare matplotlib Figures (Agg: no pyplot state, no display).

Accuracy per epoch, then final accuracy against each swept key, against parameters and
against training throughput. A plot is drawn only when it has points: runs that have not
finished have no final accuracy, so they get no plots at all, and no panel is ever empty.
"""

from __future__ import annotations

import io
import re
from typing import Any

from zoo.recipe import yaml_value
from zoo.study.cells import short_value
from zoo.study.results import SPLIT_NAMES, Run, logged_splits, readable, varied_keys

Plots = dict[str, tuple[str, bytes]]  # file name -> (title, PNG)
Row = dict[str, Any]  # a run's row of the report table
MAX_LEGEND = 10  # lines; more make a legend that hides the plot
MAX_TICKS = 12  # a tick at each swept value, up to this many
SCATTERS = {  # file: (result column, x label, what the title names)
    "acc_vs_params.png": ("params", "parameters", "parameters"),
    "acc_vs_throughput.png": ("img_per_s", "training images per second", "training throughput"),
}


def plots(runs: list[Run], rows: list[Row]) -> Plots:
    """Every plot that has points; none when no run has finished."""
    done = [(r, row) for r, row in zip(runs, rows, strict=True) if r.finished]
    if not done:
        return {}
    split = logged_splits(runs)[0]
    name, acc = SPLIT_NAMES[split], f"final_{split}_acc"
    out: Plots = {}
    title = f"{name} accuracy per epoch"
    if png := _per_epoch(runs, f"{split}_acc", title, f"{name} accuracy (%)"):
        out[f"{split}_acc.png"] = (title, png)
    axes = swept_axes([r for r, _ in done])
    for axis in axes:
        others = [k for a in axes if a is not axis for k in a]
        title = f"final {name} accuracy vs {' / '.join(axis)}"
        if png := _swept(done, axis, others, acc, title, f"final {name} accuracy (%)"):
            out[_file_name(axis[0], out)] = (title, png)
    for file, (x, xlabel, what) in SCATTERS.items():
        points = [(row[x], 100 * row[acc], row["run"]) for _, row in done
                  if row[x] is not None and row[acc] is not None]
        title = f"final {name} accuracy vs {what}"
        if points:
            out[file] = (title, _scatter(points, xlabel, f"final {name} accuracy (%)", title))
    return out


def swept_axes(runs: list[Run]) -> list[list[str]]:
    """The recipe keys the runs vary, one list per plot: a key that follows another one to
    one (a Diff-ViT cell's heads follow its attention) joins that key's plot. `log.*` keys
    change no result and get none."""
    axes: list[list[str]] = []
    for key in varied_keys(runs):
        if key.startswith("log."):
            continue
        for axis in axes:
            pairs = {(yaml_value(r.recipe.get(axis[0])), yaml_value(r.recipe.get(key))) for r in runs}
            if len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}):
                axis.append(key)
                break
        else:
            axes.append([key])
    return axes


def _file_name(key: str, taken: Plots) -> str:
    """`acc_vs_<key>.png`, safe as a file name whatever a run's recipe.yaml holds."""
    stem = f"acc_vs_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)[:60]}"
    name, n = f"{stem}.png", 1
    while name in taken or name in SCATTERS:
        name, n = f"{stem}-{n}.png", n + 1
    return name


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlabel=_plain(xlabel), ylabel=ylabel, title=_plain(title))
    ax.grid(alpha=0.3)
    return fig, ax


def _plain(text: str) -> str:
    """Text from a run as matplotlib shows it literally: `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def _per_epoch(runs: list[Run], key: str, title: str, ylabel: str) -> bytes | None:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(title, "epoch", ylabel)
    for r in runs:
        points = [(m["epoch"], 100 * m[key]) for m in r.metrics if key in m]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=_plain(r.label))
    if not ax.lines:
        return None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return _png(fig)


def _swept(done: list[tuple[Run, Row]], axis: list[str], others: list[str], acc: str,
           title: str, ylabel: str) -> bytes | None:
    """Final accuracy against the values of `axis`, one line per setting of the other keys:
    a numeric axis to scale, anything else in the order the runs came in."""
    points = [(r, row) for r, row in done if row[acc] is not None]
    if not points:
        return None
    values = [r.recipe.get(axis[0]) for r, _ in points]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    texts = [" / ".join(_tick(r.recipe.get(k)) for k in axis) for r, _ in points]
    ticks = dict(zip(values, texts, strict=True)) if numeric else {t: t for t in texts}
    xs = sorted(ticks) if numeric else list(ticks)
    lines: dict[str, list[tuple[Any, float]]] = {}
    for (r, row), value, text in zip(points, values, texts, strict=True):
        label = ", ".join(f"{k.split('.')[-1]}={_tick(r.recipe.get(k))}" for k in others)
        lines.setdefault(label, []).append((value if numeric else xs.index(text), 100 * row[acc]))
    fig, ax = _figure(title, " / ".join(axis), ylabel)
    for label, line in lines.items():
        ax.plot(*zip(*sorted(line), strict=True), marker="o", label=_plain(label) or None)
    if numeric and min(xs) > 0 and max(xs) / min(xs) > 10:  # learning rates span decades
        ax.set_xscale("log")
    if len(xs) <= MAX_TICKS or not numeric:
        ax.set_xticks(xs if numeric else range(len(xs)), [_plain(ticks[x]) for x in xs],
                      rotation=0 if numeric else 20, ha="center" if numeric else "right")
        ax.minorticks_off()
    ax.margins(x=0.1, y=0.1)
    if 1 < len(lines) <= MAX_LEGEND:
        ax.legend(fontsize="small")
    return _png(fig)


def _tick(value: Any) -> str:
    """Numbers as the table shows them, plugin specs and lists as cell names show them."""
    return readable(value) if isinstance(value, int | float) else short_value(value)


def _scatter(points: list[tuple[float, float, str]], xlabel: str, ylabel: str, title: str) -> bytes:
    fig, ax = _figure(title, xlabel, ylabel)
    for px, py, label in points:
        ax.scatter(px, py)
        ax.annotate(_plain(label), (px, py), fontsize="x-small", xytext=(4, 4), textcoords="offset points")
    xs = [p[0] for p in points]
    if min(xs) > 0 and max(xs) / min(xs) > 10:  # model sizes often span decades
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the labels
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()
