"""The README documents what the code does: every command, option and exit code, and a Quick start
of exactly two commands (the ones .ci/run executes)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import typer.main

from mlxfix.cli.typer_app import app
from mlxfix.errors import ExitCode

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_exit_code_is_documented() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README, re.MULTILINE))
    for code in ExitCode:
        assert str(int(code)) in table, f"exit code {int(code)} ({code.name}) is not in the README's table"


def test_every_command_and_option_is_documented() -> None:
    group = typer.main.get_group(app)
    for name, command in group.commands.items():
        assert f"### `mlxfix {name}`" in README, f"mlxfix {name} has no section"
        section = README.split(f"### `mlxfix {name}`")[1].split("\n### ")[0]
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in section or opt in README.split("## Commands")[1].split("### ")[0], f"{name} {opt} undocumented"


def test_quick_start_is_two_commands_that_ci_runs() -> None:
    blocks = []
    for marker in ("quickstart-run", "quickstart-test"):
        body = README.split(f"<!-- {marker} -->")[1].split("```")[1]
        lines = [ln for ln in body.splitlines()[1:] if ln.strip()]
        assert len(lines) == 1, f"{marker} must be one command line"
        blocks.append(lines[0])
    assert "examples/" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "quickstart-run" in ci
    assert "quickstart-test" in ci
    e2e = README.split("<!-- e2e-test -->")[1].split("```")[1]
    assert next(ln for ln in e2e.splitlines()[1:] if ln.strip()).endswith(
        "MLXFIX_E2E=1 .venv/bin/python -m pytest -n 2 --dist load tests/e2e"
    )
    assert "e2e-test" in ci


def test_readme_example_trees_exist() -> None:
    for tree in set(re.findall(r"--root (examples/[\w./-]+)", README)):
        assert (Path(__file__).parents[1] / tree).is_dir(), tree


def test_ci_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(Path(__file__).parents[1] / ".ci" / "run")], check=False).returncode == 0


def test_install_blocks_run_on_a_stock_debian_in_ci() -> None:
    """The install commands are not prose: .ci/stock-debian runs each block in a fresh chroot."""
    ci_dir = Path(__file__).parents[1] / ".ci"
    stock = (ci_dir / "stock-debian").read_text()
    for marker in ("quickstart-run", "install-pipx", "install-offline-build", "install-offline"):
        assert f"<!-- {marker} -->" in README, marker
        assert marker in stock, marker
    assert "bash .ci/stock-debian" in (ci_dir / "run").read_text()
    assert subprocess.run(["bash", "-n", str(ci_dir / "stock-debian")], check=False).returncode == 0
