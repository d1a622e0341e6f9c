"""apply and rollback with Debian's real update-grub, inside a private mount namespace.

``unshare -m`` gives the test its own mounts: a sandbox directory is bind-mounted over /etc/default
(the directory, not the file: renaming onto a bind-mounted file fails with EBUSY), another over /boot
holding dummy kernels, and one over /var/lib/mlxfix for the backups. The real update-grub then writes
a real grub.cfg, and the test reads its ``linux`` lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.trees import json_of

if TYPE_CHECKING:
    from tests.sshd import Sshd

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEBIAN_GRUB = Path("/usr/share/grub/default/grub")
KERNEL = "6.1.0-9-amd64"

NAMESPACE = r"""
set -e
mount --make-rprivate /
mount --bind "$SANDBOX/default" /etc/default
mount --bind "$SANDBOX/boot" /boot
mount --bind "$SANDBOX/state" /var/lib/mlxfix
exec "$@"
"""


def _require() -> None:
    if os.geteuid() != 0 or not shutil.which("update-grub") or not DEBIAN_GRUB.exists():
        pytest.fail("needs root and Debian's grub2-common (.ci/run installs it)")


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    return make_sandbox(tmp_path)


def make_sandbox(tmp_path: Path) -> Path:
    """Debian's defaults, a kernel and an initrd in /boot, a state directory: what update-grub needs."""
    _require()
    (tmp_path / "default" / "grub.d").mkdir(parents=True)
    shutil.copy(DEBIAN_GRUB, tmp_path / "default" / "grub")
    (tmp_path / "boot" / "grub").mkdir(parents=True)
    (tmp_path / "boot" / f"vmlinuz-{KERNEL}").write_bytes(b"\x00" * 64)
    (tmp_path / "boot" / f"initrd.img-{KERNEL}").write_bytes(b"\x00" * 64)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "bin").mkdir()
    Path("/var/lib/mlxfix").mkdir(parents=True, exist_ok=True)  # the mount point; stays empty
    return tmp_path


def mlxfix(
    sandbox: Path, *args: str, path_prefix: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    full_env["SANDBOX"] = str(sandbox)
    full_env["PATH"] = f"{path_prefix}:{os.environ['PATH']}" if path_prefix else os.environ["PATH"]
    full_env["PYTHONPATH"] = str(Path(__file__).parents[2])
    full_env.update(env or {})
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", NAMESPACE, "sh", sys.executable, "-m", "mlxfix", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        check=False,
    )


def linux_lines(sandbox: Path) -> tuple[list[str], list[str]]:
    """The ``linux`` lines of the generated grub.cfg: (normal entries, recovery entries)."""
    cfg = (sandbox / "boot" / "grub" / "grub.cfg").read_text()
    normal, recovery = [], []
    entry = ""
    for line in cfg.splitlines():
        if line.lstrip().startswith("menuentry "):
            entry = line
        if line.strip().startswith("linux\t") or line.strip().startswith("linux "):
            (recovery if "recovery mode" in entry else normal).append(line.strip())
    return normal, recovery


