"""A booted guest driven over SSH: commands, files, reboots that are proved by a new boot id, power cuts."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.images import Image, ssh_key
from tests.e2e.qemu import BOOT_TIMEOUT, Qemu, free_port

COMMAND_TIMEOUT = 600.0
# The guest's last words before a reset (the kernel's) and the firmware's first after it (OVMF's boot
# manager; SeaBIOS says nothing on the serial port): between them only the virtual machine runs.
RESTARTING = b"reboot: Restarting system"
FIRMWARE = b"BdsDxe:"
# How long a reset may take before it counts as hung: under TCG the firmware speaks within seconds.
RESET_TIMEOUT = 120.0


@dataclass
class Run:
    argv: str
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"$ {self.argv}\n(exit {self.rc})\n{self.out}{self.err}"


class Guest:
    """One guest on its own qcow2 overlay (the image below is never written), with its own UEFI vars."""

    def __init__(self, image: Image, workdir: Path, name: str, install: Path | None = None) -> None:
        """``install``: mlxfix's wheel, installed at the first boot."""
        self.image, self.name, self.install = image, name, install
        workdir.mkdir(parents=True, exist_ok=True)
        self.overlay = workdir / f"{name}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "raw", str(self.overlay)], check=True
        )
        self.vars: Path | None = None
        if image.vars_template is not None:
            self.vars = workdir / f"{name}.vars"
            self.vars.write_bytes(image.vars_template.read_bytes())
        self.serial = workdir / f"{name}.serial.log"
        self.commands = workdir / f"{name}.commands.log"
        self.control = Path(tempfile.mkdtemp(prefix="mlxfix-e2e-ssh-")) / "master"  # short: a socket path
        self.port = free_port()
        self.qemu = Qemu(disk=self.overlay, disk_format="qcow2", serial=self.serial, uefi_vars=self.vars, ssh_port=self.port)
        self.boots = 0

    # -- SSH --------------------------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def ssh_options(self) -> list[str]:
        """As ``-o`` values: mlxfix's --ssh-option takes the same."""
        return [
            f"IdentityFile={ssh_key()}",
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "ConnectTimeout=10",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=6",
            "LogLevel=ERROR",
        ]

    def ssh_argv(self) -> list[str]:
        """ssh with one master connection per boot: a login costs seconds under TCG, a session on the
        master a fraction of one. The master dies with the guest (a reboot, a power cut)."""
        argv = [
            "ssh",
            "-p",
            str(self.port),
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self.control}",
            "-o",
            "ControlPersist=120",
        ]
        for o in self.ssh_options():
            argv += ["-o", o]
        return [*argv, "root@127.0.0.1"]

    def sh(self, script: str, *, check: bool = True, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None) -> Run:
        """Run a shell script in the guest as root; logged with its time beside the serial console."""
        started = time.monotonic()
        p = subprocess.run([*self.ssh_argv(), script], input=stdin or b"", capture_output=True, timeout=timeout, check=False)
        run = Run(script, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        self.log(f"{time.monotonic() - started:6.1f} s  exit {run.rc}  {script[:200]!r}")
        if check and run.rc != 0:
            raise AssertionError(f"in the guest {self.name}:\n{run}\n(serial console: {self.serial})")
        return run

    def mlxfix(self, args: str, *, check: bool = False) -> Run:
        return self.sh(f"mlxfix {args}", check=check)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.sh(f"cat > {shlex.quote(path)} && chmod {mode:o} {shlex.quote(path)}", stdin=data)

    def read(self, path: str) -> bytes:
        started = time.monotonic()
        p = subprocess.run([*self.ssh_argv(), f"cat {shlex.quote(path)}"], capture_output=True, timeout=120, check=True)
        self.log(f"{time.monotonic() - started:6.1f} s  read {path}")
        return p.stdout

    def log(self, line: str) -> None:
        with self.commands.open("a") as f:
            f.write(line + "\n")

    # -- power ------------------------------------------------------------------------------------------

    def boot(self) -> float:
        """Power on and wait for SSH; returns the seconds it took."""
        since = self.serial.stat().st_size if self.serial.exists() else 0
        started = time.monotonic()
        self.qemu.start()
        self.boots += 1
        self._wait_ssh(started + BOOT_TIMEOUT, since=since)
        self.log(f"{time.monotonic() - started:6.1f} s  boot {self.boots}")
        if self.install is not None and self.boots == 1:
            wheel = f"/tmp/{self.install.name}"
            self.put(wheel, self.install.read_bytes())
            self.sh(
                f"/opt/mlxfix/bin/pip install -q --no-index --no-deps {wheel} && rm {wheel}"
                " && ln -sf /opt/mlxfix/bin/mlxfix /usr/local/bin/mlxfix && mlxfix --version"
            )
        return time.monotonic() - started

    def _wait_ssh(self, deadline: float, old_boot: str | None = None, *, since: int = 0) -> None:
        while time.monotonic() < deadline:
            if not self.qemu.running:
                raise RuntimeError(f"{self.name}: QEMU exited while booting\n{self.console_tail(since)}")
            if self._ssh_answers(old_boot):
                return
            time.sleep(1)
        raise TimeoutError(f"{self.name}: no SSH within {BOOT_TIMEOUT:.0f} s\n{self.console_tail(since)}")

    def _ssh_answers(self, old_boot: str | None) -> bool:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p = subprocess.run(
                [*self.ssh_argv(), "cat /proc/sys/kernel/random/boot_id"], capture_output=True, timeout=30, check=False
            )
            return p.returncode == 0 and bool(p.stdout.strip()) and p.stdout.decode().strip() != old_boot
        return False

    def console(self, since: int = 0) -> bytes:
        """The serial console from byte ``since`` on."""
        with self.serial.open("rb") as f:
            f.seek(since)
            return f.read()

    def console_tail(self, since: int = 0, lines: int = 30) -> str:
        """The end of the serial console since ``since``, escape sequences dropped: a failed boot's
        message carries what the guest last said, so a CI log alone explains it."""
        text = re.sub(rb"\x1b\[[0-9;=?]*[A-Za-z]", b"", self.console(since)).decode(errors="replace")
        tail = "\n".join(text.splitlines()[-lines:])
        return f"serial console ({self.serial}) since the boot began, last {lines} lines:\n{tail}"

    def boot_id(self) -> str:
        return self.sh("cat /proc/sys/kernel/random/boot_id").out.strip()

    def reboot(self) -> float:
        """A clean reboot, proved by a new boot id; returns the seconds it took.

        One thing is retried, and logged: a UEFI virtual machine whose reset hangs under TCG (the
        kernel said it is restarting, the firmware never spoke) is power-cycled once. Nothing of the guest's
        runs in that gap; any hang after the firmware started (the boot loader, the kernel, systemd)
        fails the test as it is."""
        old = self.boot_id()
        since = self.serial.stat().st_size
        started = time.monotonic()
        self.sh("systemctl reboot", check=False, timeout=60)
        self.control.unlink(missing_ok=True)
        self.boots += 1
        reset_deadline = started + RESET_TIMEOUT
        while time.monotonic() < reset_deadline:
            if self._ssh_answers(old):
                break
            time.sleep(1)
        else:
            if self._reset_hung(since):
                self.log(f"{time.monotonic() - started:6.1f} s  reset hung (no firmware output after it): power cycle")
                self.qemu.kill()
                self.qemu.start()
                started = time.monotonic()
            self._wait_ssh(started + BOOT_TIMEOUT, old_boot=old, since=since)
        self.log(f"{time.monotonic() - started:6.1f} s  reboot {self.boots}")
        return time.monotonic() - started

    def _reset_hung(self, since: int) -> bool:
        """The kernel restarted and OVMF never spoke after it (a CI run saw it on a systemd-boot
        guest's fifth reset, two TCG guests sharing two cores). Only a UEFI guest can tell: a BIOS guest's firmware is silent on the serial port."""
        said = self.console(since)
        if self.vars is None or not self.qemu.running or RESTARTING not in said:
            return False
        return FIRMWARE not in said[said.rindex(RESTARTING) :]

    def cmdline(self) -> str:
        return self.sh("cat /proc/cmdline").out.strip()

    def poweroff(self) -> None:
        self.sh("systemctl poweroff", check=False, timeout=60)
        self.qemu.wait_exit(timeout=180)

    def power_cut(self) -> None:
        self.qemu.kill()
        self.control.unlink(missing_ok=True)  # its master is gone; a stale socket would disable sharing
        self.log("power cut (SIGKILL of QEMU)")

    def stop(self) -> None:
        """Whatever state it is in: gone, by its pid."""
        self.qemu.kill()
        self.control.unlink(missing_ok=True)
