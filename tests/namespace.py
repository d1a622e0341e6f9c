"""Run mlxfix as if on a real host, inside a private mount namespace (``unshare -m``).

Sandbox directories are bind-mounted over the host's /etc/default, /etc/kernel, /boot... so that the
real boot tools (update-grub, grub-mkconfig, kernel-install) and mlxfix itself work on them without
touching this machine's own files. Bind the directory, never a file that mlxfix replaces: renaming
onto a bind-mounted file fails with EBUSY.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
set -e
mount --make-rprivate /
while [ "$1" != "--" ]; do
    mount --bind "$1" "$2"
    shift 2
done
shift
exec "$@"
"""

STATE = "/var/lib/mlxfix"


def require_root() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("needs root and unshare (CI runs as root)")


def run(
    binds: dict[str, Path],
    *args: str,
    env: dict[str, str] | None = None,
    path_prefix: str | None = None,
    mask: tuple[str, ...] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m mlxfix ARGS`` with ``binds`` (host path -> sandbox dir) mounted and the files in
    ``mask`` hidden behind /dev/null (so that ``which`` does not find those tools)."""
    require_root()
    pairs: list[str] = []
    for target, source in binds.items():
        Path(target).mkdir(parents=True, exist_ok=True)  # the mount point; it stays empty outside
        pairs += [str(source), target]
    for target in mask:
        if Path(target).exists():
            pairs += ["/dev/null", target]
    full_env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    full_env["PYTHONPATH"] = str(Path(__file__).parents[1])
    if path_prefix:
        full_env["PATH"] = f"{path_prefix}:{os.environ['PATH']}"
    full_env.update(env or {})
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", SCRIPT, "sh", *pairs, "--", sys.executable, "-m", "mlxfix", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def state_dir(tmp: Path) -> Path:
    d = tmp / "state"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def tool(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path
