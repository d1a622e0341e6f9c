"""The error hierarchy and the exit codes: one place decides how a failure reads and what it returns."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "Busy",
    "CommandFailed",
    "ConnectionLost",
    "ExitCode",
    "FileError",
    "HostError",
    "Interrupted",
    "MlxfixError",
    "NoSuchRoot",
    "NotRestored",
    "Refused",
    "UsageError",
]


class ExitCode(IntEnum):
    """Exit codes, documented in the README (a test keeps the two in step)."""

    OK = 0  # success, including "already applied"
    FAILED = 1  # refused or failed; nothing was changed, or everything was restored
    USAGE = 2  # bad command line
    NOT_RESTORED = 3  # failed and could not restore: the manual steps are printed
    AFFECTED = 10  # diagnose: the Missing UAR failure is present
    PENDING_REBOOT = 11  # diagnose: the fix is configured, the running kernel does not have it yet
    OTHER_FAILURE = 12  # diagnose: a Mellanox device failed, but not with this bug
    NOT_VERIFIED = 13  # verify: at least one check failed
    DRIFT = 14  # status: configured or running, but the next boot will not have the parameter
    ABSENT = 15  # status: the parameter is nowhere
    TRIAL = 16  # status: in effect for this boot only (a trial boot); the default boot does not have it
    BUSY = 75  # another mlxfix, dpkg or apt holds the lock (EX_TEMPFAIL: try again later)
    HANGUP = 129  # the terminal hung up (SIGHUP, or EIO on it) during a change: put back, or let complete
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # the reader of the output went away (EPIPE) during a change: put back
    TERMINATED = 143  # SIGTERM during a change: put back


class MlxfixError(Exception):
    """A failure the user can act on, read as one sentence. ``path``/``line``/``column`` locate it."""

    exit_code = ExitCode.FAILED

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.hint = hint

    @property
    def location(self) -> str:
        if self.path is None:
            return ""
        loc = self.path
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return loc

    def __str__(self) -> str:
        loc = self.location
        return f"{loc}: {self.message}" if loc else self.message


class UsageError(MlxfixError):
    """The command line asks for something impossible (bad --param, unknown backup id...)."""

    exit_code = ExitCode.USAGE


class FileError(MlxfixError):
    """A file mlxfix must read is missing, unreadable, too large, binary or not valid shell."""


class Refused(MlxfixError):
    """mlxfix will not make this change (it cannot be done safely, or needs --force/--yes)."""


class HostError(MlxfixError):
    """Reading, writing or running something on the host failed."""


class NoSuchRoot(HostError):
    """--root names no directory on the --host target: a usage error, found when logging in."""

    exit_code = ExitCode.USAGE


class ConnectionLost(HostError):
    """The SSH connection dropped while mlxfix held the lock on the target: nothing more is done
    over a new connection (another run may hold the lock by then); the state is the target's to say."""

    exit_code = ExitCode.NOT_RESTORED


class CommandFailed(MlxfixError):
    """A command of the plan (update-grub, grubby...) failed; the files were put back."""


class Interrupted(MlxfixError):
    """Ctrl-C, or another stop (see mlxfix.stops): what was changed has been put back."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str, *, exit_code: ExitCode = ExitCode.INTERRUPTED, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code

    @classmethod
    def by(cls, exc: KeyboardInterrupt, where: str = "", rest: str = "", hint: str | None = None) -> Interrupted:
        """The error a Ctrl-C or a stop becomes: "interrupted WHERE (Ctrl-C)REST", or for a stop
        (which says ``why``) "stopped WHERE: WHYREST", with the stop's own exit code."""
        why = getattr(exc, "why", None)
        if why is None:
            return cls(f"interrupted{where} (Ctrl-C){rest}", hint=hint)
        return cls(f"stopped{where}: {why}{rest}", exit_code=getattr(exc, "exit_code", ExitCode.INTERRUPTED), hint=hint)


class Busy(MlxfixError):
    """Another mlxfix, dpkg or apt is working on this host."""

    exit_code = ExitCode.BUSY


class NotRestored(MlxfixError):
    """A failure after files were changed, and putting them back failed too."""

    exit_code = ExitCode.NOT_RESTORED

    def __init__(self, message: str, steps: list[str], **kw: str | int | None) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.steps = steps
