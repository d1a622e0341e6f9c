"""What leaves the process as JSON: one versioned document per command, built with pydantic.

The keys are a contract with automation (Ansible plays parse them): a test pins them. Add keys, never
rename or remove them without bumping ``version``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlxfix import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mlxfix.backup import Listing
    from mlxfix.commands import ChangeReport, StatusReport
    from mlxfix.diagnose import Diagnosis, LogLine, Verification

__all__ = [
    "BackupsResult",
    "ChangeResult",
    "DiagnoseResult",
    "FailureResult",
    "StatusResult",
    "VerifyResult",
    "change_result",
    "diagnose_result",
    "failure_result",
    "status_result",
    "verify_result",
]

VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SshInfo(_Model):
    """How chatty a ``--host`` run was: SSH connections opened and commands sent over them."""

    connections: int
    round_trips: int


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


class PlannedNextBoot(_Model):
    """apply: the entry the next boot takes, and its kernel command line now and once regenerated."""

    entry: str
    source: str
    why: str
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
    backup: str | None  # the backup this run saved (what undoes it)
    restores: str | None = None  # rollback: the backup it puts back
    commands: list[CommandRecord]
    reboot_required: bool
    rebooting: bool
    notes: list[str]
    warnings: list[str]
    errors: list[str]
    exit_code: int
    ssh: SshInfo | None = None  # null on the local host
    verification: WaitedVerification | None = None
    next_boot: PlannedNextBoot | None = None  # null where the generated entries cannot be read
    proof: str | None = None  # apply: what the read-back of the generated entries showed
    effect: str | None = None  # "applied", "rolled back", or "re-applied" (the rollback of a rollback)
    trial: TrialInfo | None = None  # apply --trial: the one-time boot


class TrialInfo(_Model):
    """apply --trial: the one-time boot, and the entry every other boot takes."""

    entry: str | None  # the trial entry (null: nothing to try, the next boot has the parameter)
    armed: bool  # the next boot takes it (the arming command ran and succeeded)
    fallback: str | None  # the entry a normal boot takes, after the trial and after a panic


class WaitedVerification(_Model):
    """apply/rollback --wait: verify, run once the host came back."""

    ok: bool
    failed: list[str]
    checks: list[CheckInfo]


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
    commands += [
        CommandRecord(argv=list(argv), ran=False, exit_code=None, output_tail="", note=note) for argv, note in report.left_to_run
    ]
    if report.reboot is not None:
        argv, code, tail = report.reboot
        commands.append(CommandRecord(argv=list(argv), ran=True, exit_code=code, output_tail=tail, note="reboot"))
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
        restores=plan.backup_id if plan is not None and report.command == "rollback" else None,
        commands=commands,
        reboot_required=report.reboot_required and not report.dry_run,
        rebooting=report.rebooting,
        notes=(list(plan.notes) if plan else []) + _hint(report.error),
        warnings=report.warnings,
        errors=report.errors + list(getattr(report.error, "steps", []) or []),
        exit_code=exit_code,
        verification=WaitedVerification(
            ok=report.verification.ok,
            failed=[c.name for c in report.verification.checks if not c.ok],
            checks=[CheckInfo(name=c.name, ok=c.ok, detail=c.detail) for c in report.verification.checks],
        )
        if report.verification is not None
        else None,
        next_boot=PlannedNextBoot(
            entry=plan.next_entry[0],
            source=plan.next_entry[1],
            why=plan.next_entry[2],
            before=plan.next_before,
            after=plan.next_after,
        )
        if plan is not None and plan.next_entry is not None
        else None,
        proof=outcome.proof or None if outcome is not None else None,
        effect=plan.effect if plan is not None else None,
        trial=_trial_info(report) if plan is not None and plan.reason.startswith("apply --trial") else None,
    )


def _trial_info(report: ChangeReport) -> TrialInfo:
    plan, outcome = report.plan, report.outcome
    assert plan is not None
    trial = plan.trial
    if trial is None:  # nothing to try, or armed already
        armed = any("armed already" in n for n in plan.notes)
        return TrialInfo(entry=plan.next_entry[0] if armed and plan.next_entry else None, armed=armed, fallback=None)
    arming = {c.argv for c in trial.commands}
    ran = [c for c in (outcome.commands if outcome is not None else []) if c.argv in arming]
    armed = bool(ran) and all(c.exit_code == 0 for c in ran) and report.error is None and not report.dry_run
    return TrialInfo(entry=trial.entry, armed=armed, fallback=trial.fallback)


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
    intact: bool  # false: a saved copy is missing or does not match its sha256; rollback refuses it
    # how the run that made it ended: done, failed-restored, failed-not-restored, interrupted (its intent
    # record is there), finished (by a later run: see outcome_detail), unknown
    outcome: str
    outcome_detail: str
    files: list[BackupFile]


class KeptBackup(_Model):
    id: str
    why: str


class PruneInfo(_Model):
    """``backups --prune``: what was removed (a dry run: would be), and why each other backup stays."""

    dry_run: bool
    keep: int
    removed: list[str]  # backup ids, newest first
    kept: list[KeptBackup]
    leftovers: list[str]  # incomplete (.partial-*) and half-removed (.pruned-*) entries, removed too


class BackupsResult(_Model):
    """``mlxfix backups --json``: newest first (after a prune: what is left)."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str = "backups"
    host: str
    root: str
    backups: list[BackupInfo]
    problems: list[str]
    errors: list[str] = []
    exit_code: int = 0
    ssh: SshInfo | None = None  # null on the local host
    prune: PruneInfo | None = None  # null without --prune


