"""Human output: the plan, the diff, what ran, what to do next. Colour: ``--color=always|never`` first,
then NO_COLOR (https://no-color.org: off), then FORCE_COLOR (https://force-color.org: on), else only
on a terminal (and not TERM=dumb)."""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from mlxfix.backup import Listing, Pruning
    from mlxfix.commands import ChangeReport, StatusReport
    from mlxfix.diagnose import Diagnosis, Verification
    from mlxfix.plan import Plan

__all__ = [
    "Style",
    "color_enabled",
    "render_backups",
    "render_change",
    "render_diagnosis",
    "render_plan",
    "render_pruning",
    "render_status",
    "render_verification",
    "status_line",
]


COLOR_CHOICES = ("auto", "always", "never")
_color = ["auto"]  # the global --color, set once by the CLI's callback


def set_color(choice: str) -> None:
    """The global ``--color``: always, never, or auto (the environment and the terminal decide)."""
    assert choice in COLOR_CHOICES
    _color[0] = choice


def color_enabled(stream: TextIO) -> bool:
    """Whether output to ``stream`` is coloured: --color, then NO_COLOR, then FORCE_COLOR, then a
    terminal. NO_COLOR and FORCE_COLOR count when set to anything but the empty string."""
    if _color[0] != "auto":
        return _color[0] == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class Style:
    """ANSI styling that switches itself off when it should (see color_enabled)."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = color_enabled(stream)

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)

    def diff(self, text: str) -> str:
        out = []
        lines = text.split("\n")  # not splitlines(): a CRLF file's \r (or a \f) is part of its line
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines:
            if line.startswith(("+++", "---")):
                out.append(self.bold(line))
            elif line.startswith("+"):
                out.append(self.green(line))
            elif line.startswith("-"):
                out.append(self.red(line))
            elif line.startswith("@@"):
                out.append(self.cyan(line))
            else:
                out.append(line)
        return "\n".join(out)


def _write_bytes_as_they_are(out: TextIO, text: str) -> None:
    """A diff's bytes that are not UTF-8 (held as lone surrogates) go out as themselves, so that the
    printed diff applies with patch(1); a stream that cannot take them (not mlxfix's own stdout,
    which main() sets up for it) gets U+FFFD instead of a traceback."""
    try:
        out.write(text)
    except UnicodeEncodeError:
        out.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def render_plan(plan: Plan, out: TextIO, style: Style, *, runs_commands: bool = True) -> None:
    """The plan as an admin reviews it: setup, diff, command line before/after, commands."""
    p = out.write
    p(f"{style.bold('Boot setup:')} {plan.setup.title}\n")
    for ev in plan.setup.evidence:
        p(f"  - {ev}\n")
    if plan.target:
        p(f"{style.bold('Edits:')} {plan.target}\n")
    for note in plan.notes[1:]:
        p(f"  note: {note}\n")
    for warning in plan.warnings:
        p(style.yellow(f"warning: {warning}") + "\n")
    if plan.writes:
        p("\n")
        for w in plan.writes:
            _write_bytes_as_they_are(out, style.diff(w.diff()) + "\n")
    if plan.cmdline_unknown:
        p(f"\n{style.bold('Kernel command line')} (as configured, normal boot entries): cannot be known before")
        p(" grub-mkconfig runs (see the warning)\n")
    elif plan.before is not None or plan.after is not None:
        p(f"\n{style.bold('Kernel command line')} (as configured, normal boot entries):\n")
        p(f"  before: {_shown(plan.before, '(not known statically)')}\n")
        p(f"  after:  {_shown(plan.after, '(not known statically)')}\n")
    if plan.next_entry is not None:
        name, source, why = plan.next_entry
        p(f"\n{style.bold('Next boot')}: {name} ({source}; {why}):\n")
        p(f"  before: {_shown(plan.next_before, '(boots no Linux kernel)')}\n")
        p(f"  after:  {_shown(plan.next_after, '(not predicted: the entry is not made from the configured command line)')}\n")
    elif plan.next_unread:
        p(f"\n{style.bold('Next boot')}: {plan.next_unread}\n")
    if plan.trial is not None:
        p(f"After that one boot: {plan.trial.fallback!r} again, as now (nothing the default boot reads changes).\n")
    if plan.commands:
        p(f"\n{style.bold('Commands:')}\n")
        for c in plan.commands:
            suffix = "" if runs_commands else "   (not run under --root: run it on the host)"
            p(f"  $ {shlex.join(c.argv)}{suffix}\n")


def _shown(line: str | None, unknown: str) -> str:
    """A command line on one line of output (a newline in a value shows as \\n)."""
    return unknown if line is None else line.replace("\n", "\\n")


def render_change(report: ChangeReport, out: TextIO, style: Style, *, show_plan: bool = True, err: TextIO | None = None) -> None:
    """apply/rollback: the plan (unless it was shown before the question), then what happened.
    Errors go to ``err`` (stderr)."""
    p = out.write
    e = (err or sys.stderr).write
    plan = report.plan
    runs = report.root == "/"
    if plan is not None and show_plan:
        render_plan(plan, out, style, runs_commands=runs)
        p("\n")
    for w in report.warnings:
        if plan is None or w not in plan.warnings:
            p(style.yellow(f"warning: {w}") + "\n")
    outcome = report.outcome
    if outcome is not None:
        if outcome.backup is not None:
            p(f"Backup: {outcome.backup.id} (mlxfix rollback --backup {outcome.backup.id} puts it back)\n")
        for c in outcome.commands:
            if c.exit_code is None:
                p(style.yellow(f"Not run: {shlex.join(c.argv)}: {c.note}") + "\n")
            else:
                status = style.green("ok") if c.exit_code == 0 else style.red(f"exit {c.exit_code}")
                p(f"Ran: {shlex.join(c.argv)} [{status}]{' (' + c.note + ')' if c.note else ''}\n")
    if report.error is not None:
        error = report.error
        e(style.red(f"mlxfix: {error}") + "\n")
        if error.hint:
            e(f"hint: {error.hint}\n")
        steps = getattr(error, "steps", None)
        if steps:
            e(style.red("The host is NOT in its original state. Restore it by hand:") + "\n")
            for s in steps:
                e(f"  {s}\n")
        return
    assert plan is not None
    on = f" on {report.host}" if report.host != "localhost" else ""  # the last line of a fleet's log names its host
    if not plan.writes and not plan.commands:
        if report.command == "apply":
            p(style.green(f"Nothing to do{on}: {plan.param} is already in place.") + "\n")
            if plan.running_differs:
                p("The running kernel does not have it yet: reboot, then run: mlxfix verify\n")
        else:
            p(style.green(f"Nothing to do{on}: the files already hold what backup {plan.backup_id} saved.") + "\n")
        return
    if report.dry_run:
        verb = {"applied": "apply", "rolled back": "roll back", "armed for one boot": "arm the one-time boot"}.get(
            plan.effect, f"re-apply {plan.param}"
        )
        p(f"Dry run{on}: nothing was changed. Run without --dry-run to {verb}.")
        # --no-update, or a tree (--root): the commands are the admin's, and the files alone reach no boot
        left = [shlex.join(argv) for argv, _ in report.left_to_run]
        if not left and report.root != "/":
            left = [shlex.join(c.argv) for c in plan.commands]
        if left and plan.reboot_required:
            p(f" The files alone would not reach the next boot: that takes {'; '.join(dict.fromkeys(left))}, then a reboot.\n")
        else:
            p(" The change would take effect only after a reboot.\n" if plan.reboot_required else "\n")
        return
    if outcome is not None:
        verb = plan.effect
        pending = [shlex.join(argv) for argv, _ in report.left_to_run] + [
            shlex.join(c.argv) for c in outcome.commands if c.exit_code is None
        ]
        if pending and plan.trial is not None:
            todo = "; ".join(dict.fromkeys(pending))
            p(
                style.yellow(f"Files written{on}: the trial entry, in the files only.")
                + f" It is armed once this runs on the host: {todo}; then reboot.\n"
            )
            return
        if pending:
            todo = "; ".join(dict.fromkeys(pending))
            p(
                style.yellow(f"Files written{on}: {plan.param} {verb} in the files only.")
                + f" It reaches the boot configuration once this runs: {todo}; then reboot.\n"
            )
            return
        if plan.trial is not None:
            p(
                style.green(f"Done{on}: a one-time boot with {plan.param} is armed ({plan.trial.entry!r}).")
                + " Reboot to try it.\n"
            )
            if outcome.proof:
                p(f"Checked: {outcome.proof}.\n")
            p(
                "After the trial boot: mlxfix verify; then mlxfix apply keeps it (no second reboot),"
                " or mlxfix rollback removes the trial entry.\n"
            )
            return
        after = (
            " The change takes effect only after a reboot."
            if plan.reboot_required
            else " No reboot is needed: the running kernel is already as configured."
        )
        p(style.green(f"Done{on}: {plan.param} {verb}.") + after + "\n")
        if outcome.proof:
            p(f"Checked: {outcome.proof}.\n")


_OUTCOMES = {
    "done": "done",
    "failed-restored": "failed, put back",
    "failed-not-restored": "FAILED, NOT put back",
    "interrupted": "interrupted (or still running)",
    "finished": "interrupted, then finished",
    "unknown": "outcome unknown",
}


def render_backups(listing: Listing, out: TextIO, style: Style) -> None:
    p = out.write
    manifests, problems, damaged, endings = listing
    if not manifests and not any("cannot be read" in problem for problem in problems):
        p("No backups.\n")
    for m in manifests:
        mark = style.red("  [DAMAGED: cannot be restored]") if m.id in damaged else ""
        outcome, detail = endings.get(m.id, ("unknown", ""))
        said = _OUTCOMES.get(outcome, outcome)
        said = (
            style.green(said)
            if outcome == "done"
            else style.red(said)
            if outcome == "failed-not-restored"
            else style.yellow(said)
        )
        p(f"{style.bold(m.id)}  {m.created}  {m.action} {m.param}: {said}{mark}\n")
        p(f"    why: {m.reason}\n")
        if detail:
            p(f"    {detail}\n")
        for f in m.files:
            p(f"    {f.path}  sha256 {f.sha256[:16]}…  {f.size} bytes  mode {f.mode & 0o7777:04o}\n")
    for problem in problems:
        p(style.yellow(f"warning: {problem}") + "\n")


def render_pruning(pruning: Pruning, out: TextIO, style: Style, *, dry_run: bool, done: bool) -> None:
    """What backups --prune removes (or would), and why each backup that stays is kept."""
    p = out.write
    if not (pruning.remove or pruning.leftovers):
        p(f"Nothing to prune: every backup is needed or among those kept ({len(pruning.kept)}).\n")
    else:
        verb = "Would remove" if dry_run else "Removed" if done else "To remove"
        p(style.bold(f"{verb} {len(pruning.remove)} backup{'s' if len(pruning.remove) != 1 else ''}:") + "\n")
        for m in pruning.remove:
            p(f"    {m.id}  {m.created}  {m.action} {m.param}  ({m.reason})\n")
        for name in pruning.leftovers:
            p(f"    {name}  (left by an interrupted run)\n")
    if pruning.kept:
        p(style.bold("Kept:") + "\n")
        for backup_id, why in pruning.kept:
            p(f"    {backup_id}  {why}\n")


def stderr_style() -> Style:
    return Style(sys.stderr)


_VERDICTS = {
    "affected": "AFFECTED: the Missing UAR failure (BAR 2 of a ConnectX-3 was never assigned)",
    "affected-dcs": "AFFECTED: Missing DCS (BAR 0 of a ConnectX-3 was never assigned)",
    "pending-reboot": "PENDING REBOOT: the fix is configured, the running kernel does not have it yet",
    "other-failure": "OTHER FAILURE: a Mellanox device is not working, but not because of this bug",
    "healthy": "HEALTHY: the Mellanox devices work",
    "no-device": "NO DEVICE: no Mellanox ConnectX-3 (mlx4) device on this host",
}


def render_diagnosis(d: Diagnosis, out: TextIO, style: Style) -> None:
    """The verdict first, then the evidence per device, then the advice."""
    p = out.write
    colour = style.green if d.status in ("healthy", "no-device") else style.yellow if d.status == "pending-reboot" else style.red
    p(style.bold(colour(_VERDICTS[d.status])) + "\n\n")
    c = d.context
    where = f"a VM ({c.virtual}; {c.virtual_evidence})" if c.virtual else "bare metal"
    p(f"Host: {c.proxmox + ', ' if c.proxmox else ''}{where}, {'UEFI' if c.uefi else 'BIOS'}, board {c.board}, BIOS {c.bios}\n")
    realloc = {"on": "realloc on", "off": "realloc off", None: "realloc not set"}
    running = d.running if d.running is not None else "(unreadable)"
    configured = d.configured if d.configured is not None else "(unknown)"
    if d.boot_setup is not None:
        p(f"Boot setup: {d.boot_setup[1]}\n")
        for ev in d.boot_setup[2]:
            p(f"  - {ev}\n")
    else:
        p(f"Boot setup: not recognised ({d.boot_setup_error})\n")
    p(f"Running command line: {running}  [{realloc[d.running_realloc]}]\n")
    p(f"Configured ({d.configured_source}): {configured}  [{realloc[d.configured_realloc]}]\n")
    p("Modules: " + ", ".join(f"{m} {'loaded' if on else 'not loaded'}" for m, on in d.modules.items()) + "\n")
    p(f"Kernel log: {d.log_source}\n")
    for ln in d.log:
        p(f"  {ln.stamp} {ln.shown}\n")
    for x in d.devices:
        status = style.green(x.status) if x.status == "healthy" else style.red(x.status)
        vf = ", virtual function" if x.is_vf else ""
        p(f"\n{style.bold(x.address)}  {x.model} (15b3:{x.device_id[2:]}{vf}), {x.subsystem}: {status}\n")
        for ev in x.evidence:
            p(f"  {ev}\n")
    if d.advice:
        p(f"\n{style.bold('Advice')} (nothing is done automatically):\n")
        for a in d.advice:
            p(f"  {a}\n" if a.startswith("  ") else f"  - {a}\n")
    for w in d.warnings:
        p(style.yellow(f"warning: {w}") + "\n")


def render_verification(v: Verification, out: TextIO, style: Style) -> None:
    p = out.write
    for c in v.checks:
        mark = style.green("ok  ") if c.ok else style.red("FAIL")
        p(f"  [{mark}] {c.name}: {c.detail}\n")
    if v.ok and v.diagnosis.trial:
        p(
            style.green("Verified, on a trial boot: the fix is in effect and the Mellanox devices work.")
            + " To keep it: mlxfix apply\n"
        )
    elif v.ok:
        p(style.green("Verified: the fix is in effect and the Mellanox devices work.") + "\n")
    else:
        failed = ", ".join(c.name for c in v.checks if not c.ok)
        p(style.red(f"Not verified: {failed}.") + " Run mlxfix diagnose for the details and the advice.\n")
    for w in v.diagnosis.warnings:
        p(style.yellow(f"warning: {w}") + "\n")


_STATES = {
    "in-effect": "IN EFFECT: the running kernel and the next boot both have {param}",
    "pending-reboot": "PENDING REBOOT: the next boot has {param}, the running kernel does not yet",
    "drift": "DRIFT: {param} is configured or running, but the next boot will not have it",
    "absent": "ABSENT: {param} is nowhere: not configured, not generated, not running",
    "trial": "TRIAL: {param} is in effect for this boot only (a trial boot); the default boot does not have it",
}


def _advice_for(report: StatusReport) -> str:
    """What to do next, for the state."""
    state = report.state
    if state == "pending-reboot":
        return "reboot, then run: mlxfix verify"
    if state == "drift":
        lay = report.layers
        nb = lay.next_boot
        if nb.entry is not None and not nb.entry.generated:
            return f"the next boot takes {nb.entry.name!r} ({nb.entry.source}), which does not use the configured command line"
        return "run mlxfix apply: it regenerates the boot configuration and checks what the next boot gets"
    if state == "absent":
        return "run mlxfix diagnose, then mlxfix apply --dry-run"
    if state == "trial":
        return "run mlxfix verify; then mlxfix apply keeps it (no second reboot), or mlxfix rollback removes the trial entry"
    return ""


def status_line(report: StatusReport) -> str:
    """One line for cron and monitoring: the state, the next boot's entry, what to do."""
    nb = report.layers.next_boot
    entry = nb.entry
    where = f"next boot: {entry.name} ({entry.source})" if entry is not None else f"next boot: {nb.why or 'unknown'}"
    advice = _advice_for(report)
    on = f" {report.host}" if report.host != "localhost" else ""  # monitoring of many hosts: which one
    return f"mlxfix status{on}: {report.state}: {report.param}; {where}" + (f"; {advice}" if advice else "")


