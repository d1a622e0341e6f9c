"""The change as a list of steps, computed before anything is done, and run by the host in order.

A step is a check or one durable change (a backup copy, the intent record, an atomic write). The
list is pure data: ``run_steps`` runs it through the host's own methods, one call per step (what a
LocalHost does), and an SshHost compiles the same list into one script on the target, one round
trip for the whole change, each step still checked there before the next begins. Either way the
steps stop at the first one that fails, and the ``Journal`` says how far they got: the undo that
follows puts back exactly what was touched.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlxfix.digest import sha256
from mlxfix.errors import HostError, Refused
from mlxfix.host.local import checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mlxfix.host.local import Host
    from mlxfix.steps import ShellCheck

__all__ = [
    "Checkpoint",
    "Computes",
    "Create",
    "Journal",
    "Parses",
    "PrivateDir",
    "Record",
    "Remember",
    "Remove",
    "Rename",
    "Same",
    "Step",
    "Tidy",
    "Unchanged",
    "Write",
    "changed_file",
    "computed_wrong",
    "run_steps",
    "value_script",
]


@dataclass(frozen=True)
class Unchanged:
    """The file still holds the bytes the plan was made from."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Remember:
    """Keep the file's bytes (None: absent) in the journal, for an undo that must put it back."""

    path: str


@dataclass(frozen=True)
class Tidy:
    """Remove what an interrupted run left: ``.partial-*`` directories in ``backups``, files matching
    ``patterns`` (temp files beside the files mlxfix writes). What went is in the journal."""

    backups: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class PrivateDir:
    path: str


@dataclass(frozen=True)
class Create:
    """A new file (O_EXCL), fsync'd, its name made durable."""

    path: str
    data: bytes
    mode: int = 0o600


@dataclass(frozen=True)
class Same:
    """Read back: each file holds exactly the bytes whose sha256 is given, else ``why`` (a Refused)."""

    files: tuple[tuple[str, str], ...]
    why: str


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str


@dataclass(frozen=True)
class Record:
    """A state record: created when there is none, else replaced atomically (one is there at every instant)."""

    path: str
    data: bytes


@dataclass(frozen=True)
class Write:
    """Replace ``path`` atomically (see Host.write_atomic), then read it back."""

    path: str
    data: bytes
    mode: int
    uid: int
    gid: int
    expect_sha256: str | None


@dataclass(frozen=True)
class Remove:
    """Remove ``path`` durably, then make sure it is gone."""

    path: str


@dataclass(frozen=True)
class Parses:
    """``sh -n`` accepts the written file."""

    path: str


@dataclass(frozen=True)
class Computes:
    """sh, sourcing the written files, computes the planned value (see ShellCheck)."""

    check: ShellCheck


@dataclass(frozen=True)
class Checkpoint:
    """A named point for the crash and connection-cut tests (see host.local.checkpoint)."""

    name: str


Step = (
    Unchanged | Remember | Tidy | PrivateDir | Create | Same | Rename | Record | Write | Remove | Parses | Computes | Checkpoint
)


@dataclass
class Journal:
    """How far the steps got, filled as they run (an exception leaves it as it stood)."""

    on_done: Callable[[int, Step], None] | None = None
    begun: int = -1  # the index of the last step begun
    done: int = 0  # how many steps completed
    removed: list[str] = field(default_factory=list)  # what Tidy removed
    remembered: dict[str, bytes | None] = field(default_factory=dict)

    def begin(self, index: int) -> None:
        self.begun = index

    def finish(self, index: int, step: Step) -> None:
        self.done = index + 1
        if self.on_done is not None:
            self.on_done(index, step)


def changed_file(path: str) -> Refused:
    return Refused("the file changed since mlxfix read it (another admin or a package?); run mlxfix again", path=path)


