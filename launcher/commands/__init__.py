"""The `xstilts` commands, one module per command; `xstilts.cli` wires them into the app."""
