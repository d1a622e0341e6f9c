"""What each mlxfix command does, as one call the CLI makes: facts in, plan, execution, report out.

The CLI gives options and two callbacks (``confirm`` for the yes/no question, ``progress`` for what is
happening); everything else is decided here or in the pure core.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, NamedTuple

from mlxfix.boot.detect import check_setup_name, detect, gather_request
from mlxfix.errors import Busy, ConnectionLost, FileError, HostError, MlxfixError, Refused, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlxfix.backup import Intent, Listing, Manifest, Pruning
    from mlxfix.boot.nextboot import Layers
    from mlxfix.boot.setup import BootSetup, TrialState
    from mlxfix.diagnose import Diagnosis, Verification
    from mlxfix.execute import Outcome, Progress
    from mlxfix.host.local import Host, Snapshot
    from mlxfix.plan import Plan

__all__ = [
    "ChangeReport",
    "PruneReport",
    "StatusReport",
    "apply",
    "backups",
    "diagnose",
    "prune",
    "reboot_command",
    "rollback",
    "status",
    "verify",
]

INTENT = "/var/lib/mlxfix/intent.json"
BACKUPS = "/var/lib/mlxfix/backups"


class ChangeReport:
    """The outcome of apply or rollback, for the human renderer and the JSON result alike. (Classes
    by hand here, not dataclasses: see mlxfix.boot.grubcfg.)"""

    __slots__ = (
        "command",
        "confirmed",
        "dry_run",
        "error",
        "errors",
        "host",
        "left_to_run",
        "outcome",
        "param",
        "plan",
        "reboot",
        "rebooting",
        "root",
        "verification",
        "warnings",
    )

    def __init__(self, command: str, host: str, root: str, dry_run: bool, param: str) -> None:
        self.command = command
        self.host = host
        self.root = root
        self.dry_run = dry_run
        self.param = param
        self.plan: Plan | None = None
        self.outcome: Outcome | None = None
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.error: MlxfixError | None = None
        self.rebooting = False
        self.confirmed = False
        self.verification: Verification | None = None  # --wait: verify after the host came back
        self.reboot: tuple[tuple[str, ...], int, str] | None = None  # the reboot command that ran: argv, exit code, output
        self.left_to_run: tuple[tuple[tuple[str, ...], str], ...] = ()  # the commands the admin must run, and why

    @property
    def vm(self) -> str | None:
        """apply in a VM: the plan's warning of it, said again at the reboot question."""
        warnings = self.plan.warnings if self.plan is not None else ()
        return next((w for w in warnings if w.startswith(VM_WARNING)), None)

    @property
    def changed(self) -> bool:
        if self.plan is None or self.error is not None:
            return False
        if self.dry_run:
            return False
        return self.plan.changed

    @property
    def would_change(self) -> bool:
        return self.plan is not None and self.plan.changed

    @property
    def reboot_required(self) -> bool:
        if self.plan is None or self.error is not None:
            return False
        return self.plan.reboot_required


# Temp files a killed write leaves beside its target (.NAME.mlxfix-XXXXXX), where mlxfix writes.
LEFTOVERS = tuple(
    f"{d}/.*.mlxfix-*"
    for d in ("/etc/default", "/etc/default/grub.d", "/etc/kernel", "/boot/loader/entries", "/boot/grub2", "/var/lib/mlxfix")
)


def snapshot(host: Host, *, with_status: bool = True, with_backups: bool = False) -> Snapshot:
    """One batched read of everything detection and planning need (and what an interrupted run
    left; ``with_backups``: every backup too, for a rollback)."""
    files, listings, globs, tools = gather_request()
    status = [["proxmox-boot-tool", "status"], ["systemd-detect-virt", "--vm"]] if with_status else []
    if with_backups:
        from mlxfix.backup import backups_request

        globs = [*globs, *backups_request()[2]]
    snap = host.gather([*files, *_VIRT_FILES, INTENT], [*listings, BACKUPS], [*globs, *LEFTOVERS], tools, status)
    from mlxfix.boot.grub_base import guarded_reads

    more = guarded_reads(snap)  # `if test -f P; then . P; fi`: whether P is there, and what it does
    if more:
        extra = host.gather(more)
        snap.files.update(extra.files)
        snap.round_trips += extra.round_trips
        snap.derived.pop("grub_evaluation", None)
    return snap


