"""User-facing errors: one line, exit code 2, a traceback only with --debug."""

from __future__ import annotations

import difflib
import functools
import os
import reprlib
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class ZooError(Exception):
    """A mistake in what the user gave us (recipe, plugin, path, file), not a bug."""


# A bounded look at a value: a YAML alias bomb is a few hundred bytes in memory but gigabytes
# once printed, so an error message must never build the full repr of what it quotes.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def clip(text: str, width: int = 80) -> str:
    """`text` cut to `width` characters, so that an error stays one readable line."""
    return text if len(text) <= width else text[: width - 3] + "..."


def brief(value: object, width: int = 80) -> str:
    """A repr of `value` for an error message, at most `width` characters, built from a
    bounded look at it (reprlib), never by walking all of a huge or shared structure."""
    return clip(_REPR.repr(value), width)


def suggest(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean X?)"` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, so wrapped library errors stay one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def debug_enabled(flag: bool = False) -> bool:
    """`--debug` given (`flag`, or in sys.argv for scripts), or ZOO_DEBUG set."""
    return flag or "--debug" in sys.argv or os.environ.get("ZOO_DEBUG", "") not in ("", "0")


def report_user_error(error: ZooError, debug: bool = False) -> int:
    """The one way a user error ends a command: its traceback only in debug mode, then one
    line on stderr; returns the exit code, 2."""
    if debug_enabled(debug):
        traceback.print_exception(error)
    print(f"error: {error}", file=sys.stderr)
    return 2


def exit_on_user_error(main: F) -> F:
    """Wrap a script's main(): a ZooError prints one line and exits 2 (`--debug`: traceback)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ZooError as e:
            sys.exit(report_user_error(e))

    return wrapped  # type: ignore[return-value]
