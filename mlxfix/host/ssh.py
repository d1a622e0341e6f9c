"""A host reached over SSH: every read, write and command through one SSH connection.

The target needs nothing but ``sh``, coreutils (``base64``, ``sha256sum``, ``mktemp``, ``sync``), util-linux's
``flock`` and its boot tools. mlxfix talks to one root shell on it (``_Session``, through
``sudo -n`` when the login is not root): a batched read is one shell script and one round trip, a write
is a script that does what LocalHost does (temp file with O_EXCL beside the target, fsync, rename,
fsync of the directory), the lock is an ``flock`` held by that shell, so it drops with the connection.
``ssh`` itself does the networking: ``~/.ssh/config``, keys, the agent and known_hosts are honoured,
host keys are never accepted silently (``BatchMode=yes``).
"""

from __future__ import annotations

import base64
import codecs
import importlib
import re
import shlex
import subprocess
import sys
import threading
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, NamedTuple

from mlxfix.errors import Busy, ConnectionLost, HostError, MlxfixError, NoSuchRoot, UsageError
from mlxfix.facts import CommandResult, FileInfo, Regeneration, Snapshot
from mlxfix.host.local import MAX_READ, PSEUDO_FS, checkpoint, pseudo_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

    from mlxfix.transaction import Journal, Step

__all__ = ["SshHost", "import_plumbum", "parse_target"]

_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>\d{1,5}))?$")

# The login shell becomes a root shell: directly when the login is root, else through sudo -n.
# (Without either it stays an ordinary shell: reads and dry runs work, changes are refused.)
_NO_ROOT = "mlxfix-no-such-root-directory"
_ID = "mlxfix-login-id"  # the login's answer: the uid of the root shell, and whether --root is writable
_ROOT_SHELL = (
    'if [ "$(id -u)" = 0 ]; then exec /bin/sh; fi\n'
    "if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then exec sudo -n /bin/sh; fi\n"
    "exec /bin/sh"
)


def parse_target(spec: str) -> tuple[str | None, str, int | None]:
    """``[USER@]HOST[:PORT]`` (an IPv6 address in brackets) -> (user, host, port)."""
    m = _TARGET.match(spec)
    if m is None:
        raise UsageError(f"--host {spec!r}: expected [USER@]HOST[:PORT] (an IPv6 address as [ADDR]:PORT)")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--host {spec!r}: port {port} is out of range")
    return m.group("user"), m.group("v6") or m.group("host"), port


def import_plumbum() -> Any:
    """Import plumbum without the 35 ms it spends on ``urllib.request`` (http.client, ssl, email),
    which it needs only to build file:// URIs that mlxfix never asks for: the module is loaded on first
    use instead."""
    if "plumbum" not in sys.modules and "urllib.request" not in sys.modules:
        sys.modules["urllib.request"] = _Deferred("urllib.request")
    import plumbum

    return plumbum


class _Deferred(type(sys)):  # type: ignore[misc]
    """A module that imports the real one on first attribute access."""

    def __getattr__(self, attr: str) -> Any:
        import importlib

        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        return getattr(real, attr)


# The session speaks UTF-8, except that a name that is not UTF-8 (kept by Python as lone surrogates,
# as os.fsdecode does) travels as its own bytes, both ways: a script may name any file the target has.
_CODEC = "mlxfix-utf8b"


def _find_codec(name: str) -> codecs.CodecInfo | None:
    if name != _CODEC.replace("-", "_"):
        return None

    def encode(text: str, _errors: str = "strict", /) -> tuple[bytes, int]:
        return text.encode("utf-8", "surrogateescape"), len(text)

    def decode(data: Buffer, _errors: str = "strict", /) -> tuple[str, int]:
        raw = bytes(data)
        return raw.decode("utf-8", "surrogateescape"), len(raw)

    return codecs.CodecInfo(encode, decode, name=_CODEC)


codecs.register(_find_codec)


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(field: str) -> bytes:
    """A field of the read script: ":text" as it is, else base64 ("-" and "" for nothing)."""
    if field.startswith(":"):
        return field[1:].encode()
    return base64.b64decode(field) if field and field != "-" else b""


# -- the read script ----------------------------------------------------------------------------------

