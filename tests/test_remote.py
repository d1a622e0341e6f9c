"""--host against a real sshd on 127.0.0.1: the same plan, bytes and JSON as on the local host, and
failures that name the host. The target side uses --root (a fixture tree on this machine)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLES
from tests.trees import json_of, run, snapshot, wait_for_pause

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.sshd import Sshd

pytestmark = [pytest.mark.root, pytest.mark.slow]

VOLATILE = {"host", "root", "backup", "mlxfix_version", "ssh"}


def tree(tmp_path: Path, name: str = "pve-missing-uar", example: str = "pve-missing-uar") -> Path:
    root = tmp_path / name
    shutil.copytree(EXAMPLES / example, root, symlinks=True)
    return root


def remote(
    sshd: Sshd, *args: str, env: dict[str, str] | None = None, target: str | None = None, options: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(*args, "--host", target or sshd.target, *(sshd.options() if options is None else options), env=env)


def same(local: dict[str, object], over: dict[str, object]) -> None:
    """Two JSON documents agree on everything but where they ran; the remote one went through one connection."""
    assert {k: v for k, v in local.items() if k not in VOLATILE} == {k: v for k, v in over.items() if k not in VOLATILE}
    assert local["ssh"] is None
    assert over["ssh"]["connections"] == 1  # type: ignore[index]


def test_diagnose_over_ssh_is_the_local_diagnosis(sshd: Sshd) -> None:
    for example in ("pve-missing-uar", "pve-fixed", "vm-passthrough-vf"):
        local = run("diagnose", "--json", "--root", str(EXAMPLES / example))
        over = remote(sshd, "diagnose", "--json", "--root", str(EXAMPLES / example))
        assert over.returncode == local.returncode, over.stderr
        same(json_of(local.stdout), json_of(over.stdout))


def test_a_looping_pci_device_entry_gives_the_same_verdict_locally_and_over_ssh(sshd: Sshd, tmp_path: Path) -> None:
    """A sysfs entry that is a symlink loop matches no glob, as in sh: locally it ended diagnose (exit 1)."""
    there = tree(tmp_path)
    (there / "sys/bus/pci/devices/0000:00:07.0").symlink_to("0000:00:07.0")
    local = run("diagnose", "--json", "--root", str(there))
    assert local.returncode == 10, local.stderr
    over = remote(sshd, "diagnose", "--json", "--root", str(there))
    assert over.returncode == 10, over.stderr
    same(json_of(local.stdout), json_of(over.stdout))


def test_a_hard_link_and_a_world_writable_grub_d_are_said_locally_and_over_ssh(sshd: Sshd, tmp_path: Path) -> None:
    """Issue 18, item 24: the atomic write breaks a hard link (the other name keeps the old bytes), and
    anyone may add a drop-in to a world-writable grub.d: both are warnings in the plan, wherever it runs."""
    there = tree(tmp_path)
    os.link(there / "etc/default/grub", there / "etc/default/grub.orig")
    (there / "etc/default/grub.d").mkdir()
    (there / "etc/default/grub.d").chmod(0o1777)
    local = run("apply", "--dry-run", "--json", "--root", str(there))
    assert local.returncode == 0, local.stderr
    over = remote(sshd, "apply", "--dry-run", "--json", "--root", str(there))
    assert over.returncode == 0, over.stderr
    for doc in (json_of(local.stdout), json_of(over.stdout)):
        assert isinstance(doc, dict)
        warnings = "\n".join(doc["warnings"])  # type: ignore[arg-type]
        assert "/etc/default/grub has 2 hard links" in warnings
        assert "/etc/default/grub.d is writable by every user (mode 1777)" in warnings
    same(json_of(local.stdout), json_of(over.stdout))


@pytest.mark.parametrize("local", [None, 'GRUB_CMDLINE_LINUX_DEFAULT="nomodeset"\n'])
def test_a_guarded_dot_is_judged_by_the_targets_file_in_one_more_read(sshd: Sshd, tmp_path: Path, local: str | None) -> None:
    """(issue 18, item 4) ``if test -f /etc/default/grub.local; then . ...; fi``: over --host the
    file the block reads comes from the target, in a read of its own, and the plan is the local one."""
    guarded = (
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
        "if test -f /etc/default/grub.local\nthen\n  . /etc/default/grub.local\nfi\n"
    )
    here, there = tree(tmp_path, "here"), tree(tmp_path, "there")
    for root in (here, there):
        (root / "etc/default/grub").write_text(guarded)
        (root / "etc/default/grub.d").mkdir(exist_ok=True)
        if local is not None:
            (root / "etc/default/grub.local").write_text(local)
    mine = run("apply", "--dry-run", "--json", "--root", str(here))
    over = remote(sshd, "apply", "--dry-run", "--json", "--root", str(there))
    assert over.returncode == 0, over.stderr
    same(json_of(mine.stdout), json_of(over.stdout))
    doc = json_of(over.stdout)
    assert doc["ssh"] == {"connections": 1, "round_trips": 3}  # the login, the batched read, the guarded file
    written = [f["path"] for f in doc["files"]]  # type: ignore[union-attr, index]
    assert written == (["/etc/default/grub.d/zz-mlxfix.cfg"] if local else ["/etc/default/grub"])


def test_dry_run_apply_rollback_backups_over_ssh_match_local(sshd: Sshd, tmp_path: Path) -> None:
    here, there = tree(tmp_path, "here"), tree(tmp_path, "there")
    local = run("apply", "--dry-run", "--json", "--root", str(here))
    over = remote(sshd, "apply", "--dry-run", "--json", "--root", str(there))
    assert over.returncode == 0, over.stderr
    same(json_of(local.stdout), json_of(over.stdout))
    assert json_of(over.stdout)["ssh"] == {"connections": 1, "round_trips": 2}  # the login, then one batched read
    assert snapshot(there) == snapshot(here)

    local = run("apply", "--yes", "--json", "--root", str(here))
    over = remote(sshd, "apply", "--yes", "--json", "--root", str(there))
    assert over.returncode == 0, over.stderr
    same(json_of(local.stdout), json_of(over.stdout))
    assert (there / "etc/default/grub").read_bytes() == (here / "etc/default/grub").read_bytes()
    assert b"pci=realloc=off" in (there / "etc/default/grub").read_bytes()
    backups = list((there / "var/lib/mlxfix/backups").iterdir())  # kept on the target
    assert len(backups) == 1
    assert (backups[0] / "0.orig").read_bytes() == (EXAMPLES / "pve-missing-uar/etc/default/grub").read_bytes()

    listed = json_of(remote(sshd, "backups", "--json", "--root", str(there)).stdout)
    assert [b["id"] for b in listed["backups"]] == [backups[0].name]  # type: ignore[index]

    again = remote(sshd, "apply", "--yes", "--json", "--root", str(there))
    assert json_of(again.stdout)["changed"] is False

    over = remote(sshd, "rollback", "--yes", "--json", "--root", str(there))
    assert over.returncode == 0, over.stderr
    assert (there / "etc/default/grub").read_bytes() == (EXAMPLES / "pve-missing-uar/etc/default/grub").read_bytes()
    assert (there / "etc/default/grub").stat().st_mode == (EXAMPLES / "pve-missing-uar/etc/default/grub").stat().st_mode


def test_human_reports_over_ssh_name_their_target(sshd: Sshd, tmp_path: Path) -> None:
    """A fleet's logs interleave hosts: each report names its target first, and its last line too."""
    there = tree(tmp_path)
    target = sshd.target
    for args, last in (
        (["diagnose"], None),
        (["status"], None),
        (["apply", "--dry-run"], f"Dry run on {target}: nothing was changed"),
        (["apply", "--yes"], f"Files written on {target}: pci=realloc=off applied in the files only"),  # --root: no update-grub
        (["apply", "--yes"], f"Nothing to do on {target}: pci=realloc=off is already in place"),
        (["backups"], None),
        (["verify"], None),
        (["rollback", "--yes"], f"Files written on {target}: pci=realloc=off rolled back in the files only"),
    ):
        p = remote(sshd, *args, "--root", str(there))
        assert "Traceback" not in p.stdout + p.stderr, p.stderr
        lines = p.stdout.splitlines()
        if args == ["status"]:  # one line without a terminal, for monitoring: the host in it
            assert lines[0].startswith(f"mlxfix status {target}: "), lines
            continue
        assert lines[0] == f"Target: {target}", (args, lines[:3])
        if last is not None:
            assert any(ln.startswith(last) for ln in lines), (args, lines[-4:])
    local = run("diagnose", "--root", str(there))
    assert "Target:" not in local.stdout  # the local host is not named: there is only one


