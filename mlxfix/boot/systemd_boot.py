"""systemd-boot with kernel-install: /etc/kernel/cmdline goes into a Type #1 loader entry per kernel
on the ESP (or XBOOTLDR), and systemd-boot picks the default as the Boot Loader Interface says."""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, ClassVar, Self

from mlxfix.boot.kernelcmdline import PATH, KernelCmdlineSetup
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.backup import Manifest
    from mlxfix.boot.nextboot import NextBoot
    from mlxfix.boot.setup import Restore, Trial, TrialState
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot
    from mlxfix.steps import Command, FileWrite

# systemd's boot loader interface: every variable uses this vendor GUID (systemd.io/BOOT_LOADER_INTERFACE).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = "/sys/firmware/efi/efivars"
LOADER_ENTRY_DEFAULT = f"{EFIVARS}/LoaderEntryDefault-{LOADER_GUID}"
LOADER_ENTRY_ONESHOT = f"{EFIVARS}/LoaderEntryOneShot-{LOADER_GUID}"
# Where the ESP (or XBOOTLDR) is mounted, as bootctl looks for it: its loader.conf and entries.
ESP_DIRS = ("/efi", "/boot", "/boot/efi")
TRIAL_ENTRY = "mlxfix-trial.conf"  # apply --trial's loader entry (its id, for bootctl set-oneshot)


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

    # -- a one-time boot: a copied loader entry and LoaderEntryOneShot -------------------------------------

    def owns(self, path: str) -> bool:
        return super().owns(path) or path.endswith(f"/loader/entries/{TRIAL_ENTRY}")

    def regenerated_from(self, path: str) -> bool:
        return not path.endswith(f"/loader/entries/{TRIAL_ENTRY}")  # systemd-boot reads it itself

    def _trial_paths(self, snap: Snapshot) -> list[str]:
        return [p for d in ESP_DIRS for p in snap.globs.get(f"{d}/loader/entries/*.conf", []) if p.endswith(f"/{TRIAL_ENTRY}")]

    def without_trial(self, snap: Snapshot) -> Snapshot:
        import copy

        trial = set(self._trial_paths(snap))
        if not trial:
            return snap
        out = copy.copy(snap)
        out.globs = {g: [p for p in paths if p not in trial] for g, paths in snap.globs.items()}
        out.files = dict(snap.files)
        if _efi_string(snap.data(LOADER_ENTRY_ONESHOT)) == TRIAL_ENTRY:
            out.files.pop(LOADER_ENTRY_ONESHOT, None)
        out.derived = {}
        return out

    def plan_trial(self, snap: Snapshot, param: Param) -> Trial | None:
        """A copy of the next boot's loader entry with the parameter (and panic=10), armed with
        ``bootctl set-oneshot``: systemd-boot removes LoaderEntryOneShot when it boots it."""
        from mlxfix import cmdline
        from mlxfix.boot import bls
        from mlxfix.boot.setup import Trial, trial_words
        from mlxfix.steps import Command, FileWrite

        instead = "apply without --trial (the default boot changes; mlxfix rollback undoes it), with console access at hand"
        if not snap.exists("/sys/firmware/efi"):
            raise Refused("cannot arm a one-time boot: no EFI variables here (/sys/firmware/efi)", hint=instead)
        if not snap.tools.get("bootctl"):
            raise Refused("cannot arm a one-time boot: bootctl (which sets LoaderEntryOneShot) is not installed", hint=instead)
        if self._trial_paths(snap):
            if _efi_string(snap.data(LOADER_ENTRY_ONESHOT)) == TRIAL_ENTRY:
                return None  # armed already
            raise Refused(f"an earlier trial entry ({TRIAL_ENTRY}) is still there: run mlxfix rollback (or mlxfix apply) first")
        nb = loader_entries(snap)
        if not nb.read or nb.entry is None or nb.entry.cmdline is None:
            raise Refused(f"cannot arm a one-time boot: the next boot's loader entry is not known ({nb.why})", hint=instead)
        entry, line = nb.entry, nb.entry.cmdline
        if cmdline.in_effect(line, param):
            return None
        add = trial_words(param, line)
        text = snap.text(entry.source) or ""
        # (no sort-key, no version: sorted last, never the default by systemd-boot's order)
        data = bls.trial_copy(text, entry.source, add, drop=frozenset({"sort-key", "version"}))
        pinned = not nb.why.startswith("the first entry")  # a default set by loader.conf or LoaderEntryDefault
        if not pinned and not any(ln.strip().startswith("sort-key") for ln in text.splitlines()):
            # Then the menu order alone picks the default, by entry ids, and a new entry could come first.
            raise Refused(
                f"systemd-boot picks the default here by menu order alone ({entry.name} has no sort-key and no default"
                " is set): a trial entry could become the default",
                hint=f"pin the default first (bootctl set-default {entry.name}), then run mlxfix apply --trial again",
            )
        path = f"{entry.source.rsplit('/', 1)[0]}/{TRIAL_ENTRY}"
        # Proved on the same model of systemd-boot before anything is written: armed, it takes the trial
        # entry with the parameter; not armed, the default it takes now.
        globs = {g: sorted([*ps, path]) if path.startswith(g.split("*", 1)[0]) and g.endswith("*.conf") else ps
                 for g, ps in snap.globs.items()}  # fmt: skip
        after = snap.with_files({path: data})
        after.globs = globs
        normal = loader_entries(self.without_oneshot(after))
        if normal.entry is None or (normal.entry.name, normal.entry.cmdline) != (entry.name, entry.cmdline):
            took = normal.entry.name if normal.entry is not None else "none"
            raise Refused(
                f"with a trial entry, systemd-boot would no longer take {entry.name!r} by default (it would take {took!r}):"
                " the default is chosen by menu order here",
                hint=f"pin the default first (bootctl set-default {entry.name}), then run mlxfix apply --trial again",
            )
        info = snap.files.get(entry.source)
        write = FileWrite(
            path,
            b"",
            data,
            info.mode if info else 0o644,
            0,
            0,
            f"a one-time boot entry: {entry.name} with {' '.join(add)}",
            existed=False,
        )
        arm = Command(
            ("bootctl", "set-oneshot", TRIAL_ENTRY),
            "arm the one-time boot: systemd-boot boots it once, and removes LoaderEntryOneShot when it does",
            regenerates=False,
            undo=("bootctl", "set-oneshot", ""),
        )
        return Trial(
            entry=TRIAL_ENTRY,
            fallback=entry.name,
            cmdline=line + " " + " ".join(add),
            writes=(write,),
            commands=(arm,),
            notes=(f"the trial copies {entry.name} ({entry.source}); a normal boot still takes it",),
        )

    def without_oneshot(self, snap: Snapshot) -> Snapshot:
        out = snap.with_files({})
        out.files.pop(LOADER_ENTRY_ONESHOT, None)
        return out

    def trial_state(self, snap: Snapshot) -> TrialState | None:
        from mlxfix.boot.setup import TrialState

        paths = self._trial_paths(snap)
        if not paths:
            return None
        armed = _efi_string(snap.data(LOADER_ENTRY_ONESHOT)) == TRIAL_ENTRY
        options = " ".join(
            ln.strip()[8:].strip() for ln in (snap.text(paths[0]) or "").splitlines() if ln.strip().startswith("options ")
        )
        return TrialState(TRIAL_ENTRY, armed, options or None, paths[0])

    def trial_cleanup(self, snap: Snapshot) -> tuple[tuple[FileWrite, ...], tuple[Command, ...]]:
        from mlxfix.steps import Command, FileWrite

        writes = []
        for p in self._trial_paths(snap):
            info = snap.files.get(p)
            if info is not None and info.data is not None:
                writes.append(FileWrite(p, info.data, b"", info.mode, info.uid, info.gid, "remove the trial entry", removes=True))
        commands: tuple[Command, ...] = ()
        if _efi_string(snap.data(LOADER_ENTRY_ONESHOT)) == TRIAL_ENTRY:
            commands = (Command(("bootctl", "set-oneshot", ""), "disarm the trial boot", regenerates=False),)
        return tuple(writes), commands

    def plan_restore(self, snap: Snapshot, manifest: Manifest, stored: dict[str, bytes], param: Param, *, force: bool) -> Restore:
        """As for any setup, but a rollback never brings a trial entry back, and disarms one."""
        out = super().plan_restore(snap, manifest, stored, param, force=force)
        out.writes = [w for w in out.writes if w.removes or not w.path.endswith(f"/loader/entries/{TRIAL_ENTRY}")]
        cleanup, disarm = self.trial_cleanup(snap)
        out.writes += [w for w in cleanup if w.path not in {x.path for x in out.writes}]
        out.commands += list(disarm)
        return out


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
