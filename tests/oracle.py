"""The oracle: what /bin/sh computes when it sources grub defaults files, as grub-mkconfig does.

Files are sourced in a clean environment (``env -i``) with a PATH of harmless stubs, stdin from
/dev/null and a time limit; the values are printed by an EXIT trap so that a file that calls ``exit``
still reports. Real and mutated files may redirect output anywhere (``> /boot/grub/custom.cfg``, a
mutated ``2> /dev/nul``): as root, sh runs as nobody on copies in a directory of its own, so that
what they write cannot land on the machine running the tests.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

UNSET = "\x01unset\x01"
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = {"IFS", "PATH", "PPID", "PWD", "OPTIND", "PS1", "PS2", "PS4", "HOME", "OLDPWD"}

# Read-only tools the corpus files call inside $( ) and backticks; anything else is "not found".
_HARMLESS = ("sed", "awk", "cat", "grep", "tr", "cut", "head", "tail", "uname", "basename", "dirname", "id", "stat")


@cache
def stub_path() -> str:
    """A directory of harmless commands, used as PATH while sourcing."""
    d = Path(tempfile.mkdtemp(prefix="mlxfix-stubs-"))
    d.chmod(0o755)  # nobody runs them
    for tool in _HARMLESS:
        for prefix in ("/usr/bin", "/bin"):
            if os.path.exists(f"{prefix}/{tool}"):
                (d / tool).symlink_to(f"{prefix}/{tool}")
                break
    lsb = d / "lsb_release"
    lsb.write_text("#!/bin/sh\necho Debian\n")
    lsb.chmod(lsb.stat().st_mode | stat.S_IXUSR)
    return str(d)


def names_in(datas: Iterable[bytes]) -> list[str]:
    """Every identifier in the files: a superset of the variables they can set."""
    found: set[str] = set()
    for data in datas:
        found.update(m.group(0).decode() for m in _IDENT.finditer(data))
    return sorted(found - _SPECIAL)


def sh_values(paths: Sequence[Path | str], names: Sequence[str]) -> dict[str, str | None]:
    """Source ``paths`` in order with /bin/sh; return each name's value (None when unset)."""
    printers = "".join(f'printf "%s\\0" "${{{n}-{UNSET}}}"; ' for n in names)
    with tempfile.TemporaryDirectory(prefix="mlxfix-oracle-") as work:
        os.chmod(work, 0o755)
        copies = []
        for i, p in enumerate(paths):
            copy = Path(work) / f"{i}-{Path(p).name}"
            copy.write_bytes(Path(p).read_bytes())
            copy.chmod(0o644)
            copies.append(copy)
        sources = "".join(f". '{c}'; " for c in copies)
        script = f"trap '{printers}' EXIT; {sources}"
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        proc = subprocess.run(
            [*nobody, "env", "-i", f"PATH={stub_path()}", "/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
            cwd=work,
        )
    values = proc.stdout.decode("latin-1").split("\0")
    assert len(values) == len(names) + 1, (proc.returncode, proc.stderr[-500:])
    return {n: (None if v == UNSET else v) for n, v in zip(names, values, strict=False)}


def sh_accepts(path: Path | str) -> bool:
    """Whether ``sh -n`` parses the file (``-n`` runs nothing)."""
    return subprocess.run(["/bin/sh", "-n", str(path)], capture_output=True, check=False).returncode == 0
