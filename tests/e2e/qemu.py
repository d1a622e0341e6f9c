"""One QEMU guest, started and stopped by its pid, reachable only on 127.0.0.1.

KVM is not available on the machines this suite runs on (``/dev/kvm`` may exist and hang), so the
guest runs under TCG; every wait has a timeout sized for that. A power cut is a SIGKILL of QEMU: what
the guest had not written to its disk is lost, as in a power failure.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BOOT_TIMEOUT = float(os.environ.get("MLXFIX_E2E_BOOT_TIMEOUT", "300"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Qemu:
    """A QEMU process for one disk (an overlay, or the raw disk while an image is provisioned)."""

    def __init__(
        self,
        *,
        disk: Path,
        disk_format: str,
        serial: Path,
        uefi_vars: Path | None,
        kernel: tuple[Path, Path, str] | None = None,
        ssh_port: int | None = None,
    ) -> None:
        self.disk, self.disk_format, self.serial, self.uefi_vars = disk, disk_format, serial, uefi_vars
        self.kernel, self.ssh_port = kernel, ssh_port
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [
            "qemu-system-x86_64",
            "-accel", "tcg,thread=multi",
            "-cpu", "max",
            "-smp", "2",
            "-m", "1024",
            "-display", "none",
            "-monitor", "none",
            "-serial", f"file:{self.serial}",
            # cache=writeback: what the guest flushed is on the host; what it had not is lost at a SIGKILL.
            "-drive", f"file={self.disk},format={self.disk_format},if=virtio,cache=writeback,discard=unmap",
        ]  # fmt: skip
        if self.uefi_vars is not None:
            argv += [
                "-machine", "q35",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.uefi_vars}",
            ]  # fmt: skip
        if self.kernel is not None:
            vmlinuz, initrd, append = self.kernel
            argv += ["-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append, "-no-reboot"]
        if self.ssh_port is not None:
            argv += ["-nic", f"user,model=virtio-net-pci,restrict=off,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"]
        else:
            argv += ["-nic", "none"]
        return argv

    def start(self) -> None:
        """Start the guest; its serial console is appended to ``serial``."""
        with self.serial.open("ab") as log:
            log.write(f"\n== qemu {shlex.join(self.argv())}\n".encode())
        with self.serial.open("ab") as err:  # QEMU's own complaints land beside the console
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        """Wait for the guest to power off; kill it and fail when it does not within ``timeout``."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the guest did not power off within {timeout:.0f} s (serial console: {self.serial})") from None

    def kill(self) -> None:
        """The power cut: SIGKILL by pid, and wait until QEMU is gone (its disk is closed then)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def wait_port(self, deadline: float) -> None:
        """Until the forwarded SSH port accepts (QEMU listens at once; sshd answers later)."""
        assert self.ssh_port is not None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"QEMU exited while booting (serial console: {self.serial})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ssh_port), timeout=2):
                return
            time.sleep(0.5)
        raise TimeoutError(f"no SSH port after the boot timeout (serial console: {self.serial})")
