"""Plain command lines, parsed without typer: ``mlxfix [--color=WHEN] COMMAND [OPTION...]`` where
every option is one of the command's, spelled out, with a value its type takes.

typer's import and the click objects it builds are two thirds of a local command's start-up, and a
command line like ``mlxfix apply --dry-run --root /mnt`` needs none of it. ``parse`` reads such a line
with the spec that tests/cli/test_argv.py generates from mlxfix.cli.typer_app (``argspec``), and
gives the very keyword arguments typer would pass; anything else (--help, --version, completion, a
typo, a missing or odd value, ``-ny``, an option that looks like a value) is None, and typer parses
it, with its own help and errors. The test pins the equivalence on every option of every command.
"""

from __future__ import annotations

from typing import Any

from mlxfix.cli.argspec import COMMANDS, GLOBAL


def parse(args: list[str]) -> tuple[str, str, dict[str, Any]] | None:
    """(--color's value, the command, its keyword arguments) of a plain command line; None: typer's."""
    color: Any = "auto"
    i = 0
    while i < len(args) and args[i].startswith("-"):  # before the command, only --color
        got = _option(GLOBAL, args, i)
        if got is None:
            return None
        _, _, color, i = got
    if i >= len(args) or args[i] not in COMMANDS:
        return None
    command = args[i]
    spec, defaults = COMMANDS[command]
    options = dict(defaults)
    i += 1
    while i < len(args):
        got = _option(spec, args, i)
        if got is None:
            return None
        param, kind, value, i = got
        if kind == "list":  # repeatable: each one adds to the list
            options[param] = [*(options[param] or ()), value]
        else:  # as click does: the last one counts
            options[param] = value
    return color, command, options


def _option(spec: dict[str, tuple[str, str]], args: list[str], i: int) -> tuple[str, str, Any, int] | None:
    """The option at ``args[i]``: (parameter, kind, value, the index after it); None: not plain."""
    word, eq, inline = args[i].partition("=")
    if word not in spec or (eq and not word.startswith("--")):
        return None
    param, kind = spec[word]
    if kind in ("true", "false"):  # a flag: --dry-run, -n, --reboot, --no-reboot
        return None if eq else (param, kind, kind == "true", i + 1)
    if eq:
        text, after = inline, i + 1
    elif i + 1 < len(args):
        text, after = args[i + 1], i + 2
    else:
        return None
    if not text or text.startswith("-"):
        return None  # "--root --json" is a root named --json to click: its words, not a guess here
    value = _convert(kind, text)
    return None if value is None else (param, kind, value, after)


def _convert(kind: str, text: str) -> Any:
    """``text`` as click converts it for ``kind``; None where click would refuse it."""
    if kind in ("str", "list"):
        return text
    name, _, arg = kind.partition(":")
    try:
        if name == "float":
            return float(text)
        if name == "int":
            number = int(text)
            return number if not arg or number >= int(arg) else None
    except ValueError:
        return None
    if name == "choice":
        return text if text in arg.split("|") else None
    raise ValueError(f"mlxfix.cli.argspec: unknown kind {kind!r}")
