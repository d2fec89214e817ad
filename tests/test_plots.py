"""The report's plots as a reader sees them, read from the matplotlib figures (axis limits,
tick labels, markers, where the texts fall), not from pixels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_run
from zoo.study.plots import figures
from zoo.study.report import table
from zoo.study.results import find_runs

# A one-epoch patch-size sweep as it came out on a CPU: (cell, patch, val acc, parameters).
# vit p4 and diffvit p2 reached almost the same accuracy; each ViT has almost the size of
# its Diff-ViT.
ONE_EPOCH = [("vit", 2, 0.221, 134_506), ("vit", 4, 0.194, 137_866), ("vit", 8, 0.402, 147_466),
             ("diffvit", 2, 0.195, 134_762), ("diffvit", 4, 0.196, 138_122),
             ("diffvit", 8, 0.398, 147_722)]


def sweep(root: Path, cells: list[tuple[str, int, float, int]], epochs: int = 1) -> dict[str, Any]:
    """Finished runs of `epochs` evaluations each (the last one the cell's accuracy), and
    their figures by file name."""
    for name, patch, acc, params in cells:
        path = root / f"{name}-patch_size={patch}"
        accs = [acc * (i + 1) / epochs for i in range(epochs)]
        vit = name.startswith("vit")
        make_run(path, patch, accs, finished=True, model__attention="mhsa" if vit else "diff",
                 model__heads=4 if vit else 2)
        summary = json.loads((path / "summary.json").read_text())
        (path / "summary.json").write_text(json.dumps({**summary, "params": params}))
    runs = find_runs([root])
    return {name: fig for name, (_, fig) in figures(runs, table(runs)[1]).items()}


def draw(fig: Any) -> Any:
    """Lay the figure out as savefig does (Agg, no file); the renderer that measures text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def shown_ticks(ax: Any) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def points_px(ax: Any, label: str) -> list[tuple[float, float]]:
    """Where the points of the line named `label` fall on the figure, in pixels."""
    (line,) = [ln for ln in ax.lines if ln.get_label() == label]
    return [tuple(p) for p in ax.transData.transform(line.get_xydata())]


def named_texts(fig: Any) -> list[Any]:
    """The texts that name runs: annotations on the axes and legend entries."""
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [*(t for ax in fig.axes for t in ax.texts), *(t for lg in legends for t in lg.get_texts())]


def test_runs_evaluated_once_are_points_over_a_whole_epoch_axis(tmp_path):
    fig = sweep(tmp_path, ONE_EPOCH)["val_acc.png"]
    ax = fig.axes[0]
    draw(fig)
    lo, hi = ax.get_xlim()
    assert lo <= 0.5 and hi >= 1.5  # not 0.945 to 1.05 around a lone dot
    assert shown_ticks(ax) == [1.0]
    assert all(line.get_marker() not in ("", "None", None) and line.get_markersize() >= 6
               for line in ax.lines)


def test_runs_of_equal_accuracy_stay_apart_and_each_has_its_own_marker(tmp_path):
    figs = sweep(tmp_path, ONE_EPOCH)
    ax = figs["val_acc.png"].axes[0]
    draw(figs["val_acc.png"])
    (a,), (b,) = points_px(ax, "vit-patch_size=4"), points_px(ax, "diffvit-patch_size=2")
    size_px = ax.lines[0].get_markersize() * figs["val_acc.png"].dpi / 72
    assert abs(a[0] - b[0]) >= size_px  # 19.4% and 19.5% at epoch 1: side by side
    for name in ("val_acc.png", "acc_vs_params.png", "acc_vs_throughput.png"):
        lines = figs[name].axes[0].lines
        assert len(lines) == len(ONE_EPOCH), name
        assert len({(ln.get_color(), ln.get_marker()) for ln in lines}) == len(lines), name
        assert all(ln.get_markerfacecolor() == "none" for ln in lines), name  # hollow: both seen
    swept = figs["acc_vs_model.patch_size.png"].axes[0].lines
    assert len(swept) == 2 and swept[0].get_marker() != swept[1].get_marker()


@pytest.mark.parametrize("name", ["val_acc.png", "acc_vs_params.png", "acc_vs_throughput.png",
                                  "acc_vs_model.patch_size.png"])
def test_every_run_is_named_once_and_no_name_covers_another(tmp_path, name):
    fig = sweep(tmp_path, ONE_EPOCH)[name]
    renderer = draw(fig)
    texts = named_texts(fig)
    expected = ({"heads=4, attention=mhsa", "heads=2, attention=diff"} if "patch_size" in name
                else {f"{c}-patch_size={p}" for c, p, _, _ in ONE_EPOCH})
    assert sorted(t.get_text() for t in texts) == sorted(expected)
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert not [(texts[i].get_text(), texts[j].get_text()) for i in range(len(boxes))
                for j in range(i) if boxes[i].overlaps(boxes[j])]
    plot_area = fig.axes[0].get_window_extent(renderer)
    assert not [t.get_text() for t, box in zip(texts, boxes, strict=True) if box.overlaps(plot_area)]


def test_parameter_counts_on_the_axis_read_as_thousands(tmp_path):
    fig = sweep(tmp_path, ONE_EPOCH)["acc_vs_params.png"]
    draw(fig)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(labels) >= 2 and all(re.fullmatch(r"\d+(\.\d+)?k", t) for t in labels), labels
    assert fig.axes[0].xaxis.get_offset_text().get_text() == ""  # no "1e5" at the axis' end


@pytest.mark.parametrize("sizes", [(30_000, 400_000, 2_500_000), (30_000, 120_000, 400_000)],
                         ids=["decades", "one decade tick"])
def test_sizes_over_decades_read_as_k_and_m_on_a_log_axis(tmp_path, sizes):
    cells = [(c, p, acc, n) for (c, p, acc), n in
             zip([("vit", 4, 0.5), ("vit", 8, 0.6), ("diffvit", 4, 0.7)], sizes, strict=True)]
    fig = sweep(tmp_path, cells)["acc_vs_params.png"]
    draw(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in [*ax.get_xticklabels(), *ax.get_xticklabels(minor=True)]
              if t.get_text()]
    assert "100k" in labels and len(labels) >= 3, labels
    assert all(re.fullmatch(r"\d+(\.\d+)?[kM]", t) for t in labels), labels


def test_long_runs_keep_whole_epoch_ticks(tmp_path):
    fig = sweep(tmp_path, ONE_EPOCH[:2], epochs=30)["val_acc.png"]
    ax = fig.axes[0]
    draw(fig)
    ticks = shown_ticks(ax)
    assert len(ticks) >= 3 and all(t == int(t) for t in ticks)
    lo, hi = ax.get_xlim()
    assert lo <= 1 and hi >= 30 and hi - lo < 31
