"""Which RPM package owns a file mlxfix would edit, and what an upgrade of it does to the edit.

dpkg's conffile lists are plain files (see grub_dropin.conffiles); RPM's database is not, so it is
asked: ``rpm -qf`` on the files the plan may edit, once, in a read of its own (over ``--host`` one more
round trip, only on a host with an RPM database). Under ``--root`` the tree's own database is asked
with ``rpm --root DIR --dbpath ...``, a query that reads and never writes.

What an upgrade does to a file the admin changed depends on its flags in the package (the fate rpm
decides for it, lib/rpmfi.c's rpmfiDecideFate): ``%config(noreplace)`` keeps the edited file and
writes the package's new one beside it as ``.rpmnew``: the edit survives. A plain ``%config`` whose
packaged content changed replaces the edited file and keeps it only as ``.rpmsave``; a file that is
not ``%config`` at all is replaced with no copy: either way the parameter is gone, silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from mlxfix.facts import Snapshot
    from mlxfix.host.local import Host

__all__ = ["DBPATHS", "RpmFile", "owner", "query"]

# Where distributions keep the database: /usr/lib/sysimage/rpm (Fedora 36+, openSUSE; /var/lib/rpm
# is then a link to it), /var/lib/rpm (RHEL 8 and 9, older Fedora).
DBPATHS = ("/usr/lib/sysimage/rpm", "/var/lib/rpm")
# For every file of the package that owns each argument: its path, its flags (rpm's :fflags format,
# "c" %config, "n" noreplace) and the package's name (the "=" repeats the scalar on every line).
_FORMAT = "[%{FILENAMES}\\t%{FILEFLAGS:fflags}\\t%{=NAME}\\n]"
_KEY = "rpm_owners"


class RpmFile(NamedTuple):
    """A file as its package has it."""

    path: str
    package: str
    flags: str  # rpm's fflags letters

    @property
    def survives_upgrade(self) -> bool:
        """An upgrade keeps the edited file: %config(noreplace)."""
        return "c" in self.flags and "n" in self.flags

    def describe(self) -> str:
        kind = "%config(noreplace)" if self.survives_upgrade else "%config" if "c" in self.flags else "not %config"
        return f"{self.path} belongs to the RPM package {self.package} ({kind})"

    def upgrade(self) -> str:
        """What the package's next upgrade does to an edit of the file."""
        if self.survives_upgrade:
            return (
                f"an upgrade of {self.package} keeps this edit and writes the package's version beside it as {self.path}.rpmnew"
            )
        if "c" in self.flags:
            return (
                f"an upgrade of {self.package} that changes it replaces the edited file (keeping it only as"
                f" {self.path}.rpmsave), and the parameter is gone"
            )
        return f"an upgrade of {self.package} replaces it with the package's version, and the parameter is gone"


def database(snap: Snapshot) -> str | None:
    """The RPM database directory this host (or tree) has, if any."""
    return next((d for d in DBPATHS if snap.listings.get(d)), None)


def query(host: Host, snap: Snapshot, paths: list[str]) -> None:
    """Ask RPM who owns ``paths`` (those that exist), and keep the answer in the snapshot for
    :func:`owner`. Nothing is asked where there is no RPM database; an answer that cannot be had
    (no rpm program here) is remembered as such, so that the plan can say ownership is unknown."""
    db = database(snap)
    present = [p for p in paths if snap.exists(p)]
    if db is None or not present:
        return
    root = host.root if host.root != "/" else None
    argv = ["rpm", *(["--root", root, "--dbpath", db] if root else []), "-qf", "--qf", _FORMAT, *present]
    result = host.run(argv, timeout=60)
    owners: dict[str, RpmFile] = {}
    for line in result.output.splitlines():
        path, tab, rest = line.partition("\t")
        flags, tab2, package = rest.partition("\t")
        if tab and tab2 and path in present:
            owners.setdefault(path, RpmFile(path, package.strip(), flags))
    # rpm -qf exits 1 when a file is owned by no package: having found no package for the path in the
    # database, it says "file F is not owned by any package", or, when it cannot stat F (it does so
    # without the --root prefix), "file F: No such file or directory" (lib/query.c; both seen with
    # rpm 4.18 in tests/boot/test_rpmdb.py). Anything else that
    # left no answer at all (no rpm here, a database it cannot open) is not knowing.
    answered = bool(owners) or any(
        f"file {p} is not owned by any package" in result.output or f"file {p}: No such file or directory" in result.output
        for p in present
    )
    snap.derived[_KEY] = (owners, None if answered else (result.tail(2) or f"exit code {result.exit_code}"))


def owner(snap: Snapshot, path: str) -> RpmFile | None:
    """The RPM package that owns ``path`` (after :func:`query`), or None."""
    owners, _ = snap.derived.get(_KEY, ({}, None))
    found: RpmFile | None = owners.get(path)
    return found


def unknown(snap: Snapshot) -> str | None:
    """Why RPM could not say who owns the files (None: it said, or there is no RPM database)."""
    _, why = snap.derived.get(_KEY, ({}, None))
    return why if isinstance(why, str) else None
