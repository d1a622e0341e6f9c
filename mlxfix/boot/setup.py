"""The one interface every boot setup implements, so that nothing else asks a setup its name.

A boot setup knows where the kernel command line is configured, how to edit it, which commands turn
the edited files into what the boot loader reads, how to read that back (the entry the next boot
takes), and what a rollback must undo. The plan, the executor, status and diagnose call these methods;
adding a setup is one module and one line in ``mlxfix.boot.detect.SETUPS``. Pure code.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Self

from mlxfix.digest import sha256
from mlxfix.errors import FileError, Refused
from mlxfix.steps import FileWrite

if TYPE_CHECKING:
    from mlxfix.backup import Manifest, ManifestFile
    from mlxfix.boot.nextboot import Configured, NextBoot
    from mlxfix.cmdline import Param
    from mlxfix.facts import FileInfo, Snapshot
    from mlxfix.steps import Command, ShellCheck

__all__ = ["BootSetup", "ConfigEdit", "Restore", "Trial", "TrialState"]


class ConfigEdit(NamedTuple):
    """A setup's part of an apply plan: what its configured files (and its own tools) change."""

    target: str  # the file (and line) whose setting is edited, for people
    reason: str  # what the backup is of, in one line
    before: str | None  # the configured kernel command line before and after (None: not knowable)
    after: str | None
    changed: bool
    writes: tuple[FileWrite, ...] = ()
    commands: tuple[Command, ...] = ()  # commands that change state themselves (grubby), before the regeneration
    check: ShellCheck | None = None
    backup_only: tuple[FileInfo, ...] = ()  # files such a command changes: saved, not written
    expected_entries: tuple[tuple[str, str], ...] = ()  # BLS entry -> its arguments after grubby
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    unknown: str = ""  # why the configured command line cannot be known before the regeneration


class Trial(NamedTuple):
    """A one-time boot of the next boot's entry with the parameter: what arms it."""

    entry: str  # the trial entry, as the boot menu names it
    fallback: str | None  # the entry a normal boot takes (unchanged)
    cmdline: str | None  # what the trial boot's kernel gets
    writes: tuple[FileWrite, ...] = ()
    commands: tuple[Command, ...] = ()  # what arms it (each with its undo)
    notes: tuple[str, ...] = ()


class TrialState(NamedTuple):
    """A trial entry found on the host: armed (the next boot takes it) or spent."""

    entry: str
    armed: bool
    cmdline: str | None
    source: str

    def booted(self, running: str | None, next_default: str | None) -> bool:
        """Whether the running kernel was booted by this trial entry: the one rule status, diagnose
        and verify share. The entry is spent (not armed), and the running command line is the one it
        gives, or has what the trial added (its last two words: the parameter and panic=10) while
        the next, default, boot lacks them. A parameter typed at the boot prompt is no trial."""
        running = (running or "").strip()
        if self.armed or not running or self.cmdline is None:
            return False
        if running == self.cmdline.strip():
            return True
        from mlxfix import cmdline

        added = [t.text for t in cmdline.split(self.cmdline)][-2:]
        have = {t.text for t in cmdline.split(running)}
        lacks = next_default is None or not all(a in next_default.split() for a in added)
        return all(a in have for a in added) and lacks


def trial_words(param: Param, line: str) -> list[str]:
    """What a trial entry adds to the command line it copies: the parameter, and panic=10 unless the
    line sets panic= already, so that a kernel panic in the trial reboots into the old default."""
    from mlxfix import cmdline

    return [param.text] + ([] if any(t.key == "panic" for t in cmdline.split(line)) else ["panic=10"])


class Restore:
    """A setup's part of a rollback plan, filled file by file."""

    def __init__(self) -> None:
        self.writes: list[FileWrite] = []
        self.commands: list[Command] = []
        self.expected: dict[str, str] = {}  # BLS entry -> its arguments after grubby
        self.drift: list[str] = []  # files changed after mlxfix wrote them
        self.notes: list[str] = []
        self.changed_by_commands: list[str] = []  # saved before the rollback's commands run


