"""Which boot setup this host has: where its kernel command line lives and what regenerates it.

An edit that never reaches the kernel is worse than none, so detection looks at the evidence a careful
admin would (files first, then the boot tool's own status) and says what it found. Pure code: the
facts come in a Snapshot gathered by the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from mlxfix import grubfile
from mlxfix.errors import FileError, Refused, UsageError
from mlxfix.evaluate import evaluate

if TYPE_CHECKING:
    from mlxfix.evaluate import Evaluation
    from mlxfix.host import Snapshot

__all__ = ["SETUPS", "BootSetup", "detect", "gather_request"]

GRUB = "/etc/default/grub"
GRUB_D = "/etc/default/grub.d"
KERNEL_CMDLINE = "/etc/kernel/cmdline"
PVE_UUIDS = "/etc/kernel/proxmox-boot-uuids"
EFI = "/sys/firmware/efi"

# name -> (title, where the command line lives)
SETUPS: dict[str, tuple[str, str]] = {
    "grub-debian": ("GRUB on Debian, Ubuntu or Proxmox VE (update-grub)", "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub"),
    "grub": ("GRUB with grub-mkconfig (Arch, Gentoo, ...)", "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub"),
    "grub2": ("GRUB 2 without BLS (grub2-mkconfig: CentOS 7, openSUSE, ...)", "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub"),
    "grub2-bls": (
        "GRUB 2 with Boot Loader Spec entries (Fedora, RHEL 8/9 and rebuilds)",
        "the BLS entries (grubby), and GRUB_CMDLINE_LINUX in /etc/default/grub for new kernels",
    ),
    "proxmox-systemd-boot": ("Proxmox VE with systemd-boot (proxmox-boot-tool)", "/etc/kernel/cmdline"),
    "systemd-boot": ("systemd-boot with kernel-install", "/etc/kernel/cmdline"),
}


class BootSetup(NamedTuple):
    """A detected (or requested) boot setup and the evidence for it."""

    name: str
    evidence: tuple[str, ...]
    grub_cfg: str | None = None  # for grub/grub2: the grub.cfg in use
    kernels: tuple[tuple[str, ...], ...] = ()  # for systemd-boot: (version, image, initrd...) per kernel

    @property
    def title(self) -> str:
        return SETUPS[self.name][0]

    @property
    def location(self) -> str:
        return SETUPS[self.name][1]

    @property
    def edits_grub(self) -> bool:
        return self.name.startswith("grub")

    @property
    def variable(self) -> str:
        """The grub variable that carries the parameter in this setup."""
        return "GRUB_CMDLINE_LINUX" if self.name == "grub2-bls" else "GRUB_CMDLINE_LINUX_DEFAULT"

    def regenerate(self) -> list[list[str]]:
        """The commands that turn the edited files into the boot configuration (not grubby's)."""
        if self.name == "grub-debian":
            return [["update-grub"]]
        if self.name == "grub":
            return [["grub-mkconfig", "-o", self.grub_cfg or "/boot/grub/grub.cfg"]]
        if self.name == "grub2":
            return [["grub2-mkconfig", "-o", self.grub_cfg or "/boot/grub2/grub.cfg"]]
        if self.name == "proxmox-systemd-boot":
            return [["proxmox-boot-tool", "refresh"]]
        if self.name == "systemd-boot":
            return [["kernel-install", "add", *k] for k in self.kernels]
        return []


TOOLS = (
    "update-grub",
    "grub-mkconfig",
    "grub2-mkconfig",
    "grubby",
    "proxmox-boot-tool",
    "kernel-install",
    "bootctl",
    "rpm-ostree",
)


def gather_request() -> tuple[list[str], list[str], list[str], list[str]]:
    """What detection and planning read, in one batch: (files, listings, globs, tools)."""
    files = [
        GRUB,
        "/etc/os-release",
        KERNEL_CMDLINE,
        PVE_UUIDS,
        "/run/ostree-booted",
        "/boot/grub/grub.cfg",
        "/boot/grub2/grub.cfg",
        "/boot/grub2/grubenv",
        "/etc/kernel/install.conf",
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
        "/ostree",
    ]
    globs = [f"{GRUB_D}/*.cfg", "/boot/efi/EFI/*/grub.cfg", "/boot/loader/entries/*.conf"]
    return files, listings, globs, list(TOOLS)


def grub_sources(snap: Snapshot) -> list[grubfile.GrubFile]:
    """/etc/default/grub, then grub.d/*.cfg in the order grub-mkconfig sources them; parsed once per
    snapshot (detection, the plan and the configured command line all ask)."""
    inputs = [(path, d) for path in (GRUB, *snap.globs.get(f"{GRUB_D}/*.cfg", [])) if (d := snap.data(path)) is not None]
    memo = snap.derived.get("grub_sources")
    if memo is not None and len(memo[0]) == len(inputs) and all(a[1] is b[1] for a, b in zip(memo[0], inputs, strict=True)):
        return list(memo[1])
    sources = [grubfile.parse(d, path) for path, d in inputs]
    snap.derived["grub_sources"] = (inputs, sources)
    snap.derived.pop("grub_evaluation", None)
    return list(sources)


def grub_evaluation(snap: Snapshot) -> Evaluation | None:
    """What sh computes from the grub files (None without files, or when one does not parse); once."""
    sources = grub_sources(snap)
    if not sources or any(s.error for s in sources):
        return None
    if "grub_evaluation" not in snap.derived:
        # The two variables an edit may change: checkpoints before them let the check of an edit
        # re-evaluate only what follows it.
        snap.derived["grub_evaluation"] = evaluate(sources, watch={"GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LINUX"})
    ev: Evaluation = snap.derived["grub_evaluation"]
    return ev


def _os_release(snap: Snapshot) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (snap.text("/etc/os-release") or "").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip().strip("\"'")
    return out


def _bls_enabled(snap: Snapshot) -> bool:
    ev = grub_evaluation(snap)
    return ev is not None and ev.value("GRUB_ENABLE_BLSCFG") == "true"


def _grub2_cfg(snap: Snapshot, efi: bool) -> tuple[str, str]:
    """The grub.cfg grub2 reads: on EFI a full config under /boot/efi/EFI/<vendor>/ (not the stub that
    newer Fedora/RHEL keep there, which only points at /boot/grub2/grub.cfg)."""
    if efi:
        for path in snap.globs.get("/boot/efi/EFI/*/grub.cfg", []):
            text = snap.text(path) or ""
            if "configfile" not in text or "menuentry" in text or "blscfg" in text:
                return path, f"{path} is the configuration the EFI loader reads"
    return "/boot/grub2/grub.cfg", "/boot/grub2/grub.cfg is the configuration in use"


def _kernels(snap: Snapshot) -> tuple[tuple[str, ...], ...]:
    """Installed kernels as kernel-install takes them: (version, image, initrd if any). The image is
    /usr/lib/modules/VERSION/vmlinuz (Fedora, Arch) or /boot/vmlinuz-VERSION (Debian)."""
    boot = set(snap.listings.get("/boot") or [])
    found = []
    for version in snap.listings.get("/usr/lib/modules") or []:
        if version.startswith("."):
            continue
        modules = snap.listings.get(f"/usr/lib/modules/{version}") or []
        if "vmlinuz" in modules:
            image = f"/usr/lib/modules/{version}/vmlinuz"
        elif f"vmlinuz-{version}" in boot:
            image = f"/boot/vmlinuz-{version}"
        else:
            continue
        initrds = [f"/boot/{n}" for n in (f"initrd.img-{version}", f"initramfs-{version}.img") if n in boot]
        found.append((version, image, *initrds[:1]))
    return tuple(found)


def detect(snap: Snapshot, override: str | None = None) -> BootSetup:
    """The boot setup of the host the snapshot was taken from; Refused when none is known."""
    for path in (GRUB, KERNEL_CMDLINE):
        info = snap.files.get(path)
        if info is not None and not info.exists and info.error and "ermission" in info.error:
            raise FileError(f"cannot read it: {info.error} (run as root)", path=path)
        if info is not None and (info.exists or info.is_symlink) and info.data is None:
            raise FileError(info.problem() or "unreadable", path=path)
    for path in snap.globs.get(f"{GRUB_D}/*.cfg", []):
        info = snap.files[path]
        if info.exists and info.data is None:  # grub-mkconfig sources every existing *.cfg: it would fail or hang
            raise FileError(f"{info.problem()}: update-grub would fail on it (it sources every grub.d/*.cfg)", path=path)
    efi = snap.exists(EFI)
    osr = _os_release(snap)
    distro = osr.get("PRETTY_NAME") or osr.get("ID") or "unknown distribution"
    evidence = [f"/etc/os-release: {distro}", f"firmware: {'UEFI (' + EFI + ' exists)' if efi else 'BIOS (no ' + EFI + ')'}"]
    tools = {t for t, where in snap.tools.items() if where}
    kernels = _kernels(snap)

    if override is not None:
        if override not in SETUPS:
            raise UsageError(f"unknown boot setup {override!r}: choose one of {', '.join(SETUPS)}")
        evidence.append(f"--boot-setup {override} given: detection skipped")
        cfg = "/boot/grub/grub.cfg" if override == "grub" else _grub2_cfg(snap, efi)[0]
        return BootSetup(override, tuple(evidence), grub_cfg=cfg, kernels=kernels)

    if snap.exists("/run/ostree-booted") or snap.listings.get("/ostree") is not None:
        raise Refused(
            "this host boots an OSTree image; its kernel arguments are managed by rpm-ostree, not by files mlxfix edits",
            hint="run: rpm-ostree kargs --append-if-missing=pci=realloc=off, then reboot",
        )

    status = snap.outputs.get("proxmox-boot-tool status", "")
    if snap.exists(PVE_UUIDS):
        evidence.append(f"{PVE_UUIDS} exists: the ESPs are managed by proxmox-boot-tool")
        mode = "uefi" if "configured with: uefi" in status else "grub" if "configured with: grub" in status else None
        if status:
            evidence.append(f"proxmox-boot-tool status: {'configured with: ' + mode if mode else 'no mode reported'}")
        if mode == "uefi" or (mode is None and efi and snap.exists(KERNEL_CMDLINE)):
            evidence.append(f"{KERNEL_CMDLINE} holds the command line; /etc/default/grub is not used")
            return BootSetup("proxmox-systemd-boot", tuple(evidence))

    has_grub = snap.exists(GRUB)
    if has_grub:
        evidence.append(f"{GRUB} exists")
        if _bls_enabled(snap):
            evidence.append("GRUB_ENABLE_BLSCFG=true: kernel arguments live in the BLS entries")
            if "grubby" not in tools:
                raise Refused("GRUB uses BLS entries (GRUB_ENABLE_BLSCFG=true) but grubby is not installed", path=GRUB)
            return BootSetup("grub2-bls", tuple(evidence))
        if "update-grub" in tools:
            evidence.append("update-grub is installed")
            if snap.listings.get("/etc/pve") is not None or "proxmox-boot-tool" in tools:
                evidence.append("Proxmox VE (/etc/pve or proxmox-boot-tool); update-grub also runs proxmox-boot-tool refresh")
            return BootSetup("grub-debian", tuple(evidence))
        if "grub2-mkconfig" in tools:
            cfg, why = _grub2_cfg(snap, efi)
            evidence.append(f"grub2-mkconfig is installed; {why}")
            return BootSetup("grub2", tuple(evidence), grub_cfg=cfg)
        if "grub-mkconfig" in tools:
            evidence.append("grub-mkconfig is installed (no update-grub wrapper)")
            return BootSetup("grub", tuple(evidence), grub_cfg="/boot/grub/grub.cfg")

    if snap.exists(KERNEL_CMDLINE) and ({"kernel-install", "bootctl"} & tools):
        evidence.append(f"{KERNEL_CMDLINE} exists and kernel-install/bootctl is installed")
        if not kernels:
            raise Refused("systemd-boot host without installed kernels under /usr/lib/modules", path=KERNEL_CMDLINE)
        return BootSetup("systemd-boot", tuple(evidence), kernels=kernels)

    entries = snap.globs.get("/boot/loader/entries/*.conf", [])
    if entries:
        raise Refused(
            "the kernel command line is only in the boot loader entries (no /etc/default/grub, no /etc/kernel/cmdline)",
            path=entries[0],
            hint="create /etc/kernel/cmdline with the current options plus pci=realloc=off, or edit the entries by hand",
        )
    found = "; ".join(evidence)
    raise Refused(
        f"no boot setup mlxfix knows was found ({found})",
        hint="add pci=realloc=off to the kernel command line with your boot loader's tool, or pass --boot-setup",
    )
