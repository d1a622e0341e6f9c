"""Debian 12 disk images for the boot tests, built from Debian's packages only and cached by recipe.

An image is built in three steps, none of which needs a loop device or a mount on the build machine:
mmdebstrap makes the root file system in a directory; ``mkfs.ext4 -d`` turns that directory into the
root partition of a sparse disk file; and a first boot of that disk (QEMU loading the image's own
kernel directly, with a provisioning script as init) installs the boot loader with the guest's own
tools, on the guest's own block device, exactly as an installer would: ``grub-install`` and
``update-grub`` for GRUB, ``bootctl install`` and ``kernel-install`` for systemd-boot.

The cache key is a digest of this file and of the setup's recipe, so a changed recipe builds anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.e2e.qemu import OVMF_VARS, Qemu

SUITE = "bookworm"
MIRROR = os.environ.get("MLXFIX_E2E_MIRROR", "http://deb.debian.org/debian")
ROOT_UUID = "0e2e0000-0000-4000-8000-000000000001"
ESP_ID = "0E2E0001"  # mkfs.vfat -i: the volume id, shown as the UUID 0E2E-0001
ESP_UUID = f"{ESP_ID[:4]}-{ESP_ID[4:]}"
MACHINE_ID = "0e2e00000000400080000000000000e2"
DISK_SIZE = 3 << 30
ESP_SIZE_MIB = 128
# Every image: what a minimal server has, plus what mlxfix needs (python3-venv for the offline wheel).
COMMON = [
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "linux-image-cloud-amd64",
    "python3",
    "python3-venv",
    "e2fsprogs",
    "dosfstools",
    "iproute2",
    "procps",
    "pciutils",
    "kmod",
]
SERIAL = "console=ttyS0"


@dataclass(frozen=True)
class Recipe:
    """One boot setup's image: its packages, firmware and boot loader installation."""

    name: str
    uefi: bool
    packages: tuple[str, ...]
    install: str  # shell run in the guest at the first boot, with / and /boot/efi mounted

    def key(self, deps: list[Path]) -> str:
        """This file, the recipe and the dependency wheels: a change to any builds anew."""
        text = Path(__file__).read_bytes() + repr(self).encode() + "\n".join(sorted(d.name for d in deps)).encode()
        return hashlib.sha256(text).hexdigest()[:16]


RECIPES = {
    "bios-grub": Recipe(
        "bios-grub",
        uefi=False,
        packages=("grub-pc",),
        install="grub-install --target=i386-pc /dev/vda\nupdate-grub\n",
    ),
    "uefi-grub": Recipe(
        "uefi-grub",
        uefi=True,
        packages=("grub-efi-amd64",),
        # --removable: OVMF boots EFI/BOOT/BOOTX64.EFI without an NVRAM entry, so the image is self-contained.
        install="grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram\nupdate-grub\n",
    ),
    "uefi-systemd-boot": Recipe(
        "uefi-systemd-boot",
        uefi=True,
        packages=("systemd-boot",),
        install=textwrap.dedent(
            f"""\
            echo "root=UUID={ROOT_UUID} ro {SERIAL} quiet" > /etc/kernel/cmdline
            bootctl install --esp-path=/boot/efi --no-variables
            printf 'timeout 0\\ndefault {MACHINE_ID}-*\\n' > /boot/efi/loader/loader.conf
            for v in /boot/vmlinuz-*; do
                k=${{v#/boot/vmlinuz-}}
                kernel-install add "$k" "$v" "/boot/initrd.img-$k"
            done
            ls -R /boot/efi
            cat /boot/efi/loader/entries/*.conf
            """
        ),
    ),
}

PROVISION = """\
#!/bin/sh
# First boot of a new image: install the boot loader with the guest's own tools, then power off.
set -eux
mount -t proc proc /proc || true
mount -t sysfs sys /sys || true
mount -t devtmpfs dev /dev || true
mount -o remount,rw /
{esp}
{install}
sync
echo E2E-PROVISIONED
poweroff -f -f
sleep 60
"""

ESP_SETUP = f"""\
mkfs.vfat -F 32 -i {ESP_ID} /dev/vda1
mkdir -p /boot/efi
mount /dev/vda1 /boot/efi
"""

CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}  # not this machine's pip settings
NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"