def backups_result(host: str, root: str, listing: Listing, prune: PruneInfo | None = None, exit_code: int = 0) -> BackupsResult:
    manifests, problems, damaged, endings = listing
    return BackupsResult(
        host=host,
        root=root,
        prune=prune,
        exit_code=exit_code,
        backups=[
            BackupInfo(
                id=m.id,
                time=m.created,
                action=m.action,
                param=m.param,
                why=m.reason,
                boot_setup=m.boot_setup,
                intact=m.id not in damaged,
                outcome=endings.get(m.id, ("unknown", ""))[0],
                outcome_detail=endings.get(m.id, ("unknown", ""))[1],
                files=[
                    BackupFile(path=f.path, sha256=f.sha256, size=f.size, mode=f"{f.mode & 0o7777:04o}", existed=f.existed)
                    for f in m.files
                ],
            )
            for m in manifests
        ],
        problems=problems,
    )


def dump(model: BaseModel, ssh: tuple[int, int] | None = None) -> str:
    """The document, with the SSH figures of a ``--host`` run: (connections, round trips)."""
    if ssh is not None:
        model = model.model_copy(update={"ssh": SshInfo(connections=ssh[0], round_trips=ssh[1])})
    try:
        return model.model_dump_json(indent=2)
    except ValueError:  # a file name that is not UTF-8 (its odd bytes are kept as lone surrogates)
        import json

        return json.dumps(_printable(model.model_dump(mode="json")), indent=2, ensure_ascii=False)


def _printable(value: Any) -> Any:
    """Strings made valid UTF-8 for the JSON document: a byte that is not UTF-8 shows as ``\\xNN``."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


class FailureResult(_Model):
    """Any command's ``--json`` when it could not even start (a usage error, an unreachable host): the
    keys every document has, with ``errors`` saying why."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str
    host: str
    root: str
    status: str | None = None  # diagnose and verify: "error"
    ok: bool | None = None  # verify: false
    warnings: list[str]
    errors: list[str]
    exit_code: int
    ssh: SshInfo | None = None


def _hint(error: object) -> list[str]:
    """A refusal's advice (what the admin can do instead), as the notes of the document."""
    hint = getattr(error, "hint", None)
    return [f"hint: {hint}"] if hint else []


def failure_result(
    command: str, host: str, root: str, message: str, exit_code: int, *, param: str = "", hint: str | None = None
) -> BaseModel:
    """The document of a command that failed before it had a result: its own model where one can be
    built empty (apply and rollback: ``changed`` false, no files), else the common keys."""
    if command in ("apply", "rollback"):
        return ChangeResult(
            command=command,
            host=host,
            root=root,
            dry_run=False,
            changed=False,
            would_change=False,
            param=param,
            boot_setup=None,
            target=None,
            cmdline=CmdlineInfo(before=None, after=None),
            files=[],
            backup=None,
            commands=[],
            reboot_required=False,
            rebooting=False,
            notes=[f"hint: {hint}"] if hint else [],
            warnings=[],
            errors=[message],
            exit_code=exit_code,
        )
    if command == "status":
        return StatusResult(
            host=host,
            root=root,
            param=param,
            boot_setup=None,
            state="error",
            configured=None,
            next_boot=None,
            running=None,
            warnings=[],
            errors=[message],
            exit_code=exit_code,
        )
    if command == "backups":
        return BackupsResult(host=host, root=root, backups=[], problems=[], errors=[message], exit_code=exit_code)
    return FailureResult(
        command=command,
        host=host,
        root=root,
        status="error" if command in ("diagnose", "verify") else None,
        ok=False if command == "verify" else None,
        warnings=[],
        errors=[message],
        exit_code=exit_code,
    )


# -- status ---------------------------------------------------------------------------------------------


class TokenInfo(_Model):
    token: str
    origin: str


class ConfiguredInfo(_Model):
    cmdline: str | None
    has_param: bool
    source: str
    tokens: list[TokenInfo]


class NextBootInfo(_Model):
    read: bool  # false: the generated entries could not be read here (``why`` says why)
    entry: str | None  # the entry the next boot takes
    source: str | None  # file:line of that entry
    cmdline: str | None  # what the kernel gets from it
    has_param: bool
    why: str  # how the entry was chosen
    entries_missing: list[str]  # entries (the next boot's, every generated non-recovery one) without the parameter
    entries: int  # how many boot entries were found


class RunningInfo(_Model):
    cmdline: str | None
    has_param: bool


class StatusResult(_Model):
    """``mlxfix status --json``: the three layers of the kernel command line, and the state."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str = "status"
    host: str
    root: str
    param: str
    boot_setup: BootSetupInfo | None
    state: str  # in-effect, pending-reboot, drift, absent; "error" when it could not be told
    configured: ConfiguredInfo | None
    next_boot: NextBootInfo | None
    running: RunningInfo | None
    warnings: list[str]
    errors: list[str]
    exit_code: int
    ssh: SshInfo | None = None  # null on the local host


def status_result(report: StatusReport) -> StatusResult:
    from mlxfix import cmdline

    param = cmdline.Param.parse(report.param)
    lay = report.layers

    def has(line: str | None) -> bool:
        return line is not None and cmdline.in_effect(line, param)

    nb = lay.next_boot
    entry = nb.entry
    return StatusResult(
        host=report.host,
        root=report.root,
        param=report.param,
        boot_setup=BootSetupInfo(name=report.setup.name, title=report.setup.title, evidence=list(report.setup.evidence)),
        state=report.state,
        configured=ConfiguredInfo(
            cmdline=lay.configured.cmdline,
            has_param=lay.configured.has(param),
            source=lay.configured.source,
            tokens=[TokenInfo(token=t.token, origin=t.origin) for t in lay.configured.tokens],
        ),
        next_boot=NextBootInfo(
            read=nb.read,
            entry=entry.name if entry is not None else None,
            source=entry.source if entry is not None else None,
            cmdline=entry.cmdline if entry is not None else None,
            has_param=has(entry.cmdline) if entry is not None else False,
            why=nb.why,
            entries_missing=[e.name for e in lay.missing(param)] if nb.read else [],
            entries=len(nb.entries),
        ),
        running=RunningInfo(cmdline=lay.running.cmdline, has_param=has(lay.running.cmdline)),
        warnings=report.warnings,
        errors=[],
        exit_code=report.exit_code,
    )


# -- diagnose and verify -----------------------------------------------------------------------------


class LogLineInfo(_Model):
    time: str  # of the first time it was logged in this boot
    text: str
    kind: str
    address: str | None
    count: int = 1  # how many times this boot logged it


class DeviceInfo(_Model):
    address: str
    model: str
    device_id: str
    subsystem: str
    driver: str | None
    driver_override: str | None
    interfaces: list[str]
    is_vf: bool
    sriov_totalvfs: int | None
    bar0_assigned: bool | None
    bar2_assigned: bool | None
    bar0: str | None
    bar2: str | None
    status: str
    evidence: list[str]
    log: list[LogLineInfo]


class CmdlineState(_Model):
    running: str | None
    running_realloc: str | None
    configured: str | None
    configured_realloc: str | None
    configured_source: str


class ContextInfo(_Model):
    virtual: str | None
    virtual_evidence: str
    proxmox: str | None
    uefi: bool
    board: str
    bios: str


class KernelLog(_Model):
    source: str
    lines: list[LogLineInfo]


class DiagnoseResult(_Model):
    """``mlxfix diagnose --json``."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str = "diagnose"
    host: str
    root: str
    status: str
    devices: list[DeviceInfo]
    modules: dict[str, bool]
    cmdline: CmdlineState
    boot_setup: BootSetupInfo | None  # null when no boot setup mlxfix knows was found
    boot_setup_error: str | None = None  # then: why (what was found, and what to do instead)
    kernel_log: KernelLog
    context: ContextInfo
    advice: list[str]
    warnings: list[str]
    errors: list[str]
    exit_code: int
    ssh: SshInfo | None = None  # null on the local host


class CheckInfo(_Model):
    name: str
    ok: bool
    detail: str


class VerifyResult(_Model):
    """``mlxfix verify --json``."""

    version: int = VERSION
    mlxfix_version: str = __version__
    command: str = "verify"
    host: str
    root: str
    ok: bool
    param: str
    checks: list[CheckInfo]
    failed: list[str]
    status: str
    devices: list[DeviceInfo]
    warnings: list[str]
    errors: list[str]
    exit_code: int
    ssh: SshInfo | None = None  # null on the local host
    trial: bool = False  # this boot is a trial boot (apply --trial): checked, but not yet the default


def _log(lines: Iterable[LogLine]) -> list[LogLineInfo]:
    return [LogLineInfo(time=ln.stamp, text=ln.text, kind=ln.kind, address=ln.address, count=ln.repeats) for ln in lines]


def _devices(d: Diagnosis) -> list[DeviceInfo]:
    return [
        DeviceInfo(
            address=x.address,
            model=x.model,
            device_id=f"15b3:{x.device_id[2:]}",
            subsystem=x.subsystem,
            driver=x.driver,
            driver_override=x.driver_override,
            interfaces=list(x.interfaces),
            is_vf=x.is_vf,
            sriov_totalvfs=x.sriov_totalvfs,
            bar0_assigned=x.bar0_assigned,
            bar2_assigned=x.bar2_assigned,
            bar0=x.bar0.describe() if x.bar0 else None,
            bar2=x.bar2.describe() if x.bar2 else None,
            status=x.status,
            evidence=list(x.evidence),
            log=_log(x.log),
        )
        for x in d.devices
    ]


def diagnose_result(host: str, root: str, d: Diagnosis, exit_code: int) -> DiagnoseResult:
    c = d.context
    return DiagnoseResult(
        host=host,
        root=root,
        status=d.status,
        devices=_devices(d),
        modules=d.modules,
        cmdline=CmdlineState(
            running=d.running,
            running_realloc=d.running_realloc,
            configured=d.configured,
            configured_realloc=d.configured_realloc,
            configured_source=d.configured_source,
        ),
        boot_setup=BootSetupInfo(name=d.boot_setup[0], title=d.boot_setup[1], evidence=list(d.boot_setup[2]))
        if d.boot_setup is not None
        else None,
        boot_setup_error=d.boot_setup_error or None,
        kernel_log=KernelLog(source=d.log_source, lines=_log(d.log)),
        context=ContextInfo(
            virtual=c.virtual, virtual_evidence=c.virtual_evidence, proxmox=c.proxmox, uefi=c.uefi, board=c.board, bios=c.bios
        ),
        advice=list(d.advice),
        warnings=list(d.warnings),
        errors=[],
        exit_code=exit_code,
    )


def verify_result(host: str, root: str, v: Verification, param: str, exit_code: int) -> VerifyResult:
    return VerifyResult(
        host=host,
        root=root,
        ok=v.ok,
        param=param,
        checks=[CheckInfo(name=c.name, ok=c.ok, detail=c.detail) for c in v.checks],
        failed=[c.name for c in v.checks if not c.ok],
        status=v.diagnosis.status,
        devices=_devices(v.diagnosis),
        warnings=list(v.diagnosis.warnings),
        errors=[],
        exit_code=exit_code,
        trial=v.diagnosis.trial,
    )
