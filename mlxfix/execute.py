"""Run a plan on a host: lock, backup, intent, atomic writes, validation, regeneration; restore on
failure. The plan was computed before; nothing here decides *what* to change."""

from __future__ import annotations

import shlex
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mlxfix import backup, stops
from mlxfix.digest import sha256
from mlxfix.errors import Busy, CommandFailed, ConnectionLost, HostError, Interrupted, MlxfixError, NotRestored, Refused
from mlxfix.host.local import STATE_DIR, checkpoint
from mlxfix.transaction import (
    Checkpoint,
    Computes,
    Journal,
    Parses,
    Remember,
    Remove,
    Rename,
    Step,
    Tidy,
    Unchanged,
    Write,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mlxfix.backup import Manifest
    from mlxfix.host.local import CommandResult, Host, Snapshot
    from mlxfix.plan import Plan

__all__ = ["CommandOutcome", "Outcome", "exclusive", "execute", "precheck"]

PACKAGE_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/rpm/.rpm.lock")


@dataclass
class CommandOutcome:
    argv: tuple[str, ...]
    exit_code: int | None  # None: not run
    output_tail: str
    note: str = ""
    signal: int | None = None  # the signal that killed it (its wait status), None when it exited


@dataclass
class Outcome:
    """What executing a plan did."""

    backup: Manifest | None = None
    written: list[str] = field(default_factory=list)
    commands: list[CommandOutcome] = field(default_factory=list)
    restored: bool = False
    put_back: list[str] = field(default_factory=list)  # the files a failure's undo really wrote back
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    proof: str = ""  # what the read-back of the generated boot entries showed
    unproved: str = ""  # why it could not be read back


class Progress(Protocol):
    """How execution reports: a line per step, a stream of command output (the CLI shows them)."""

    def step(self, text: str) -> None: ...

    def command_start(self, argv: tuple[str, ...]) -> None: ...

    def output(self, line: str) -> None: ...

    def command_end(self, result: CommandResult) -> None: ...

    def committed(self) -> None:
        """The change is made: from here on the run only reports it (a Ctrl-C must not say otherwise)."""


class Quiet:
    """A Progress that shows nothing."""

    def step(self, text: str) -> None:
        del text

    def command_start(self, argv: tuple[str, ...]) -> None:
        del argv

    def output(self, line: str) -> None:
        del line

    def command_end(self, result: CommandResult) -> None:
        del result

    def committed(self) -> None:
        pass


def _verify_written(host: Host, path: str, expected: bytes) -> None:
    back = host.read(path)
    if back.data is None or sha256(back.data) != sha256(expected):
        raise HostError("the file did not read back as written", path=path)


# Where mlxfix ever writes: an interrupted run's temp files can only be there.
_WRITTEN_DIRS = ("/etc/default", "/etc/default/grub.d", "/etc/kernel", "/boot/loader/entries", "/boot/grub2", STATE_DIR)


def _temp_patterns(plan: Plan) -> list[str]:
    """Where temp files a killed run left can be: beside the files mlxfix writes (``.NAME.mlxfix-XXXXXX``)."""
    dirs = sorted({*_WRITTEN_DIRS, *(w.path.rsplit("/", 1)[0] or "/" for w in plan.writes)})
    return [f"{d}/.*.mlxfix-*" for d in dirs]


def _remove_partials(host: Host, names: list[str]) -> list[str]:
    """Remove the half-made backups (``.partial-*``) among the backup directory's entries."""
    gone = []
    for name in names:
        if name.startswith(".partial-"):
            host.remove_tree(f"{backup.BACKUPS}/{name}")
            gone.append(f"{backup.BACKUPS}/{name}")
    return gone


def _readback_request(plan: Plan) -> tuple[list[str], list[str], list[str]] | None:
    """What is read back after the last command (files, listings, globs): the BLS entries grubby
    wrote, and what the boot loader will read at the next boot (None: nothing)."""
    files: list[str] = []
    listings: list[str] = []
    globs: list[str] = []
    if plan.expected_entries:
        from mlxfix.boot import bls

        files.append(bls.GRUBENV)
        globs.append(bls.ENTRIES)
    if plan.action == "apply" and (plan.trial is not None or plan.regenerates):
        more = plan.setup.read_request()
        files += more[0]
        listings += more[1]
        globs += more[2]
    return (files, listings, globs) if files or listings or globs else None


_SYNC_FAILED = "sync (to make the regenerated boot configuration durable) failed: {}"
_FLUSHED = "flushed the regenerated boot configuration to disk (sync)"


def _check_after_commands(host: Host, plan: Plan, snap: Snapshot | None = None) -> None:
    """grubby changes the BLS entries itself: read them back and make sure each one holds the
    parameter."""
    if not plan.expected_entries or not host.runs_commands:
        return
    from mlxfix.boot import bls

    if snap is None:
        snap = host.gather([bls.GRUBENV], globs=[bls.ENTRIES])
    wrong = bls.mismatched(snap, dict(plan.expected_entries))
    if wrong:
        raise CommandFailed(f"after grubby, {len(wrong)} boot entries do not hold the planned arguments", path=wrong[0])


def _prove_next_boot(host: Host, plan: Plan, outcome: Outcome, snap: Snapshot | None = None) -> None:
    """After the regeneration, read back what the boot loader will read: the entry the next boot
    takes, and every generated non-recovery entry, must carry the parameter (the kernel's reading:
    the last pci=realloc wins). A regeneration that succeeded and still left the next boot without
    it (a value GRUB's linux line splits, a default entry that does not take the configured command
    line) is a failure like any other: the files are put back."""
    if plan.action != "apply" or not host.runs_commands or not plan.commands:
        return
    from mlxfix import cmdline
    from mlxfix.cmdline import Param

    if snap is None:
        snap = host.gather(*plan.setup.read_request())
    nb = plan.setup.next_boot(snap)
    param = Param.parse(plan.param)
    if plan.trial is not None:  # armed: the next boot, once, takes the trial entry, with the parameter
        armed = nb.entry if nb.read else None
        if (
            armed is None
            or armed.name != plan.trial.entry
            or armed.cmdline is None
            or not cmdline.in_effect(armed.cmdline, param)
        ):
            took = f"{armed.name!r} ({armed.cmdline})" if armed is not None else (nb.why or "an entry that could not be told")
            raise CommandFailed(f"after arming, the next boot would take {took}, not the trial entry {plan.trial.entry!r}")
        outcome.proof = (
            f"the next boot, once, takes {armed.name!r} ({armed.source}), which has {param.text};"
            f" the boot after it takes {plan.trial.fallback!r} again"
        )
        return
    if not plan.regenerates:
        return
    if not nb.read:
        outcome.unproved = f"what the next boot gets could not be read back ({nb.why}): check it before rebooting"
        outcome.warnings.append(outcome.unproved)
        return
    if nb.entry is None:
        outcome.unproved = f"which entry the next boot takes could not be told ({nb.why}): check it before rebooting"
        outcome.warnings.append(outcome.unproved)
    missing = nb.missing(param)
    if missing:
        first = missing[0]
        chosen = nb.entry is not None and first == nb.entry
        which = f"the entry the next boot takes ({nb.why})" if chosen else "a generated boot entry"
        got = first.cmdline if first.cmdline is not None else "no Linux command line"
        more = f" (and {len(missing) - 1} more entr{'y' if len(missing) == 2 else 'ies'})" if len(missing) > 1 else ""
        raise CommandFailed(
            f"after the regeneration, {which}, {first.name!r}, lacks {param.text}{more}: the kernel would get {got!r}",
            path=first.source.rsplit(":", 1)[0] if ":" in first.source else first.source,
            line=int(first.source.rsplit(":", 1)[1]) if first.source.rsplit(":", 1)[-1].isdigit() else None,
        )
    if nb.entry is not None:
        outcome.proof = f"the next boot takes {nb.entry.name!r} ({nb.entry.source}), which has {param.text}"


def _restore(
    host: Host, manifest: Manifest, stored: dict[str, bytes], progress: Progress, touched: set[str], outcome: Outcome
) -> list[str]:
    """Put back the files this run changed (``touched``); return the paths that could not be
    restored. A file that holds neither its original bytes nor what this run wrote was changed by
    someone else in the meantime: it is left alone, and said so."""
    failed = []
    for entry in manifest.files:
        if entry.path not in touched:
            continue
        data = stored[entry.path]
        try:
            current = host.read(entry.path)
            now = sha256(current.data) if current.data is not None else None
            if now == entry.sha256:
                continue
            if entry.written_sha256 is not None and now not in (entry.written_sha256, None):
                outcome.warnings.append(f"{entry.path} was changed by someone else meanwhile: left as it is, not restored")
                continue
            if not entry.existed:
                host.remove(entry.path)
            else:
                host.write_atomic(entry.path, data, mode=entry.mode, uid=entry.uid, gid=entry.gid, expect_sha256=now)
                _verify_written(host, entry.path, data)
            outcome.put_back.append(entry.path)
            progress.step(f"restored {entry.path} from backup {manifest.id}")
        except ConnectionLost:
            raise
        except MlxfixError:
            failed.append(entry.path)
    return failed


def _left_as_it_was(plan: Plan, outcome: Outcome) -> bool:
    """Whether every failed command left the boot configuration untouched: grub-mkconfig's scripts all
    ran under ``set -e`` into grub.cfg.new, and one that exits non-zero stops it before grub.cfg is
    replaced. A command killed by a signal (or by mlxfix's timeout) may have been cut off while it
    copied grub.cfg.new over grub.cfg: no such promise then. Which one it was is the wait status's
    word (``signal``), never the exit code's: 127 is "command not found", 129 may be an exit too."""
    atomic = {c.argv for c in plan.commands if c.atomic}
    first_runs = [o for o in outcome.commands if not o.note]
    if any(o.argv in atomic and o.exit_code == 0 for o in first_runs):
        return False  # it did replace grub.cfg, from the edited files, before something else failed
    failed = [o for o in outcome.commands if o.exit_code not in (0, None)]
    return all(o.argv in atomic and o.exit_code is not None and o.exit_code > 0 and o.signal is None for o in failed)


def _manual_steps(host: Host, manifest: Manifest, failed: list[str], plan: Plan) -> list[str]:
    steps = []
    for entry in manifest.files:
        if entry.path in failed:
            src = host.real(f"{backup.BACKUPS}/{manifest.id}/{entry.stored}")
            steps.append(f"cp -p {shlex.quote(src)} {shlex.quote(host.real(entry.path))}")
            steps.append(f"chmod {entry.mode & 0o7777:o} {shlex.quote(host.real(entry.path))}")
    steps.extend(str(c) for c in plan.commands if c.regenerates)
    steps.append(f"rm {shlex.quote(host.real(backup.INTENT))}")
    return steps


@contextmanager
def _second_ctrl_c(plan: Plan) -> Iterator[None]:
    """A Ctrl-C while the files are being put back stops the restore half-way: the intent record
    stays, and the admin, who wanted out, is told both ways on, not only "finish it"."""
    try:
        yield
    except KeyboardInterrupt:
        if plan.action == "apply":
            ways = "run mlxfix apply to finish the change, or mlxfix rollback to undo it"
        else:
            ways = "run mlxfix rollback to finish it (then mlxfix apply, if you want the parameter back)"
        raise Interrupted(
            "interrupted again (Ctrl-C) while the original files were being put back: the host holds the old or"
            " the new files, and the record of this run",
            hint=f"{ways}; mlxfix status shows where the host stands",
        ) from None


def _during(started: set[tuple[str, ...]], outcome: Outcome) -> str:
    """ " during update-grub": the command a stop cut off (begun, with no outcome yet), if any."""
    ended = {c.argv for c in outcome.commands}
    running = [argv for argv in started if argv not in ended]
    return f" during {shlex.join(running[0])}" if running else ""


def _flush(host: Host, progress: Progress) -> None:
    """Make the regenerated boot configuration durable before anything is reported: grub-mkconfig,
    kernel-install and proxmox-boot-tool rename their output into place without an fsync, and an
    admin may power-cycle the host through its BMC the moment apply says it is done. (Over SSH it
    runs with the next script, the read-back: said once it is done.)"""
    host.sync(lambda: progress.step(_FLUSHED))


def _run(host: Host, argv: tuple[str, ...], progress: Progress) -> CommandResult:
    progress.command_start(argv)
    result = host.run(argv, on_output=progress.output)
    progress.command_end(result)
    return result


def tidy(host: Host, temp_files: list[str], progress: Progress | None = None) -> None:
    """Remove what an interrupted run left (partial backups, the temp files seen), under the lock."""
    progress = progress or Quiet()
    try:
        with exclusive(host, "tidy"):
            for leftover in _remove_partials(host, host.listdir(backup.BACKUPS) or []):
                progress.step(f"removed {leftover}, left by an interrupted run")
            for path in temp_files:
                host.remove(path)
                progress.step(f"removed {path}, left by an interrupted run")
    except Busy:  # another mlxfix is at work: what it writes is its own; the next idle run tidies
        return


@contextmanager
def exclusive(host: Host, action: str) -> Iterator[None]:
    """The right to change the host: root (or a writable --root tree), the state directory, and the
    lock, held until the change is over. The plan that is executed must be made under it: only then
    is an intent record on the host really one an interrupted run left, not a running one's."""
    if not host.privileged():
        if host.label != "localhost":
            why = "the login is not root, and passwordless sudo is not available (log in as root, or allow sudo -n)"
            raise Refused(f"{action} changes the boot configuration of {host.label}, but {why}")
        raise Refused(f"{action} changes the boot configuration: run it as root (or with --root on a tree you can write)")
    host.make_private_dir(STATE_DIR)
    with host.lock(backup.LOCK):
        yield


def precheck(host: Host, plan: Plan) -> None:
    """What is checked before the lock is even taken (so that a refusal leaves no trace, not even
    the state directory): no package manager at work, and directories nobody else controls."""
    try:
        host.await_unlocked(PACKAGE_LOCKS)  # dpkg, apt and rpm may run update-grub themselves
        host.check_write_dirs([w.path for w in plan.writes])
    except MlxfixError as exc:
        if not isinstance(exc, Busy):
            exc.message += "; nothing was changed"
        raise


def _record(host: Host, manifest: backup.Manifest, outcome_name: str, detail: str, outcome: Outcome) -> None:
    """How the run ended, beside its backup (for mlxfix backups); a failure to say so changes nothing else."""
    try:
        backup.record_ending(host, manifest, outcome_name, detail)
    except MlxfixError as exc:
        outcome.warnings.append(f"could not record how this run ended ({exc}); mlxfix backups will call it unknown")


def _steps(host: Host, plan: Plan, hostname: str) -> Change:
    """The change as steps (see mlxfix.transaction), in the order that keeps every promise: the
    files still what the plan was made from, the leftovers of an interrupted run gone, a verified
    backup, the intent record, the atomic writes, each one read back, and the shell's checks. (How
    the run ended is recorded by a batch of its own: a Ctrl-C while these steps run must still find
    the change incomplete, and have it undone.)"""
    manifest, partial, saving = backup.prepare(plan, hostname)
    intent, recording = backup.intent_for(plan, manifest)
    steps: list[Step] = [Unchanged(w.path, w.before_sha256) for w in plan.writes if w.existed]
    steps += [Remember(backup.INTENT), Tidy(backup.BACKUPS, tuple(_temp_patterns(plan)))]
    backup_from = len(steps)
    steps += saving
    change_from = len(steps)
    steps += recording
    writes: dict[int, str] = {}
    for w in plan.writes:
        writes[len(steps)] = w.path
        if w.removes:
            steps.append(Remove(w.path))
        else:
            expect = w.before_sha256 if w.existed else None
            steps.append(Write(w.path, w.after, w.mode, w.uid, w.gid, expect))
    steps.append(Checkpoint("after-write"))
    # sh -n every written grub file (a rollback removes mlxfix's own drop-in); where the host runs
    # commands, sh sources them and must compute exactly the planned value.
    steps += [Parses(w.path) for w in plan.writes if w.path.startswith("/etc/default/grub") and not w.removes]
    if plan.check is not None and host.runs_commands:
        steps.append(Computes(plan.check))
    return Change(manifest, partial, intent, steps, backup_from, change_from, writes)


@dataclass(frozen=True)
class Change:
    """The steps of a change, and where they stand: before ``change_from`` nothing the host boots
    from has changed."""

    manifest: Manifest
    partial: str  # where the backup is built
    intent: backup.Intent
    steps: list[Step]
    backup_from: int
    change_from: int
    writes: dict[int, str]  # step index -> the file it writes


def _nothing_changed(exc: MlxfixError) -> MlxfixError:
    if not isinstance(exc, Busy) and "nothing was changed" not in exc.message:
        exc.message += "; nothing was changed"
    return exc


def _report(progress: Progress, change: Change, outcome: Outcome, journal: Journal) -> Callable[[int, Step], None]:
    """What each completed step tells the admin (and the outcome), as it completes."""

    def done(index: int, step: Step) -> None:
        if isinstance(step, Tidy):
            for leftover in journal.removed:
                progress.step(f"removed {leftover}, left by an interrupted run")
        elif isinstance(step, Rename) and index < change.change_from:
            outcome.backup = change.manifest
            progress.step(f"backup {change.manifest.id} saved under {backup.BACKUPS}/{change.manifest.id}")
        elif index in change.writes:
            outcome.written.append(change.writes[index])
            progress.step(f"{'removed' if isinstance(step, Remove) else 'wrote'} {change.writes[index]}")

    return done


def execute(host: Host, plan: Plan, hostname: str, progress: Progress | None = None, outcome: Outcome | None = None) -> Outcome:
    """Execute the plan, under ``exclusive``; on any failure put the files back and regenerate again.
    ``outcome`` is filled as steps happen, so a caller still has it when an error is raised."""
    progress = progress or Quiet()
    outcome = outcome if outcome is not None else Outcome()
    if not plan.writes and not plan.commands:
        return outcome
    change = _steps(host, plan, hostname)
    manifest = change.manifest
    journal = Journal()
    journal.on_done = _report(progress, change, outcome, journal)
    stored = {w.path: w.before for w in plan.writes} | {i.path: i.data or b"" for i in plan.backup_only}
    attempted: set[str] = set()  # the files a write was begun on (even one that fails after its rename is undone)
    started: set[tuple[str, ...]] = set()  # commands begun (one interrupted by Ctrl-C included)

    def fail(err: MlxfixError) -> MlxfixError:
        """Restore, regenerate from the restored files, and say how it ended. Not over a new SSH
        connection after the one holding the lock dropped: the target keeps its intent record, and
        the next run there finishes or undoes the change."""
        if isinstance(err, ConnectionLost):
            return err
        try:
            return undo(err)
        except ConnectionLost as lost:
            return lost

    def undo(err: MlxfixError) -> MlxfixError:
        checkpoint("restoring")
        touched = attempted | ({i.path for i in plan.backup_only} if started else set())
        unrestored = _restore(host, manifest, stored, progress, touched, outcome)
        outcome.restored = not unrestored
        unregenerated: list[str] = []
        if host.runs_commands:
            for c in plan.commands:  # what a command armed (a one-time boot) is disarmed first
                if c.undo and c.argv in started:
                    again = _run(host, c.undo, progress)
                    outcome.commands.append(
                        CommandOutcome(c.undo, again.exit_code, again.tail(), f"undoes {c.argv[0]}", again.signal)
                    )
                    if not again.ok:
                        unrestored.append(shlex.join(c.undo))
        if not unrestored and host.runs_commands:
            for c in plan.commands:
                if c.regenerates and c.argv in started:
                    again = _run(host, c.argv, progress)
                    outcome.commands.append(
                        CommandOutcome(c.argv, again.exit_code, again.tail(), "run again after restoring", again.signal)
                    )
                    if not again.ok:
                        unregenerated.append(str(c))
            if started:
                _flush(host, progress)
        if unrestored:
            steps = _manual_steps(host, manifest, unrestored, plan)
            _record(host, manifest, "failed-not-restored", f"{err}; not put back: {', '.join(unrestored)}", outcome)
            return NotRestored(f"{err}; putting the original files back failed too ({', '.join(unrestored)})", steps)
        if unregenerated and not _left_as_it_was(plan, outcome):
            steps = [*_manual_steps(host, manifest, [], plan)]
            why = f"the original files were restored, but regenerating from them failed too ({', '.join(unregenerated)})"
            _record(host, manifest, "failed-not-restored", f"{err}; {why}", outcome)
            return NotRestored(f"{err}; {why}: the boot configuration may not match the files", steps)
        changed_nothing = not outcome.put_back and not started  # (a write refused because the file changed)
        if not changed_nothing:
            _record(host, manifest, "failed-restored", str(err), outcome)
        earlier_intent = journal.remembered.get(backup.INTENT)  # an interrupted run's record: this run did not finish it
        if earlier_intent is not None:
            # This run was finishing an interrupted one, and did not: its record must stay, as it was.
            try:  # atomically: a record is there at every instant
                host.write_atomic(backup.INTENT, earlier_intent, mode=0o600, uid=0, gid=0, expect_sha256=None)
            except MlxfixError as exc:
                why = f"the record of the apply interrupted earlier could not be kept ({exc})"
                return NotRestored(f"{err}; {why}", _manual_steps(host, manifest, [], plan))
            err.message += "; the apply interrupted earlier is still unfinished: run mlxfix again once that is fixed"
            return err
        backup.clear_intent(host)
        if changed_nothing:
            err.message += "; nothing was changed"
            with suppress(MlxfixError):  # a backup of a state that never changed: not worth keeping
                host.remove_tree(f"{backup.BACKUPS}/{manifest.id}")
        else:
            err.message += f"; the original files were restored from backup {manifest.id}"
        if unregenerated:  # grub-mkconfig replaces grub.cfg only when it succeeds: it is the original one
            err.message += (
                f" ({', '.join(unregenerated)} fails on the original files too, so the boot configuration was"
                " left as it was: fix that first)"
            )
        return err

    try:
        try:
            host.transact(change.steps, journal)
        finally:
            attempted.update(path for index, path in change.writes.items() if index <= journal.begun)
        readback: Snapshot | None = None
        for index, c in enumerate(plan.commands):
            if not host.runs_commands:
                why = "--root points at a tree, not at a running system: run it on the host itself"
                outcome.commands.append(CommandOutcome(c.argv, None, "", why))
                continue
            checkpoint(f"before-command-{c.argv[0]}")
            started.add(c.argv)
            last = index == len(plan.commands) - 1
            request = (_readback_request(plan) or ([], [], [])) if last else None
            if request is None:
                result = _run(host, c.argv, progress)
            else:  # the last one: its sync and the read-back come with it (one round trip over SSH)
                progress.command_start(c.argv)
                regenerated = host.regenerate(c.argv, request, on_output=progress.output)
                result = regenerated.result
                progress.command_end(result)
            outcome.commands.append(CommandOutcome(c.argv, result.exit_code, result.tail(), signal=result.signal))
            if not result.ok:
                detail = result.tail(3) or "no output"
                raise CommandFailed(f"{c} failed with exit code {result.exit_code}: {detail}")
            if request is not None:
                if regenerated.sync_failed is not None:
                    raise CommandFailed(_SYNC_FAILED.format(regenerated.sync_failed))
                progress.step(_FLUSHED)
                readback = regenerated.snapshot
            checkpoint(f"after-command-{c.argv[0]}")
        _check_after_commands(host, plan, readback)
        _prove_next_boot(host, plan, outcome, readback)
        stops.STATE.committed()  # the last thing a Ctrl-C, a hang-up or a kill may undo
        progress.committed()
    except ConnectionLost:  # what the target did is its intent record's word now, not this run's
        raise
    except MlxfixError as exc:
        if journal.begun < change.change_from:  # nothing the host boots from was touched
            _drop_partial(host, change, outcome)
            raise _nothing_changed(exc) from None
        with _second_ctrl_c(plan):
            raise fail(exc) from None
    except KeyboardInterrupt as exc:
        if journal.begun < change.change_from:
            _drop_partial(host, change, outcome)
            raise
        err = Interrupted.by(exc, rest=_during(started, outcome))
        with _second_ctrl_c(plan):
            if isinstance(exc, stops.Stopped) and journal.done > change.change_from:  # said, should the restore be cut off too
                with suppress(MlxfixError):
                    backup.mark_stopped(host, change.intent, err.message)
            raise fail(err) from None
    _finish(host, change.manifest, outcome)
    return outcome


def _drop_partial(host: Host, change: Change, outcome: Outcome) -> None:
    """A backup half made when the change stopped before it began goes (a complete one stays)."""
    if outcome.backup is None:
        with suppress(MlxfixError):
            host.remove_tree(change.partial)


def _finish(host: Host, manifest: Manifest, outcome: Outcome) -> None:
    """How the run ended (done), then the intent record removed: one batch of steps. A failure to
    say so changes nothing else (a stale intent record only makes the next run regenerate again)."""
    journal = Journal()
    try:
        host.transact([backup.ending_step(manifest, "done"), Remove(backup.INTENT), Checkpoint("done")], journal)
    except MlxfixError as exc:
        if journal.begun == 0:
            outcome.warnings.append(f"could not record how this run ended ({exc}); mlxfix backups will call it unknown")
            try:
                backup.clear_intent(host)
            except MlxfixError as again:
                exc = again
            else:
                return
        outcome.warnings.append(f"could not remove the intent record ({exc}); the next run will regenerate once more")
