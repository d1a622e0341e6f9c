"""mlxfix's own drop-in, ``/etc/default/grub.d/zz-mlxfix.cfg``: where the grub variable cannot be
edited where it is set, it is appended to after every other file has set it.

Two cases need it. The effective value is one only sh can compute (an ``if`` that may change it, a
``$(...)``): no edit of an assignment is provably right, but a line read after all of them,
``GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} pci=realloc=off"``, puts the parameter
last on the linux line whatever came before, and the kernel takes the last pci=realloc setting. Or
the assignment lives in a package's conffile (kdump-tools', zfs's drop-in): an edit there makes dpkg
ask at the next upgrade, and taking the maintainer's version drops the fix silently.

Only Debian's grub-mkconfig sources ``/etc/default/grub.d/*.cfg`` (after the main file, in the
shell's glob order); the drop-in must sort after every .cfg there in every locale. Pure code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot

__all__ = ["DPKG_CONFFILES", "NAME", "content", "package_of", "refuse_unless_last"]

NAME = "zz-mlxfix.cfg"
DPKG_CONFFILES = "/var/lib/dpkg/info/*.conffiles"
MAX_CONFFILES = 1 << 20  # bytes of conffile lists read: more is not a dpkg database of this world


def content(variable: str, param: Param) -> bytes:
    """The whole drop-in: a comment that says what it is, and the one line that appends ``param``."""
    value = re.sub(r'([\\"$`])', r"\\\1", param.text)
    last = "the last pci=realloc setting" if param.is_pci else "the last value of a parameter it reads once"
    return (
        "# Written by mlxfix apply (mlxfix rollback removes it). grub-mkconfig sources the drop-ins after\n"
        f"# /etc/default/grub in order, and this one sorts last: the kernel takes {last}.\n"
        f'{variable}="${{{variable}}} {value}"\n'
    ).encode()


def _collation_keys(name: str) -> list[str]:
    """How a glob may order names: by bytes (C, POSIX), case-folded, and as glibc's locales compare
    them first (letters and digits only, case ignored)."""
    folded = name.casefold()
    return [name, folded, re.sub(r"[^0-9a-z]", "", folded)]


def refuse_unless_last(existing: list[str], directory: str) -> None:
    """Refuse unless ``NAME`` sorts after every other drop-in in every way a locale may sort them."""
    ours = _collation_keys(NAME)
    later = []
    for path in existing:
        name = path.rsplit("/", 1)[-1]
        if name == NAME:
            continue
        keys = _collation_keys(name)
        if any(theirs.encode("utf-8", "surrogateescape") >= mine.encode() for theirs, mine in zip(keys, ours, strict=True)):
            later.append(name)
    if later:
        raise Refused(
            f"mlxfix's drop-in {directory}/{NAME} would not be the last one grub-mkconfig reads in every locale:"
            f" {', '.join(sorted(later))} may sort after it",
            path=f"{directory}/{later[0]}",
            hint="add the parameter by hand, after every file that sets the variable",
        )


def conffiles(snap: Snapshot) -> dict[str, str]:
    """Every conffile dpkg knows of, with its package, from ``/var/lib/dpkg/info/*.conffiles`` (read in
    the first batched read; at most MAX_CONFFILES bytes of them are looked at)."""
    owners: dict[str, str] = {}
    budget = MAX_CONFFILES
    for path in snap.globs.get(DPKG_CONFFILES, []):
        data = snap.data(path)
        if data is None or budget <= 0:
            continue
        budget -= len(data)
        package = path.rsplit("/", 1)[-1].removesuffix(".conffiles").split(":", 1)[0]
        for line in data[:MAX_CONFFILES].decode("utf-8", "surrogateescape").splitlines():
            # A line is the path, or (dpkg >= 1.20) flags such as "remove-on-upgrade" and then the path.
            fields = line.split()
            if fields and fields[-1].startswith("/"):
                owners.setdefault(fields[-1], package)
    return owners


def package_of(snap: Snapshot, path: str) -> str | None:
    """The package whose conffile ``path`` is (dpkg), or None.

    /etc/default/grub itself never is: Debian's GRUB packages do not ship it as a dpkg conffile but
    generate it in their postinst from the template /usr/share/grub/default/grub and register it
    with ucf (/var/lib/grub/ucf; salsa.debian.org grub-team/grub merge requests 62 and 76 move that
    ucf ownership between grub-pc, grub-efi-* and grub-common), which merges the admin's changes
    three-way: it is the admin's file, and the place meant for the edit. (On this machine's Debian,
    grub2-common.conffiles lists only /etc/kernel/post*.d/zz-update-grub, and grub-common.conffiles
    /etc/default/grub.d/init-select.cfg: a drop-in can be a package's.)"""
    if path == "/etc/default/grub":
        return None
    if "dpkg_conffiles" not in snap.derived:
        snap.derived["dpkg_conffiles"] = conffiles(snap)
    owners: dict[str, str] = snap.derived["dpkg_conffiles"]
    return owners.get(path)
