"""systemd-boot with kernel-install: /etc/kernel/cmdline goes into a Type #1 loader entry per kernel
on the ESP (or XBOOTLDR), and systemd-boot picks the default as the Boot Loader Interface says."""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, ClassVar, Self

from mlxfix.boot.kernelcmdline import PATH, KernelCmdlineSetup
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.boot.nextboot import NextBoot
    from mlxfix.facts import Snapshot

# systemd's boot loader interface: every variable uses this vendor GUID (systemd.io/BOOT_LOADER_INTERFACE).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = "/sys/firmware/efi/efivars"
LOADER_ENTRY_DEFAULT = f"{EFIVARS}/LoaderEntryDefault-{LOADER_GUID}"
LOADER_ENTRY_ONESHOT = f"{EFIVARS}/LoaderEntryOneShot-{LOADER_GUID}"
# Where the ESP (or XBOOTLDR) is mounted, as bootctl looks for it: its loader.conf and entries.
ESP_DIRS = ("/efi", "/boot", "/boot/efi")


def installed_kernels(snap: Snapshot) -> tuple[tuple[str, ...], ...]:
    """Installed kernels as kernel-install takes them: (version, image, initrd if any). The image is
    /usr/lib/modules/VERSION/vmlinuz (Fedora, Arch) or /boot/vmlinuz-VERSION (Debian)."""
    boot = set(snap.listings.get("/boot") or [])
    found: list[tuple[str, ...]] = []
    seen = set()
    for base in ("/usr/lib/modules", "/lib/modules"):  # /lib/modules: a host without merged /usr
        for version in snap.listings.get(base) or []:
            if not version.startswith(".") and version not in seen:
                seen.add(version)
                modules = snap.listings.get(f"{base}/{version}") or []
                if "vmlinuz" in modules:
                    image = f"{base}/{version}/vmlinuz"
                elif f"vmlinuz-{version}" in boot:
                    image = f"/boot/vmlinuz-{version}"
                else:
                    continue
                initrds = [f"/boot/{n}" for n in (f"initrd.img-{version}", f"initramfs-{version}.img") if n in boot]
                found.append((version, image, *initrds[:1]))
    return tuple(found)


class SystemdBoot(KernelCmdlineSetup):
    name: ClassVar[str] = "systemd-boot"
    title: ClassVar[str] = "systemd-boot with kernel-install"

    def __init__(self, evidence: tuple[str, ...] = (), kernels: tuple[tuple[str, ...], ...] = ()) -> None:
        super().__init__(evidence)
        self.kernels = kernels  # (version, image, initrd...) per installed kernel

    @classmethod
    def found(cls, snap: Snapshot, evidence: tuple[str, ...]) -> Self:
        return cls(evidence, kernels=installed_kernels(snap))

    @classmethod
    def require(cls, snap: Snapshot) -> None:
        super().require(snap)
        if not installed_kernels(snap):
            raise Refused(
                "--boot-setup systemd-boot: no installed kernel under /usr/lib/modules or /lib/modules for kernel-install to add",
                path=PATH,
            )

    @classmethod
    def reads(cls) -> tuple[list[str], list[str], list[str]]:
        files = [LOADER_ENTRY_DEFAULT, LOADER_ENTRY_ONESHOT, *(f"{d}/loader/loader.conf" for d in ESP_DIRS)]
        return files, [], [f"{d}/loader/entries/*.conf" for d in ESP_DIRS]

    def regenerate(self) -> list[list[str]]:
        return [["kernel-install", "add", *k] for k in self.kernels]

    def next_boot(self, snap: Snapshot) -> NextBoot:
        return loader_entries(snap)


def _efi_string(data: bytes | None) -> str:
    """An EFI variable holding a UTF-16 string: four bytes of attributes, then the text (NUL-ended)."""
    if data is None or len(data) < 6:
        return ""
    return data[4:].decode("utf-16-le", "replace").split("\x00", 1)[0].strip()


def loader_entries(snap: Snapshot, paths: list[str] | None = None, conf_glob: str = "") -> NextBoot:
    """The Type #1 entries on the ESP, in systemd-boot's menu order, and the default as it picks it:
    LoaderEntryOneShot, LoaderEntryDefault (bootctl set-default), loader.conf's ``default`` pattern,
    else the first entry of the menu."""
    from mlxfix.boot.nextboot import Entry, NextBoot

    if paths is None:
        paths = [p for d in ESP_DIRS for p in snap.globs.get(f"{d}/loader/entries/*.conf", [])]
    if not paths:
        mounted = [d for d in ESP_DIRS if snap.exists(f"{d}/loader/loader.conf")]
        why = "no loader entries in " + (
            f"{mounted[0]}/loader/entries" if mounted else "/efi, /boot or /boot/efi (is the ESP mounted?)"
        )
        return NextBoot(False, why=why)
    parsed = []
    for path in paths:
        keys: dict[str, str] = {}
        options: list[str] = []
        for raw in (snap.text(path) or "").splitlines():
            key, _, value = raw.strip().partition(" ")
            if key == "options":
                options.append(value.strip())
            elif key and not key.startswith("#"):
                keys.setdefault(key, value.strip())
        ident = path.rsplit("/", 1)[-1]
        parsed.append((ident, keys, " ".join(o for o in options if o), path))
    parsed.sort(key=_menu_order)
    entries = tuple(
        Entry(ident, path, line if "linux" in keys else None, recovery="rescue" in ident or "recovery" in ident)
        for ident, keys, line, path in parsed
    )
    ids = [ident for ident, *_ in parsed]
    oneshot = _efi_string(snap.data(LOADER_ENTRY_ONESHOT))
    default_var = _efi_string(snap.data(LOADER_ENTRY_DEFAULT))
    pattern, where = "", ""
    confs = [f"{d}/loader/loader.conf" for d in ESP_DIRS] if not conf_glob else snap.globs.get(conf_glob, [])
    for conf in confs:
        for raw in (snap.text(conf) or "").splitlines():
            key, _, value = raw.strip().partition(" ")
            if key == "default" and value.strip():
                pattern, where = value.strip(), conf
    for candidate, why in (
        (oneshot, "LoaderEntryOneShot (a one-time boot is armed)"),
        (default_var, "LoaderEntryDefault (bootctl set-default)"),
        (pattern, f"default {pattern} in {where}"),
    ):
        if candidate:
            for i, ident in enumerate(ids):
                if fnmatch.fnmatchcase(ident, candidate) or fnmatch.fnmatchcase(ident.removesuffix(".conf"), candidate):
                    return NextBoot(True, entries[i], why, entries)
    return NextBoot(True, entries[0], "the first entry of systemd-boot's menu (the newest version)", entries)


def _menu_order(item: tuple[str, dict[str, str], str, str]) -> tuple[object, ...]:
    """systemd-boot's order: entries with a sort-key first (by sort-key, machine-id, version newest
    first), then the others by id, newest first."""
    ident, keys, _, _ = item
    key = keys.get("sort-key")
    if key is not None:
        return (0, key, keys.get("machine-id", ""), _descending(keys.get("version", "")), _descending(ident))
    return (1, "", "", (), _descending(ident))


def _descending(text: str) -> tuple[tuple[int, int | str], ...]:
    """A version key that sorts newest first (numbers compared as numbers)."""
    parts = [p for p in re.split(r"(\d+)", text) if p]
    return tuple((0, -int(p)) if p.isdigit() else (1, "".join(chr(0x10FFFF - ord(c)) for c in p)) for p in parts)
