"""A one-time boot for GRUB: a copy of the next boot's entry, with the parameter, in custom.cfg.

41_custom makes grub.cfg ``source ${config_directory}/custom.cfg`` at boot, so an entry written
there is in the menu without regenerating anything, and never the default. ``grub-editenv grubenv
set next_entry=mlxfix-trial`` arms it; 00_header's logic boots it once and clears next_entry with
``save_env`` before the kernel starts, whatever GRUB_DEFAULT is. That ``save_env`` is why /boot/grub
must be on a file system GRUB can write (its recordfail check knows which cannot), else the trial
would boot forever. Pure code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.boot.grubcfg import GrubEntry
    from mlxfix.facts import Snapshot

__all__ = ["BEGIN", "END", "TRIAL_ID", "copy_entry", "disarmed", "present", "strip", "unwritable", "with_block"]

TRIAL_ID = "mlxfix-trial"
BEGIN = "### BEGIN mlxfix trial: a one-time boot armed by mlxfix apply --trial; mlxfix apply or rollback removes it ###"
END = "### END mlxfix trial ###"
# 00_header's check_writable: what GRUB cannot write, so that save_env (and recordfail) cannot work.
UNWRITABLE_FS = frozenset({"btrfs", "cpiofs", "newc", "odc", "romfs", "squash4", "tarfs", "zfs"})
_BLOCK = re.compile(rb"(?:^|\n)" + re.escape(BEGIN.encode()) + rb"\n.*?" + re.escape(END.encode()) + rb"\n?", re.DOTALL)


def present(data: bytes | None) -> bool:
    return data is not None and _BLOCK.search(data) is not None


def strip(data: bytes) -> bytes:
    """custom.cfg without mlxfix's trial block (every other byte kept)."""
    return _BLOCK.sub(lambda m: b"\n" if m.group(0).startswith(b"\n") else b"", data)


def with_block(custom: bytes | None, block: str) -> bytes:
    """custom.cfg with the trial block at its end (replacing an earlier one)."""
    base = strip(custom) if custom else b""
    if base and not base.endswith(b"\n"):
        base += b"\n"
    return base + f"{BEGIN}\n{block}{END}\n".encode()


def _quote(text: str) -> str:
    """A GRUB single-quoted word (a quote inside is closed, escaped and reopened)."""
    return "'" + text.replace("'", "'\\''") + "'"


def copy_entry(text: str, entry: GrubEntry, add: list[str]) -> str:
    """The trial's menuentry: the body of ``entry`` as grub.cfg (or custom.cfg) has it, with its own
    title and id, ``add`` at the end of its linux line, and no ``savedefault`` (GRUB_SAVEDEFAULT
    would make the trial the saved default). Refused where the entry cannot be copied line for line."""
    start, end = entry.span
    lines = text.split("\n")
    where = f"{entry.path}:{start}"
    if not (0 < start < end <= len(lines)) or not entry.linux_line:
        raise Refused(f"cannot copy the entry {entry.name!r}: its block was not found", path=entry.path, line=start or None)
    head, tail = lines[start - 1].strip(), lines[end - 1].strip()
    if not head.startswith(("menuentry ", "menuentry\t")) or not head.endswith("{") or tail != "}":
        raise Refused(
            f"cannot copy the entry {entry.name!r} line for line: its menuentry does not start and end a line of its own",
            path=entry.path,
            line=start,
        )
    body = []
    for n in range(start + 1, end):
        line = lines[n - 1]
        words = line.split()
        if words and words[0] == "savedefault":
            continue
        if n == entry.linux_line:
            if line.rstrip().endswith("\\") or any(c in line for c in ";#&|"):
                raise Refused(
                    f"cannot add to the linux line of {entry.name!r}: it is continued or holds more than one command",
                    path=entry.path,
                    line=n,
                )
            line = line.rstrip() + " " + " ".join(add)
        body.append(line)
    title = entry.name.rsplit(">", 1)[-1]
    header = f"menuentry {_quote('mlxfix trial: ' + title)} --id {TRIAL_ID} {{"
    return "\n".join([f"# a copy of {where} ({entry.name}), with {' '.join(add)}", header, *body, "}"]) + "\n"


def disarmed(grubenv: bytes) -> bytes:
    """grubenv as it reads once ``next_entry=mlxfix-trial`` is unset (for the model only: grubenv is
    changed with grub-editenv, never written by hand)."""
    lines = grubenv.split(b"\n")
    return b"\n".join(ln for ln in lines if ln != f"next_entry={TRIAL_ID}".encode())


def unwritable(snap: Snapshot, directory: str) -> str:
    """Why GRUB could not write grubenv in ``directory`` at boot ("" when it can, as far as the
    mount table tells): a file system it has no write support for, or a volume it reads through an
    abstraction (device-mapper: LVM, LUKS; md RAID), as 00_header's recordfail check judges."""
    mounts = snap.text("/proc/mounts")
    if mounts is None:
        return ""
    best: tuple[str, str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        source, point, fstype = fields[0], fields[1].replace("\\040", " "), fields[2]
        inside = directory == point or directory.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[1])):
            best = (source, point, fstype)
    if best is None:
        return ""
    source, point, fstype = best
    if fstype in UNWRITABLE_FS:
        return f"{directory} is on {fstype} ({point}), which GRUB cannot write"
    if source.startswith(("/dev/mapper/", "/dev/dm-")):
        return f"{directory} is on {source} ({point}), a device-mapper volume (LVM or LUKS) GRUB cannot write"
    if re.match(r"/dev/md[0-9/_]", source):
        return f"{directory} is on {source} ({point}), a software RAID GRUB cannot write"
    return ""
