"""Which boot setup this host has: where its kernel command line lives and what regenerates it.

An edit that never reaches the kernel is worse than none, so detection looks at the evidence a careful
admin would (files first, then the boot tool's own status) and says what it found. Pure code: the
facts come in a Snapshot gathered by the host.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from mlxfix.defaults import grubfile
from mlxfix.defaults.evaluate import Unknown, evaluate
from mlxfix.errors import FileError, Refused, UsageError

if TYPE_CHECKING:
    from mlxfix.defaults.evaluate import Evaluation
    from mlxfix.facts import Snapshot

__all__ = ["SETUPS", "BootSetup", "detect", "gather_request"]

GRUB = "/etc/default/grub"
GRUB_D = "/etc/default/grub.d"
KERNEL_CMDLINE = "/etc/kernel/cmdline"
PVE_UUIDS = "/etc/kernel/proxmox-boot-uuids"
EFI = "/sys/firmware/efi"
# EFI_GLOBAL_VARIABLE (UEFI spec, "Globally Defined Variables"), as efivarfs names its variables NAME-GUID.
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT = f"{EFI}/efivars/SecureBoot-{EFI_GLOBAL_VARIABLE}"
# Where boot loader entries live: $BOOT on the ESP or XBOOTLDR (the Boot Loader Specification).
LOADER_ENTRIES = ("/boot/loader/entries/*.conf", "/boot/efi/loader/entries/*.conf", "/efi/loader/entries/*.conf")

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
    ]
    globs = [f"{GRUB_D}/*.cfg", "/boot/efi/EFI/*/grub.cfg", *LOADER_ENTRIES]
    from mlxfix.boot import nextboot  # what the next boot gets: read in the same batch

    more_files, more_listings, more_globs = nextboot.request()
    files = list(dict.fromkeys([*files, *more_files]))
    listings = list(dict.fromkeys([*listings, *more_listings]))
    globs = list(dict.fromkeys([*globs, *more_globs]))
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


def locate(snap: Snapshot, value: Unknown) -> tuple[str, int | None]:
    """The file and line an unknowable value comes from (the main file when it has no place)."""
    sources = grub_sources(snap)
    if 0 <= value.file < len(sources):
        f = sources[value.file]
        return f.path, f.position(value.pos)[0] if value.pos >= 0 else None
    return GRUB, None


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


def _grub2_cfg(snap: Snapshot, efi: bool) -> tuple[str, str]:
    """The grub.cfg grub2 reads: on EFI a full config under /boot/efi/EFI/<vendor>/ (not the stub that
    newer Fedora/RHEL keep there, which only points at /boot/grub2/grub.cfg)."""
    if efi:
        for path in snap.globs.get("/boot/efi/EFI/*/grub.cfg", []):
            text = snap.text(path) or ""
            # A stub (Fedora's configfile, openSUSE's source) only points at /boot/grub2/grub.cfg.
            stub = re.search(r"^\s*(configfile|source)\b", text, re.MULTILINE) is not None
            if not stub or "menuentry" in text or "blscfg" in text:
                return path, f"{path} is the configuration the EFI loader reads"
    return "/boot/grub2/grub.cfg", "/boot/grub2/grub.cfg is the configuration in use"


def _kernels(snap: Snapshot) -> tuple[tuple[str, ...], ...]:
    """Installed kernels as kernel-install takes them: (version, image, initrd if any). The image is
    /usr/lib/modules/VERSION/vmlinuz (Fedora, Arch) or /boot/vmlinuz-VERSION (Debian)."""
    boot = set(snap.listings.get("/boot") or [])
    found = []
    seen = set()
    for base in ("/usr/lib/modules", "/lib/modules"):  # /lib/modules: a host without merged /usr
        for version in snap.listings.get(base) or []:
            if not version.startswith(".") and version not in seen:
                seen.add(version)
                found.extend(_kernel(snap, boot, base, version))
    return tuple(found)


def _kernel(snap: Snapshot, boot: set[str], base: str, version: str) -> list[tuple[str, ...]]:
    modules = snap.listings.get(f"{base}/{version}") or []
    if "vmlinuz" in modules:
        image = f"{base}/{version}/vmlinuz"
    elif f"vmlinuz-{version}" in boot:
        image = f"/boot/vmlinuz-{version}"
    else:
        return []
    initrds = [f"/boot/{n}" for n in (f"initrd.img-{version}", f"initramfs-{version}.img") if n in boot]
    return [(version, image, *initrds[:1])]


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
            raise FileError(f"{info.problem()}: update-grub would fail on it (it sources every grub.d/*.cfg)", path=path)


def detect(snap: Snapshot, override: str | None = None, param: str = "pci=realloc=off") -> BootSetup:
    """The boot setup of the host the snapshot was taken from; Refused when none is known (``param``
    is named in the advice of a refusal)."""
    _check_readable(snap)
    efi = snap.exists(EFI)
    osr = _os_release(snap)
    distro = osr.get("PRETTY_NAME") or osr.get("ID") or "unknown distribution"
    evidence = [f"/etc/os-release: {distro}", f"firmware: {'UEFI (' + EFI + ' exists)' if efi else 'BIOS (no ' + EFI + ')'}"]
    tools = {t for t, where in snap.tools.items() if where}
    kernels = _kernels(snap)

    if override is not None:
        return _forced(snap, override, evidence, efi, kernels)

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
            return BootSetup("proxmox-systemd-boot", tuple(evidence))

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
        evidence.append("but no update-grub, grub-mkconfig or grub2-mkconfig is installed")

    if systemd_boot:
        evidence.append(f"{KERNEL_CMDLINE} exists and kernel-install is installed")
        if not kernels:
            raise Refused(
                "systemd-boot host without installed kernels under /usr/lib/modules or /lib/modules", path=KERNEL_CMDLINE
            )
        return BootSetup("systemd-boot", tuple(evidence), kernels=kernels)
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
    efi = snap.exists(EFI)
    cfg = "/boot/grub/grub.cfg" if name == "grub" else _grub2_cfg(snap, efi)[0]
    return BootSetup(name, (why,), grub_cfg=cfg, kernels=_kernels(snap))


def _forced(snap: Snapshot, name: str, evidence: list[str], efi: bool, kernels: tuple[tuple[str, ...], ...]) -> BootSetup:
    """--boot-setup NAME: detection skipped, but not what that setup cannot do without."""
    check_setup_name(name)
    evidence.append(f"--boot-setup {name} given: detection skipped")
    if name in ("systemd-boot", "proxmox-systemd-boot") and not snap.exists(KERNEL_CMDLINE):
        raise Refused(f"--boot-setup {name}: {KERNEL_CMDLINE} does not exist", path=KERNEL_CMDLINE)
    if name == "systemd-boot" and not kernels:
        raise Refused(
            "--boot-setup systemd-boot: no installed kernel under /usr/lib/modules or /lib/modules for kernel-install to add",
            path=KERNEL_CMDLINE,
        )
    if name.startswith("grub") and not snap.exists(GRUB):
        raise Refused(f"--boot-setup {name}: {GRUB} does not exist", path=GRUB)
    cfg = "/boot/grub/grub.cfg" if name == "grub" else _grub2_cfg(snap, efi)[0]
    return BootSetup(name, tuple(evidence), grub_cfg=cfg, kernels=kernels)