# Forks are what a shell script costs (a millisecond or more each on a busy host): a plain name or path is
# sent as ":text" with no fork at all, only anything else goes through base64; a missing file, a listing
# and a tool lookup fork nothing.
_PRELUDE = r"""
canon() {  # $1 a host path -> cv: where it leads inside $r, every link on the way followed as in a chroot
    # at $r (an absolute link starts again at $r, a ".." is taken from the physical directory reached);
    # what the kernel walks afterwards has no link left in it, so it cannot leave the tree.
    cv=; _cr=$1; _cn=0
    while [ -n "$_cr" ]; do
        case "$_cr" in
            /*) _cr=${_cr#/}; continue ;;
            */*) _cp=${_cr%%/*}; _cr=${_cr#*/} ;;
            *) _cp=$_cr; _cr= ;;
        esac
        case "$_cp" in
            .) ;;
            ..) cv=${cv%/*} ;;
            *) if [ -L "$r$cv/$_cp" ]; then
                   _cn=$((_cn + 1)); [ "$_cn" -le 40 ] || { cv=/.too-many-levels-of-symbolic-links; return; }
                   _ct=$(readlink "$r$cv/$_cp")
                   case "$_ct" in /*) cv= ;; esac
                   _cr=$_ct${_cr:+/$_cr}
               else cv=$cv/$_cp; fi ;;
        esac
    done
}
enc() {  # $1 -> v: ":text" when plain, else its base64
    case "$1" in
        *[!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/+,@%=~:-]*|'') v=$(printf %s "$1" | base64 -w0) ;;
        *) v=":$1" ;;
    esac
}
emit() {  # $1 path, $2 its "mode uid gid size", $3 its file system (if known)
    # -> F path exists mode uid gid islink link isdir :error data
    canon "${1%/*}"; f="$r$cv/${1##*/}"; link=-; islink=0; err=-; data=-; isdir=0; enc "$1"; name=$v; fs=$3
    if [ -L "$f" ]; then islink=1; enc "$(readlink "$f")"; link=$v; canon "$1"; f="$r$cv"; fi
    if [ ! -e "$f" ]; then
        if [ "$islink" = 1 ]; then err=:dangling_symlink
        else  # missing, or hidden behind a directory we may not search? The nearest one that exists says.
            d=${f%/*}; while [ -n "$d" ] && [ ! -e "$d" ]; do d=${d%/*}; done
            if [ -n "$d" ] && [ -d "$d" ] && [ ! -x "$d" ]; then
                case "$(stat -c %f "$f" 2>&1)" in *"ermission denied"*) err=:permission_denied ;; esac
            fi
        fi
        printf 'F %s 0 0 0 0 %s %s 0 %s - 1\n' "$name" "$islink" "$link" "$err"; return
    fi
    meta=$2; [ -n "$meta" ] || meta=$(stat -L -c '%f %u %g %s %h' "$f" 2>/dev/null) || meta='0 0 0 0 1'
    case "$1" in /proc/*|/sys/*) fs=- ;; *) [ -n "$fs" ] || fs=$(stat -f -L -c %T "$f" 2>/dev/null) ;; esac
    set -- "$1" $meta
    if [ -d "$f" ]; then isdir=1
    elif [ ! -f "$f" ]; then err=:not_a_regular_file
    elif case "$pseudo" in *" $fs "*) true ;; *) false ;; esac; then err=":pseudo_fs:$fs"
    elif [ ! -r "$f" ]; then err=:permission_denied
    elif [ "$5" -gt "$limit" ] 2>/dev/null; then
        if [ "$tail" = 1 ]; then data=$(tail -c "$limit" "$f" | base64 -w0); else err=":larger_than_${limit}_bytes"; fi
    else
        # One plain line (a sysfs attribute, most often) is sent as ".line" with no fork; the size (or a
        # pseudo-file's path) proves that read saw every byte.
        l1=; l2=; data=
        if { IFS= read -r l1 && ! IFS= read -r l2 && [ -z "$l2" ]; } <"$f" 2>/dev/null \
            && { [ "$5" = $((${#l1} + 1)) ] || case "$f" in /sys/*|/proc/*) true ;; *) false ;; esac; }; then
            case "$l1" in
                *[!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/+,@%=~:\(\)-]*|'') ;;
                *) data=".$l1" ;;
            esac
        fi
        if [ -z "$data" ] && [ "$bundling" = 1 ] && [ "$5" -gt 0 ] 2>/dev/null; then
            case "$f" in /proc/*|/sys/*|*"$nl"*) ;; *) bundle="$bundle$f$nl"; data="@$5" ;; esac  # see bundle_out
        fi
        [ -n "$data" ] || data=$(base64 -w0 <"$f" 2>/dev/null) || err=:cannot_read_it
        [ -n "$data" ] || data==
    fi
    printf 'F %s 1 %s %s %s %s %s %s %s %s %s\n' "$name" "$2" "$3" "$4" "$islink" "$link" "$isdir" "$err" "$data" "${6:-1}"
}
nl='
'
bundle=
bundle_out() {  # the files emit marked "@SIZE", in order, as one cat and one base64 (two forks, not one each);
    # their sizes (stat's, trustworthy outside /proc and /sys) cut it apart: a total that differs (a
    # file changed meanwhile) makes the reader ask for those files again, one by one
    [ -n "$bundle" ] || return 0
    saved=$IFS; IFS=$nl; set -f
    printf 'B %s\n' "$(cat -- $bundle 2>/dev/null | base64 -w0)"
    IFS=$saved; set +f; bundle=
}
emit_all() {  # every path in "$@": one stat for all of them (a fork is what a file costs, not its bytes)
    k=$#
    for p; do canon "$p"; if [ -e "$r$cv" ]; then set -- "$@" "$r$cv"; else set -- "$@" /dev/null; fi; done
    metas=$(shift "$k"; [ $# = 0 ] || stat -L -c '%f %u %g %s %h' -- "$@" 2>/dev/null)
    fss=$(shift "$k"; [ $# = 0 ] || stat -f -L -c %T -- "$@" 2>/dev/null)
    lines=0; rest=$metas
    while [ -n "$rest" ]; do lines=$((lines + 1)); case "$rest" in *"$nl"*) rest=${rest#*"$nl"} ;; *) rest= ;; esac; done
    [ "$lines" = "$k" ] || metas=  # something changed meanwhile: each file is looked at on its own
    lines=0; rest=$fss
    while [ -n "$rest" ]; do lines=$((lines + 1)); case "$rest" in *"$nl"*) rest=${rest#*"$nl"} ;; *) rest= ;; esac; done
    [ "$lines" = "$k" ] || fss=
    i=0
    for p; do
        i=$((i + 1)); [ "$i" -le "$k" ] || break
        meta=${metas%%"$nl"*}; metas=${metas#*"$nl"}
        fs=${fss%%"$nl"*}; fss=${fss#*"$nl"}
        emit "$p" "$meta" "$fs"
    done
}
listing() {  # L path present entries...
    canon "$1"; d="$r$cv"; enc "$1"
    if [ ! -d "$d" ]; then printf 'L %s 0\n' "$v"; return; fi
    printf 'L %s 1' "$v"
    for e in "$d"/* "$d"/.[!.]* "$d"/..?*; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        enc "${e##*/}"; printf ' %s' "$v"
    done
    printf '\n'
}
tool() {  # T name path: the first executable of that name on PATH (on the target), or in the tree
    p=; dirs=$PATH; [ -z "$r" ] || dirs=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    saved=$IFS; IFS=:; set -f
    for dir in $dirs; do
        if [ -n "$dir" ] && [ -x "$r$dir/$1" ] && [ ! -d "$r$dir/$1" ]; then p="$dir/$1"; break; fi
    done
    IFS=$saved; set +f
    if [ -n "$p" ]; then enc "$p"; p=$v; else p=-; fi
    printf 'T :%s %s\n' "$1" "$p"
}
"""


# -- the session ------------------------------------------------------------------------------------

# The most one answer may bring (a batched read of many 16 MiB files in base64 stays far below it).
MAX_ANSWER = 512 << 20
# How long one script may take before the connection is given up (a read that never ends, a target
# that stopped answering); a command run with ``run`` has its own timeout.
SCRIPT_TIMEOUT = 300.0


_LINGERING: list[subprocess.Popen[bytes]] = []  # ssh processes closed without waiting (see SshHost.close)