def render_status(report: StatusReport, out: TextIO, style: Style, *, full: bool) -> None:
    """The three layers side by side (``full``, on a terminal), or one line."""
    from mlxfix import cmdline

    p = out.write
    if not full:
        p(status_line(report) + "\n")
        for w in report.warnings:
            p(f"warning: {w}\n")
        return
    param = cmdline.Param.parse(report.param)
    lay = report.layers
    colour = {"in-effect": style.green, "pending-reboot": style.yellow}.get(report.state, style.red)
    p(style.bold(colour(_STATES[report.state].format(param=report.param))) + "\n\n")
    p(f"Boot setup: {report.setup.title}\n")

    def mark(line: str | None) -> str:
        if line is None:
            return style.yellow("unknown")
        return style.green("has it") if cmdline.in_effect(line, param) else style.red("lacks it")

    c = lay.configured
    p(f"\n{style.bold('1. Configured')} ({c.source}): {mark(c.cmdline)}\n")
    if c.cmdline is not None:
        for t in c.tokens:
            p(f"     {t.token:<40} {t.origin}\n")
        if not c.tokens:
            p("     (empty)\n")
    nb = lay.next_boot
    p(f"\n{style.bold('2. Next boot')}: ")
    if not nb.read:
        p(style.yellow(f"not read ({nb.why})") + "\n")
    elif nb.entry is None:
        p(style.yellow(f"no entry ({nb.why})") + "\n")
    else:
        e = nb.entry
        p(f"{mark(e.cmdline)}\n     entry:   {e.name}\n     from:    {e.source}\n     because: {nb.why}\n")
        p(f"     cmdline: {e.cmdline if e.cmdline is not None else '(boots no Linux kernel)'}\n")
        missing = [m for m in lay.missing(param) if m != e]
        if missing:
            p(f"     {len(missing)} other entr{'y' if len(missing) == 1 else 'ies'} without it:\n")
            for m in missing:
                p(f"       {m.name} ({m.source})\n")
    r = lay.running
    shown = r.cmdline if r.cmdline is not None else "(unreadable)"
    p(f"\n{style.bold('3. Running')} (/proc/cmdline): {mark(r.cmdline)}\n     {shown}\n")
    advice = _advice_for(report)
    if advice:
        p(f"\nNext: {advice}\n")
    for w in report.warnings:
        p(style.yellow(f"warning: {w}") + "\n")