# What tells a VM from bare metal (diagnose reads them too): apply in a VM is most often a mistake.
_VIRT_FILES = ["/proc/cpuinfo", "/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/product_name"]


VM_WARNING = "this host is a VM"


def vm_warning(snap: Snapshot) -> str | None:
    """In a VM, the Missing UAR failure is the hypervisor host's: say so before anything changes."""
    from mlxfix.virt import detect_vm

    dmi = " ".join(filter(None, ((snap.text(f"/sys/class/dmi/id/{n}") or "").strip() for n in ("sys_vendor", "product_name"))))
    virtual, evidence = detect_vm(snap, dmi)
    if not virtual:
        return None
    return (
        f"{VM_WARNING} ({virtual}; {evidence}): when a passed-through ConnectX-3 fails with Missing UAR,"
        " the fix belongs on the hypervisor host's kernel command line, not here (run mlxfix diagnose on the host)"
    )


def _tidy_if_needed(host: Host, snap: Snapshot, progress: Progress | None) -> None:
    """A run with nothing to change still clears what an interrupted one left (partial backups,
    temp files)."""
    partial = any(n.startswith(".partial-") for n in snap.listings.get(BACKUPS) or [])
    temp = [p for g in LEFTOVERS for p in snap.globs.get(g, [])]
    if (partial or temp) and host.privileged():
        from mlxfix.execute import tidy

        tidy(host, temp, progress)


def _interrupted_backup(snap: Snapshot) -> str | None:
    """The backup an interrupted apply made (what a run that finishes it must remember)."""
    data = snap.data(INTENT)
    if data is None:
        return None
    from mlxfix.backup import parse_intent

    intent = parse_intent(data)
    return intent.backup if intent is not None and intent.action == "apply" and intent.backup else None


def _interrupted(snap: Snapshot) -> str | None:
    """What an intent record in the snapshot says was interrupted (None: nothing was)."""
    data = snap.data(INTENT)
    if data is None:
        return None
    from mlxfix.backup import parse_intent

    intent = parse_intent(data)
    if intent is None or intent.action == "unknown":
        return "an earlier run (its intent record is unreadable)"
    stopped = f" ({intent.stopped})" if intent.stopped else ""
    return f"{intent.action} of {intent.started}, backup {intent.backup}{stopped}"


def plan_apply(
    host: Host, param_text: str, boot_setup: str | None, *, force: bool = False, trial: bool = False
) -> tuple[Plan, Snapshot]:
    from mlxfix.cmdline import Param
    from mlxfix.plan import make_apply_plan, make_trial_plan, realloc_on_warning

    param = Param.parse(param_text)
    check_setup_name(boot_setup)
    realloc_on_warning(param, force=force)  # refused before anything is read; the plan carries the warning
    snap = snapshot(host)
    setup = detect(snap, boot_setup, param.text)
    interrupted = _interrupted(snap)
    if trial:
        if interrupted:
            raise Refused(
                f"an earlier run was interrupted ({interrupted}): finish it first",
                hint="run mlxfix apply (or mlxfix rollback), then try again",
            )
        plan = make_trial_plan(snap, setup, param, force=force)
    else:
        from mlxfix.boot import rpmdb
        from mlxfix.boot.grub_base import GRUB, GRUB_D
        from mlxfix.boot.kernelcmdline import PATH as KERNEL_CMDLINE

        # Who owns the files an edit may touch: asked of rpm on an RPM host only, and only to plan an edit.
        rpmdb.query(host, snap, [GRUB, *snap.globs.get(f"{GRUB_D}/*.cfg", []), KERNEL_CMDLINE])
        plan = make_apply_plan(snap, setup, param, finishing=interrupted, finishing_backup=_interrupted_backup(snap), force=force)
    if not host.runs_commands and not plan.writes and plan.commands and not interrupted:
        plan = _only_on_the_host(plan, f"the files already hold {param.text}")
    vm = vm_warning(snap)
    if vm and (plan.writes or plan.commands):
        plan = plan._replace(warnings=(*plan.warnings, vm))
    return plan, snap


