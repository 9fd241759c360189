"""The `avokit` command line: thin typer wiring over typed functions."""
