"""Build file trees for ``--root``: a host's /etc, the tools detection looks for, sysfs and proc."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mlxfix.cli.typer_app import app

DEBIAN_OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n'
PVE_GRUB = (Path(__file__).parents[1] / "examples" / "pve-missing-uar" / "etc" / "default" / "grub").read_bytes()


def write(root: Path, path: str, data: bytes | str, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    target.chmod(mode)
    return target


def tool(root: Path, name: str, script: str = "#!/bin/sh\nexit 0\n", directory: str = "/usr/sbin") -> Path:
    return write(root, f"{directory}/{name}", script, 0o755)


def debian_host(root: Path, grub: bytes | str = PVE_GRUB, dropins: dict[str, str] | None = None) -> Path:
    """A Debian/Proxmox tree: /etc/default/grub (+ drop-ins), update-grub, os-release."""
    write(root, "/etc/default/grub", grub)
    for name, text in (dropins or {}).items():
        write(root, f"/etc/default/grub.d/{name}", text)
    write(root, "/etc/os-release", DEBIAN_OS_RELEASE)
    tool(root, "update-grub", '#!/bin/sh\nset -e\nexec grub-mkconfig -o /boot/grub/grub.cfg "$@"\n')
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: sha256 and mode (to prove that nothing changed)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p.relative_to(root))] = (f"-> {os.readlink(p)}", 0)
            elif not p.is_file():  # a FIFO or a device: reading it would block
                out[str(p.relative_to(root))] = ("special", p.lstat().st_mode)
            else:
                out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process through typer's runner: (exit code, stdout, stderr). A process ends
    with its command; this one goes on, so what the command set for its process (a committed change
    ignores Ctrl-C) is put back."""
    import signal

    runner = CliRunner()
    handler = signal.getsignal(signal.SIGINT)
    try:
        result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    finally:
        signal.signal(signal.SIGINT, handler)
    return result.exit_code, result.stdout, result.stderr


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlxfix`` as a real process."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SSH_CONNECTION", None)
    return subprocess.run(
        [sys.executable, "-m", "mlxfix", *args],
        input=stdin,
        capture_output=True,
        text=True,
        errors="surrogateescape",  # human text may name a file whose name is not UTF-8, as it is
        env=full_env,
        timeout=timeout,
        check=False,
    )


def json_of(out: str) -> dict[str, object]:
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


# -- sysfs and proc ------------------------------------------------------------------------------------

EMPTY_BAR = "0x0000000000000000 0x0000000000000000 0x0000000000000000"
MEM64, MEM64PREF, ROM = 0x140204, 0x14220C, 0x46200


def bar(start: int, size: int, flags: int) -> str:
    return f"0x{start:016x} 0x{start + size - 1:016x} 0x{flags:016x}"


def cx3_resource(bar0: int | None = 0xF7C00000, bar2: int | None = 0xF0000000, *, bar2_line: str | None = None) -> str:
    lines = [EMPTY_BAR] * 13
    if bar0:
        lines[0] = bar(bar0, 0x100000, MEM64)
    if bar2:
        lines[2] = bar(bar2, 0x2000000, MEM64PREF)
    if bar2_line is not None:
        lines[2] = bar2_line
    lines[6] = bar(0xF7B00000, 0x100000, ROM)
    return "\n".join(lines) + "\n"


def pci_device(
    root: Path,
    address: str = "0000:01:00.0",
    *,
    vendor: str = "0x15b3",
    device: str = "0x1007",
    subsystem: tuple[str, str] = ("0x103c", "0x22f5"),
    driver: str | None = "mlx4_core",
    resource: str | None = None,
    net: tuple[str, ...] = (),
    override: str | None = None,
) -> Path:
    base = f"/sys/bus/pci/devices/{address}"
    write(root, f"{base}/vendor", vendor + "\n")
    write(root, f"{base}/device", device + "\n")
    write(root, f"{base}/subsystem_vendor", subsystem[0] + "\n")
    write(root, f"{base}/subsystem_device", subsystem[1] + "\n")
    if resource is not None:
        write(root, f"{base}/resource", resource)
    write(root, f"{base}/driver_override", (override or "(null)") + "\n")
    if driver is not None:
        target = root / base.lstrip("/") / "driver"
        target.symlink_to(f"../../../../bus/pci/drivers/{driver}")
    for name in net:
        write(root, f"{base}/net/{name}/operstate", "up\n")
    return root / base.lstrip("/")


