"""Proxmox VE booting with systemd-boot through proxmox-boot-tool: line 1 of /etc/kernel/cmdline is
copied, as it is, into the loader entries of every ESP it manages (``proxmox-boot-tool refresh``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mlxfix.boot.kernelcmdline import PATH, KernelCmdlineSetup
from mlxfix.boot.systemd_boot import SystemdBoot, loader_entries
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.boot.nextboot import NextBoot
    from mlxfix.boot.setup import Trial
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot

PVE_ESP_MOUNTS = "/var/tmp/espmounts"  # noqa: S108 (where proxmox-boot-tool mounts its ESPs)


class ProxmoxSystemdBoot(KernelCmdlineSetup):
    name: ClassVar[str] = "proxmox-systemd-boot"
    title: ClassVar[str] = "Proxmox VE with systemd-boot (proxmox-boot-tool)"
    first_line_only: ClassVar[bool] = True  # proxmox-boot-tool's get_first_line

    @classmethod
    def reads(cls) -> tuple[list[str], list[str], list[str]]:
        files, listings, globs = SystemdBoot.reads()
        return (
            files,
            [*listings, PVE_ESP_MOUNTS],
            [*globs, f"{PVE_ESP_MOUNTS}/*/loader/entries/*.conf", f"{PVE_ESP_MOUNTS}/*/loader/loader.conf"],
        )

    def regenerate(self) -> list[list[str]]:
        return [["proxmox-boot-tool", "refresh"]]

    def missing_root(self) -> None:
        raise Refused(  # proxmox-boot-tool copies it as it is: no root=, no boot
            f"{PATH} has no root= parameter: Proxmox VE boots from it as it is, and would not find its root",
            path=PATH,
            hint="put the current options in it first (from /proc/cmdline, without BOOT_IMAGE), then run mlxfix again",
        )

    def plan_trial(self, snap: Snapshot, param: Param) -> Trial | None:
        """Refused, with why: nothing proxmox-boot-tool offers boots a command line once."""
        del snap, param
        raise Refused(
            "a one-time boot (--trial) cannot be armed safely on Proxmox VE with systemd-boot: the loader entries"
            " are on the ESPs of /etc/kernel/proxmox-boot-uuids, which proxmox-boot-tool mounts only while it runs"
            " and rewrites from /etc/kernel/cmdline at every refresh (each kernel update runs one), so a trial"
            " entry would be written behind its back onto the disks the default boot reads, and removed by the"
            " next refresh; its own one-boot switch (kernel pin --next-boot) picks a kernel, not a command line",
            hint="apply without --trial (the default boot changes; mlxfix rollback undoes it), with console access at hand",
        )

    def next_boot(self, snap: Snapshot) -> NextBoot:
        """proxmox-boot-tool writes the loader entries on ESPs it mounts only while it runs."""
        from mlxfix.boot.nextboot import NextBoot

        found = snap.globs.get(f"{PVE_ESP_MOUNTS}/*/loader/entries/*.conf", [])
        if found:
            return loader_entries(snap, found, f"{PVE_ESP_MOUNTS}/*/loader/loader.conf")
        return NextBoot(False, why="not read: the loader entries are on the ESPs proxmox-boot-tool mounts only while it runs")
