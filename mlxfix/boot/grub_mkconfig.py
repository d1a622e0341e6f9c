"""GRUB with grub-mkconfig and no update-grub wrapper (Arch, Gentoo, ...)."""

from __future__ import annotations

from typing import ClassVar

from mlxfix.boot.grub_base import GrubSetup


class GrubMkconfig(GrubSetup):
    name: ClassVar[str] = "grub"
    title: ClassVar[str] = "GRUB with grub-mkconfig (Arch, Gentoo, ...)"

    def regenerate(self) -> list[list[str]]:
        return [["grub-mkconfig", "-o", self.grub_cfg]]
