"""What a batched read of a host learned: files, listings, tools, command outputs. Plain data, no
I/O: the pure core (detection, planning, diagnosis) reads it; mlxfix.host.local and mlxfix.host.ssh fill it."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["CommandResult", "FileInfo", "Regeneration", "Snapshot"]


class FileInfo(NamedTuple):
    """What a batched read learned about one path (``data`` None when absent or unreadable)."""

    path: str
    exists: bool
    data: bytes | None = None
    mode: int = 0
    uid: int = 0
    gid: int = 0
    is_symlink: bool = False
    link_target: str | None = None  # for symlinks: the link text, not resolved
    is_dir: bool = False
    error: str | None = None  # why it could not be read
    nlink: int = 1  # hard links: a rename replaces one name, the others keep the old bytes

    def problem(self) -> str | None:
        """Why the file has no bytes, in words (None when it has them)."""
        if self.data is not None:
            return None
        if self.is_symlink and not self.exists:
            return f"it is a symlink to {self.link_target}, which does not exist (or the links loop)"
        if not self.exists:
            return self.error.lower() if self.error else "no such file"
        if self.is_dir:
            return "it is a directory, not a file"
        return f"cannot read it: {self.error or 'unknown error'}"


class CommandResult(NamedTuple):
    """How a command ended. ``signal``: the signal that killed it (from the wait status, never guessed
    from the exit code: a command may exit 129 on its own), None when it exited."""

    argv: tuple[str, ...]
    exit_code: int
    output: str  # stdout and stderr, interleaved as the command wrote them
    signal: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.rstrip("\n").splitlines()[-lines:])


class Regeneration(NamedTuple):
    """A regeneration and what followed it when it succeeded: the sync (``sync_failed``: what sync
    said when it failed) and the read-back (None when it was not reached)."""

    result: CommandResult
    sync_failed: str | None
    snapshot: Snapshot | None


class Snapshot:
    """The answer to one batched read: files, directory listings, links and the tools on PATH.

    A class by hand, not a dataclass: one is made at every start (see mlxfix.boot.grubcfg)."""

    __slots__ = ("derived", "exit_codes", "files", "globs", "listings", "outputs", "round_trips", "tools")

    def __init__(
        self,
        files: dict[str, FileInfo] | None = None,
        listings: dict[str, list[str] | None] | None = None,
        globs: dict[str, list[str]] | None = None,
        tools: dict[str, str | None] | None = None,
        outputs: dict[str, str] | None = None,
        exit_codes: dict[str, int] | None = None,
        round_trips: int = 1,
    ) -> None:
        self.files = files if files is not None else {}
        self.listings = listings if listings is not None else {}  # None: no such directory
        self.globs = globs if globs is not None else {}  # pattern -> matching paths, sorted
        self.tools = tools if tools is not None else {}
        self.outputs = outputs if outputs is not None else {}  # "cmd args" -> output, for status commands
        self.exit_codes = exit_codes if exit_codes is not None else {}  # "cmd args" -> its exit code
        self.round_trips = round_trips
        # What pure code derives from these files (parsed grub files, what sh makes of them), computed
        # once per run however many steps ask; each entry remembers the bytes it came from.
        self.derived: dict[str, Any] = {}

    def _key(self) -> tuple[object, ...]:
        return self.files, self.listings, self.globs, self.tools, self.outputs, self.exit_codes, self.round_trips

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, Snapshot) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Snapshot(files={self.files!r}, listings={self.listings!r}, globs={self.globs!r}, tools={self.tools!r})"

    def data(self, path: str) -> bytes | None:
        info = self.files.get(path)
        return info.data if info is not None else None

    def text(self, path: str) -> str | None:
        data = self.data(path)
        return data.decode("utf-8", "replace") if data is not None else None

    def exists(self, path: str) -> bool:
        info = self.files.get(path)
        if info is not None:
            return info.exists
        return self.listings.get(path) is not None

    def with_files(self, new: dict[str, bytes]) -> Snapshot:
        """A copy in which some files hold new bytes (to describe a result before it exists)."""
        out = Snapshot(dict(self.files), self.listings, self.globs, self.tools, self.outputs, self.exit_codes, self.round_trips)
        for path, data in new.items():
            old = self.files.get(path)
            out.files[path] = FileInfo(path, True, data, old.mode if old else 0o644)
        return out
