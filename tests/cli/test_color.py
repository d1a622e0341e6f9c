"""Colour of the human output, as a real process: --color, then NO_COLOR, then FORCE_COLOR, then
whether the output is a terminal (a pseudo-terminal here)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from tests.trees import debian_host, on_a_terminal, run

if TYPE_CHECKING:
    from pathlib import Path

GREEN = "\033[32m"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return debian_host(tmp_path / "root")


def piped(tree: Path, *options: str, env: dict[str, str] | None = None) -> str:
    proc = run(*options, "apply", "--dry-run", "--root", str(tree), env={"NO_COLOR": "", "FORCE_COLOR": "", **(env or {})})
    assert proc.returncode == 0, proc.stderr
    assert "+GRUB_CMDLINE_LINUX_DEFAULT" in proc.stdout
    return proc.stdout


def on_tty(tree: Path, *options: str, env: dict[str, str] | None = None) -> str:
    argv = [sys.executable, "-m", "mlxfix", *options, "apply", "--dry-run", "--root", str(tree)]
    code, seen = on_a_terminal(argv, [], env={"NO_COLOR": "", "FORCE_COLOR": "", "TERM": "xterm", **(env or {})})
    assert code == 0, seen
    return seen.decode(errors="replace")


def test_auto_colours_a_terminal_only(tree: Path) -> None:
    assert GREEN in on_tty(tree)
    assert "\033" not in piped(tree)
    assert GREEN in on_tty(tree, "--color=auto")


def test_no_color_turns_it_off_on_a_terminal(tree: Path) -> None:
    assert "\033[3" not in on_tty(tree, env={"NO_COLOR": "1"})


def test_force_color_turns_it_on_without_a_terminal(tree: Path) -> None:
    out = piped(tree, env={"FORCE_COLOR": "1"})
    assert GREEN + "+GRUB_CMDLINE_LINUX_DEFAULT" in out


def test_no_color_wins_over_force_color(tree: Path) -> None:
    assert "\033" not in piped(tree, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})


def test_empty_variables_count_as_unset(tree: Path) -> None:
    assert "\033" not in piped(tree, env={"FORCE_COLOR": ""})
    assert GREEN in on_tty(tree, env={"NO_COLOR": ""})


def test_color_always_wins_over_no_color_and_the_pipe(tree: Path) -> None:
    assert GREEN in piped(tree, "--color=always", env={"NO_COLOR": "1"})
    assert GREEN in piped(tree, "--color", "always")


def test_color_never_wins_over_force_color_and_the_terminal(tree: Path) -> None:
    assert "\033[3" not in on_tty(tree, "--color=never", env={"FORCE_COLOR": "1"})
    assert "\033" not in piped(tree, "--color=never", env={"FORCE_COLOR": "1"})


def test_a_bad_color_is_a_usage_error(tree: Path) -> None:
    proc = run("--color=sometimes", "apply", "--dry-run", "--root", str(tree))
    assert proc.returncode == 2
    assert "'sometimes' is not one of 'auto', 'always', 'never'" in proc.stderr
    assert proc.stdout == ""