def test_odd_file_names_and_bytes_arrive_intact(sshd: Sshd, tmp_path: Path) -> None:
    """The read script sends plain names as they are and everything else through base64: a drop-in
    whose name has a space, a colon and a byte that is not UTF-8, and a file of binary-ish bytes, are
    read as the local host reads them."""
    here, there = tree(tmp_path, "here"), tree(tmp_path, "there")
    for root in (here, there):
        dropins = root / "etc/default/grub.d"
        dropins.mkdir(parents=True, exist_ok=True)
        name = os.fsdecode(b"60-caf\xe9 x:y_z.cfg")
        (dropins / name).write_bytes(b'# \xff\xfe\r\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n')
        (dropins / "-plain_name.cfg").write_bytes(b"GRUB_TIMEOUT=3\n")
    local = run("apply", "--dry-run", "--json", "--root", str(here))
    over = remote(sshd, "apply", "--dry-run", "--json", "--root", str(there))
    assert over.returncode == local.returncode == 0, over.stderr
    same(json_of(local.stdout), json_of(over.stdout))
    assert "iommu=pt pci=realloc=off" in str(json_of(over.stdout)["cmdline"])
    [edited] = json_of(over.stdout)["files"]  # type: ignore[misc]  # the effective assignment is the drop-in's
    assert edited["path"] == "/etc/default/grub.d/60-caf\\xe9 x:y_z.cfg"  # JSON stays UTF-8; the odd byte shown
    diag = remote(sshd, "diagnose", "--json", "--root", str(there))
    assert json_of(diag.stdout)["ssh"]["round_trips"] <= 3  # type: ignore[index]  # login, facts, devices and log
    # And the real thing: the odd name written (atomically, on the target), then rolled back.
    original = snapshot(there / "etc")
    for root, host_args in ((here, ()), (there, ("--host", sshd.target, *sshd.options()))):
        applied = run("apply", "--yes", "--json", "--root", str(root), *host_args)
        assert applied.returncode == 0, applied.stderr
    assert snapshot(there / "etc") == snapshot(here / "etc") != original
    back = remote(sshd, "rollback", "--yes", "--root", str(there))
    assert back.returncode == 0, back.stderr
    assert snapshot(there / "etc") == original


