"""The report's plots, drawn on bare matplotlib Figures (Agg: no pyplot state, no display).

Accuracy per epoch, then final accuracy against each swept key, against parameters and
against training throughput. A plot is drawn only when it has points: runs that have not
finished have no final accuracy, so they get no plots at all, and no panel is ever empty.
Each run (or line) keeps one colour and one hollow marker shape in every plot, and is named
in a legend beside the axes, so points that fall on one another stay apart and no label
covers another.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

from zoo.recipe import yaml_value
from zoo.study.cells import short_value
from zoo.study.results import SPLIT_NAMES, Run, logged_splits, readable, varied_keys

Figures = dict[str, tuple[str, Any]]  # file name -> (title, matplotlib Figure)
Plots = dict[str, tuple[str, bytes]]  # file name -> (title, PNG)
Row = dict[str, Any]  # a run's row of the report table
Style = dict[str, Any]  # keyword arguments of Axes.plot: colour and marker
MARKERS = "osD^vPX"  # 7 shapes against 10 colours: 70 runs before a pair repeats
LEGEND_ROWS = 20  # entries per column of a legend beside the axes
MAX_TICKS = 12  # a tick at each swept value, up to this many
DODGE = 0.5  # of an epoch: runs evaluated at the same epoch are spread this wide around it
SCATTERS = {  # file: (result column, x label, what the title names)
    "acc_vs_params.png": ("params", "parameters", "parameters"),
    "acc_vs_throughput.png": ("img_per_s", "training images per second", "training throughput"),
}


def plots(runs: list[Run], rows: list[Row]) -> Plots:
    """Every plot that has points, as PNG; none when no run has finished."""
    return {name: (title, _png(fig)) for name, (title, fig) in figures(runs, rows).items()}


def figures(runs: list[Run], rows: list[Row]) -> Figures:
    """The plots as Figures, in the order report.md shows them."""
    done = [(r, row) for r, row in zip(runs, rows, strict=True) if r.finished]
    if not done:
        return {}
    styles = {r.label: _style(i) for i, r in enumerate(runs)}
    split = logged_splits(runs)[0]
    name, acc = SPLIT_NAMES[split], f"final_{split}_acc"
    out: Figures = {}
    title = f"{name} accuracy per epoch"
    if fig := _per_epoch(runs, styles, f"{split}_acc", title, f"{name} accuracy (%)"):
        out[f"{split}_acc.png"] = (title, fig)
    axes = swept_axes([r for r, _ in done])
    for axis in axes:
        others = [k for a in axes if a is not axis for k in a]
        title = f"final {name} accuracy vs {' / '.join(axis)}"
        if fig := _swept(done, axis, others, acc, title, f"final {name} accuracy (%)"):
            out[_file_name(axis[0], out)] = (title, fig)
    for file, (x, xlabel, what) in SCATTERS.items():
        points = [(row[x], 100 * row[acc], row["run"]) for _, row in done
                  if row[x] is not None and row[acc] is not None]
        title = f"final {name} accuracy vs {what}"
        if points:
            out[file] = (title, _scatter(points, styles, xlabel, f"final {name} accuracy (%)", title))
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


def _file_name(key: str, taken: Figures) -> str:
    """`acc_vs_<key>.png`, safe as a file name whatever a run's recipe.yaml holds."""
    stem = f"acc_vs_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)[:60]}"
    name, n = f"{stem}.png", 1
    while name in taken or name in SCATTERS:
        name, n = f"{stem}-{n}.png", n + 1
    return name


def _style(i: int) -> Style:
    """The i-th run's or line's look: hollow, so a point drawn over another leaves it seen."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "markersize": 7,
            "markerfacecolor": "none", "markeredgewidth": 1.5}


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlabel=_plain(xlabel), ylabel=ylabel, title=_plain(title))
    ax.grid(alpha=0.3)
    return fig, ax


def _legend_beside(fig: Any, ax: Any) -> None:
    """One entry per run or line, right of the axes, where it can hide no point."""
    n = len(ax.get_legend_handles_labels()[1])
    fig.legend(loc="outside right upper", fontsize="small", ncols=math.ceil(n / LEGEND_ROWS))


def _plain(text: str) -> str:
    """Text from a run as matplotlib shows it literally: `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def _per_epoch(runs: list[Run], styles: dict[str, Style], key: str, title: str,
               ylabel: str) -> Any | None:
    """One line per run over whole-epoch ticks. Runs are spread across DODGE of an epoch,
    so that after one epoch each is a separate point rather than one dot over another."""
    from matplotlib.ticker import MaxNLocator

    curves = [(r, [(m["epoch"], 100 * m[key]) for m in r.metrics if key in m]) for r in runs]
    curves = [(r, points) for r, points in curves if points]
    if not curves:
        return None
    fig, ax = _figure(title, "epoch", ylabel)
    for i, (r, points) in enumerate(curves):
        shift = DODGE * (i / (len(curves) - 1) - 0.5) if len(curves) > 1 else 0.0
        epochs, accs = zip(*points, strict=True)
        ax.plot([e + shift for e in epochs], accs, label=_plain(r.label), **styles[r.label])
    epochs = [e for _, points in curves for e, _ in points]
    ax.set_xlim(math.floor(min(epochs)) - 0.5, math.ceil(max(epochs)) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    _legend_beside(fig, ax)
    return fig


def _swept(done: list[tuple[Run, Row]], axis: list[str], others: list[str], acc: str,
           title: str, ylabel: str) -> Any | None:
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
    for i, (label, line) in enumerate(lines.items()):
        ax.plot(*zip(*sorted(line), strict=True), label=_plain(label) or None, **_style(i))
    if numeric and min(xs) > 0 and max(xs) / min(xs) > 10:  # learning rates span decades
        ax.set_xscale("log")
    if len(xs) <= MAX_TICKS or not numeric:
        ax.set_xticks(xs if numeric else range(len(xs)), [_plain(ticks[x]) for x in xs],
                      rotation=0 if numeric else 20, ha="center" if numeric else "right")
        ax.minorticks_off()
    ax.margins(x=0.1, y=0.1)
    if len(lines) > 1:
        _legend_beside(fig, ax)
    return fig


def _tick(value: Any) -> str:
    """Numbers as the table shows them, plugin specs and lists as cell names show them."""
    return readable(value) if isinstance(value, int | float) else short_value(value)


def _scatter(points: list[tuple[float, float, str]], styles: dict[str, Style], xlabel: str,
             ylabel: str, title: str) -> Any:
    """One marker per run, named in the legend: runs of near-equal size would stack their
    labels on the points. Counts on the axis read as the table writes them (134k, 1.2M)."""
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure(title, xlabel, ylabel)
    for px, py, label in points:
        ax.plot([px], [py], linestyle="none", label=_plain(label), **styles[label])
    xs = [p[0] for p in points]
    if min(xs) > 0 and max(xs) / min(xs) > 10:  # model sizes often span decades
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_count))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    ax.margins(x=0.1, y=0.1)
    _legend_beside(fig, ax)
    return fig


def _minor_count(value: float, _: int | None = None) -> str:
    """A log axis' minor ticks: 20k and 50k named, the others left blank."""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6) if value > 0 else 0
    return _count(value) if mantissa in (2, 5) else ""


def _count(value: float) -> str:
    """A count as an axis shows it: 850, 134k, 137.5k, 1.2M."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()
