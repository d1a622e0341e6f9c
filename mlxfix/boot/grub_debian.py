"""GRUB on Debian, Ubuntu and Proxmox VE: update-grub regenerates /boot/grub/grub.cfg (and, on
Proxmox VE, runs proxmox-boot-tool refresh for the ESPs it manages)."""

from __future__ import annotations

from typing import ClassVar

from mlxfix.boot.grub_base import GrubSetup


class GrubDebian(GrubSetup):
    name: ClassVar[str] = "grub-debian"
    title: ClassVar[str] = "GRUB on Debian, Ubuntu or Proxmox VE (update-grub)"
    sources_grub_d: ClassVar[bool] = True  # Debian's grub-mkconfig: /etc/default/grub, then grub.d/*.cfg

    def regenerate(self) -> list[list[str]]:
        return [["update-grub"]]
