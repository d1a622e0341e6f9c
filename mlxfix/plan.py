"""The plan: the file writes and commands that apply or roll back the fix, computed once.

``--dry-run`` prints a plan; apply and rollback execute that very plan, so the two cannot disagree.
Pure code: a Snapshot of the host comes in, a Plan comes out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.errors import Refused
from mlxfix.steps import Command, FileWrite, ShellCheck, hard_linked, unified_diff, world_writable

if TYPE_CHECKING:
    from mlxfix.backup import Manifest
    from mlxfix.boot.setup import BootSetup, Trial
    from mlxfix.cmdline import Param
    from mlxfix.facts import FileInfo, Snapshot

__all__ = [
    "Command",
    "FileWrite",
    "Plan",
    "ShellCheck",
    "make_apply_plan",
    "make_rollback_plan",
    "realloc_on_warning",
    "unified_diff",
    "world_writable",
]


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
    trial: Trial | None = None  # apply --trial: the one-time boot it arms
    trial_removed: str = ""  # apply: the trial entry this apply removes (the change is made permanent)
    running_unknown: bool = False  # no /proc/cmdline: whether a reboot is due is not known

    @property
    def effect(self) -> str:
        """What the plan does to the parameter, in words: "applied", "rolled back" or, for a rollback
        that restores the backup of a rollback, "re-applied"."""
        if self.action == "apply":
            return "armed for one boot" if self.trial is not None else "applied"
        return "re-applied" if self.reapplies else "rolled back"

    @property
    def changed(self) -> bool:
        return bool(self.writes) or any(not c.regenerates for c in self.commands)

    @property
    def regenerates(self) -> bool:
        """Whether the plan regenerates the boot configuration (what the read-back then proves)."""
        return any(c.regenerates for c in self.commands) or bool(self.expected_entries)

    @property
    def reboot_required(self) -> bool:
        """A reboot is due: the running kernel is not what the plan configures (an apply after a trial
        boot, or a rollback before any reboot, needs none); unknown without /proc/cmdline, so due."""
        return self.running_differs or (self.running_unknown and self.changed)


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
    warnings += world_writable(snap, setup.config_files(snap))
    edit = setup.plan_edit(snap, param)
    notes += edit.notes
    warnings += edit.warnings
    warnings += hard_linked(snap, [w.path for w in edit.writes])
    commands = list(edit.commands)
    _, ignored = cmdline.realloc_setting(edit.after or "")
    if ignored:
        warnings.append(f"the kernel ignores {', '.join('pci=' + i for i in ignored)}: only values starting with on/off count")
    state = setup.trial_state(snap)
    # layer 2 as it is now (without a trial entry this apply removes); unreadable is said, never a reason to stop
    nb = setup.next_boot(setup.without_trial(snap) if state is not None else snap)
    next_before = nb.entry.cmdline if nb.read and nb.entry is not None else None
    next_after = next_before
    stale = ""
    if nb.read and nb.entry is not None:
        next_after = setup.predict(next_before, edit)
        setup.check_reach(nb, param)
        missing = nb.missing(param)
        if not edit.changed and not commands and missing and cmdline.in_effect(edit.after or "", param) and setup.regenerate():
            first = missing[0]
            stale = (
                f"the files hold {param.text}, but the generated boot configuration does not: {first.name!r}"
                f" ({first.source}) lacks it; the boot configuration is regenerated"
            )
            notes.append(stale)
    if edit.changed or commands or finishing or stale:
        for argv in setup.regenerate():
            commands.append(Command(tuple(argv), "regenerate the boot configuration from the edited files"))
    if finishing:
        notes.append(f"finishing the apply interrupted earlier ({finishing}): the boot configuration is regenerated")
    running = snap.text("/proc/cmdline")
    running_differs = running is not None and not cmdline.in_effect(running.strip(), param)
    writes = edit.writes
    trial_removed = ""
    if state is not None:  # the change is made permanent: the trial entry goes, armed or spent
        cleanup, disarm = setup.trial_cleanup(snap)
        writes, commands = (*writes, *cleanup), [*commands, *disarm]
        trial_removed = state.entry
        notes.append(f"the trial entry {state.entry!r} ({state.source}) is removed{' and disarmed' if state.armed else ''}")
    if running is not None and not running_differs and (edit.changed or commands):
        boot = "this trial boot's kernel" if state is not None else "the running kernel (/proc/cmdline)"
        notes.append(f"{boot} has {param.text} already: no reboot is needed")
    return Plan(
        "apply",
        param.text,
        setup,
        writes,
        tuple(commands),
        edit.check,
        edit.before,
        edit.after,
        tuple(notes),
        tuple(warnings),
        reason=edit.reason,
        target=edit.target,
        backup_only=edit.backup_only,
        expected_entries=edit.expected_entries,
        running_differs=running_differs,
        running_unknown=running is None,
        finishing_backup=finishing_backup,
        next_entry=(nb.entry.name, nb.entry.source, nb.why) if nb.read and nb.entry is not None else None,
        next_before=next_before,
        next_after=next_after,
        next_unread="" if nb.read else nb.why,
        cmdline_unknown=edit.unknown,
        trial_removed=trial_removed,
    )


def make_trial_plan(snap: Snapshot, setup: BootSetup, param: Param, *, force: bool = False) -> Plan:
    """The plan that arms a one-time boot of the next boot's entry with ``param``: nothing the default
    boot reads changes, and the boot loader disarms it before the kernel starts."""
    notes: list[str] = [f"boot setup: {setup.title}"]
    warnings: list[str] = [w for w in [realloc_on_warning(param, force=force)] if w]
    nb = setup.next_boot(snap)
    trial = setup.plan_trial(snap, param)
    running = snap.text("/proc/cmdline")
    running_differs = running is not None and not cmdline.in_effect(running.strip(), param)
    next_before = nb.entry.cmdline if nb.read and nb.entry is not None else None
    entry = (nb.entry.name, nb.entry.source, nb.why) if nb.read and nb.entry is not None else None
    if trial is None:
        state = setup.trial_state(snap)
        if state is not None and state.armed:
            notes.append(f"a one-time boot of {state.entry!r} is armed already: reboot to try it")
        else:
            notes.append(f"the next boot has {param.text} already: there is nothing to try")
        return Plan("apply", param.text, setup, (), (), None, next_before, next_before, tuple(notes), tuple(warnings),
                    reason=f"apply --trial: {param.text}", running_differs=running_differs,
                    running_unknown=running is None, next_entry=entry,
                    next_before=next_before, next_after=next_before)  # fmt: skip
    notes += trial.notes
    return Plan(
        "apply",
        param.text,
        setup,
        trial.writes,
        trial.commands,
        None,
        None,  # the configured command line does not change
        None,
        tuple(notes),
        tuple(warnings),
        reason=f"apply --trial: a one-time boot of {trial.fallback!r} with {param.text}",
        target=", ".join(w.path for w in trial.writes),
        running_differs=running_differs,
        running_unknown=running is None,
        next_entry=(trial.entry, ", ".join(w.path for w in trial.writes), "armed for one boot (next_entry)"),
        next_before=next_before,
        next_after=trial.cmdline,
        trial=trial,
    )


def _param(text: str) -> Param:
    from mlxfix.cmdline import Param

    return Param.parse(text)


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
    notes: list[str] = [f"boot setup: {setup.title}", f"backup {manifest.id} from {manifest.created} ({manifest.reason})"]
    param = _param(manifest.param)
    restore = setup.plan_restore(snap, manifest, stored, param, force=force)
    writes, commands, drift = restore.writes, restore.commands, restore.drift
    notes += restore.notes
    # What a command (grubby) is about to change is saved first, like every file of an apply: a
    # command that does something else is undone from this rollback's own backup.
    backup_only = tuple(snap.files[p] for p in dict.fromkeys(restore.changed_by_commands) if snap.data(p) is not None)
    if interrupted or any(setup.regenerated_from(w.path) for w in writes):
        for argv in setup.regenerate():
            commands.append(Command(tuple(argv), "regenerate the boot configuration from the restored files"))
    warnings = [f"--force: overwriting changes made after mlxfix wrote {d}" for d in drift] if force else []
    warnings += hard_linked(snap, [w.path for w in writes if not w.removes])
    before = setup.configured_line(snap)
    after = setup.configured_line(snap.with_files({w.path: w.after for w in writes})) if before is not None else None
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
        expected_entries=tuple(sorted(restore.expected.items())),
        drift=tuple(drift),
        running_differs=running_differs,
        running_unknown=running is None,
        reapplies=reapplies,
    )
