"""The plan: the file writes and commands that apply or roll back the fix, computed once.

``--dry-run`` prints a plan; apply and rollback execute that very plan, so the two cannot disagree.
Pure code: a Snapshot of the host comes in, a Plan comes out.
"""

from __future__ import annotations

import difflib
import fnmatch
import shlex
from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.boot import bls, kernelcmdline, nextboot
from mlxfix.boot.detect import GRUB, GRUB_D, KERNEL_CMDLINE, BootSetup, grub_evaluation, grub_sources
from mlxfix.defaults.evaluate import Unknown
from mlxfix.defaults.grubedit import plan_grub_edit
from mlxfix.digest import sha256
from mlxfix.errors import FileError, Refused

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mlxfix.backup import Manifest, ManifestFile
    from mlxfix.cmdline import Param
    from mlxfix.defaults.evaluate import Evaluation
    from mlxfix.defaults.grubfile import GrubFile
    from mlxfix.facts import FileInfo, Snapshot

__all__ = ["Command", "FileWrite", "Plan", "ShellCheck", "make_apply_plan", "make_rollback_plan", "unified_diff"]


class FileWrite(NamedTuple):
    """Replace ``path`` (which holds ``before`` now) with ``after``, keeping mode and owner."""

    path: str
    before: bytes
    after: bytes
    mode: int
    uid: int
    gid: int
    why: str
    existed: bool = True

    @property
    def before_sha256(self) -> str:
        return sha256(self.before)

    @property
    def after_sha256(self) -> str:
        return sha256(self.after)

    def diff(self) -> str:
        return unified_diff(self.path, self.before, self.after)


class Command(NamedTuple):
    """A command of the plan: why it runs, and what undoes it when the apply must be reversed."""

    argv: tuple[str, ...]
    why: str
    regenerates: bool = True  # False: it changes state itself (grubby); True: it rebuilds from files

    def __str__(self) -> str:
        return shlex.join(self.argv)

    @property
    def atomic(self) -> bool:
        """Whether a failed run leaves the boot configuration as it was: grub-mkconfig (and update-grub,
        which runs it) writes grub.cfg.new and moves it into place only when every script succeeded."""
        return self.regenerates and self.argv[0] in ("update-grub", "grub-mkconfig", "grub2-mkconfig")


class ShellCheck(NamedTuple):
    """After writing: source ``paths`` with sh and expect ``variable`` to equal ``expected``."""

    paths: tuple[str, ...]
    variable: str
    expected: str


class Plan(NamedTuple):
    action: str  # "apply" or "rollback"
    param: str
    setup: BootSetup
    writes: tuple[FileWrite, ...] = ()
    commands: tuple[Command, ...] = ()
    check: ShellCheck | None = None
    before: str | None = None  # the configured kernel command line before and after
    after: str | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    backup_id: str | None = None  # rollback: the backup restored
    reason: str = ""
    target: str = ""  # the file (and line) whose setting is edited
    backup_only: tuple[FileInfo, ...] = ()  # files a command changes (grubby): saved, not written
    expected_entries: tuple[tuple[str, str], ...] = ()  # BLS entry -> its arguments after grubby
    drift: tuple[str, ...] = ()  # rollback: files changed after mlxfix wrote them (restoring needs --force)
    running_differs: bool = False  # /proc/cmdline is not yet what this plan configures (a reboot is due)
    left_to_admin: tuple[tuple[str, ...], ...] = ()  # --root: commands only the host itself can run
    finishing_backup: str | None = None  # apply: the backup of the interrupted apply this one finishes
    next_entry: tuple[str, str, str] | None = None  # the entry the next boot takes: name, file:line, why
    next_before: str | None = None  # its kernel command line now, and once regenerated from the edited files
    next_after: str | None = None
    next_unread: str = ""  # why the generated entries could not be read
    cmdline_unknown: str = ""  # why the configured command line cannot be known before the regeneration
    reapplies: bool = False  # rollback: the backup restored holds the parameter (it was saved by a rollback)

    @property
    def effect(self) -> str:
        """What the plan does to the parameter, in words: "applied", "rolled back" or, for a rollback
        that restores the backup of a rollback, "re-applied"."""
        if self.action == "apply":
            return "applied"
        return "re-applied" if self.reapplies else "rolled back"

    @property
    def changed(self) -> bool:
        return bool(self.writes) or any(not c.regenerates for c in self.commands)

    @property
    def reboot_required(self) -> bool:
        """A reboot is due: the plan changes what the next boot gets, or the running kernel does not
        have it yet (configured earlier, not rebooted since)."""
        return self.changed or self.running_differs


