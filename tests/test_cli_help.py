"""Help pages print their texts as written: typer renders them as rich markup, where
``[ray]`` or ``[default: ...]`` would be read as tags and vanish."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from xraydebug.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MARKUP = re.compile(r"\[(bold|/)\]")  # the tags the examples use on purpose


def _help_page(command: str) -> str:
    """The ``--help`` page of ``command`` on one line: no box borders, colours or wrapping."""
    outcome = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert outcome.exit_code == 0, outcome.output
    return _one_line(ANSI.sub("", outcome.output).replace("│", " "))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _as_written(help_text: str) -> str:
    """What a help text should print: its words, without escapes and the examples' tags."""
    return _one_line(MARKUP.sub("", help_text).replace("\\[", "["))


def test_bracketed_help_text_is_printed():
    page = _help_page("scan")
    assert "pip install 'xraydebug[ray]')." in page
    assert "Ray actors [default: one per GPU, else one per CPU / --threads-per-actor]." in page
    assert "path,label[,split,patient_id,source]" in page


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_text_prints_as_written(command: str):
    page = _help_page(command)
    assert "'xraydebug')" not in page and "Ray actors ." not in page  # the known losses
    click_command = typer.main.get_command(app).commands[command]
    assert _as_written(click_command.help or "") in page
    for param in click_command.params:
        if param.help and not getattr(param, "hidden", False):
            assert _as_written(param.help) in page, param.name
