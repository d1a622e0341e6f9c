"""What stops a change besides Ctrl-C, and the one rule for all of them.

The admin's SSH session drops (SIGHUP, then EIO on every read and write of the dead terminal), a
service manager or an admin kills mlxfix (SIGTERM), the reader of its output pipe dies (EPIPE:
``mlxfix apply | head``, a ``tee`` that was killed). Each is handled as Ctrl-C is: before the change
is complete it is put back, after it is let complete, and mlxfix goes on without a terminal, its
output dropped. A stop raises :class:`Stopped` (a KeyboardInterrupt, so that every path that undoes a
Ctrl-C undoes it too) once; what follows (the shell's second SIGHUP, each write to the dead
terminal) is only noted: the restore must not be stopped by the echo of what started it.

Signals are the process's, so the state is too: one :data:`STATE`, armed by :func:`guard` around a
command that changes the host. Commands started after a stop run in a session of their own, out of
reach of a terminal's hang-up.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlxfix.errors import ExitCode

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

__all__ = ["STATE", "Stopped", "guard", "log"]

# What each stop is called, and the exit code it ends with (the shell's 128 + the signal's number;
# EIO is the hung-up terminal's, so it is SIGHUP's).
_SIGNALS = {
    signal.SIGHUP: ("the terminal hung up (SIGHUP)", ExitCode.HANGUP),
    signal.SIGTERM: ("mlxfix was asked to terminate (SIGTERM)", ExitCode.TERMINATED),
}
_ERRNOS = {
    errno.EPIPE: ("the reader of mlxfix's output went away (EPIPE, a broken pipe)", ExitCode.BROKEN_PIPE),
    errno.EIO: ("mlxfix's terminal is gone (EIO: it hung up)", ExitCode.HANGUP),
}


class Stopped(KeyboardInterrupt):
    """A stop other than Ctrl-C; ``why`` says what it was, ``exit_code`` what mlxfix ends with."""

    def __init__(self, why: str, exit_code: ExitCode) -> None:
        super().__init__(why)
        self.why = why
        self.exit_code = exit_code


@dataclass
class _State:
    armed: bool = False  # a change is under way and not complete: a stop raises Stopped
    stopped: Stopped | None = None  # the first stop (raised, or noted after the change was complete)
    noted: list[str] = field(default_factory=list)  # every stop seen, in order
    pending: Stopped | None = None  # a stop another thread saw, for the main thread to raise

    def stop(self, why: str, code: ExitCode) -> None:
        """Raise the first stop while armed; note every other one. Seen by another thread (the
        spinner's, writing to a terminal that hung up), it is raised in the main thread instead."""
        self.noted.append(why)
        if self.stopped is None:
            self.stopped = Stopped(why, code)
            if self.armed:
                self.armed = False  # the restore that follows is not stopped by an echo
                if threading.current_thread() is not threading.main_thread():
                    import _thread

                    self.pending = self.stopped
                    ours = [s for s in _SIGNALS if signal.getsignal(s) is _on_signal]
                    _thread.interrupt_main(ours[0] if ours else signal.SIGINT)  # _on_signal raises it there
                    return
                raise self.stopped

    def committed(self) -> None:
        """The change is complete: from here on a stop is noted, never raised."""
        self.armed = False

    @property
    def detached(self) -> bool:
        """A stop was seen: the commands that follow must outlive the terminal."""
        return self.stopped is not None


STATE = _State()


class _Lossy:
    """A text stream whose loss (EPIPE, EIO) is a stop, and whose later writes are dropped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if self.lost:
            return len(text)
        try:
            return int(self._stream.write(text))
        except OSError as exc:
            self._lose(exc)
            return len(text)

    def flush(self) -> None:
        if self.lost:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            self._lose(exc)

    def _lose(self, exc: OSError) -> None:
        if exc.errno not in _ERRNOS:
            raise exc
        self.lost = True
        STATE.stop(*_ERRNOS[exc.errno])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    del frame
    pending, STATE.pending = STATE.pending, None
    if pending is not None:  # handed over by another thread (see _State.stop)
        raise pending
    STATE.stop(*_SIGNALS[signal.Signals(signum)])


@contextmanager
def guard() -> Iterator[_State]:
    """Arm the stops for a command that changes the host: SIGHUP and SIGTERM raise Stopped, and so
    does a lost stdout or stderr. A SIGHUP ignored on entry (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield STATE
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        if previous[s] is not signal.SIG_IGN:
            signal.signal(s, _on_signal)
    STATE.stopped, STATE.pending, STATE.noted = None, None, []  # one command's stops (tests run several in one process)
    streams = sys.stdout, sys.stderr
    lossy = _Lossy(sys.stdout), _Lossy(sys.stderr)
    sys.stdout, sys.stderr = lossy
    STATE.armed = True
    try:
        yield STATE
    finally:
        STATE.armed = False
        sys.stdout, sys.stderr = streams
        for s, handler in previous.items():
            signal.signal(s, handler)
        for wrapper, stream in zip(lossy, streams, strict=True):
            if wrapper.lost:  # what is still buffered for it goes, or the interpreter's last flush fails
                _silence(stream)


def _silence(stream: Any) -> None:
    import os

    with suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    with suppress(OSError, ValueError):
        stream.flush()


def log(message: str, *, warning: bool = False) -> None:
    """One line to the system log (journald or syslog, through /dev/log): an admin whose terminal
    went away reads there what became of the change. Nothing happens where no log listens."""
    import syslog

    syslog.openlog("mlxfix", syslog.LOG_PID, syslog.LOG_USER)
    syslog.syslog(syslog.LOG_WARNING if warning else syslog.LOG_NOTICE, message)
    syslog.closelog()


def lost_input() -> None:
    """A read of the terminal failed with EIO (it hung up): a stop, like a lost output."""
    STATE.stop(*_ERRNOS[errno.EIO])
