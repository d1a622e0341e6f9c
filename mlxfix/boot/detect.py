"""Which boot setup this host has: where its kernel command line lives and what regenerates it.

An edit that never reaches the kernel is worse than none, so detection looks at the evidence a careful
admin would (files first, then the boot tool's own status) and says what it found. Pure code: the
facts come in a Snapshot gathered by the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlxfix.boot import rpmdb
from mlxfix.boot.grub2 import Grub2, config_in_use
from mlxfix.boot.grub2_bls import Grub2Bls
from mlxfix.boot.grub_base import GRUB, GRUB_D, grub_evaluation, locate
from mlxfix.boot.grub_debian import GrubDebian
from mlxfix.boot.grub_mkconfig import GrubMkconfig
from mlxfix.boot.kernelcmdline import PATH as KERNEL_CMDLINE
from mlxfix.boot.proxmox_systemd_boot import ProxmoxSystemdBoot
from mlxfix.boot.systemd_boot import SystemdBoot, installed_kernels
from mlxfix.defaults.evaluate import Unknown
from mlxfix.errors import FileError, Refused, UsageError

if TYPE_CHECKING:
    from mlxfix.boot.setup import BootSetup
    from mlxfix.facts import Snapshot

__all__ = ["SETUPS", "detect", "gather_request", "recorded"]

PVE_UUIDS = "/etc/kernel/proxmox-boot-uuids"
EFI = "/sys/firmware/efi"
# EFI_GLOBAL_VARIABLE (UEFI spec, "Globally Defined Variables"), as efivarfs names its variables NAME-GUID.
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT = f"{EFI}/efivars/SecureBoot-{EFI_GLOBAL_VARIABLE}"
# Where boot loader entries live: $BOOT on the ESP or XBOOTLDR (the Boot Loader Specification).
LOADER_ENTRIES = ("/boot/loader/entries/*.conf", "/boot/efi/loader/entries/*.conf", "/efi/loader/entries/*.conf")

# Every boot setup mlxfix drives, by the name --boot-setup and the backups use.
SETUPS: dict[str, type[BootSetup]] = {
    cls.name: cls for cls in (GrubDebian, GrubMkconfig, Grub2, Grub2Bls, ProxmoxSystemdBoot, SystemdBoot)
}


TOOLS = (
    "update-grub",
    "grub-mkconfig",
    "grub2-mkconfig",
    "grubby",
    "grub2-reboot",
    "proxmox-boot-tool",
    "kernel-install",
    "bootctl",
    "rpm-ostree",
)


def gather_request() -> tuple[list[str], list[str], list[str], list[str]]:
    """What detection and planning read, in one batch: (files, listings, globs, tools)."""
    files = [
        GRUB,
        "/etc/default",  # (directories: whether anyone may add a file there)
        GRUB_D,
        "/etc/kernel",
        "/etc/os-release",
        KERNEL_CMDLINE,
        PVE_UUIDS,
        "/run/ostree-booted",
        "/boot/grub/grub.cfg",
        "/boot/grub2/grub.cfg",
        "/boot/grub2/grubenv",
        "/etc/kernel/install.conf",
        "/proc/cmdline",  # is a reboot still due for what is configured?
        SECURE_BOOT,
    ]
    listings = [
        GRUB_D,
        "/etc/pve",
        EFI,
        "/boot",
        "/boot/loader/entries",
        "/boot/efi/EFI",
        "/usr/lib/modules",
        "/usr/lib/modules/*",
        "/lib/modules",
        "/lib/modules/*",
        "/ostree",
        *rpmdb.DBPATHS,  # an RPM host: who owns the files is asked of rpm (see mlxfix.boot.rpmdb)
    ]
    globs = [f"{GRUB_D}/*.cfg", "/boot/efi/EFI/*/grub.cfg", *LOADER_ENTRIES]
    for cls in SETUPS.values():  # what the next boot gets, wherever each setup keeps it: the same batch
        more_files, more_listings, more_globs = cls.reads()
        files, listings, globs = [*files, *more_files], [*listings, *more_listings], [*globs, *more_globs]
    return list(dict.fromkeys(files)), list(dict.fromkeys(listings)), list(dict.fromkeys(globs)), list(TOOLS)


def _os_release(snap: Snapshot) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (snap.text("/etc/os-release") or "").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip().strip("\"'")
    return out


def _bls_enabled(snap: Snapshot) -> bool:
    """GRUB_ENABLE_BLSCFG as sh computes it; a value that cannot be known is refused, not guessed,
    where BLS is possible at all (entries or grubby on the host): it decides where the command line
    lives."""
    ev = grub_evaluation(snap)
    if ev is None:
        return False
    value = ev.value("GRUB_ENABLE_BLSCFG")
    bls_plausible = bool(snap.globs.get("/boot/loader/entries/*.conf")) or bool(snap.tools.get("grubby"))
    if not bls_plausible:
        return False  # no BLS entries, no grubby: whatever the file says, GRUB has no entries to read
    if isinstance(value, Unknown):
        path, line = locate(snap, value)
        raise Refused(
            f"cannot know whether GRUB uses BLS entries: GRUB_ENABLE_BLSCFG: {value.reason}",
            path=path,
            line=line,
            hint="set GRUB_ENABLE_BLSCFG=true or false plainly, or pass --boot-setup grub2-bls (or grub2)",
        )
    return value == "true"


def _secure_boot(snap: Snapshot) -> bool:
    """The SecureBoot EFI variable: four bytes of attributes, then 1 when Secure Boot is on."""
    data = snap.data(SECURE_BOOT)
    return data is not None and len(data) >= 5 and data[4] == 1


def _check_readable(snap: Snapshot) -> None:
    for path in (GRUB, KERNEL_CMDLINE):
        info = snap.files.get(path)
        if info is not None and not info.exists and info.error and "ermission" in info.error:
            raise FileError(f"cannot read it: {info.error} (run as root)", path=path)
        if info is not None and (info.exists or info.is_symlink) and info.data is None:
            raise FileError(info.problem() or "unreadable", path=path)
    for path in snap.globs.get(f"{GRUB_D}/*.cfg", []):
        info = snap.files[path]
        if info.exists and info.data is None:  # grub-mkconfig sources every existing *.cfg: it would fail or hang
            raise FileError(f"{info.problem()}: update-grub would fail or hang on it (it sources every grub.d/*.cfg)", path=path)


def detect(snap: Snapshot, override: str | None = None, param: str = "pci=realloc=off") -> BootSetup:
    """The boot setup of the host the snapshot was taken from; Refused when none is known (``param``
    is named in the advice of a refusal)."""
    _check_readable(snap)
    efi = snap.exists(EFI)
    osr = _os_release(snap)
    distro = osr.get("PRETTY_NAME") or osr.get("ID") or "unknown distribution"
    evidence = [f"/etc/os-release: {distro}", f"firmware: {'UEFI (' + EFI + ' exists)' if efi else 'BIOS (no ' + EFI + ')'}"]
    tools = {t for t, where in snap.tools.items() if where}
    kernels = installed_kernels(snap)

    if override is not None:
        return _forced(snap, override, evidence)

    ostree = [p for p in ("/run/ostree-booted", "/ostree") if snap.exists(p) or snap.listings.get(p) is not None]
    if ostree:
        raise Refused(
            f"this host boots an OSTree image ({' and '.join(ostree)} exist); its kernel arguments are managed by"
            " rpm-ostree, not by files mlxfix edits",
            hint=f"run: rpm-ostree kargs --append-if-missing={param}, then reboot",
        )

    status = snap.outputs.get("proxmox-boot-tool status", "")
    if snap.exists(PVE_UUIDS):
        evidence.append(f"{PVE_UUIDS} exists: the ESPs are managed by proxmox-boot-tool")
        uefi, grub_mode = "configured with: uefi" in status, "configured with: grub" in status
        if uefi and grub_mode:
            raise Refused(
                "proxmox-boot-tool status shows ESPs configured with uefi and with grub: one file cannot fix both",
                path=PVE_UUIDS,
                hint=f"add {param} to /etc/kernel/cmdline and to GRUB_CMDLINE_LINUX_DEFAULT, then: proxmox-boot-tool refresh",
            )
        mode = "uefi" if uefi else "grub" if grub_mode else None
        if status:
            evidence.append(f"proxmox-boot-tool status: {'configured with: ' + mode if mode else 'no mode reported'}")
        elif efi:
            evidence.append(
                "proxmox-boot-tool status gave nothing (not run under --root, or not installed): judged from the files"
            )
        if mode is None and efi and _secure_boot(snap):
            evidence.append("Secure Boot is on: proxmox-boot-tool boots with GRUB then (systemd-boot is not signed)")
        elif mode == "uefi" or (mode is None and efi and snap.exists(KERNEL_CMDLINE)):
            if not snap.exists(KERNEL_CMDLINE):
                raise Refused(
                    f"proxmox-boot-tool boots this host with systemd-boot, but {KERNEL_CMDLINE} does not exist",
                    path=KERNEL_CMDLINE,
                    hint=f"create it with the current options (from /proc/cmdline, without BOOT_IMAGE) plus {param}",
                )
            evidence.append(f"{KERNEL_CMDLINE} holds the command line; /etc/default/grub is not used")
            return ProxmoxSystemdBoot.found(snap, tuple(evidence))

    has_grub = snap.exists(GRUB)
    # proxmox-boot-tool that does not boot with systemd-boot boots with GRUB, whose grub.cfg it keeps on
    # the ESPs: a missing /boot/grub/grub.cfg and an installed kernel-install say nothing then.
    pve_grub = snap.exists(PVE_UUIDS)
    if pve_grub:
        evidence.append("proxmox-boot-tool boots this host with GRUB: GRUB_CMDLINE_LINUX_DEFAULT is what counts")
    systemd_boot = snap.exists(KERNEL_CMDLINE) and "kernel-install" in tools and not pve_grub
    grub_cfgs = ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", *snap.globs.get("/boot/efi/EFI/*/grub.cfg", [])]
    if has_grub and systemd_boot and not any(snap.exists(p) for p in grub_cfgs):
        evidence.append(f"{GRUB} exists, but there is no grub.cfg: GRUB is installed, not what boots")
        has_grub = False
    if has_grub:
        evidence.append(f"{GRUB} exists")
        if _bls_enabled(snap):
            evidence.append("GRUB_ENABLE_BLSCFG=true: kernel arguments live in the BLS entries")
            if "grubby" not in tools:
                raise Refused("GRUB uses BLS entries (GRUB_ENABLE_BLSCFG=true) but grubby is not installed", path=GRUB)
            return Grub2Bls.found(snap, tuple(evidence))
        if "update-grub" in tools:
            evidence.append("update-grub is installed")
            if snap.listings.get("/etc/pve") is not None or "proxmox-boot-tool" in tools:
                evidence.append("Proxmox VE (/etc/pve or proxmox-boot-tool); update-grub also runs proxmox-boot-tool refresh")
            return GrubDebian.found(snap, tuple(evidence))
        if "grub2-mkconfig" in tools:
            why = config_in_use(snap)[1]
            evidence.append(f"grub2-mkconfig is installed; {why}")
            return Grub2.found(snap, tuple(evidence))
        if "grub-mkconfig" in tools:
            evidence.append("grub-mkconfig is installed (no update-grub wrapper)")
            return GrubMkconfig.found(snap, tuple(evidence))
        evidence.append("but no update-grub, grub-mkconfig or grub2-mkconfig is installed")

    if systemd_boot:
        evidence.append(f"{KERNEL_CMDLINE} exists and kernel-install is installed")
        if not kernels:
            raise Refused(
                "systemd-boot host without installed kernels under /usr/lib/modules or /lib/modules", path=KERNEL_CMDLINE
            )
        return SystemdBoot.found(snap, tuple(evidence))
    if snap.exists(KERNEL_CMDLINE):
        evidence.append(f"{KERNEL_CMDLINE} exists, but kernel-install (which reads it) is not installed")

    entries = [p for g in LOADER_ENTRIES for p in snap.globs.get(g, [])]
    if entries:
        missing = "no /etc/default/grub, " + (
            f"and {KERNEL_CMDLINE} is read by no installed tool (kernel-install is not installed)"
            if snap.exists(KERNEL_CMDLINE)
            else f"no {KERNEL_CMDLINE}"
        )
        raise Refused(
            f"the kernel command line is only in the boot loader entries ({missing})",
            path=entries[0],
            hint=f"create /etc/kernel/cmdline with the current options plus {param}, or edit the entries by hand",
        )
    found = "; ".join(evidence)
    raise Refused(
        f"no boot setup mlxfix knows was found ({found})",
        hint=f"add {param} to the kernel command line with your boot loader's tool, or pass --boot-setup",
    )


def check_setup_name(name: str | None) -> None:
    """--boot-setup NAME, checked before anything is read."""
    if name is not None and name not in SETUPS:
        raise UsageError(f"unknown boot setup {name!r}: choose one of {', '.join(SETUPS)}")


def recorded(snap: Snapshot, name: str, why: str) -> BootSetup:
    """The boot setup a backup was made with, to undo it the same way: its files may be what the
    rollback puts back, so none of them has to be there now."""
    check_setup_name(name)
    return SETUPS[name].found(snap, (why,))


def _forced(snap: Snapshot, name: str, evidence: list[str]) -> BootSetup:
    """--boot-setup NAME: detection skipped, but not what that setup cannot do without."""
    check_setup_name(name)
    evidence.append(f"--boot-setup {name} given: detection skipped")
    cls = SETUPS[name]
    cls.require(snap)
    return cls.found(snap, tuple(evidence))
