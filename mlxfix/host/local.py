"""The only door to the world: read, write atomically, run, lock; on this machine or over SSH.

Every path given to a host is a path *on the host* (``/etc/default/grub``); the host maps it under its
root (``--root DIR``), so the same plan works on a fixture tree, this machine or a remote one. Writes
are atomic (temp file in the same directory created with O_EXCL, fsync, rename, fsync of the
directory) and keep mode and owner.

Test hooks, inert unless their environment variable is set (see README, "Safety"):
``MLXFIX_TEST_FAULTS`` makes the OS-facing calls below fail (``rename:2=EXDEV,fsync:*=EIO``) and
``MLXFIX_TEST_CRASH_AT`` kills the process with SIGKILL at a named step (``after-backup``).
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, Protocol

from mlxfix.digest import sha256
from mlxfix.errors import Busy, FileError, HostError
from mlxfix.facts import CommandResult, FileInfo, Regeneration, Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from mlxfix.transaction import Journal, Step

__all__ = [
    "CommandResult",
    "FileInfo",
    "Host",
    "LocalHost",
    "Snapshot",
    "checkpoint",
]

MAX_READ = 16 << 20  # files larger than this are never read whole (logs are read from the end)
STATE_DIR = "/var/lib/mlxfix"
BACKUP_ID = r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}"  # a backup's name under STATE_DIR/backups (see backup.new_id)


class Host(Protocol):
    """What the rest of mlxfix may ask of a machine."""

    root: str
    label: str
    runs_commands: bool  # False under --root DIR: commands are reported, not run

    def gather(
        self,
        files: Sequence[str],
        listings: Sequence[str] = (),
        globs: Sequence[str] = (),
        tools: Sequence[str] = (),
        commands: Sequence[Sequence[str]] = (),
        logs: Sequence[str] = (),
    ) -> Snapshot: ...

    def real(self, path: str) -> str: ...

    def resolve(self, path: str) -> str: ...

    def read(self, path: str, limit: int = MAX_READ, *, tail: bool = False) -> FileInfo: ...

    def expand(self, pattern: str) -> list[str]: ...

    def write_atomic(self, path: str, data: bytes, *, mode: int, uid: int, gid: int, expect_sha256: str | None) -> None: ...

    def check_write_dirs(self, paths: Sequence[str]) -> None: ...

    def make_private_dir(self, path: str) -> None: ...

    def create_file(self, path: str, data: bytes, mode: int = 0o600) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def remove_tree(self, path: str) -> bool:
        """Remove a directory and what it holds, as far as it goes; whether it is gone."""
        ...

    def held_locks(self, paths: Sequence[str]) -> list[str]: ...

    def listdir(self, path: str) -> list[str] | None: ...

    def run(
        self, argv: Sequence[str], *, on_output: Callable[[str], None] | None = None, timeout: float = 900
    ) -> CommandResult: ...

    def lock(self, path: str) -> AbstractContextManager[None]: ...

    def transact(self, steps: Sequence[Step], journal: Journal) -> None:
        """Run the steps of a change in order, stopping at the first that fails (mlxfix.transaction)."""

    def await_unlocked(self, paths: Sequence[str], patience: float = 10.0) -> None:
        """Wait (``patience`` seconds at most) until no other process holds any of these lock files,
        else raise Busy."""

    def sync(self, then: Callable[[], None]) -> None:
        """Flush every file system's dirty data (sync(1)); ``then`` once it is done."""

    def regenerate(
        self, argv: Sequence[str], read: tuple[list[str], list[str], list[str]], *, on_output: Callable[[str], None] | None = None
    ) -> Regeneration:
        """Run the command that regenerates the boot configuration; when it succeeded, sync, then
        the batched read ``read`` (files, listings, globs) of what it generated."""

    def privileged(self) -> bool: ...

    def close(self) -> None: ...


# -- test hooks --------------------------------------------------------------------------------------


