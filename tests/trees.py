"""Build file trees for ``--root``: a host's /etc, the tools detection looks for, sysfs and proc."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mlxfix.cli import app

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
            else:
                out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process through typer's runner: (exit code, stdout, stderr)."""
    runner = CliRunner()
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
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
        env=full_env,
        timeout=timeout,
        check=False,
    )


def json_of(out: str) -> dict[str, object]:
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc
