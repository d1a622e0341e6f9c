"""What each command does once its options are parsed: the core call, the human or JSON report, the
exit code. No typer here: ``typer_app`` declares the options and help and calls these; ``argv`` reaches
them directly for a plain command line, without importing typer at all (see mlxfix.cli.entry).

Each command takes its options as keyword arguments named as in ``typer_app`` and returns the exit
code; mlxfix's errors become a line on stderr and an exit code in ``_handled``, the rest of the
process's manners (the cycle collector, stdout going away, Ctrl-C while starting) in ``execute``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from mlxfix.errors import ExitCode, Interrupted, MlxfixError, Refused, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mlxfix.backup import Pruning
    from mlxfix.cli.render import Style
    from mlxfix.commands import ChangeReport
    from mlxfix.host.local import CommandResult, Host
    from mlxfix.host.ssh import SshHost
    from mlxfix.plan import Plan

# -- helpers -------------------------------------------------------------------------------------------

_OPEN: list[Any] = []  # SSH hosts to close when the command ends
_CHANGING: list[bool] = []  # set once an apply or rollback that is not a dry run has begun (see output_failed)
_EARLY: list[SshHost] = []  # the connection mlxfix.cli.entry started before the CLI was imported, if any


def _handled(func: Callable[..., int]) -> Callable[..., int]:
    """The one place where mlxfix's errors become a line on stderr and an exit code."""
    import functools

    changes = func.__name__ in ("apply", "rollback")

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> int:
        try:
            try:
                if changes and not kwargs.get("dry_run"):
                    from mlxfix import stops

                    _CHANGING.append(True)

                    with stops.guard():  # a hang-up, a kill or a lost output is handled as Ctrl-C is
                        return func(**kwargs)
                return func(**kwargs)
            finally:
                _Spinner.stop_all()  # an error or Ctrl-C while a command ran: its line erased, the cursor back
                while _OPEN:  # end SSH connections before the exit code is decided
                    remote = _OPEN.pop()
                    with contextlib.suppress(OSError):  # a dead link must not hide the error that killed it
                        remote.close(wait=False)
        except MlxfixError as exc:
            sys.stderr.write(f"mlxfix: {exc}\n")
            if exc.hint:
                sys.stderr.write(f"hint: {exc.hint}\n")
            if kwargs.get("as_json"):
                _failure_document(func.__name__, kwargs, str(exc), int(exc.exit_code), exc.hint)
            return int(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C (or a stop) before anything was changed
            err = Interrupted.by(exc)
            message = err.message if hasattr(exc, "why") else "interrupted"
            sys.stderr.write(f"mlxfix: {message}\n")
            if kwargs.get("as_json"):
                _failure_document(func.__name__, kwargs, message, int(err.exit_code))
            return int(err.exit_code)

    return wrapper


def _failure_document(command: str, options: dict[str, Any], message: str, exit_code: int, hint: str | None = None) -> None:
    """--json promises one document on stdout, also when the command could not even start."""
    from mlxfix.models import dump, failure_result

    host = options.get("target") or "localhost"
    doc = failure_result(
        command, host, options.get("root") or "/", message, exit_code, param=options.get("param") or "", hint=hint
    )
    sys.stdout.write(dump(doc) + "\n")


def _human(as_json: bool) -> Any:
    """Where human text goes: stdout, or stderr when stdout carries JSON."""
    return sys.stderr if as_json else sys.stdout


def _interactive() -> bool:
    return sys.stdin.isatty() and _interactive_stderr()


def _interactive_stderr() -> bool:
    stops = sys.modules.get("mlxfix.stops")
    if stops is not None and stops.STATE.stopped is not None:  # the terminal hung up, or mlxfix was told to end
        return False
    return sys.stderr.isatty()


def _ask(question: str, *, ctrl_c: bool = True) -> bool:
    """y/n on the terminal: y, yes, n and no (in any case) are answers; anything else, an empty line
    too, asks again. Ctrl-D (the end of input) is a "no". Ctrl-C is an interruption (130), not a "no";
    ``ctrl_c=False`` (the reboot prompt, after the change is made): Ctrl-C is a "no". Whatever ends the
    question, the line is ended, so that what mlxfix says next starts on a line of its own."""
    while True:
        try:
            with _ctrl_c_raises():  # from before the question shows: a Ctrl-C as soon as it is seen is taken
                sys.stderr.write(f"{question} [y/n] ")
                sys.stderr.flush()
                answer = _read_answer()
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            if ctrl_c:
                raise
            return False
        if not answer.endswith("\n"):  # Ctrl-D: the terminal ended no line
            sys.stderr.write("\n")
            if not answer.strip():
                return False
        word = answer.strip().lower()
        if word in ("y", "yes"):
            return True
        if word in ("n", "no"):
            return False
        sys.stderr.write("Please answer y (yes) or n (no).\n")


def _read_answer() -> str:
    """A line from the terminal; a terminal that hung up (EIO) is a stop (see mlxfix.stops), or, once
    the change is made, the end of input."""
    try:
        return sys.stdin.readline()
    except OSError as exc:
        import errno

        if exc.errno != errno.EIO:
            raise
        from mlxfix import stops

        stops.lost_input()
        return ""


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here, also after the change is made (see _Progress.committed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _needs(as_json: bool, dry_run: bool = True) -> tuple[str, ...]:
    """What a command imports once it has read the host: the JSON models; the backup and executor."""
    return (("mlxfix.models",) if as_json else ()) + (() if dry_run else ("mlxfix.backup", "mlxfix.execute"))


def _host(root: str, target: str | None = None, ssh_options: list[str] | None = None, *, needs: tuple[str, ...] = ()) -> Host:
    """This machine, or the one --host names (its SSH connection already on its way). ``needs``: the
    modules the command imports after its first read, imported while the login is still under way."""
    if target is not None:
        from mlxfix.host.ssh import SshHost

        early: SshHost | None = _EARLY.pop() if _EARLY else None
        if early is not None and early.made_for(target, root, ssh_options or []):
            remote = early  # started by mlxfix.cli.entry before the CLI was imported
        else:
            if early is not None:
                early.close()
            remote = SshHost(target, root, ssh_options or [])
        _OPEN.append(remote)
        remote.meanwhile(needs)
        remote.start()  # the handshake overlaps the imports and the planning that follow
        return remote
    from mlxfix.host.local import LocalHost

    if ssh_options:
        raise UsageError("--ssh-option needs --host")
    if root != "/" and not os.path.isdir(root):
        raise UsageError(f"--root {root}: no such directory")
    return LocalHost(root)


def _ssh_figures(host: Host) -> tuple[int, int] | None:
    """(connections, round trips) of a --host run, for the JSON document; None on the local host."""
    connections = getattr(host, "connections", None)
    return None if connections is None else (connections, getattr(host, "round_trips", 0))


class _Spinner:
    """rich's spinner and elapsed time on stderr, only when stderr is a terminal (not TERM=dumb): no
    control character ever reaches a pipe or a file. It is transient: stopping it erases its line, so
    every line printed around it ends cleanly. rich is imported only when one is shown."""

    active: ClassVar[list[_Spinner]] = []  # stopped by _handled whatever ends the command

    def __init__(self, text: Callable[[], str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner
        from rich.text import Text

        from mlxfix.cli.render import color_enabled

        class _Now:
            def __rich__(self) -> Text:
                return Text(text())

        console = Console(
            file=sys.stderr, force_terminal=True, color_system="standard" if color_enabled(sys.stderr) else None, highlight=False
        )
        self._live = Live(
            Spinner("line", text=_Now(), style="cyan"),
            console=console,
            transient=True,
            refresh_per_second=10,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        _Spinner.active.append(self)

    @staticmethod
    def wanted() -> bool:
        return _interactive_stderr() and os.environ.get("TERM") != "dumb"

    def pause(self) -> None:
        self._live.stop()

    def resume(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()
        if self in _Spinner.active:
            _Spinner.active.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        while cls.active:
            cls.active[-1].stop()


class _Progress:
    """Steps as lines; command output streamed; a spinner on a terminal while a command runs."""

    def __init__(self, out: Any, style: Style) -> None:
        self.out = out
        self.style = style
        self._spinner: _Spinner | None = None

    def step(self, text: str) -> None:
        self._print(f"  {text}")

    def command_start(self, argv: tuple[str, ...]) -> None:
        import shlex

        label = shlex.join(argv)
        self._print(f"  running {label} ...")
        if _Spinner.wanted():
            started = time.monotonic()
            self._spinner = _Spinner(lambda: f"{label} ({time.monotonic() - started:.0f} s)")

    def output(self, line: str) -> None:
        self._print(f"    | {line}")

    def committed(self) -> None:
        """The change is made: Ctrl-C is ignored from here on (but at the reboot prompt and while
        waiting for the host), or the report would say "interrupted" of a change that stays."""
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def command_end(self, result: CommandResult) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        del result

    def _print(self, text: str) -> None:
        """A whole line, with the spinner (if any) off the screen while it is written."""
        spinner = self._spinner
        if spinner is not None:
            spinner.pause()
        self.out.write(text + "\n")
        self.out.flush()
        if spinner is not None:
            spinner.resume()


def _name_target(host: Host, out: Any, style: Style) -> None:
    """With --host, a human report starts by naming its target: fleet logs interleave many hosts."""
    if host.label != "localhost":
        out.write(f"{style.bold('Target:')} {host.label}\n")


def _confirmer(yes: bool, out: Any, style: Style, shown: list[bool], action: str, runs_commands: bool) -> Callable[[Plan], bool]:
    from mlxfix.cli.render import render_plan

    def confirm(plan: Plan) -> bool:
        render_plan(plan, out, style, runs_commands=runs_commands)
        shown.append(True)
        out.write("\n")
        out.flush()
        if yes:
            return True
        if not _interactive():
            raise Refused(f"no terminal to confirm on: pass --yes to {action} without asking (or --dry-run to only look)")
        command = "apply" if action == "apply" else "rollback"
        again = f"run mlxfix {command} again to be asked again (--dry-run only shows the plan)"
        try:
            if plan.reapplies:  # the backup of a rollback: restoring it applies the parameter again
                return _ask(f"Restore backup {plan.backup_id}, which applies {plan.param} again?")
            return _ask(f"{action.capitalize()} these changes?")
        except KeyboardInterrupt as exc:
            raise Interrupted.by(exc, " at the question", "; nothing was changed", hint=again) from None

    return confirm


class _WaitLine:
    """Progress while a rebooting host is away: a spinner on a terminal's stderr, else a line every
    30 s; ``close`` leaves one whole line saying how long it waited."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.last = -1.0
        self.text = ""
        self._spinner: _Spinner | None = None

    def __call__(self, label: str, elapsed: float) -> None:
        self.text = f"waiting for {label} to come back: {int(elapsed) // 60}:{int(elapsed) % 60:02d}"
        if _Spinner.wanted():
            if self._spinner is None:
                self._spinner = _Spinner(lambda: self.text)
        elif elapsed - self.last >= 30 or self.last < 0:
            self.out.write(self.text + "\n")
            self.out.flush()
            self.last = elapsed

    def close(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
            self.out.write(self.text + "\n")
            self.out.flush()


def _wait(wait: bool, timeout: float, target: str | None, reboot: bool | None) -> float | None:
    """--wait's bound in seconds (None: no waiting), checked before anything is read or changed."""
    if not wait:
        return None
    if target is None:
        raise UsageError("--wait needs --host: mlxfix cannot wait for its own host to reboot")
    if reboot is False:
        raise UsageError("--wait waits for the reboot: it cannot go with --no-reboot")
    if not timeout > 0:
        raise UsageError(f"--wait-timeout {timeout:g}: give a number of seconds above 0")
    return timeout


def _finish_change(
    report: ChangeReport,
    host: Host,
    *,
    as_json: bool,
    reboot: bool | None,
    yes: bool,
    shown: bool,
    style: Style,
    wait: float | None = None,
) -> int:
    """Reboot step, then the report (human or JSON); returns the exit code."""
    from mlxfix.cli.render import render_change

    out = _human(as_json)
    render_change(report, out, style, show_plan=not shown)
    boot_id = None
    if report.error is None and report.changed and report.outcome is not None:
        try:
            boot_id = _maybe_reboot(report, host, reboot=reboot, yes=yes, out=out)
        except MlxfixError as exc:  # the change is made: say the reboot did not happen, keep the report
            report.warnings.append(f"the reboot could not be scheduled ({exc}); reboot by hand")
            out.write(style.yellow(f"warning: the reboot could not be scheduled ({exc}); reboot by hand") + "\n")
    code = report.error.exit_code if report.error is not None else ExitCode.OK
    if wait is not None and report.rebooting:
        from mlxfix import commands
        from mlxfix.cli.render import render_verification

        line = _WaitLine(out)
        try:
            with _ctrl_c_raises():  # Ctrl-C stops the waiting; the change stays, and the report says so
                try:
                    commands.wait_for_reboot(host, boot_id, wait, line)
                finally:
                    line.close()
                report.verification = commands.verify(
                    host, report.param, present=report.plan is not None and report.plan.effect != "rolled back"
                )
        except (MlxfixError, KeyboardInterrupt) as exc:  # the change is made: the report must still come out
            why = str(exc) if isinstance(exc, MlxfixError) else "interrupted (Ctrl-C) while waiting for the host"
            sys.stderr.write(f"mlxfix: {why}\n")
            report.errors.append(why)
            code = ExitCode.NOT_VERIFIED
        else:
            render_verification(report.verification, out, style)
            code = ExitCode.OK if report.verification.ok else ExitCode.NOT_VERIFIED
    elif wait is not None and report.error is None and report.changed:
        report.warnings.append("--wait: no reboot was scheduled, so there was nothing to wait for")
        out.write(style.yellow("warning: --wait: no reboot was scheduled, so there was nothing to wait for") + "\n")
    if as_json:
        from mlxfix.models import change_result, dump

        sys.stdout.write(dump(change_result(report, int(code)), _ssh_figures(host)) + "\n")
    _log_change(report, host)
    return int(code)


def _log_change(report: ChangeReport, host: Host) -> None:
    """A change to a running system, and how it ended, in the system log of the machine mlxfix runs
    on: where an admin whose terminal went away (or a service manager's journal) finds it."""
    outcome = report.outcome
    if not host.runs_commands or outcome is None or outcome.backup is None:
        return  # a tree (--root), a dry run, or a refusal before anything was written
    from mlxfix import stops

    what = f"failed: {report.error}" if report.error is not None else f"done (backup {outcome.backup.id})"
    after = [w for w in stops.STATE.noted if report.error is None]
    if after:
        what += f"; after the change was complete: {'; '.join(dict.fromkeys(after))}, and it was left to complete"
    stops.log(f"{report.command} {report.param} on {host.label}: {what}", warning=report.error is not None or bool(after))


def _maybe_reboot(report: ChangeReport, host: Host, *, reboot: bool | None, yes: bool, out: Any) -> str | None:
    """The reboot step; returns the boot id from before a scheduled reboot (to wait for a new one)."""
    from mlxfix.commands import BOOT_ID, reboot_command

    remote = host.label != "localhost"
    if not host.runs_commands:
        if reboot:
            report.warnings.append("--root: not rebooting a tree; reboot the host that uses it")
            out.write("warning: --reboot: not rebooting a tree (--root); reboot the host that uses it\n")
        return None
    if reboot is False:
        return None
    if reboot is None:
        if yes or not _interactive():
            out.write("Reboot when it suits you (or pass --reboot next time).\n")
            return None
        if os.environ.get("SSH_CONNECTION") and not remote:
            out.write("You are connected over SSH: the session will drop; reconnect in a minute or two and run: mlxfix verify\n")
        if report.vm:
            out.write(f"Remember: {report.vm}.\n")
        if not _ask(f"Reboot {host.label if remote else 'now'}?", ctrl_c=False):
            verify = f"mlxfix verify --host {host.label}" if remote else "mlxfix verify"
            out.write(f"Not rebooting. The change takes effect at the next boot: reboot when it suits you, then run: {verify}\n")
            return None
    boot_id = (host.read(BOOT_ID).data or b"").decode().strip() or None
    argv = reboot_command(host)
    result = host.run(argv, timeout=60)
    if not result.ok and argv[0] == "systemd-run":  # no systemd as PID 1 (a container?): shutdown, then
        argv = ["shutdown", "-r", "+1", "mlxfix: rebooting to apply the kernel command line"]
        result = host.run(argv, timeout=60)
    report.reboot = (tuple(argv), result.exit_code, result.tail())
    if not result.ok:
        report.warnings.append(f"could not schedule the reboot ({' '.join(argv)}: exit {result.exit_code}); reboot by hand")
        return None
    report.rebooting = True
    if remote:
        out.write(
            f"{host.label} reboots in a few seconds; run mlxfix verify --host {host.label} once it is back (or use --wait).\n"
        )
    else:
        out.write("Rebooting in a few seconds.")
        if os.environ.get("SSH_CONNECTION"):
            out.write(" The SSH session will drop: reconnect in a minute or two and run: mlxfix verify")
        out.write("\n")
    return boot_id


# -- the commands ------------------------------------------------------------------------------------


@_handled
def apply(
    *,
    dry_run: bool,
    param: str,
    yes: bool,
    force: bool,
    no_update: bool,
    trial: bool,
    reboot: bool | None,
    wait: bool,
    wait_timeout: float,
    root: str,
    as_json: bool,
    boot_setup: str | None,
    target: str | None,
    ssh_option: list[str] | None,
) -> int:
    from mlxfix import commands
    from mlxfix.cli.render import Style

    out = _human(as_json)
    style = Style(out)
    waiting = _wait(wait, wait_timeout, target, reboot)
    host = _host(root, target, ssh_option, needs=_needs(as_json, dry_run))
    _name_target(host, out, style)
    shown: list[bool] = []
    progress = _Progress(out, style)
    confirm = _confirmer(yes, out, style, shown, "apply", host.runs_commands)
    report = commands.apply(
        host,
        param=param,
        dry_run=dry_run,
        boot_setup=boot_setup,
        confirm=confirm,
        progress=progress,
        no_update=no_update,
        force=force,
        trial=trial,
    )
    return _finish_change(
        report,
        host,
        as_json=as_json,
        reboot=reboot,
        yes=yes,
        shown=bool(shown),
        style=style,
        wait=waiting,
    )


@_handled
def rollback(
    *,
    dry_run: bool,
    backup: str | None,
    yes: bool,
    force: bool,
    no_update: bool,
    reboot: bool | None,
    wait: bool,
    wait_timeout: float,
    root: str,
    as_json: bool,
    boot_setup: str | None,
    target: str | None,
    ssh_option: list[str] | None,
) -> int:
    from mlxfix import commands
    from mlxfix.cli.render import Style

    out = _human(as_json)
    style = Style(out)
    waiting = _wait(wait, wait_timeout, target, reboot)
    host = _host(root, target, ssh_option, needs=_needs(as_json, dry_run))
    _name_target(host, out, style)
    shown: list[bool] = []
    report = commands.rollback(
        host,
        backup_id=backup,
        dry_run=dry_run,
        force=force,
        boot_setup=boot_setup,
        confirm=_confirmer(yes, out, style, shown, "roll back", host.runs_commands),
        progress=_Progress(out, style),
        no_update=no_update,
    )
    return _finish_change(
        report,
        host,
        as_json=as_json,
        reboot=reboot,
        yes=yes,
        shown=bool(shown),
        style=style,
        wait=waiting,
    )


@_handled
def backups(
    *,
    prune: bool,
    keep: int,
    dry_run: bool,
    yes: bool,
    root: str,
    as_json: bool,
    target: str | None,
    ssh_option: list[str] | None,
) -> int:
    from mlxfix import commands
    from mlxfix.cli.render import Style, render_backups

    given = [flag for flag, used in (("--keep", keep != 5), ("--dry-run", dry_run), ("--yes", yes)) if used]
    if given and not prune:
        raise UsageError(f"{given[0]} goes with --prune: mlxfix backups --prune {given[0]}")
    out = _human(as_json)
    style = Style(out)
    host = _host(root, target, ssh_option, needs=_needs(as_json, dry_run or not prune))
    if not prune:
        listing = commands.backups(host)
        code = ExitCode.FAILED if listing.problems else ExitCode.OK  # each problem is a warning line
        if as_json:
            from mlxfix.models import backups_result, dump

            doc = backups_result(host.label, host.root, listing, exit_code=int(code))
            sys.stdout.write(dump(doc, _ssh_figures(host)) + "\n")
        else:
            _name_target(host, sys.stdout, style)
            render_backups(listing, sys.stdout, style)
        return int(code)
    from mlxfix.cli.render import render_pruning

    _name_target(host, out, style)

    def confirm(pruning: Pruning) -> bool:
        render_pruning(pruning, out, style, dry_run=False, done=False)
        out.write("\n")
        out.flush()
        if yes:
            return True
        if not _interactive():
            raise Refused("no terminal to confirm on: pass --yes to prune without asking (or --dry-run to only look)")
        try:
            count = len(pruning.remove) + len(pruning.leftovers)
            return _ask(f"Remove {'this' if count == 1 else 'these'} {count}?")
        except KeyboardInterrupt:
            raise Interrupted("interrupted at the question (Ctrl-C); nothing was removed") from None

    report = commands.prune(host, keep, dry_run=dry_run, confirm=confirm)
    if as_json:
        from mlxfix.models import KeptBackup, PruneInfo, backups_result, dump

        info = PruneInfo(
            dry_run=dry_run,
            keep=keep,
            removed=[m.id for m in report.pruning.remove],
            kept=[KeptBackup(id=i, why=w) for i, w in report.pruning.kept],
            leftovers=report.pruning.leftovers,
        )
        result = backups_result(host.label, host.root, report.listing, info)
        sys.stdout.write(dump(result, _ssh_figures(host)) + "\n")
    if report.done or dry_run or not (report.pruning.remove or report.pruning.leftovers):
        render_pruning(report.pruning, out, style, dry_run=dry_run, done=report.done)
    for problem in report.listing.problems:
        out.write(style.yellow(f"warning: {problem}") + "\n")
    if report.done:
        left = len(report.listing.manifests)
        out.write(style.green(f"Done: {left} backup{'s' if left != 1 else ''} left (mlxfix backups lists them).") + "\n")
    return int(ExitCode.OK)


_DIAGNOSE_EXIT = {
    "affected": ExitCode.AFFECTED,
    "affected-dcs": ExitCode.AFFECTED,
    "pending-reboot": ExitCode.PENDING_REBOOT,
    "other-failure": ExitCode.OTHER_FAILURE,
    "healthy": ExitCode.OK,
    "no-device": ExitCode.OK,
}


@_handled
def diagnose(
    *,
    root: str,
    as_json: bool,
    boot_setup: str | None,
    target: str | None,
    ssh_option: list[str] | None,
) -> int:
    from mlxfix import commands
    from mlxfix.cli.render import Style, render_diagnosis

    host = _host(root, target, ssh_option, needs=_needs(as_json))
    d = commands.diagnose(host, boot_setup)
    code = _DIAGNOSE_EXIT[d.status]
    out = _human(as_json)
    _name_target(host, out, Style(out))
    render_diagnosis(d, out, Style(out))
    if as_json:
        from mlxfix.models import diagnose_result, dump

        sys.stdout.write(dump(diagnose_result(host.label, host.root, d, int(code)), _ssh_figures(host)) + "\n")
    return int(code)


@_handled
def verify(
    *,
    param: str,
    root: str,
    as_json: bool,
    target: str | None,
    ssh_option: list[str] | None,
) -> int:
    from mlxfix import commands
    from mlxfix.cli.render import Style, render_verification

    host = _host(root, target, ssh_option, needs=_needs(as_json))
    v = commands.verify(host, param)
    code = ExitCode.OK if v.ok else ExitCode.NOT_VERIFIED
    out = _human(as_json)
    _name_target(host, out, Style(out))
    render_verification(v, out, Style(out))
    if as_json:
        from mlxfix.models import dump, verify_result

        sys.stdout.write(dump(verify_result(host.label, host.root, v, param, int(code)), _ssh_figures(host)) + "\n")
    return int(code)


@_handled
def status(
    *,
    param: str,
    root: str,
    as_json: bool,
    boot_setup: str | None,
    target: str | None,
    ssh_option: list[str] | None,
) -> int:
    from mlxfix import commands
    from mlxfix.cli.render import Style, render_status

    host = _host(root, target, ssh_option, needs=_needs(as_json))
    report = commands.status(host, param, boot_setup)
    out = _human(as_json)
    full = out.isatty() and not as_json
    if full:
        _name_target(host, out, Style(out))
    render_status(report, out, Style(out), full=full)
    if as_json:
        from mlxfix.models import dump, status_result

        sys.stdout.write(dump(status_result(report), _ssh_figures(host)) + "\n")
    return int(report.exit_code)


def early_document(args: list[str], message: str, exit_code: int = ExitCode.USAGE) -> None:
    """A usage error (or a Ctrl-C) before a command ran, under --json: still one document on stdout,
    for the automation that asked."""
    from mlxfix.models import dump, failure_result

    names = {"apply", "rollback", "backups", "diagnose", "verify", "status"}
    command = next((a for a in args if a in names), "mlxfix")
    given = {"--host": "localhost", "--root": "/"}
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in given:
            given[name] = value if eq else (args[i + 1] if i + 1 < len(args) else given[name])
    sys.stdout.write(dump(failure_result(command, given["--host"], given["--root"], message, int(exit_code))) + "\n")


def output_failed(exc: OSError) -> NoReturn:
    """stdout could not be written (a full disk, a reader that went away, a hung-up terminal): one
    line on stderr and exit 1, never a traceback; the stream is pointed at /dev/null so that the
    interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    with contextlib.suppress(OSError):
        more = "; what it changed stands: mlxfix status and mlxfix backups tell" if _CHANGING else ""
        sys.stderr.write(f"mlxfix: the output could not be written ({exc.strerror or exc}){more}\n")
        sys.stderr.flush()
    sys.exit(ExitCode.FAILED)


# -- the process ---------------------------------------------------------------------------------------


def set_color(color: str) -> None:
    """``mlxfix --color=WHEN COMMAND``: the option before the command."""
    if color != "auto":
        from mlxfix.cli.render import set_color as chosen

        chosen(color)


COMMANDS: dict[str, Callable[..., int]] = {
    "apply": apply,
    "rollback": rollback,
    "backups": backups,
    "diagnose": diagnose,
    "verify": verify,
    "status": status,
}


def execute(invoke: Callable[[], object], early: SshHost | None = None) -> NoReturn:
    """Run one command, by typer or straight from ``argv``, and exit with its code; turn what escapes
    it into one line and an exit code. ``early``: an SshHost already connecting (mlxfix.cli.entry)."""
    if early is not None:
        _EARLY.append(early)
    # mlxfix is a short-lived process whose big structures (the parsed file, the evaluation) are trees
    # freed by reference counting; the cycle collector would only rescan them again and again as they
    # grow (a 1 MiB grub file: 0.55 s with it, 0.3 s without; see tests/perf/bench.py).
    gc.disable()
    # A file name that is not UTF-8 is printed as its own bytes (as ls -N and cat would), not a traceback.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="surrogateescape")
    try:
        code = invoke()
    except KeyboardInterrupt:
        sys.stderr.write("mlxfix: interrupted\n")
        if "--json" in sys.argv[1:]:
            early_document(sys.argv[1:], "interrupted", ExitCode.INTERRUPTED)
        sys.exit(ExitCode.INTERRUPTED)
    except OSError as exc:
        output_failed(exc)
    finally:
        while _EARLY:  # started for a command that never got to use it (a usage error, --help)
            with contextlib.suppress(OSError):
                _EARLY.pop().close()
    sys.exit(code if isinstance(code, int) else 0)
