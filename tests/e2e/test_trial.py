"""apply --trial on real boots (issue 14): what only GRUB itself can prove. The trial boots once with the
parameter, GRUB clears next_entry before the kernel starts, the next boot without committing falls back
to the unchanged default; and a trial made permanent with apply needs no second reboot and stays."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_boot import PARAM, checks_failed, fingerprint, no_traceback, status

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.e2e.guest import Guest

pytestmark = pytest.mark.slow

GRUB_FILES = "/etc/default/grub /boot/grub/grub.cfg"
CUSTOM = "/boot/grub/custom.cfg"


def next_entry(g: Guest) -> str:
    return g.sh("grub-editenv /boot/grub/grubenv list").out


@pytest.mark.parametrize("setup", ["bios-grub", "uefi-grub"])
def test_trial_boots_once_then_falls_back_or_is_kept(new_guest: Callable[..., Guest], setup: str) -> None:
    g = new_guest(setup)
    g.boot()
    before = fingerprint(g, GRUB_FILES)

    armed = no_traceback(g.mlxfix("apply --trial --yes --no-reboot --json"))
    assert armed.rc == 0, str(armed)
    doc = json.loads(armed.out)
    assert doc["trial"]["armed"] is True, doc
    assert doc["trial"]["fallback"] == "Debian GNU/Linux", doc
    assert fingerprint(g, GRUB_FILES) == before  # nothing the default boot reads changed
    assert "next_entry=mlxfix-trial" in next_entry(g)

    g.reboot()  # the trial boot
    running = g.cmdline().split()
    assert PARAM in running
    assert "panic=10" in running
    assert "next_entry=mlxfix-trial" not in next_entry(g)  # GRUB cleared it before the kernel started
    rc, st = status(g)
    assert (rc, st["state"]) == (16, "trial"), st
    verified = no_traceback(g.mlxfix("verify --json"))
    assert json.loads(verified.out)["trial"] is True, str(verified)
    assert set(checks_failed(verified)) <= {"devices"}, str(verified)  # no ConnectX-3 in QEMU

    g.reboot()  # not committed: the old default, by itself
    assert PARAM not in g.cmdline().split()
    rolled = no_traceback(g.mlxfix("rollback --yes --no-reboot"))
    assert rolled.rc == 0, str(rolled)
    assert g.sh(f"test -e {CUSTOM}", check=False).rc != 0  # the trial entry is gone
    assert fingerprint(g, GRUB_FILES) == before

    # Once more, and kept this time: trial, reboot, apply (no second reboot needed), reboot, still there.
    assert no_traceback(g.mlxfix("apply --trial --yes --no-reboot")).rc == 0
    g.reboot()
    assert PARAM in g.cmdline().split()
    kept = no_traceback(g.mlxfix("apply --yes --no-reboot --json"))
    assert kept.rc == 0, str(kept)
    doc = json.loads(kept.out)
    assert doc["changed"] is True
    assert doc["reboot_required"] is False, doc  # the running kernel has it already
    assert g.sh(f"test -e {CUSTOM}", check=False).rc != 0
    rc, st = status(g)
    assert (rc, st["state"]) == (0, "in-effect"), st
    g.reboot()
    assert PARAM in g.cmdline().split()
    rc, st = status(g)
    assert (rc, st["state"]) == (0, "in-effect"), st