class SessionEnded(Exception):
    """The shell on the target ended (ssh exited) before the script did; ``stderr`` is what it said."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr.strip() or "the connection closed")
        self.stderr = stderr


class SessionTimeout(Exception):
    """The script did not finish within its time (or its answer outgrew MAX_ANSWER)."""


class _Session:
    """The root shell on the target, spoken to directly: a script is written to its stdin, followed
    by a trailer that prints a marker unique to this script with the exit status on stdout, and the
    marker on stderr. Both streams are read together (neither can fill up and stall the target while
    the other is waited for, whatever their sizes), every script has a deadline, and what the trailer
    prints never reaches the output."""

    def __init__(self, proc: subprocess.Popen[bytes], connect_timeout: float, probe: str = "") -> None:
        self.proc = proc
        self.answered: tuple[int, str, str, str] | None = None  # the answer a shielded Ctrl-C waited for
        # the login: whatever it printed (a banner) is before the marker; ``probe``'s answer is last
        self.greeting = self.run(probe, timeout=connect_timeout)[1]

    def send(self, text: str) -> None:
        """Hand the shell a command whose answer nobody waits for (it prints nothing: the next
        script's answer is its own). A connection already gone is the next script's to find."""
        import os

        assert self.proc.stdin is not None
        with suppress(OSError):
            os.write(self.proc.stdin.fileno(), text.encode())

    def run(
        self,
        script: str,
        *,
        timeout: float = SCRIPT_TIMEOUT,
        on_line: Callable[[str], None] | None = None,
        shield: bool = False,
    ) -> tuple[int, str, str, str]:
        """Run ``script`` in the shell: (exit code, stdout, stderr, the trailer's extra word: the
        status a wrapper left in ``$_mlxfix_st``, "-" when none). ``on_line`` gets each stdout line
        as it arrives (never the trailer). ``shield``: a Ctrl-C (a KeyboardInterrupt) while the
        script runs is raised once its answer is in (kept in ``answered``); a second one gives the
        connection up (ssh is killed: the target's state is then its intent record's word)."""
        import os
        import secrets
        import selectors
        import time

        proc = self.proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        marker = f"--mlxfix-end-{secrets.token_hex(8)}--".encode()
        trailer = (
            f"\n_mlxfix_c=$?; printf '\\n%s %s %s\\n' '{marker.decode()}' \"$_mlxfix_c\" \"${{_mlxfix_st:--}}\"; _mlxfix_st=\n"
            f"printf '\\n%s\\n' '{marker.decode()}' >&2\n"
        )
        pending = memoryview(((script + "\n" if script.strip() else "") + trailer).encode(_CODEC))
        out, err = bytearray(), bytearray()
        out_end = err_end = -1  # where the trailer starts in each stream, once seen
        streamed = 0  # how much of ``out`` went to on_line
        tail = b"\n" + marker + b" "
        sel = selectors.DefaultSelector()
        fds = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        stdin = proc.stdin.fileno()
        os.set_blocking(stdin, False)
        sel.register(stdin, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        self.answered = None
        stop: KeyboardInterrupt | None = None
        try:
            while out_end < 0 or err_end < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SessionTimeout(f"no answer within {timeout:.0f} s")
                try:
                    ready = sel.select(left)
                except KeyboardInterrupt as exc:
                    if not shield or stop is not None:
                        if shield:
                            proc.kill()
                        raise
                    stop = exc
                    continue
                for key, _ in ready:
                    if key.fd == stdin:
                        try:
                            n = os.write(stdin, pending[:65536])
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            raise SessionEnded(err.decode("utf-8", "replace") or str(exc)) from None
                        pending = pending[n:]
                        if not pending:
                            sel.unregister(stdin)
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        raise SessionEnded(err.decode("utf-8", "replace"))
                    buf = fds[key.fd]
                    start = max(0, len(buf) - len(tail) - 64)
                    buf += chunk
                    if len(buf) > MAX_ANSWER:
                        raise SessionTimeout(f"the answer grew beyond {MAX_ANSWER >> 20} MiB")
                    if buf is out and out_end < 0:
                        found = out.find(tail, start)
                        if found >= 0 and out.find(b"\n", found + len(tail)) >= 0:
                            out_end = found
                        if on_line is not None:
                            streamed = _stream(out, streamed, out_end, tail, on_line)
                    elif buf is err and err_end < 0:
                        found = err.find(b"\n" + marker + b"\n", start)
                        if found >= 0:
                            err_end = found
        finally:
            sel.close()
            with suppress(OSError):
                os.set_blocking(stdin, True)
        status = out[out_end + len(tail) : out.find(b"\n", out_end + len(tail))].decode().split()
        code = int(status[0]) if status and status[0].isdigit() else 1
        extra = status[1] if len(status) > 1 else "-"
        if on_line is not None and streamed < out_end:  # a last line without its newline
            on_line(out[streamed:out_end].decode("utf-8", "replace"))
        answer = code, out[:out_end].decode(_CODEC), err[:err_end].decode(_CODEC), extra
        if stop is not None:
            self.answered = answer
            raise stop
        return answer


def _stream(out: bytearray, done: int, end: int, tail: bytes, on_line: Callable[[str], None]) -> int:
    """Hand the complete lines of ``out`` from ``done`` on to ``on_line``; a newline that may be the
    trailer's own (its marker not seen whole yet) waits. Returns how far it got."""
    while True:
        nl = out.find(b"\n", done)
        if nl < 0 or (end >= 0 and nl >= end):
            return done
        if end < 0 and tail.startswith(bytes(out[nl : nl + len(tail)])):
            return done  # perhaps the trailer: wait for more
        on_line(out[done:nl].decode("utf-8", "replace"))
        done = nl + 1


class SshHost:
    """A remote machine rooted at ``root`` on its side."""

    def __init__(self, target: str, root: str = "/", ssh_options: Sequence[str] = (), connect_timeout: float = 15) -> None:
        self.user, self.host, self.port = parse_target(target)
        self.label = target
        self.root = root if root == "/" else root.rstrip("/")
        if not self.root.startswith("/"):
            raise UsageError(f"--root {root!r}: with --host, give an absolute path on the target")
        self.runs_commands = self.root == "/"
        self.ssh_options = list(ssh_options)
        self.connect_timeout = connect_timeout
        self.connections = 0
        self.round_trips = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: Any = None
        self._starting: threading.Thread | None = None
        self._failure: HostError | None = None
        self._resolved: dict[str, str] = {}
        self._locked = False  # the session's shell holds the lock (fd 9)
        self._lost: ConnectionLost | None = None  # the connection dropped while it held the lock
        self._meanwhile: tuple[str, ...] = ()  # modules to import while the login is under way
        self._identity: tuple[int, bool] | None = None  # (uid, --root writable), told by the login
        self._deferred: list[_Pending] = []  # what travels with the next script (see _defer)

    # -- the connection --------------------------------------------------------------------------------

    def made_for(self, target: str, root: str, ssh_options: Sequence[str]) -> bool:
        """Whether this host object is the one those options ask for."""
        other = SshHost(target, root, ssh_options)
        return (self.label, self.root, self.ssh_options) == (other.label, other.root, other.ssh_options)

    def _ssh_argv(self) -> list[str]:
        # ssh takes the first value given for an option: the user's --ssh-option come before mlxfix's
        # defaults, so that --ssh-option ConnectTimeout=5 is the timeout. BatchMode=yes comes first of
        # all: no prompt, and no host key accepted without asking, whatever the options say.
        argv = ["ssh", "-T", "-o", "BatchMode=yes"]
        for option in self.ssh_options:
            argv += ["-o", option]
        argv += ["-o", f"ConnectTimeout={int(self.connect_timeout)}"]
        argv += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        shell = _ROOT_SHELL
        if self.root != "/":  # a --root that is not there is a usage error, found with the login (no round trip)
            shell = f"[ -d {shlex.quote(self.root)} ] || {{ echo {_NO_ROOT} >&2; exit 2; }}\n{shell}"
        return [*argv, "--", f"{self.user}@{self.host}" if self.user else self.host, f"sh -c {shlex.quote(shell)}"]

    def start(self) -> None:
        """Begin connecting now, in the background: ssh's handshake (most of ``ssh HOST true``) then runs
        while mlxfix imports and plans, instead of after. The first command waits for it."""
        if self._session is not None or self._starting is not None:
            return
        try:
            # A session of its own: the terminal's Ctrl-C goes to mlxfix alone, which puts the files
            # back over this very connection (in mlxfix's process group, ssh would die with it).
            self._proc = subprocess.Popen(
                self._ssh_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        except OSError as exc:
            raise HostError(f"{self.label}: cannot run ssh ({exc.strerror})") from None
        self.connections += 1
        self._starting = threading.Thread(target=self._open_session, name="ssh-connect", daemon=True)
        self._starting.start()

    def _open_session(self) -> None:
        """The session over the ssh process (its first, empty script proves the login)."""
        try:
            assert self._proc is not None
            writable = "true" if self.root == "/" else f"[ -w {shlex.quote(self.root)} ]"
            probe = f'printf \'\\n{_ID} %s %s\\n\' "$(id -u)" "$(if {writable}; then echo w; else echo -; fi)"'
            self._session = _Session(self._proc, self.connect_timeout, probe)
            last = self._session.greeting.rstrip("\n").rpartition("\n")[2].split()
            if len(last) == 3 and last[0] == _ID and last[1].isdigit():
                self._identity = (int(last[1]), last[2] == "w")
        except (SessionEnded, SessionTimeout, OSError) as exc:  # ssh ended (its stderr says why), or never answered
            self._failure = self._connection_error(exc, self._last_words())

    def _last_words(self) -> str:
        """What a failed ssh said on stderr before it ended (it is made to end if it has not)."""
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            return proc.stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):  # closed meanwhile
            return ""

    def _connect(self) -> Any:
        """The one connection: started if it was not, waited for if it is still starting. Not again
        after it dropped while holding the lock: another mlxfix may hold it by now."""
        if self._lost is not None:
            raise self._lost
        if self._session is None and self._failure is None:
            if self._starting is None:
                self.start()
            assert self._starting is not None
            if self._starting.is_alive():  # the main thread would only wait: let it import what comes next
                for name in self._meanwhile:
                    importlib.import_module(name)
            self._starting.join()
            self.round_trips += 1  # the connection itself, and the session's first (empty) command
        if self._failure is not None:
            failure = self._failure
            self.close()
            raise failure
        return self._session

    def meanwhile(self, modules: Sequence[str]) -> None:
        """Modules the command will import after its first read: imported while ssh logs in (its
        handshake leaves the main thread idle), not after the answer arrives."""
        self._meanwhile = tuple(modules)

    def _connection_error(self, exc: BaseException, stderr: str = "") -> HostError:
        text = stderr + " " + " ".join(str(getattr(exc, a, "") or "") for a in ("stderr", "stdout")) + " " + str(exc)
        where = self.label
        if _NO_ROOT in text:
            return NoSuchRoot(f"--root {self.root}: no such directory on {where}")
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Offending" in text:
            return HostError(
                f"{where}: the host key has CHANGED since it was recorded in known_hosts: this may be an attack, or a"
                " reinstalled host; check it out of band before you remove the old key (mlxfix will not connect)"
            )
        if "Host key verification failed" in text or "authenticity of host" in text:
            return HostError(
                f"{where}: the host key is not known; check it and add it to known_hosts (mlxfix never accepts it silently)"
            )
        if "Permission denied" in text or "Too many authentication failures" in text:
            return HostError(f"{where}: authentication refused (key, agent or user wrong?)")
        if "Could not resolve" in text or "Name or service not known" in text:
            return HostError(f"{where}: the host name does not resolve")
        if "Connection refused" in text or "No route to host" in text or "timed out" in text or "Connection closed" in text:
            return HostError(f"{where}: unreachable ({_first_line(text)})")
        return HostError(f"{where}: the SSH connection failed ({_first_line(text)})")

    def _dropped(self, what: str, exc: BaseException, why: str = "") -> HostError:
        """The error for a connection that dropped (or was given up: ``why``) while trying to ``what``."""
        self.close()
        if self._locked:
            self._locked = False
            how = f"given up ({why})" if why else "lost"
            self._lost = ConnectionLost(
                f"{self.label}: the connection was {how} in the middle of the change (while trying to {what}); the target"
                " holds the old or the new files, and the record of this run: once it is reachable, run the same"
                f" mlxfix command with --host {self.label} again to finish it (after an apply, mlxfix rollback"
                f" --host {self.label} undoes it instead)"
            )
            return self._lost
        if why:
            return HostError(f"{self.label}: gave up trying to {what}: {why}; the connection was closed")
        return HostError(f"{self.label}: the connection was lost while trying to {what} ({_first_line(str(exc))})")

    def close(self, *, wait: bool = True) -> None:
        """End the shell and the connection. ``wait=False`` (mlxfix is about to exit): the shell is
        told to exit, and ssh's teardown (one more round trip) is not waited for; the shell, and
        the lock it held, end on the target as the "exit" arrives, before any later login could."""
        proc, self._proc, session, self._session = self._proc, None, self._session, None
        starting, self._starting, self._failure = self._starting, None, None
        del session
        if proc is None:
            return
        if starting is not None and starting.is_alive():  # still logging in: nothing to end politely
            proc.kill()
            starting.join(5)
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"exit\n")
            proc.stdin.close()
            if not wait:
                _LINGERING[:] = [p for p in _LINGERING if p.poll() is None]  # (the ones that ended are reaped)
                _LINGERING.append(proc)  # ends by itself: not a zombie, nor a "still running" warning
                return
            proc.wait(timeout=5)
        except Exception:  # already gone, or stuck: make sure it ends
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with suppress(OSError):  # stdin's flush on close, when ssh is already gone
                    stream.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:  # not when __init__ refused the target
            self.close()

    # -- what travels with the next script ----------------------------------------------------------

    def _defer(self, item: _Pending) -> None:
        """A step whose only answer is "done" (take the lock, check a directory, sync) waits for the
        next script and runs on the target before it, in order: no round trip of its own. Its
        failure is raised by that script's caller, as the step's own error, before anything of
        that script has run; ``then`` is called once it is known to be done."""
        self._deferred.append(item)

    def _exchange(
        self, session: Any, script: str, *, timeout: float, on_line: Callable[[str], None] | None = None, shield: bool = False
    ) -> tuple[int, str, str, str]:
        """session.run(script), with the deferred steps before it."""
        items, self._deferred = self._deferred, []
        if not items:
            return session.run(script, timeout=timeout, on_line=on_line, shield=shield)  # type: ignore[no-any-return]
        parts = ["_mlxfix_df="]
        for index, item in enumerate(items):
            if item.main_shell:  # it sets _mlxfix_e (empty: done) and _mlxfix_m
                run = f'_mlxfix_e=; _mlxfix_m=\n{item.script}\n[ -z "$_mlxfix_e" ] || _mlxfix_df={index}:$_mlxfix_e'
            else:
                run = f"_mlxfix_m=$( ( {item.script}\n) 2>&1 </dev/null ) || _mlxfix_df={index}:$?"
            parts.append(f'if [ -z "$_mlxfix_df" ]; then\n{run}\nfi')
        parts.append(
            f'if [ -z "$_mlxfix_df" ]; then\n{script}\nelse\n'
            '_mlxfix_st="deferred:$_mlxfix_df:$(printf %s "$_mlxfix_m" | base64 -w0)"; fi'
        )
        try:
            code, out, err, extra = session.run("\n".join(parts), timeout=timeout, on_line=on_line, shield=shield)
        except KeyboardInterrupt:
            if session.answered is not None:
                self._settle(items, session.answered[3])
            raise
        self._settle(items, extra)
        return code, out, err, extra

    def _settle(self, items: list[_Pending], extra: str) -> None:
        """Call the deferred steps' ``then`` for those done; raise the error of the one that failed."""
        failed = len(items)
        if extra.startswith("deferred:"):
            _, index, code, message = [*extra.split(":"), "", ""][:4]
            failed = int(index)
        for item in items[:failed]:
            if item.then is not None:
                item.then()
        if failed < len(items):
            text = base64.b64decode(message).decode("utf-8", "replace") if message else ""
            raise items[failed].error(int(code) if code.isdigit() else 1, text)

    def _sh(
        self,
        script: str,
        *,
        check: bool = True,
        what: str = "run a command",
        timeout: float = SCRIPT_TIMEOUT,
        shield: bool = False,
    ) -> tuple[int, str, str]:
        """Run a script in the root shell (one round trip, ``timeout`` seconds at most): (exit code,
        stdout, stderr)."""
        session = self._connect()
        self.round_trips += 1
        wrapped = f"( {script}\n) </dev/null"
        try:
            code, out, err, _ = self._exchange(session, wrapped, timeout=timeout, shield=shield)
        except SessionTimeout as exc:  # the target stopped answering, or a read there never ends
            raise self._dropped(what, exc, f"the target did not answer ({exc})") from None
        except (SessionEnded, OSError) as exc:  # the connection dropped, or the shell died
            raise self._dropped(what, exc) from None
        if check and code != 0:
            raise HostError(f"{self.label}: cannot {what}: {_plain_error(err or out) or f'exit code {code}'}")
        return code, out, err

    # -- paths -----------------------------------------------------------------------------------------

    def real(self, path: str) -> str:
        return path if self.root == "/" else self.root + "/" + path.lstrip("/")

    def _r(self) -> str:
        return "" if self.root == "/" else self.root

    def resolve(self, path: str) -> str:
        """The file a host path names, links followed inside the root; asked once per path and run
        (mlxfix writes files, never links)."""
        known = self._resolved.get(path)
        if known is not None:
            return known
        script = f'r={shlex.quote(self._r())}; p={shlex.quote(path)}\n{_CANON}\ncanon "$p"; printf %s "$r$cv"'
        self._resolved[path] = self._sh(script, what=f"resolve {path}")[1]
        return self._resolved[path]

    # -- reading ---------------------------------------------------------------------------------------

    def gather(
        self,
        files: Sequence[str],
        listings: Sequence[str] = (),
        globs: Sequence[str] = (),
        tools: Sequence[str] = (),
        commands: Sequence[Sequence[str]] = (),
        logs: Sequence[str] = (),
        *,
        limit: int = MAX_READ,
        tail: bool = False,
        bundle: bool = True,
    ) -> Snapshot:
        """Everything a plan needs, in one script and one round trip."""
        script = self._gather_script(files, listings, globs, tools, commands, logs, limit=limit, tail=tail, bundle=bundle)
        _, out, _ = self._sh(script, what="read the boot configuration")
        return self._snapshot(out, limit, tail)

    def _snapshot(self, out: str, limit: int, tail: bool) -> Snapshot:
        snap, changed = _parse_snapshot(out, self.round_trips)
        if changed:  # a file changed size while it was read: those again, each on its own
            again = self.gather(changed, limit=limit, tail=tail, bundle=False)
            snap.files.update(again.files)
            snap.round_trips = again.round_trips
        return snap

    def _gather_script(
        self,
        files: Sequence[str],
        listings: Sequence[str] = (),
        globs: Sequence[str] = (),
        tools: Sequence[str] = (),
        commands: Sequence[Sequence[str]] = (),
        logs: Sequence[str] = (),
        *,
        limit: int = MAX_READ,
        tail: bool = False,
        bundle: bool = True,
    ) -> str:
        q = shlex.quote
        bundling = 0 if tail or not bundle else 1
        lines = [
            f"r={q(self._r())}; limit={limit}; tail={1 if tail else 0}; bundling={bundling}; pseudo={q(_PSEUDO)}; set --",
            _PRELUDE,
        ]
        for d in listings:
            if any(c in d for c in "*?["):
                lines.append(f'for d in "$r"{_glob(d)}; do [ -d "$d" ] && listing "${{d#"$r"}}"; done')
            else:
                lines.append(f"listing {q(d)}")
        for pattern in globs:
            directory, _, base = pattern.rpartition("/")
            if any(c in directory for c in "*?["):  # a wildcard on the way: the shell's own walk
                each = f'for f in "$r"{_glob(pattern)}; do [ -e "$f" ] || [ -L "$f" ] || continue; h=${{f#"$r"}};'
            else:  # the directory resolved as a chroot would (see canon), the names matched in it
                each = (
                    f'canon {q(directory or "/")}; for f in "$r$cv"/{_glob(base)}; do [ -e "$f" ] || [ -L "$f" ] || continue;'
                    f" h={q(directory)}/${{f##*/}};"
                )
            lines.append(f"printf 'G %s' {q(_b64(pattern))}")
            lines.append(f'{each} enc "$h"; printf " %s" "$v"; done; echo')
            lines.append(f'{each} set -- "$@" "$h"; done')
        lines.extend(f'set -- "$@" {q(p)}' for p in files)
        lines.append('emit_all "$@"; bundle_out; bundling=0')
        lines.extend(f"tail=1; emit {q(p)}; tail={1 if tail else 0}" for p in logs)
        lines.extend(f"tool {q(t)}" for t in tools)
        if self.runs_commands:
            for argv in commands:
                key = " ".join(argv)
                lines.append(
                    f"if command -v {q(argv[0])} >/dev/null 2>&1; then "
                    f"printf 'C %s %s\\n' {q(_b64(key))} "
                    f"\"$({{ {shlex.join(argv)} 2>&1; printf '\\n%s' $?; }} | base64 -w0)\"; fi"
                )
        return "\n".join(lines)

    def read(self, path: str, limit: int = MAX_READ, *, tail: bool = False) -> FileInfo:
        snap = self.gather([path], limit=limit, tail=tail)
        return snap.files[path]

    def expand(self, pattern: str) -> list[str]:
        return self.gather([], globs=[pattern]).globs.get(pattern, [])

    def listdir(self, path: str) -> list[str] | None:
        return self.gather([], [path]).listings.get(path)

    # -- writing ---------------------------------------------------------------------------------------

    def write_atomic(self, path: str, data: bytes, *, mode: int, uid: int, gid: int, expect_sha256: str | None) -> None:
        """The same steps as LocalHost.write_atomic, as one script on the target."""
        target = self.resolve(path)
        q = shlex.quote
        check = ""
        if expect_sha256 is not None:
            check = (
                f'[ "$(sha256sum < {q(target)} | cut -d" " -f1)" = {q(expect_sha256)} ] || {{\n'
                "  echo 'the file changed since mlxfix read it (another admin or a package?); nothing was written' >&2\n"
                "  exit 3; }\n"
            )
        script = (
            f'set -e\nt={q(target)}; d=$(dirname "$t")\n'
            'set -- $(stat -L -c "%u %a" "$d")  # the directory: ours or root\'s, writable by no one else\n'
            '[ "$1" = 0 ] || [ "$1" = "$(id -u)" ] || { echo "refusing to write into $d: it belongs to uid $1" >&2; exit 3; }\n'
            'case "$2" in *[2367]? | *[2367]) echo "refusing to write into $d: other users can write to it" >&2; exit 3 ;; esac\n'
            f'{check}tmp=$(mktemp "$d/.${{t##*/}}.mlxfix-XXXXXX")\n'
            "trap 'rm -f \"$tmp\"' EXIT\n"
            f'printf %s {q(_b64(data))} | base64 -d > "$tmp"\n'
            # xattrs and ACLs (an SELinux label, system.posix_acl_*: "mode" carries the ACLs): the new
            # inode would have none; keep the old file's. Then owner and mode, as planned.
            '[ ! -e "$t" ] || cp --attributes-only --preserve=mode,xattr "$t" "$tmp"\n'
            f'chown {uid}:{gid} "$tmp" 2>/dev/null || [ "$(id -u)" != 0 ]\n'
            f'chmod {mode & 0o7777:o} "$tmp"\n'
            'sync "$tmp"\n'
            f'{check}mv -f "$tmp" "$t"\ntrap - EXIT\nsync "$d"'
        )
        checkpoint("write-before-rename")
        code, out, err = self._sh(script, check=False, what=f"write {path}")
        if code != 0:
            raise HostError(_plain_error(err or out) or f"cannot write the file (exit {code})", path=path)
        checkpoint("write-after-rename")

    def check_write_dirs(self, paths: Sequence[str]) -> None:
        """As LocalHost.check_write_dirs, for all paths in one script: each one's directory, resolved
        physically (links in it followed, ``cd -P``), must lie inside the root, and it and every
        directory above it up to the root must be root's or ours and writable by no one else (a
        sticky directory above excepted)."""
        if not paths:
            return
        q = shlex.quote
        script = (
            f"r={q(self._r())}; me=$(id -u); set -- {' '.join(q(p) for p in paths)}\n{_CANON}\n"
            'top=$(cd -P "${r:-/}" && pwd -P) || exit 3\n'
            "for p; do\n"
            '  canon "$p"; p=$cv\n'
            '  d=$(cd -P "$(dirname "$r$p")" 2>/dev/null && pwd -P) || {\n'
            '    echo "cannot use the directory of $p" >&2; exit 3; }\n'
            '  case "$d/" in "${top%/}/"*) ;; *)\n'
            '    echo "refusing to write $p: its directory $d is outside the root" >&2; exit 3 ;; esac\n'
            '  why="refusing to write into $(dirname "$p"): "\n'
            f"  {_SAFE_ANCESTORS}\n"
            "done"
        )
        self._defer(
            _Pending(
                script,
                lambda code, err: HostError(_first_line(err) or f"cannot check the directories (exit {code})", path=paths[0]),
            )
        )

    def _private_dir_script(self, path: str) -> str:
        q = shlex.quote(self.real(path))
        return (
            f"d={q}; r={shlex.quote(self._r())}; me=$(id -u)\n"
            # no one else may control a directory above it (checked before anything is made)
            'top=$(cd -P "${r:-/}" && pwd -P) || exit 3; a=$(dirname "$d")\n'
            'while [ ! -d "$a" ] && [ "$a" != / ]; do a=$(dirname "$a"); done\n'
            'p=$d; d=$(cd -P "$a" && pwd -P) || exit 3; why=\n'
            f"{_SAFE_ANCESTORS}\n"
            "d=$p\n"
            '(umask 022; mkdir -p "$(dirname "$d")"); mkdir -m 700 "$d" 2>/dev/null || true\n'
            '[ -L "$d" ] && { echo "it is a symlink" >&2; exit 3; }\n'
            '[ -d "$d" ] || { echo "it is not a directory" >&2; exit 3; }\n'
            'set -- $(stat -c "%u %a" "$d")\n[ "$1" = "$(id -u)" ] || { echo "it belongs to uid $1" >&2; exit 3; }\n'
            'case "$2" in *00) ;; *) echo "its mode is $2, not private (700)" >&2; exit 3 ;; esac\n'
            'if [ -n "$r" ]; then p=$(cd -P "$d" && pwd -P)\n'
            '  case "$p/" in "$top/"*) ;; *) echo "it is outside the root (it is $p)" >&2; exit 3 ;; esac; fi'
        )

    def make_private_dir(self, path: str) -> None:
        """As LocalHost.make_private_dir; done with the next script (see _defer)."""
        self._defer(
            _Pending(
                self._private_dir_script(path), lambda _, err: HostError(f"refusing to use it: {_first_line(err)}", path=path)
            )
        )

    def create_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        q = shlex.quote(self.real(path))
        script = (
            f"set -eC; umask 077; printf %s {shlex.quote(_b64(data))} | base64 -d > {q}; chmod {mode:o} {q}; sync {q};"
            f' sync "$(dirname {q})"'  # the new name is durable too (an intent record must survive)
        )
        self._sh(script, what=f"create {path}")

    def rename(self, src: str, dst: str) -> None:
        s, d = shlex.quote(self.real(src)), shlex.quote(self.real(dst))
        self._sh(f'set -e; mv -T {s} {d}; sync "$(dirname {d})"', what=f"rename into {dst}")

    def remove(self, path: str) -> None:
        q = shlex.quote(self.real(path))
        self._sh(f'set -e; rm -f {q}; sync "$(dirname {q})"', what=f"remove {path}")

    def remove_tree(self, path: str) -> bool:
        q = shlex.quote(self.real(path))
        return self._sh(f"rm -rf {q}; [ ! -e {q} ] && [ ! -L {q} ]", check=False)[0] == 0

    def await_unlocked(self, paths: Sequence[str], patience: float = 10.0) -> None:
        """As LocalHost.await_unlocked, waited for on the target, with the next script (see _defer)."""
        checks = "".join(
            f'f={shlex.quote(self.real(p))}; if [ -z "$h" ] && [ -e "$f" ] && i=$(stat -c %i "$f") && grep -q ":$i " /proc/locks;'
            f" then h={shlex.quote(p)}; fi\n"
            for p in paths
        )
        script = (
            f'n=0; while :; do h=\n{checks}[ -n "$h" ] || exit 0\n'
            f'n=$((n + 1)); [ "$n" -le {int(patience * 2)} ] || {{ printf %s "$h" >&2; exit 1; }}; sleep 0.5; done'
        )
        self._defer(_Pending(script, lambda _, held: Busy(_package_busy(held))))

    def sync(self, then: Callable[[], None]) -> None:
        """sync(1) on the target; ``then`` once it is done. (A regeneration's own sync travels with it:
        see regenerate. This one is the undo's, whose failure must be said before anything after it.)"""
        from mlxfix.errors import CommandFailed

        code, out, err = self._sh("sync 2>&1", check=False, what="sync")
        if code != 0:
            raise CommandFailed(_SYNC_FAILED.format((out + err).strip() or "no output"))
        then()

    def held_locks(self, paths: Sequence[str]) -> list[str]:
        """Lock files another process holds, from /proc/locks (dpkg and rpm use fcntl locks)."""
        script = "\n".join(
            f'f={shlex.quote(self.real(p))}; [ -e "$f" ] && i=$(stat -c %i "$f") &&\n'
            f'  grep -q ":$i " /proc/locks && echo {shlex.quote(p)}'
            for p in paths
        )
        return [ln for ln in self._sh(script + "\ntrue", what="look at the package locks")[1].splitlines() if ln]

    # -- commands --------------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, on_output: Callable[[str], None] | None = None, timeout: float = 900) -> CommandResult:
        """Run a command in the root shell on the target, streaming its output lines. A wrapper there
        waits for it and says how it ended, exit code or signal (see _STATUS)."""
        session = self._connect()
        self.round_trips += 1
        seen: list[str] = []

        def line(text: str) -> None:
            seen.append(text)
            if on_output is not None:
                on_output(text)

        try:
            code, out, _, status = self._exchange(session, _status_wrapper(argv), timeout=timeout, on_line=line)
        except SessionTimeout:  # the command did not end in time (or the target stopped answering)
            if not self._locked:
                self.close()
                return CommandResult(tuple(argv), 124, "\n".join([*seen, f"(killed after {timeout:.0f} s)"]), signal=9)
            raise self._dropped(f"run {argv[0]}", SessionTimeout(), f"{argv[0]} did not end within {timeout:.0f} s") from None
        except (SessionEnded, OSError) as exc:  # the connection dropped
            raise self._dropped(f"run {argv[0]}", exc) from None
        code, signal = _status(code, status)
        return CommandResult(tuple(argv), code, out.rstrip("\n"), signal=signal)

    def transact(self, steps: Sequence[Step], journal: Journal) -> None:
        """The steps as one script on the target (mlxfix.host.ssh_script): one round trip for the
        whole change. A Ctrl-C (or a stop) while it runs is raised once its report is in: the
        journal then says exactly what was done, and the undo puts back what was."""
        from mlxfix.host.ssh_script import compile_steps, replay

        script = compile_steps(steps, self._r(), _CANON, self.real, self._private_dir_script)
        checkpoint("transaction")
        interrupted: KeyboardInterrupt | None = None
        try:
            _, out, _ = self._sh(script, check=False, what="make the change", shield=True)  # (replay judges)
        except KeyboardInterrupt as exc:
            answer = self._session.answered if self._session is not None else None
            if answer is None:  # a second one, while the script's end was awaited: the connection was given up
                raise self._dropped("make the change", exc, "a second interrupt came before the target's report") from None
            interrupted, out = exc, answer[1]
        error = replay(steps, out, journal, self.label, _plain_error, _first_line)
        if interrupted is not None:
            raise interrupted
        if error is not None:
            raise error

    def regenerate(
        self, argv: Sequence[str], read: tuple[list[str], list[str], list[str]], *, on_output: Callable[[str], None] | None = None
    ) -> Regeneration:
        """As LocalHost.regenerate, in one round trip: the command (its output streamed), then, when
        it succeeded, sync and the read-back in the same script (their answer on stderr)."""
        session = self._connect()
        self.round_trips += 1
        seen: list[str] = []

        def line(text: str) -> None:
            seen.append(text)
            if on_output is not None:
                on_output(text)

        after = (
            "_mlxfix_rc=$?\n"  # the wrapper's: what the session reports, whatever follows
            'case "$_mlxfix_st" in exit:0|guess:0) {\n'
            '  _s=$(sync 2>&1) || printf "S %s\\n" "$(printf %s "$_s" | base64 -w0)"\n'
            f"  ( {self._gather_script(*read)}\n  ) </dev/null\n"
            "} >&2 ;; esac\n"
            '(exit "$_mlxfix_rc")'
        )
        try:
            code, out, err, status = self._exchange(session, f"{_status_wrapper(argv)}\n{after}", timeout=900, on_line=line)
        except SessionTimeout:
            raise self._dropped(f"run {argv[0]}", SessionTimeout(), f"{argv[0]} did not end within 900 s") from None
        except (SessionEnded, OSError) as exc:
            raise self._dropped(f"run {argv[0]}", exc) from None
        code, signal = _status(code, status)
        result = CommandResult(tuple(argv), code, out.rstrip("\n"), signal=signal)
        if not result.ok:
            return Regeneration(result, None, None)
        failed = next((ln[2:] for ln in err.splitlines() if ln.startswith("S ")), None)
        if failed is not None:
            return Regeneration(result, _unb64(failed).decode("utf-8", "replace").strip() or "no output", None)
        return Regeneration(result, None, self._snapshot(err, MAX_READ, False))

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """flock held by the session's shell: released when the connection ends, however it ends.
        Taken by the first script under it (see _defer): a Busy is raised there, before that script
        has run."""
        q = shlex.quote(self.real(path))
        self._connect()
        # In the session's own shell, not a subshell: fd 9 stays open, and so the lock stays held, for as
        # long as the connection lives. "command exec" keeps a failed redirection from ending the shell.
        # As LocalHost.lock: a private regular file (a FIFO or a link planted there is refused, opening
        # a FIFO would block), flock'd at once or not at all (1: busy), then our pid in it.
        steps = [
            "e=",
            f"if [ -L {q} ] || {{ [ -e {q} ] && [ ! -f {q} ]; }}; then e=3; fi",
            f'[ -n "$e" ] || _mlxfix_m=$( (umask 077; : >>{q}) 2>&1 ) || e=2',
            f'[ -n "$e" ] || command exec 9>>{q} || e=2',
            '[ -n "$e" ] || flock -n 9 || e=1',
            f'[ -n "$e" ] || printf "%s\\n" "$$" >{q} || {{ e=2; exec 9>&-; }}',
            "_mlxfix_e=$e",
        ]

        def refused(code: int, err: str) -> MlxfixError:
            self._locked = False
            if code == 1:
                return Busy(
                    f"another mlxfix is running on {self.label} (it holds the lock); try again when it is done", path=path
                )
            if code == 3:
                return HostError("refusing to use it as the lock: it is not a regular file", path=path)
            return HostError(f"cannot take the lock: {_plain_error(err) or f'exit code {code}'}", path=path)

        def taken() -> None:
            self._locked = True

        lock = _Pending("\n".join(steps), refused, then=taken, main_shell=True)
        self._defer(lock)
        try:
            yield
        finally:
            was_locked, self._locked = self._locked, False
            if lock in self._deferred:  # nothing ran under it: it was never taken
                self._deferred.remove(lock)
            elif was_locked and self._session is not None:  # released now, with no answer to wait for
                self._session.send("exec 9>&-\n")

    def privileged(self) -> bool:
        """Root on the target (or a --root tree it can write): the login said (else one round trip)."""
        self._connect()
        if self._identity is not None:
            uid, can_write = self._identity
            return uid == 0 if self.root == "/" else can_write
        writable = "true" if self.root == "/" else f"[ -w {shlex.quote(self.root)} ]"
        out = self._sh(f"id -u; if {writable}; then echo w; else echo -; fi", what="ask who we are")[1].split()
        uid = int(out[0]) if out and out[0].isdigit() else -1
        if self.root == "/":
            return uid == 0
        return out[-1:] == ["w"]


