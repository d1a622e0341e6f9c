"""apply --trial for GRUB (issue 14) on grub.cfg files the real update-grub wrote, armed with the real
grub-editenv: the copied entry, what GRUB will boot once and after, rollback, the permanent apply,
and the refusals. That GRUB itself clears next_entry at boot is proved by the boot suite (tests/e2e)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from mlxfix.boot import grub_trial, grubcfg
from tests.boot import test_update_grub
from tests.boot.test_update_grub import mlxfix
from tests.test_status import regenerate
from tests.trees import json_of

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.root, pytest.mark.slow]
sandbox = test_update_grub.sandbox  # the fixture: Debian's defaults, a kernel in /boot, a state dir

P = "pci=realloc=off"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def grubenv(sandbox: Path) -> dict[str, str]:
    """grubenv as the real grub-editenv lists it."""
    env = sandbox / "boot" / "grub" / "grubenv"
    if not env.exists():
        return {}
    out = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def what_grub_boots(sandbox: Path) -> grubcfg.NextBootResult:
    """grub.cfg run as GRUB will run it, with the grubenv and custom.cfg on disk."""
    grub = sandbox / "boot" / "grub"
    custom = grub / "custom.cfg"
    env = grub / "grubenv"
    return grubcfg.next_boot(
        (grub / "grub.cfg").read_bytes(),
        "/boot/grub/grub.cfg",
        env=grubcfg.parse_grubenv(env.read_bytes()) if env.exists() else None,
        custom=custom.read_bytes() if custom.exists() else None,
        custom_path="/boot/grub/custom.cfg",
    )


def trial(sandbox: Path, *args: str) -> tuple[int, dict[str, object], str]:
    proc = mlxfix(sandbox, "apply", "--trial", "--yes", "--no-reboot", "--json", *args)
    doc = json_of(proc.stdout)
    assert isinstance(doc, dict), proc.stderr
    return proc.returncode, doc, proc.stderr


def test_trial_arms_a_copy_of_the_next_boot_and_changes_nothing_the_default_boot_reads(sandbox: Path) -> None:
    regenerate(sandbox)
    grub, cfg = sandbox / "default" / "grub", sandbox / "boot" / "grub" / "grub.cfg"
    before = (digest(grub), digest(cfg))
    default = what_grub_boots(sandbox).entry
    assert default is not None
    assert default.cmdline is not None

    code, doc, err = trial(sandbox)
    assert code == 0, err
    assert doc["trial"] == {"entry": "mlxfix trial: Debian GNU/Linux", "armed": True, "fallback": "Debian GNU/Linux"}
    assert (digest(grub), digest(cfg)) == before  # the default boot reads the same bytes
    assert grubenv(sandbox)["next_entry"] == grub_trial.TRIAL_ID

    custom = sandbox / "boot" / "grub" / "custom.cfg"
    check = subprocess.run(["grub-script-check", str(custom)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr  # GRUB's own parser takes it
    assert "savedefault" not in custom.read_text()

    code, again, err = trial(sandbox)  # armed already: nothing changes
    assert code == 0, err
    assert again["changed"] is False
    assert again["trial"] == {"entry": "mlxfix trial: Debian GNU/Linux", "armed": True, "fallback": None}

    once = what_grub_boots(sandbox).entry  # armed: the trial entry, the default's line plus the parameter
    assert once is not None
    assert once.id == grub_trial.TRIAL_ID
    assert once.cmdline == f"{default.cmdline} {P} panic=10"
    # What 00_header does at boot (set next_entry=, save_env next_entry), done with the real tool:
    subprocess.run(["grub-editenv", str(sandbox / "boot/grub/grubenv"), "unset", "next_entry"], check=True)
    after = what_grub_boots(sandbox).entry
    assert after is not None
    assert (after.name, after.cmdline) == (default.name, default.cmdline)  # every other boot: the old default


def test_rollback_removes_the_trial_and_disarms_it(sandbox: Path) -> None:
    regenerate(sandbox)
    cfg = sandbox / "boot" / "grub" / "grub.cfg"
    before = digest(cfg)
    code, _, err = trial(sandbox)
    assert code == 0, err
    proc = mlxfix(sandbox, "rollback", "--yes", "--no-reboot", "--json")
    assert proc.returncode == 0, proc.stderr
    assert not (sandbox / "boot" / "grub" / "custom.cfg").exists()
    assert "next_entry" not in grubenv(sandbox)
    assert digest(cfg) == before  # nothing to regenerate: GRUB reads custom.cfg itself
    rolled = json_of(proc.stdout)
    assert isinstance(rolled, dict)
    assert not any(c["argv"][0] == "update-grub" for c in rolled["commands"])  # type: ignore[index]


def test_an_admins_custom_cfg_is_kept_byte_for_byte(sandbox: Path) -> None:
    regenerate(sandbox)
    custom = sandbox / "boot" / "grub" / "custom.cfg"
    mine = b"menuentry 'Memtest' --id memtest {\n\tlinux16 /memtest86+.bin\n}\n"
    custom.write_bytes(mine)
    custom.chmod(0o600)
    code, _, err = trial(sandbox)
    assert code == 0, err
    assert custom.read_bytes().startswith(mine)
    assert oct(custom.stat().st_mode & 0o777) == "0o600"
    proc = mlxfix(sandbox, "rollback", "--yes", "--no-reboot")
    assert proc.returncode == 0, proc.stderr
    assert custom.read_bytes() == mine


def test_apply_after_a_trial_makes_it_permanent_and_removes_the_trial(sandbox: Path) -> None:
    regenerate(sandbox)
    code, _, err = trial(sandbox)
    assert code == 0, err
    proc = mlxfix(sandbox, "apply", "--yes", "--no-reboot", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert isinstance(doc, dict)
    assert any("trial entry" in n for n in doc["notes"])  # type: ignore[union-attr]
    assert not (sandbox / "boot" / "grub" / "custom.cfg").exists()
    assert "next_entry" not in grubenv(sandbox)
    assert P in (sandbox / "default" / "grub").read_text()
    entry = what_grub_boots(sandbox).entry
    assert entry is not None
    assert entry.cmdline is not None
    assert P in entry.cmdline.split()
    # and its rollback does not bring the trial entry back
    proc = mlxfix(sandbox, "rollback", "--yes", "--no-reboot")
    assert proc.returncode == 0, proc.stderr
    assert not (sandbox / "boot" / "grub" / "custom.cfg").exists()
    assert P not in (sandbox / "default" / "grub").read_text()


def test_dry_run_shows_the_trial_and_changes_nothing(sandbox: Path) -> None:
    regenerate(sandbox)
    proc = mlxfix(sandbox, "apply", "--trial", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "mlxfix trial: Debian GNU/Linux" in proc.stdout
    assert f"grub-editenv /boot/grub/grubenv set next_entry={grub_trial.TRIAL_ID}" in proc.stdout
    assert not (sandbox / "boot" / "grub" / "custom.cfg").exists()
    assert "next_entry" not in grubenv(sandbox)


# -- refusals, on trees (--root: the tree's /proc/mounts and grub.cfg) -------------------------------------


@pytest.fixture
def tree(sandbox: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --root tree holding a grub.cfg the real update-grub wrote."""
    regenerate(sandbox)
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(sandbox / "default", root / "etc" / "default")
    shutil.copytree(sandbox / "boot", root / "boot")
    (root / "proc").mkdir()
    (root / "proc" / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    (root / "proc" / "mounts").write_text("/dev/sda1 / ext4 rw,relatime 0 0\n")
    (root / "usr" / "sbin").mkdir(parents=True)
    for tool in ("update-grub", "grub-mkconfig"):
        (root / "usr" / "sbin" / tool).write_text("#!/bin/sh\n")
        (root / "usr" / "sbin" / tool).chmod(0o755)
    return root


def run_tree(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(test_update_grub.Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "mlxfix", "apply", "--trial", "--yes", "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_under_root_the_trial_entry_is_written_and_arming_is_left_to_the_host(tree: Path) -> None:
    proc = run_tree(tree, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert isinstance(doc, dict)
    assert doc["trial"] == {"entry": "mlxfix trial: Debian GNU/Linux", "armed": False, "fallback": "Debian GNU/Linux"}
    assert grub_trial.present((tree / "boot" / "grub" / "custom.cfg").read_bytes())


@pytest.mark.parametrize(
    ("mounts", "why"),
    [
        ("rpool/ROOT/pve-1 / zfs rw,xattr,noacl 0 0\n", "on zfs"),
        ("/dev/sda2 / btrfs rw,subvol=/@ 0 0\n", "on btrfs"),
        ("/dev/sda1 / ext4 rw 0 0\n/dev/mapper/vg0-boot /boot ext4 rw 0 0\n", "device-mapper volume (LVM or LUKS)"),
        ("/dev/md0 / ext4 rw 0 0\n", "software RAID"),
    ],
)
def test_refused_where_grub_cannot_clear_next_entry(tree: Path, mounts: str, why: str) -> None:
    (tree / "proc" / "mounts").write_text(mounts)
    proc = run_tree(tree)
    assert proc.returncode == 1
    assert why in proc.stderr
    assert "GRUB could not clear next_entry" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tree / "boot" / "grub" / "custom.cfg").exists()


def test_refused_without_the_custom_cfg_hook(tree: Path) -> None:
    cfg = tree / "boot" / "grub" / "grub.cfg"
    text = cfg.read_text()
    assert "custom.cfg" in text
    cfg.write_text("\n".join(ln for ln in text.splitlines() if "custom.cfg" not in ln) + "\n")
    proc = run_tree(tree)
    assert proc.returncode == 1
    assert "does not source custom.cfg" in proc.stderr
    assert not (tree / "boot" / "grub" / "custom.cfg").exists()


def test_refused_on_proxmox_systemd_boot_with_the_reason(tmp_path: Path) -> None:
    """(issue 14) proxmox-boot-tool owns the entries on its ESPs and rewrites them at each refresh:
    the refusal says so, and what to do instead; nothing is written."""
    from tests.trees import snapshot

    root = tmp_path / "pve"
    shutil.copytree(test_update_grub.Path(__file__).parents[2] / "examples" / "pve-systemd-boot", root)
    before = snapshot(root)
    proc = run_tree(root)
    assert proc.returncode == 1
    assert "cannot be armed safely on Proxmox VE with systemd-boot" in proc.stderr
    assert "rewrites from /etc/kernel/cmdline at every refresh" in proc.stderr
    assert "hint: apply without --trial" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(root) == before


# -- systemd-boot: a copied loader entry, armed with bootctl set-oneshot (not run under --root) --------------

MID = "0123456789abcdef0123456789abcdef"
ENTRY = (
    "title      Debian GNU/Linux 12 (bookworm)\n"
    "version    6.1.0-28-amd64\n"
    f"machine-id {MID}\n"
    "sort-key   debian\n"
    "options    root=UUID=2f1e0c4a ro quiet\n"
    f"linux      /{MID}/6.1.0-28-amd64/linux\n"
    f"initrd     /{MID}/6.1.0-28-amd64/initrd.img-6.1.0-28-amd64\n"
)


@pytest.fixture
def esp(tmp_path: Path) -> Path:
    root = tmp_path / "sd"
    shutil.copytree(test_update_grub.Path(__file__).parents[2] / "examples" / "systemd-boot", root)
    entries = root / "boot/efi/loader/entries"
    entries.mkdir(parents=True)
    (entries / f"{MID}-6.1.0-28-amd64.conf").write_text(ENTRY)
    (root / "boot/efi/loader/loader.conf").write_text("timeout 3\n")
    return root


def test_systemd_boot_trial_copies_the_default_entry_and_a_rollback_removes_it(esp: Path) -> None:
    default = esp / f"boot/efi/loader/entries/{MID}-6.1.0-28-amd64.conf"
    proc = run_tree(esp, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert isinstance(doc, dict)
    assert doc["trial"] == {"entry": "mlxfix-trial.conf", "armed": False, "fallback": default.name}
    assert [c["argv"] for c in doc["commands"]] == [["bootctl", "set-oneshot", "mlxfix-trial.conf"]]  # type: ignore[index]
    trial_entry = (esp / "boot/efi/loader/entries/mlxfix-trial.conf").read_text()
    assert "options    root=UUID=2f1e0c4a ro quiet pci=realloc=off panic=10" in trial_entry
    assert "sort-key" not in trial_entry  # sorted after the entries that have one: never the default
    assert "version" not in trial_entry
    assert default.read_text() == ENTRY
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(test_update_grub.Path(__file__).parents[2])}
    back = subprocess.run(
        [sys.executable, "-m", "mlxfix", "rollback", "--yes", "--root", str(esp)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert back.returncode == 0, back.stderr
    assert not (esp / "boot/efi/loader/entries/mlxfix-trial.conf").exists()
    assert default.read_text() == ENTRY


def test_systemd_boot_trial_is_refused_while_menu_order_alone_picks_the_default(esp: Path) -> None:
    default = esp / f"boot/efi/loader/entries/{MID}-6.1.0-28-amd64.conf"
    default.write_text(ENTRY.replace("sort-key   debian\n", ""))
    proc = run_tree(esp)
    assert proc.returncode == 1
    assert "bootctl set-default" in proc.stderr
    assert not (esp / "boot/efi/loader/entries/mlxfix-trial.conf").exists()
    (esp / "boot/efi/loader/loader.conf").write_text(f"timeout 3\ndefault {default.name}\n")  # pinned: then it is safe
    assert run_tree(esp).returncode == 0


def _spent_trial(tmp_path: Path) -> tuple[Path, str]:
    """A Proxmox VE tree (pve-fixed's working ConnectX-3, the parameter not configured) with the
    grub.cfg update-grub wrote, and a trial entry armed on it under --root (so, on the host, spent
    after its boot): the tree and the kernel line the trial entry gives."""
    import re

    examples = test_update_grub.Path(__file__).parents[2] / "examples"
    root = tmp_path / "pve"
    shutil.copytree(examples / "pve-fixed", root, symlinks=True)
    grub = root / "etc/default/grub"
    grub.write_text(grub.read_text().replace(" pci=realloc=off", ""))
    cfg = (examples / "debian-grub/boot/grub/grub.cfg").read_text()
    cfg = cfg.replace("6.1.0-28-amd64", "6.8.12-4-pve").replace(
        "root=UUID=2f1e0c4a-3d47-4a8b-9f0e-6b1a2c3d4e5f", "root=/dev/mapper/pve-root"
    )
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text(cfg)
    (root / "proc/mounts").write_text("/dev/mapper/pve-root / ext4 rw 0 0\n/dev/sda2 /boot ext4 rw 0 0\n")
    proc = run_tree(root)
    assert proc.returncode == 0, proc.stderr
    [linux] = re.findall(r"^\s*linux\s+(\S+)\s+(.*)$", (root / "boot/grub/custom.cfg").read_text(), re.MULTILINE)
    return root, f"BOOT_IMAGE={linux[0]} {' '.join(linux[1].split())}"


@pytest.mark.parametrize(
    ("booted_by", "state", "code", "trial"),
    [
        ("the trial entry", "trial", 16, True),
        ("a prompt", "drift", 14, False),  # the parameter typed at GRUB's prompt: not the trial's line
    ],
)
def test_status_diagnose_and_verify_tell_a_trial_boot_by_one_rule(
    tmp_path: Path, booted_by: str, state: str, code: int, trial: bool
) -> None:
    """(issue 14) A spent trial entry is there and the running kernel has the parameter: it is a
    trial boot when its command line is the trial entry's (with panic=10), not when the parameter was
    typed at the boot prompt. status, diagnose and verify say the same."""
    import os
    import sys

    root, trial_line = _spent_trial(tmp_path)
    default = (root / "proc/cmdline").read_text().replace(" pci=realloc=off", "").strip()
    running = trial_line if booted_by == "the trial entry" else f"{default} pci=realloc=off"
    (root / "proc/cmdline").write_text(running + "\n")
    env = {**os.environ, "PYTHONPATH": str(test_update_grub.Path(__file__).parents[2])}

    def mlxfix(*args: str) -> tuple[int, dict[str, object]]:
        proc = subprocess.run(
            [sys.executable, "-m", "mlxfix", *args, "--json", "--root", str(root)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        doc = json_of(proc.stdout)
        assert isinstance(doc, dict), proc.stderr
        return proc.returncode, doc

    got, status = mlxfix("status")
    assert (got, status["state"]) == (code, state)
    _, diagnosis = mlxfix("diagnose")
    assert any("this boot is a trial boot" in str(w) for w in diagnosis["warnings"]) is trial  # type: ignore[union-attr]
    _, verification = mlxfix("verify")
    assert verification["trial"] is trial