class _OsHooks:
    """Test hooks on every OS call that changes something (create, write, fsync, rename, mkdir,
    unlink), inert unless their variable is set:

    - ``MLXFIX_TEST_FAULTS=op:N=ERRNO[,...]``: the N-th call of that kind (or every one, ``op:*``)
      fails with that errno;
    - ``MLXFIX_TEST_CRASH_AT=op:N``: the process dies (SIGKILL) at the N-th such call of any kind,
      halfway through it for a write; ``MLXFIX_TEST_CRASH_AT=STEP`` at a named ``checkpoint``;
    - ``MLXFIX_TEST_OPS_LOG=FILE``: each call is logged, numbered, to FILE.
    """

    def __init__(self, faults: str, crash: str) -> None:
        self.rules: dict[str, tuple[str, int]] = {}
        self.counts: dict[str, int] = {}
        self.total = 0
        self.crash_at = int(crash[3:]) if crash.startswith("op:") and crash[3:].isdigit() else 0
        self.log = os.environ.get("MLXFIX_TEST_OPS_LOG", "")  # one line per call: the crash points to explore
        for item in filter(None, (x.strip() for x in faults.split(","))):
            target, _, err = item.partition("=")
            op, _, nth = target.partition(":")
            self.rules[op] = (nth or "*", getattr(errno, err, errno.EIO))

    def check(self, op: str, path: str) -> bool:
        """Count one OS call; raise an injected fault. True when the process must die now (the
        caller does half of its write first)."""
        self.total += 1
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{self.total} {op} {path}\n")
        self.counts[op] = self.counts.get(op, 0) + 1
        rule = self.rules.get(op)
        if rule is not None:
            nth, code = rule
            if nth == "*" or int(nth) == self.counts[op]:
                raise OSError(code, os.strerror(code) + " (injected by MLXFIX_TEST_FAULTS)", path)
        if self.total == self.crash_at:
            if op != "write":
                _die()
            return True
        return False


def _die() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


_HOOKS = _OsHooks(os.environ.get("MLXFIX_TEST_FAULTS", ""), os.environ.get("MLXFIX_TEST_CRASH_AT", ""))
_CRASH_AT = os.environ.get("MLXFIX_TEST_CRASH_AT", "")
_PAUSE_AT = os.environ.get("MLXFIX_TEST_PAUSE_AT", "")