HOSTILE_NAMES = [
    b"70-with space.cfg",
    b"70-new\nline.cfg",
    b"70-it's.cfg",
    b'70-say "hi".cfg',
    b"70-$(touch pwned).cfg",
    b"70-`touch pwned`.cfg",
    b"-70-leading-dash.cfg",
    b"70-caf\xe9.cfg",  # not UTF-8
    b"70-back\\slash;&|*?[x].cfg",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[2:-1])
def test_a_hostile_drop_in_name_is_edited_and_rolled_back_locally_and_over_ssh(sshd: Sshd, tmp_path: Path, name: bytes) -> None:
    """(issue 18, withstood) The effective assignment lives in a drop-in whose name is hostile to a
    shell: spaces, a newline, quotes, a command substitution, a leading dash, a byte that is not
    UTF-8, backslash and glob characters. Apply and rollback, locally and over --host, write exactly
    the same bytes to exactly that file, and no name is ever run."""
    here, there = tree(tmp_path, "here"), tree(tmp_path, "there")
    dropin = os.fsdecode(name)
    for root in (here, there):
        d = root / "etc/default/grub.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / dropin).write_bytes(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n')
    original = snapshot(there / "etc")
    for root, host_args in ((here, ()), (there, ("--host", sshd.target, *sshd.options()))):
        applied = run("apply", "--yes", "--json", "--root", str(root), *host_args)
        assert applied.returncode == 0, applied.stderr
        doc = json_of(applied.stdout)
        [written] = doc["files"]  # type: ignore[misc]  # that drop-in, and nothing else
        assert str(written["path"]).startswith("/etc/default/grub.d/")
        assert (
            root / "etc/default/grub.d" / dropin
        ).read_bytes() == b'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash pci=realloc=off"\n'
    assert snapshot(there / "etc") == snapshot(here / "etc") != original
    for root, host_args in ((here, ()), (there, ("--host", sshd.target, *sshd.options()))):
        back = run("rollback", "--yes", "--root", str(root), *host_args)
        assert back.returncode == 0, back.stderr
    assert snapshot(there / "etc") == snapshot(here / "etc") == original
    for where in (Path.cwd(), Path(pwd.getpwuid(os.getuid()).pw_dir), here, there, tmp_path):
        assert not (where / "pwned").exists(), where


def test_refusals_over_ssh_change_nothing(sshd: Sshd, tmp_path: Path) -> None:
    there = tree(tmp_path)
    (there / "etc/default/grub").write_text('if true; then\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nfi\n')
    before = snapshot(there)
    proc = remote(sshd, "apply", "--yes", "--root", str(there))
    assert proc.returncode == 1
    assert "/etc/default/grub:2" in proc.stderr
    assert snapshot(there) == before


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-host-key", "the host key is not known"),
        ("wrong-key", "authentication refused"),
        ("closed-port", "unreachable"),
    ],
)
def test_connection_failures_name_the_host(sshd: Sshd, case: str, message: str) -> None:
    target, options = sshd.target, sshd.options()
    if case == "unknown-host-key":
        options = sshd.options(known_hosts="empty_known_hosts")
    elif case == "wrong-key":
        options = sshd.options(key="stranger_key")
    else:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            target = f"root@127.0.0.1:{s.getsockname()[1]}"
    proc = remote(sshd, "diagnose", "--root", str(EXAMPLES / "pve-missing-uar"), target=target, options=options)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr
    if case == "unknown-host-key":
        assert (sshd.dir / "empty_known_hosts").read_text() == ""  # nothing was accepted silently


def test_not_root_and_no_sudo(sshd: Sshd, request: pytest.FixtureRequest) -> None:
    user = "mlxfixtest"
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-d", "/nonexistent", user], check=True)
    subprocess.run(["usermod", "-p", "*", user], check=True)  # no password, but not locked: sshd lets the key in
    # A tree the user can reach: not under pytest's own directory, which pytest keeps (and puts back) 0700.
    reachable = Path(tempfile.mkdtemp(prefix="mlxfix-nonroot-"))
    reachable.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(reachable, ignore_errors=True))
    there = tree(reachable)
    target = f"{user}@127.0.0.1:{sshd.port}"
    dry = remote(sshd, "apply", "--dry-run", "--root", str(there), target=target)
    assert dry.returncode == 0, dry.stderr  # reading needs no privilege
    before = snapshot(there)
    proc = remote(sshd, "apply", "--yes", "--root", str(there), target=target)
    assert proc.returncode == 1
    assert f"{target}, but the login is not root, and passwordless sudo is not available" in proc.stderr
    assert snapshot(there) == before
    assert remote(sshd, "apply", "--yes", "--root", str(there)).returncode == 0  # as root
    changed = snapshot(there)
    rollback = remote(sshd, "rollback", "--yes", "--root", str(there), target=target)
    assert rollback.returncode == 1
    assert f"the login on {target} is not root, and passwordless sudo is not available" in rollback.stderr
    assert snapshot(there) == changed