def test_apply_then_rollback_with_the_real_update_grub(sandbox: Path) -> None:
    original = (sandbox / "default" / "grub").read_bytes()
    proc = mlxfix(sandbox, "apply", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert doc["changed"] is True
    [cmd] = doc["commands"]  # type: ignore[misc]
    assert cmd["argv"] == ["update-grub"]
    assert cmd["ran"] is True
    assert cmd["exit_code"] == 0
    assert "done" in cmd["output_tail"]  # update-grub's own output is reported
    normal, recovery = linux_lines(sandbox)
    assert normal, "update-grub generated no linux lines"
    assert all("pci=realloc=off" in ln for ln in normal)
    assert recovery
    assert not any("pci=realloc=off" in ln for ln in recovery)  # GRUB never puts _DEFAULT there
    assert b'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"' in (sandbox / "default" / "grub").read_bytes()

    proc = mlxfix(sandbox, "rollback", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (sandbox / "default" / "grub").read_bytes() == original
    normal, _ = linux_lines(sandbox)
    assert normal
    assert not any("pci=realloc=off" in ln for ln in normal)


def test_mlxfix_own_drop_in_reaches_the_real_update_grub(sandbox: Path) -> None:
    """A value only sh can compute (an if that may replace it): mlxfix's own last drop-in appends the
    parameter, and Debian's real grub-mkconfig puts it on every normal linux line."""
    grub_d = sandbox / "default" / "grub.d"
    (grub_d / "maybe.cfg").write_text('if [ -e /nonexistent ]; then GRUB_CMDLINE_LINUX_DEFAULT="nomodeset"; fi\n')
    proc = mlxfix(sandbox, "apply", "--yes", "--boot-setup", "grub-debian", "--no-reboot")
    assert proc.returncode == 0, proc.stderr
    assert (grub_d / "zz-mlxfix.cfg").exists()
    normal, _ = linux_lines(sandbox)
    assert normal
    assert all(ln.endswith("pci=realloc=off") for ln in normal)
    again = mlxfix(sandbox, "apply", "--yes", "--boot-setup", "grub-debian", "--no-reboot")
    assert "already in place" in again.stdout, again.stdout + again.stderr
    proc = mlxfix(sandbox, "rollback", "--yes", "--no-reboot")
    assert proc.returncode == 0, proc.stderr
    assert not (grub_d / "zz-mlxfix.cfg").exists()
    normal, _ = linux_lines(sandbox)
    assert not any("pci=realloc=off" in ln for ln in normal)


def _failing_update_grub(sandbox: Path, times: int) -> str:
    """An update-grub first on PATH that fails ``times`` times, then runs the real one."""
    counter = sandbox / "bin" / "failures"
    counter.write_text("0")
    script = sandbox / "bin" / "update-grub"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(cat {counter}); echo $((n + 1)) > {counter}\n"
        f'if [ "$n" -lt {times} ]; then echo "grub-probe: error: simulated failure" >&2; exit 1; fi\n'
        'exec /usr/sbin/update-grub "$@"\n'
    )
    script.chmod(0o755)
    return str(sandbox / "bin")


def test_failing_regeneration_restores_the_original_bytes(sandbox: Path) -> None:
    original = (sandbox / "default" / "grub").read_bytes()
    assert mlxfix(sandbox, "rollback", "--yes").returncode != 0  # no backup yet: nothing to restore
    bin_dir = _failing_update_grub(sandbox, times=1)
    proc = mlxfix(sandbox, "apply", "--yes", "--json", path_prefix=bin_dir)
    assert proc.returncode == 1, proc.stderr
    doc = json_of(proc.stdout)
    assert doc["changed"] is False
    assert "update-grub failed with exit code 1" in doc["errors"][0]  # type: ignore[index]
    assert "simulated failure" in doc["errors"][0]  # type: ignore[index]
    assert "restored" in doc["errors"][0]  # type: ignore[index]
    assert [c["exit_code"] for c in doc["commands"]] == [1, 0]  # type: ignore[union-attr]  # failed, then re-run on the restored files
    assert (sandbox / "default" / "grub").read_bytes() == original
    normal, _ = linux_lines(sandbox)
    assert not any("pci=realloc=off" in ln for ln in normal)
    assert not (sandbox / "state" / "intent.json").exists()


def test_regeneration_that_keeps_failing_leaves_the_original_state(sandbox: Path) -> None:
    """update-grub that always fails: the files are restored, and grub.cfg was never replaced (grub-mkconfig
    writes grub.cfg.new and moves it only on success), so the host is as it was: exit 1, not 3."""
    original = (sandbox / "default" / "grub").read_bytes()
    assert mlxfix(sandbox, "apply", "--yes").returncode == 0  # a real grub.cfg from the real update-grub,
    assert mlxfix(sandbox, "rollback", "--yes").returncode == 0  # made from the original files again
    cfg = sandbox / "boot" / "grub" / "grub.cfg"
    cfg_before = cfg.read_bytes()
    bin_dir = _failing_update_grub(sandbox, times=99)
    proc = mlxfix(sandbox, "apply", "--yes", "--json", path_prefix=bin_dir)
    assert proc.returncode == 1, proc.stderr
    doc = json_of(proc.stdout)
    assert doc["changed"] is False
    assert [c["exit_code"] for c in doc["commands"]] == [1, 1]  # type: ignore[union-attr]
    assert "fails on the original files too" in doc["errors"][0]  # type: ignore[index]
    assert "NOT in its original state" not in proc.stderr
    assert (sandbox / "default" / "grub").read_bytes() == original
    assert cfg.read_bytes() == cfg_before
    assert not (sandbox / "state" / "intent.json").exists()


def test_reboot_runs_only_when_asked(sandbox: Path) -> None:
    record = sandbox / "rebooted"
    recorder = sandbox / "bin" / "fake-reboot"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    recorder.chmod(0o755)
    env = {"MLXFIX_REBOOT_COMMAND": f"{recorder} --in 5s"}
    proc = mlxfix(sandbox, "apply", "--yes", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc.stdout)["rebooting"] is False
    assert not record.exists()  # no terminal, no --reboot: never
    assert mlxfix(sandbox, "rollback", "--yes", "--no-reboot", env=env).returncode == 0
    assert not record.exists()
    proc = mlxfix(sandbox, "apply", "--yes", "--reboot", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc.stdout)["rebooting"] is True
    assert record.read_text() == "--in 5s\n"


def test_a_killed_regeneration_restores_the_files(sandbox: Path) -> None:
    original = (sandbox / "default" / "grub").read_bytes()
    killer = sandbox / "bin" / "update-grub"
    killer.write_text("#!/bin/sh\necho 'Generating grub configuration file ...'\nkill -9 $$\n")
    killer.chmod(0o755)
    proc = mlxfix(sandbox, "apply", "--yes", path_prefix=str(sandbox / "bin"))
    assert proc.returncode == 3, proc.stderr  # killed again when re-run on the restored files
    assert "exit code -9" in proc.stderr
    assert (sandbox / "default" / "grub").read_bytes() == original


def test_mlxfix_killed_during_the_regeneration_is_finished_by_the_next_run(sandbox: Path) -> None:
    """The crash point "during the regeneration": update-grub kills mlxfix (its parent) and carries on."""
    wrapper = sandbox / "bin" / "update-grub"
    wrapper.write_text('#!/bin/sh\nkill -9 $PPID\nexec /usr/sbin/update-grub "$@"\n')
    wrapper.chmod(0o755)
    proc = mlxfix(sandbox, "apply", "--yes", path_prefix=str(sandbox / "bin"))
    assert proc.returncode == -9
    assert (sandbox / "state" / "intent.json").exists()  # the next run will know
    wrapper.unlink()
    proc = mlxfix(sandbox, "apply", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    assert [c["argv"] for c in doc["commands"]] == [["update-grub"]]  # type: ignore[index]  # regenerated again
    assert not (sandbox / "state" / "intent.json").exists()
    normal, _ = linux_lines(sandbox)
    assert normal
    assert all("pci=realloc=off" in ln for ln in normal)


def test_a_failed_finish_keeps_the_interrupted_apply_on_record(sandbox: Path) -> None:
    """Killed during the regeneration, then a re-run whose update-grub fails: the apply is still
    unfinished, and the next run (with a working update-grub) must still know to finish it."""
    wrapper = sandbox / "bin" / "update-grub"
    wrapper.write_text('#!/bin/sh\nkill -9 $PPID\nexec /usr/sbin/update-grub "$@"\n')
    wrapper.chmod(0o755)
    assert mlxfix(sandbox, "apply", "--yes", path_prefix=str(sandbox / "bin")).returncode == -9
    record = (sandbox / "state" / "intent.json").read_bytes()
    bin_dir = _failing_update_grub(sandbox, times=99)
    proc = mlxfix(sandbox, "apply", "--yes", path_prefix=bin_dir)
    assert proc.returncode == 1, proc.stderr
    assert "still unfinished" in proc.stderr
    assert (sandbox / "state" / "intent.json").read_bytes() == record
    (sandbox / "bin" / "update-grub").unlink()
    proc = mlxfix(sandbox, "apply", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [c["argv"] for c in json_of(proc.stdout)["commands"]] == [["update-grub"]]  # type: ignore[index]
    assert not (sandbox / "state" / "intent.json").exists()
    normal, _ = linux_lines(sandbox)
    assert all("pci=realloc=off" in ln for ln in normal)


@pytest.mark.parametrize("code", [127, 129])
def test_a_regeneration_that_exits_127_or_129_left_the_host_as_it_was(sandbox: Path, code: int) -> None:
    """127 is "command not found" (grub-mkconfig sourcing ``X = "quiet"`` stops with it), 129 an exit
    like any other: neither is a signal (the wait status says so), so update-grub stopped before it
    replaced grub.cfg: exit 1, the files restored, no intent record left to warn on every later run."""
    original = (sandbox / "default" / "grub").read_bytes()
    failing = sandbox / "bin" / "update-grub"
    failing.write_text(f'#!/bin/sh\necho "/etc/default/grub: 9: GRUB_CMDLINE_LINUX_DEFAULT: not found" >&2\nexit {code}\n')
    failing.chmod(0o755)
    proc = mlxfix(sandbox, "apply", "--yes", "--json", path_prefix=str(sandbox / "bin"))
    assert proc.returncode == 1, proc.stderr
    doc = json_of(proc.stdout)
    assert [c["exit_code"] for c in doc["commands"]] == [code, code]  # type: ignore[union-attr]
    assert "NOT in its original state" not in proc.stderr
    assert "fails on the original files too" in doc["errors"][0]  # type: ignore[index]
    assert (sandbox / "default" / "grub").read_bytes() == original
    assert not (sandbox / "state" / "intent.json").exists()


def noop_update_grub_sshd(sandbox: Path) -> Sshd:
    """An sshd whose sessions see the sandbox (make_sandbox) as /etc/default, /boot and
    /var/lib/mlxfix, and a no-op update-grub (a test may rewrite sandbox/update-grub)."""
    from tests.sshd import Sshd

    (sandbox / "update-grub").write_text("#!/bin/sh\nexit 0\n")
    (sandbox / "update-grub").chmod(0o755)
    script = (
        "set -e; mount --make-rprivate /\n"
        f"mount --bind {sandbox}/default /etc/default\nmount --bind {sandbox}/boot /boot\n"
        f"mount --bind {sandbox}/state /var/lib/mlxfix\nmount --bind {sandbox}/update-grub /usr/sbin/update-grub\n"
        'exec "$@"'
    )
    return Sshd(wrapper=["unshare", "-m", "sh", "-c", script, "sh"])


@pytest.fixture
def sshd_with_update_grub(sandbox: Path):  # yields (Sshd, sandbox): sessions see the sandbox, update-grub replaced
    server = noop_update_grub_sshd(sandbox)
    yield server, sandbox
    server.stop()


@pytest.mark.parametrize(("body", "code", "exit_code"), [("exit 127", 127, 1), ("exit 129", 129, 1), ("kill -HUP $$", 129, 3)])
def test_over_ssh_a_signal_is_told_from_an_exit_code_by_the_wait_status(
    sshd_with_update_grub: tuple[object, Path], body: str, code: int, exit_code: int
) -> None:
    """Over --host too: sh says 129 for an exit 129 and for SIGHUP alike; the target's wrapper asks the
    wait status. A plain failure leaves the host as it was (1); a signal voids that promise (3)."""
    from tests.sshd import Sshd
    from tests.trees import run

    server, sandbox = sshd_with_update_grub
    assert isinstance(server, Sshd)
    original = (sandbox / "default" / "grub").read_bytes()
    (sandbox / "update-grub").write_text(f"#!/bin/sh\necho 'Generating grub configuration file ...'\n{body}\n")
    proc = run("apply", "--yes", "--json", "--host", server.target, *server.options(), timeout=120)
    assert proc.returncode == exit_code, proc.stderr
    doc = json_of(proc.stdout)
    assert [c["exit_code"] for c in doc["commands"]] == [code, code]  # type: ignore[union-attr]
    assert (sandbox / "default" / "grub").read_bytes() == original
    assert (sandbox / "state" / "intent.json").exists() == (exit_code == 3)
    assert "| 0" not in proc.stderr  # (issue 18, item 10) no stray exit-code marker after the output


def test_over_ssh_a_status_wrapper_killed_without_a_word_is_no_success(sshd_with_update_grub: tuple[object, Path]) -> None:
    """update-grub kills the wrapper that waits for it (perl, its parent) with SIGKILL: no status is
    ever written. The silence is no exit 0, nor a plain failure that left grub.cfg as it was (the
    orphaned update-grub may still be writing): read as the shell's guess, a signal (exit 3), with
    the files restored and the steps left to the admin."""
    from tests.sshd import Sshd
    from tests.trees import run

    server, sandbox = sshd_with_update_grub
    assert isinstance(server, Sshd)
    original = (sandbox / "default" / "grub").read_bytes()
    (sandbox / "update-grub").write_text("#!/bin/sh\necho 'Generating grub configuration file ...'\nkill -KILL $PPID\nsleep 1\n")
    proc = run("apply", "--yes", "--json", "--host", server.target, *server.options(), timeout=120)
    assert proc.returncode == 3, proc.stderr
    doc = json_of(proc.stdout)
    assert [c["exit_code"] for c in doc["commands"]] == [137, 137]  # type: ignore[union-attr]
    assert "the boot configuration may not match the files" in doc["errors"][0]  # type: ignore[index]
    assert (sandbox / "default" / "grub").read_bytes() == original
    assert (sandbox / "state" / "intent.json").exists()


def test_over_ssh_apply_and_rollback_take_at_most_six_round_trips_after_the_login(
    sshd_with_update_grub: tuple[object, Path],
) -> None:
    """(issue 17) On a running target, after the login: the batched read, the lock (with the read
    under it), the transaction, the regeneration (with its sync and the read-back), the record of how
    it ended. The files are the edited ones after apply and the original ones after rollback, and
    nothing is left behind (no intent record, no temp file)."""
    from tests.sshd import Sshd
    from tests.trees import run

    server, sandbox = sshd_with_update_grub
    assert isinstance(server, Sshd)
    original = (sandbox / "default" / "grub").read_bytes()
    applied = run("apply", "--yes", "--json", "--host", server.target, *server.options(), timeout=120)
    assert applied.returncode == 0, applied.stderr
    doc = json_of(applied.stdout)
    assert doc["ssh"] == {"connections": 1, "round_trips": 6}, doc["ssh"]
    assert [c["argv"] for c in doc["commands"]] == [["update-grub"]]  # type: ignore[union-attr]
    assert b"pci=realloc=off" in (sandbox / "default" / "grub").read_bytes()
    assert "flushed the regenerated boot configuration to disk (sync)" in applied.stderr
    back = run("rollback", "--yes", "--json", "--host", server.target, *server.options(), timeout=120)
    assert back.returncode == 0, back.stderr
    assert json_of(back.stdout)["ssh"] == {"connections": 1, "round_trips": 6}
    assert (sandbox / "default" / "grub").read_bytes() == original
    assert not (sandbox / "state" / "intent.json").exists()
    assert not [p for p in (sandbox / "default").iterdir() if ".mlxfix-" in p.name]


def test_a_dry_run_with_no_update_says_the_regeneration_is_the_admins(sandbox: Path) -> None:
    """(issue 18, item 13) On a running system: with --no-update the dry run does not say the change
    would take effect after a reboot; without it, it does (update-grub would run)."""
    plain = mlxfix(sandbox, "apply", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.rstrip().endswith("The change would take effect only after a reboot.")
    proc = mlxfix(sandbox, "apply", "--dry-run", "--no-update")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("The files alone would not reach the next boot: that takes update-grub, then a reboot.")
    assert "--no-update: the boot configuration would not be regenerated; run: update-grub" in proc.stdout


def test_in_a_vm_the_reboot_question_says_again_where_the_fix_belongs(sandbox: Path) -> None:
    """(issue 18, item 16) apply in a guest: the plan warns before the first question, and the reboot
    question is preceded by the same reminder. The guest is made one for sure: its /proc/cpuinfo
    (bound over the real one in the namespace) has the hypervisor flag."""
    from tests.trees import on_a_terminal

    cpuinfo = sandbox / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lm\n")
    script = NAMESPACE.replace('exec "$@"', f'mount --bind {cpuinfo} /proc/cpuinfo\nexec "$@"')
    env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    env |= {"SANDBOX": str(sandbox), "PYTHONPATH": str(Path(__file__).parents[2]), "TERM": "dumb"}
    argv = [shutil.which("unshare") or "unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "mlxfix", "apply"]
    code, seen = on_a_terminal(argv, [b"y\n", b"n\n"], env=env)
    text = seen.decode("utf-8", "replace").replace("\r\n", "\n")
    assert code == 0, text
    first, _, rest = text.partition("Apply these changes? [y/n] ")
    assert "warning: this host is a VM" in first
    assert "the fix belongs on the hypervisor host's kernel command line" in first
    before_reboot = rest.partition("Reboot now? [y/n] ")[0]
    assert "Remember: this host is a VM" in before_reboot, text
    assert "Not rebooting." in rest
