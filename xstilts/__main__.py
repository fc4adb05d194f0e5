"""`python -m xstilts ...` is the `xstilts` command."""

from xstilts.cli import main

main()