def proc(
    root: Path,
    *,
    cmdline: str | None = "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro quiet",
    modules: tuple[str, ...] | None = ("mlx4_core",),
    cpu_flags: str = "fpu vme sse2",
) -> None:
    if cmdline is not None:
        write(root, "/proc/cmdline", cmdline + "\n")
    if modules is not None:
        write(root, "/proc/modules", "".join(f"{m} 16384 0 - Live 0x0000000000000000\n" for m in modules))
    write(root, "/proc/cpuinfo", f"processor\t: 0\nflags\t\t: {cpu_flags}\n")


def kernel_log(root: Path, text: str, path: str = "/var/log/dmesg") -> None:
    write(root, path, text)


def wait_for_pause(marker: Path, proc: subprocess.Popen[str]) -> None:
    """Wait (60 s at most) until ``proc`` reached the step MLXFIX_TEST_PAUSE_AT=STEP:marker names
    (it creates marker.reached, then waits for marker.go); it must not end before."""
    import time

    deadline = time.monotonic() + 60
    while not Path(f"{marker}.reached").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_NOBODY_PYTHON: list[tuple[str, dict[str, str]]] = []


def nobody_python() -> tuple[str, dict[str, str]]:
    """An interpreter and environment with which "nobody" can import mlxfix and its dependencies,
    wherever the clone lies: in place when nobody can read it, otherwise from a world-readable copy
    of the package and the venv's site-packages (a clone in a 0700 directory)."""
    import atexit
    import shutil
    import sysconfig
    import tempfile

    if _NOBODY_PYTHON:
        return _NOBODY_PYTHON[0]
    repo = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import mlxfix.cli.typer_app, typer, pydantic, plumbum"],
        capture_output=True, env=env, check=False,
    )  # fmt: skip
    if probe.returncode == 0:
        _NOBODY_PYTHON.append((sys.executable, env))
        return _NOBODY_PYTHON[0]
    copy = Path(tempfile.mkdtemp(prefix="mlxfix-nobody-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(repo / "mlxfix", copy / "lib" / "mlxfix", ignore=ignore)
    for key in ("purelib", "platlib"):
        shutil.copytree(sysconfig.get_paths()[key], copy / "lib", ignore=ignore, dirs_exist_ok=True)
    for p in (copy, *copy.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env = {**os.environ, "PYTHONPATH": str(copy / "lib"), "PYTHONDONTWRITEBYTECODE": "1"}
    _NOBODY_PYTHON.append((base, env))
    return _NOBODY_PYTHON[0]


def on_a_terminal(
    argv: list[str], keys: list[bytes], wait_for: bytes = b"[y/n] ", env: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Run ``argv`` on a pseudo-terminal of its own; each time the prompt ``wait_for`` shows, type the
    next of ``keys`` (through the line discipline: Ctrl-C is SIGINT, Ctrl-D the end of input). Returns
    the exit code and everything the terminal showed."""
    import pty
    import select
    import signal
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: on a terminal of its own
        os.execve(argv[0], argv, {**os.environ, **(env or {})})
    seen, typed = b"", 0
    deadline = time.monotonic() + 30
    while True:
        if not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            os.kill(pid, signal.SIGKILL)  # a prompt that never came (or an answer never taken): fail, do not hang
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        while typed < len(keys) and seen.count(wait_for) > typed:
            os.write(fd, keys[typed])
            typed += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen
