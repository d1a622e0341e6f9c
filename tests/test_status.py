"""mlxfix status and apply's read-back, on grub.cfg files the real update-grub wrote (issue 13): what the
next boot gets, known before the reboot."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from tests.boot import test_update_grub
from tests.boot.test_update_grub import linux_lines, mlxfix
from tests.trees import json_of

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.root, pytest.mark.slow]
sandbox = test_update_grub.sandbox  # the fixture: Debian's defaults, a kernel in /boot, a state dir

P = "pci=realloc=off"
KEYS = {
    "version", "mlxfix_version", "command", "host", "root", "param", "boot_setup", "state", "configured",
    "next_boot", "running", "warnings", "errors", "exit_code", "ssh",
}  # fmt: skip


def set_default_line(sandbox: Path, value: str) -> None:
    grub = sandbox / "default" / "grub"
    text = grub.read_text()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in text
    grub.write_text(text.replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', f"GRUB_CMDLINE_LINUX_DEFAULT={value}"))


def regenerate(sandbox: Path) -> None:
    """update-grub itself, as an admin runs it (with the sandbox's grub.d when it has one)."""
    import os
    import subprocess

    script = (
        'set -e; mount --make-rprivate /; mount --bind "$SANDBOX/default" /etc/default; mount --bind "$SANDBOX/boot" /boot;'
        ' [ ! -e "$SANDBOX/grub.d" ] || mount --bind "$SANDBOX/grub.d" /etc/grub.d; exec update-grub'
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env={**os.environ, "SANDBOX": str(sandbox)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def status(sandbox: Path) -> tuple[int, dict[str, object]]:
    proc = mlxfix(sandbox, "status", "--json")
    doc = json_of(proc.stdout)
    assert isinstance(doc, dict)
    assert doc["exit_code"] == proc.returncode
    return proc.returncode, doc


def test_after_apply_the_next_boot_has_it_and_status_says_reboot(sandbox: Path) -> None:
    regenerate(sandbox)
    code, doc = status(sandbox)
    assert (code, doc["state"]) == (15, "absent")
    assert set(doc) == KEYS
    proc = mlxfix(sandbox, "apply", "--yes", "--no-reboot", "--json")
    assert proc.returncode == 0, proc.stderr
    applied = json_of(proc.stdout)
    assert isinstance(applied, dict)
    assert "Debian GNU/Linux" in str(applied["proof"])
    code, doc = status(sandbox)
    assert (code, doc["state"]) == (11, "pending-reboot")  # the running kernel (this machine's) lacks it
    nb = doc["next_boot"]
    assert isinstance(nb, dict)
    assert nb["read"] is True
    assert nb["entry"] == "Debian GNU/Linux"
    assert nb["has_param"] is True
    assert P in str(nb["cmdline"])
    assert nb["entries_missing"] == []
    configured = doc["configured"]
    assert isinstance(configured, dict)
    assert {"token": P, "origin": "/etc/default/grub:9 (GRUB_CMDLINE_LINUX_DEFAULT)"} in configured["tokens"]  # type: ignore[operator]
    one_line = mlxfix(sandbox, "status")  # no terminal: one line
    assert one_line.returncode == 11
    assert one_line.stdout.count("\n") == 1
    assert one_line.stdout.startswith("mlxfix status: pending-reboot")


def test_a_stale_grub_cfg_is_drift_and_apply_regenerates_it(sandbox: Path) -> None:
    """(issue 13) after --no-update the files have it and grub.cfg does not: rebooting cannot fix it."""
    regenerate(sandbox)
    assert mlxfix(sandbox, "apply", "--yes", "--no-update", "--json").returncode == 0
    code, doc = status(sandbox)
    assert (code, doc["state"]) == (14, "drift")
    normal, _ = linux_lines(sandbox)
    assert not any(P in ln for ln in normal)
    proc = mlxfix(sandbox, "apply", "--yes", "--no-reboot", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "already in place" not in proc.stderr
    normal, _ = linux_lines(sandbox)
    assert normal
    assert all(P in ln for ln in normal)
    assert status(sandbox)[0] == 11


def test_a_newline_in_the_value_is_edited_before_it_and_the_kernel_gets_it(sandbox: Path) -> None:
    """(issue 13) ``"quiet<newline>splash"``: GRUB's linux line ends at the newline."""
    set_default_line(sandbox, '"quiet\nsplash"')
    proc = mlxfix(sandbox, "apply", "--yes", "--no-reboot", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert isinstance(doc, dict)
    assert any("never reaches the kernel" in w for w in doc["warnings"])  # type: ignore[union-attr]
    normal, _ = linux_lines(sandbox)
    assert normal
    assert all(ln.endswith(f"quiet {P}") for ln in normal), normal
    assert status(sandbox)[0] == 11


def test_a_split_linux_line_already_there_is_drift(sandbox: Path) -> None:
    set_default_line(sandbox, f'"quiet\nsplash {P}"')
    regenerate(sandbox)
    code, doc = status(sandbox)
    assert (code, doc["state"]) == (14, "drift")
    assert any("stands on a line of its own" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_a_default_custom_entry_is_refused_with_nothing_changed(sandbox: Path) -> None:
    """(issue 13) GRUB_DEFAULT names a 40_custom entry with its own linux line: the edit is useless."""
    shutil.copytree("/etc/grub.d", sandbox / "grub.d")
    (sandbox / "grub.d" / "40_custom").write_text(
        "#!/bin/sh\nexec tail -n +3 $0\nmenuentry 'Custom' --id custom {\n\tlinux /vmlinuz-custom root=/dev/sda1 ro\n}\n"
    )
    grub = sandbox / "default" / "grub"
    grub.write_text(grub.read_text().replace("GRUB_DEFAULT=0", "GRUB_DEFAULT=custom"))
    regenerate(sandbox)
    before = grub.read_bytes()
    proc = mlxfix(sandbox, "apply", "--yes", "--no-reboot")
    assert proc.returncode == 1, proc.stderr
    assert "Custom" in proc.stderr
    assert grub.read_bytes() == before
