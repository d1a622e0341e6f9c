"""Symlinks are followed as the kernel's path walk follows them, component by component: a ``..``
after a linked directory leaves the link's *target*. The oracle is the kernel itself (``os.stat`` of
the host path, the inode it reaches), never a second resolver written from the same idea.

The layout of the defect (issue 18, item 19): /etc/default/grub -> link/../grub.conf, where
/etc/default/link is a directory link. Text normalisation takes ``link/..`` as /etc/default and
writes the decoy /etc/default/grub.conf; the kernel reaches <link's target>/../grub.conf.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlxfix.host.local import LocalHost
from mlxfix.host.ssh import SshHost
from tests import namespace
from tests.conftest import EXAMPLES

if TYPE_CHECKING:
    from tests.sshd import Sshd

ORIGINAL = b'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
DECOY = b'GRUB_CMDLINE_LINUX_DEFAULT="decoy"\n'


def _layout(base: Path, default: Path, *, decoy: bool) -> Path:
    """A chain of relative links through linked directories; the file the kernel reaches is returned.

    default/grub      -> link/../conf/grub.conf   (link is a directory link: its '..' is real/deep)
    default/link      -> ../real/deep/er
    real/deep/conf/grub.conf -> ../hop/../final    (again relative, and through a linked directory)
    real/deep/hop     -> er                         (so hop/.. is real/deep, not real/deep/conf)
    real/deep/final   the file
    """
    (base / "real/deep/er").mkdir(parents=True)
    (base / "real/deep/conf").mkdir()
    target = base / "real/deep/final"
    target.write_bytes(ORIGINAL)
    (base / "real/deep/hop").symlink_to("er")
    (base / "real/deep/conf/grub.conf").symlink_to("../hop/../final")
    default.mkdir(parents=True, exist_ok=True)
    (default / "link").symlink_to(os.path.relpath(base / "real/deep/er", default))
    (default / "grub").symlink_to("link/../conf/grub.conf")
    if decoy:  # where text normalisation lands: default/conf/grub.conf
        (default / "conf").mkdir()
        (default / "conf/grub.conf").write_bytes(DECOY)
    return target


def _same_file(a: str | Path, b: str | Path) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@pytest.mark.parametrize("decoy", [True, False], ids=["decoy", "no-decoy"])
def test_the_local_host_at_slash_resolves_as_the_kernel_walks(tmp_path: Path, decoy: bool) -> None:
    target = _layout(tmp_path, tmp_path / "etc/default", decoy=decoy)
    host = LocalHost("/")
    path = str(tmp_path / "etc/default/grub")
    assert _same_file(host.resolve(path), path)  # the kernel's answer
    assert host.read(path).data == ORIGINAL
    host.write_atomic(path, b"new\n", mode=0o644, uid=os.getuid(), gid=os.getgid(), expect_sha256=None)
    assert target.read_bytes() == b"new\n"
    assert Path(path).is_symlink()  # the links are kept
    if decoy:
        assert (tmp_path / "etc/default/conf/grub.conf").read_bytes() == DECOY


@pytest.mark.parametrize("decoy", [True, False], ids=["decoy", "no-decoy"])
def test_under_root_the_same_chain_stays_in_the_tree(tmp_path: Path, decoy: bool) -> None:
    """The links are relative and stay inside the tree, so the kernel's walk from the tree is a chroot's."""
    root = tmp_path / "tree"
    target = _layout(root, root / "etc/default", decoy=decoy)
    host = LocalHost(str(root))
    assert _same_file(host.resolve("/etc/default/grub"), root / "etc/default/grub")
    host.write_atomic("/etc/default/grub", b"new\n", mode=0o644, uid=os.getuid(), gid=os.getgid(), expect_sha256=None)
    assert target.read_bytes() == b"new\n"


@pytest.mark.root
@pytest.mark.slow
def test_over_ssh_the_same_chain_writes_the_kernels_file(sshd: Sshd, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    target = _layout(tmp_path, tmp_path / "etc/default", decoy=True)
    options = [o for o in sshd.options() if o != "--ssh-option"]
    host = SshHost(sshd.target, "/", options)
    try:
        path = str(tmp_path / "etc/default/grub")
        assert _same_file(host.resolve(path), path)
        host.write_atomic(path, b"new\n", mode=0o644, uid=0, gid=0, expect_sha256=None)
    finally:
        host.close()
    assert target.read_bytes() == b"new\n"
    assert (tmp_path / "etc/default/conf/grub.conf").read_bytes() == DECOY


@pytest.mark.root
@pytest.mark.parametrize("decoy", [True, False], ids=["decoy", "no-decoy"])
def test_apply_at_slash_edits_the_file_the_kernel_reaches(tmp_path: Path, decoy: bool) -> None:
    """The whole command on this machine's real path walk (its /etc/default bound to a sandbox)."""
    tmp_path.chmod(0o755)
    default = tmp_path / "default"
    target = _layout(tmp_path, default, decoy=decoy)
    # default/link's relative target was made for default/; bound at /etc/default it must still reach
    # the sandbox, so make it absolute (still a directory link with a '..' after it)
    (default / "link").unlink()
    (default / "link").symlink_to(tmp_path / "real/deep/er")
    binds = {"/etc/default": default, namespace.STATE: namespace.state_dir(tmp_path)}
    proc = namespace.run(binds, "apply", "--yes", "--no-update", "--boot-setup", "grub-debian")
    assert proc.returncode == 0, proc.stderr
    assert b"pci=realloc=off" in target.read_bytes()
    assert (default / "grub").is_symlink()
    if decoy:
        assert (default / "conf/grub.conf").read_bytes() == DECOY
    proc = namespace.run(binds, "rollback", "--yes", "--no-update")
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == ORIGINAL


def _absolute_layout(root: Path) -> bytes:
    """A tree whose links are absolute, as a copy of a real host's /etc has them: under --root they
    lead into the tree (a chroot's walk), not to this machine's (or the SSH target's) own files.

    etc/default          -> /srv/conf/default      (a directory link, absolute)
    srv/conf/default/grub -> /srv/conf/grub.real   (a file link, absolute, reached through it)
    srv/conf/default/grub.d -> /srv/dropins        (the drop-in directory, absolute too)
    """
    (root / "srv/conf/default").mkdir(parents=True)
    (root / "srv/dropins").mkdir(parents=True)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/default").symlink_to("/srv/conf/default")
    (root / "srv/conf/grub.real").write_bytes(ORIGINAL)
    (root / "srv/conf/default/grub").symlink_to("/srv/conf/grub.real")
    (root / "srv/conf/default/grub.d").symlink_to("/srv/dropins")
    dropin = b'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n'
    (root / "srv/dropins/50-local.cfg").write_bytes(dropin)
    for p in ("/srv/conf", "/srv/dropins"):
        assert not Path(p).exists(), f"{p} exists on this machine: the test needs it absent"
    return dropin


def test_over_ssh_under_root_absolute_links_lead_into_the_tree_as_locally(sshd: Sshd, tmp_path: Path) -> None:
    """(issue 18, item 19) Over --host with --root the target's kernel used to follow the absolute
    directory link out of the tree (to the target's /srv, which has nothing): the grub file and its
    drop-in were not found there, though the local run found them. Now both walk as a chroot does, and
    apply writes the very file the local run writes."""
    from tests.trees import json_of, run

    here, there = tmp_path / "here", tmp_path / "there"
    for root in (here, there):
        shutil.copytree(EXAMPLES / "pve-missing-uar", root, symlinks=True, ignore=shutil.ignore_patterns("default"))
        _absolute_layout(root)
    host = ("--host", sshd.target, *sshd.options())
    mine = run("apply", "--dry-run", "--json", "--root", str(here))
    over = run("apply", "--dry-run", "--json", "--root", str(there), *host)
    assert mine.returncode == over.returncode == 0, (mine.stderr, over.stderr)
    local, remote = json_of(mine.stdout), json_of(over.stdout)
    assert "iommu=pt" in str(local["cmdline"])  # the drop-in was read through the links
    keep = lambda d: {k: v for k, v in d.items() if k not in {"host", "root", "ssh", "mlxfix_version"}}  # noqa: E731
    assert keep(remote) == keep(local)
    for root, extra in ((here, ()), (there, host)):
        done = run("apply", "--yes", "--root", str(root), *extra)
        assert done.returncode == 0, done.stderr
    assert (there / "srv/dropins/50-local.cfg").read_bytes() == (here / "srv/dropins/50-local.cfg").read_bytes()
    assert b"pci=realloc=off" in (there / "srv/dropins/50-local.cfg").read_bytes()
    assert (there / "srv/conf/default/grub").is_symlink()  # links stay links; the file they lead to is edited