class BootSetup:
    """A detected (or requested) boot setup and the evidence for it. (Plain classes, not dataclasses:
    every run defines them all, and a dataclass costs start-up time to define.)"""

    name: ClassVar[str]
    title: ClassVar[str]
    location: ClassVar[str]  # where the command line lives, in words
    # The grub variable the parameter goes into, or None where no grub defaults file is edited.
    variable: ClassVar[str | None] = None

    def __init__(self, evidence: tuple[str, ...] = ()) -> None:
        self.evidence = evidence

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- what it is ----------------------------------------------------------------------------------

    @classmethod
    def found(cls, snap: Snapshot, evidence: tuple[str, ...]) -> Self:
        """The setup on the host the snapshot is of (a subclass adds what it reads from it)."""
        del snap
        return cls(evidence)

    @classmethod
    def require(cls, snap: Snapshot) -> None:
        """--boot-setup NAME skips detection, not what the setup cannot work without: Refused then."""

    def with_evidence(self, *more: str) -> Self:
        out = copy.copy(self)
        out.evidence = (*self.evidence, *more)
        return out

    @classmethod
    def reads(cls) -> tuple[list[str], list[str], list[str]]:
        """Files, listings and globs this setup's next boot is read from, wherever they may be: part of
        the first batched read (detection has not run yet), so that status needs no second one."""
        return [], [], []

    def read_request(self) -> tuple[list[str], list[str], list[str]]:
        """What the read-back after a regeneration asks for: the same, for this very host."""
        return self.reads()

    # -- the configured layer ------------------------------------------------------------------------

    def owns(self, path: str) -> bool:
        """Whether ``path`` is one this setup's apply writes or saves (what a backup of it may restore)."""
        raise NotImplementedError

    def config_files(self, snap: Snapshot) -> list[str]:
        """The files that configure the command line (checked for modes anyone can write)."""
        raise NotImplementedError

    def configured(self, snap: Snapshot) -> Configured:
        """Layer 1: what the regeneration will use, every token with its origin."""
        raise NotImplementedError

    def configured_line(self, snap: Snapshot) -> str | None:
        """The configured command line alone (None: it cannot be known without running the files)."""
        return self.configured(snap).cmdline

    def plan_edit(self, snap: Snapshot, param: Param) -> ConfigEdit:
        """The edit that makes the configured command line carry ``param``."""
        raise NotImplementedError

    # -- the generated layer -------------------------------------------------------------------------

    def regenerate(self) -> list[list[str]]:
        """The commands that turn the edited files into the boot configuration."""
        raise NotImplementedError

    def next_boot(self, snap: Snapshot) -> NextBoot:
        """Layer 2: the generated entries and the one the next boot takes (or why it was not read)."""
        raise NotImplementedError

    def predict(self, entry_cmdline: str | None, edit: ConfigEdit) -> str | None:
        """The next boot's command line once the edit is regenerated (None: not known before)."""
        if not edit.changed:
            return entry_cmdline
        from mlxfix.boot.nextboot import predict

        return predict(entry_cmdline, edit.before, edit.after)

    def regenerated_from(self, path: str) -> bool:
        """Whether a change of ``path`` needs the regeneration to reach the boot loader (a file the
        boot loader reads itself, such as GRUB's custom.cfg, does not)."""
        del path
        return True

    # -- a one-time boot -------------------------------------------------------------------------------

    def plan_trial(self, snap: Snapshot, param: Param) -> Trial | None:
        """What arms a one-time boot with ``param`` (None: one is armed already, or the next boot has it).
        Refused, with the reason and what to do instead, where this host cannot boot once safely."""
        del snap, param
        raise Refused(
            f"a one-time boot (--trial) is not available for {self.title}: mlxfix cannot arm one there yet",
            hint="apply without --trial (the default boot changes; mlxfix rollback undoes it), with console access at hand",
        )

    def trial_state(self, snap: Snapshot) -> TrialState | None:
        """The trial entry on this host, if there is one."""
        del snap
        return None

    def without_trial(self, snap: Snapshot) -> Snapshot:
        """The host as it will be once its trial entry is removed and disarmed (to predict the next boot)."""
        return snap

    def trial_cleanup(self, snap: Snapshot) -> tuple[tuple[FileWrite, ...], tuple[Command, ...]]:
        """What removes a trial entry (armed or spent) and disarms it: done by apply and by rollback."""
        del snap
        return (), ()

    def check_reach(self, nb: NextBoot, param: Param) -> None:
        """Refuse an edit the next boot's entry does not take (Refused); most setups' entries all do."""

    def judged_cmdline(self, snap: Snapshot) -> tuple[str | None, str]:
        """What diagnose judges a pending reboot by, and where it comes from: the next boot's entry
        where it can be read, else the configured command line."""
        nb = self.next_boot(snap)
        if nb.read and nb.entry is not None and nb.entry.cmdline is not None:
            return nb.entry.cmdline, f"{nb.entry.source} (the entry the next boot takes: {nb.entry.name})"
        conf = self.configured(snap)
        return conf.cmdline, conf.source

    # -- rollback --------------------------------------------------------------------------------------

    def plan_restore(self, snap: Snapshot, manifest: Manifest, stored: dict[str, bytes], param: Param, *, force: bool) -> Restore:
        """What a rollback of ``manifest`` writes and runs: by default every saved file back byte for byte,
        a file changed since mlxfix wrote it counted as drift (restored only with ``force``)."""
        del force
        out = Restore()
        for entry in manifest.files:
            info = snap.files.get(entry.path)
            refuse_what_mlxfix_never_wrote(manifest, self, entry, info)
            if not self.restore_special(out, snap, entry, info, stored, param):
                self.restore_bytes(out, entry, info, stored[entry.path], manifest.id)
        return out

    def restore_special(
        self, out: Restore, snap: Snapshot, entry: ManifestFile, info: FileInfo | None, stored: dict[str, bytes], param: Param
    ) -> bool:
        """A file this setup undoes its own way (True: done, ``out`` has it)."""
        del out, snap, entry, info, stored, param
        return False

    @staticmethod
    def restore_bytes(out: Restore, entry: ManifestFile, info: FileInfo | None, original: bytes, backup_id: str) -> None:
        current = info.data if info is not None and info.exists else None
        if not entry.existed:  # the apply made it: the rollback removes it
            if current is None and not (info is not None and info.exists):
                out.notes.append(f"{entry.path} did not exist before backup {backup_id}, and does not now")
                return
            if current is None:
                raise FileError((info.problem() if info is not None else None) or "unreadable", path=entry.path)
            if entry.written_sha256 is not None and sha256(current) != entry.written_sha256:
                out.drift.append(entry.path)
            why = f"remove it: it did not exist before backup {backup_id}"
            out.writes.append(FileWrite(entry.path, current, b"", entry.mode, entry.uid, entry.gid, why, removes=True))
            return
        if current is not None and sha256(current) == entry.sha256:
            out.notes.append(f"{entry.path} already holds the backed-up bytes")
            return
        if current is None and info is not None and info.exists:
            raise FileError(info.problem() or "unreadable", path=entry.path)
        # A file a command wrote (grubby: no written_sha256) is the setup's to judge, before this.
        if entry.written_sha256 is not None and (sha256(current) if current is not None else None) != entry.written_sha256:
            out.drift.append(entry.path)
        out.writes.append(
            FileWrite(
                entry.path,
                current or b"",
                original,
                entry.mode,
                entry.uid,
                entry.gid,
                f"restore the bytes saved in backup {backup_id}",
                existed=current is not None,
            )
        )


