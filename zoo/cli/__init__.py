"""The `zoo` command line: all click code lives in this package.

Commands import the library inside their functions, so `zoo --help` starts without torch.
"""

from __future__ import annotations

import importlib.metadata
import sys
from typing import Any, NoReturn

import click

from zoo.cli import commands, predict, study, viz
from zoo.errors import ZooError, report_user_error

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class ZooGroup(click.Group):
    """Turns ZooError into one line on stderr and exit code 2 (`--debug` shows the
    traceback), and click's usage errors into the same one line."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            _usage_error(e, info_name or "zoo")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a subcommand's, named before its context exists
            _usage_error(e, " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand))))
        except ZooError as e:
            ctx.exit(report_user_error(e, bool(ctx.params.get("debug") or ctx.meta.get("zoo.debug"))))


def _usage_error(e: click.UsageError, where: str) -> NoReturn:
    """What click prints in four lines (usage, hint, blank, error), in zoo's one; a bare
    `zoo` (click >= 8.2 raises for it) still shows the help."""
    if isinstance(e, NO_ARGS_IS_HELP):
        raise e
    where = e.ctx.command_path if e.ctx else where
    click.echo(f"error: {where}: {e.format_message().rstrip('.')} (see {where} --help)", err=True)
    raise click.exceptions.Exit(2)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="vit-zoo")
def cli(debug: bool) -> None:
    """vit-zoo: study Vision Transformers by training them.

    \b
    zoo list attention            plugins of one kind, with parameters
    zoo show RECIPE               the resolved recipe
    zoo run RECIPE                train (CUDA when present)
    tensorboard --logdir runs     watch it
    """


for command in (commands.list_cmd, commands.show, commands.run, commands.eval_cmd,
                predict.predict_cmd, predict.export_cmd, viz.viz, study.sweep, study.report):
    cli.add_command(command)


def _remember_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["zoo.debug"] = True  # meta is shared by the group's context


for command in cli.commands.values():  # `zoo CMD --debug` as well as `zoo --debug CMD`
    command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False,
                                       callback=_remember_debug,
                                       help="Show the full traceback of an error."))


def script_command(entry: importlib.metadata.EntryPoint) -> click.Command:
    """`zoo NAME ARGS...` runs the script an installed package declares in the `zoo.commands`
    entry-point group (the tools/ scripts: `zoo clip-vs-resnet`), its own flags untouched."""

    @click.command(entry.name, add_help_option=False,
                   context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
                   help=f"The {entry.name} script ({entry.value}); options: zoo {entry.name} --help")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        sys.argv = [f"zoo {entry.name}", *args]  # what the script's parser and --debug read
        entry.load()(list(args))

    return command


for entry in importlib.metadata.entry_points(group="zoo.commands"):  # after --debug: theirs
    cli.add_command(script_command(entry))


def main() -> None:
    cli(prog_name="zoo")

