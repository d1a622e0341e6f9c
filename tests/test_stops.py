"""The admin's session drops, mlxfix is killed, its output pipe breaks: during a local apply with the
real update-grub (issue 18, item 21). Before the change is complete it is put back, after it is let
complete; mlxfix goes on without a terminal, says in the system log what became of the change, and
exits 129 (hang-up), 143 (SIGTERM) or 141 (broken pipe).

Each run is in a private mount namespace (see tests/boot/test_update_grub.py) with a grub.d of its
own: Debian's scripts and one more, 05_slow, which on its first run waits for the test (so that the
stop lands while update-grub runs) and on later runs (the restore's) does not. /dev there is a copy
whose ``log`` is a datagram socket this test reads: the system log, as journald's /dev/log is one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.boot.test_update_grub import linux_lines, make_sandbox

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.root, pytest.mark.slow]
P = "pci=realloc=off"

NAMESPACE = r"""
set -e
mount --make-rprivate /
mount --bind "$SANDBOX/default" /etc/default
mount --bind "$SANDBOX/boot" /boot
mount --bind "$SANDBOX/state" /var/lib/mlxfix
mount --bind "$SANDBOX/grub.d" /etc/grub.d
# /dev, with the system log's socket: a tmpfs of binds of the real devices, and "log"
dev=$SANDBOX/dev
mount -t tmpfs -o mode=0755 mlxfix-test-dev "$dev"
for f in /dev/*; do
    n=${f#/dev/}
    if [ "$n" = log ]; then continue
    elif [ -L "$f" ]; then cp -P "$f" "$dev/$n"
    elif [ -d "$f" ]; then mkdir "$dev/$n"; mount --rbind "$f" "$dev/$n"
    else : > "$dev/$n"; mount --bind "$f" "$dev/$n"
    fi
done
: > "$dev/log"; mount --bind "$SANDBOX/log.sock" "$dev/log"
mount --rbind "$dev" /dev
exec "$@"
"""

SLOW = r"""#!/bin/sh
# The first run waits (at most 60 s) for the test to stop mlxfix; later runs go straight through.
if [ ! -e "$MLXFIX_SLOW/reached" ]; then
    : > "$MLXFIX_SLOW/reached"
    echo "05_slow: waiting" >&2
    i=0
    while [ ! -e "$MLXFIX_SLOW/go" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    echo "05_slow: going on" >&2
fi
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """test_update_grub's sandbox (Debian's defaults, a kernel in /boot, a state directory), with a grub.d
    of its own (Debian's scripts and 05_slow) and the mount points of the namespace's /dev."""
    sandbox = make_sandbox(tmp_path)
    (sandbox / "dev").mkdir()
    (sandbox / "slow").mkdir()
    shutil.copytree("/etc/grub.d", sandbox / "grub.d")
    (sandbox / "grub.d" / "05_slow").write_text(SLOW)
    (sandbox / "grub.d" / "05_slow").chmod(0o755)
    return sandbox


@pytest.fixture
def syslog(sandbox: Path) -> Iterator[socket.socket]:
    """The system log's socket, bound where the namespace's /dev/log points."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        log.bind(str(sandbox / "log.sock"))
        log.setblocking(False)
        yield log


def argv(*args: str) -> list[str]:
    return ["unshare", "-m", "sh", "-c", NAMESPACE, "sh", sys.executable, "-m", "mlxfix", *args]


def env(sandbox: Path, **more: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    full |= {"SANDBOX": str(sandbox), "MLXFIX_SLOW": str(sandbox / "slow"), "PYTHONPATH": str(Path(__file__).parents[1])}
    return full | more


def wait_for(path: Path, proc: subprocess.Popen[str] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc is None or proc.poll() is None, proc.communicate() if proc else None
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def received(log: socket.socket) -> list[str]:
    """What mlxfix sent to /dev/log so far (syslog's format: <PRI>TIMESTAMP mlxfix[PID]: MESSAGE)."""
    lines = []
    while True:
        try:
            lines.append(log.recv(65536).decode())
        except BlockingIOError:
            return lines


def assert_put_back(sandbox: Path, original: bytes) -> dict[str, object]:
    """The grub file is the original, grub.cfg was regenerated from it, nothing is left half-way;
    returns how the backup says its run ended."""
    assert (sandbox / "default" / "grub").read_bytes() == original
    normal, _ = linux_lines(sandbox)
    assert normal
    assert not any(P in ln for ln in normal), normal
    assert not (sandbox / "boot" / "grub" / "grub.cfg.new").exists()
    assert not (sandbox / "state" / "intent.json").exists()
    [backup] = (sandbox / "state" / "backups").iterdir()
    ending = json.loads((backup / "outcome.json").read_text())
    assert isinstance(ending, dict)
    assert ending["outcome"] == "failed-restored"
    return ending


def test_the_terminal_hanging_up_during_update_grub_puts_the_files_back(sandbox: Path, syslog: socket.socket) -> None:
    """The admin's SSH session drops: the kernel hangs up the terminal, SIGHUP reaches mlxfix and
    update-grub, and every later write to the terminal fails (EIO). mlxfix puts the original file
    back, regenerates grub.cfg from it (in a session of its own, out of the hang-up's reach), says
    so in the system log, and exits 129."""
    import pty

    original = (sandbox / "default" / "grub").read_bytes()
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own on the terminal, as a login shell's command is
        try:
            os.execvpe("unshare", argv("apply", "--yes", "--no-reboot"), env(sandbox))
        finally:
            os._exit(127)
    seen = b""
    deadline = time.monotonic() + 60
    while not (sandbox / "slow" / "reached").exists():  # update-grub runs, and waits in 05_slow
        assert time.monotonic() < deadline, seen
        import select

        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    assert b"running update-grub" in seen, seen
    os.close(fd)  # the terminal hangs up
    for _ in range(1200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("mlxfix did not end after the hang-up")
    assert os.waitstatus_to_exitcode(status) == 129, seen
    ending = assert_put_back(sandbox, original)
    assert "stopped: the terminal hung up (SIGHUP) during update-grub" in str(ending["detail"])
    [line] = [ln for ln in received(syslog) if "mlxfix[" in ln]
    assert line.startswith("<12>")  # user.warning (RFC 5424's facility 1 * 8 + severity 4)
    assert "apply pci=realloc=off on localhost: failed: stopped: the terminal hung up (SIGHUP) during update-grub" in line
    assert "the original files were restored from backup" in line


def test_sigterm_during_update_grub_puts_the_files_back_and_the_record_says_why(sandbox: Path, syslog: socket.socket) -> None:
    """``kill PID`` (or a service manager stopping its unit) reaches mlxfix alone: it stops
    update-grub itself, writes why into the intent record before it restores (should the restore be
    cut off too, the next run says it), restores, and exits 143."""
    original = (sandbox / "default" / "grub").read_bytes()
    pause = sandbox / "pause"
    proc = subprocess.Popen(
        argv("apply", "--yes", "--no-reboot"),
        env=env(sandbox, MLXFIX_TEST_PAUSE_AT=f"restoring:{pause}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(sandbox / "slow" / "reached", proc)
    proc.send_signal(signal.SIGTERM)  # unshare and sh exec'd: this is mlxfix
    wait_for(Path(f"{pause}.reached"), proc)
    intent = json.loads((sandbox / "state" / "intent.json").read_text())
    assert intent["stopped"] == "stopped: mlxfix was asked to terminate (SIGTERM) during update-grub"
    Path(f"{pause}.go").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "mlxfix was asked to terminate (SIGTERM) during update-grub" in err
    assert_put_back(sandbox, original)
    assert any("failed: stopped: mlxfix was asked to terminate (SIGTERM)" in ln for ln in received(syslog))


def test_a_broken_output_pipe_during_update_grub_puts_the_files_back(sandbox: Path, syslog: socket.socket) -> None:
    """``mlxfix apply --yes | tee log`` whose tee died: the next line mlxfix writes fails with EPIPE.
    It used to end in a silent exit 1 with update-grub killed and nothing restored."""
    original = (sandbox / "default" / "grub").read_bytes()
    reader, writer = os.pipe()
    proc = subprocess.Popen(
        argv("apply", "--yes", "--no-reboot"), env=env(sandbox), stdout=writer, stderr=subprocess.PIPE, text=True
    )
    os.close(writer)
    wait_for(sandbox / "slow" / "reached", proc)
    os.close(reader)  # the reader goes away
    (sandbox / "slow" / "go").touch()  # 05_slow prints a line: mlxfix's stream of it breaks
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert "Traceback" not in err
    assert "stopped: the reader of mlxfix's output went away (EPIPE, a broken pipe) during update-grub" in err
    assert "the original files were restored from backup" in err
    assert_put_back(sandbox, original)
    assert any("failed: stopped: the reader of mlxfix's output went away" in ln for ln in received(syslog))


def test_a_hang_up_after_the_change_is_complete_lets_it_complete(sandbox: Path, syslog: socket.socket) -> None:
    """Once grub.cfg is regenerated and flushed, a SIGHUP changes nothing: the change stays, the
    exit code is 0, and the system log says the terminal went away after it was complete."""
    pause = sandbox / "pause"
    (sandbox / "slow" / "reached").touch()  # 05_slow goes straight through
    proc = subprocess.Popen(
        argv("apply", "--yes", "--no-reboot"),
        env=env(sandbox, MLXFIX_TEST_PAUSE_AT=f"done:{pause}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(Path(f"{pause}.reached"), proc)
    os.killpg(proc.pid, signal.SIGHUP)
    time.sleep(0.2)
    Path(f"{pause}.go").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Done" in out
    normal, _ = linux_lines(sandbox)
    assert normal
    assert all(P in ln for ln in normal)
    [line] = [ln for ln in received(syslog) if "mlxfix[" in ln]
    assert "apply pci=realloc=off on localhost: done (backup " in line
    assert "after the change was complete: the terminal hung up (SIGHUP), and it was left to complete" in line