def _only_on_the_host(plan: Plan, why: str) -> Plan:
    """Under --root, a plan that would only run commands (grubby, after the files were already
    written) changes nothing in the tree: it is no change, and the commands are left to the admin."""
    todo = "; ".join(shlex.join(c.argv) for c in plan.commands)
    warning = f"--root: {why}; on the host itself, run: {todo}"
    return plan._replace(commands=(), warnings=(*plan.warnings, warning), left_to_admin=tuple(c.argv for c in plan.commands))


def apply(
    host: Host,
    *,
    param: str,
    dry_run: bool,
    boot_setup: str | None,
    confirm: Callable[[Plan], bool],
    progress: Progress | None = None,
    no_update: bool = False,
    force: bool = False,
    trial: bool = False,
) -> ChangeReport:
    """``mlxfix apply``: plan; print it (dry run) or execute it after confirmation. ``force``: write a
    parameter that turns PCI realloc on (it brings the failure back), with a warning. ``trial``: arm
    a one-time boot with the parameter instead, changing nothing the default boot reads."""
    report = ChangeReport("apply", host.label, host.root, dry_run, param)
    if trial and no_update:
        report.error = UsageError("--trial and --no-update exclude each other: arming the one-time boot is the trial")
        report.errors.append(str(report.error))
        return report
    try:
        plan, snap = plan_apply(host, param, boot_setup, force=force, trial=trial)
        plan = _without_commands(plan, report) if no_update else plan
        report.plan = plan
        report.left_to_run += tuple((argv, "--root: run it on the host itself") for argv in plan.left_to_admin)
        report.warnings += plan.warnings
        if dry_run:
            return report
        if not (plan.writes or plan.commands):
            _nobody_at_work(host)
            _tidy_if_needed(host, snap, progress)
            return report
        if not confirm(plan):
            raise Refused("not confirmed; nothing was changed", hint=_ASK_AGAIN.format(report.command))
        report.confirmed = True
        replan = lambda: plan_apply(host, param, boot_setup, force=force, trial=trial)[0]  # noqa: E731
        _execute_locked(host, report, replan, no_update, progress)
    except MlxfixError as exc:
        _blame_the_login(host, exc)
        report.error = exc
        report.errors.append(str(exc))
    if report.outcome is not None:
        report.warnings += report.outcome.warnings
    return report


_ASK_AGAIN = "run mlxfix {} again to be asked again (--dry-run only shows the plan)"


def _nobody_at_work(host: Host) -> None:
    """A run with nothing to do fails at once too while another mlxfix changes the host: its "nothing
    to do" may stop being true a moment later (a lock is only looked at, not taken: no trace)."""
    from mlxfix.backup import LOCK

    if host.held_locks([LOCK]):
        where = "this host" if host.label == "localhost" else host.label
        raise Busy(f"another mlxfix is running on {where} (it holds the lock); try again when it is done", path=LOCK)


def _blame_the_login(host: Host, exc: MlxfixError) -> None:
    """A file root may read and this login may not: the advice names the login, not the file."""
    if exc.hint is not None or "permission denied" not in str(exc).lower():
        return
    try:
        if host.privileged():
            return
    except MlxfixError:  # (the connection is gone: the error says so already)
        return
    if host.label == "localhost":
        exc.hint = "run mlxfix as root (or with --root on a tree you can read and write)"
    else:
        exc.hint = (
            f"the login on {host.label} is not root, and passwordless sudo is not available: log in as root, or allow sudo -n"
        )


