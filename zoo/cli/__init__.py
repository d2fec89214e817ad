"""The `zoo` command line: all click code lives in this package.

Commands import the library inside their functions, so `zoo --help` starts without torch.
Installed packages add commands through the `zoo.commands` entry-point group (the CLIP
tools: `zoo clip-vs-resnet`); they are loaded only when named or listed.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any, NoReturn

import click

from zoo.cli import commands, predict, study, viz
from zoo.errors import ZooError, first_line, report_user_error

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class OneLineErrors:
    """How a zoo command or group ends on a mistake: a ZooError is one line on stderr and
    exit code 2 (`--debug` shows the traceback), and so is a click usage error."""

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
            ctx.exit(report_user_error(e, bool(ctx.meta.get("zoo.debug"))))


def _usage_error(e: click.UsageError, where: str) -> NoReturn:
    """What click prints in four lines (usage, hint, blank, error), in zoo's one; a bare
    `zoo` (click >= 8.2 raises for it) still shows the help."""
    if isinstance(e, NO_ARGS_IS_HELP):
        raise e
    where = e.ctx.command_path if e.ctx else where
    click.echo(f"error: {where}: {e.format_message().rstrip('.')} (see {where} --help)", err=True)
    raise click.exceptions.Exit(2)


def _remember_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["zoo.debug"] = True  # meta is shared by every context of one command line


def with_debug(command: click.Command) -> click.Command:
    """`zoo CMD --debug` as well as `zoo --debug CMD`, for a command without its own --debug."""
    if not any("--debug" in p.opts for p in command.params):
        command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False,
                                           callback=_remember_debug,
                                           help="Show the full traceback of an error."))
    return command


class ZooCommand(OneLineErrors, click.Command):
    """A command that ends like zoo's own (one-line errors, --debug) also where it runs on
    its own: `command.main(prog_name=...)` from a script in a checkout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with_debug(self)


@functools.cache
def installed_commands() -> dict[str, importlib.metadata.EntryPoint]:
    """The `zoo.commands` entry points of the installed packages, by command name."""
    return {e.name: e for e in importlib.metadata.entry_points(group="zoo.commands")}


def _load(entry: importlib.metadata.EntryPoint) -> click.Command:
    """The click command an entry point names; one that cannot be loaded is listed with the
    reason, and says it in one line when run."""
    try:
        command = entry.load()
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry.value} is not a click command")
    except Exception as e:  # a broken third-party package must not break the other commands
        why = f"cannot load {entry.value} ({first_line(e)}); reinstall the package that declares it"

        def fail(args: tuple[str, ...]) -> None:
            raise ZooError(f"zoo {entry.name}: {why}")

        command = ZooCommand(entry.name, callback=fail, help=why, add_help_option=False,
                             context_settings={"ignore_unknown_options": True},
                             params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)])
    return with_debug(command)


class ZooGroup(OneLineErrors, click.Group):
    """zoo's commands, then those of installed packages (loaded when named or listed)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *installed_commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in installed_commands():
            command = _load(installed_commands()[name])
        return command


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, expose_value=False, callback=_remember_debug,
              help="Show full tracebacks for errors.")
@click.version_option(package_name="vit-zoo")
def cli() -> None:
    """vit-zoo: study Vision Transformers by training them.

    \b
    zoo list attention            plugins of one kind, with parameters
    zoo show RECIPE               the resolved recipe
    zoo run RECIPE                train (CUDA when present)
    tensorboard --logdir runs     watch it
    """


for command in (commands.list_cmd, commands.show, commands.run, commands.eval_cmd,
                predict.predict_cmd, predict.export_cmd, viz.viz, study.sweep, study.report):
    cli.add_command(with_debug(command))


def main() -> None:
    cli(prog_name="zoo")
