"""The whole promise on real boots, per boot setup: diagnose, status, dry run, apply, reboot, verify,
rollback, reboot; and once the same from outside the guest through --host with --reboot --wait."""

from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING

import pytest

from mlxfix.boot.systemd_boot import LOADER_GUID
from tests.e2e.conftest import SETUPS

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.e2e.guest import Guest, Run

PARAM = "pci=realloc=off"

# Per image: the files mlxfix edits, and the generated entries the boot loader reads.
CONFIGURED = {"bios-grub": "/etc/default/grub", "uefi-grub": "/etc/default/grub", "uefi-systemd-boot": "/etc/kernel/cmdline"}
GENERATED = {
    "bios-grub": "/boot/grub/grub.cfg",
    "uefi-grub": "/boot/grub/grub.cfg",
    "uefi-systemd-boot": "/boot/efi/loader/entries/*.conf",
}
EXPECTED_SETUP = {"bios-grub": "grub-debian", "uefi-grub": "grub-debian", "uefi-systemd-boot": "systemd-boot"}

pytestmark = pytest.mark.slow


def fingerprint(guest: Guest, pattern: str) -> str:
    """Bytes, mode and owner of the files a pattern names, as a user would compare them."""
    return guest.sh(f'for f in {pattern}; do stat -c \'%n %a %U:%G\' "$f"; sha256sum < "$f"; done').out


def kernel_lines(guest: Guest, setup: str) -> list[str]:
    """The kernel command lines of the generated entries that take GRUB_CMDLINE_LINUX_DEFAULT (GRUB's
    recovery entries, ``single``, take GRUB_CMDLINE_LINUX only) or /etc/kernel/cmdline."""
    text = guest.sh(f"cat {GENERATED[setup]}").out
    if setup.endswith("systemd-boot"):
        return [ln for ln in text.splitlines() if ln.startswith("options")]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("linux")]
    return [ln for ln in lines if "single" not in tokens(ln)]


def tokens(line: str) -> list[str]:
    return shlex.split(line)


def no_traceback(run: Run) -> Run:
    assert "Traceback" not in run.out + run.err, str(run)
    return run


def status(guest: Guest) -> tuple[int, dict[str, object]]:
    run = no_traceback(guest.mlxfix("status --json"))
    doc = json.loads(run.out)
    return run.rc, doc


def checks_failed(run: Run) -> list[str]:
    doc = json.loads(run.out)
    return [c["name"] for c in doc["checks"] if not c["ok"]]


@pytest.mark.parametrize("setup", SETUPS)
def test_apply_reboot_verify_rollback(new_guest: Callable[..., Guest], setup: str) -> None:
    g = new_guest(setup)
    g.boot()
    configured, generated = CONFIGURED[setup], GENERATED[setup]
    files_before, entries_before = fingerprint(g, configured), fingerprint(g, generated)
    assert PARAM not in g.cmdline()

    diag = no_traceback(g.mlxfix("diagnose --json"))
    assert diag.rc == 0, str(diag)  # no Mellanox device in the guest: nothing is affected
    assert json.loads(diag.out)["boot_setup"]["name"] == EXPECTED_SETUP[setup]
    rc, doc = status(g)
    assert (rc, doc["state"]) == (15, "absent")
    next_boot = doc["next_boot"]
    assert isinstance(next_boot, dict)
    assert next_boot["entry"], doc  # the generated entries were read, and the next boot's found
    if setup.endswith("systemd-boot"):
        # The vendor GUID of systemd's Boot Loader Interface, as the real systemd-boot that booted this
        # guest writes its variables (LoaderEntrySelected: the entry it booted).
        names = g.sh("ls /sys/firmware/efi/efivars").out.split()
        assert f"LoaderEntrySelected-{LOADER_GUID}" in names, names

    dry = no_traceback(g.mlxfix("apply --dry-run"))
    assert dry.rc == 0, str(dry)
    assert PARAM in dry.out, str(dry)
    assert (fingerprint(g, configured), fingerprint(g, generated)) == (files_before, entries_before)

    applied = no_traceback(g.mlxfix("apply --yes --json"))
    assert applied.rc == 0, str(applied)
    assert json.loads(applied.out)["changed"] is True
    assert PARAM in g.sh(f"cat {configured}").out
    lines = kernel_lines(g, setup)
    assert lines
    assert all(PARAM in tokens(ln) for ln in lines), lines
    rc, doc = status(g)
    assert (rc, doc["state"]) == (11, "pending-reboot")

    g.reboot()
    assert PARAM in g.cmdline().split()
    verified = no_traceback(g.mlxfix("verify --json"))
    # The guest has no ConnectX-3 (QEMU cannot make one): the device check is the only one that may fail.
    assert verified.rc in (0, 13), str(verified)
    assert set(checks_failed(verified)) <= {"devices"}, str(verified)
    rc, doc = status(g)
    assert (rc, doc["state"]) == (0, "in-effect")

    rolled = no_traceback(g.mlxfix("rollback --yes"))
    assert rolled.rc == 0, str(rolled)
    assert fingerprint(g, configured) == files_before
    assert all(PARAM not in tokens(ln) for ln in kernel_lines(g, setup))

    g.reboot()
    assert PARAM not in g.cmdline().split()
    assert fingerprint(g, configured) == files_before
    rc, doc = status(g)
    assert (rc, doc["state"]) == (15, "absent")


def test_remote_apply_reboot_wait(new_guest: Callable[..., Guest], tmp_path: object) -> None:
    """From outside the guest: mlxfix on this machine, nothing but sh and GRUB's tools used on the guest."""
    import subprocess
    import sys

    g = new_guest("bios-grub", mlxfix=False)
    g.boot()
    assert g.sh("command -v mlxfix", check=False).rc != 0  # nothing of mlxfix's on the target
    before = fingerprint(g, CONFIGURED["bios-grub"])
    opts = [a for o in g.ssh_options() for a in ("--ssh-option", o)]
    mlxfix = [sys.executable, "-m", "mlxfix"]

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*mlxfix, *args, "--host", g.target, *opts], capture_output=True, text=True, timeout=900, check=False
        )

    old_boot = g.boot_id()
    p = remote("apply", "--yes", "--reboot", "--wait")
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert p.returncode in (0, 13), p.stdout + p.stderr  # 13: verify's device check, as above
    assert g.boot_id() != old_boot
    assert PARAM in g.cmdline().split()
    assert re.search(r"127\.0\.0\.1", p.stdout + p.stderr)  # the target is named in the report

    p = remote("rollback", "--yes", "--reboot", "--wait")
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert p.returncode == 0, p.stdout + p.stderr
    assert PARAM not in g.cmdline().split()
    assert fingerprint(g, CONFIGURED["bios-grub"]) == before
