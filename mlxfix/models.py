"""What leaves the process as JSON: one versioned document per command, built with pydantic.

The keys are a contract with automation (Ansible plays parse them): a test pins them. Add keys, never
rename or remove them without bumping ``version``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlxfix import __version__

if TYPE_CHECKING:
    from mlxfix.backup import Manifest
    from mlxfix.commands import ChangeReport

__all__ = ["BackupsResult", "ChangeResult", "change_result"]

VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileChange(_Model):
    path: str
    diff: str
    sha256_before: str
    sha256_after: str
    mode: str


class CommandRecord(_Model):
    argv: list[str]
    ran: bool
    exit_code: int | None
    output_tail: str
    note: str = ""


class BootSetupInfo(_Model):
    name: str
    title: str
    evidence: list[str]


class CmdlineInfo(_Model):
    before: str | None
    after: str | None


class ChangeResult(_Model):
    """``mlxfix apply --json`` and ``mlxfix rollback --json``."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str
    host: str
    root: str
    dry_run: bool
    changed: bool
    would_change: bool
    param: str
    boot_setup: BootSetupInfo | None
    target: str | None
    cmdline: CmdlineInfo
    files: list[FileChange]
    backup: str | None
    commands: list[CommandRecord]
    reboot_required: bool
    rebooting: bool
    notes: list[str]
    warnings: list[str]
    errors: list[str]
    exit_code: int


def change_result(report: ChangeReport, exit_code: int) -> ChangeResult:
    plan, outcome = report.plan, report.outcome
    files: list[FileChange] = []
    commands: list[CommandRecord] = []
    if plan is not None:
        files = [
            FileChange(
                path=w.path,
                diff=w.diff(),
                sha256_before=w.before_sha256,
                sha256_after=w.after_sha256,
                mode=f"{w.mode & 0o7777:04o}",
            )
            for w in plan.writes
        ]
        if outcome is not None and outcome.commands:
            commands = [
                CommandRecord(
                    argv=list(c.argv), ran=c.exit_code is not None, exit_code=c.exit_code, output_tail=c.output_tail, note=c.note
                )
                for c in outcome.commands
            ]
        else:
            note = "dry run" if report.dry_run else "not run"
            commands = [
                CommandRecord(argv=list(c.argv), ran=False, exit_code=None, output_tail="", note=note) for c in plan.commands
            ]
    backup_id = outcome.backup.id if outcome is not None and outcome.backup is not None else None
    return ChangeResult(
        command=report.command,
        host=report.host,
        root=report.root,
        dry_run=report.dry_run,
        changed=report.changed and not (outcome is not None and outcome.restored),
        would_change=report.would_change,
        param=report.param,
        boot_setup=BootSetupInfo(name=plan.setup.name, title=plan.setup.title, evidence=list(plan.setup.evidence))
        if plan
        else None,
        target=plan.target if plan else None,
        cmdline=CmdlineInfo(before=plan.before if plan else None, after=plan.after if plan else None),
        files=files,
        backup=backup_id,
        commands=commands,
        reboot_required=report.reboot_required and not report.dry_run,
        rebooting=report.rebooting,
        notes=list(plan.notes) if plan else [],
        warnings=report.warnings,
        errors=report.errors + list(getattr(report.error, "steps", []) or []),
        exit_code=exit_code,
    )


class BackupFile(_Model):
    path: str
    sha256: str
    size: int
    mode: str
    existed: bool


class BackupInfo(_Model):
    id: str
    time: str
    action: str
    param: str
    why: str
    boot_setup: str
    files: list[BackupFile]


class BackupsResult(_Model):
    """``mlxfix backups --json``: newest first."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str = "backups"
    host: str
    root: str
    backups: list[BackupInfo]
    problems: list[str]
    exit_code: int = 0


def backups_result(host: str, root: str, manifests: list[Manifest], problems: list[str]) -> BackupsResult:
    return BackupsResult(
        host=host,
        root=root,
        backups=[
            BackupInfo(
                id=m.id,
                time=m.created,
                action=m.action,
                param=m.param,
                why=m.reason,
                boot_setup=m.boot_setup,
                files=[
                    BackupFile(path=f.path, sha256=f.sha256, size=f.size, mode=f"{f.mode & 0o7777:04o}", existed=f.existed)
                    for f in m.files
                ],
            )
            for m in manifests
        ],
        problems=problems,
    )


def dump(model: BaseModel) -> str:
    return model.model_dump_json(indent=2)


def error_document(command: str, message: str, exit_code: int) -> dict[str, Any]:
    """The JSON printed when even the options could not be understood."""
    return {"version": VERSION, "mlxfix_version": __version__, "command": command, "errors": [message], "exit_code": exit_code}
