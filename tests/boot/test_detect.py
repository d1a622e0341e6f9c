"""Every boot setup: detected, planned, applied and rolled back.

Under --root on the example trees (nothing runs), and for real inside a mount namespace: Debian's
update-grub and grub-mkconfig, systemd's kernel-install; proxmox-boot-tool and grubby (not packaged for
Debian) are stand-ins in tests/fakes that record their arguments, while the files they read are real.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mlxfix.models import ChangeResult
from tests import namespace
from tests.conftest import EXAMPLES, corpus_hosts
from tests.oracle import sh_values
from tests.trees import PVE_GRUB, json_of, run, snapshot

FAKES = str(Path(__file__).parents[1] / "fakes")
P = "pci=realloc=off"


EFIVAR_H = Path("/usr/include/efivar/efivar.h")  # libefivar-dev: the UEFI spec's GUIDs, as efivar defines them


def efi_global_guid() -> str:
    """EFI_GLOBAL_VARIABLE as the efivar library defines it (from the UEFI specification), formatted as
    efivarfs names variables: never copied from mlxfix's own constant."""
    if not EFIVAR_H.exists():
        pytest.fail("needs libefivar-dev (the README's test command installs it)")
    m = re.search(r"#define EFI_GLOBAL_GUID EFI_GUID\(([^)]*)\)", EFIVAR_H.read_text())
    assert m is not None
    a, b, c, d, *e = (int(x, 16) for x in m.group(1).split(","))
    return f"{a:08x}-{b:04x}-{c:04x}-{d:04x}-{''.join(f'{x:02x}' for x in e)}"


def test_the_secure_boot_variable_is_the_one_the_uefi_spec_names() -> None:
    from mlxfix.boot.detect import SECURE_BOOT

    assert f"/sys/firmware/efi/efivars/SecureBoot-{efi_global_guid()}" == SECURE_BOOT


def copy_example(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(EXAMPLES / name, root, symlinks=True)
    return root


# -- detection and planning on the example trees ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "setup", "edited", "command"),
    [
        ("pve-missing-uar", "grub-debian", "/etc/default/grub", ["update-grub"]),
        ("ubuntu-cloud", "grub-debian", "/etc/default/grub.d/50-cloudimg-settings.cfg", ["update-grub"]),
        ("pve-systemd-boot", "proxmox-systemd-boot", "/etc/kernel/cmdline", ["proxmox-boot-tool", "refresh"]),
        ("fedora-bls", "grub2-bls", "/etc/default/grub", ["grubby", "--update-kernel=ALL", f"--args={P}"]),
        ("rhel8-kernelopts", "grub2-bls", "/etc/default/grub", ["grubby", "--update-kernel=ALL", f"--args={P}"]),
        ("centos7-grub2", "grub2", "/etc/default/grub", ["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"]),
        ("arch-grub", "grub", "/etc/default/grub", ["grub-mkconfig", "-o", "/boot/grub/grub.cfg"]),
        (
            "systemd-boot",
            "systemd-boot",
            "/etc/kernel/cmdline",
            ["kernel-install", "add", "6.11.5-arch1-1", "/usr/lib/modules/6.11.5-arch1-1/vmlinuz"],
        ),
    ],
)
def test_each_setup_is_detected_and_planned(tree: str, setup: str, edited: str, command: list[str]) -> None:
    proc = run("apply", "--dry-run", "--json", "--root", str(EXAMPLES / tree))
    assert proc.returncode == 0, proc.stderr
    doc = ChangeResult.model_validate_json(proc.stdout)
    assert doc.boot_setup is not None
    assert doc.boot_setup.name == setup
    assert doc.boot_setup.evidence  # the plan says what it found
    assert [f.path for f in doc.files] == [edited]
    assert P in doc.files[0].diff.split("\n+", 1)[1]
    assert command in [c.argv for c in doc.commands]
    assert doc.cmdline.after is not None
    assert P in doc.cmdline.after


def test_the_cloud_image_dropin_is_named_with_the_reason() -> None:
    proc = run("apply", "--dry-run", "--root", str(EXAMPLES / "ubuntu-cloud"))
    assert "50-cloudimg-settings.cfg:11 overrides GRUB_CMDLINE_LINUX_DEFAULT set in /etc/default/grub:10" in proc.stdout


def test_bls_puts_the_parameter_in_grub_cmdline_linux_for_new_kernels() -> None:
    doc = json_of(run("apply", "--dry-run", "--json", "--root", str(EXAMPLES / "fedora-bls")).stdout)
    diff = doc["files"][0]["diff"]  # type: ignore[index]
    assert f'+GRUB_CMDLINE_LINUX="rd.lvm.lv=fedora/root rhgb quiet {P}"' in diff


@pytest.mark.parametrize(
    ("tree", "message", "hint"),
    [
        ("fedora-silverblue", "OSTree image", "rpm-ostree kargs --append-if-missing=pci=realloc=off"),
        ("loader-entries-only", "only in the boot loader entries", "/etc/kernel/cmdline"),
    ],
)
def test_unknown_setups_are_refused_with_what_to_do(tree: str, message: str, hint: str) -> None:
    before = snapshot(EXAMPLES / tree)
    proc = run("apply", "--yes", "--root", str(EXAMPLES / tree))
    assert proc.returncode == 1
    assert message in proc.stderr
    assert hint in proc.stderr
    assert snapshot(EXAMPLES / tree) == before