def refuse_what_mlxfix_never_wrote(manifest: Manifest, setup: BootSetup, entry: ManifestFile, info: FileInfo | None) -> None:
    """A forged or damaged manifest must not loosen another file: a rollback restores only the paths
    the backup's boot setup owns, never adds mode bits beyond the file's present ones and 0644, and
    never gives a file to a user other than root or its present owner."""
    where = f"backup {manifest.id} asks to restore {entry.path}"
    if not setup.owns(entry.path):
        raise Refused(f"{where}, which is no file of the {setup.name} boot setup: mlxfix never writes it; refusing the backup")
    exists = info is not None and info.exists
    allowed = ((info.mode & 0o7777) if info is not None and exists else 0) | 0o644
    if entry.mode & 0o7777 & ~allowed:
        raise Refused(
            f"{where} with mode {entry.mode & 0o7777:04o}, wider than the file's own and 0644: refusing the backup",
            path=entry.path,
        )
    for kind, wanted, now in (("uid", entry.uid, info.uid if info is not None and exists else 0),
                              ("gid", entry.gid, info.gid if info is not None and exists else 0)):  # fmt: skip
        if wanted not in (0, now):
            raise Refused(
                f"{where} owned by {kind} {wanted}: mlxfix gives a file only to root or its present owner; refusing the backup",
                path=entry.path,
            )
