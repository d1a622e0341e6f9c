"""Render mlxfix(1) from the CLI's own help: help2man for the page, click's records for COMMANDS.

help2man (Debian's, a well-kept GNU tool) runs ``mlxfix --help`` and ``--version`` and writes NAME,
SYNOPSIS, DESCRIPTION and OPTIONS; mlxfix/man/mlxfix.h2m adds what --help cannot say (environment,
files, exit status). help2man reads only the top-level help, so a COMMANDS section is built from the
same click objects that print each command's --help, and handed to help2man as an include section:
nothing in the page is written twice. ``python tests/manpage.py`` rewrites mlxfix/man/mlxfix.1;
tests/test_manpage.py fails when the committed page drifts from the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "mlxfix" / "man" / "mlxfix.1"
INCLUDE = ROOT / "mlxfix" / "man" / "mlxfix.h2m"
NAME = 'fix the Mellanox ConnectX-3 "Missing UAR, aborting" failure safely'


def roff(text: str) -> str:
    """Text as roff reads it literally: backslashes escaped, no line taken for a request, minus signs."""
    out = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def paragraphs(text: str) -> str:
    """A click help text as roff paragraphs; click's \\b (keep the lines as they are) becomes .nf/.fi."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            out.append(".PP\n.nf\n" + roff("\n".join(lines[1:])) + "\n.fi")
        else:
            out.append(".PP\n" + roff(" ".join(line.strip() for line in lines)))
    return "\n".join(out)


def commands_section() -> str:
    """The body of COMMANDS (an "other" section: help2man puts it after OPTIONS): one .SS per
    command: its synopsis, its help and its options, from the click objects of the CLI."""
    import typer.main
    from typer._click.core import Context  # typer 0.24+ carries its own click

    from mlxfix.cli.typer_app import app

    group = typer.main.get_command(app)
    top = Context(group, info_name="mlxfix")
    parts = []
    for name in group.list_commands(top):  # type: ignore[attr-defined]
        command = group.get_command(top, name)  # type: ignore[attr-defined]
        assert command is not None
        ctx = Context(command, info_name=name, parent=top)
        parts.append(f'.SS "mlxfix {name}"')
        parts.append(f".B mlxfix {roff(name)}\n\\&[\\fIOPTIONS\\fR]")
        parts.append(paragraphs(command.help or ""))
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or "--help" in record[0]:
                continue
            flags, text = record
            parts.append(f".TP\n.B {roff(flags)}\n{roff(text)}")
    return "\n".join(parts) + "\n"


def render() -> str:
    """The page as help2man writes it today, from the installed CLI in this interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(tmp, "mlxfix.h2m")
        include.write_text("[COMMANDS]\n" + commands_section() + "\n" + INCLUDE.read_text())
        program = Path(tmp, "mlxfix")
        program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mlxfix "$@"\n')
        program.chmod(0o755)
        env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb", "PYTHONPATH": str(ROOT)}
        env.pop("FORCE_COLOR", None)
        argv = ["help2man", "--no-info", "--section=1", f"--name={NAME}", f"--include={include}", str(program)]
        return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(ROOT)}")
