"""Generated from mlxfix.cli.typer_app by tests/cli/test_argv.py; do not edit. To regenerate:
``MLXFIX_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_argv.py -k spec``.

What mlxfix.cli.argv needs to read a plain command line without typer: for each command, each
option's spelling -> (parameter, kind), and the value typer passes for an option not given. Kinds:
true/false (a flag, and which value it sets), str, list (repeatable str), float, int[:minimum],
choice:a|b|c.
"""

from __future__ import annotations

from typing import Any

GLOBAL: dict[str, tuple[str, str]] = {
    "--color": ("color", "choice:auto|always|never"),
}

COMMANDS: dict[str, tuple[dict[str, tuple[str, str]], dict[str, Any]]] = {
    "apply": (
        {
            "--dry-run": ("dry_run", "true"),
            "-n": ("dry_run", "true"),
            "--param": ("param", "str"),
            "--yes": ("yes", "true"),
            "-y": ("yes", "true"),
            "--force": ("force", "true"),
            "--no-update": ("no_update", "true"),
            "--trial": ("trial", "true"),
            "--reboot": ("reboot", "true"),
            "--no-reboot": ("reboot", "false"),
            "--wait": ("wait", "true"),
            "--wait-timeout": ("wait_timeout", "float"),
            "--root": ("root", "str"),
            "--json": ("as_json", "true"),
            "--boot-setup": ("boot_setup", "str"),
            "--host": ("target", "str"),
            "--ssh-option": ("ssh_option", "list"),
        },
        {
            "dry_run": False,
            "param": "pci=realloc=off",
            "yes": False,
            "force": False,
            "no_update": False,
            "trial": False,
            "reboot": None,
            "wait": False,
            "wait_timeout": 900.0,
            "root": "/",
            "as_json": False,
            "boot_setup": None,
            "target": None,
            "ssh_option": None,
        },
    ),
    "rollback": (
        {
            "--dry-run": ("dry_run", "true"),
            "-n": ("dry_run", "true"),
            "--backup": ("backup", "str"),
            "--yes": ("yes", "true"),
            "-y": ("yes", "true"),
            "--force": ("force", "true"),
            "--no-update": ("no_update", "true"),
            "--reboot": ("reboot", "true"),
            "--no-reboot": ("reboot", "false"),
            "--wait": ("wait", "true"),
            "--wait-timeout": ("wait_timeout", "float"),
            "--root": ("root", "str"),
            "--json": ("as_json", "true"),
            "--boot-setup": ("boot_setup", "str"),
            "--host": ("target", "str"),
            "--ssh-option": ("ssh_option", "list"),
        },
        {
            "dry_run": False,
            "backup": None,
            "yes": False,
            "force": False,
            "no_update": False,
            "reboot": None,
            "wait": False,
            "wait_timeout": 900.0,
            "root": "/",
            "as_json": False,
            "boot_setup": None,
            "target": None,
            "ssh_option": None,
        },
    ),
    "backups": (
        {
            "--prune": ("prune", "true"),
            "--keep": ("keep", "int:0"),
            "--dry-run": ("dry_run", "true"),
            "-n": ("dry_run", "true"),
            "--yes": ("yes", "true"),
            "-y": ("yes", "true"),
            "--root": ("root", "str"),
            "--json": ("as_json", "true"),
            "--host": ("target", "str"),
            "--ssh-option": ("ssh_option", "list"),
        },
        {
            "prune": False,
            "keep": 5,
            "dry_run": False,
            "yes": False,
            "root": "/",
            "as_json": False,
            "target": None,
            "ssh_option": None,
        },
    ),
    "diagnose": (
        {
            "--root": ("root", "str"),
            "--json": ("as_json", "true"),
            "--boot-setup": ("boot_setup", "str"),
            "--host": ("target", "str"),
            "--ssh-option": ("ssh_option", "list"),
        },
        {
            "root": "/",
            "as_json": False,
            "boot_setup": None,
            "target": None,
            "ssh_option": None,
        },
    ),
    "verify": (
        {
            "--param": ("param", "str"),
            "--root": ("root", "str"),
            "--json": ("as_json", "true"),
            "--host": ("target", "str"),
            "--ssh-option": ("ssh_option", "list"),
        },
        {
            "param": "pci=realloc=off",
            "root": "/",
            "as_json": False,
            "target": None,
            "ssh_option": None,
        },
    ),
    "status": (
        {
            "--param": ("param", "str"),
            "--root": ("root", "str"),
            "--json": ("as_json", "true"),
            "--boot-setup": ("boot_setup", "str"),
            "--host": ("target", "str"),
            "--ssh-option": ("ssh_option", "list"),
        },
        {
            "param": "pci=realloc=off",
            "root": "/",
            "as_json": False,
            "boot_setup": None,
            "target": None,
            "ssh_option": None,
        },
    ),
}
