"""`python -m zoo` (and `torchrun -m zoo run RECIPE`) is the `zoo` command."""

from zoo.cli import main

main()
