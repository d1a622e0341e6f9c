"""GRUB 2 without Boot Loader Spec entries (grub2-mkconfig: CentOS 7, openSUSE, ...), whose grub.cfg
is on the ESP on EFI hosts of some distributions."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Self

from mlxfix.boot.grub_base import EFI, GrubSetup

if TYPE_CHECKING:
    from mlxfix.facts import Snapshot

GRUB2_CFG = "/boot/grub2/grub.cfg"


def config_in_use(snap: Snapshot) -> tuple[str, str]:
    """The grub.cfg grub2 reads, and why: on EFI a full config under /boot/efi/EFI/<vendor>/ (not the
    stub that newer Fedora/RHEL keep there, which only points at /boot/grub2/grub.cfg)."""
    if snap.exists(EFI):
        for path in snap.globs.get("/boot/efi/EFI/*/grub.cfg", []):
            text = snap.text(path) or ""
            # A stub (Fedora's configfile, openSUSE's source) only points at /boot/grub2/grub.cfg.
            stub = re.search(r"^\s*(configfile|source)\b", text, re.MULTILINE) is not None
            if not stub or "menuentry" in text or "blscfg" in text:
                return path, f"{path} is the configuration the EFI loader reads"
    return GRUB2_CFG, f"{GRUB2_CFG} is the configuration in use"


class Grub2(GrubSetup):
    name: ClassVar[str] = "grub2"
    title: ClassVar[str] = "GRUB 2 without BLS (grub2-mkconfig: CentOS 7, openSUSE, ...)"
    editenv: ClassVar[str] = "grub2-editenv"
    grub_cfg: str = GRUB2_CFG

    @classmethod
    def found(cls, snap: Snapshot, evidence: tuple[str, ...]) -> Self:
        return cls(evidence, grub_cfg=config_in_use(snap)[0])

    @classmethod
    def reads(cls) -> tuple[list[str], list[str], list[str]]:
        files, listings, globs = super().reads()
        files += [GRUB2_CFG, "/boot/grub2/grubenv", "/boot/grub2/custom.cfg"]
        return files, listings, [*globs, "/boot/efi/EFI/*/grub.cfg", "/boot/efi/EFI/*/custom.cfg"]

    def regenerate(self) -> list[list[str]]:
        return [["grub2-mkconfig", "-o", self.grub_cfg]]
