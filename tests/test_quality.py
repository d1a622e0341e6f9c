"""The project's own checks run with the suite: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "ruff", "check", "mlxfix", "tests"],
        [sys.executable, "-m", "ruff", "format", "--check", "mlxfix", "tests"],
        [sys.executable, "-m", "mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_checks_are_clean(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_pure_core_imports_neither_typer_nor_plumbum_nor_pydantic() -> None:
    code = (
        "import sys; import mlxfix.defaults.grubedit, mlxfix.boot.detect, mlxfix.plan, mlxfix.boot.kernelcmdline, mlxfix.boot.bls, mlxfix.diagnose, mlxfix.facts; "
        "assert 'mlxfix.host.local' not in sys.modules, 'the core imports the host'; "
        "bad = [m for m in ('typer', 'plumbum', 'pydantic') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_dry_run_imports_neither_plumbum_nor_pydantic() -> None:
    code = (
        "import sys; from mlxfix.cli.typer_app import main; sys.argv = ['mlxfix', 'apply', '--dry-run', '--root', 'examples/pve-missing-uar']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('plumbum', 'pydantic') if m in sys.modules]; sys.stderr.write(repr(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-500:]