class _Pending(NamedTuple):
    """A step that travels with the next script (see SshHost._defer): its sh, the error it raises
    given the exit code and what it said, and what to do once it is done."""

    script: str
    error: Callable[[int, str], MlxfixError]
    then: Callable[[], None] | None = None
    main_shell: bool = False  # run in the session's own shell (the lock's fd 9), not a subshell


def _package_busy(held: str) -> str:
    return f"a package manager holds {held} (an upgrade is running?); try again when it has finished"


_SYNC_FAILED = "sync (to make the regenerated boot configuration durable) failed: {}"


# How a command on the target ended, told apart as the kernel's wait status tells it (a command that
# exits 129 on its own is not one killed by SIGHUP; sh's "$?" says 129 for both): perl (Essential on
# Debian) or python3 forks, execs and waits for it, and writes "exit:N" or "signal:N" to fd 3, which the
# shell captures; the command's own output goes to the session's stdout (fd 4). With neither, the
# shell's "$?" is all there is: "guess:N", and a status above 128 counts as a signal (the cautious
# reading: a signal voids the promise that a failed grub-mkconfig left grub.cfg as it was). A wrapper
# killed before it wrote its word is read the same way.
_PERL = (
    "use POSIX (); my $pid = fork; defined $pid or die qq(cannot fork: $!\n);"
    " if (!$pid) { POSIX::close(3); exec { $ARGV[0] } @ARGV;"
    " my $n = $!{ENOENT} ? 127 : 126; print STDERR qq($ARGV[0]: $!\n); POSIX::_exit($n) }"
    " waitpid($pid, 0) == $pid or die qq(cannot wait: $!\n); my $w = $?;"
    " open(my $s, '>&=', 3) or die; if ($w & 127) { syswrite($s, 'signal:' . ($w & 127)); POSIX::_exit(128 + ($w & 127)) }"
    " syswrite($s, 'exit:' . ($w >> 8)); POSIX::_exit($w >> 8)"
)
_PYTHON = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.close(3)\n"
    "    try:\n"
    "        os.execvp(sys.argv[1], sys.argv[1:])\n"
    "    except OSError as e:\n"
    "        sys.stderr.write(f'{sys.argv[1]}: {e.strerror}\\n'); os._exit(127 if e.errno == 2 else 126)\n"
    "w = os.waitpid(pid, 0)[1]\n"
    "if os.WIFSIGNALED(w):\n"
    "    os.write(3, b'signal:%d' % os.WTERMSIG(w)); os._exit(128 + os.WTERMSIG(w))\n"
    "os.write(3, b'exit:%d' % os.WEXITSTATUS(w)); os._exit(os.WEXITSTATUS(w))\n"
)


