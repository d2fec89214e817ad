"""`zoo report`: compare runs from the files they leave behind, finished or not.

Writes report.md (a table over the recipe keys that differ between the runs, in the sweep's
order), report.csv (the raw numbers) and the plots of zoo.study.plots, on the split the
runs evaluated while training (val, or test for runs that report the test set as papers
do). Nothing is recomputed: every number is one the run measured itself.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from zoo.io import atomic_write
from zoo.recipe import yaml_value
from zoo.study.plots import plots
from zoo.study.results import Run, find_runs, logged_splits, readable, varied_keys


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
               *(f"final_{s}_acc" for s in logged), *(f"eval_{s}_acc" for s in splits),
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
            **{f"eval_{sp}_acc": r.evals.get(sp, {}).get("acc") for sp in splits},
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
    return md_text(readable(value))


def md_text(text: str) -> str:
    """Text from a run (its folder name, recipe values) as inert Markdown table text: no
    HTML, no line breaks, no column breaks, whatever the run dir holds."""
    text = " ".join(text.split())
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, safe)
    return text


def _alt(text: str) -> str:
    """A plot's title as an image's alt text: a bracket from a run's recipe keys ends none."""
    return md_text(text).replace("[", "\\[").replace("]", "\\]")


HEADERS = {"img_per_s": "train img/s", "wall_time": "wall s"}
ACC = re.compile(r"(final|best|eval)_(\w+)_acc")  # a column of accuracies, and its source
WHEN = {"final": "training, last epoch", "best": "training, best epoch"}


def headings(columns: list[str], runs: list[Run]) -> list[str]:
    """report.md's column names: an accuracy says where it comes from, the evaluations the
    run made while training or a later `zoo eval` (which may read another checkpoint)."""
    heads = []
    for c in columns:
        m = ACC.fullmatch(c)
        if m is None:
            heads.append(HEADERS.get(c, c))
        else:
            source = WHEN.get(m[1]) or f"zoo eval{_checkpoint(runs, m[2])}"
            heads.append(f"{m[2]} acc % ({source})")
    return heads


def _checkpoint(runs: list[Run], split: str) -> str:
    """`, last checkpoint` (or best, or its folder) when every eval_<split>.json read the same."""
    used = {r.eval_checkpoint(split) for r in runs if split in r.evals}
    if len(used) != 1 or None in used:
        return ""
    which = str(used.pop())
    return f", {which} checkpoint" if which in ("last", "best") else f", checkpoint {md_text(which)}"


def markdown(title: str, heads: list[str], columns: list[str], rows: list[dict[str, Any]],
             plotted: dict[str, str]) -> str:
    """The table under `heads`, then the plots (file name -> title) as images."""
    finished = sum(r["status"] == "finished" for r in rows)
    lines = [
        f"# {md_text(title)}", "",
        f"{len(rows)} runs, {finished} finished. Every "
        "number is what the run itself measured and logged (see its env.json for the "
        "machine): accuracies marked training are its evaluations while it trained, those "
        "marked zoo eval what `zoo eval` measured afterwards (eval_<split>.json); "
        "throughput is training images per second in the last evaluated epoch.", "",
        "| " + " | ".join(heads) + " |",
        "|" + "|".join(" --- " for _ in heads) + "|",
        *("| " + " | ".join(_fmt(c, r[c]) for c in columns) + " |" for r in rows),
        "",
        *(f"![{_alt(what)}]({name})" for name, what in plotted.items()),
        *([] if finished else ["No plots: no finished runs yet."]),
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


def write_report(roots: list[Path], out: Path) -> list[Path]:
    """Find the runs under `roots`, write report.md, report.csv and the plots into `out`."""
    runs = find_runs(roots)
    columns, rows = table(runs)
    drawn = plots(runs, rows)
    files = {
        "report.md": markdown(f"Report: {', '.join(map(str, roots))}", headings(columns, runs),
                              columns, rows,
                              {name: title for name, (title, _) in drawn.items()}),
        "report.csv": write_csv(columns, rows),
        **{name: png for name, (_, png) in drawn.items()},
    }
    for name, data in files.items():
        atomic_write(out / name, data)
    return [out / name for name in files]
