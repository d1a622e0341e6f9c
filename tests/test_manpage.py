"""mlxfix(1): generated from the CLI's help, readable by man without a warning, installed with the wheel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.manpage import PAGE, ROOT, render

pytestmark = pytest.mark.skipif(shutil.which("help2man") is None or shutil.which("man") is None, reason="help2man, man-db")

# What differs between two renderings of the same CLI: the month in .TH and help2man's own version.
VOLATILE = re.compile(r'^(\.TH .*|\.\\" DO NOT MODIFY THIS FILE!.*)$', re.MULTILINE)


def test_the_page_is_the_cli_help_of_today():
    fresh = render()
    if os.environ.get("MLXFIX_REGEN_GOLDEN"):
        PAGE.write_text(fresh)
    assert VOLATILE.sub("", PAGE.read_text()) == VOLATILE.sub("", fresh), (
        "mlxfix/man/mlxfix.1 is out of date: run .venv/bin/python tests/manpage.py"
    )


def test_man_reads_it_without_warnings_and_it_covers_commands_and_exit_codes():
    shown = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"},
        check=True,
    )
    assert shown.stderr == ""
    text = re.sub(r".\x08", "", shown.stdout)  # no overstrike, whatever the pager settings
    for command in ("apply", "rollback", "backups", "diagnose", "verify", "status"):
        assert re.search(rf"^ {{3}}mlxfix {command}$", text, re.MULTILINE), command
    readme_codes = re.findall(r"^\| (\d+) \|", (ROOT / "README.md").read_text().split("## Exit codes")[1], re.MULTILINE)
    assert len(readme_codes) >= 10
    status = text.split("EXIT STATUS")[1].split("ENVIRONMENT")[0]
    assert [int(c) for c in re.findall(r"^ {7}(\d+)\s", status, re.MULTILINE)] == [int(c) for c in readme_codes]


@pytest.mark.slow
def test_an_installed_wheel_puts_it_where_man_finds_it(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("mlxfix-*.whl")
    target = tmp_path / "venv"
    venv.create(target, system_site_packages=False, with_pip=False)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    installed = target / "share" / "man" / "man1" / "mlxfix.1"
    assert installed.read_bytes() == PAGE.read_bytes()
    assert not list((target / "lib").glob("python*/site-packages/mlxfix/man"))
    # man-db derives its search path from PATH (bin -> ../share/man), as for any venv or prefix
    env = {"PATH": f"{target / 'bin'}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(tmp_path)}
    found = subprocess.run(["man", "-w", "mlxfix"], capture_output=True, text=True, env=env, check=True)
    assert Path(found.stdout.strip()).resolve() == installed.resolve()