def unified_diff(path: str, before: bytes, after: bytes, context: int = 3) -> str:
    """A unified diff of two versions of a file, for people and for the JSON result.

    The lines both versions share at the start and at the end are matched as they are; only the
    middle goes to difflib, whose matching is quadratic in the worst case (a one-line edit of a
    1 MiB file: 0.45 s through difflib alone, a few ms this way).
    """
    # surrogateescape: a byte that is not UTF-8 (a Latin-1 comment) stays itself, so that the diff
    # printed applies to the file with patch(1); the JSON shows it as \xNN (see models.dump).
    a = _lines(before.decode("utf-8", "surrogateescape"))
    b = _lines(after.decode("utf-8", "surrogateescape"))
    head, limit = 0, min(len(a), len(b))
    while head < limit and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < limit - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, head, 0, head)] if head else []
    middle = difflib.SequenceMatcher(None, a[head : len(a) - tail], b[head : len(b) - tail]).get_opcodes()
    ops += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle]
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    for k in range(len(ops) - 1, 0, -1):  # adjacent unchanged stretches are one
        if ops[k][0] == ops[k - 1][0] == "equal":
            ops[k - 1 : k + 1] = [("equal", ops[k - 1][1], ops[k][2], ops[k - 1][3], ops[k][4])]
    out: list[str] = []
    for group in _hunks(ops, context):
        if not out:
            out += [f"--- a{path}\n", f"+++ b{path}\n"]
        out.append(f"@@ -{_range(group[0][1], group[-1][2])} +{_range(group[0][3], group[-1][4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + ln for ln in a[i1:i2]]
                continue
            out += ["-" + ln for ln in a[i1:i2]]
            out += ["+" + ln for ln in b[j1:j2]]
    return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in out)


