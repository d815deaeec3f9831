"""The command line: Typer commands that parse, call one command module, and render."""
