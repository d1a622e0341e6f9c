"""apply --reboot --wait over SSH against a target whose files are a sandbox: sshd itself runs in a
private mount namespace (its sessions inherit it), so the real update-grub runs on the target. The
reboot is the one thing replaced: a command that records its arguments and gives the "host" a new
boot id, the way a real reboot would."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import pytest

from tests.namespace import require_root
from tests.sshd import Sshd
from tests.trees import json_of, on_a_terminal, run

pytestmark = [pytest.mark.root, pytest.mark.slow]

KERNEL = "6.1.0-9-amd64"


@pytest.fixture
def sandboxed_sshd(tmp_path: Path):  # yields an Sshd whose sessions see the sandbox
    require_root()
    (tmp_path / "default").mkdir()
    shutil.copy("/usr/share/grub/default/grub", tmp_path / "default" / "grub")
    (tmp_path / "boot" / "grub").mkdir(parents=True)
    for name in (f"vmlinuz-{KERNEL}", f"initrd.img-{KERNEL}"):
        (tmp_path / "boot" / name).write_bytes(b"\x00" * 64)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "bootid").write_text(f"{uuid.uuid4()}\n")
    Path("/var/lib/mlxfix").mkdir(parents=True, exist_ok=True)
    script = (
        "set -e; mount --make-rprivate /\n"
        f"mount --bind {tmp_path}/default /etc/default\nmount --bind {tmp_path}/boot /boot\n"
        f"mount --bind {tmp_path}/state /var/lib/mlxfix\nmount --bind {tmp_path}/bootid /proc/sys/kernel/random/boot_id\n"
        'exec "$@"'
    )
    server = Sshd(wrapper=["unshare", "-m", "sh", "-c", script, "sh"])
    yield server, tmp_path
    server.stop()


def test_reboot_and_wait_then_verify(sandboxed_sshd: tuple[Sshd, Path]) -> None:
    server, sandbox = sandboxed_sshd
    fake = sandbox / "fake-reboot"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {sandbox}/rebooted\n'
        f"(sleep 2; cat /proc/sys/kernel/random/uuid > {sandbox}/bootid) </dev/null >/dev/null 2>&1 &\n"
    )
    fake.chmod(0o755)
    before_id = (sandbox / "bootid").read_text()
    proc = run(
        "apply", "--yes", "--reboot", "--wait", "--wait-timeout", "60", "--json", "--host", server.target, *server.options(),
        env={"MLXFIX_REBOOT_COMMAND": f"{fake} now"},
        timeout=180,
    )  # fmt: skip
    doc = json_of(proc.stdout)
    assert doc["changed"] is True
    assert doc["rebooting"] is True
    assert (sandbox / "rebooted").read_text() == "now\n"  # the reboot ran on the target, asked for
    assert (sandbox / "bootid").read_text() != before_id
    cmd, reboot = doc["commands"]  # type: ignore[misc]
    assert (cmd["argv"], cmd["exit_code"]) == (["update-grub"], 0)  # the real one, on the target
    assert (reboot["argv"], reboot["exit_code"], reboot["note"]) == ([str(fake), "now"], 0, "reboot")
    normal = [
        ln
        for ln in (sandbox / "boot/grub/grub.cfg").read_text().splitlines()
        if ln.strip().startswith("linux") and "single" not in ln
    ]
    assert normal
    assert all("pci=realloc=off" in ln for ln in normal)
    # After the "reboot", verify ran against the host: this machine has no ConnectX-3 and its own
    # kernel command line, so verify fails, and says why.
    verification = doc["verification"]
    assert isinstance(verification, dict)
    assert verification["ok"] is False
    assert "devices" in verification["failed"]
    assert proc.returncode == 13
    assert "waiting for" in proc.stderr


def test_no_reboot_without_asking(sandboxed_sshd: tuple[Sshd, Path]) -> None:
    server, sandbox = sandboxed_sshd
    proc = run(
        "apply", "--yes", "--json", "--host", server.target, *server.options(),
        env={"MLXFIX_REBOOT_COMMAND": f"touch {sandbox}/rebooted"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc.stdout)["rebooting"] is False
    assert not (sandbox / "rebooted").exists()


@pytest.mark.parametrize("no", [b"n\n", b"\x03", b"\x04"])
def test_no_at_the_reboot_question_says_what_to_do_next(sandboxed_sshd: tuple[Sshd, Path], no: bytes) -> None:
    server, sandbox = sandboxed_sshd
    argv = [sys.executable, "-m", "mlxfix", "apply", "--host", server.target, *server.options()]
    env = {"MLXFIX_REBOOT_COMMAND": f"touch {sandbox}/rebooted"}
    code, seen = on_a_terminal(argv, [b"y\n", no], env=env)
    assert code == 0, seen
    assert b"Reboot " in seen
    after = seen.rsplit(b"[y/n] ", 1)[1]
    assert after.startswith((b"n\r\n", b"^C\r\n", b"\r\n")), after  # the line is ended
    assert f"reboot when it suits you, then run: mlxfix verify --host {server.target}".encode() in after
    assert not (sandbox / "rebooted").exists()
