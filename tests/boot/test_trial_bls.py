"""apply --trial on GRUB with BLS entries (Fedora, RHEL): a copied BLS entry, armed with grub2-reboot
(issue 14). Fedora's tools do not run here, so the trees are Fedora's files: its BLS entries, a
grub.cfg with the 00_header lines that boot next_entry once and clear it, and a grubenv made and
changed by Debian's real grub-editenv (grub2-reboot is grub2-editenv set next_entry=ID, and GRUB
clears it at boot as grub-editenv unset does). What only a boot proves is the VM suite's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.trees import json_of, snapshot

P = "pci=realloc=off"
DEFAULT_ID = "0b1f5c3e9d2a4f6b8c7d6e5f4a3b2c1d-6.11.6-300.fc41.x86_64"
ENTRIES = "boot/loader/entries"
TRIAL = f"{ENTRIES}/mlxfix-trial.conf"
# Fedora 41's grub.cfg, the parts that matter: 00_header's load_env and next_entry, 10_linux's blscfg.
FEDORA_CFG = """\
### BEGIN /etc/grub.d/00_header ###
set pager=1

if [ -f ${config_directory}/grubenv ]; then
  load_env -f ${config_directory}/grubenv
elif [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi
### END /etc/grub.d/00_header ###
### BEGIN /etc/grub.d/10_linux ###
insmod part_gpt
insmod ext2
set root='hd0,gpt2'
insmod blscfg
blscfg
### END /etc/grub.d/10_linux ###
"""


def editenv(root: Path, *args: str) -> None:
    if not shutil.which("grub-editenv"):
        pytest.fail("needs Debian's grub-common (grub-editenv): the README's test command installs it")
    subprocess.run(["grub-editenv", str(root / "boot/grub2/grubenv"), *args], check=True, capture_output=True)


@pytest.fixture
def fedora(tmp_path: Path) -> Path:
    root = tmp_path / "fedora"
    shutil.copytree(EXAMPLES / "fedora-bls", root, symlinks=True)
    (root / "boot/grub2").mkdir(parents=True)
    (root / "boot/grub2/grub.cfg").write_text(FEDORA_CFG)
    editenv(root, "create")
    editenv(root, "set", f"saved_entry={DEFAULT_ID}", "boot_success=1")
    (root / "proc").mkdir()
    (root / "proc/cmdline").write_text(
        "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.11.6-300.fc41.x86_64 root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root rhgb quiet\n"
    )
    (root / "proc/mounts").write_text("/dev/mapper/fedora-root / xfs rw 0 0\n/dev/vda2 /boot ext4 rw 0 0\n")
    for tool in ("grub2-reboot", "grub2-editenv"):
        (root / "usr/sbin" / tool).write_text("#!/bin/sh\n")
        (root / "usr/sbin" / tool).chmod(0o755)
    return root


def mlxfix(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "mlxfix", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_trial_is_a_copy_of_the_default_entry_armed_with_grub2_reboot(fedora: Path) -> None:
    before = snapshot(fedora)
    dry = mlxfix(fedora, "apply", "--trial", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert snapshot(fedora) == before
    doc = json_of(dry.stdout)
    assert doc["trial"] == {
        "entry": "mlxfix trial: Fedora Linux (6.11.6-300.fc41.x86_64) 41 (Server Edition)",
        "armed": False,
        "fallback": DEFAULT_ID,
    }
    assert [c["argv"] for c in doc["commands"]] == [["grub2-reboot", "mlxfix-trial"]]  # type: ignore[index, union-attr]

    proc = mlxfix(fedora, "apply", "--trial", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    default = (fedora / ENTRIES / f"{DEFAULT_ID}.conf").read_text()
    expected = default.replace("title Fedora", "title mlxfix trial: Fedora").replace("rhgb quiet\n", f"rhgb quiet {P} panic=10\n")
    header = f"# mlxfix trial: a copy of /{ENTRIES}/{DEFAULT_ID}.conf, with {P} panic=10\n"
    assert (fedora / TRIAL).read_text() == header + expected
    changed = {k for k, v in snapshot(fedora).items() if before.get(k) != v}
    assert {k for k in changed if "var/lib/mlxfix" not in k} == {TRIAL}  # nothing the default boot reads

    # grub2-reboot's part (under --root it is left to the host): next_entry, set with grub-editenv.
    editenv(fedora, "set", "next_entry=mlxfix-trial")
    armed = json_of(mlxfix(fedora, "status", "--json").stdout)
    assert armed["next_boot"]["entry"] == "mlxfix-trial"  # type: ignore[index]
    assert any("is armed" in w for w in armed["warnings"])  # type: ignore[union-attr]

    # The boot: GRUB boots it and clears next_entry; the kernel gets the trial entry's options.
    editenv(fedora, "unset", "next_entry")
    (fedora / "proc/cmdline").write_text(
        "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.11.6-300.fc41.x86_64 root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root rhgb"
        f" quiet {P} panic=10\n"
    )
    status = mlxfix(fedora, "status", "--json")
    assert status.returncode == 16, status.stdout
    assert json_of(status.stdout)["next_boot"]["entry"] == DEFAULT_ID  # type: ignore[index]

    # Kept for good: the trial entry goes, grubby edits the real entries (left to the host under --root).
    kept = json_of(mlxfix(fedora, "apply", "--yes", "--json").stdout)
    assert kept["exit_code"] == 0
    assert not (fedora / TRIAL).exists()
    assert any(c["argv"][0] == "grubby" for c in kept["commands"])  # type: ignore[index, union-attr]
    assert any("no reboot is needed" in n for n in kept["notes"])  # type: ignore[union-attr]


def test_rollback_removes_an_armed_trial_and_disarms_it(fedora: Path) -> None:
    assert mlxfix(fedora, "apply", "--trial", "--yes").returncode == 0
    editenv(fedora, "set", "next_entry=mlxfix-trial")
    dry = json_of(mlxfix(fedora, "rollback", "--dry-run", "--json").stdout)
    assert ["grub2-editenv", "/boot/grub2/grubenv", "unset", "next_entry"] in [c["argv"] for c in dry["commands"]]  # type: ignore[index, union-attr]
    proc = mlxfix(fedora, "rollback", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert not (fedora / TRIAL).exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("unpinned", "not pinned by saved_entry"),
        ("no-save-env", "never clears next_entry"),
        ("btrfs", "GRUB could not clear next_entry"),
        ("no-grub2-reboot", "grub2-reboot (which sets next_entry) is not installed"),
    ],
)
def test_refused_where_it_could_not_boot_once_safely(fedora: Path, change: str, why: str) -> None:
    if change == "unpinned":
        editenv(fedora, "unset", "saved_entry")
    elif change == "no-save-env":
        (fedora / "boot/grub2/grub.cfg").write_text(FEDORA_CFG.replace("   save_env next_entry\n", ""))
    elif change == "btrfs":
        (fedora / "proc/mounts").write_text("/dev/vda3 / btrfs rw,subvol=/root 0 0\n")
    else:
        (fedora / "usr/sbin/grub2-reboot").unlink()
    before = snapshot(fedora)
    proc = mlxfix(fedora, "apply", "--trial", "--yes")
    assert proc.returncode == 1
    assert why in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(fedora) == before
