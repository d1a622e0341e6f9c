"""Power cuts: QEMU killed (SIGKILL) at moments spread over an apply and over a rollback, update-grub's
run included; then the guest boots again and must be whole.

After each cut, what a user would check: the guest boots; it boots with the old or the new command line,
and with the one its grub.cfg holds; /etc/default/grub holds the old or the new bytes, never a mix or
nothing; grub.cfg is whole (grub-script-check parses it, its last section is there) and its entries all
carry the parameter or none does; and the next mlxfix run finishes or rolls back to a consistent state.
Each recovery boot is the start of the next cut, so apply and rollback alternate.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_boot import PARAM, no_traceback, tokens

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.e2e.guest import Guest

CUTS = int(os.environ.get("MLXFIX_E2E_CUTS", "20"))
GRUB = "/etc/default/grub"
GRUB_CFG = "/boot/grub/grub.cfg"
INTENT = "/var/lib/mlxfix/intent.json"
README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.slow


@dataclass
class Cut:
    op: str
    at: float  # seconds after mlxfix started
    of: float  # how long the same operation took uncut
    state: str = ""  # what the file held after the cut: old or new
    booted_with: bool = False  # the parameter was in /proc/cmdline after the cut
    intent_left: bool = False
    recovered_by: str = ""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def started(guest: Guest, op: str) -> tuple[subprocess.Popen[bytes], float]:
    """mlxfix OP --yes started in the guest; returns once it runs (the START marker came back)."""
    proc = subprocess.Popen(
        [*guest.ssh_argv(), f"echo START; exec mlxfix {op} --yes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"START", line
    return proc, time.monotonic()


def timed(guest: Guest, op: str) -> float:
    proc, t0 = started(guest, op)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode(errors="replace")
    return time.monotonic() - t0


@dataclass
class Seen:
    """What a user would look at after a boot, read in one SSH session."""

    grub: str  # sha256 of /etc/default/grub
    whole: bool  # grub.cfg parsed by GRUB's own checker, and its last section there
    carried: list[bool]  # per entry that takes GRUB_CMDLINE_LINUX_DEFAULT: does it have the parameter
    booted_with: bool  # the running kernel got the parameter
    intent: bool  # mlxfix's intent record is there

    def consistent(self) -> bool:
        return self.whole and bool(self.carried) and (all(self.carried) or not any(self.carried))


CHECK = f"""\
sha256sum < {GRUB} | cut -d' ' -f1
if grub-script-check {GRUB_CFG} && tail -n 3 {GRUB_CFG} | grep -qx '### END /etc/grub.d/41_custom ###'; then echo whole; else echo broken; fi
cat /proc/cmdline
if test -e {INTENT}; then echo intent; else echo none; fi
grep -E '^[[:space:]]*linux[[:space:]]' {GRUB_CFG} || true
"""


def seen(guest: Guest) -> Seen:
    out = guest.sh(CHECK).out.splitlines()
    lines = [tokens(ln) for ln in out[4:]]
    carried = [PARAM in t for t in lines if "single" not in t]  # recovery entries take GRUB_CMDLINE_LINUX only
    return Seen(out[0], out[1] == "whole", carried, PARAM in out[2].split(), out[3] == "intent")


def test_power_cuts_during_apply_and_rollback(new_guest: Callable[..., Guest]) -> None:
    g = new_guest("bios-grub")
    g.boot()
    old = g.read(GRUB)
    # Uncut, once each: how long the operations take, and the bytes apply writes.
    took = {"apply": timed(g, "apply"), "rollback": 0.0}
    new = g.read(GRUB)
    took["rollback"] = timed(g, "rollback")
    assert g.read(GRUB) == old
    versions = {sha(old): "old", sha(new): "new"}

    cuts: list[Cut] = []
    # The moments: spread evenly over each operation, its last instants and just after it included.
    half = (CUTS + 1) // 2
    pending = {op: [took[op] * 1.1 * (n + 0.5) / half for n in range(half)] for op in took}
    while len(cuts) < CUTS:
        state = versions[seen(g).grub]
        op = "apply" if state == "old" else "rollback"
        if not pending[op]:  # that operation has had its cuts: bring the host to the other one's start
            assert no_traceback(g.mlxfix(f"{op} --yes")).rc == 0
            op = "rollback" if op == "apply" else "apply"
        cut = Cut(op, at=pending[op].pop(0), of=took[op])
        proc, t0 = started(g, op)
        time.sleep(max(0.0, t0 + cut.at - time.monotonic()))
        g.power_cut()
        proc.kill()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()  # (its ssh died with the guest: nothing more to read)

        g.boot()  # the guest must come up, whatever the moment was
        after = seen(g)
        where = f"after a cut at {cut.at:.1f} s of {op}"
        assert after.grub in versions, f"{where}: {GRUB} is neither the old nor the new file:\n{g.read(GRUB)!r}"
        cut.state, cut.booted_with, cut.intent_left = versions[after.grub], after.booted_with, after.intent
        assert after.consistent(), f"{where}: grub.cfg is not whole, or its entries disagree: {after}"
        assert after.booted_with == all(after.carried), f"{where}: the boot did not get what grub.cfg holds"

        # A run cut after its intent record was written: the next run must finish it, and then
        # everything agrees with the file. (Without one, the host is consistent as it is: the next
        # cut's operation starts from there.)
        if after.intent:
            again = no_traceback(g.mlxfix(f"{op} --yes"))
            assert again.rc == 0, str(again)
            cut.recovered_by = f"mlxfix {op}"
            after = seen(g)
            assert versions[after.grub] == ("new" if op == "apply" else "old"), where
            assert not after.intent, f"{where}: the intent record outlived the recovery"
            assert after.consistent(), f"{where}: {after}"
            assert all(after.carried) == (versions[after.grub] == "new"), f"{where}: {after}"
        else:
            assert all(after.carried) == (cut.state == "new"), f"{where}: the file and grub.cfg disagree: {after}"
        cuts.append(cut)

    # The moment after "Done": an admin may power-cycle the host through its BMC right then. What apply
    # and rollback reported must be on the disk, the regenerated grub.cfg included.
    for op in ("apply", "rollback") if versions[seen(g).grub] == "old" else ("rollback", "apply"):
        proc, t0 = started(g, op)
        out, _ = proc.communicate(timeout=600)
        g.power_cut()
        assert proc.returncode == 0, out.decode(errors="replace")
        cut = Cut(op, at=time.monotonic() - t0, of=took[op])
        g.boot()
        target = "new" if op == "apply" else "old"
        after = seen(g)
        cut.state, cut.booted_with = versions[after.grub], after.booted_with
        assert cut.state == target, f"{op} said it was done, but after a power cut {GRUB} is the {cut.state} one"
        assert after.consistent(), f"{op} said it was done; after a power cut: {after}"
        assert all(after.carried) == (target == "new"), f"{op} said it was done; after a power cut: {after}"
        assert after.booted_with == (target == "new"), f"{op} said it was done; the boot after a cut: {after}"
        assert not after.intent, f"{op} said it was done, but its intent record is there after a cut"
        cut.recovered_by = "nothing (cut after the report)"
        cuts.append(cut)

    report = "\n".join(
        f"{c.op:8} cut at {c.at:5.1f} s of {c.of:4.1f} s: file {c.state}, booted {'with' if c.booted_with else 'without'}"
        f" the parameter{', intent left' if c.intent_left else ''}{', recovered by ' + c.recovered_by if c.recovered_by else ''}"
        for c in cuts
    )
    print(f"\n{len(cuts)} power cuts, 0 files lost:\n{report}")
    assert len(cuts) == CUTS + 2
    row = re.search(r"\| power cuts of a booted VM during apply and rollback \(tests/e2e\) \| (\d+) \|", README.read_text())
    assert row is not None, "the README's Safety table has no power-cut row"
    assert int(row[1]) == len(cuts) or "MLXFIX_E2E_CUTS" in os.environ, "the README's Safety row"
    assert {c.state for c in cuts if c.op == "apply"} >= {"old", "new"} or CUTS < 4