def _status_wrapper(argv: Sequence[str], helpers: Sequence[str] = ("perl", "python3")) -> str:
    """The script that runs ``argv`` (stdout and stderr merged, no stdin) and leaves how it ended in
    ``$_mlxfix_st`` for the session's trailer."""
    q, cmd = shlex.quote, shlex.join(argv)
    run = {
        "perl": f"perl -e {q(_PERL)} -- {cmd}",
        "python3": f"python3 -I -S -c {q(_PYTHON)} {cmd}",
    }
    branches = [f"command -v {h} >/dev/null 2>&1; then LC_ALL=C.UTF-8 {run[h]} 3>&1 >&4 2>&4 4>&-" for h in helpers]
    fallback = f'LC_ALL=C.UTF-8 {cmd} >&4 2>&4 4>&-; echo "guess:$?"'
    body = "if " + "; elif ".join(branches) + f"; else {fallback}; fi" if branches else fallback
    return f"{{ _mlxfix_st=$({body}); }} 4>&1 </dev/null"


def _status(code: int, status: str) -> tuple[int, int | None]:
    """(exit code, signal) from the wrapper's word (see _PERL): "exit:N", "signal:N", "guess:N"."""
    kind, _, number = status.partition(":")
    if not number.isdigit():  # the wrapper itself died without a word: read its status as a guess
        return code, code - 128 if code > 128 else None
    n = int(number)
    if kind == "signal":
        return 128 + n, n
    if kind == "guess":
        return n, n - 128 if n > 128 else None
    return n, None


