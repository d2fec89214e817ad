"""`zoo list`, `zoo show`, `zoo run` and `zoo eval`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from zoo.cli.options import (
    CHECKPOINT_OPTION,
    DEVICE_OPTION,
    PLUGINS_OPTION,
    SET_OPTION,
    TRUST_OPTION,
)
from zoo.errors import ZooError


def _short_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


@click.command("list")
@click.argument("kind", required=False)
@click.argument("pattern", required=False, default="*")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@PLUGINS_OPTION
def list_cmd(kind: str | None, pattern: str, as_json: bool, plugin_paths: tuple[str, ...]) -> None:
    """List plugins: every KIND, or one KIND with docs, parameters and source files;
    `zoo list recipes` lists the recipes that come with zoo (run them by name).

    PATTERN filters names with wildcards, e.g. `zoo list attention 'd*'`. Plugin files are
    read, not run; a recipe that uses one imports it (`zoo show RECIPE`).
    """
    if kind == "recipes":
        _list_recipes(pattern, as_json)
        return
    from zoo.catalog import catalog
    from zoo.errors import suggest
    from zoo.kinds import KINDS

    if kind is not None and kind not in KINDS:
        raise ZooError(f"unknown plugin kind '{kind}'{suggest(kind, [*KINDS, 'recipes'])}; "
                       f"kinds: {', '.join(KINDS)}, or recipes (the built-in recipes)")
    found, errors = catalog(kind, pattern, plugin_paths)
    if as_json:
        click.echo(json.dumps({"plugins": found, "errors": errors}, indent=2, default=str))
    else:
        for k, plugins in found.items():
            click.secho(f"{k}", bold=True, nl=False)
            click.echo(f"  (set by zoo: {', '.join(KINDS[k].context) or 'nothing'})" if kind else "")
            for p in plugins:
                click.echo(f"  {p['name']:<18} {p['doc']}")
                if kind:
                    params = ", ".join(
                        f"{n}" if n in p["required"] else f"{n}={v!r}"
                        for n, v in p["params"].items()
                    )
                    click.echo(f"  {'':<18} params: {params or '-'}")
                    click.echo(f"  {'':<18} file:   {_short_path(p['file'])}")
            if not plugins:
                click.echo("  (none)")
    for e in errors:
        click.echo(f"warning: {e}", err=True)


def _list_recipes(pattern: str, as_json: bool) -> None:
    import fnmatch

    from zoo.recipe import list_recipes

    found = [(n, p, doc) for n, p, doc in list_recipes() if fnmatch.fnmatch(n, pattern)]
    if as_json:
        click.echo(json.dumps([{"name": n, "file": str(p), "doc": doc} for n, p, doc in found],
                              indent=2))
        return
    for name, _, doc in found:
        click.echo(f"  {name:<24} {doc}")
    click.echo("run one by name: zoo run quickstart; sweeps: zoo sweep patch_size_shapes")


@click.command("show")
@click.argument("recipe", type=click.Path())
@SET_OPTION
@PLUGINS_OPTION
def show(recipe: str, overrides: tuple[str, ...], plugin_paths: tuple[str, ...]) -> None:
    """Print the resolved, validated RECIPE as YAML (nothing runs).

    Checks what `zoo run --dry-run` checks short of reading data: the schema, the plugins
    and their parameters, model.init, that the model builds; figures it could not draw are
    warnings on stderr."""
    from zoo.model import build_model
    from zoo.recipe import resolve
    from zoo.train.launch import check, model_line

    resolved = resolve(recipe, overrides, plugin_paths)
    for line in check(resolved):
        click.echo(f"warning: {line}", err=True)
    click.echo(f"# {model_line(build_model(resolved.model))} (zoo show)")
    click.echo(resolved.to_yaml(), nl=False)


@click.command("run")
@click.argument("recipe", type=click.Path(), required=False)
@SET_OPTION
@click.option("--out", type=click.Path(), help="Run directory (default runs/<name>/<timestamp>).")
@click.option("--resume", type=click.Path(), help="Continue the run in RUN_DIR exactly; with "
              "--set train.epochs=N (or train.max_steps=N), train it longer.")
@PLUGINS_OPTION
@TRUST_OPTION
@click.option("--dry-run", is_flag=True, help="Build data and model, print a summary, train nothing.")
def run(
    recipe: str | None,
    overrides: tuple[str, ...],
    out: str | None,
    resume: str | None,
    plugin_paths: tuple[str, ...],
    trust_plugins: bool,
    dry_run: bool,
) -> None:
    """Train a RECIPE (or --resume RUN_DIR) and log to TensorBoard.

    \b
    zoo run recipes/quickstart.yaml
    zoo run recipes/vit_p4.yaml --set train.epochs=50 --set train.lr=5e-4
    zoo run --resume runs/quickstart/20260101-120000
    zoo run --resume runs/quickstart/20260101-120000 --set train.epochs=12   # train longer
    torchrun --nproc_per_node 2 -m zoo run recipes/vit_p4.yaml
    """
    from zoo.runs import load_run, new_run_dir

    if resume:
        if recipe or out:
            raise ZooError("--resume continues a run with its own recipe; drop RECIPE and --out")
        run_dir, _ = load_run(resume)
        recipe_path = str(run_dir / "recipe.yaml")
    elif recipe is None:
        raise ZooError("missing RECIPE, e.g. `zoo run recipes/quickstart.yaml` (or --resume RUN_DIR)")
    else:
        recipe_path = recipe
    from zoo.recipe import resolve

    # a recipe the user names is theirs; a run dir's recipe.yaml may come from anyone
    resolved = resolve(recipe_path, () if resume else overrides, plugin_paths,
                       trust=not resume or trust_plugins)
    from zoo.device import is_main_process
    from zoo.train import launch

    if resume and overrides:
        resolved = launch.lengthen(resolved, overrides)
    if dry_run:
        click.echo(launch.dry_run(resolved, init=not resume))
        return
    if resume:
        launch.fit(resolved, Path(resume), resume=True, lengthened=bool(overrides))
    else:
        launch.check(resolved)  # before a run dir is made; training warns of figures itself
        run_dir = new_run_dir(resolved, out) if is_main_process() else None
        launch.fit(resolved, run_dir, resume=False)


@click.command("eval")
@click.argument("source", type=click.Path())
@click.option("--split", default="test", show_default=True, help="Dataset split: train, val or test.")
@click.option("--data", "dataset", metavar="SPEC",
              help="Another dataset (name or YAML mapping), e.g. --data '{cifar10: {download: false}}'.")
@SET_OPTION
@DEVICE_OPTION
@CHECKPOINT_OPTION
@PLUGINS_OPTION
@TRUST_OPTION
@click.option("--out", type=click.Path(), help="Folder for eval_<split>.json and the figure "
              "(default: the run dir, which may be read-only).")
def eval_cmd(source: str, split: str, dataset: str | None, overrides: tuple[str, ...], device: str,
             which: str, plugin_paths: tuple[str, ...], trust_plugins: bool, out: str | None) -> None:
    """Evaluate a run dir or CHECKPOINT: accuracy, per-class accuracy, confusion matrix.

    Writes eval_<split>.json and figures/confusion_<split>.png into the run dir.
    """
    from zoo.evaluate import evaluate
    from zoo.runs import RunRef

    ref = RunRef(source, checkpoint=which, plugins=plugin_paths, trust_plugins=trust_plugins,
                 overrides=overrides)
    result = evaluate(ref, split, dataset, device, out)
    click.echo(f"checkpoint: {result['checkpoint']}")
    click.echo(f"{split} accuracy: {result['acc']:.4f}  ({result['images']} images)")
    width = max(len(c) for c in result["per_class_acc"])
    for name, acc in result["per_class_acc"].items():
        click.echo(f"  {name:<{width}}  {acc:.4f}")


