"""The steps of a plan: a file write, a command, the shell check of an edit, and the diff shown.

Shared by the plan and by the boot setups that compute their part of it. Pure code.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, NamedTuple

from mlxfix.digest import sha256
from mlxfix.errors import FileError

if TYPE_CHECKING:
    from mlxfix.facts import FileInfo, Snapshot

__all__ = ["Command", "FileWrite", "ShellCheck", "file_write", "hard_linked", "readable", "unified_diff", "world_writable"]


class FileWrite(NamedTuple):
    """Replace ``path`` (which holds ``before`` now) with ``after``, keeping mode and owner."""

    path: str
    before: bytes
    after: bytes
    mode: int
    uid: int
    gid: int
    why: str
    existed: bool = True
    removes: bool = False  # the file is removed, not written (``after`` is empty)

    @property
    def before_sha256(self) -> str:
        return sha256(self.before)

    @property
    def after_sha256(self) -> str:
        return sha256(self.after)

    def diff(self) -> str:
        """The change as a unified diff; a file created or removed is one against /dev/null."""
        return unified_diff(self.path, self.before, self.after, created=not self.existed, removed=self.removes)


class Command(NamedTuple):
    """A command of the plan: why it runs, and what undoes it when the apply must be reversed."""

    argv: tuple[str, ...]
    why: str
    regenerates: bool = True  # False: it changes state itself (grubby); True: it rebuilds from files
    undo: tuple[str, ...] = ()  # what undoes a command that changes state, when the apply is reversed

    def __str__(self) -> str:
        return shlex.join(self.argv)

    @property
    def atomic(self) -> bool:
        """Whether a failed run leaves the boot configuration as it was: grub-mkconfig (and update-grub,
        which runs it) writes grub.cfg.new and moves it into place only when every script succeeded."""
        return self.regenerates and self.argv[0] in ("update-grub", "grub-mkconfig", "grub2-mkconfig")


class ShellCheck(NamedTuple):
    """After writing: source ``paths`` with sh and expect ``variable`` to equal ``expected`` (``suffix``:
    to end with it, where what comes before only sh can compute)."""

    paths: tuple[str, ...]
    variable: str
    expected: str
    suffix: bool = False

    def holds(self, value: str | None) -> bool:
        return value is not None and (value.endswith(self.expected) if self.suffix else value == self.expected)


def unified_diff(
    path: str, before: bytes, after: bytes, context: int = 3, *, created: bool = False, removed: bool = False
) -> str:
    """A unified diff of two versions of a file, for people and for the JSON result.

    The lines both versions share at the start and at the end are matched as they are; only the
    middle goes to difflib, whose matching is quadratic in the worst case (a one-line edit of a
    1 MiB file: 0.45 s through difflib alone, a few ms this way).
    """
    # surrogateescape: a byte that is not UTF-8 (a Latin-1 comment) stays itself, so that the diff
    # printed applies to the file with patch(1); the JSON shows it as \xNN (see models.dump).
    a = _lines(before.decode("utf-8", "surrogateescape"))
    b = _lines(after.decode("utf-8", "surrogateescape"))
    head, limit = 0, min(len(a), len(b))
    while head < limit and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < limit - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, head, 0, head)] if head else []
    import difflib  # only a command that shows or checks a diff needs it

    middle = difflib.SequenceMatcher(None, a[head : len(a) - tail], b[head : len(b) - tail]).get_opcodes()
    ops += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle]
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    for k in range(len(ops) - 1, 0, -1):  # adjacent unchanged stretches are one
        if ops[k][0] == ops[k - 1][0] == "equal":
            ops[k - 1 : k + 1] = [("equal", ops[k - 1][1], ops[k][2], ops[k - 1][3], ops[k][4])]
    out: list[str] = []
    for group in _hunks(ops, context):
        if not out:
            out += [f"--- {'/dev/null' if created else 'a' + path}\n", f"+++ {'/dev/null' if removed else 'b' + path}\n"]
        out.append(f"@@ -{_range(group[0][1], group[-1][2])} +{_range(group[0][3], group[-1][4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + ln for ln in a[i1:i2]]
                continue
            out += ["-" + ln for ln in a[i1:i2]]
            out += ["+" + ln for ln in b[j1:j2]]
    return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in out)


def _lines(text: str) -> list[str]:
    """Lines as patch(1) sees them: ended by "\n" only (str.splitlines also splits at \v, \f, \x1c...)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _hunks(ops: list[tuple[str, int, int, int, int]], n: int) -> list[list[tuple[str, int, int, int, int]]]:
    """Changes with ``n`` lines of context, nearby ones in one hunk (difflib's get_grouped_opcodes)."""
    if not any(tag != "equal" for tag, *_ in ops):
        return []
    if ops[0][0] == "equal":
        _, i1, i2, j1, j2 = ops[0]
        ops[0] = ("equal", max(i1, i2 - n), i2, max(j1, j2 - n), j2)
    if ops[-1][0] == "equal":
        _, i1, i2, j1, j2 = ops[-1]
        ops[-1] = ("equal", i1, min(i2, i1 + n), j1, min(j2, j1 + n))
    groups: list[list[tuple[str, int, int, int, int]]] = []
    group: list[tuple[str, int, int, int, int]] = []
    for tag, a1, i2, b1, j2 in ops:
        i1, j1 = a1, b1
        if tag == "equal" and i2 - i1 > 2 * n:  # a long unchanged stretch ends one hunk, starts the next
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            groups.append(group)
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    return groups


def _range(start: int, stop: int) -> str:
    """A hunk's line range as unified diffs write it (``3,4``; ``3`` for one line; ``2,0`` for none)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def readable(snap: Snapshot, path: str) -> FileInfo:
    """The file as read, or one line saying why it cannot be edited."""
    info = snap.files.get(path)
    if info is None:
        raise FileError("no such file", path=path)
    if info.data is None:
        raise FileError(info.problem() or "unreadable", path=path)
    return info


def file_write(info: FileInfo, after: bytes, why: str) -> FileWrite:
    assert info.data is not None
    return FileWrite(info.path, info.data, after, info.mode, info.uid, info.gid, why)


def world_writable(snap: Snapshot, paths: list[str]) -> list[str]:
    """A finding, not a refusal: any local user can already change how this host boots."""
    found = []
    for p in paths:
        info = snap.files.get(p)
        if info is not None and info.exists and info.mode & 0o002 and not info.is_symlink:
            mode = f"mode {info.mode & 0o7777:04o}"
            if info.is_dir:  # (the sticky bit keeps others' files, not new ones out)
                found.append(f"{p} is writable by every user ({mode}): anyone can add a file there and change how it boots")
            else:
                found.append(f"{p} is writable by every user ({mode}): anyone can change how this host boots")
    return found


def hard_linked(snap: Snapshot, paths: list[str]) -> list[str]:
    """A file with other names keeps its old bytes under them: the atomic write (a rename) gives
    the new bytes to this name only. Said, not refused: the tools read this name."""
    found = []
    for p in paths:
        info = snap.files.get(p)
        if info is not None and info.exists and info.nlink > 1 and not info.is_dir:
            found.append(
                f"{p} has {info.nlink} hard links: the atomic write gives the new bytes to {p} only, and its other"
                f" names keep the old ones (find them with: find / -xdev -samefile {p})"
            )
    return found
