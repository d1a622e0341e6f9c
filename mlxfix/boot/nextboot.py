"""The three layers of the kernel command line, and what the next boot will really get.

1. **configured**: what the setup's regeneration will use (the grub variables as sh computes them,
   ``/etc/kernel/cmdline``), every token with the file and line it comes from;
2. **generated**: what the boot loader reads (grub.cfg's entries, BLS entries and grubenv, loader
   entries on the ESP) and which entry the next boot takes;
3. **running**: ``/proc/cmdline``.

An edit of layer 1 is worth something only when layer 2 follows: a stale grub.cfg, a value whose
newline splits GRUB's ``linux`` line, or a default entry that does not take the configured command
line all leave the next boot without the parameter. ``status`` shows the layers side by side, apply
reads layer 2 back after the regeneration. Pure code: a Snapshot comes in.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.errors import ExitCode

if TYPE_CHECKING:
    from mlxfix.boot.detect import BootSetup
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot

__all__ = [
    "STATE_EXIT",
    "Configured",
    "Entry",
    "Layers",
    "NextBoot",
    "Running",
    "layers",
    "request",
    "state_of",
]

# systemd's boot loader interface: every variable uses this vendor GUID (systemd.io/BOOT_LOADER_INTERFACE).
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = "/sys/firmware/efi/efivars"
LOADER_ENTRY_DEFAULT = f"{EFIVARS}/LoaderEntryDefault-{LOADER_GUID}"
LOADER_ENTRY_ONESHOT = f"{EFIVARS}/LoaderEntryOneShot-{LOADER_GUID}"
# Where the ESP (or XBOOTLDR) is mounted, as bootctl looks for it: its loader.conf and entries.
ESP_DIRS = ("/efi", "/boot", "/boot/efi")
GRUB_CFG = "/boot/grub/grub.cfg"
GRUB_ENV = "/boot/grub/grubenv"
PVE_ESP_MOUNTS = "/var/tmp/espmounts"  # noqa: S108 (where proxmox-boot-tool mounts its ESPs)

# The states of ``mlxfix status`` and their exit codes (README, "mlxfix status").
STATE_EXIT = {
    "in-effect": ExitCode.OK,
    "pending-reboot": ExitCode.PENDING_REBOOT,
    "drift": ExitCode.DRIFT,
    "absent": ExitCode.ABSENT,
}


class Token(NamedTuple):
    """One kernel parameter of a layer and where it comes from (``file:line``, or a generated entry)."""

    token: str
    origin: str


class Configured(NamedTuple):
    """Layer 1: what the regeneration uses (None: it cannot be known without running the files)."""

    cmdline: str | None
    source: str  # the files it comes from, or why it is not known
    tokens: tuple[Token, ...] = ()


class Entry(NamedTuple):
    """A boot entry the boot loader offers, with the command line the kernel gets from it."""

    name: str  # the title path (GRUB: "Advanced options for Debian>Debian, with Linux 6.1"), or the entry id
    source: str  # file:line of its definition
    cmdline: str | None  # None: the entry boots no Linux kernel, or its line cannot be known
    recovery: bool = False  # a recovery/rescue entry: it does not take GRUB_CMDLINE_LINUX_DEFAULT
    generated: bool = True  # made from the configured command line (not a custom or os-prober entry)


class NextBoot(NamedTuple):
    """Layer 2: the generated entries and the one the next boot takes."""

    read: bool  # False: this layer could not be read here (``why`` says why)
    entry: Entry | None = None
    why: str = ""  # how the entry was chosen, or why nothing was read
    entries: tuple[Entry, ...] = ()
    problems: tuple[str, ...] = ()  # what is wrong in the generated files (a split linux line...)

    def missing(self, param: Param) -> list[Entry]:
        """The entries that should carry ``param`` and do not: the next boot's, and every generated
        non-recovery entry (another kernel may be the default tomorrow)."""
        out = [e for e in self.entries if e.generated and not e.recovery and not _has(e.cmdline, param)]
        if self.entry is not None and not _has(self.entry.cmdline, param) and self.entry not in out:
            out.insert(0, self.entry)
        return out


class Running(NamedTuple):
    cmdline: str | None


class Layers(NamedTuple):
    configured: Configured
    next_boot: NextBoot
    running: Running

    def missing(self, param: Param) -> list[Entry]:
        return self.next_boot.missing(param)


def _has(line: str | None, param: Param) -> bool:
    return line is not None and cmdline.in_effect(line, param)


def state_of(lay: Layers, param: Param) -> tuple[str, list[str]]:
    """The state of ``param`` on this host and the warnings that qualify it.

    ``in-effect``: running and next boot have it; ``pending-reboot``: the next boot has it, the
    running kernel not yet; ``drift``: configured or running, but the next boot will not have it;
    ``absent``: nowhere. Where layer 2 cannot be read, the configured command line stands in for
    the next boot, and a warning says so."""
    warnings: list[str] = []
    running = _has(lay.running.cmdline, param)
    configured = _has(lay.configured.cmdline, param)
    nb = lay.next_boot
    if nb.read and nb.entry is not None:
        nxt = _has(nb.entry.cmdline, param)
    else:
        nxt = configured
        what = nb.why or "the generated boot entries could not be read"
        warnings.append(f"{what}; the next boot is judged by the configured command line")
    if running and nxt:
        return "in-effect", warnings
    if nxt:
        return "pending-reboot", warnings
    if configured or running:
        return "drift", warnings
    return "absent", warnings


# -- what to read --------------------------------------------------------------------------------------


def request(setup: BootSetup | None = None) -> tuple[list[str], list[str], list[str]]:
    """The files, listings and globs layer 2 needs, for the batched read (no extra round trip);
    with ``setup``, also its own grub.cfg (grub2's may be on the ESP)."""
    files = [
        *([grub_cfg_path(setup)] if setup is not None and setup.edits_grub else []),
        GRUB_CFG,
        GRUB_ENV,
        "/boot/grub/custom.cfg",
        "/boot/grub2/grub.cfg",
        "/boot/grub2/grubenv",
        "/boot/grub2/custom.cfg",
        LOADER_ENTRY_DEFAULT,
        LOADER_ENTRY_ONESHOT,
        *(f"{d}/loader/loader.conf" for d in ESP_DIRS),
    ]
    globs = [
        *(f"{d}/loader/entries/*.conf" for d in ESP_DIRS),
        "/boot/efi/EFI/*/grub.cfg",
        "/boot/efi/EFI/*/custom.cfg",
        f"{PVE_ESP_MOUNTS}/*/loader/entries/*.conf",
    ]
    return list(dict.fromkeys(files)), ["/sys/firmware/efi", PVE_ESP_MOUNTS], globs


# -- the layers ------------------------------------------------------------------------------------------


def layers(snap: Snapshot, setup: BootSetup) -> Layers:
    """The three layers of this host's kernel command line, as the snapshot shows them."""
    running = snap.text("/proc/cmdline")
    return Layers(
        configured(snap, setup), setup_next_boot(snap, setup), Running(running.strip() if running is not None else None)
    )


def configured(snap: Snapshot, setup: BootSetup) -> Configured:
    """Layer 1, with the origin of every token."""
    from mlxfix.boot import detect as bootsetup

    if setup.edits_grub:
        return _grub_configured(snap, setup)
    text = snap.text(bootsetup.KERNEL_CMDLINE)
    if text is None:
        return Configured(None, f"{bootsetup.KERNEL_CMDLINE} does not exist")
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            origin = f"{bootsetup.KERNEL_CMDLINE}:{n}"
            return Configured(line.strip(), bootsetup.KERNEL_CMDLINE, tuple(Token(t.text, origin) for t in cmdline.split(line)))
    return Configured("", bootsetup.KERNEL_CMDLINE)


def _grub_configured(snap: Snapshot, setup: BootSetup) -> Configured:
    """GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT, as grub-mkconfig joins them for normal
    entries (grub2-bls: GRUB_CMDLINE_LINUX, what new kernels' entries get)."""
    from mlxfix.boot.detect import grub_evaluation, grub_sources, locate
    from mlxfix.defaults.evaluate import Unknown

    sources = grub_sources(snap)
    ev = grub_evaluation(snap)
    where = "/etc/default/grub" + (" and grub.d" if len(sources) > 1 else "")
    if ev is None:
        return Configured(None, f"{where}: cannot be parsed")
    names = (
        ["GRUB_CMDLINE_LINUX"] if setup.variable == "GRUB_CMDLINE_LINUX" else ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"]
    )
    tokens: list[Token] = []
    texts: list[str] = []
    for name in names:
        b = ev.binding(name)
        if b is None:
            continue
        if isinstance(b.value, Unknown):
            path, line = locate(snap, b.value)
            return Configured(None, f"{path}:{line}: {name}: {b.value.reason}" if line else f"{path}: {name}: {b.value.reason}")
        runs = b.value
        text = "".join(r.text for r in runs)
        texts.append(text)
        fallback = f"{sources[b.file].path}:{sources[b.file].position(b.assign.start)[0]}" if b.assign is not None else where
        starts = []
        pos = 0
        for r in runs:
            starts.append(pos)
            pos += len(r.text)
        k = 0
        for t in cmdline.split(text):
            while k + 1 < len(runs) and starts[k + 1] <= t.start:
                k += 1
            run = runs[k] if runs else None
            if run is not None and run.literal is not None and 0 <= run.file < len(sources):
                origin = f"{sources[run.file].path}:{sources[run.file].position(run.literal.start)[0]}"
            else:
                origin = fallback
            tokens.append(Token(t.text, f"{origin} ({name})"))
    joined = " ".join(t for t in texts if t.strip()).strip()
    return Configured(joined, where, tuple(tokens))


def setup_next_boot(snap: Snapshot, setup: BootSetup) -> NextBoot:
    """Layer 2 for this setup."""
    if setup.name == "grub2-bls":
        return _bls(snap)
    if setup.edits_grub:
        return grub_next_boot(snap, setup)
    if setup.name == "proxmox-systemd-boot":
        return _proxmox_esps(snap)
    return _loader_entries(snap)


def grub_cfg_path(setup: BootSetup) -> str:
    """The grub.cfg the boot loader reads: the one the setup regenerates."""
    if setup.name in ("grub", "grub2") and setup.grub_cfg:
        return setup.grub_cfg
    return GRUB_CFG


def grub_next_boot(snap: Snapshot, setup: BootSetup) -> NextBoot:
    """GRUB: the generated grub.cfg, the entry its ``default`` (after grubenv's next_entry and
    saved_entry) picks, and that entry's ``linux`` line as the kernel gets it."""
    from mlxfix.boot import grubcfg

    path = grub_cfg_path(setup)
    data = snap.data(path)
    if data is None:
        info = snap.files.get(path)
        why = info.problem() if info is not None else "not read"
        return NextBoot(False, why=f"{path}: {why}")
    directory = path.rsplit("/", 1)[0]
    env_data = snap.data(f"{directory}/grubenv")
    env = grubcfg.parse_grubenv(env_data) if env_data is not None else None
    custom_path = f"{directory}/custom.cfg"
    custom = snap.data(custom_path)
    efi = snap.exists("/sys/firmware/efi")
    result = grubcfg.next_boot(data, path, env=env, custom=custom, custom_path=custom_path, platform="efi" if efi else "pc")
    entries = tuple(Entry(e.name, e.source, e.cmdline, e.recovery, e.generated) for e in result.entries if e.boots_linux)
    chosen = result.entry
    entry = Entry(chosen.name, chosen.source, chosen.cmdline, chosen.recovery, chosen.generated) if chosen is not None else None
    return NextBoot(True, entry, result.why, entries, tuple(result.problems))


def _bls(snap: Snapshot) -> NextBoot:
    """grub2-bls: the BLS entries (``$kernelopts`` from grubenv), saved_entry, else the newest
    non-rescue entry, as blscfg sorts them."""
    from mlxfix.boot import bls

    found = bls.entries(snap)
    if not found:
        return NextBoot(False, why=f"no BLS entries in {bls.ENTRIES.rsplit('/', 1)[0]}")
    entries = tuple(Entry(_entry_id(e.path), e.path, e.args, recovery="rescue" in _entry_id(e.path)) for e in found)
    chosen = bls.default_entry(snap)
    saved = bls.grubenv(snap).get("saved_entry", "").strip()
    if chosen is None:
        return NextBoot(True, None, "no entry to boot", entries)
    why = (
        f"saved_entry={saved} in {bls.GRUBENV}"
        if saved and _entry_id(chosen.path) == saved
        else "the newest kernel's entry (no saved_entry names another)"
    )
    entry = next(e for e in entries if e.source == chosen.path)
    return NextBoot(True, entry, why, entries)


def _entry_id(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".conf")


def _proxmox_esps(snap: Snapshot) -> NextBoot:
    """proxmox-boot-tool writes the loader entries on ESPs it mounts only while it runs."""
    found = snap.globs.get(f"{PVE_ESP_MOUNTS}/*/loader/entries/*.conf", [])
    if found:
        return _loader_entries(snap, found, f"{PVE_ESP_MOUNTS}/*/loader/loader.conf")
    return NextBoot(False, why="not read: the loader entries are on the ESPs proxmox-boot-tool mounts only while it runs")


def _efi_string(data: bytes | None) -> str:
    """An EFI variable holding a UTF-16 string: four bytes of attributes, then the text (NUL-ended)."""
    if data is None or len(data) < 6:
        return ""
    return data[4:].decode("utf-16-le", "replace").split("\x00", 1)[0].strip()


def _loader_entries(snap: Snapshot, paths: list[str] | None = None, conf_glob: str = "") -> NextBoot:
    """systemd-boot: the Type #1 entries on the ESP, in systemd-boot's menu order, and the default as
    it picks it: LoaderEntryOneShot, LoaderEntryDefault (bootctl set-default), loader.conf's
    ``default`` pattern, else the first entry of the menu."""
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
    import re

    parts = [p for p in re.split(r"(\d+)", text) if p]
    return tuple((0, -int(p)) if p.isdigit() else (1, "".join(chr(0x10FFFF - ord(c)) for c in p)) for p in parts)


def predict(entry_cmdline: str | None, before: str | None, after: str | None) -> str | None:
    """The command line an entry generated from ``before`` gets once it is generated from ``after``:
    the configured tokens replaced where they stand in the entry (None: they are not found there, so
    the entry is not made from them). GRUB ends a ``linux`` line at a newline: only what precedes the
    first one reaches the kernel."""
    if entry_cmdline is None or before is None or after is None:
        return None
    old = [t.text for t in cmdline.split(before.split("\n", 1)[0])]
    new = [t.text for t in cmdline.split(after.split("\n", 1)[0])]
    words = [t.text for t in cmdline.split(entry_cmdline)]
    if not old:
        at = next((i + 1 for i in range(len(words) - 1, -1, -1) if words[i] == "ro"), None)
        return None if at is None else " ".join([*words[:at], *new, *words[at:]])
    for i in range(len(words) - len(old), -1, -1):
        if words[i : i + len(old)] == old:
            return " ".join([*words[:i], *new, *words[i + len(old) :]])
    return None
