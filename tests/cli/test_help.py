"""`--help` and `-h`: every command's options, with the environment variables and defaults."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "command", [[], ["classify"], ["index"], ["search"], ["cache"], ["cache", "clean"]], ids=str
)
def test_dash_h_is_help_everywhere(cli, command):
    result = cli(*command, "-h")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(" ".join(["Usage: clipcli", *command]) + " [OPTIONS]")
    assert result.stdout == cli(*command, "--help").stdout


def test_no_command_prints_the_help_and_exits_2(cli):
    result = cli()
    assert result.exit_code == 2
    assert result.stdout == cli("--help").stdout
    assert "Commands:" in result.stdout and result.stderr == ""


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("classify", "[env: CLIPCLI_MODEL; default ViT-B-32-256]"),
        ("classify", "[env: CLIPCLI_PRETRAINED]"),
        ("classify", "[env: CLIPCLI_PRECISION; default auto: the fastest backend that agrees"),
        ("index", "[env: CLIPCLI_INDEX; default: per-user data folder]"),
        ("search", "[env: CLIPCLI_INDEX; default: per-user data folder]"),
        ("search", "[default: table on a terminal, plain otherwise]"),
        ("classify", "<table|plain|tsv|csv|jsonl|json>"),
        ("cache", "CLIPCLI_CACHE_LIMIT caps the exports; default 10GB"),
        ("classify", "write \\, for a comma in a label"),
        ("index", "Forget the whole index (every folder in it)"),
    ],
)
def test_help_shows_environment_variables_defaults_and_how_values_are_read(cli, command, says):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert says in " ".join(result.stdout.split())  # however the lines are wrapped