# $d (physical, inside $top) and every directory above it up to $top: root's or ours ($me), writable
# by no one else; a sticky one above $d excepted. A refusal is "$why" and the reason, exit 3.
_SAFE_ANCESTORS = (
    "first=1\n"
    'while :; do s=$(stat -c "%u %a" "$d") || exit 3; set -- $s; m=$((0$2)); shown=${d#"${top%/}"}\n'
    '  [ "$1" = 0 ] || [ "$1" = "$me" ] || { echo "$why${shown:-/} belongs to uid $1" >&2; exit 3; }\n'
    '  if [ $((m & 022)) != 0 ] && { [ -n "$first" ] || [ $((m & 01000)) = 0 ]; }; then\n'
    '    echo "${why}other users can write to ${shown:-/}" >&2; exit 3; fi\n'
    '  [ "$d" = "$top" ] || [ "$d" = / ] && break; d=${d%/*}; d=${d:-/}; first=\n'
    "done"
)

# Follow the links a host path $p names, inside the root $r, as a chroot would (40 at most).
_CANON = _PRELUDE[: _PRELUDE.index("enc() {")].strip()  # the canon function alone, for a script of its own


def _glob(pattern: str) -> str:
    """A host path pattern for the script: literal parts quoted, wildcards left to the shell."""
    out = []
    for part in re.split(r"([*?]|\[[^]]*\])", pattern):
        if not part:
            continue
        out.append(part if part in ("*", "?") or part.startswith("[") else shlex.quote(part))
    return "".join(out)


