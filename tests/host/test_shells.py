"""Targets whose shell is not this machine's dash, and a login that talks (issue 18, "withstood"):
bash as sh (POSIX mode), BusyBox's ash as sh, and a ~/.bashrc that prints a banner on stdout for every
ssh command. Each target is the real sshd on 127.0.0.1 in a mount namespace where that shell is bound
over /bin/sh (or the banner over root's .bashrc); diagnose, the dry run, apply and rollback over --host
must give what they give locally, byte for byte."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLES
from tests.trees import json_of, run, snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.sshd import Sshd

pytestmark = [pytest.mark.root, pytest.mark.slow]

VOLATILE = {"host", "root", "backup", "mlxfix_version", "ssh"}
BANNER = "Welcome to pve1! Authorized use only."


def _shell(variant: str) -> tuple[str, str]:
    """(the mount for the sshd's namespace, what `sh` says it is there)."""
    if variant == "bash-posix":
        bash = shutil.which("bash")
        assert bash, "bash"
        return f"mount --bind {bash} /bin/sh", "bash"
    if variant == "busybox-ash":
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.fail("needs Debian's busybox (the README's test command installs it)")
        return f"mount --bind {busybox} /bin/sh", "BusyBox"
    assert variant == "banner"
    return "", ""


@pytest.fixture(scope="module", params=["bash-posix", "busybox-ash", "banner"])
def odd_sshd(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Sshd]]:
    from tests.namespace import require_root
    from tests.sshd import Sshd

    require_root()
    variant = request.param
    mount, _ = _shell(variant)
    if variant == "banner":
        rc = tmp_path_factory.mktemp("bashrc") / "bashrc"
        rc.write_text(f"{Path('/root/.bashrc').read_text() if Path('/root/.bashrc').exists() else ''}\necho '{BANNER}'\n")
        mount = f"mount --bind {rc} /root/.bashrc"
    script = f'set -e; mount --make-rprivate /; {mount}; exec "$@"'
    server = Sshd(wrapper=["unshare", "-m", "sh", "-c", script, "sh"])
    try:
        yield variant, server
    finally:
        server.stop()


def _timeless(text: str) -> str:
    """A backup's id and time differ between two runs; everything else must not."""
    text = re.sub(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}", "ID", text)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", "TIME", text)


def _over(server: Sshd, *args: str) -> subprocess.CompletedProcess[str]:
    return run(*args, "--host", server.target, *server.options())


def test_the_target_really_is_that_shell(odd_sshd: tuple[str, Sshd]) -> None:
    """The namespace did what the test claims: sh there is bash or BusyBox, or the login talks."""
    variant, server = odd_sshd
    probe = subprocess.run(
        [*server.ssh_argv(), "sh -c 'echo ${BASH_VERSION:+bash}; busybox 2>/dev/null | head -1; readlink -f /proc/$$/exe'"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    if variant == "banner":
        assert BANNER in probe.stdout
    else:
        assert _shell(variant)[1] in probe.stdout, probe.stdout


def test_diagnose_apply_and_rollback_match_the_local_run(odd_sshd: tuple[str, Sshd], tmp_path: Path) -> None:
    _, server = odd_sshd
    here, there = tmp_path / "here", tmp_path / "there"
    for root in (here, there):
        shutil.copytree(EXAMPLES / "pve-missing-uar", root, symlinks=True)
    for command in (
        ["diagnose", "--json"],
        ["apply", "--dry-run", "--json"],
        ["apply", "--yes", "--json"],
        ["rollback", "--yes", "--json"],
    ):
        mine = run(*command, "--root", str(here))
        over = _over(server, *command, "--root", str(there))
        assert over.returncode == mine.returncode, (command, over.stderr)
        local, remote = json_of(_timeless(mine.stdout)), json_of(_timeless(over.stdout))
        assert isinstance(local, dict)
        assert isinstance(remote, dict)
        assert {k: v for k, v in local.items() if k not in VOLATILE} == {k: v for k, v in remote.items() if k not in VOLATILE}, (
            command
        )
        assert remote["ssh"]["connections"] == 1  # type: ignore[index]
        assert {k: v for k, v in snapshot(there).items() if "var/lib/mlxfix" not in k} == {
            k: v for k, v in snapshot(here).items() if "var/lib/mlxfix" not in k
        }, command
    assert (there / "etc/default/grub").read_bytes() == (EXAMPLES / "pve-missing-uar/etc/default/grub").read_bytes()