def _execute_locked(
    host: Host, report: ChangeReport, replan: Callable[[], Plan], no_update: bool, progress: Progress | None
) -> None:
    """Execute the confirmed plan (report.plan) under the lock, as planned again there: only under
    the lock is an intent record one an interrupted run left, not a running one's. A plan made
    there that differs from the one confirmed is not executed."""
    from mlxfix.execute import Outcome, exclusive, execute, precheck

    shown = report.plan
    assert shown is not None
    precheck(host, shown)
    with exclusive(host, report.command):
        try:
            again = replan()  # (over SSH, the precheck's and the lock's steps travel with its read)
        except ConnectionLost:
            raise
        except HostError as exc:  # a directory refused, the state directory or the lock unusable
            if "nothing was changed" not in exc.message:
                exc.message += "; nothing was changed"
            raise
        again = _without_commands(again, None) if no_update else again
        if _changes(again) != _changes(shown):
            if not (again.writes or again.commands):
                report.plan = again  # another run did it meanwhile
                return
            raise Refused("the host changed while the plan was shown (another mlxfix or an admin?); nothing was changed")
        report.outcome = Outcome()
        execute(host, again, _hostname(host), progress, report.outcome)


def _changes(plan: Plan) -> tuple[object, ...]:
    """What executing a plan would do, to compare the confirmed plan with the one made under the lock."""
    return (
        tuple((w.path, w.before, w.after, w.mode, w.uid, w.gid) for w in plan.writes),
        tuple(c.argv for c in plan.commands),
        tuple((i.path, i.data) for i in plan.backup_only),
    )


def plan_rollback(host: Host, backup_id: str | None, force: bool, boot_setup: str | None) -> tuple[Plan, Snapshot, bool]:
    """The rollback plan, the snapshot it was made from, and whether an interrupted run is finished."""
    from mlxfix import backup
    from mlxfix.plan import make_rollback_plan

    check_setup_name(boot_setup)
    snap = snapshot(host, with_backups=True)
    intent = backup.parse_intent(snap.data(INTENT)) if snap.exists(INTENT) else None
    chosen = backup_id
    if chosen is None and intent is not None:  # finish what was interrupted
        chosen = (intent.restores if intent.action == "rollback" else intent.backup) or None
    manifest, stored = backup.load(host, chosen, snap)
    missing = [f.path for f in manifest.files if f.path not in snap.files]  # most are in the snapshot already
    if missing:
        snap.files.update(host.gather(missing).files)
    setup = _setup_for(snap, manifest, boot_setup)
    plan = make_rollback_plan(snap, setup, manifest, stored, force=force, interrupted=intent is not None)
    if not host.runs_commands and not plan.writes and plan.commands and intent is None:
        plan = _only_on_the_host(plan, "nothing to restore in the tree")
    if intent is not None:
        plan = plan._replace(notes=(*plan.notes, f"an earlier {intent.action} was interrupted: this rollback finishes it"))
    return plan, snap, intent is not None


def rollback(
    host: Host,
    *,
    backup_id: str | None,
    dry_run: bool,
    force: bool,
    boot_setup: str | None,
    confirm: Callable[[Plan], bool],
    progress: Progress | None = None,
    no_update: bool = False,
) -> ChangeReport:
    """``mlxfix rollback``: restore a backup (the newest, or the one an interrupted run left)."""
    from mlxfix import backup

    report = ChangeReport("rollback", host.label, host.root, dry_run, "")
    try:
        plan, snap, interrupted = plan_rollback(host, backup_id, force, boot_setup)
        report.param = plan.param
        plan = _without_commands(plan, report) if no_update else plan
        report.plan = plan
        report.left_to_run += tuple((argv, "--root: run it on the host itself") for argv in plan.left_to_admin)
        report.warnings += plan.warnings
        if plan.drift and not force:  # the diff is in the report (and the JSON's files) for review
            from mlxfix.boot.bls import GRUBENV

            if plan.drift == (GRUBENV,):
                why, review = "kernelopts in the file was changed since the apply", "check kernelopts in it"
            else:
                why, review = "the file was changed after mlxfix wrote it", "review the diff above"
            raise Refused(
                f"{why}; restoring the backup would undo that change too",
                path=plan.drift[0],
                hint=f"{review}, then run: mlxfix rollback --backup {plan.backup_id} --force",
            )
        if dry_run:
            return report
        if not (plan.writes or plan.commands):
            _nobody_at_work(host)
            if interrupted:  # the files already hold the backup: the interrupted rollback is done
                from mlxfix.execute import exclusive

                with exclusive(host, "rollback"):
                    if plan_rollback(host, backup_id, force, boot_setup)[2]:  # still so, under the lock
                        backup.clear_intent(host)
            _tidy_if_needed(host, snap, progress)
            return report
        if not confirm(plan):
            raise Refused("not confirmed; nothing was changed", hint=_ASK_AGAIN.format(report.command))
        report.confirmed = True
        _execute_locked(host, report, lambda: plan_rollback(host, backup_id, force, boot_setup)[0], no_update, progress)
    except MlxfixError as exc:
        _blame_the_login(host, exc)
        report.error = exc
        report.errors.append(str(exc))
    if report.outcome is not None:
        report.warnings += report.outcome.warnings
    return report


def _without_commands(plan: Plan, report: ChangeReport | None) -> Plan:
    """--no-update: keep the file writes, leave the commands to the admin, and say which."""
    if plan.commands and report is not None:
        todo = "; ".join(shlex.join(c.argv) for c in plan.commands)
        done = "would not be" if report.dry_run else "was not"
        report.warnings.append(f"--no-update: the boot configuration {done} regenerated; run: {todo}")
        report.left_to_run += tuple((c.argv, "--no-update: run it yourself") for c in plan.commands)
    return plan._replace(commands=())


def _setup_for(snap: Snapshot, manifest: Manifest, override: str | None) -> BootSetup:
    """The boot setup to regenerate with after a restore: --boot-setup if given, else the one the
    backup was made with (an apply forced with --boot-setup is undone the same way)."""
    from mlxfix.boot.detect import recorded

    if override is not None:
        return detect(snap, override)
    try:
        now: BootSetup | None = detect(snap)
    except MlxfixError:  # a file the rollback puts back may be missing now
        now = None
    if now is not None and now.name == manifest.boot_setup:
        return now
    why = f"backup {manifest.id} was made with boot setup {manifest.boot_setup}: it is undone with it"
    setup = recorded(snap, manifest.boot_setup, why)
    return setup.with_evidence(f"(detection now finds {now.name})") if now is not None else setup


def backups(host: Host) -> Listing:
    """``mlxfix backups``: every backup checked, and what is wrong with the ones that cannot be used."""
    from mlxfix import backup

    snap = backup.gather_backups(host)
    listing = backup.listing_from(host, snap)
    return listing._replace(problems=[*listing.problems, *interrupted_warning(snap)])


class PruneReport(NamedTuple):
    listing: Listing  # the backups after the prune (a dry run, or nothing to do: as they are)
    pruning: Pruning  # what was (or would be) removed, and why each kept backup is kept
    done: bool  # something was removed


def prune(host: Host, keep: int, *, dry_run: bool, confirm: Callable[[Pruning], bool]) -> PruneReport:
    """``mlxfix backups --prune``: remove old backups, never one a rollback could need (see
    backup.pruning). What was confirmed is computed again under the lock, and only backups in both
    are removed: one that became needed in between (an apply finished meanwhile) stays. Each is
    renamed to .pruned-ID first, so that an interrupted prune leaves whole backups or names that
    say what they are, never a backup with half its files."""
    from mlxfix import backup

    if keep < 0:
        raise UsageError(f"--keep {keep}: the number of backups to keep is 0 or more")
    names, listing, intent = _prune_state(host)
    planned = backup.pruning(listing, names, keep, intent)
    if dry_run or not (planned.remove or planned.leftovers):
        return PruneReport(listing, planned, done=False)
    if not confirm(planned):
        raise Refused("not confirmed; nothing was removed", hint="run mlxfix backups --prune again to be asked again")
    from mlxfix.execute import exclusive
    from mlxfix.host.local import checkpoint

    with exclusive(host, "backups --prune"):
        names, listing, intent = _prune_state(host)  # under the lock, no run is making or using a backup
        now = backup.pruning(listing, names, keep, intent)
        confirmed = {m.id for m in planned.remove}
        remove = [m for m in now.remove if m.id in confirmed]
        for m in remove:
            host.rename(f"{BACKUPS}/{m.id}", f"{BACKUPS}/{backup.PRUNED}{m.id}")
        checkpoint("prune-renamed")
        for name in [*(backup.PRUNED + m.id for m in remove), *now.leftovers]:
            host.remove_tree(f"{BACKUPS}/{name}")
        after_names, after, _ = _prune_state(host)
        gone = {backup.PRUNED + m.id for m in remove} | {m.id for m in remove} | set(now.leftovers)
        stuck = sorted(n for n in after_names if n in gone)
        if stuck:
            raise HostError(f"{BACKUPS}/{stuck[0]} could not be removed ({len(stuck)} left); the backups kept are intact")
    return PruneReport(after, now._replace(remove=remove), done=True)


def _prune_state(host: Host) -> tuple[list[str], Listing, Intent | None]:
    """The backups directory's names, the checked listing and the intent record, in one read; an
    intent record that cannot be read stops the prune: which backup it needs is unknown."""
    from mlxfix import backup

    snap = backup.gather_backups(host)
    intent = backup.parse_intent(snap.data(INTENT))
    if intent is not None and not intent.backup:
        raise Refused(
            f"{INTENT} (the record of an interrupted run) cannot be read, so the backup that undoes that run is unknown;"
            " nothing was removed",
            hint="finish the run with mlxfix apply, or undo it with mlxfix rollback, then prune",
        )
    listing = backup.listing_from(host, snap)
    listing = listing._replace(problems=[*listing.problems, *interrupted_warning(snap)])
    return snap.listings.get(BACKUPS) or [], listing, intent


def _hostname(host: Host) -> str:
    import socket

    return socket.gethostname() if host.label == "localhost" else host.label


BOOT_ID = "/proc/sys/kernel/random/boot_id"


def wait_for_reboot(host: Host, boot_id: str | None, timeout: float, tick: Callable[[str, float], None]) -> None:
    """Wait until the host answers again with another boot id (it really rebooted), polling every few
    seconds; HostError after ``timeout`` seconds."""
    import time

    from mlxfix.errors import HostError

    start = time.monotonic()
    host.close()
    while True:
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise HostError(
                f"{host.label} did not come back within {timeout:.0f} s; check it, then run mlxfix verify --host {host.label}"
            )
        tick(host.label, elapsed)
        time.sleep(min(5.0, max(0.5, timeout / 100)))
        try:
            now = (host.read(BOOT_ID).data or b"").decode().strip()
        except MlxfixError:
            host.close()
            continue
        if now and now != boot_id:
            return
        host.close()


def reboot_command(host: Host) -> list[str]:
    """The command that reboots the host a few seconds from now, so that the report reaches the admin
    before the connection drops. ``MLXFIX_REBOOT_COMMAND`` replaces it (tests, unusual hosts)."""
    override = os.environ.get("MLXFIX_REBOOT_COMMAND")
    if override:
        return shlex.split(override)
    snap = host.gather([], tools=["systemd-run", "shutdown"])
    if snap.tools.get("systemd-run"):
        return ["systemd-run", "--on-active=5", "--timer-property=AccuracySec=1s", "systemctl", "reboot"]
    return ["shutdown", "-r", "+1", "mlxfix: rebooting to apply the kernel command line"]


# -- status -----------------------------------------------------------------------------------------


class StatusReport(NamedTuple):
    """``mlxfix status``: the three layers of the kernel command line for one parameter."""

    host: str
    root: str
    param: str
    setup: BootSetup
    layers: Layers
    state: str
    warnings: list[str]

    @property
    def exit_code(self) -> int:
        from mlxfix.boot.nextboot import STATE_EXIT

        return STATE_EXIT[self.state]