def _write_all(fd: int, data: bytes, path: str) -> None:
    """os.write until everything is written (a crash hook may stop it halfway)."""
    view = memoryview(data)
    while view:
        if _HOOKS.check("write", path):
            os.write(fd, view[: len(view) // 2])
            _die()
        n = os.write(fd, view)
        view = view[n:]


def checkpoint(step: str) -> None:
    """A named step of apply/rollback. Under MLXFIX_TEST_CRASH_AT=step the process dies here with
    SIGKILL; under MLXFIX_TEST_PAUSE_AT=step:FILE it creates FILE.reached and waits (60 s at most) for
    FILE.go, so that a test can break something (kill the SSH connection) at exactly this point.
    Several pauses: ``step:FILE,step2:FILE2``."""
    if _CRASH_AT and step == _CRASH_AT:
        _die()
    for pause in filter(None, _PAUSE_AT.split(",")):
        if pause.split(":", 1)[0] != step:
            continue
        import time

        marker = pause.split(":", 1)[1]
        with open(marker + ".reached", "w"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(marker + ".go") and time.monotonic() < deadline:
            time.sleep(0.05)


# -- the local machine -----------------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _HOOKS.check("fsync", path)
        os.fsync(fd)
    finally:
        os.close(fd)


READ_TIMEOUT = 10.0  # seconds for one file: a configuration file is read in microseconds

# Kernel file systems whose files are not configuration and may block or never end (tracefs's
# trace_pipe is a regular file of size 0 that blocks): /proc/self/mountinfo's names, and the ones GNU
# stat -f -c %T prints for them (the SSH side asks stat).
PSEUDO_FS = frozenset(
    {
        "proc", "sysfs", "tracefs", "debugfs", "securityfs", "configfs", "cgroup", "cgroup2", "cgroupfs",
        "cgroup2fs", "bpf", "bpf_fs", "pstore", "pstorefs", "efivarfs", "devpts", "mqueue", "hugetlbfs",
        "fusectl", "binfmt_misc", "autofs", "nsfs", "rpc_pipefs",
    }
)  # fmt: skip
_MOUNTS: dict[int, str] = {}


def pseudo_fs(dev: int) -> str | None:
    """The kernel file system a device number belongs to, if it is one of PSEUDO_FS (this machine's
    /proc/self/mountinfo, read once, again for a device mounted since)."""
    if dev not in _MOUNTS:
        with suppress(OSError), open("/proc/self/mountinfo", "rb") as fh:
            for line in fh.read().decode(errors="replace").splitlines():
                fields = line.split(" ")
                if " - " in line and len(fields) > 3 and ":" in fields[2]:
                    major, minor = fields[2].split(":", 1)
                    fstype = line.split(" - ", 1)[1].split(" ", 1)[0]
                    with suppress(ValueError):
                        _MOUNTS[os.makedev(int(major), int(minor))] = fstype
        _MOUNTS.setdefault(dev, "")  # not listed (a btrfs subvolume's own number): not looked up again
    kind = _MOUNTS[dev]
    return kind if kind in PSEUDO_FS else None


def pseudo_error(kind: str) -> str:
    return f"on the {kind} kernel file system, not a configuration file (reading it could block forever)"


def _alarm(_signum: int, _frame: object) -> None:
    raise TimeoutError


@contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    """A blocking read interrupted after ``seconds`` (SIGALRM; only the main thread can take it)."""
    import signal

    try:
        previous = signal.signal(signal.SIGALRM, _alarm)
    except ValueError:  # not the main thread: unbounded, as before
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _explain(exc: OSError, what: str, path: str) -> HostError:
    reason = exc.strerror or str(exc)
    hints = {
        errno.ENOSPC: "the file system is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied (run as root, or use --root on a tree you can write)",
        errno.EPERM: "operation not permitted (run as root, or check chattr +i)",
        errno.EXDEV: "the temporary file ended up on another file system",
        errno.EIO: "the disk reported an I/O error",
    }
    return HostError(f"cannot {what}: {hints.get(exc.errno or 0, reason)}", path=path)


class LocalHost:
    """This machine, rooted at ``root`` ("/" or a directory standing in for it)."""

    label = "localhost"

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root)
        self.runs_commands = self.root == "/"
        self._lock_fds: list[int] = []
        self._dirs: dict[str, str] = {}  # directory -> its canonical path in the root (links resolved)

    def real(self, path: str) -> str:
        """Where a host path lives on this machine's file system. Under ``--root`` the directories on
        the way are resolved as the host would resolve them, links included: ``--root`` is a chroot, an
        absolute link (``etc/default -> /elsewhere``) stays inside the tree. The last component is not
        followed (see ``resolve``)."""
        if self.root == "/":
            return path
        return self.root + self._canonical(path, follow_last=False)

    def resolve(self, path: str) -> str:
        """The real file a host path names, every symlink followed component by component as the
        kernel's path walk does (a ``..`` after a linked directory leaves the link's target, not the
        link), inside the root."""
        return self._on_disk(self._canonical(path, follow_last=True))

    def _on_disk(self, path: str) -> str:
        return (path or "/") if self.root == "/" else self.root + path

    def _canonical(self, path: str, *, follow_last: bool, depth: int = 0) -> str:
        """A host path with every symlink on the way resolved inside the root ("" for the root itself).
        A ``..`` is taken from the directory reached so far, which is already physical: that is the
        kernel's rule, and text normalisation (``os.path.normpath``) gets it wrong."""
        if depth > 40:
            raise HostError("too many levels of symbolic links", path=path)
        parts = [p for p in path.split("/") if p and p != "."]
        current = ""
        for i, part in enumerate(parts):
            if part == "..":
                current = current.rsplit("/", 1)[0]  # ".." of the root is the root, as in a chroot
                continue
            candidate = f"{current}/{part}"
            last = i == len(parts) - 1
            if last and not follow_last:
                return candidate
            cached = self._dirs.get(candidate) if not last else None
            if cached is not None:
                current = cached
                continue
            try:
                target = os.readlink(self._on_disk(candidate))
            except OSError:  # not a link, or absent: the name stands for itself
                resolved = candidate
            else:
                base = "" if target.startswith("/") else current
                resolved = self._canonical(f"{base}/{target}", follow_last=True, depth=depth + 1)
            if not last:
                self._dirs[candidate] = resolved
            current = resolved
        return current or ""

    # -- reading -------------------------------------------------------------------------------------

    def read(self, path: str, limit: int = MAX_READ, *, tail: bool = False) -> FileInfo:
        """A file's bytes and facts; ``tail``: a file over ``limit`` gives its last ``limit`` bytes."""
        real = self.real(path)
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return FileInfo(path, exists=False)
        except OSError as exc:
            return FileInfo(path, exists=False, error=exc.strerror)
        link = None
        is_link = stat.S_ISLNK(st.st_mode)
        if is_link:
            link = os.readlink(real)
            try:
                real = self.resolve(path)
                st = os.stat(real)
            except (OSError, HostError):
                return FileInfo(path, exists=False, is_symlink=True, link_target=link, error="dangling symlink")
        if stat.S_ISDIR(st.st_mode):
            return FileInfo(path, True, None, st.st_mode, st.st_uid, st.st_gid, is_link, link, is_dir=True)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
            return FileInfo(path, True, None, st.st_mode, st.st_uid, st.st_gid, is_link, link, error="not a regular file")
        if not path.startswith(("/proc/", "/sys/")) and (kind := pseudo_fs(st.st_dev)):
            return FileInfo(path, True, None, st.st_mode, st.st_uid, st.st_gid, is_link, link, error=pseudo_error(kind))
        try:
            with _bounded(READ_TIMEOUT), open(real, "rb") as fh:
                if tail and st.st_size > limit:
                    fh.seek(st.st_size - limit)
                    data = fh.read(limit)
                else:
                    data = fh.read(limit + 1)
        except TimeoutError:
            why = f"no end within {READ_TIMEOUT:.0f} s (a file that never ends?)"
            return FileInfo(path, True, None, st.st_mode, st.st_uid, st.st_gid, is_link, link, error=why)
        except OSError as exc:
            return FileInfo(path, True, None, st.st_mode, st.st_uid, st.st_gid, is_link, link, error=exc.strerror)
        if len(data) > limit:
            return FileInfo(path, True, None, st.st_mode, st.st_uid, st.st_gid, is_link, link, error=f"larger than {limit} bytes")
        return FileInfo(path, True, data, st.st_mode, st.st_uid, st.st_gid, is_link, link, nlink=st.st_nlink)

    def expand(self, pattern: str) -> list[str]:
        """The host paths that match a shell pattern, sorted; as in sh, only a pattern that starts
        with a dot matches dot files."""
        import fnmatch

        current = [""]
        for part in pattern.strip("/").split("/"):
            if any(c in part for c in "*?["):
                current = [
                    f"{base}/{entry}"
                    for base in current
                    for entry in (self.listdir(base or "/") or [])
                    if fnmatch.fnmatchcase(entry, part) and (part.startswith(".") or not entry.startswith("."))
                ]
            else:
                current = [f"{base}/{part}" for base in current]
        return sorted(p for p in current if self._lexists(p))

    def _lexists(self, path: str) -> bool:
        try:
            return os.path.lexists(self.real(path))
        except HostError:  # a symlink loop on the way (one looping PCI device entry): sh's glob skips it too
            return False

    def listdir(self, path: str) -> list[str] | None:
        try:  # a directory that is a link (grub.d -> /elsewhere) is listed where it leads, in the tree
            return sorted(os.listdir(self.resolve(path)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, HostError):  # unreadable, or a symlink loop on the way
            return None

    def gather(
        self,
        files: Sequence[str],
        listings: Sequence[str] = (),
        globs: Sequence[str] = (),
        tools: Sequence[str] = (),
        commands: Sequence[Sequence[str]] = (),
        logs: Sequence[str] = (),
    ) -> Snapshot:
        """Read everything a plan needs at once. Listings and globs may hold wildcards in any
        component. ``commands`` (status queries) run only when this host runs commands and the
        program is installed. ``logs``: files that may be huge, read from their end."""
        snap = Snapshot()
        for d in listings:
            if any(c in d for c in "*?["):
                for match in self.expand(d):
                    snap.listings[match] = self.listdir(match)
            else:
                snap.listings[d] = self.listdir(d)
        for pattern in globs:
            snap.globs[pattern] = self.expand(pattern)
            for m in snap.globs[pattern]:
                snap.files[m] = self.read(m)
        for p in files:
            snap.files[p] = self.read(p)
        for p in logs:
            snap.files[p] = self.read(p, tail=True)
        for t in tools:
            snap.tools[t] = self.which(t)
        for argv in commands:
            if self.runs_commands and snap.tools.get(argv[0], self.which(argv[0])):
                result = self.run(argv, timeout=60)
                snap.outputs[" ".join(argv)] = result.output
                snap.exit_codes[" ".join(argv)] = result.exit_code
        return snap

    def which(self, name: str) -> str | None:
        dirs = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":")
        for d in [*dirs, "/usr/sbin", "/sbin"]:
            candidate = os.path.join(d, name) if self.root == "/" else self.real(os.path.join(d, name))
            if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
                return os.path.join(d, name)
        return None

    # -- writing -------------------------------------------------------------------------------------

    def write_atomic(self, path: str, data: bytes, *, mode: int, uid: int, gid: int, expect_sha256: str | None) -> None:
        """Replace ``path`` with ``data``: temp file beside it (O_EXCL), fsync, rename, fsync the
        directory. A symlink is followed to its target, and the link is kept. ``expect_sha256`` is
        what the file must still hold (it changed under us otherwise: nothing is written)."""
        real = self.resolve(path)
        directory = os.path.dirname(real)
        self._refuse_unsafe_dir(directory, path)
        self._expect(path, expect_sha256)
        tmp = None
        try:
            _HOOKS.check("create", path)
            import tempfile

            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.mlxfix-", dir=directory)
            try:
                _write_all(fd, data, path)
                if os.geteuid() == 0:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, stat.S_IMODE(mode))
                _copy_xattrs(real, fd)
                _HOOKS.check("fsync", path)
                os.fsync(fd)
            finally:
                os.close(fd)
            checkpoint("write-before-rename")
            self._expect(path, expect_sha256)  # again, as late as it can be: just before the rename
            _HOOKS.check("rename", path)
            os.rename(tmp, real)
            tmp = None
            checkpoint("write-after-rename")
            _fsync_dir(directory)
        except OSError as exc:
            raise _explain(exc, "write the file", path) from None
        finally:
            if tmp is not None:
                with suppress(OSError):
                    os.unlink(tmp)

    def _expect(self, path: str, expect_sha256: str | None) -> None:
        """The file must still hold what the plan was made from: another admin or dpkg may have changed it."""
        if expect_sha256 is None:
            return
        current = self.read(path)
        if current.data is None or sha256(current.data) != expect_sha256:
            raise HostError("the file changed since mlxfix read it (another admin or a package?); nothing was written", path=path)

    def check_write_dirs(self, paths: Sequence[str]) -> None:
        """Refuse, before anything is written, a write into a directory another user controls."""
        for path in paths:
            self._refuse_unsafe_dir(os.path.dirname(self.resolve(path)), path)

    def _host_path(self, real: str) -> str:
        """A real path shown as the host path it stands for (messages name what the admin knows)."""
        if self.root == "/" or not (real == self.root or real.startswith(self.root + "/")):
            return real
        return real[len(self.root) :] or "/"

    def _refuse_unsafe_dir(self, directory: str, path: str) -> None:
        """No write may land in a directory another user controls (a symlink planted there, or a
        file swapped under us): it and every directory above it (up to the root) must belong to root
        or to mlxfix's user, writable by no one else (a sticky directory such as /tmp excepted above)."""
        top = self.root if self.root != "/" else "/"
        current = directory
        first = True
        while True:
            try:
                st = os.stat(current)
            except OSError as exc:
                raise _explain(exc, "use the directory", path) from None
            shown = self._host_path(current)
            if st.st_uid not in (0, os.geteuid()):
                where = self._host_path(directory)
                raise HostError(f"refusing to write into {where}: {shown} belongs to uid {st.st_uid}", path=path)
            writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if writable and (first or not st.st_mode & stat.S_ISVTX):
                mode = f"{stat.S_IMODE(st.st_mode):04o}"
                raise HostError(
                    f"refusing to write into {self._host_path(directory)}: other users can write to {shown} (mode {mode})",
                    path=path,
                )
            if current == top or os.path.dirname(current) == current:
                return
            current, first = os.path.dirname(current), False

    def make_private_dir(self, path: str) -> None:
        """Create ``path`` (and parents) mode 0700; refuse it if it is a symlink, belongs to another
        user, or can be written by group or others, or if another user controls a directory above it."""
        real = self.real(path)
        existing = os.path.dirname(real)
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        self._refuse_unsafe_dir(existing, path)  # no one else may control a directory above it (nothing made yet)
        try:
            old_umask = os.umask(0o022)  # parents as a system makes them (0755), whatever the admin's umask
            try:
                os.makedirs(os.path.dirname(real), exist_ok=True)
            finally:
                os.umask(old_umask)
            try:
                _HOOKS.check("mkdir", path)
                os.mkdir(real, 0o700)
            except FileExistsError:
                pass
            st = os.lstat(real)
        except OSError as exc:
            raise _explain(exc, "create the directory", path) from None
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise HostError("refusing to use it: it is a symlink or not a directory", path=path)
        if st.st_uid != os.geteuid():
            raise HostError(f"refusing to use it: it belongs to uid {st.st_uid}, not to mlxfix's user", path=path)
        if st.st_mode & 0o077:
            raise HostError(f"refusing to use it: its mode is {stat.S_IMODE(st.st_mode):04o}, not private (0700)", path=path)

    def create_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Create a new file with O_EXCL|O_NOFOLLOW and fsync it (backups, manifests, state)."""
        real = self.real(path)
        try:
            _HOOKS.check("create", path)
            fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            try:
                _write_all(fd, data, path)
                _HOOKS.check("fsync", path)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(os.path.dirname(real))  # the new name is durable too (an intent record must survive)
        except OSError as exc:
            raise _explain(exc, "create the file", path) from None

    def rename(self, src: str, dst: str) -> None:
        """Rename within one directory tree and fsync the destination's directory."""
        try:
            _HOOKS.check("rename", dst)
            os.rename(self.real(src), self.real(dst))
            _fsync_dir(os.path.dirname(self.real(dst)))
        except OSError as exc:
            raise _explain(exc, "rename into place", dst) from None

    def remove(self, path: str) -> None:
        """Remove a file (absent is fine) and make the removal durable."""
        real = self.real(path)
        try:
            _HOOKS.check("unlink", path)
            os.unlink(real)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _explain(exc, "remove the file", path) from None
        try:
            _fsync_dir(os.path.dirname(real))
        except OSError as exc:
            raise _explain(exc, "remove the file", path) from None

    def held_locks(self, paths: Sequence[str]) -> list[str]:
        """The lock files among ``paths`` that another process holds (dpkg and rpm use fcntl locks)."""
        import fcntl

        held = []
        for path in paths:
            try:
                fd = os.open(self.real(path), os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # absent, or not ours to open: nobody we can see holds it
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                # dpkg and rpm take fcntl (POSIX) locks; a script may hold the file with flock(1): either counts.
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(fd, fcntl.LOCK_UN)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                held.append(path)
            finally:
                os.close(fd)
        return held

    def await_unlocked(self, paths: Sequence[str], patience: float = 10.0) -> None:
        import time

        deadline = time.monotonic() + patience
        while True:
            held = self.held_locks(paths)
            if not held:
                return
            if time.monotonic() >= deadline:
                raise Busy(f"a package manager holds {held[0]} (an upgrade is running?); try again when it has finished")
            time.sleep(0.5)

    def sync(self, then: Callable[[], None]) -> None:
        result = self.run(("sync",), timeout=600)
        if not result.ok:
            from mlxfix.errors import CommandFailed

            raise CommandFailed(
                f"sync (to make the regenerated boot configuration durable) failed: {result.tail(3) or 'no output'}"
            )
        then()

    def regenerate(
        self, argv: Sequence[str], read: tuple[list[str], list[str], list[str]], *, on_output: Callable[[str], None] | None = None
    ) -> Regeneration:
        result = self.run(argv, on_output=on_output)
        if not result.ok:
            return Regeneration(result, None, None)
        synced = self.run(("sync",), timeout=600)
        if not synced.ok:
            return Regeneration(result, synced.tail(3) or "no output", None)
        return Regeneration(result, None, self.gather(*read))

    def remove_tree(self, path: str) -> bool:
        import shutil

        real = self.real(path)
        shutil.rmtree(real, ignore_errors=True)
        return not os.path.lexists(real)

    # -- commands ------------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, on_output: Callable[[str], None] | None = None, timeout: float = 900) -> CommandResult:
        """Run a command (never through a shell), streaming its output lines to ``on_output``."""
        from mlxfix.host.ssh import import_plumbum

        local = import_plumbum().local

        from mlxfix import stops

        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        # after a hang-up or a kill, what still runs (the restore's regeneration) must outlive the terminal
        return run_streaming(local, argv, on_output=on_output, timeout=timeout, env=env, detached=stops.STATE.detached)

    # -- lock ----------------------------------------------------------------------------------------

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """An exclusive flock, taken at once or not at all; the kernel drops it if we die."""
        real = self.real(path)
        try:
            _HOOKS.check("create", path)
            fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            raise _explain(exc, "open the lock file", path) from None
        try:
            _take_lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            os.close(fd)

    def transact(self, steps: Sequence[Step], journal: Journal) -> None:
        """One call per step, each one what it would be on its own."""
        from mlxfix.transaction import run_steps

        run_steps(self, steps, journal)

    def close(self) -> None:
        """Nothing to close on this machine (SshHost ends its connection here)."""

    def privileged(self) -> bool:
        """Whether mlxfix may change this host: root, or a --root tree this user can write."""
        if self.root == "/":
            return os.geteuid() == 0
        return os.access(self.root, os.W_OK)


def _copy_xattrs(source: str, fd: int) -> None:
    """The file's extended attributes (an SELinux label, ACLs, user.*) onto its replacement: a new
    inode has none. One that cannot be copied fails the write (nothing is replaced)."""
    try:
        names = os.listxattr(source)
    except OSError:  # absent, or a file system without xattrs: nothing to keep
        return
    for name in names:
        os.setxattr(fd, name, os.getxattr(source, name))


def _take_lock(fd: int, path: str) -> None:
    """flock the open lock file at once or fail (Busy), then write our pid into it."""
    import fcntl

    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO planted there would make ftruncate fail
        raise HostError("refusing to use it as the lock: it is not a regular file", path=path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Busy("another mlxfix is running on this host (it holds the lock); try again when it is done", path=path) from None
    try:
        if _HOOKS.check("write", path):
            _die()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        raise _explain(exc, "write the lock file", path) from None


def run_streaming(
    machine: Any,
    argv: Sequence[str],
    *,
    on_output: Callable[[str], None] | None,
    timeout: float,
    env: dict[str, str] | None = None,
    detached: bool = False,
) -> CommandResult:
    """Run ``argv`` on a plumbum machine (local or SSH) with stdout and stderr merged, line by line,
    killing it after ``timeout`` seconds. ``detached``: in a session of its own (no terminal's signals)."""
    import subprocess
    import threading

    try:
        cmd = machine[argv[0]][list(argv[1:])]
    except Exception as exc:  # plumbum's CommandNotFound: the program is not installed
        return CommandResult(tuple(argv), 127, f"{argv[0]}: command not found ({type(exc).__name__})")
    try:
        proc = cmd.popen(
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **({"env": env} if env else {}),
            **({"start_new_session": True} if detached else {}),
        )
    except OSError as exc:
        return CommandResult(tuple(argv), 126, f"{argv[0]}: {exc.strerror}")
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines: list[str] = []
    try:
        for raw in iter(proc.stdout.readline, b""):
            line = (raw if isinstance(raw, str) else raw.decode("utf-8", "replace")).rstrip("\n")
            lines.append(line)
            if on_output is not None:
                on_output(line)
            if isinstance(raw, str) and not raw:
                break
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if killed.is_set():
        return CommandResult(tuple(argv), 124, "\n".join([*lines, f"(killed after {timeout:.0f} s)"]), signal=9)
    code = int(code)  # negative: the child was killed by that signal (its wait status says so)
    return CommandResult(tuple(argv), code, "\n".join(lines), signal=-code if code < 0 else None)


def require_readable(info: FileInfo) -> bytes:
    """The bytes of a file the plan needs, or a FileError that names it."""
    if info.data is not None:
        return info.data
    raise FileError(info.problem() or "unreadable", path=info.path)