def _lines(text: str) -> list[str]:
    """Lines as patch(1) sees them: ended by "\n" only (str.splitlines also splits at \v, \f, \x1c...)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _hunks(ops: list[tuple[str, int, int, int, int]], n: int) -> list[list[tuple[str, int, int, int, int]]]:
    """Changes with ``n`` lines of context, nearby ones in one hunk (difflib's get_grouped_opcodes)."""
    if not any(tag != "equal" for tag, *_ in ops):
        return []
    if ops[0][0] == "equal":
        _, i1, i2, j1, j2 = ops[0]
        ops[0] = ("equal", max(i1, i2 - n), i2, max(j1, j2 - n), j2)
    if ops[-1][0] == "equal":
        _, i1, i2, j1, j2 = ops[-1]
        ops[-1] = ("equal", i1, min(i2, i1 + n), j1, min(j2, j1 + n))
    groups: list[list[tuple[str, int, int, int, int]]] = []
    group: list[tuple[str, int, int, int, int]] = []
    for tag, a1, i2, b1, j2 in ops:
        i1, j1 = a1, b1
        if tag == "equal" and i2 - i1 > 2 * n:  # a long unchanged stretch ends one hunk, starts the next
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            groups.append(group)
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    return groups


def _range(start: int, stop: int) -> str:
    """A hunk's line range as unified diffs write it (``3,4``; ``3`` for one line; ``2,0`` for none)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _info(snap: Snapshot, path: str) -> FileInfo:
    info = snap.files.get(path)
    if info is None:
        raise FileError("no such file", path=path)
    if info.data is None:
        raise FileError(info.problem() or "unreadable", path=path)
    return info


def _write(info: FileInfo, after: bytes, why: str) -> FileWrite:
    assert info.data is not None
    return FileWrite(info.path, info.data, after, info.mode, info.uid, info.gid, why)


def world_writable(snap: Snapshot, paths: list[str]) -> list[str]:
    """A finding, not a refusal: any local user can already change how this host boots."""
    found = []
    for p in paths:
        info = snap.files.get(p)
        if info is not None and info.exists and info.mode & 0o002 and not info.is_symlink:
            found.append(f"{p} is writable by every user (mode {info.mode & 0o7777:04o}): anyone can change how this host boots")
    return found


def grub_command_line(snap: Snapshot) -> str | None:
    """The kernel options grub-mkconfig puts on normal entries, as these files configure them."""
    ev = grub_evaluation(snap)
    return None if ev is None else command_line_of(ev)


def command_line_of(ev: Evaluation) -> str | None:
    """GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT as grub-mkconfig joins them (None if unknown)."""
    parts = [ev.value("GRUB_CMDLINE_LINUX"), ev.value("GRUB_CMDLINE_LINUX_DEFAULT")]
    if any(isinstance(p, Unknown) for p in parts):
        return None
    return " ".join(p for p in parts if isinstance(p, str) and p.strip()).strip()


def realloc_on_warning(param: Param, *, force: bool) -> str:
    """A ``--param`` that turns PCI resource reallocation on (``pci=realloc``, ``pci=realloc=on``: the
    last realloc setting of the kernel's pci_setup wins, a bare ``realloc`` means on) brings back what
    leaves BAR 2 unassigned: refused without ``--force``, and said with it. "" for any other."""
    if cmdline.realloc_setting(param.text)[0] != "on":
        return ""
    what = (
        f"{param.text} turns PCI resource reallocation on, the very reallocation that leaves BAR 2 of a ConnectX-3"
        " unassigned (Missing UAR); pci=realloc=off is the fix"
    )
    if not force:
        raise Refused(
            f"--param {what}",
            hint=f"use pci=realloc=off (the default), or add --force to write {param.text} all the same",
        )
    return f"--force: {what}"


def make_apply_plan(
    snap: Snapshot,
    setup: BootSetup,
    param: Param,
    *,
    finishing: str | None = None,
    finishing_backup: str | None = None,
    force: bool = False,
) -> Plan:
    """The plan that makes ``param`` hold in this host's boot configuration.

    ``finishing`` names an interrupted earlier apply: its regeneration runs again even when the files
    already hold the parameter. ``force``: a parameter that turns realloc on is written, with a warning."""
    notes: list[str] = [f"boot setup: {setup.title}"]
    warnings: list[str] = [w for w in [realloc_on_warning(param, force=force)] if w]
    writes: list[FileWrite] = []
    commands: list[Command] = []
    check = None
    backup_only: list[FileInfo] = []
    expected_entries: tuple[tuple[str, str], ...] = ()
    target = ""
    before = after = None
    unknown = ""
    changed = False
    if setup.edits_grub:
        main = _info(snap, GRUB)
        sources = grub_sources(snap)
        warnings += world_writable(snap, [s.path for s in sources])
        anchor = "GRUB_CMDLINE_LINUX_DEFAULT" if setup.variable == "GRUB_CMDLINE_LINUX" else "GRUB_CMDLINE_LINUX"
        edit = plan_grub_edit(sources, param, setup.variable, anchor, grub_evaluation(snap))
        target = f"{edit.path}:{edit.line}" if edit.line else edit.path
        others = [fe.path for fe in edit.files if fe.path != edit.path]
        target = ", ".join([target, *others])
        notes += edit.notes
        warnings += edit.warnings
        for fe in edit.files:
            info = snap.files[fe.path] if fe.path != GRUB else main
            why = f"{edit.variable} {'gets' if edit.action != 'present' else 'has'} {param.text}"
            writes.append(_write(info, fe.after, why))
        changed = edit.changed
        before = grub_command_line(snap)
        after = command_line_of(edit.checked) if edit.checked is not None else before
        if changed:
            check = ShellCheck(tuple(s.path for s in sources), edit.variable, edit.after)
        if setup.name == "grub2-bls":
            grubby = bls.plan_grubby(snap, param)
            notes += grubby.notes
            commands += [Command(tuple(c.argv), c.why, regenerates=False) for c in grubby.commands]
            if grubby.commands:
                backup_only += [_info(snap, p) for p in grubby.files]
            expected_entries = tuple(sorted(grubby.expected.items()))
            before, after = grubby.before or before, grubby.after or after
        if before is None or after is None:
            unknown = _unknowable_command_line(sources, grub_evaluation(snap), edit.variable, anchor, param)
            warnings.append(unknown)
    else:
        info = _info(snap, KERNEL_CMDLINE)
        assert info.data is not None
        warnings += world_writable(snap, [KERNEL_CMDLINE])
        fedit = kernelcmdline.plan_cmdline_file_edit(info.data, param, first_line_only=setup.name == "proxmox-systemd-boot")
        target = KERNEL_CMDLINE
        before, after = fedit.before, fedit.after
        if not any(t.key == "root" for t in cmdline.split(fedit.before)):
            if setup.name == "proxmox-systemd-boot":  # proxmox-boot-tool copies it as it is: no root=, no boot
                raise Refused(
                    f"{KERNEL_CMDLINE} has no root= parameter: Proxmox VE boots from it as it is, and would not find its root",
                    path=KERNEL_CMDLINE,
                    hint="put the current options in it first (from /proc/cmdline, without BOOT_IMAGE), then run mlxfix again",
                )
            warnings.append(f"{KERNEL_CMDLINE} has no root= parameter; check that this host's boot does not need one")
        if fedit.changed:
            writes.append(_write(info, fedit.data, f"the kernel command line gets {param.text}"))
            changed = True
    setting, ignored = cmdline.realloc_setting(after or "")
    del setting
    if ignored:
        warnings.append(f"the kernel ignores {', '.join('pci=' + i for i in ignored)}: only values starting with on/off count")
    nb = nextboot.setup_next_boot(snap, setup)  # layer 2 as it is now; unreadable is said, never a reason to stop
    next_before = nb.entry.cmdline if nb.read and nb.entry is not None else None
    next_after = next_before
    stale = ""
    if nb.read and nb.entry is not None:
        if setup.name == "grub2-bls":
            next_after = after if changed else next_before
        elif changed:
            next_after = nextboot.predict(next_before, before, after)
        _refuse_a_default_the_edit_misses(setup, nb, param)
        missing = nb.missing(param)
        if not changed and not commands and missing and cmdline.in_effect(after or "", param) and setup.regenerate():
            first = missing[0]
            stale = (
                f"the files hold {param.text}, but the generated boot configuration does not: {first.name!r}"
                f" ({first.source}) lacks it; the boot configuration is regenerated"
            )
            notes.append(stale)
    if changed or commands or finishing or stale:
        for argv in setup.regenerate():
            commands.append(Command(tuple(argv), "regenerate the boot configuration from the edited files"))
    if finishing:
        notes.append(f"finishing the apply interrupted earlier ({finishing}): the boot configuration is regenerated")
    running = snap.text("/proc/cmdline")
    running_differs = running is not None and not cmdline.in_effect(running.strip(), param)
    reason = f"apply: {param.text} in {target.split(':')[0] if target else setup.location}"
    if setup.edits_grub:
        reason = f"apply: {param.text} in {setup.variable} of {target or GRUB}"
        if setup.name == "grub2-bls":
            reason += ", and the BLS entries"
    return Plan(
        "apply",
        param.text,
        setup,
        tuple(writes),
        tuple(commands),
        check,
        before,
        after,
        tuple(notes),
        tuple(warnings),
        reason=reason,
        target=target,
        backup_only=tuple(backup_only),
        expected_entries=expected_entries,
        running_differs=running_differs,
        finishing_backup=finishing_backup,
        next_entry=(nb.entry.name, nb.entry.source, nb.why) if nb.read and nb.entry is not None else None,
        next_before=next_before,
        next_after=next_after,
        next_unread="" if nb.read else nb.why,
        cmdline_unknown=unknown,
    )


def _unknowable_command_line(sources: Sequence[GrubFile], ev: Evaluation | None, variable: str, anchor: str, param: Param) -> str:
    """Say which grub variable makes the kernel command line unknowable before grub-mkconfig runs it
    (a ``$(...)``, an assignment inside ``if``), and why the edit is still safe, or what is left to check.
    The edited variable itself is known (the edit would have been refused otherwise): the other one is not."""
    said = "the kernel command line cannot be known before grub-mkconfig runs"
    value = ev.value(anchor) if ev is not None else None
    if not isinstance(value, Unknown):
        return f"{said}; apply reads grub.cfg back after the regeneration"
    where = ""
    if 0 <= value.file < len(sources) and value.pos >= 0:
        where = f"{sources[value.file].path}:{sources[value.file].position(value.pos)[0]}: "
    reason = value.reason if value.reason.startswith(anchor) else f"{anchor} is {value.reason}"
    check = (
        f"apply reads grub.cfg back after the regeneration and puts the files back if a generated entry lacks {param.text}"
        " (or says it could not read them; with --no-update, or under --root, run mlxfix status once the command has run)"
    )
    if anchor == "GRUB_CMDLINE_LINUX":  # it comes first on the linux line, the edited variable after it
        last = "the kernel takes the last pci=realloc setting" if param.is_pci else "the kernel takes the last value"
        why = (
            f"it is still safe: {variable}, which gets {param.text}, comes after it on the linux line, so a value it"
            f" gives comes first and cannot override {param.text} ({last}); only a newline or a '--' in it could keep"
            f" {param.text} from the kernel, and"
        )
    else:
        why = f"{anchor} comes after {variable} on the linux line and could hold a setting that overrides {param.text};"
    return f"{said}: {where}{reason}, which only sh can compute; {why} {check}"


def _refuse_a_default_the_edit_misses(setup: BootSetup, nb: nextboot.NextBoot, param: Param) -> None:
    """The next boot takes a custom entry (40_custom, custom.cfg) with a linux line of its own: an
    edit of the grub variables is right there and useless."""
    entry = nb.entry
    if entry is None or entry.generated or entry.cmdline is None or cmdline.in_effect(entry.cmdline, param):
        return
    raise Refused(
        f"the next boot takes {entry.name!r} ({entry.source}; {nb.why}), an entry with a linux line of its own that does"
        f" not use {setup.variable}: adding {param.text} there would not reach the kernel",
        path=entry.source.rsplit(":", 1)[0],
        hint=f"point GRUB_DEFAULT at a generated entry, or add {param.text} to that entry's linux line by hand"
        " (/etc/grub.d/40_custom or custom.cfg), then run update-grub",
    )


def _param(text: str) -> Param:
    from mlxfix.cmdline import Param

    return Param.parse(text)


def _with_files(snap: Snapshot, new: dict[str, bytes]) -> Snapshot:
    """A copy of the snapshot in which some files hold new bytes (to describe the result)."""
    import copy

    from mlxfix.facts import FileInfo

    out = copy.copy(snap)
    out.files = dict(snap.files)
    out.derived = {}
    for path, data in new.items():
        old = snap.files.get(path)
        out.files[path] = FileInfo(path, True, data, old.mode if old else 0o644)
    return out


def owned(setup_name: str, path: str) -> bool:
    """Whether ``path`` is one the boot setup's apply writes or saves (what a backup of it can hold)."""
    if setup_name.startswith("grub"):
        drop_in = path.startswith(f"{GRUB_D}/") and path.endswith(".cfg") and "/" not in path[len(GRUB_D) + 1 :]
        if path == GRUB or drop_in:
            return True
        if setup_name == "grub2-bls":
            return path == bls.GRUBENV or fnmatch.fnmatchcase(path, bls.ENTRIES)
        return False
    return path == KERNEL_CMDLINE


def _refuse_what_mlxfix_never_wrote(manifest: Manifest, setup_name: str, entry: ManifestFile, info: FileInfo | None) -> None:
    """A forged or damaged manifest must not loosen another file: a rollback restores only the paths
    the backup's boot setup owns, never adds mode bits beyond the file's present ones and 0644, and
    never gives a file to a user other than root or its present owner."""
    where = f"backup {manifest.id} asks to restore {entry.path}"
    if not owned(setup_name, entry.path):
        raise Refused(f"{where}, which is no file of the {setup_name} boot setup: mlxfix never writes it; refusing the backup")
    exists = info is not None and info.exists
    allowed = ((info.mode & 0o7777) if info is not None and exists else 0) | 0o644
    if entry.mode & 0o7777 & ~allowed:
        raise Refused(
            f"{where} with mode {entry.mode & 0o7777:04o}, wider than the file's own and 0644: refusing the backup",
            path=entry.path,
        )
    for kind, wanted, now in (("uid", entry.uid, info.uid if info is not None and exists else 0),
                              ("gid", entry.gid, info.gid if info is not None and exists else 0)):  # fmt: skip
        if wanted not in (0, now):
            raise Refused(
                f"{where} owned by {kind} {wanted}: mlxfix gives a file only to root or its present owner; refusing the backup",
                path=entry.path,
            )


def make_rollback_plan(
    snap: Snapshot,
    setup: BootSetup,
    manifest: Manifest,
    stored: dict[str, bytes],
    *,
    force: bool = False,
    interrupted: bool = False,
) -> Plan:
    """The plan that puts back the files of a backup, byte for byte with their mode and owner.

    A file changed after mlxfix wrote it is shown and needs ``force``."""
    writes: list[FileWrite] = []
    notes: list[str] = [f"boot setup: {setup.title}", f"backup {manifest.id} from {manifest.created} ({manifest.reason})"]
    drift: list[str] = []
    param = _param(manifest.param)
    bls_saved = bls_now = {}
    if setup.name == "grub2-bls":  # what the entries held when the backup was made, and now
        bls_saved = {e.path: e for e in bls.entries(_with_files(snap, stored))}
        bls_now = {e.path: e for e in bls.entries(snap)}
    commands: list[Command] = []
    expected: dict[str, str] = {}
    changed_by_grubby: list[str] = []
    for entry in manifest.files:
        info = snap.files.get(entry.path)
        _refuse_what_mlxfix_never_wrote(manifest, setup.name, entry, info)
        current = info.data if info is not None and info.exists else None
        original = stored[entry.path]
        if entry.path == bls.GRUBENV and setup.name == "grub2-bls":
            # Never copied back: saved_entry and boot_success change on their own. grubby puts the
            # kernel options back, and only them.
            reverse = _reverse_kernelopts(snap, stored, param, bls_now)
            if reverse is not None:
                command, wanted, drifted = reverse
                commands.append(command)
                expected.update(wanted)
                drift += [entry.path] if drifted else []
            continue
        if current is not None and sha256(current) == entry.sha256:
            notes.append(f"{entry.path} already holds the backed-up bytes")
            continue
        if current is None and info is not None and info.exists:
            raise FileError(info.problem() or "unreadable", path=entry.path)
        command_managed = entry.written_sha256 is None  # grubby wrote it, not mlxfix
        if command_managed and current is None:
            notes.append(f"{entry.path} is gone (its kernel was removed since): not recreated")
            continue
        current_sha = sha256(current) if current is not None else None
        if command_managed and not force and not _as_grubby_left_it(entry.path, original, current, param, bls_saved, bls_now):
            # A BLS entry changed since by someone else too: grubby takes out only what the apply put
            # in (and puts back what it replaced), the rest of their change stays.
            undo = _reverse_entry(entry.path, param, bls_saved, bls_now)
            if undo is not None:
                commands.append(undo[0])
                expected.update(undo[1])
                changed_by_grubby.append(entry.path)
            continue
        if not command_managed and current_sha != entry.written_sha256:
            drift.append(entry.path)
        writes.append(
            FileWrite(
                entry.path,
                current or b"",
                original,
                entry.mode,
                entry.uid,
                entry.gid,
                f"restore the bytes saved in backup {manifest.id}",
                existed=current is not None,
            )
        )
    if setup.name == "grub2-bls":
        saved = {e.path for e in manifest.files}
        for bls_entry in bls.entries(snap):
            if bls_entry.path not in saved and not cmdline.ensure(bls_entry.args, param):
                grubby = ("grubby", f"--update-kernel={bls_entry.kernel}", f"--remove-args={manifest.param}")
                commands.append(Command(grubby, f"{bls_entry.kernel} was installed after the backup", regenerates=False))
                changed_by_grubby.append(bls_entry.path)
                expected[bls_entry.path] = bls.simulate_grubby(bls_entry.args, [manifest.param], [])
    if any(c.argv[0] == "grubby" and "--update-kernel=ALL" in c.argv for c in commands):
        changed_by_grubby.append(bls.GRUBENV)
    # What grubby is about to change is saved first, like every file of an apply: a grubby that does
    # something else is undone from this rollback's own backup.
    backup_only = tuple(snap.files[p] for p in dict.fromkeys(changed_by_grubby) if snap.data(p) is not None)
    if writes or commands or interrupted:
        for argv in setup.regenerate():
            commands.append(Command(tuple(argv), "regenerate the boot configuration from the restored files"))
    warnings = [f"--force: overwriting changes made after mlxfix wrote {d}" for d in drift] if force else []
    before = after = None
    if setup.edits_grub and snap.exists(GRUB):
        before = grub_command_line(snap)
        after = grub_command_line(_with_files(snap, {w.path: w.after for w in writes}))
    elif snap.data(KERNEL_CMDLINE) is not None:
        before = (snap.text(KERNEL_CMDLINE) or "").strip()
        restored = next((w.after for w in writes if w.path == KERNEL_CMDLINE), None)
        after = restored.decode("utf-8", "replace").strip() if restored is not None else before
    # The backup of a rollback holds the state before that rollback: restoring it applies the parameter
    # again. What the restored files configure says so; where sh cannot know it, what the backup was of.
    reapplies = cmdline.in_effect(after, param) if after is not None else manifest.action == "rollback"
    if reapplies:
        notes.append(
            f"backup {manifest.id} was saved by a {manifest.action} ({manifest.reason}): restoring it puts back the state"
            f" before that {manifest.action}, so {manifest.param} is applied again"
        )
    running = snap.text("/proc/cmdline")
    # a reboot is due while the running kernel has what the restored files take away (or lacks what they give)
    running_differs = running is not None and cmdline.in_effect(running.strip(), param) != reapplies
    return Plan(
        "rollback",
        manifest.param,
        setup,
        tuple(writes),
        tuple(commands),
        None,
        before,
        after,
        tuple(notes),
        tuple(warnings),
        backup_id=manifest.id,
        reason=f"rollback of backup {manifest.id}",
        target=", ".join(w.path for w in writes),
        backup_only=backup_only,
        expected_entries=tuple(sorted(expected.items())),
        drift=tuple(drift),
        running_differs=running_differs,
        reapplies=reapplies,
    )


def _as_grubby_left_it(
    path: str, saved: bytes, current: bytes | None, param: Param, bls_saved: dict[str, bls.Entry], bls_now: dict[str, bls.Entry]
) -> bool:
    """Whether a BLS entry is just as the apply's grubby left it: the same file but for the options,
    and the options the saved ones with the parameter added (so copying the saved bytes back loses
    nothing of anyone else's)."""
    before, now = bls_saved.get(path), bls_now.get(path)
    if current is None or before is None or now is None or not bls.same_apart_from_options(saved, current):
        return False
    change = bls.change_for(before.args, param)
    return change is not None and bls.same_words(now.args, change[2])


def _reverse_entry(
    path: str, param: Param, bls_saved: dict[str, bls.Entry], bls_now: dict[str, bls.Entry]
) -> tuple[Command, dict[str, str]] | None:
    """The grubby command that undoes the apply in one BLS entry someone changed since, and the
    arguments the entry must hold then (None: the apply changed nothing there)."""
    before, now = bls_saved.get(path), bls_now.get(path)
    if before is None or now is None:
        return None
    change = bls.change_for(before.args, param)
    if change is None:
        return None
    remove, add, _ = change
    present = [a for a in add if a in now.args.split()]
    if not present and all(r in now.args.split() for r in remove):
        return None  # already undone
    argv = bls.command(now.kernel, present, remove, f"take {param.text} out of {now.kernel} again").argv
    why = f"{path} was changed since the apply: grubby undoes only the apply's part"
    return Command(tuple(argv), why, regenerates=False), {path: bls.simulate_grubby(now.args, present, remove)}


def _reverse_kernelopts(
    snap: Snapshot, stored: dict[str, bytes], param: Param, bls_now: dict[str, bls.Entry]
) -> tuple[Command, dict[str, str], bool] | None:
    """RHEL 8: the grubby command that takes the parameter out of grubenv's kernelopts again (and puts
    back what it replaced), the arguments each $kernelopts entry must hold then, and whether someone
    else changed kernelopts since (a drift, which needs --force). None when there is nothing to undo."""
    saved = bls.grubenv(_with_files(snap, {bls.GRUBENV: stored[bls.GRUBENV]})).get("kernelopts")
    now = bls.grubenv(snap).get("kernelopts")
    if saved is None or now is None or bls.same_words(saved, now):
        return None
    change = bls.change_for(saved, param)
    if change is None:  # the apply did not change kernelopts: someone else did, and it is theirs
        return None
    remove, add, target = change
    drifted = not bls.same_words(now, target)
    users = [p for p, e in bls_now.items() if "$kernelopts" in (snap.text(p) or "")]
    wanted = {p: bls.simulate_grubby(bls_now[p].args, add, remove) for p in users}
    argv = bls.command("ALL", add, remove, f"take {param.text} out of kernelopts again").argv
    return Command(tuple(argv), "put the saved kernel options back in grubenv", regenerates=False), wanted, drifted
