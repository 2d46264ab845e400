"""The `kiln` command line: one module per command, dispatched from `main.py`."""