@pytest.mark.parametrize("step", ["after-backup", "write-before-rename", "write-after-rename", "after-write"])
def test_a_connection_killed_mid_apply_leaves_old_or_new_and_a_usable_rollback(sshd: Sshd, tmp_path: Path, step: str) -> None:
    there = tree(tmp_path)
    original = (there / "etc/default/grub").read_bytes()
    expected = original.replace(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', b'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"')
    marker = tmp_path / "pause"
    env = {"MLXFIX_TEST_PAUSE_AT": f"{step}:{marker}"}
    before = set(sshd.connection_pids())
    proc = subprocess.Popen(
        [*_mlxfix(), "apply", "--yes", "--root", str(there), "--host", sshd.target, *sshd.options()],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_pause(marker, proc)
    for pid in set(sshd.connection_pids()) - before:  # this apply's connection: kill its sshd
        os.kill(pid, signal.SIGKILL)
    Path(f"{marker}.go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err  # not restored over a new connection: the target's record says what to do
    assert "connection was lost in the middle of the change" in err, (proc.returncode, out, err)
    assert "rollback --host" in err
    assert "Traceback" not in err
    assert (there / "etc/default/grub").read_bytes() in (original, expected)  # old or new, never a mix
    leftovers = [p.name for p in (there / "etc/default").iterdir() if ".mlxfix-" in p.name]
    # A temp file may remain only if the connection died between writing it and the rename.
    assert not leftovers or step == "write-before-rename"
    rollback = remote(sshd, "rollback", "--yes", "--root", str(there))
    assert rollback.returncode == 0, rollback.stderr
    assert (there / "etc/default/grub").read_bytes() == original
    assert not (there / "var/lib/mlxfix/intent.json").exists()
    del out


@pytest.mark.parametrize("action", ["apply", "rollback"])
def test_a_connection_cut_before_any_step_of_the_transaction_leaves_old_or_new_and_a_usable_rollback(
    sshd: Sshd, tmp_path: Path, action: str
) -> None:
    """(issue 17) The change is one script on the target: held before each of its steps in turn
    (step-0, step-1, ... until a run passes them all), the connection is cut there. Every time the
    target holds the old or the new bytes, never a mix; with the intent record there, a rollback
    puts the original back; without it, nothing was changed."""
    original = (tree(tmp_path / "o") / "etc/default/grub").read_bytes()
    edited = original.replace(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', b'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"')
    step = 0
    while True:
        there = tree(tmp_path / str(step))
        if action == "rollback":
            assert remote(sshd, "apply", "--yes", "--root", str(there)).returncode == 0
        before = (there / "etc/default/grub").read_bytes()
        marker = tmp_path / f"pause-{step}"
        pids = set(sshd.connection_pids())
        proc = subprocess.Popen(
            [*_mlxfix(), action, "--yes", "--root", str(there), "--host", sshd.target, *sshd.options()],
            env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"step-{step}:{marker}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not Path(f"{marker}.reached").exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if not Path(f"{marker}.reached").exists():  # this run has no such step: every one was cut before
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            break
        for pid in set(sshd.connection_pids()) - pids:
            os.kill(pid, signal.SIGKILL)
        Path(f"{marker}.go").touch()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, (step, err)
        assert "connection was lost in the middle of the change" in err, (step, err)
        now = (there / "etc/default/grub").read_bytes()
        assert now in (original, edited), step
        if (there / "var/lib/mlxfix/intent.json").exists():
            undo = remote(sshd, "rollback", "--yes", "--root", str(there))
            assert undo.returncode == 0, (step, undo.stderr)
            assert (there / "etc/default/grub").read_bytes() == original, step
        else:
            assert now == before, step  # nothing was changed
        assert not (there / "var/lib/mlxfix/intent.json").exists(), step
        del out
        step += 1
    assert step >= 12  # the transaction's steps: the checks, the backup, the intent record, the write, the checks


def _mlxfix() -> list[str]:
    import sys

    return [sys.executable, "-m", "mlxfix"]


def test_a_second_apply_over_ssh_waits_for_nobody(sshd: Sshd, tmp_path: Path) -> None:
    there = tree(tmp_path)
    (there / "var/lib/mlxfix").mkdir(parents=True, mode=0o700)
    holder = subprocess.Popen(
        ["flock", "-n", str(there / "var/lib/mlxfix/lock"), "sleep", "30"],
    )
    try:
        time.sleep(0.3)
        before = snapshot(there)
        proc = remote(sshd, "apply", "--yes", "--root", str(there))
        assert proc.returncode == 75
        assert "another mlxfix is running on root@127.0.0.1" in proc.stderr
        assert snapshot(there) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diagnose", "--host", "bad host!"], "expected [USER@]HOST[:PORT]"),
        (["diagnose", "--host", "h:99999"], "port 99999 is out of range"),
        (["diagnose", "--ssh-option", "ConnectTimeout=1"], "--ssh-option needs --host"),
    ],
)
def test_bad_host_arguments_are_usage_errors(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_the_early_connection_is_used_once_or_closed(sshd: Sshd, tmp_path: Path) -> None:
    """mlxfix.cli.entry connects before typer parses the command line: a run uses that one connection, and
    a run that dies of a usage error leaves no ssh behind."""
    there = tree(tmp_path)
    ok = remote(sshd, "apply", "--dry-run", "--json", "--root", str(there))
    assert json_of(ok.stdout)["ssh"]["connections"] == 1  # type: ignore[index]
    bad = remote(sshd, "apply", "--dry-run", "--no-such-option", "--root", str(there))
    assert bad.returncode == 2
    deadline = time.monotonic() + 10
    while sshd.connection_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sshd.connection_pids() == []


def test_the_early_glance_at_the_command_line_is_conservative() -> None:
    from mlxfix.cli.entry import _early_connection

    assert _early_connection(["diagnose"]) is None
    assert _early_connection(["diagnose", "--host", "a", "--help"]) is None
    assert _early_connection(["diagnose", "--host", "a", "--host", "b"]) is None
    assert _early_connection(["diagnose", "--host"]) is None
    assert _early_connection(["diagnose", "--host", "bad host!"]) is None  # typer's run reports it
    assert _early_connection(["diagnose", "--host", "a", "--root", "relative/dir"]) is None


def test_ssh_options_given_win_over_mlxfixs_defaults(sshd: Sshd) -> None:
    """ssh takes the first value of an option: --ssh-option ConnectTimeout=2 must be the timeout (a
    listener that never answers would otherwise hold on for mlxfix's 15 s)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts, never sends a banner
        port = silent.getsockname()[1]
        started = time.monotonic()
        proc = run("diagnose", "--json", "--host", f"root@127.0.0.1:{port}", "--ssh-option", "ConnectTimeout=2", *sshd.options())
        elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert elapsed < 10, elapsed
    assert f"root@127.0.0.1:{port}" in json_of(proc.stdout)["errors"][0]  # type: ignore[index]


def test_a_changed_host_key_is_called_out_not_offered_for_adding(sshd: Sshd) -> None:
    stranger = (sshd.dir / "stranger_key.pub").read_text().split()
    (sshd.dir / "changed_known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {stranger[0]} {stranger[1]}\n")
    options = sshd.options(known_hosts="changed_known_hosts")
    proc = remote(sshd, "diagnose", "--root", str(EXAMPLES / "pve-missing-uar"), options=options)
    assert proc.returncode == 1
    assert "host key has CHANGED" in proc.stderr
    assert "add it to known_hosts" not in proc.stderr


def test_the_lock_on_the_target_is_private_and_names_its_holder(sshd: Sshd, tmp_path: Path) -> None:
    there = tree(tmp_path)
    assert remote(sshd, "apply", "--yes", "--root", str(there)).returncode == 0
    lock = there / "var/lib/mlxfix/lock"
    assert lock.stat().st_mode & 0o777 == 0o600
    assert lock.read_text().strip().isdigit()
    lock.unlink()
    os.mkfifo(lock)
    proc = remote(sshd, "rollback", "--yes", "--root", str(there))
    assert proc.returncode == 1
    assert "not a regular file" in proc.stderr


def test_writes_on_the_target_are_refused_below_a_directory_others_control(sshd: Sshd, tmp_path: Path) -> None:
    above = tree(tmp_path, "above")
    (above / "etc").chmod(0o777)
    before = snapshot(above)
    proc = remote(sshd, "apply", "--yes", "--root", str(above))
    assert proc.returncode == 1, proc.stderr
    assert "other users can write to /etc" in proc.stderr
    assert snapshot(above) == before
    escaping = tree(tmp_path, "escaping")  # an absolute directory link to a place outside the tree
    outside = tmp_path / "outside"
    shutil.move(str(escaping / "etc/default"), outside)
    (escaping / "etc/default").symlink_to(outside)
    proc = remote(sshd, "apply", "--yes", "--root", str(escaping))
    # Under --root the link leads to <tree>/<its target>, as in a chroot (issue 18, item 19): there is
    # no grub file there, so nothing to edit; the file outside is never reached, as locally.
    assert proc.returncode == 1, proc.stderr
    local = run("apply", "--yes", "--root", str(escaping))
    assert local.returncode == 1
    assert proc.stderr.splitlines()[-2:] == local.stderr.splitlines()[-2:]
    assert (outside / "grub").read_bytes() == (EXAMPLES / "pve-missing-uar/etc/default/grub").read_bytes()


def test_after_the_connection_drops_nothing_more_is_done_over_a_new_one(sshd: Sshd, tmp_path: Path) -> None:
    """The lock went with the connection: another mlxfix may hold it now. No second connection, the
    new file and the intent record stay on the target, and the next apply there finishes the change."""
    there = tree(tmp_path)
    marker = tmp_path / "pause"
    before = set(sshd.connection_pids())
    proc = subprocess.Popen(
        [*_mlxfix(), "apply", "--yes", "--json", "--root", str(there), "--host", sshd.target, *sshd.options()],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-write:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_pause(marker, proc)
    for pid in set(sshd.connection_pids()) - before:
        os.kill(pid, signal.SIGKILL)
    Path(f"{marker}.go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert json_of(out)["ssh"]["connections"] == 1  # type: ignore[index]
    assert b"pci=realloc=off" in (there / "etc/default/grub").read_bytes()
    assert (there / "var/lib/mlxfix/intent.json").exists()
    again = remote(sshd, "apply", "--yes", "--json", "--root", str(there))
    assert again.returncode == 0, again.stderr
    assert any("finishing the apply interrupted earlier" in n for n in json_of(again.stdout)["notes"])  # type: ignore[union-attr]
    assert not (there / "var/lib/mlxfix/intent.json").exists()


@pytest.mark.parametrize(
    ("sig", "code", "step"),
    [
        (signal.SIGINT, 130, "after-intent"),
        (signal.SIGINT, 130, "write-after-rename"),
        (signal.SIGINT, 130, "after-write"),
        (signal.SIGHUP, 129, "after-write"),  # (issue 18, item 21) the admin's terminal closes
        (signal.SIGTERM, 143, "after-write"),  # mlxfix is killed
    ],
)
def test_ctrl_c_on_the_terminal_puts_the_target_back_over_the_same_connection(
    sshd: Sshd, tmp_path: Path, sig: signal.Signals, code: int, step: str
) -> None:
    """A terminal's Ctrl-C (or its hang-up, or a kill) reaches its whole foreground process group: ssh,
    in a session of its own, survives it, and mlxfix restores the target as it would locally."""
    there = tree(tmp_path)
    before = snapshot(there)
    marker = tmp_path / "pause"
    proc = subprocess.Popen(
        [*_mlxfix(), "apply", "--yes", "--json", "--root", str(there), "--host", sshd.target, *sshd.options()],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"{step}:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    wait_for_pause(marker, proc)
    os.killpg(proc.pid, sig)  # what the terminal sends on Ctrl-C (or on hanging up)
    time.sleep(0.5)
    Path(f"{marker}.go").touch()  # the restore passes the same step again: no second pause
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert json_of(out)["exit_code"] == code
    assert "Traceback" not in err
    assert ("(Ctrl-C)" if sig == signal.SIGINT else f"({sig.name})") in err
    if step == "after-write":
        assert "the original files were restored" in err
    after = snapshot(there)
    assert {k: v for k, v in after.items() if "var/lib/mlxfix" not in k} == {
        k: v for k, v in before.items() if "var/lib/mlxfix" not in k
    }
    assert not (there / "var/lib/mlxfix/intent.json").exists()


def test_a_second_ctrl_c_while_the_change_script_runs_gives_the_connection_up_and_leaves_a_rollback(
    sshd: Sshd, tmp_path: Path
) -> None:
    """(issue 17) The first Ctrl-C during the change script waits for its report (so that the undo
    knows what was done); a second one gives the connection up: exit 3, said so, and the target holds
    the old or the new file and the record a rollback needs."""
    there = tree(tmp_path)
    original = (there / "etc/default/grub").read_bytes()
    marker = tmp_path / "pause"
    proc = subprocess.Popen(
        [*_mlxfix(), "apply", "--yes", "--root", str(there), "--host", sshd.target, *sshd.options()],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-intent:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_pause(marker, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    Path(f"{marker}.go").touch()
    assert proc.returncode == 3, err
    assert "the connection was given up (a second interrupt came before the target's report)" in err
    assert "Traceback" not in err
    assert (there / "var/lib/mlxfix/intent.json").exists()
    time.sleep(1)  # the target's script, let go, ends at its next report (nobody reads it)
    undo = remote(sshd, "rollback", "--yes", "--root", str(there))
    assert undo.returncode == 0, undo.stderr
    assert (there / "etc/default/grub").read_bytes() == original
    del out


def test_ctrl_c_typed_on_a_real_terminal_puts_the_target_back(sshd: Sshd, tmp_path: Path) -> None:
    """(issue 18, item 9) Not a signal sent by the test: the Ctrl-C byte typed on a pseudo-terminal,
    which the kernel's line discipline turns into SIGINT for the terminal's foreground process group
    (as tmux send-keys C-c does). mlxfix restores the target over the same connection, exit 130."""
    import pty
    import select

    there = tree(tmp_path)
    before = snapshot(there)
    marker = tmp_path / "pause"
    argv = [*_mlxfix(), "apply", "--yes", "--root", str(there), "--host", sshd.target, *sshd.options()]
    env = {**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-write:{marker}", "TERM": "dumb"}
    env.pop("SSH_CONNECTION", None)
    pid, fd = pty.fork()
    if pid == 0:  # on a terminal of its own, its session's foreground job
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    seen = b""
    typed = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if not typed and Path(f"{marker}.reached").exists():
            os.write(fd, b"\x03")  # Ctrl-C, through the line discipline
            time.sleep(0.5)
            Path(f"{marker}.go").touch()
            typed = True
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed: mlxfix ended
                break
            if not chunk:
                break
            seen += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = seen.decode("utf-8", "replace")
    assert typed, text
    assert os.waitstatus_to_exitcode(status) == 130, text
    assert "interrupted (Ctrl-C)" in text
    assert "the original files were restored" in text
    assert "Traceback" not in text
    after = snapshot(there)
    assert {k: v for k, v in after.items() if "var/lib/mlxfix" not in k} == {
        k: v for k, v in before.items() if "var/lib/mlxfix" not in k
    }
    assert not (there / "var/lib/mlxfix/intent.json").exists()


def test_a_root_that_is_not_on_the_target_is_a_usage_error_naming_the_host(sshd: Sshd, tmp_path: Path) -> None:
    missing = tmp_path / "no such tree"
    for command in (["diagnose"], ["apply", "--yes"], ["rollback", "--yes"], ["backups"], ["verify"]):
        proc = remote(sshd, *command, "--json", "--root", str(missing))
        assert proc.returncode == 2, (command, proc.stderr)
        assert f"--root {missing}: no such directory on {sshd.target}" in proc.stderr
        assert json_of(proc.stdout)["exit_code"] == 2


def test_the_state_directory_on_the_target_is_refused_below_a_directory_others_control(sshd: Sshd, tmp_path: Path) -> None:
    there = tree(tmp_path)
    (there / "var/lib").mkdir(parents=True, exist_ok=True)
    (there / "var/lib").chmod(0o777)
    before = snapshot(there)
    proc = remote(sshd, "apply", "--yes", "--root", str(there))
    assert proc.returncode == 1
    assert "other users can write to /var/lib" in proc.stderr
    assert snapshot(there) == before


def test_a_run_with_nothing_to_do_over_ssh_still_fails_while_another_is_at_work(sshd: Sshd, tmp_path: Path) -> None:
    there = tree(tmp_path)
    marker = tmp_path / "pause"
    first = subprocess.Popen(
        [*_mlxfix(), "apply", "--yes", "--root", str(there), "--host", sshd.target, *sshd.options()],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-backup:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_pause(marker, first)
    other = remote(sshd, "rollback", "--yes", "--root", str(there))  # its backup is there, the file not yet changed
    assert other.returncode == 75, other.stderr
    assert f"another mlxfix is running on {sshd.target}" in other.stderr
    Path(f"{marker}.go").touch()
    assert first.wait(timeout=60) == 0, first.communicate()
    first.communicate()


def _fake_backups(root: Path, count: int, size: int) -> None:
    """``count`` backups of one ``size``-byte file, as mlxfix writes them (verified: each copy's sha256)."""
    import hashlib
    import json

    backups = root / "var/lib/mlxfix/backups"
    backups.mkdir(parents=True, exist_ok=True)
    for p in (backups.parent, backups):
        p.chmod(0o700)
    for i in range(count):
        backup_id = f"20250101T0000{i:02d}.000Z-{i:06x}"
        data = bytes([i]) * size
        (backups / backup_id).mkdir(mode=0o700)
        (backups / backup_id / "0.orig").write_bytes(data)
        manifest = {
            "format": 1, "id": backup_id, "created": f"2025-01-01T00:00:{i:02d}+00:00", "time": f"2025-01-01T00:00:{i:02d}+00:00",
            "mlxfix_version": "0.1.0", "host": "pve", "action": "apply", "param": "pci=realloc=off", "reason": "test",
            "boot_setup": "grub-debian", "commands": [["update-grub"]],
            "files": [{"path": "/etc/default/grub", "stored": "0.orig", "sha256": hashlib.sha256(data).hexdigest(), "size": size,
                       "mode": 0o100644, "uid": 0, "gid": 0, "existed": True, "written_sha256": None}],
        }  # fmt: skip
        (backups / backup_id / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def test_multi_megabyte_answers_over_ssh_neither_hang_nor_differ(sshd: Sshd, tmp_path: Path) -> None:
    """(issue 18, item 23) A 3 MiB kernel log under --root and 32 backups of a 64 KiB file: the target
    prints megabytes in one answer; both streams are read together, and the result is the local one."""
    there = tree(tmp_path)
    log = (there / "var/log/dmesg").read_text()
    filler = "".join(f"[  {i // 1000 + 5:4d}.{i % 1000:06d}] usb 1-1: filler line {i:07d} {'x' * 40}\n" for i in range(48000))
    (there / "var/log/dmesg").write_text(log + filler)
    assert (there / "var/log/dmesg").stat().st_size > 3 << 20
    _fake_backups(there, 32, 64 << 10)
    for args in (("diagnose", "--json"), ("backups", "--json")):
        local = run(*args, "--root", str(there), timeout=60)
        over = remote(sshd, *args, "--root", str(there))  # (120 s at most; it used to hang forever)
        assert over.returncode == local.returncode, over.stderr
        same(json_of(local.stdout), json_of(over.stdout))
    assert len(json_of(over.stdout)["backups"]) == 32  # type: ignore[arg-type]


def test_backups_prune_over_ssh_keeps_what_rollback_restores(sshd: Sshd, tmp_path: Path) -> None:
    there = tree(tmp_path, "there")
    for args in (["apply"], ["rollback"], ["apply"], ["rollback"], ["apply", "--param", "iommu=pt"]):
        assert run(*args, "--yes", "--no-reboot", "--root", str(there)).returncode == 0
    target = json_of(run("rollback", "--dry-run", "--json", "--root", str(there)).stdout)["restores"]
    before = snapshot(there)
    looked = remote(sshd, "backups", "--prune", "--keep", "0", "--dry-run", "--json", "--root", str(there))
    assert looked.returncode == 0, looked.stderr
    assert json_of(looked.stdout)["prune"]["removed"]  # type: ignore[index]
    assert snapshot(there) == before
    over = remote(sshd, "backups", "--prune", "--keep", "0", "--yes", "--json", "--root", str(there))
    assert over.returncode == 0, over.stderr
    doc = json_of(over.stdout)
    assert len(doc["prune"]["removed"]) == 4  # type: ignore[index]
    assert [k["id"] for k in doc["prune"]["kept"]] == [target]  # type: ignore[index]
    assert [p.name for p in (there / "var/lib/mlxfix/backups").iterdir()] == [target]
    human = remote(sshd, "backups", "--prune", "--root", str(there))
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"Target: {sshd.target}\n")
    assert "Nothing to prune" in human.stdout
    assert remote(sshd, "rollback", "--yes", "--no-reboot", "--root", str(there)).returncode == 0
    assert (there / "etc/default/grub").read_bytes() == (EXAMPLES / "pve-missing-uar/etc/default/grub").read_bytes()


@pytest.fixture
def tracefs_tree(tmp_path: Path) -> Iterator[Path]:
    """A host tree whose grub.d holds a link to the kernel's real tracefs trace_pipe (mounted inside the
    tree for this test): a regular file of size 0 that blocks for ever."""
    there = tree(tmp_path, "there")
    mnt = there / "mnt/tracefs"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(mnt)], check=True)
    try:
        assert (mnt / "trace_pipe").is_file()
        assert (mnt / "trace_pipe").stat().st_size == 0
        (there / "etc/default/grub.d").mkdir(exist_ok=True)
        (there / "etc/default/grub.d/trace.cfg").symlink_to("../../../mnt/tracefs/trace_pipe")
        yield there
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_grub_d_link_to_a_file_that_never_ends_is_refused_by_name_locally_and_over_ssh(sshd: Sshd, tracefs_tree: Path) -> None:
    grub = (tracefs_tree / "etc/default/grub").read_bytes()
    started = time.monotonic()
    for proc in (
        run("apply", "--dry-run", "--root", str(tracefs_tree), timeout=60),
        remote(sshd, "apply", "--dry-run", "--root", str(tracefs_tree)),
        remote(sshd, "apply", "--yes", "--root", str(tracefs_tree)),
    ):
        assert proc.returncode == 1, proc.stderr
        assert "/etc/default/grub.d/trace.cfg" in proc.stderr
        assert "on the tracefs kernel file system, not a configuration file" in proc.stderr
    assert time.monotonic() - started < 30
    assert (tracefs_tree / "etc/default/grub").read_bytes() == grub
    assert not (tracefs_tree / "var/lib/mlxfix").exists()


def test_a_read_that_never_ends_is_cut_off_in_time(tracefs_tree: Path) -> None:
    """Where mlxfix reads kernel files on purpose (/sys, /proc), a file that blocks still ends the read."""
    from mlxfix.host.local import READ_TIMEOUT, LocalHost

    (tracefs_tree / "sys").mkdir(exist_ok=True)
    (tracefs_tree / "sys/trace_pipe").symlink_to("../mnt/tracefs/trace_pipe")
    started = time.monotonic()
    info = LocalHost(str(tracefs_tree)).read("/sys/trace_pipe")
    took = time.monotonic() - started
    assert info.data is None
    assert info.error == f"no end within {READ_TIMEOUT:.0f} s (a file that never ends?)"
    assert READ_TIMEOUT <= took < READ_TIMEOUT + 5


def test_the_targets_lock_is_released_as_soon_as_the_change_is_over(sshd: Sshd, tmp_path: Path) -> None:
    """(issue 17) The lock's release needs no answer, so it is sent at once: after apply returns (a
    reboot question may follow, and wait for a person), another run can take the lock, though the
    connection is still open."""
    from mlxfix import commands
    from mlxfix.host.ssh import SshHost

    there = tree(tmp_path)
    host = SshHost(sshd.target, str(there), [o for o in sshd.options() if o != "--ssh-option"])
    try:
        report = commands.apply(host, param="pci=realloc=off", dry_run=False, boot_setup=None, confirm=lambda _: True)
        assert report.error is None, report.error
        deadline = time.monotonic() + 5
        while subprocess.run(["flock", "-n", str(there / "var/lib/mlxfix/lock"), "true"], check=False).returncode:
            assert time.monotonic() < deadline, "the lock is still held"
            time.sleep(0.05)
        assert host.gather(["/etc/default/grub"]).files["/etc/default/grub"].exists  # the session still works
    finally:
        host.close()
