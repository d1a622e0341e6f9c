"""A private OpenSSH server on 127.0.0.1 for the remote tests: a free port, a temporary host key,
key-only root login, no PAM; stopped by its pid."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


class Sshd:
    def __init__(self, wrapper: list[str] | None = None) -> None:
        """``wrapper``: a command prefix that execs sshd (a mount namespace, for a sandboxed target)."""
        if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
            pytest.fail("needs root and Debian's openssh-server (.ci/run installs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="mlxfix-sshd-"))
        self.dir.chmod(0o755)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(self.dir / "host_key")], check=True)
        subprocess.run([*keygen, "-f", str(self.dir / "client_key")], check=True)
        subprocess.run([*keygen, "-f", str(self.dir / "stranger_key")], check=True)
        shutil.copy(self.dir / "client_key.pub", self.dir / "authorized_keys")
        host_pub = (self.dir / "host_key.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (self.dir / "empty_known_hosts").write_text("")
        (self.dir / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir / 'host_key'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {self.dir / 'sshd.pid'}\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n"
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        argv = ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")]
        self.proc = subprocess.Popen([*(wrapper or []), *argv], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        pytest.fail("sshd did not start")

    @property
    def target(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def options(self, known_hosts: str = "known_hosts", key: str = "client_key") -> list[str]:
        """mlxfix's --ssh-option arguments for this server."""
        opts = [
            f"IdentityFile={self.dir / key}",
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={self.dir / known_hosts}",
            "LogLevel=ERROR",
        ]
        return [a for o in opts for a in ("--ssh-option", o)]

    def ssh_argv(self) -> list[str]:
        """The plain ``ssh`` command to this server (the baseline of the benchmarks)."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.dir / "client_key"), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.dir / 'known_hosts'}", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1",
        ]  # fmt: skip

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