def status(host: Host, param: str, boot_setup: str | None = None) -> StatusReport:
    """``mlxfix status``: one batched read, then the layers and the state (pure)."""
    from mlxfix.boot import nextboot
    from mlxfix.cmdline import Param

    p = Param.parse(param)
    check_setup_name(boot_setup)
    snap = snapshot(host)
    setup = detect(snap, boot_setup, p.text)
    lay = nextboot.layers(snap, setup)
    state, warnings = nextboot.state_of(lay, p)
    trial = setup.trial_state(snap)
    if trial is not None and trial.armed:
        warnings.append(
            f"a one-time boot of {trial.entry!r} is armed: the next boot only tries {p.text}; the boot after it takes"
            " the default entry again"
        )
    elif trial is not None and trial.booted(lay.running.cmdline, _next_default(lay)):
        state = "trial"  # in effect for this boot only
        warnings.append(f"this boot is a trial boot ({trial.entry!r}): mlxfix apply keeps {p.text} (no second reboot)")
    elif trial is not None:
        warnings.append(f"a trial entry ({trial.entry!r}, {trial.source}) is there, not armed: mlxfix rollback removes it")
    warnings += [f"{lay.next_boot.entry.source if lay.next_boot.entry else 'grub.cfg'}: {w}" for w in lay.next_boot.problems]
    warnings += interrupted_warning(snap)
    return StatusReport(host.label, host.root, p.text, setup, lay, state, warnings)


# -- diagnose and verify ------------------------------------------------------------------------------

_DIAG_FILES = [
    "/proc/modules",
    "/proc/cmdline",
    "/proc/cpuinfo",
    "/sys/class/dmi/id/sys_vendor",
    "/sys/class/dmi/id/product_name",
    "/sys/class/dmi/id/board_vendor",
    "/sys/class/dmi/id/board_name",
    "/sys/class/dmi/id/bios_version",
    "/sys/class/dmi/id/bios_date",
]
_JOURNAL = ["journalctl", "-k", "-b", "0", "--no-pager", "-o", "short-monotonic"]


def diagnose(host: Host, boot_setup: str | None = None) -> Diagnosis:
    """``mlxfix diagnose``: read the facts in two batched reads (the second one for what the first one
    found: the Mellanox devices, and the kernel log when the journal had none), then judge them."""
    from mlxfix import diagnose as diag
    from mlxfix.boot.detect import TOOLS, gather_request
    from mlxfix.boot.kernelcmdline import PATH as KERNEL_CMDLINE
    from mlxfix.steps import world_writable

    check_setup_name(boot_setup)
    files, listings, globs, _ = gather_request()
    commands = [["systemd-detect-virt", "--vm"], ["pveversion"], ["proxmox-boot-tool", "status"], _JOURNAL]
    snap = host.gather(
        [*files, *_DIAG_FILES, INTENT],
        [*listings, diag.PCI],
        [*globs, f"{diag.PCI}/*/vendor"],
        [*TOOLS, "journalctl", "dmesg", "systemd-detect-virt", "pveversion"],
        commands,
    )
    if snap.listings.get(diag.PCI) is None:
        raise FileError("cannot list the PCI devices (is this a Linux host, or a --root tree without sys/?)", path=diag.PCI)
    from mlxfix.boot.grub_base import guarded_reads

    more_files, more_listings = diag.device_request(snap)
    more_files = [*more_files, *guarded_reads(snap)]  # `if test -f P; then . P; fi`: what P is
    log_commands: list[list[str]] = []
    log_files: list[str] = []
    if _journal(snap) is None:
        if host.runs_commands and snap.tools.get("dmesg"):
            log_commands.append(["dmesg"])
        else:
            log_files.extend(_LOG_FILES)
    if more_files or log_commands or log_files:
        extra = host.gather(more_files, more_listings, commands=log_commands, logs=log_files)
        _merge(snap, extra)
        snap.derived.pop("grub_evaluation", None)
    if log_commands and snap.exit_codes.get("dmesg") != 0:  # dmesg refused (dmesg_restrict?): the files, then
        _merge(snap, host.gather([], logs=_LOG_FILES))
    setup, setup_error = _detected(snap, boot_setup)
    configured, source = _configured_cmdline(snap, setup, setup_error)
    log_text, log_source = _kernel_log(snap)
    diagnosis = diag.analyse(snap, configured, source, log_text, log_source)
    boot_files = setup.config_files(snap) if setup is not None else ["/etc/default/grub", KERNEL_CMDLINE]
    warnings = [*diagnosis.warnings, *world_writable(snap, boot_files), *interrupted_warning(snap)]
    trial = setup.trial_state(snap) if setup is not None else None
    this_boot_is_a_trial = _trial_boot(snap, trial, configured)
    if this_boot_is_a_trial:
        assert trial is not None
        warnings.append(
            f"this boot is a trial boot ({trial.entry!r}): the default boot does not have the fix; mlxfix apply keeps it"
            " (no second reboot), mlxfix rollback removes the trial entry"
        )
    diagnosis = diagnosis._replace(
        warnings=tuple(warnings),
        boot_setup=(setup.name, setup.title, setup.evidence) if setup is not None else None,
        boot_setup_error=setup_error,
        trial=this_boot_is_a_trial,
    )
    return diagnosis._replace(advice=diag.advise(diagnosis))  # with the boot setup known now


