"""Options several commands share, so that each means one thing everywhere."""

import click

SET_OPTION = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe value (YAML-typed), e.g. --set model.depth=8. Repeatable.",
)
PLUGINS_OPTION = click.option(
    "--plugins", "plugin_paths", multiple=True, type=click.Path(), metavar="PATH",
    help="Extra plugin file or folder to load. Repeatable.",
)
TRUST_OPTION = click.option(
    "--trust-plugins", is_flag=True,
    help="Import the plugin files the run dir's recipe.yaml names (they are code).",
)
DEVICE_OPTION = click.option(
    "--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
    help="Where to compute: auto is CUDA when present, else the CPU.",
)
CHECKPOINT_OPTION = click.option(
    "--checkpoint", "which", default="last", show_default=True, metavar="last|best|PATH",
    help="Which checkpoint of a run dir: its last, its best (by val accuracy), or a PATH.",
)
