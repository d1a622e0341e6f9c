"""Human output: the plan, the diff, what ran, what to do next. Colour only on a terminal and never
with NO_COLOR (https://no-color.org)."""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from mlxfix.backup import Manifest
    from mlxfix.commands import ChangeReport
    from mlxfix.plan import Plan

__all__ = ["Style", "render_backups", "render_change", "render_plan"]


class Style:
    """ANSI styling that switches itself off when it should."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"

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
        for line in text.splitlines():
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
            p(style.diff(w.diff()) + "\n")
    if plan.before is not None or plan.after is not None:
        p(f"\n{style.bold('Kernel command line')} (as configured, normal boot entries):\n")
        p(f"  before: {plan.before if plan.before is not None else '(not known statically)'}\n")
        p(f"  after:  {plan.after if plan.after is not None else '(not known statically)'}\n")
    if plan.commands:
        p(f"\n{style.bold('Commands:')}\n")
        for c in plan.commands:
            suffix = "" if runs_commands else "   (not run under --root: run it on the host)"
            p(f"  $ {shlex.join(c.argv)}{suffix}\n")


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
    if not plan.writes and not plan.commands:
        p(style.green(f"Nothing to do: {plan.param} is already in place.") + "\n")
        if report.command == "apply":
            p("If the running kernel lacks it, reboot (check with: mlxfix diagnose).\n")
        return
    if report.dry_run:
        verb = "apply" if report.command == "apply" else "roll back"
        p(f"Dry run: nothing was changed. Run without --dry-run to {verb}.\n")
        return
    if outcome is not None:
        verb = "applied" if report.command == "apply" else "rolled back"
        p(style.green(f"Done: {plan.param} {verb}.") + " The change takes effect only after a reboot.\n")


def render_backups(manifests: list[Manifest], problems: list[str], out: TextIO, style: Style) -> None:
    p = out.write
    if not manifests:
        p("No backups.\n")
    for m in manifests:
        p(f"{style.bold(m.id)}  {m.created}  {m.action} {m.param}  ({m.reason})\n")
        for f in m.files:
            p(f"    {f.path}  sha256 {f.sha256[:16]}…  {f.size} bytes  mode {f.mode & 0o7777:04o}\n")
    for problem in problems:
        p(style.yellow(f"warning: {problem}") + "\n")


def stderr_style() -> Style:
    return Style(sys.stderr)
