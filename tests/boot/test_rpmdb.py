"""Files an RPM package owns (issue 18, item 5): real packages built by rpmbuild, registered in the
tree's own database by rpm (--justdb), and asked by mlxfix through rpm -qf, as on a Fedora, RHEL or
openSUSE host. What an upgrade does to an edit depends on the file's flags in the package (rpm's
%config and %config(noreplace)), so each kind is built and checked."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLES
from tests.trees import json_of, run, snapshot, write

if TYPE_CHECKING:
    from pathlib import Path

    from tests.sshd import Sshd

P = "pci=realloc=off"


def _require() -> None:
    if not shutil.which("rpmbuild") or not shutil.which("rpm"):
        pytest.fail("needs Debian's rpm package (rpmbuild, rpm): the README's test command installs it")


def package(tmp_path: Path, files: dict[str, str], name: str = "grub2-tools") -> Path:
    """A noarch RPM that ships ``files`` (path -> %files directive, such as ``%config(noreplace)``)."""
    _require()
    top = tmp_path / "rpmbuild"
    for d in ("SPECS", "SOURCES", "BUILD", "RPMS", "SRPMS"):
        (top / d).mkdir(parents=True, exist_ok=True)
    install = "\n".join(f"mkdir -p %{{buildroot}}{os.path.dirname(p)}\necho packaged > %{{buildroot}}{p}" for p in files)
    listed = "\n".join(f"{kind} {p}".strip() for p, kind in files.items())
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: 2.06\nRelease: 1\nSummary: test\nLicense: GPLv3+\nBuildArch: noarch\n"
        f"%description\ntest\n%install\n{install}\n%files\n{listed}\n"
    )
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(spec)], check=True, capture_output=True)
    [rpm] = (top / "RPMS" / "noarch").glob(f"{name}-*.rpm")
    return rpm


def register(root: Path, rpm: Path, dbpath: str = "/var/lib/rpm") -> None:
    """Record the package in the tree's database, as an installed host has it (its files are the tree's own)."""
    subprocess.run(
        ["rpm", "--root", str(root), "--dbpath", dbpath, "--nodeps", "--justdb", "--noscripts", "-i", str(rpm)],
        check=True,
        capture_output=True,
    )
    assert (root / dbpath.lstrip("/") / "rpmdb.sqlite").exists()


def tree(tmp_path: Path, example: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / example, root, symlinks=True)
    return root


def test_a_noreplace_config_file_is_edited_and_the_plan_says_an_upgrade_keeps_it(tmp_path: Path) -> None:
    root = tree(tmp_path, "centos7-grub2")
    register(root, package(tmp_path, {"/etc/default/grub": "%config(noreplace)"}))
    proc = run("apply", "--yes", "--json", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert [f["path"] for f in doc["files"]] == ["/etc/default/grub"]  # type: ignore[index, union-attr]
    assert (
        "/etc/default/grub belongs to the RPM package grub2-tools (%config(noreplace)): an upgrade of grub2-tools keeps"
        " this edit and writes the package's version beside it as /etc/default/grub.rpmnew"
    ) in doc["notes"]  # type: ignore[operator]
    assert not [w for w in doc["warnings"] if "RPM" in w]  # type: ignore[union-attr]
    assert P.encode() in (root / "etc/default/grub").read_bytes()


@pytest.mark.parametrize(("kind", "fate"), [("%config", ".rpmsave"), ("", "replaces it with the package's version")])
def test_a_file_an_upgrade_replaces_is_edited_with_a_warning_that_says_so(tmp_path: Path, kind: str, fate: str) -> None:
    """grub2-mkconfig reads no grub.d: no other file can carry the parameter, so the edit goes ahead,
    and the plan (and the JSON) warns that the package's next upgrade takes it away."""
    root = tree(tmp_path, "centos7-grub2")
    register(root, package(tmp_path, {"/etc/default/grub": kind}))
    dry = run("apply", "--dry-run", "--root", str(root))
    assert dry.returncode == 0, dry.stderr
    assert f"warning: /etc/default/grub belongs to the RPM package grub2-tools ({kind or 'not %config'})" in dry.stdout
    assert fate in dry.stdout
    doc = json_of(run("apply", "--yes", "--json", "--root", str(root)).stdout)
    assert any(w.startswith("/etc/default/grub belongs to the RPM package grub2-tools") for w in doc["warnings"])  # type: ignore[union-attr]
    assert any("run mlxfix status" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_where_a_drop_in_can_carry_it_a_replaced_file_is_left_alone(tmp_path: Path) -> None:
    """Debian's grub-mkconfig reads grub.d: an RPM %config drop-in that holds the value is not
    edited, mlxfix's own drop-in appends after it (as for a dpkg conffile)."""
    root = tree(tmp_path, "ubuntu-cloud")
    dropin = "/etc/default/grub.d/50-cloudimg-settings.cfg"
    register(root, package(tmp_path, {dropin: "%config"}, name="cloud-image-settings"))
    before = (root / dropin.lstrip("/")).read_bytes()
    proc = run("apply", "--yes", "--json", "--root", str(root), "--boot-setup", "grub-debian")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert [f["path"] for f in doc["files"]] == ["/etc/default/grub.d/zz-mlxfix.cfg"]  # type: ignore[index, union-attr]
    assert (root / dropin.lstrip("/")).read_bytes() == before
    note = " ".join(doc["notes"])  # type: ignore[arg-type]
    assert f"{dropin} belongs to the RPM package cloud-image-settings (%config)" in note
    assert ".rpmsave" in note


def test_kernel_cmdline_of_a_package_is_warned_of(tmp_path: Path) -> None:
    root = tree(tmp_path, "systemd-boot")
    register(root, package(tmp_path, {"/etc/kernel/cmdline": "%config"}, name="kernel-cmdline"))
    doc = json_of(run("apply", "--dry-run", "--json", "--root", str(root)).stdout)
    assert any(w.startswith("/etc/kernel/cmdline belongs to the RPM package kernel-cmdline (%config)") for w in doc["warnings"])  # type: ignore[union-attr]


def test_the_newer_database_place_is_found_too(tmp_path: Path) -> None:
    """Fedora 36+ and openSUSE keep it in /usr/lib/sysimage/rpm."""
    root = tree(tmp_path, "centos7-grub2")
    register(root, package(tmp_path, {"/etc/default/grub": "%config(noreplace)"}), "/usr/lib/sysimage/rpm")
    doc = json_of(run("apply", "--dry-run", "--json", "--root", str(root)).stdout)
    assert any("belongs to the RPM package grub2-tools (%config(noreplace))" in n for n in doc["notes"])  # type: ignore[union-attr]


def test_a_file_no_package_owns_gets_no_word(tmp_path: Path) -> None:
    root = tree(tmp_path, "centos7-grub2")
    register(root, package(tmp_path, {"/etc/sysconfig/other": "%config"}))
    write(root, "/etc/sysconfig/other", "packaged\n")
    doc = json_of(run("apply", "--dry-run", "--json", "--root", str(root)).stdout)
    assert not [t for t in [*doc["notes"], *doc["warnings"]] if "RPM" in t]  # type: ignore[misc]


def test_a_database_rpm_cannot_be_asked_about_is_said_so(tmp_path: Path) -> None:
    """No rpm program on this machine (PATH without it): ownership is unknown, and the plan says so
    rather than nothing."""
    root = tree(tmp_path, "centos7-grub2")
    register(root, package(tmp_path, {"/etc/default/grub": "%config"}))
    before = snapshot(root)
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = run("apply", "--dry-run", "--json", "--root", str(root), env={"PATH": str(bare)})
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert any("this host has an RPM database, but rpm could not say who owns" in w for w in doc["warnings"])  # type: ignore[union-attr]
    assert snapshot(root) == before


def test_over_ssh_the_targets_database_is_asked_in_one_more_round_trip(sshd: Sshd, tmp_path: Path) -> None:
    """The local plan, over --host: rpm runs on the target, against the target's tree."""
    here, there = tree(tmp_path / "a", "centos7-grub2"), tree(tmp_path / "b", "centos7-grub2")
    rpm = package(tmp_path, {"/etc/default/grub": "%config"})
    register(here, rpm)
    register(there, rpm)
    mine = json_of(run("apply", "--dry-run", "--json", "--root", str(here)).stdout)
    over = run("apply", "--dry-run", "--json", "--root", str(there), "--host", sshd.target, *sshd.options())
    assert over.returncode == 0, over.stderr
    doc = json_of(over.stdout)
    assert doc["warnings"] == mine["warnings"]
    assert any("belongs to the RPM package grub2-tools (%config)" in w for w in doc["warnings"])  # type: ignore[union-attr]
    assert doc["ssh"] == {"connections": 1, "round_trips": 3}  # the login, the batched read, rpm -qf
