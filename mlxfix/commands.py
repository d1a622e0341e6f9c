"""What each mlxfix command does, as one call the CLI makes: facts in, plan, execution, report out.

The CLI gives options and two callbacks (``confirm`` for the yes/no question, ``progress`` for what is
happening); everything else is decided here or in the pure core.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlxfix.bootsetup import detect, gather_request
from mlxfix.errors import MlxfixError, Refused

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlxfix.backup import Manifest
    from mlxfix.bootsetup import BootSetup
    from mlxfix.execute import Outcome, Progress
    from mlxfix.host import Host, Snapshot
    from mlxfix.plan import Plan

__all__ = ["ChangeReport", "apply", "backups", "reboot_command", "rollback"]

INTENT = "/var/lib/mlxfix/intent.json"


@dataclass
class ChangeReport:
    """The outcome of apply or rollback, for the human renderer and the JSON result alike."""

    command: str
    host: str
    root: str
    dry_run: bool
    param: str
    plan: Plan | None = None
    outcome: Outcome | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error: MlxfixError | None = None
    rebooting: bool = False
    confirmed: bool = False

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


def snapshot(host: Host, *, with_status: bool = True) -> Snapshot:
    """One batched read of everything detection and planning need."""
    files, listings, globs, tools = gather_request()
    status = [["proxmox-boot-tool", "status"]] if with_status else []
    return host.gather([*files, INTENT], listings, globs, tools, status)


def _interrupted(snap: Snapshot) -> str | None:
    info = snap.files.get(INTENT)
    if info is None or info.data is None:
        return None
    from mlxfix.backup import Intent

    try:
        intent = Intent.model_validate_json(info.data)
    except ValueError:
        return "an earlier run (its intent record is unreadable)"
    return f"{intent.action} of {intent.started}, backup {intent.backup}"


def plan_apply(host: Host, param_text: str, boot_setup: str | None) -> tuple[Plan, Snapshot]:
    from mlxfix.cmdline import Param
    from mlxfix.plan import make_apply_plan

    param = Param.parse(param_text)
    snap = snapshot(host)
    setup = detect(snap, boot_setup)
    interrupted = _interrupted(snap)
    plan = make_apply_plan(snap, setup, param, finishing=interrupted)
    return plan, snap


def apply(
    host: Host,
    *,
    param: str,
    dry_run: bool,
    boot_setup: str | None,
    confirm: Callable[[Plan], bool],
    progress: Progress | None = None,
    no_update: bool = False,
) -> ChangeReport:
    """``mlxfix apply``: plan; print it (dry run) or execute it after confirmation."""
    report = ChangeReport("apply", host.label, host.root, dry_run, param)
    try:
        plan, _ = plan_apply(host, param, boot_setup)
        plan = _without_commands(plan, report) if no_update else plan
        report.plan = plan
        report.warnings += plan.warnings
        if dry_run or not (plan.writes or plan.commands):
            return report
        if not confirm(plan):
            raise Refused("not confirmed; nothing was changed")
        report.confirmed = True
        from mlxfix.execute import Outcome, execute

        report.outcome = Outcome()
        execute(host, plan, _hostname(host), progress, report.outcome)
    except MlxfixError as exc:
        report.error = exc
        report.errors.append(str(exc))
    return report


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
    from mlxfix.plan import make_rollback_plan

    report = ChangeReport("rollback", host.label, host.root, dry_run, "")
    try:
        snap = snapshot(host)
        intent = backup.read_intent(host) if snap.exists(INTENT) else None
        chosen = backup_id or (intent.backup if intent is not None and intent.backup else None)
        manifest, stored = backup.load(host, chosen)
        report.param = manifest.param
        paths = [f.path for f in manifest.files]
        current = host.gather(paths)
        snap.files.update(current.files)
        setup = _setup_for(snap, manifest, boot_setup)
        plan = make_rollback_plan(snap, setup, manifest, stored, force=force, interrupted=intent is not None)
        plan = _without_commands(plan, report) if no_update else plan
        report.plan = plan
        report.warnings += plan.warnings
        if dry_run or not (plan.writes or plan.commands):
            if not dry_run and intent is not None:
                backup.clear_intent(host)
            return report
        if not confirm(plan):
            raise Refused("not confirmed; nothing was changed")
        report.confirmed = True
        from mlxfix.execute import Outcome, execute

        report.outcome = Outcome()
        execute(host, plan, _hostname(host), progress, report.outcome)
        if intent is not None:
            backup.clear_intent(host)
    except MlxfixError as exc:
        report.error = exc
        report.errors.append(str(exc))
    return report


def _without_commands(plan: Plan, report: ChangeReport) -> Plan:
    """--no-update: keep the file writes, leave the commands to the admin, and say which."""
    if plan.commands:
        todo = "; ".join(shlex.join(c.argv) for c in plan.commands)
        report.warnings.append(f"--no-update: the boot configuration was not regenerated; run: {todo}")
    return plan._replace(commands=())


def _setup_for(snap: Snapshot, manifest: Manifest, override: str | None) -> BootSetup:
    """The boot setup to regenerate with after a restore: detected now, else the recorded one."""
    try:
        return detect(snap, override)
    except Refused:
        return detect(snap, manifest.boot_setup)


def backups(host: Host) -> tuple[list[Manifest], list[str]]:
    from mlxfix import backup

    return backup.list_backups(host)


def _hostname(host: Host) -> str:
    import socket

    return socket.gethostname() if host.label == "localhost" else host.label


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