def cache_dir() -> Path:
    """Outside the clone: images outlive it and are shared by every checkout on the machine."""
    path = Path(os.environ.get("MLXFIX_E2E_CACHE", "/var/tmp/mlxfix-e2e"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def ssh_key() -> Path:
    """The key the guests accept for root; made once per cache."""
    key = cache_dir() / "id_ed25519"
    with (cache_dir() / "key.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not key.exists():
            _make_key(key)
    return key


def _make_key(key: Path) -> None:
    tmp = key.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    Path(f"{tmp}.pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlxfix-e2e", "-f", str(tmp)], check=True)
    os.replace(f"{tmp}.pub", f"{key}.pub")
    os.replace(tmp, key)


@dataclass(frozen=True)
class Image:
    """A built image: the disk (never written after the build: guests run on overlays) and its firmware."""

    recipe: Recipe
    disk: Path

    @property
    def vars_template(self) -> Path | None:
        return OVMF_VARS if self.recipe.uefi else None


def image(name: str, deps: list[Path], log: Path) -> Image:
    """The cached image of a recipe, built first when its recipe or mlxfix's dependencies changed.
    ``deps``: the wheels mlxfix needs (not mlxfix's own, which each test installs from the checkout)."""
    recipe = RECIPES[name]
    disk = cache_dir() / f"{name}-{recipe.key(deps)}.raw"
    with (cache_dir() / f"{name}.lock").open("w") as lock:  # the suite's workers (pytest -n) build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not disk.exists():
            for old in cache_dir().glob(f"{name}-*.raw"):
                old.unlink()
            build(recipe, deps, disk, log)
    return Image(recipe, disk)


def build(recipe: Recipe, deps: list[Path], disk: Path, log: Path) -> None:
    work = cache_dir() / f"build-{recipe.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    root = work / "root"
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"== build {recipe.name} ({recipe.key(deps)})\n")
        out.flush()
        include = ",".join([*COMMON, *recipe.packages])
        subprocess.run(
            ["mmdebstrap", "--variant=apt", f"--include={include}", SUITE, str(root), MIRROR],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
        customise(recipe, root)
        install_dependencies(root, deps, out)
        raw = work / "disk.raw"
        partition(recipe, raw)
        kernel = max(root.glob("boot/vmlinuz-*"))
        initrd = max(root.glob("boot/initrd.img-*"))
        shutil.copy(kernel, work / "vmlinuz")
        shutil.copy(initrd, work / "initrd")
        serial = work / "provision.log"
        vm = Qemu(
            disk=raw,
            disk_format="raw",
            serial=serial,
            uefi_vars=None,
            kernel=(
                work / "vmlinuz",
                work / "initrd",
                f"root=UUID={ROOT_UUID} rw init=/usr/local/sbin/provision panic=5 {SERIAL}",
            ),
            ssh_port=None,
        )
        vm.start()
        vm.wait_exit(timeout=600)
        text = serial.read_text(errors="replace")
        out.write(text)
        if "E2E-PROVISIONED" not in text:
            raise RuntimeError(f"provisioning {recipe.name} failed: see {serial}")
        out.write(f"== built {recipe.name} in {time.monotonic() - started:.0f} s\n")
    os.replace(raw, disk)
    shutil.rmtree(work, ignore_errors=True)


def customise(recipe: Recipe, root: Path) -> None:
    """What a real host has that mmdebstrap leaves out: fstab, network, a root key, a fast menu."""
    fstab = f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"
    if recipe.uefi:
        fstab += f"UUID={ESP_UUID} /boot/efi vfat umask=0077 0 1\n"
        (root / "boot/efi").mkdir(exist_ok=True)
    (root / "etc/fstab").write_text(fstab)
    (root / "etc/hostname").write_text(f"{recipe.name}\n")
    (root / "etc/machine-id").write_text(f"{MACHINE_ID}\n")
    (root / "etc/systemd/network/50-dhcp.network").write_text(NETWORK)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "systemd-networkd.service").unlink(missing_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(f"{ssh_key()}.pub", ssh / "authorized_keys")
    grub = root / "etc/default/grub"
    if grub.exists():  # the stock file, with the two changes of a server admin: no menu delay, a serial console
        text = grub.read_text()
        text = text.replace("GRUB_TIMEOUT=5", "GRUB_TIMEOUT=0").replace('GRUB_CMDLINE_LINUX=""', f'GRUB_CMDLINE_LINUX="{SERIAL}"')
        grub.write_text(text)
    esp = ESP_SETUP if recipe.uefi else ""
    script = root / "usr/local/sbin/provision"
    script.write_text(PROVISION.format(esp=esp, install=recipe.install))
    script.chmod(0o755)


def install_dependencies(root: Path, deps: list[Path], out: IO[str]) -> None:
    """/opt/mlxfix, a venv with mlxfix's dependencies, made in a chroot at native speed (under TCG,
    ensurepip and byte-compiling them cost minutes a guest). Offline: only the given wheels."""
    wheels = root / "tmp/wheels"
    wheels.mkdir(parents=True)
    for w in deps:
        shutil.copy(w, wheels)
    names = [w.name.split("-")[0] for w in deps]
    for argv in (
        ["python3", "-m", "venv", "/opt/mlxfix"],
        ["/opt/mlxfix/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels", *names],
    ):
        subprocess.run(
            ["chroot", str(root), *argv], check=True, stdout=out, stderr=subprocess.STDOUT, timeout=600, env=CHROOT_ENV
        )
    shutil.rmtree(wheels)


def partition(recipe: Recipe, raw: Path) -> None:
    """A sparse disk with the root file system written straight into its partition (mkfs.ext4 -d),
    sized as sfdisk made the partition (it aligns the end of the last one)."""
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(DISK_SIZE)
    if recipe.uefi:
        table = (
            f"label: gpt\nstart=2048, size={ESP_SIZE_MIB * 2048}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
            "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
        )
    else:
        table = "label: dos\nstart=2048, type=83, bootable\n"
    subprocess.run(["sfdisk", "-q", str(raw)], input=table.encode(), check=True)
    layout = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True, check=True).stdout)
    root = layout["partitiontable"]["partitions"][-1]
    subprocess.run(
        [
            "mkfs.ext4", "-q", "-F", "-U", ROOT_UUID, "-E", f"offset={root['start'] * 512}",
            "-d", str(raw.parent / "root"), str(raw), f"{root['size'] * 512 // 1024}k",
        ],
        check=True,
    )  # fmt: skip