def value_script(variable: str) -> str:
    """sh that sources "$@" and prints ``variable`` followed by "|" (trailing newlines stay visible).
    The files' own commands may complain on stderr ($(sed ...) of a missing file); only stdout counts."""
    return 'exec 3>&1 2>/dev/null; for f in "$@"; do [ -e "$f" ] && . "$f"; done; printf "%s|" "${' + variable + '-}" >&3'


def computed_wrong(check: ShellCheck, got: str | None) -> Refused:
    planned = f"a value ending in {check.expected!r}" if check.suffix else f"the planned {check.expected!r}"
    return Refused(f"after writing, sh computes {check.variable}={got!r}, not {planned}", path=check.paths[0])


def run_steps(host: Host, steps: Sequence[Step], journal: Journal) -> None:
    """Run ``steps`` one host call at a time, stopping at the first that fails (its error is raised)."""
    for index, step in enumerate(steps):
        journal.begin(index)
        _run_one(host, step, journal)
        journal.finish(index, step)


def _read_sha(host: Host, path: str) -> str | None:
    info = host.read(path)
    return sha256(info.data) if info.exists and info.data is not None else None


def _run_one(host: Host, step: Step, journal: Journal) -> None:
    if isinstance(step, Unchanged):
        if _read_sha(host, step.path) != step.sha256:
            raise changed_file(step.path)
    elif isinstance(step, Remember):
        info = host.read(step.path)
        if info.exists and info.data is None and stat.S_ISREG(info.mode):  # there, but it cannot be read
            raise HostError(f"cannot read it ({info.error})", path=step.path)
        journal.remembered[step.path] = info.data
    elif isinstance(step, Tidy):
        seen = host.gather([], [step.backups], list(step.patterns))
        for name in seen.listings.get(step.backups) or []:
            # what cannot be removed stays a leftover, harmless: the journal says only what went
            if name.startswith(".partial-") and host.remove_tree(f"{step.backups}/{name}"):
                journal.removed.append(f"{step.backups}/{name}")
        for pattern in step.patterns:
            for path in seen.globs.get(pattern, []):
                host.remove(path)
                journal.removed.append(path)
    elif isinstance(step, PrivateDir):
        host.make_private_dir(step.path)
    elif isinstance(step, Create):
        host.create_file(step.path, step.data, step.mode)
    elif isinstance(step, Same):
        snap = host.gather([p for p, _ in step.files])
        for path, digest in step.files:
            data = snap.files[path].data
            if data is None or sha256(data) != digest:
                raise Refused(step.why, path=path)
    elif isinstance(step, Rename):
        host.rename(step.src, step.dst)
    elif isinstance(step, Record):
        if host.read(step.path).exists:
            host.write_atomic(step.path, step.data, mode=0o600, uid=0, gid=0, expect_sha256=None)
        else:
            host.create_file(step.path, step.data)
    elif isinstance(step, Write):
        host.write_atomic(step.path, step.data, mode=step.mode, uid=step.uid, gid=step.gid, expect_sha256=step.expect_sha256)
        if _read_sha(host, step.path) != sha256(step.data):
            raise HostError("the file did not read back as written", path=step.path)
    elif isinstance(step, Remove):
        host.remove(step.path)
        if host.read(step.path).exists:
            raise HostError("the file is still there after removing it", path=step.path)
    elif isinstance(step, Parses):
        res = host.run(["sh", "-n", host.resolve(step.path)], timeout=60)
        if not res.ok:
            raise Refused(f"sh rejects the written file: {res.tail(3)}", path=step.path)
    elif isinstance(step, Computes):
        check = step.check
        argv = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-c", value_script(check.variable), "sh"]
        res = host.run([*argv, *(host.resolve(p) for p in check.paths)], timeout=60)
        value = res.output[:-1] if res.output.endswith("|") else None
        if not res.ok or not check.holds(value):
            raise computed_wrong(check, value if res.ok else f"sh failed: {res.tail(3)}")
    else:
        checkpoint(step.name)