def _trial_boot(snap: Snapshot, trial: TrialState | None, next_default: str | None) -> bool:
    """Whether the running kernel was booted by a trial entry (TrialState.booted: status's rule too)."""
    return trial is not None and trial.booted(snap.text("/proc/cmdline"), next_default)


def _next_default(lay: Layers) -> str | None:
    """The command line the next (default) boot gets: its entry's, where it was read, else the configured one."""
    entry = lay.next_boot.entry if lay.next_boot.read else None
    return entry.cmdline if entry is not None and entry.cmdline is not None else lay.configured.cmdline


def interrupted_warning(snap: Snapshot) -> list[str]:
    """Every command says so when an earlier apply or rollback was cut off (its intent record is there)."""
    what = _interrupted(snap)
    if what is None:
        return []
    return [f"an earlier run was interrupted ({what}): run mlxfix apply to finish it, or mlxfix rollback to undo it"]


def _detected(snap: Snapshot, override: str | None = None) -> tuple[BootSetup | None, str]:
    """The boot setup, or why there is none (the file and the advice included)."""
    try:
        return detect(snap, override), ""
    except MlxfixError as exc:
        return None, str(exc) + (f" ({exc.hint})" if exc.hint else "")


def _merge(snap: Snapshot, extra: Snapshot) -> None:
    for part in ("files", "listings", "outputs", "exit_codes"):
        getattr(snap, part).update(getattr(extra, part))


def _configured_cmdline(snap: Snapshot, setup: BootSetup | None, setup_error: str) -> tuple[str | None, str]:
    """The command line the boot configuration gives the next boot, and where it comes from."""
    if setup is None:
        return None, f"unknown ({setup_error})"
    return setup.judged_cmdline(snap)


_LOG_FILES = ("/var/log/kern.log", "/var/log/dmesg")


def _journal(snap: Snapshot) -> str | None:
    journal = snap.outputs.get(" ".join(_JOURNAL), "")
    return journal if journal.strip() and "No entries" not in journal[:200] else None


def _kernel_log(snap: Snapshot) -> tuple[str | None, str]:
    """This boot's kernel log: journalctl -k -b 0, else dmesg, else (under --root) var/log/kern.log or
    var/log/dmesg in the tree."""
    journal = _journal(snap)
    if journal is not None:
        return journal, "journalctl -k -b 0"
    dmesg = snap.outputs.get("dmesg", "")
    if snap.exit_codes.get("dmesg") == 0 and dmesg.strip():
        return dmesg, "dmesg"
    from mlxfix.diagnose import log_of_an_earlier_boot

    running = snap.text("/proc/cmdline")
    why = []
    for path in _LOG_FILES:
        data = snap.data(path)
        if data and data.strip():  # an empty kern.log (rotated just now) must not hide var/log/dmesg
            text = data.decode("utf-8", "replace")
            earlier = log_of_an_earlier_boot(text, running)
            if not earlier:
                return text, path
            why.append(f"{path}: {earlier}")
            continue
        info = snap.files.get(path)
        if info is not None and info.exists:
            problem = "a directory" if info.is_dir else info.error or "empty"
            why.append(f"{path}: {problem}")
    seen = "; ".join(why) or "no /var/log/kern.log or /var/log/dmesg"
    return None, f"no journalctl output, no dmesg; {seen}"


def verify(host: Host, param: str, *, present: bool = True) -> Verification:
    """``mlxfix verify``; ``present=False`` after a rollback: the parameter must be gone."""
    from mlxfix import diagnose as diag
    from mlxfix.cmdline import Param

    p = Param.parse(param)
    return diag.verify(diagnose(host), p, present=present)
