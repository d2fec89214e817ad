"""`zoo sweep` and `zoo report`: run a grid of recipes, compare the runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from zoo.cli.options import PLUGINS_OPTION


@click.command("sweep")
@click.argument("sweep_file", type=click.Path())
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe value in every cell (wins over the sweep file). Repeatable.",
)
@click.option("--out", type=click.Path(), help="Sweep folder (default runs/<sweep name>); each cell runs in OUT/<cell>.")
@click.option("--dry-run", is_flag=True, help="Validate every cell and print its command, one line each.")
@PLUGINS_OPTION
def sweep(sweep_file: str, overrides: tuple[str, ...], out: str | None, dry_run: bool,
          plugin_paths: tuple[str, ...]) -> None:
    """Run every cell of SWEEP_FILE (a grid or list of overrides of one recipe) in turn.

    Finished cells are skipped and interrupted ones resumed, so running it again completes
    what is missing. Compare the results with `zoo report OUT`.

    \b
    zoo sweep recipes/sweeps/patch_size_shapes.yaml
    zoo sweep recipes/sweeps/patch_size.yaml --set train.epochs=1 --out runs/smoke
    zoo sweep recipes/sweeps/patch_size.yaml --dry-run
    """
    from zoo.recipe import parse_override
    from zoo.study.cells import load_sweep
    from zoo.study.sweep import SweepInterrupted, run_subprocess, run_sweep

    for item in overrides:
        parse_override(item)
    spec = load_sweep(sweep_file)
    out_dir = Path(out) if out else Path("runs") / spec.name
    try:
        failed = run_sweep(spec, out_dir, overrides, run_subprocess, dry_run=dry_run,
                           echo=click.echo, plugins=plugin_paths)
    except SweepInterrupted as e:
        click.echo(f"\n{e}", err=True)
        sys.exit(130)
    if dry_run:
        return
    n = len(spec.cells)
    if failed:
        click.echo(f"sweep {spec.name}: {len(failed)} of {n} cells failed: {', '.join(failed)}", err=True)
        sys.exit(1)
    click.echo(f"sweep {spec.name}: all {n} cells finished in {out_dir}; compare: zoo report {out_dir}")


@click.command("report")
@click.argument("runs_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), help="Where to write the report (default: the first RUNS_DIR).")
def report(runs_dirs: tuple[str, ...], out: str | None) -> None:
    """Compare the runs under RUNS_DIRS: report.md, report.csv and plots.

    \b
    zoo report runs/patch_size_shapes
    zoo report runs/patch_size runs/posemb --out reports/cifar
    """
    from zoo.study.report import write_report

    roots = [Path(d) for d in runs_dirs]
    files = write_report(roots, Path(out) if out else roots[0])
    for f in files:
        click.echo(f)
