"""`python -m tuneloop.cli` and `torchrun -m tuneloop.cli train ...` run the CLI."""

from tuneloop.cli import main

main()
