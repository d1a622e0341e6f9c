"""The three layers of the kernel command line, and what the next boot will really get.

1. **configured**: what the setup's regeneration will use (the grub variables as sh computes them,
   ``/etc/kernel/cmdline``), every token with the file and line it comes from;
2. **generated**: what the boot loader reads (grub.cfg's entries, BLS entries and grubenv, loader
   entries on the ESP) and which entry the next boot takes;
3. **running**: ``/proc/cmdline``.

An edit of layer 1 is worth something only when layer 2 follows: a stale grub.cfg, a value whose
newline splits GRUB's ``linux`` line, or a default entry that does not take the configured command
line all leave the next boot without the parameter. ``status`` shows the layers side by side, apply
reads layer 2 back after the regeneration. Pure code: a Snapshot comes in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.errors import ExitCode

if TYPE_CHECKING:
    from mlxfix.boot.setup import BootSetup
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot

__all__ = [
    "STATE_EXIT",
    "Configured",
    "Entry",
    "Layers",
    "NextBoot",
    "Running",
    "layers",
    "predict",
    "state_of",
]

# The states of ``mlxfix status`` and their exit codes (README, "mlxfix status").
STATE_EXIT = {
    "in-effect": ExitCode.OK,
    "pending-reboot": ExitCode.PENDING_REBOOT,
    "drift": ExitCode.DRIFT,
    "absent": ExitCode.ABSENT,
    "trial": ExitCode.TRIAL,
}


class Token(NamedTuple):
    """One kernel parameter of a layer and where it comes from (``file:line``, or a generated entry)."""

    token: str
    origin: str


class Configured(NamedTuple):
    """Layer 1: what the regeneration uses (None: it cannot be known without running the files)."""

    cmdline: str | None
    source: str  # the files it comes from, or why it is not known
    tokens: tuple[Token, ...] = ()
    # Where the line is not known: the words known to end it all the same (mlxfix's own grub.d drop-in
    # appends the parameter after a value only sh can compute), or None.
    tail: str | None = None

    def has(self, param: Param) -> bool:
        """Whether the configured line gives the kernel ``param`` (it takes the last setting of a
        parameter: words known to end the line decide even where what precedes them is not known)."""
        if self.cmdline is not None:
            return cmdline.in_effect(self.cmdline, param)
        return self.tail is not None and cmdline.in_effect(self.tail, param)


class Entry(NamedTuple):
    """A boot entry the boot loader offers, with the command line the kernel gets from it."""

    name: str  # the title path (GRUB: "Advanced options for Debian>Debian, with Linux 6.1"), or the entry id
    source: str  # file:line of its definition
    cmdline: str | None  # None: the entry boots no Linux kernel, or its line cannot be known
    recovery: bool = False  # a recovery/rescue entry: it does not take GRUB_CMDLINE_LINUX_DEFAULT
    generated: bool = True  # made from the configured command line (not a custom or os-prober entry)


class NextBoot(NamedTuple):
    """Layer 2: the generated entries and the one the next boot takes."""

    read: bool  # False: this layer could not be read here (``why`` says why)
    entry: Entry | None = None
    why: str = ""  # how the entry was chosen, or why nothing was read
    entries: tuple[Entry, ...] = ()
    problems: tuple[str, ...] = ()  # what is wrong in the generated files (a split linux line...)

    def missing(self, param: Param) -> list[Entry]:
        """The entries that should carry ``param`` and do not: the next boot's, and every generated
        non-recovery entry (another kernel may be the default tomorrow)."""
        out = [e for e in self.entries if e.generated and not e.recovery and not _has(e.cmdline, param)]
        if self.entry is not None and not _has(self.entry.cmdline, param) and self.entry not in out:
            out.insert(0, self.entry)
        return out


class Running(NamedTuple):
    cmdline: str | None


class Layers(NamedTuple):
    configured: Configured
    next_boot: NextBoot
    running: Running

    def missing(self, param: Param) -> list[Entry]:
        return self.next_boot.missing(param)


def _has(line: str | None, param: Param) -> bool:
    return line is not None and cmdline.in_effect(line, param)


def state_of(lay: Layers, param: Param) -> tuple[str, list[str]]:
    """The state of ``param`` on this host and the warnings that qualify it.

    ``in-effect``: running and next boot have it; ``pending-reboot``: the next boot has it, the
    running kernel not yet; ``drift``: configured or running, but the next boot will not have it;
    ``absent``: nowhere. Where layer 2 cannot be read, the configured command line stands in for
    the next boot, and a warning says so."""
    warnings: list[str] = []
    running = _has(lay.running.cmdline, param)
    configured = lay.configured.has(param)
    nb = lay.next_boot
    if nb.read and nb.entry is not None:
        nxt = _has(nb.entry.cmdline, param)
    else:
        nxt = configured
        what = nb.why or "the generated boot entries could not be read"
        warnings.append(f"{what}; the next boot is judged by the configured command line")
    if running and nxt:
        return "in-effect", warnings
    if nxt:
        return "pending-reboot", warnings
    if configured or running:
        return "drift", warnings
    return "absent", warnings


# -- the layers ------------------------------------------------------------------------------------------


def layers(snap: Snapshot, setup: BootSetup) -> Layers:
    """The three layers of this host's kernel command line, as the snapshot shows them."""
    running = snap.text("/proc/cmdline")
    return Layers(setup.configured(snap), setup.next_boot(snap), Running(running.strip() if running is not None else None))


def predict(entry_cmdline: str | None, before: str | None, after: str | None) -> str | None:
    """The command line an entry generated from ``before`` gets once it is generated from ``after``:
    the configured tokens replaced where they stand in the entry (None: they are not found there, so
    the entry is not made from them). GRUB ends a ``linux`` line at a newline: only what precedes the
    first one reaches the kernel."""
    if entry_cmdline is None or before is None or after is None:
        return None
    old = [t.text for t in cmdline.split(before.split("\n", 1)[0])]
    new = [t.text for t in cmdline.split(after.split("\n", 1)[0])]
    words = [t.text for t in cmdline.split(entry_cmdline)]
    if not old:
        at = next((i + 1 for i in range(len(words) - 1, -1, -1) if words[i] == "ro"), None)
        return None if at is None else " ".join([*words[:at], *new, *words[at:]])
    for i in range(len(words) - len(old), -1, -1):
        if words[i : i + len(old)] == old:
            return " ".join([*words[:i], *new, *words[i + len(old) :]])
    return None
