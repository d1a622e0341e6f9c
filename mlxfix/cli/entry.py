"""The console script. A plain command line (``mlxfix.cli.argv``) goes straight to its command in
``mlxfix.cli.actions``; anything else (--help, completion, a usage error) to typer, which is then
imported. A ``--host`` run starts its SSH connection first: ssh's handshake, the bulk of ``ssh HOST
true``, then overlaps all of mlxfix's start-up.

For that the command line is only glanced at (``--host``, ``--ssh-option``, ``--root``); the command
uses the early connection only if it was made for exactly what was parsed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from mlxfix.host.ssh import SshHost


def main() -> None:
    try:
        early = _early_connection(sys.argv[1:])
        from mlxfix.cli import argv

        plain = None if "_MLXFIX_COMPLETE" in os.environ else argv.parse(sys.argv[1:])  # completion: typer's
        if plain is None:
            from mlxfix.cli import typer_app as cli
        else:
            from mlxfix.cli import actions
    except KeyboardInterrupt:
        _interrupted()
    except RuntimeError as exc:  # a Ctrl-C inside a class body's __set_name__ comes wrapped
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _interrupted()
        raise
    if plain is None:
        cli.main(early)
    color, command, options = plain

    def run() -> int:
        actions.set_color(color)
        return actions.COMMANDS[command](**options)

    actions.execute(run, early)


def _interrupted() -> NoReturn:
    """Ctrl-C while mlxfix was still starting: nothing was done; no traceback, and under --json
    the one document automation expects."""
    sys.stderr.write("mlxfix: interrupted\n")
    if "--json" in sys.argv[1:]:
        with contextlib.suppress(BaseException):  # a second Ctrl-C: the exit code still says it
            from mlxfix.cli.actions import early_document

            early_document(sys.argv[1:], "interrupted", 130)
    sys.exit(130)


def _early_connection(args: list[str]) -> SshHost | None:
    if "_MLXFIX_COMPLETE" in os.environ:
        return None  # the shell asks for completions: no login for that
    values: dict[str, list[str]] = {"--host": [], "--ssh-option": [], "--root": []}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in ("--help", "-h"):
            return None
        name, eq, value = arg.partition("=")
        if name in values:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            values[name].append(value)
        i += 1
    if len(values["--host"]) != 1 or len(values["--root"]) > 1:
        return None  # none, or an odd command line: typer will say what is wrong with it
    from mlxfix.errors import MlxfixError
    from mlxfix.host.ssh import SshHost

    try:
        host = SshHost(values["--host"][0], (values["--root"] or ["/"])[0], values["--ssh-option"])
        host.start()
    except MlxfixError:
        return None  # a bad --host or --root: typer's run will report it
    return host