def test_an_empty_tree_is_refused(tmp_path: Path) -> None:
    proc = run("apply", "--dry-run", "--root", str(tmp_path))
    assert proc.returncode == 1
    assert "no boot setup mlxfix knows was found" in proc.stderr


def test_boot_setup_override(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "pve-systemd-boot")
    doc = json_of(run("apply", "--dry-run", "--json", "--boot-setup", "grub-debian", "--root", str(root)).stdout)
    assert doc["boot_setup"]["name"] == "grub-debian"  # type: ignore[index]
    assert "--boot-setup grub-debian given" in " ".join(doc["boot_setup"]["evidence"])  # type: ignore[index]
    assert [f["path"] for f in doc["files"]] == ["/etc/default/grub"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "tree", ["ubuntu-cloud", "pve-systemd-boot", "fedora-bls", "rhel8-kernelopts", "centos7-grub2", "arch-grub", "systemd-boot"]
)
def test_apply_and_rollback_on_each_tree(tmp_path: Path, tree: str) -> None:
    root = copy_example(tmp_path, tree)
    before = snapshot(root)
    proc = run("apply", "--yes", "--json", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    doc = ChangeResult.model_validate_json(proc.stdout)
    assert doc.changed
    edited = root / doc.files[0].path.lstrip("/")
    assert P in edited.read_text()
    proc = run("rollback", "--yes", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    after = {k: v for k, v in snapshot(root).items() if not k.startswith("var/lib/mlxfix")}
    assert after == before


def test_diagnose_reports_where_the_configured_line_comes_from(tmp_path: Path) -> None:
    for tree, source in (("pve-systemd-boot", "/etc/kernel/cmdline"), ("fedora-bls", "BLS entry")):
        root = copy_example(tmp_path, tree)
        (root / "sys/bus/pci/devices").mkdir(parents=True)
        doc = json_of(run("diagnose", "--json", "--root", str(root)).stdout)
        assert source in doc["cmdline"]["configured_source"]  # type: ignore[index]


@pytest.mark.parametrize(("main", "dropins"), corpus_hosts(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_corpus_dropins_through_the_cli(tmp_path: Path, main: Path, dropins: list[Path]) -> None:
    """The real drop-in cases: after apply under --root, sh sourcing the main file and the drop-ins
    sees the parameter (or mlxfix refused and changed nothing)."""
    root = tmp_path / "root"
    (root / "etc/default/grub.d").mkdir(parents=True)
    shutil.copy(main, root / "etc/default/grub")
    names = [f"{i:02d}-{d.stem}.cfg" for i, d in enumerate(dropins)]
    for name, d in zip(names, dropins, strict=True):
        shutil.copy(d, root / "etc/default/grub.d" / name)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-grub").write_text("#!/bin/sh\n")
    (root / "usr/sbin/update-grub").chmod(0o755)
    before = snapshot(root)
    proc = run("apply", "--yes", "--root", str(root))
    if proc.returncode != 0:
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert snapshot(root) == before
        return
    # Every drop-in there now, as grub-mkconfig globs them: mlxfix's own zz-mlxfix.cfg too, where it wrote one
    # (035's value comes from a function: no edit is provably right, the drop-in appends the parameter).
    files = [root / "etc/default/grub", *sorted((root / "etc/default/grub.d").glob("*.cfg"))]
    value = sh_values(files, ["GRUB_CMDLINE_LINUX_DEFAULT"])["GRUB_CMDLINE_LINUX_DEFAULT"]
    assert value is not None
    assert P in value.split()


# -- the real tools, in a mount namespace -----------------------------------------------------------------

pytestmark_ns = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    namespace.require_root()
    for d in ("default/grub.d", "kernel", "boot/grub", "modules", "bin"):
        (tmp_path / d).mkdir(parents=True)
    namespace.state_dir(tmp_path)
    return tmp_path


def kernels(sandbox: Path, *versions: str) -> None:
    for v in versions:
        (sandbox / "boot" / f"vmlinuz-{v}").write_bytes(b"\x00" * 64)
        (sandbox / "boot" / f"initrd.img-{v}").write_bytes(b"\x00" * 64)
        (sandbox / "modules" / v).mkdir()
        (sandbox / "modules" / v / "vmlinuz").write_bytes(b"\x00" * 64)


def binds(sandbox: Path, *names: str) -> dict[str, Path]:
    table = {
        "default": "/etc/default",
        "kernel": "/etc/kernel",
        "boot": "/boot",
        "modules": "/usr/lib/modules",
        "state": namespace.STATE,
    }
    return {table[n]: sandbox / n for n in names}


def linux_options(cfg: Path) -> list[str]:
    return [ln.strip() for ln in cfg.read_text().splitlines() if ln.strip().startswith(("linux\t", "linux ", "linux16"))]


@pytest.mark.root
@pytest.mark.slow
def test_systemd_boot_with_the_real_kernel_install(sandbox: Path) -> None:
    kernels(sandbox, "6.11.5-arch1-1")
    (sandbox / "kernel" / "cmdline").write_text("root=UUID=5e2c1d9a rw quiet\n")
    (sandbox / "kernel" / "install.conf").write_text("layout=bls\n")
    (sandbox / "kernel" / "install.d").mkdir()
    for plugin in ("50-depmod.install", "85-initrd.install", "50-dracut.install", "55-initrd.install"):
        (sandbox / "kernel" / "install.d" / plugin).symlink_to("/dev/null")  # masked: no depmod, no initrd builds
    env = {"BOOT_ROOT": "/boot", "MACHINE_ID": "0123456789abcdef0123456789abcdef"}
    b = binds(sandbox, "default", "kernel", "boot", "modules", "state")
    proc = namespace.run(b, "apply", "--yes", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert doc["boot_setup"]["name"] == "systemd-boot"  # type: ignore[index]
    [cmd] = doc["commands"]  # type: ignore[misc]
    assert cmd["argv"][:3] == ["kernel-install", "add", "6.11.5-arch1-1"]
    assert cmd["exit_code"] == 0
    entry = sandbox / "boot/loader/entries/0123456789abcdef0123456789abcdef-6.11.5-arch1-1.conf"
    options = next(ln for ln in entry.read_text().splitlines() if ln.startswith("options"))
    assert "root=UUID=5e2c1d9a rw quiet pci=realloc=off" in options
    proc = namespace.run(b, "rollback", "--yes", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (sandbox / "kernel" / "cmdline").read_text() == "root=UUID=5e2c1d9a rw quiet\n"
    options = next(ln for ln in entry.read_text().splitlines() if ln.startswith("options"))
    assert "pci=realloc=off" not in options


@pytest.mark.root
@pytest.mark.slow
def test_proxmox_systemd_boot_runs_proxmox_boot_tool_refresh(sandbox: Path) -> None:
    (sandbox / "default" / "grub").write_bytes(PVE_GRUB)
    (sandbox / "kernel" / "cmdline").write_text("root=ZFS=rpool/ROOT/pve-1 boot=zfs\n")
    (sandbox / "kernel" / "proxmox-boot-uuids").write_text("4A1B-2C3D\n")
    record = sandbox / "pbt.log"
    env = {"PBT_RECORD": str(record)}
    b = binds(sandbox, "default", "kernel", "state")
    proc = namespace.run(b, "apply", "--yes", "--json", env=env, path_prefix=FAKES)
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert doc["boot_setup"]["name"] == "proxmox-systemd-boot"  # type: ignore[index]
    assert any("configured with: uefi" in e for e in doc["boot_setup"]["evidence"])  # type: ignore[index]
    assert record.read_text() == "refresh\nroot=ZFS=rpool/ROOT/pve-1 boot=zfs pci=realloc=off\n"
    assert (sandbox / "default" / "grub").read_bytes() == PVE_GRUB  # not what this host boots with
    proc = namespace.run(b, "rollback", "--yes", env=env, path_prefix=FAKES)
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().endswith("refresh\nroot=ZFS=rpool/ROOT/pve-1 boot=zfs\n")
    assert (sandbox / "kernel" / "cmdline").read_text() == "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n"


FEDORA_GRUB = (EXAMPLES / "fedora-bls/etc/default/grub").read_text()


def bls_entry(sandbox: Path, version: str, options: str) -> Path:
    entries = sandbox / "boot/loader/entries"
    entries.mkdir(parents=True, exist_ok=True)
    path = entries / f"0123abcd-{version}.conf"
    path.write_text(
        f"title Fedora Linux ({version})\nversion {version}\nlinux /vmlinuz-{version}\ninitrd /initramfs-{version}.img\noptions {options}\ngrub_class fedora\n"
    )
    return path


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "expected_args", "expected_options"),
    [
        (
            "root=/dev/mapper/fedora-root ro rhgb quiet",
            f"--update-kernel=ALL --args={P}",
            f"root=/dev/mapper/fedora-root ro rhgb quiet {P}",
        ),
        (
            "root=/dev/vda3 ro pci=realloc=on quiet",
            f"--update-kernel=ALL --remove-args=pci=realloc=on --args={P}",
            f"root=/dev/vda3 ro quiet {P}",
        ),
    ],
)
def test_fedora_bls_with_grubby(sandbox: Path, options: str, expected_args: str, expected_options: str) -> None:
    (sandbox / "default" / "grub").write_text(FEDORA_GRUB)
    entries = [bls_entry(sandbox, v, options) for v in ("6.11.4-301.fc41.x86_64", "6.11.6-300.fc41.x86_64")]
    originals = [e.read_bytes() for e in entries]
    record = sandbox / "grubby.log"
    b = binds(sandbox, "default", "boot", "state")
    mask = ("/usr/sbin/update-grub",)
    proc = namespace.run(b, "apply", "--yes", "--json", env={"GRUBBY_RECORD": str(record)}, path_prefix=FAKES, mask=mask)
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc.stdout)["boot_setup"]["name"] == "grub2-bls"  # type: ignore[index]
    assert record.read_text() == expected_args + "\n"
    for e in entries:
        assert f"options {expected_options}\n" in e.read_text()
    assert f'GRUB_CMDLINE_LINUX="rd.lvm.lv=fedora/root rhgb quiet {P}"' in (sandbox / "default" / "grub").read_text()
    proc = namespace.run(b, "rollback", "--yes", env={"GRUBBY_RECORD": str(record)}, path_prefix=FAKES, mask=mask)
    assert proc.returncode == 0, proc.stderr
    assert [e.read_bytes() for e in entries] == originals  # the entries' exact previous arguments
    assert (sandbox / "default" / "grub").read_text() == FEDORA_GRUB


def test_grubby_cannot_remove_an_argument_with_a_comma(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    for entry in (root / "boot/loader/entries").iterdir():
        entry.write_text(entry.read_text().replace("rhgb quiet", "rhgb quiet pci=noaer,realloc=on"))
    before = snapshot(root)
    proc = run("apply", "--yes", "--root", str(root))
    assert proc.returncode == 1
    assert "break on a comma (pci=noaer,realloc=on)" in proc.stderr
    assert snapshot(root) == before


@pytest.mark.root
@pytest.mark.slow
def test_a_grubby_that_does_something_else_is_undone(sandbox: Path) -> None:
    (sandbox / "default" / "grub").write_text(FEDORA_GRUB)
    entry = bls_entry(sandbox, "6.11.4-301.fc41.x86_64", "root=/dev/vda3 ro quiet")
    original = entry.read_bytes()
    namespace.tool(sandbox / "bin", "grubby", f'sed -i -e "s/^options.*/options broken/" {entry.parent}/*.conf\n')
    proc = namespace.run(
        binds(sandbox, "default", "boot", "state"),
        "apply",
        "--yes",
        path_prefix=str(sandbox / "bin"),
        mask=("/usr/sbin/update-grub",),
    )
    assert proc.returncode == 1
    assert "do not hold the planned arguments" in proc.stderr
    assert entry.read_bytes() == original
    assert (sandbox / "default" / "grub").read_text() == FEDORA_GRUB


@pytest.mark.root
@pytest.mark.slow
def test_rhel8_kernelopts_in_grubenv(sandbox: Path) -> None:
    (sandbox / "default" / "grub").write_text(FEDORA_GRUB)
    for src in (EXAMPLES / "rhel8-kernelopts/boot").rglob("*"):
        if src.is_file():
            dst = sandbox / "boot" / src.relative_to(EXAMPLES / "rhel8-kernelopts/boot")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    grubenv = sandbox / "boot/grub2/grubenv"
    original = grubenv.read_bytes()
    b = binds(sandbox, "default", "boot", "state")
    proc = namespace.run(b, "apply", "--yes", path_prefix=FAKES, mask=("/usr/sbin/update-grub",))
    assert proc.returncode == 0, proc.stderr
    assert P in grubenv.read_text()
    assert namespace.run(b, "rollback", "--yes", path_prefix=FAKES, mask=("/usr/sbin/update-grub",)).returncode == 0
    assert grubenv.read_bytes() == original


@pytest.mark.root
@pytest.mark.slow
def test_grub2_without_bls_runs_grub2_mkconfig_on_the_cfg_in_use(sandbox: Path) -> None:
    """grub2-mkconfig is a wrapper around Debian's real grub-mkconfig (the RHEL name for it)."""
    kernels(sandbox, "3.10.0-1160.el7.x86_64")
    centos = (Path(__file__).parents[1] / "corpus/grub/001-chemti-centos7-vm02.grub").read_text()
    # Its GRUB_DISTRIBUTOR reads /etc/system-release, which a Debian machine lacks (grub-mkconfig runs
    # with set -e and would stop there): name the distributor instead.
    centos = re.sub(r"GRUB_DISTRIBUTOR=.*", 'GRUB_DISTRIBUTOR="CentOS Linux"', centos)
    (sandbox / "default" / "grub").write_text(centos)
    namespace.tool(sandbox / "bin", "grub2-mkconfig", 'exec grub-mkconfig "$@"\n')
    (sandbox / "boot" / "grub2").mkdir()
    b = binds(sandbox, "default", "boot", "state")
    proc = namespace.run(b, "apply", "--yes", "--json", path_prefix=str(sandbox / "bin"), mask=("/usr/sbin/update-grub",))
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert doc["boot_setup"]["name"] == "grub2"  # type: ignore[index]
    lines = [ln for ln in linux_options(sandbox / "boot/grub2/grub.cfg") if "single" not in ln]
    assert lines
    assert all(P in ln for ln in lines)


@pytest.mark.root
@pytest.mark.slow
def test_arch_style_grub_mkconfig(sandbox: Path) -> None:
    kernels(sandbox, "6.11.5-arch1-1")
    (sandbox / "default" / "grub").write_bytes((EXAMPLES / "arch-grub/etc/default/grub").read_bytes())
    b = binds(sandbox, "default", "boot", "state")
    proc = namespace.run(b, "apply", "--yes", "--boot-setup", "grub")
    assert proc.returncode == 0, proc.stderr
    assert all(P in ln for ln in linux_options(sandbox / "boot/grub/grub.cfg") if "recovery" not in ln)


@pytest.mark.root
@pytest.mark.slow
def test_ubuntu_cloud_dropin_with_the_real_update_grub(sandbox: Path) -> None:
    kernels(sandbox, "5.15.0-126-generic")
    for src in (EXAMPLES / "ubuntu-cloud/etc/default").rglob("*"):
        if src.is_file():
            dst = sandbox / "default" / src.relative_to(EXAMPLES / "ubuntu-cloud/etc/default")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    main = (sandbox / "default" / "grub").read_bytes()
    b = binds(sandbox, "default", "boot", "state")
    proc = namespace.run(b, "apply", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert (sandbox / "default" / "grub").read_bytes() == main  # the drop-in is what counts, and what changed
    normal = [ln for ln in linux_options(sandbox / "boot/grub/grub.cfg") if "recovery" not in ln and "single" not in ln]
    assert normal
    assert all("console=ttyS0" in ln and P in ln for ln in normal)


# -- BLS rollback: only what grubby did is undone -----------------------------------------------------------


def _as_grubby_would(entry: Path, extra: str = "") -> None:
    """What the apply's grubby does to an entry (under --root nothing runs, so the test does it)."""
    text = re.sub(r"^options (.*)$", lambda m: f"options {m.group(1)} {P}{extra}", entry.read_text(), flags=re.MULTILINE)
    entry.write_text(text)


def test_bls_rollback_puts_back_entries_grubby_changed(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    entries = sorted((root / "boot/loader/entries").iterdir())
    originals = [e.read_bytes() for e in entries]
    assert run("apply", "--yes", "--root", str(root)).returncode == 0
    for e in entries:
        _as_grubby_would(e)
    proc = run("rollback", "--yes", "--json", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert [e.read_bytes() for e in entries] == originals
    assert (root / "etc/default/grub").read_bytes() == (EXAMPLES / "fedora-bls/etc/default/grub").read_bytes()


def test_bls_rollback_keeps_an_admins_later_change_to_an_entry(tmp_path: Path) -> None:
    """An entry changed since the apply is not copied back (that would undo the admin's change):
    grubby takes out only what the apply put in. --force copies the saved bytes back."""
    root = copy_example(tmp_path, "fedora-bls")
    entries = sorted((root / "boot/loader/entries").iterdir())
    originals = [e.read_bytes() for e in entries]
    assert run("apply", "--yes", "--root", str(root)).returncode == 0
    _as_grubby_would(entries[0])
    _as_grubby_would(entries[1], " nomodeset")  # the admin added nomodeset after mlxfix
    changed = entries[1].read_bytes()
    doc = json_of(run("rollback", "--dry-run", "--json", "--root", str(root)).stdout)
    assert doc["exit_code"] == 0
    kernel = "/boot/" + re.search(r"^linux /(\S+)", changed.decode(), re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert [c["argv"] for c in doc["commands"]] == [["grubby", f"--update-kernel={kernel}", f"--remove-args={P}"]]  # type: ignore[index]
    assert [f["path"] for f in doc["files"]] == ["/etc/default/grub", f"/boot/loader/entries/{entries[0].name}"]  # type: ignore[union-attr]
    assert run("rollback", "--yes", "--root", str(root)).returncode == 0
    assert entries[0].read_bytes() == originals[0]
    assert entries[1].read_bytes() == changed  # under --root grubby is named for the host, not run
    forced = copy_example(tmp_path / "forced", "fedora-bls")
    entry = sorted((forced / "boot/loader/entries").iterdir())[1]
    assert run("apply", "--yes", "--root", str(forced)).returncode == 0
    _as_grubby_would(entry, " nomodeset")
    assert run("rollback", "--yes", "--force", "--root", str(forced)).returncode == 0
    assert entry.read_bytes() == originals[1]


@pytest.mark.root
@pytest.mark.slow
def test_bls_rollback_with_grubby_keeps_an_admins_later_option(sandbox: Path) -> None:
    (sandbox / "default" / "grub").write_text(FEDORA_GRUB)
    entries = [bls_entry(sandbox, v, "root=/dev/vda3 ro quiet") for v in ("6.11.4-301.fc41.x86_64", "6.11.6-300.fc41.x86_64")]
    originals = [e.read_bytes() for e in entries]
    b = binds(sandbox, "default", "boot", "state")
    mask = ("/usr/sbin/update-grub",)
    assert namespace.run(b, "apply", "--yes", path_prefix=FAKES, mask=mask).returncode == 0
    entries[1].write_text(entries[1].read_text().replace(f"quiet {P}", f"quiet {P} nomodeset"))
    proc = namespace.run(b, "rollback", "--yes", path_prefix=FAKES, mask=mask)
    assert proc.returncode == 0, proc.stderr
    assert entries[0].read_bytes() == originals[0]
    assert "options root=/dev/vda3 ro quiet nomodeset\n" in entries[1].read_text()


def test_rhel8_rollback_keeps_what_grub_changed_in_grubenv_since(tmp_path: Path) -> None:
    """saved_entry and boot_success change on their own: rollback asks grubby to take the parameter out
    of kernelopts, and never copies the old grubenv back."""
    root = copy_example(tmp_path, "rhel8-kernelopts")
    grubenv = root / "boot/grub2/grubenv"
    assert run("apply", "--yes", "--root", str(root)).returncode == 0
    text = grubenv.read_text().replace("rhgb quiet ", f"rhgb quiet {P} ").replace("boot_success=0", "boot_success=1")
    grubenv.write_text(text)
    doc = json_of(run("rollback", "--yes", "--json", "--root", str(root)).stdout)
    assert doc["exit_code"] == 0
    assert [c["argv"] for c in doc["commands"]] == [["grubby", "--update-kernel=ALL", f"--remove-args={P}"]]  # type: ignore[index]
    assert "/boot/grub2/grubenv" not in [f["path"] for f in doc["files"]]  # type: ignore[union-attr]
    assert grubenv.read_text() == text  # under --root grubby is reported, not run: grubenv is untouched


# -- detection at its edges ---------------------------------------------------------------------------------


def setup_of(root: Path, *args: str) -> tuple[int, dict[str, object], str]:
    proc = run("apply", "--dry-run", "--json", "--root", str(root), *args)
    doc = json_of(proc.stdout)
    return proc.returncode, doc, proc.stderr


@pytest.mark.parametrize(
    "line",
    ["GRUB_ENABLE_BLSCFG=${GRUB_ENABLE_BLSCFG:-true}", "GRUB_ENABLE_BLSCFG=$(echo true)", "[ -e /x ] && GRUB_ENABLE_BLSCFG=true"],
)
def test_a_bls_switch_that_cannot_be_known_is_refused_not_guessed(tmp_path: Path, line: str) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    grub = root / "etc/default/grub"
    grub.write_text(re.sub(r"^GRUB_ENABLE_BLSCFG=.*$", line, grub.read_text(), flags=re.MULTILINE))
    code, doc, err = setup_of(root)
    assert code == 1
    assert "cannot know whether GRUB uses BLS entries" in err
    assert "/etc/default/grub:" in err
    assert doc["files"] == []


def test_the_opensuse_efi_stub_is_not_taken_for_the_config(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "centos7-grub2")
    (root / "sys/firmware/efi").mkdir(parents=True)
    stub = root / "boot/efi/EFI/opensuse/grub.cfg"
    stub.parent.mkdir(parents=True)
    stub.write_text('search --fs-uuid --set=root 1234\nset prefix=($root)/boot/grub2\nsource "${prefix}/grub.cfg"\n')
    _, doc, _ = setup_of(root)
    assert [c["argv"] for c in doc["commands"]] == [["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"]]  # type: ignore[index]


def test_a_leftover_grub_on_a_systemd_boot_host_does_not_win(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "systemd-boot")
    (root / "etc/default").mkdir(parents=True, exist_ok=True)
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    tool = root / "usr/bin/grub-mkconfig"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    _, doc, _ = setup_of(root)
    assert doc["boot_setup"]["name"] == "systemd-boot"  # type: ignore[index]
    assert any("there is no grub.cfg" in e for e in doc["boot_setup"]["evidence"])  # type: ignore[index]


def test_kernel_install_is_what_makes_a_systemd_boot_host(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "systemd-boot")
    for ki in root.rglob("kernel-install"):
        ki.unlink()
    bootctl = root / "usr/bin/bootctl"
    bootctl.parent.mkdir(parents=True, exist_ok=True)
    bootctl.write_text("#!/bin/sh\n")
    bootctl.chmod(0o755)
    code, doc, err = setup_of(root)
    assert code == 1
    assert "kernel-install (which reads it) is not installed" in err
    assert doc["files"] == []


def test_systemd_boot_forced_without_kernels_is_refused(tmp_path: Path) -> None:
    code, _, err = setup_of(copy_example(tmp_path, "pve-systemd-boot"), "--boot-setup", "systemd-boot")
    assert code == 1
    assert "no installed kernel" in err


def test_refusal_advice_names_the_parameter_asked_for(tmp_path: Path) -> None:
    for tree in ("fedora-silverblue", "loader-entries-only"):
        code, _, err = setup_of(EXAMPLES / tree, "--param", "iommu=pt")
        assert code == 1
        assert "iommu=pt" in err
        assert "pci=realloc=off" not in err
    assert (
        "/run/ostree-booted" in setup_of(EXAMPLES / "fedora-silverblue")[2]
        or "/ostree" in setup_of(EXAMPLES / "fedora-silverblue")[2]
    )


def test_proxmox_secure_boot_tree_is_a_grub_host(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "pve-systemd-boot")
    var = root / f"sys/firmware/efi/efivars/SecureBoot-{efi_global_guid()}"
    var.parent.mkdir(parents=True, exist_ok=True)
    var.write_bytes(b"\x06\x00\x00\x00\x01")
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin/update-grub").write_text("#!/bin/sh\n")
    (root / "usr/sbin/update-grub").chmod(0o755)
    _, doc, _ = setup_of(root)
    assert doc["boot_setup"]["name"] == "grub-debian"  # type: ignore[index]
    assert any("Secure Boot is on" in e for e in doc["boot_setup"]["evidence"])  # type: ignore[index]


@pytest.mark.parametrize(("content", "words"), [(None, "does not exist"), ("\n", "has no root= parameter")])
def test_proxmox_systemd_boot_without_a_usable_kernel_cmdline_is_refused(tmp_path: Path, content: str | None, words: str) -> None:
    root = copy_example(tmp_path, "pve-systemd-boot")
    cmdline = root / "etc/kernel/cmdline"
    if content is None:
        cmdline.unlink()
        (root / "sys/firmware/efi").mkdir(parents=True, exist_ok=True)
    else:
        cmdline.write_text(content)
    code, _, err = setup_of(root, *(["--boot-setup", "proxmox-systemd-boot"] if content is None else []))
    assert code == 1
    assert words in err


def test_an_unknown_boot_setup_name_is_a_usage_error_everywhere(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "pve-missing-uar")
    for command in ("apply", "rollback"):
        proc = run(command, "--dry-run", "--boot-setup", "lilo", "--root", str(root))
        assert proc.returncode == 2, (command, proc.stderr)
        assert "unknown boot setup 'lilo'" in proc.stderr


def test_a_dropin_that_appends_is_named_as_appending(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "ubuntu-cloud")
    (root / "etc/default/grub.d/60-append.cfg").write_text(
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT mitigations=off"\n'
    )
    _, doc, _ = setup_of(root)
    assert any(
        "60-append.cfg:1 appends to GRUB_CMDLINE_LINUX_DEFAULT as set in /etc/default/grub.d/50-cloudimg-settings.cfg" in n
        for n in doc["notes"]
    )  # type: ignore[union-attr]


def test_a_second_apply_on_a_bls_tree_changes_nothing(tmp_path: Path) -> None:
    """Under --root grubby cannot run: once /etc/default/grub holds the parameter, there is nothing left
    to do in the tree (no new backup, changed false), and grubby is named for the host."""
    root = copy_example(tmp_path, "fedora-bls")
    first = json_of(run("apply", "--yes", "--json", "--root", str(root)).stdout)
    assert first["changed"] is True
    after_first = snapshot(root)
    second = json_of(run("apply", "--yes", "--json", "--root", str(root)).stdout)
    assert (second["changed"], second["backup"], second["exit_code"]) == (False, None, 0)
    assert any("grubby --update-kernel=ALL" in w for w in second["warnings"])  # type: ignore[union-attr]
    assert snapshot(root) == after_first
    assert run("rollback", "--yes", "--root", str(root)).returncode == 0
    assert (root / "etc/default/grub").read_bytes() == (EXAMPLES / "fedora-bls/etc/default/grub").read_bytes()


def test_diagnose_reads_the_entry_the_next_boot_takes_not_the_rescue_one(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    entries = sorted((root / "boot/loader/entries").iterdir())
    for e in entries:
        e.write_text(e.read_text().replace("rhgb quiet", f"rhgb quiet {P}"))
    rescue = entries[0].with_name(entries[0].name.split("-")[0] + "-0-rescue.conf")
    rescue.write_text("title rescue\nversion 0-rescue\nlinux /vmlinuz-0-rescue-abc\noptions root=/dev/vda3 ro\n")
    (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    doc = json_of(run("diagnose", "--json", "--root", str(root)).stdout)
    assert doc["cmdline"]["configured_realloc"] == "off"  # type: ignore[index]
    assert "rescue" not in doc["cmdline"]["configured_source"]  # type: ignore[index]


def test_debian_booting_with_systemd_boot_is_not_a_grub_host(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "systemd-boot")
    (root / "etc/default").mkdir(parents=True, exist_ok=True)
    (root / "etc/default/grub").write_bytes(PVE_GRUB)
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin/update-grub").write_text("#!/bin/sh\n")
    (root / "usr/sbin/update-grub").chmod(0o755)
    _, doc, _ = setup_of(root)
    assert doc["boot_setup"]["name"] == "systemd-boot"  # type: ignore[index]


def test_bls_refuses_a_conflict_in_the_variable_that_comes_later(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    grub = root / "etc/default/grub"
    grub.write_text(grub.read_text() + 'GRUB_CMDLINE_LINUX_DEFAULT="pci=realloc"\n')
    code, doc, err = setup_of(root)
    assert code == 1
    assert "GRUB_CMDLINE_LINUX_DEFAULT has pci=realloc, which comes after GRUB_CMDLINE_LINUX" in err
    assert doc["files"] == []


def test_a_parameter_already_in_grub_cmdline_linux_is_in_place(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "pve-missing-uar")
    grub = root / "etc/default/grub"
    grub.write_bytes(PVE_GRUB.replace(b'GRUB_CMDLINE_LINUX=""', f'GRUB_CMDLINE_LINUX="{P}"'.encode()))
    code, doc, _ = setup_of(root)
    assert (code, doc["would_change"], doc["files"], doc["commands"]) == (0, False, [], [])
    assert any("GRUB_CMDLINE_LINUX already has" in n for n in doc["notes"])  # type: ignore[union-attr]


def test_diagnose_takes_boot_setup_too(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "pve-systemd-boot")
    (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    proc = run("diagnose", "--json", "--boot-setup", "grub-debian", "--root", str(root))
    assert json_of(proc.stdout)["boot_setup"]["name"] == "grub-debian"  # type: ignore[index]
    assert run("diagnose", "--boot-setup", "lilo", "--root", str(root)).returncode == 2


@pytest.mark.parametrize("firmware", ["bios", "uefi-secure-boot"])
def test_proxmox_boot_tool_with_grub_is_a_grub_host_even_with_kernel_install(tmp_path: Path, firmware: str) -> None:
    """Debian 12 ships kernel-install with systemd, and proxmox-boot-tool keeps GRUB's grub.cfg on the
    ESPs: neither makes a Proxmox VE host whose ESPs boot GRUB a kernel-install host."""
    root = copy_example(tmp_path, "pve-systemd-boot")
    efi = root / "sys/firmware/efi"
    if firmware == "bios":
        shutil.rmtree(efi)
    else:
        var = efi / f"efivars/SecureBoot-{efi_global_guid()}"
        var.parent.mkdir(parents=True, exist_ok=True)
        var.write_bytes(b"\x06\x00\x00\x00\x01")
    for name in ("kernel-install", "grub-mkconfig"):
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        (root / "usr/bin" / name).write_text("#!/bin/sh\n")
        (root / "usr/bin" / name).chmod(0o755)
    (root / "usr/lib/modules/6.8.12-4-pve").mkdir(parents=True)
    (root / "boot").mkdir(exist_ok=True)
    (root / "boot/vmlinuz-6.8.12-4-pve").write_bytes(b"")
    assert not (root / "boot/grub/grub.cfg").exists()
    code, doc, err = setup_of(root)
    assert code == 0, err
    assert doc["boot_setup"]["name"] == "grub-debian"  # type: ignore[index]
    assert [f["path"] for f in doc["files"]] == ["/etc/default/grub"]  # type: ignore[index]
    assert [c["argv"] for c in doc["commands"]] == [["update-grub"]]  # type: ignore[index]


@pytest.mark.parametrize("first", ["# the options\n", "\n"])
def test_proxmox_boot_tool_reads_only_the_first_line_of_kernel_cmdline(tmp_path: Path, first: str) -> None:
    root = copy_example(tmp_path, "pve-systemd-boot")
    cmdline = root / "etc/kernel/cmdline"
    cmdline.write_text(first + cmdline.read_text())
    before = cmdline.read_bytes()
    code, doc, err = setup_of(root)
    assert code == 1
    assert "proxmox-boot-tool reads only the first line" in err
    assert "/etc/kernel/cmdline:1" in err
    assert doc["files"] == []
    assert cmdline.read_bytes() == before


def test_entries_only_refusal_says_why_kernel_cmdline_is_not_used(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "loader-entries-only")
    (root / "etc/kernel").mkdir(parents=True, exist_ok=True)
    (root / "etc/kernel/cmdline").write_text("root=/dev/sda2 quiet\n")
    for ki in root.rglob("kernel-install"):
        ki.unlink()
    code, _, err = setup_of(root)
    assert code == 1
    assert "kernel-install is not installed" in err
    assert "no /etc/kernel/cmdline" not in err


def _entry(root: Path, name: str, version: str, options: str) -> None:
    (root / "boot/loader/entries" / name).write_text(
        f"title Fedora Linux ({version})\nversion {version}\nlinux /vmlinuz-{version}\n"
        f"initrd /initramfs-{version}.img\noptions {options}\ngrub_class fedora\n"
    )


def test_grubby_updates_all_kernels_when_the_entries_differ_but_the_change_does_not(tmp_path: Path) -> None:
    """Fedora's rescue entry has options of its own; the change is the same for every entry, so it is
    the one command Red Hat documents."""
    root = copy_example(tmp_path, "fedora-bls")
    _entry(
        root,
        "0b1f5c3e9d2a4f6b8c7d6e5f4a3b2c1d-0-rescue.conf",
        "0-rescue-0b1f5c3e9d2a4f6b8c7d6e5f4a3b2c1d",
        "root=/dev/mapper/fedora-root ro",
    )
    code, doc, err = setup_of(root)
    assert code == 0, err
    assert [c["argv"] for c in doc["commands"]] == [["grubby", "--update-kernel=ALL", f"--args={P}"]]  # type: ignore[index]


def test_grubby_updates_kernel_by_kernel_when_the_changes_differ(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    entries = sorted((root / "boot/loader/entries").iterdir())
    entries[0].write_text(entries[0].read_text().replace("rhgb quiet", "rhgb quiet pci=realloc=on"))
    code, doc, err = setup_of(root)
    assert code == 0, err
    argvs = [c["argv"] for c in doc["commands"]]  # type: ignore[index]
    assert [
        "grubby",
        "--update-kernel=/boot/vmlinuz-6.11.4-301.fc41.x86_64",
        "--remove-args=pci=realloc=on",
        f"--args={P}",
    ] in argvs
    assert ["grubby", "--update-kernel=/boot/vmlinuz-6.11.6-300.fc41.x86_64", f"--args={P}"] in argvs


def test_under_root_the_grubby_commands_still_needed_are_listed_not_run(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "fedora-bls")
    grub = root / "etc/default/grub"
    grub.write_text(grub.read_text().replace('rhgb quiet"', f'rhgb quiet {P}"'))
    proc = run("apply", "--yes", "--json", "--root", str(root))
    doc = json_of(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert doc["changed"] is False
    assert doc["commands"] == [  # the entries still lack it: the host itself must run grubby
        {
            "argv": ["grubby", "--update-kernel=ALL", f"--args={P}"],
            "ran": False,
            "exit_code": None,
            "output_tail": "",
            "note": "--root: run it on the host itself",
        }
    ]


def test_a_refusal_in_json_carries_its_advice(tmp_path: Path) -> None:
    code, doc, _ = setup_of(EXAMPLES / "fedora-silverblue")
    assert code == 1
    assert doc["notes"] == [f"hint: run: rpm-ostree kargs --append-if-missing={P}, then reboot"]


def test_a_template_kernel_cmdline_is_refused(tmp_path: Path) -> None:
    root = copy_example(tmp_path, "pve-systemd-boot")
    cmdline = root / "etc/kernel/cmdline"
    cmdline.write_text("root=ZFS=rpool/ROOT/pve-1 boot=zfs {{ kernel_options }}\n")
    before = cmdline.read_bytes()
    code, doc, err = setup_of(root)
    assert code == 1
    assert "/etc/kernel/cmdline:1: '{{' is a template marker" in err
    assert doc["files"] == []
    assert cmdline.read_bytes() == before
