"""Shell completion, as the shell asks for it: the installed ``mlxfix`` run with typer's protocol
(``_MLXFIX_COMPLETE=complete_bash``, COMP_WORDS, COMP_CWORD), and bash itself running the script
``--install-completion bash`` installs, on a tree with a real backup made by ``mlxfix apply``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxfix.boot.detect import SETUPS
from tests.trees import debian_host, json_of, run

MLXFIX = Path(sys.executable).with_name("mlxfix")
pytestmark = pytest.mark.skipif(not MLXFIX.exists(), reason="needs the installed console script (pip install -e .)")


def complete(words: list[str], env: dict[str, str] | None = None) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """What bash would offer for the last word of ``words``."""
    proc = subprocess.run(
        [str(MLXFIX)],
        env={
            **os.environ,
            **(env or {}),
            "_MLXFIX_COMPLETE": "complete_bash",
            "COMP_WORDS": " ".join(words),
            "COMP_CWORD": str(len(words) - 1),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return [line for line in proc.stdout.splitlines() if line], proc


@pytest.fixture
def applied(tmp_path: Path) -> tuple[Path, str]:
    """A tree with one real backup, made by a real apply."""
    root = debian_host(tmp_path / "root")
    proc = run("apply", "--root", str(root), "--yes", "--no-update", "--json")
    assert proc.returncode == 0, proc.stderr
    backup = json_of(proc.stdout)["backup"]
    assert isinstance(backup, str)
    return root, backup


def test_boot_setup_offers_every_setup_the_detection_knows() -> None:
    offered, proc = complete(["mlxfix", "apply", "--boot-setup", ""])
    assert proc.returncode == 0, proc.stderr
    assert offered == list(SETUPS)
    assert proc.stderr == ""
    offered, _ = complete(["mlxfix", "status", "--boot-setup", "grub2"])
    assert offered == [name for name in SETUPS if name.startswith("grub2")]
    assert offered  # grub2 and grub2-bls


def test_backup_offers_the_ids_of_the_tree_given_by_root(applied: tuple[Path, str], tmp_path: Path) -> None:
    root, backup = applied
    offered, proc = complete(["mlxfix", "rollback", "--root", str(root), "--backup", ""])
    assert proc.returncode == 0, proc.stderr
    assert offered == [backup]
    assert proc.stderr == ""
    offered, _ = complete(["mlxfix", "rollback", "--root", str(root), "--backup", backup[:10]])
    assert offered == [backup]
    offered, _ = complete(["mlxfix", "rollback", "--root", str(root), "--backup", "1999"])
    assert offered == []
    # a second backup: newest first, as mlxfix backups lists them
    time.sleep(0.01)
    assert run("rollback", "--root", str(root), "--yes", "--no-update").returncode == 0
    listed = [b["id"] for b in json_of(run("backups", "--root", str(root), "--json").stdout)["backups"]]  # type: ignore[index]
    assert len(listed) == 2
    offered, _ = complete(["mlxfix", "rollback", "--root", str(root), "--backup", ""])
    assert offered == listed


def test_backup_completion_never_fails(tmp_path: Path) -> None:
    """No state directory, no such --root, an unreadable one, --host (no login while completing):
    nothing offered, exit 0, not a word on stderr."""
    unreadable = tmp_path / "locked"
    (unreadable / "var/lib/mlxfix/backups").mkdir(parents=True)
    (unreadable / "var/lib/mlxfix").chmod(0)
    try:
        for words in (
            ["mlxfix", "rollback", "--root", str(tmp_path), "--backup", ""],
            ["mlxfix", "rollback", "--root", str(tmp_path / "nowhere"), "--backup", ""],
            ["mlxfix", "rollback", "--root", str(unreadable), "--backup", ""],
            ["mlxfix", "rollback", "--host", "nosuchhost.invalid", "--backup", ""],
            ["mlxfix", "rollback", "--root", "--backup", ""],
        ):
            offered, proc = complete(words)
            assert (offered, proc.returncode, proc.stderr) == ([], 0, ""), words
    finally:
        (unreadable / "var/lib/mlxfix").chmod(0o700)


def test_completion_is_cheap(applied: tuple[Path, str]) -> None:
    """A Tab is answered about as fast as mlxfix --help: no manifest is read, no pydantic imported."""
    root, _ = applied
    started = time.perf_counter()
    offered, _ = complete(["mlxfix", "rollback", "--root", str(root), "--backup", ""])
    assert offered
    assert time.perf_counter() - started < 5  # generous: a shared machine; bench.py measures start-up
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(MLXFIX)],
        env={
            **os.environ,
            "_MLXFIX_COMPLETE": "complete_bash",
            "COMP_WORDS": f"mlxfix rollback --root {root} --backup ",
            "COMP_CWORD": "5",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip()
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert "pydantic" not in imported
    assert "mlxfix.backup" not in imported


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_completion_bash_then_bash_completes(applied: tuple[Path, str], tmp_path: Path) -> None:
    """--install-completion bash writes the script and sources it from ~/.bashrc; bash, running that
    script's function as it does at a Tab (with the command as its first argument), offers the backup id."""
    root, backup = applied
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{MLXFIX.parent}:{os.environ['PATH']}"}
    proc = subprocess.run([str(MLXFIX), "--install-completion", "bash"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    script = home / ".bash_completions" / "mlxfix.sh"
    assert f"bash completion installed in {script}" in proc.stdout
    assert f"source '{script}'" in (home / ".bashrc").read_text()
    line = f"mlxfix rollback --root {root} --backup "
    bash = subprocess.run(
        [
            "bash",
            "-c",
            (
                f'source ~/.bashrc; COMP_WORDS=(mlxfix rollback --root {root} --backup ""); COMP_CWORD=5; COMP_LINE="{line}";'
                ' _mlxfix_completion mlxfix; printf "%s\\n" "${COMPREPLY[@]}"'
            ),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bash.returncode == 0, bash.stderr
    assert bash.stdout.split() == [backup]


@pytest.mark.parametrize(("shell", "path"), [("zsh", ".zfunc/_mlxfix"), ("fish", ".config/fish/completions/mlxfix.fish")])
def test_install_completion_installs_for_the_shell_asked_for(tmp_path: Path, shell: str, path: str) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run([str(MLXFIX), "--install-completion", shell], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / path
    assert f"{shell} completion installed in {installed}" in proc.stdout
    assert "_MLXFIX_COMPLETE" in installed.read_text()
    assert not (tmp_path / ".bashrc").exists()


def test_show_completion_prints_the_script_and_refuses_an_unknown_shell() -> None:
    proc = subprocess.run([str(MLXFIX), "--show-completion", "bash"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "_mlxfix_completion" in proc.stdout
    assert "complete_bash" in proc.stdout
    proc = subprocess.run([str(MLXFIX), "--install-completion", "tcsh"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "tcsh" in proc.stderr