def _plain_error(text: str) -> str:
    """A tool's complaint on the target in the words LocalHost uses ("No space left on device": the
    file system is full), else its first line."""
    for marker, words in (
        ("No space left on device", "the file system is full"),
        ("Read-only file system", "the file system is read-only"),
        ("Input/output error", "the disk reported an I/O error"),
        ("I/O error", "the disk reported an I/O error"),
        ("Permission denied", "permission denied"),
    ):
        if marker in text:
            return words
    return _first_line(text)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip() and "Warning: Permanently added" not in line:
            return line.strip()[:200]
    return ""


_PSEUDO = f" {' '.join(sorted(PSEUDO_FS))} "


def _script_error(err: str) -> str | None:
    """The script's own words, spaces as _; a file on a kernel file system in the words mlxfix uses locally."""
    if err == "-":
        return None
    if err.startswith(":pseudo_fs:"):
        return pseudo_error(err.removeprefix(":pseudo_fs:"))
    return err[1:].replace("_", " ")


def _parse_snapshot(out: str, round_trips: int) -> tuple[Snapshot, list[str]]:
    """The snapshot, and the files to read again (their sizes no longer add up to the bundle's)."""
    snap = Snapshot(round_trips=round_trips)
    bundled: list[tuple[str, int]] = []
    bundle = b""
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split(" ")
        if kind == "B":
            bundle += base64.b64decode(rest)
        elif kind == "F" and len(fields) == 11 and fields[9].startswith("@"):
            bundled.append((_unb64(fields[0]).decode("utf-8", "surrogateescape"), int(fields[9][1:])))
            fields[9] = "="  # (its bytes: cut from the bundle below)
        if kind == "F" and len(fields) == 11:
            path = _unb64(fields[0]).decode("utf-8", "surrogateescape")
            exists, mode, uid, gid, islink, link, isdir, err, data, nlink = fields[1:]
            snap.files[path] = FileInfo(
                path,
                exists == "1",
                None if data == "-" else b"" if data == "=" else (data[1:] + "\n").encode() if data[:1] == "." else _unb64(data),
                int(mode, 16) if exists == "1" else 0,
                int(uid),
                int(gid),
                islink == "1",
                _unb64(link).decode("utf-8", "surrogateescape") if link != "-" else None,
                isdir == "1",
                _script_error(err),
                int(nlink) if nlink.isdigit() else 1,
            )
        elif kind == "L" and fields:
            path = _unb64(fields[0]).decode("utf-8", "surrogateescape")
            snap.listings[path] = (
                sorted(_unb64(f).decode("utf-8", "surrogateescape") for f in fields[2:]) if fields[1] == "1" else None
            )
        elif kind == "G" and fields:
            pattern = _unb64(fields[0]).decode()
            snap.globs[pattern] = sorted(_unb64(f).decode("utf-8", "surrogateescape") for f in fields[1:] if f)
        elif kind == "T" and len(fields) == 2:
            snap.tools[_unb64(fields[0]).decode()] = _unb64(fields[1]).decode() if fields[1] != "-" else None
        elif kind == "C" and len(fields) == 2:
            key = _unb64(fields[0]).decode()
            output, _, code = _unb64(fields[1]).decode("utf-8", "replace").rpartition("\n")  # the script adds "\n$?"
            snap.outputs[key] = output
            snap.exit_codes[key] = int(code) if code.isdigit() else 1
    if sum(size for _, size in bundled) != len(bundle):
        return snap, [path for path, _ in bundled]
    at = 0
    for path, size in bundled:
        snap.files[path] = snap.files[path]._replace(data=bundle[at : at + size])
        at += size
    return snap, []
