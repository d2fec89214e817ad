"""`python tools/fp16_profile.py --out OUT` from a checkout (or `python -m
tools.fp16_profile`): the `zoo fp16-profile` command, see tools/fp16/."""

import shlex
import sys
from pathlib import Path

if __package__:
    from .fp16.cli import command
else:  # run as a file: this checkout's tools and zoo, not tools/ itself, come first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from tools.fp16.cli import command

if __name__ == "__main__":
    typed = f"python -m {__spec__.name}" if __spec__ else f"python {shlex.quote(sys.argv[0])}"
    command.main(prog_name=typed)
