"""grubcfg against what GRUB's own tools write: grub.cfg from the real update-grub (in a private mount
namespace), grubenv from the real grub-editenv, and grub-script-check for what GRUB can parse."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlxfix.boot import grubcfg

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEBIAN_GRUB = Path("/usr/share/grub/default/grub")
KERNELS = ("6.1.0-9-amd64", "6.1.0-13-amd64")  # the newer one is the first entry
P = "pci=realloc=off"

NAMESPACE = r"""
set -e
mount --make-rprivate /
mount --bind "$SANDBOX/default" /etc/default
mount --bind "$SANDBOX/boot" /boot
[ ! -e "$SANDBOX/grub.d" ] || mount --bind "$SANDBOX/grub.d" /etc/grub.d
update-grub
"""


def generate(tmp_path: Path, default: str = "0", cmdline: str = f'"quiet {P}"', custom: str = "") -> Path:
    """A real grub.cfg, from Debian's defaults with these GRUB_DEFAULT and GRUB_CMDLINE_LINUX_DEFAULT."""
    if os.geteuid() != 0 or not shutil.which("update-grub") or not DEBIAN_GRUB.exists():
        pytest.fail("needs root and Debian's grub2-common (.ci/run installs it)")
    (tmp_path / "default" / "grub.d").mkdir(parents=True)
    text = DEBIAN_GRUB.read_text()
    text = text.replace("GRUB_DEFAULT=0", f"GRUB_DEFAULT={default}")
    text = text.replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', f"GRUB_CMDLINE_LINUX_DEFAULT={cmdline}")
    (tmp_path / "default" / "grub").write_text(text)
    (tmp_path / "boot" / "grub").mkdir(parents=True)
    for k in KERNELS:
        (tmp_path / "boot" / f"vmlinuz-{k}").write_bytes(b"\x00" * 64)
        (tmp_path / "boot" / f"initrd.img-{k}").write_bytes(b"\x00" * 64)
    if custom:
        shutil.copytree("/etc/grub.d", tmp_path / "grub.d")
        (tmp_path / "grub.d" / "40_custom").write_text(f"#!/bin/sh\nexec tail -n +3 $0\n{custom}")
        (tmp_path / "grub.d" / "40_custom").chmod(0o755)
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", NAMESPACE],
        env={**os.environ, "SANDBOX": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = tmp_path / "boot" / "grub" / "grub.cfg"
    assert subprocess.run(["grub-script-check", str(cfg)], check=False).returncode == 0
    return cfg


def editenv(tmp_path: Path, **values: str) -> dict[str, str]:
    env = tmp_path / "grubenv"
    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    for key, value in values.items():
        subprocess.run(["grub-editenv", str(env), "set", f"{key}={value}"], check=True)
    return grubcfg.parse_grubenv(env.read_bytes())


def boot(cfg: Path, env: dict[str, str] | None = None, **kw: object) -> grubcfg.NextBootResult:
    return grubcfg.next_boot(cfg.read_bytes(), "/boot/grub/grub.cfg", env=env, **kw)  # type: ignore[arg-type]


def test_the_first_entry_boots_the_newest_kernel_with_the_configured_line(tmp_path: Path) -> None:
    result = boot(generate(tmp_path))
    assert result.entry is not None
    assert result.entry.name == "Debian GNU/Linux"
    assert result.entry.cmdline is not None
    assert re.fullmatch(rf"BOOT_IMAGE=\S*/vmlinuz-{KERNELS[1]} root=\S+ ro quiet {P}", result.entry.cmdline)
    assert result.entry.cmdline.split()[-2:] == ["quiet", P]
    assert result.problems == []
    normal = [e for e in result.entries if not e.recovery]
    recovery = [e for e in result.entries if e.recovery]
    assert len(normal) == 3  # the simple entry and one per kernel in the submenu
    assert len(recovery) == 2
    assert all(P in (e.cmdline or "") for e in normal)
    assert not any(P in (e.cmdline or "") for e in recovery)  # recovery takes GRUB_CMDLINE_LINUX only
    assert all(e.generated and e.boots_linux for e in result.entries)
    assert all(e.source.startswith("/boot/grub/grub.cfg:") for e in result.entries)


def test_a_newline_in_the_value_splits_the_linux_line(tmp_path: Path) -> None:
    """(issue 13) valid sh, and GRUB runs "splash pci=realloc=off" as a command of its own."""
    result = boot(generate(tmp_path, cmdline=f'"quiet\nsplash {P}"'))
    assert result.entry is not None
    assert result.entry.cmdline is not None
    assert P not in result.entry.cmdline
    assert result.entry.cmdline.endswith(" quiet")
    assert any(f"'splash {P}' stands on a line of its own" in p for p in result.problems)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("id-path", f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {KERNELS[0]}"),
        ("title-path", f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {KERNELS[0]} (recovery mode)"),
        ("index-path", f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {KERNELS[0]}"),
        ("out-of-range", "Debian GNU/Linux"),
        ("no-such-title", "Debian GNU/Linux"),
    ],
)
def test_grub_default_in_its_forms(tmp_path: Path, how: str, expected: str) -> None:
    """A saved default through grubenv (what grub-set-default writes), resolved as menu.c resolves it."""
    cfg = generate(tmp_path, default="saved")
    text = cfg.read_text()
    uuid_part = text.split("'gnulinux-advanced-", 1)[1].split("'", 1)[0]
    saved = {
        "id-path": f"gnulinux-advanced-{uuid_part}>gnulinux-{KERNELS[0]}-advanced-{uuid_part}",
        "title-path": f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {KERNELS[0]} (recovery mode)",
        "index-path": "1>2",
        "out-of-range": "7",
        "no-such-title": "Windows",
    }[how]
    result = boot(cfg, editenv(tmp_path, saved_entry=saved))
    assert result.entry is not None
    assert result.entry.name == expected
    assert "saved_entry" in result.why


def test_a_pending_next_entry_wins_over_the_saved_one(tmp_path: Path) -> None:
    """grub-reboot's next_entry is what the next boot takes (00_header's logic, run as GRUB runs it)."""
    cfg = generate(tmp_path, default="saved")
    env = editenv(tmp_path, saved_entry="0", next_entry=f"1>Debian GNU/Linux, with Linux {KERNELS[0]}")
    result = boot(cfg, env)
    assert result.entry is not None
    assert result.entry.name.endswith(f"with Linux {KERNELS[0]}")
    assert "next_entry" in result.why
    assert boot(cfg, editenv(tmp_path, saved_entry="0")).entry.name == "Debian GNU/Linux"  # type: ignore[union-attr]


def test_a_custom_default_entry_is_not_generated(tmp_path: Path) -> None:
    """GRUB_DEFAULT naming a 40_custom entry with its own linux line: it never gets the edit."""
    custom = "menuentry 'Custom kernel' --id custom {\n\tlinux /boot/vmlinuz-custom root=/dev/sda1 ro quiet\n}\n"
    result = boot(generate(tmp_path, default="custom", custom=custom))
    assert result.entry is not None
    assert result.entry.name == "Custom kernel"
    assert not result.entry.generated
    assert result.entry.cmdline == "BOOT_IMAGE=/boot/vmlinuz-custom root=/dev/sda1 ro quiet"


def test_custom_cfg_is_sourced_where_41_custom_says(tmp_path: Path) -> None:
    cfg = generate(tmp_path, default="'From custom.cfg'")
    custom = b"menuentry 'From custom.cfg' {\n  linux /vmlinuz \"acpi_osi=Windows 2009\" it\\'s\n}\n"
    result = boot(cfg, custom=custom, custom_path="/boot/grub/custom.cfg")
    assert result.entry is not None
    assert result.entry.name == "From custom.cfg"
    assert result.entry.source == "/boot/grub/custom.cfg:2"
    # grub_create_loader_cmdline: an argument with a space is quoted, ' and " and \ escaped
    assert result.entry.cmdline == 'BOOT_IMAGE=/vmlinuz "acpi_osi=Windows 2009" it\\\'s'
    assert boot(cfg).entry.name == "Debian GNU/Linux"  # type: ignore[union-attr]  # without custom.cfg


@pytest.mark.parametrize(
    "script",
    [
        "menuentry 'x' {\n linux /v 'a\n}\n",
        'set a="b\n',
        "if true; then\n echo\n",
        "menuentry 'x' {\n linux /v\n",
    ],
)
def test_what_grub_script_check_rejects_is_not_read_as_a_menu(tmp_path: Path, script: str) -> None:
    path = tmp_path / "grub.cfg"
    path.write_text(script)
    assert subprocess.run(["grub-script-check", str(path)], capture_output=True, check=False).returncode != 0
    result = grubcfg.next_boot(script.encode(), "/boot/grub/grub.cfg")
    assert result.entry is None
    assert "GRUB cannot parse it" in result.why
