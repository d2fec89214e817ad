"""The click options both tools take, and the command class they run as."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from zoo.cli import ZooCommand
from zoo.cli.options import DEVICE_OPTION

from .settings import DEFAULT_CACHE_DIR, DEFAULT_CLIP, PROMPT_MODES, ClipOptions

F = TypeVar("F", bound=Callable[..., Any])
_ARGS = "zoo_tools.args"


class ToolCommand(ZooCommand):
    """zoo's errors and --debug, and the arguments as given, which the reports quote."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGS] = list(args)
        return super().parse_args(ctx, args)


def typed_command(ctx: click.Context) -> str:
    """The command line as the user typed it: `zoo clip-vs-resnet IMAGES --out OUT`, or the
    script's own name where it runs on its own."""
    return " ".join(filter(None, (ctx.command_path, shlex.join(ctx.meta.get(_ARGS, [])))))


def clip_options(random_init_help: str) -> Callable[[F], F]:
    """The CLIP flags, and zoo's run flags under the names its commands use, handed to the
    command as one `clip: ClipOptions`. Put it below the command's own options."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def command(*args: Any, clip_model: str, clip_weights: str | None, random_init: bool,
                    prompts: str, cache_dir: str, device: str, seed: int, no_progress: bool,
                    **kwargs: Any) -> Any:
            weights = Path(clip_weights) if clip_weights else None
            clip = ClipOptions(model=clip_model, weights=weights, random_init=random_init,
                               prompts=prompts, cache_dir=Path(cache_dir), device=device, seed=seed,
                               progress=not no_progress)
            return fn(*args, clip=clip, **kwargs)

        options = [
            click.option("--clip-model", default=DEFAULT_CLIP, show_default=True,
                         help="A name of clip.available_models()."),
            click.option("--clip-weights", type=click.Path(dir_okay=False), metavar="FILE",
                         help="Local CLIP checkpoint (.pt) instead of downloading."),
            click.option("--random-init", is_flag=True, help=random_init_help),
            click.option("--prompts", type=click.Choice(PROMPT_MODES), default="auto",
                         show_default=True, help="Zero-shot prompts: auto is the 80-template "
                                                 "ensemble, or single with --random-init."),
            click.option("--cache-dir", type=click.Path(file_okay=False),
                         default=str(DEFAULT_CACHE_DIR), show_default=True,
                         help="Text-embedding cache."),
            DEVICE_OPTION,
            click.option("--seed", type=int, default=0, show_default=True,
                         help="Seed of --random-init."),
            click.option("--no-progress", is_flag=True, help="No progress bars (there are none "
                         "where stderr is not a terminal)."),
        ]
        for option in reversed(options):
            command = option(command)
        return command  # type: ignore[return-value]

    return decorate
