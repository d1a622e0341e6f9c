"""apply, rollback and backups through the CLI, in-process and as real processes, on --root trees."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlxfix.models import BackupsResult, ChangeResult
from tests.trees import (
    NOBODY,
    PVE_GRUB,
    debian_host,
    invoke,
    json_of,
    nobody_python,
    on_a_terminal,
    run,
    snapshot,
    wait_for_pause,
    write,
)

EXPECTED = PVE_GRUB.replace(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', b'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"')


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return debian_host(tmp_path / "root")


def grub(root: Path) -> bytes:
    return (root / "etc/default/grub").read_bytes()


def test_dry_run_changes_nothing_and_shows_the_diff(host: Path) -> None:
    before = snapshot(host)
    code, out, _ = invoke("apply", "--dry-run", "--root", str(host))
    assert code == 0
    assert '+GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"' in out
    assert '-GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in out
    assert "update-grub" in out
    assert "after:  quiet pci=realloc=off" in out
    assert snapshot(host) == before
    assert not (host / "var").exists()


def test_apply_writes_exact_bytes_then_is_idempotent(host: Path) -> None:
    code, out, err = invoke("apply", "--yes", "--root", str(host))
    assert code == 0, err
    assert grub(host) == EXPECTED
    assert "Backup: " in out
    # under --root update-grub is not run: the files alone do not reach the next boot (issue 18, item 13)
    assert "in the files only. It reaches the boot configuration once this runs: update-grub; then reboot." in out
    assert "Done" not in out
    after_first = snapshot(host)
    code, out, _ = invoke("apply", "--yes", "--root", str(host), "--json")
    assert code == 0
    doc = json_of(out)
    assert doc["changed"] is False
    assert doc["files"] == []
    assert snapshot(host) == after_first


def test_rollback_restores_bytes_and_mode(host: Path) -> None:
    (host / "etc/default/grub").chmod(0o640)
    original = grub(host)
    assert invoke("apply", "--yes", "--root", str(host))[0] == 0
    assert stat.S_IMODE((host / "etc/default/grub").stat().st_mode) == 0o640
    code, out, err = invoke("rollback", "--yes", "--root", str(host))
    assert code == 0, err
    assert grub(host) == original
    assert stat.S_IMODE((host / "etc/default/grub").stat().st_mode) == 0o640
    assert "rolled back" in out


def test_rollback_dry_run_shows_the_diff_only(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    before = snapshot(host)
    code, out, _ = invoke("rollback", "--dry-run", "--root", str(host))
    assert code == 0
    assert '-GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"' in out
    assert snapshot(host) == before


def test_without_terminal_and_without_yes_nothing_changes(host: Path) -> None:
    before = snapshot(host)
    proc = run("apply", "--root", str(host))
    assert proc.returncode == 1
    assert "--yes" in proc.stderr
    assert snapshot(host) == before


@pytest.mark.parametrize(
    ("grub_text", "where", "reason"),
    [
        ('if true; then\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nfi\n', "/etc/default/grub:2:", "inside an if block"),
        ('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet\n', "/etc/default/grub:2:28:", "sh cannot parse this file"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$(cat /x)"\n', "/etc/default/grub:1:29:", "the output of a command"),
        ('{% if iommu %}\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n{% endif %}\n', "/etc/default/grub:1:1:", "template marker"),
    ],
)
def test_refusal_changes_nothing_and_names_file_and_line(tmp_path: Path, grub_text: str, where: str, reason: str) -> None:
    root = debian_host(tmp_path / "root", grub_text)
    before = snapshot(root)
    proc = run("apply", "--yes", "--root", str(root))
    assert proc.returncode == 1
    assert reason in proc.stderr
    assert where in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(root) == before


def test_json_document_validates_and_keys_are_pinned(host: Path) -> None:
    proc = run("apply", "--yes", "--json", "--root", str(host))
    assert proc.returncode == 0, proc.stderr
    doc = json_of(proc.stdout)
    ChangeResult.model_validate(doc)
    assert sorted(doc) == sorted(
        [
            "version", "mlxfix_version", "command", "host", "root", "dry_run", "changed", "would_change", "param",
            "boot_setup", "target", "cmdline", "files", "backup", "restores", "commands", "reboot_required", "rebooting",
            "notes", "warnings", "errors", "exit_code", "verification", "ssh", "next_boot", "proof", "effect", "trial",
        ]
    )  # fmt: skip
    assert doc["changed"] is True
    assert doc["param"] == "pci=realloc=off"
    assert doc["reboot_required"] is True
    assert doc["rebooting"] is False
    [f] = doc["files"]  # type: ignore[misc]
    assert f["path"] == "/etc/default/grub"
    assert "+GRUB_CMDLINE_LINUX_DEFAULT" in f["diff"]
    assert isinstance(doc["backup"], str)
    [c] = doc["commands"]  # type: ignore[misc]
    assert c["argv"] == ["update-grub"]
    assert c["ran"] is False  # --root: reported, not run
    assert "Backup:" in proc.stderr  # human text on stderr with --json


def test_json_on_refusal_is_still_one_document(tmp_path: Path) -> None:
    root = debian_host(tmp_path / "root", "f() { GRUB_CMDLINE_LINUX_DEFAULT=x; }\nf\n")
    proc = run("apply", "--yes", "--json", "--root", str(root))
    assert proc.returncode == 1
    doc = json_of(proc.stdout)
    assert doc["changed"] is False
    assert doc["errors"]
    assert doc["exit_code"] == 1


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["apply", "--param", "a b"], 2),
        (["apply", "--param", "x=$(reboot)"], 2),
        (["apply", "--bogus"], 2),
        (["rollback", "--backup", "../../etc/shadow"], 2),
        (["rollback", "--backup", "20991231T000000.000Z-abcdef"], 2),
        (["apply", "--boot-setup", "lilo"], 2),
    ],
)
def test_usage_errors_exit_2_and_change_nothing(host: Path, args: list[str], code: int) -> None:
    before = snapshot(host)
    proc = run(*args, "--yes", "--root", str(host))
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(host) == before


def test_missing_root_directory_is_a_usage_error(tmp_path: Path) -> None:
    proc = run("apply", "--dry-run", "--root", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr


def test_symlinked_grub_file_edits_the_target_and_keeps_the_link(host: Path) -> None:
    real = host / "etc/default/grub.real"
    (host / "etc/default/grub").rename(real)
    (host / "etc/default/grub").symlink_to("/etc/default/grub.real")  # absolute: resolved inside --root
    assert invoke("apply", "--yes", "--root", str(host))[0] == 0
    assert (host / "etc/default/grub").is_symlink()
    assert os.readlink(host / "etc/default/grub") == "/etc/default/grub.real"
    assert real.read_bytes() == EXPECTED
    assert invoke("rollback", "--yes", "--root", str(host))[0] == 0
    assert real.read_bytes() == PVE_GRUB
    assert (host / "etc/default/grub").is_symlink()


def test_rollback_refuses_a_file_changed_after_apply_without_force(host: Path) -> None:
    assert invoke("apply", "--yes", "--root", str(host))[0] == 0
    edited = grub(host) + b"GRUB_TIMEOUT=1\n"
    (host / "etc/default/grub").write_bytes(edited)
    proc = run("rollback", "--yes", "--root", str(host))
    assert proc.returncode == 1
    assert "changed after mlxfix wrote it" in proc.stderr
    assert "-GRUB_TIMEOUT=1" in proc.stdout  # the diff of what --force would undo is shown
    assert "--force" in proc.stderr
    assert grub(host) == edited
    proc = run("rollback", "--yes", "--json", "--root", str(host))
    assert proc.returncode == 1
    doc = json_of(proc.stdout)
    [f] = doc["files"]  # type: ignore[misc]
    assert "-GRUB_TIMEOUT=1" in f["diff"]
    assert doc["changed"] is False
    assert grub(host) == edited
    proc = run("rollback", "--yes", "--force", "--root", str(host))
    assert proc.returncode == 0, proc.stderr
    assert grub(host) == PVE_GRUB


def test_backups_lists_newest_first_with_hashes(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    invoke("rollback", "--yes", "--root", str(host))
    code, out, _ = invoke("backups", "--json", "--root", str(host))
    assert code == 0
    doc = BackupsResult.model_validate_json(out)
    assert [b.action for b in doc.backups] == ["rollback", "apply"]
    assert doc.backups[0].id > doc.backups[1].id
    assert doc.backups[1].files[0].path == "/etc/default/grub"
    assert len(doc.backups[1].files[0].sha256) == 64
    backup_dir = host / "var/lib/mlxfix/backups" / doc.backups[1].id
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((backup_dir / "0.orig").stat().st_mode) == 0o600


def test_rollback_to_a_named_backup(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    first = BackupsResult.model_validate_json(invoke("backups", "--json", "--root", str(host))[1]).backups[0].id
    invoke("apply", "--yes", "--param", "iommu=pt", "--root", str(host))
    assert b"iommu=pt" in grub(host)
    assert invoke("rollback", "--yes", "--force", "--backup", first, "--root", str(host))[0] == 0
    assert grub(host) == PVE_GRUB


def test_corrupted_backup_is_refused_never_restored(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    [backup] = list((host / "var/lib/mlxfix/backups").iterdir())
    (backup / "0.orig").write_bytes(b"GRUB_CMDLINE_LINUX_DEFAULT=oops\n")
    before = snapshot(host)
    proc = run("rollback", "--yes", "--root", str(host))
    assert proc.returncode == 1
    assert "corrupted" in proc.stderr
    assert snapshot(host) == before


def test_no_update_writes_and_names_the_command(host: Path) -> None:
    code, out, _ = invoke("apply", "--yes", "--no-update", "--root", str(host), "--json")
    assert code == 0
    doc = json_of(out)
    assert doc["commands"] == [
        {"argv": ["update-grub"], "ran": False, "exit_code": None, "output_tail": "", "note": "--no-update: run it yourself"}
    ]
    assert any("update-grub" in w for w in doc["warnings"])  # type: ignore[union-attr]
    assert grub(host) == EXPECTED


def test_a_second_mlxfix_fails_at_once_while_the_lock_is_held(host: Path) -> None:
    state = host / "var/lib/mlxfix"
    state.mkdir(parents=True, mode=0o700)
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)",
            str(state / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(host)
        proc = run("apply", "--yes", "--root", str(host), timeout=20)
        assert proc.returncode == 75
        assert "another mlxfix is running" in proc.stderr
        assert snapshot(host) == before
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert run("apply", "--yes", "--root", str(host)).returncode == 0  # released when its holder died


def test_package_manager_lock_makes_apply_wait_then_fail(host: Path) -> None:
    lock = write(host, "/var/lib/dpkg/lock-frontend", b"", 0o640)
    fd = os.open(lock, os.O_RDWR)
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        proc = run("apply", "--yes", "--root", str(host), timeout=60)
        assert proc.returncode == 75
        assert "package manager" in proc.stderr
        assert grub(host) == PVE_GRUB
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        os.close(fd)


def test_apply_as_an_unprivileged_user_is_refused(tmp_path: Path) -> None:
    root = debian_host(tmp_path / "root")
    for p in (tmp_path, *tmp_path.parents):  # let "nobody" reach the tree (pytest makes its dirs 0700)
        if p.stat().st_mode & 0o001 == 0:
            p.chmod(p.stat().st_mode | 0o005)
    before = snapshot(root)
    proc = subprocess.run(
        [
            *NOBODY,
            nobody_python()[0],
            "-m",
            "mlxfix",
            "apply",
            "--yes",
            "--root",
            str(root),
        ],
        capture_output=True,
        text=True,
        env=nobody_python()[1],
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "run it as root" in proc.stderr
    assert snapshot(root) == before
    # ...while a dry run works without root.
    proc = subprocess.run(
        [
            *NOBODY,
            nobody_python()[0],
            "-m",
            "mlxfix",
            "apply",
            "--dry-run",
            "--root",
            str(root),
        ],
        capture_output=True,
        text=True,
        env=nobody_python()[1],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_and_version(host: Path) -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("mlxfix ")
    proc = run("apply", "--help")
    assert proc.returncode == 0
    for option in ("--dry-run", "--param", "--yes", "--no-update", "--reboot", "--root", "--json"):
        assert option in proc.stdout
    del host


def test_json_is_one_document_even_for_usage_errors(host: Path) -> None:
    for args in (["apply", "--bogus"], ["rollback", "--root", str(host / "nope")], ["backups", "extra-argument"]):
        proc = run(*args, "--json")
        assert proc.returncode == 2, (args, proc.stderr)
        doc = json_of(proc.stdout)
        assert doc["exit_code"] == 2
        assert doc["errors"]
        assert doc["command"] == args[0]


def test_wait_is_checked_before_anything_changes(host: Path) -> None:
    before = snapshot(host)
    for args in (["--wait"], ["--wait", "--host", "root@example.invalid", "--no-reboot"]):
        proc = run("apply", "--yes", "--json", "--root", str(host), *args)
        assert proc.returncode == 2, proc.stderr
        assert json_of(proc.stdout)["errors"]
    assert snapshot(host) == before


def test_rollback_json_names_the_backup_it_restores(host: Path) -> None:
    applied = json_of(run("apply", "--yes", "--json", "--root", str(host)).stdout)["backup"]
    doc = json_of(run("rollback", "--dry-run", "--json", "--root", str(host)).stdout)
    assert (doc["restores"], doc["backup"]) == (applied, None)
    doc = json_of(run("rollback", "--yes", "--json", "--root", str(host)).stdout)
    assert doc["restores"] == applied
    assert isinstance(doc["backup"], str)
    assert doc["backup"] != applied  # a rollback is backed up too
    again = run("rollback", "--yes", "--root", str(host))
    assert again.returncode == 0
    assert "already hold what backup" in again.stdout


def test_backups_flags_a_damaged_backup(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    [backup] = list((host / "var/lib/mlxfix/backups").iterdir())
    copy = backup / "0.orig"
    copy.write_bytes(copy.read_bytes()[:-1] + b"X")
    doc = BackupsResult.model_validate_json(invoke("backups", "--json", "--root", str(host))[1])
    assert [b.intact for b in doc.backups] == [False]
    assert any("corrupted" in p for p in doc.problems)


def test_backups_as_another_user_says_it_cannot_read_them(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    for p in (host, *host.parents):  # let "nobody" reach the tree (pytest makes its dirs 0700); not the state dir
        if p.stat().st_mode & 0o001 == 0:
            p.chmod(p.stat().st_mode | 0o005)
    proc = subprocess.run(
        [*NOBODY, nobody_python()[0], "-m", "mlxfix", "backups", "--root", str(host)],
        capture_output=True, text=True, check=False, env=nobody_python()[1],
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # something is wrong: it says so, and not with 0
    assert "cannot be read" in proc.stdout
    assert "as root" in proc.stdout


def test_empty_no_color_keeps_colour_and_any_value_removes_it() -> None:
    from mlxfix.cli.render import Style

    class Tty:
        def isatty(self) -> bool:
            return True

    for value, coloured in (("", True), ("1", False), ("0", False)):
        old = os.environ.get("NO_COLOR")
        os.environ["NO_COLOR"] = value
        try:
            assert Style(Tty()).enabled is coloured  # type: ignore[arg-type]
        finally:
            if old is None:
                del os.environ["NO_COLOR"]
            else:
                os.environ["NO_COLOR"] = old


def test_a_rollback_puts_back_a_file_deleted_since(host: Path) -> None:
    invoke("apply", "--yes", "--root", str(host))
    (host / "etc/default/grub").unlink()
    proc = run("rollback", "--yes", "--root", str(host))
    assert proc.returncode == 1  # a change made after mlxfix wrote it: shown, --force needed
    assert "changed after mlxfix wrote it" in proc.stderr
    assert run("rollback", "--yes", "--force", "--root", str(host)).returncode == 0
    assert grub(host) == PVE_GRUB


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_diffs_keep_bytes_that_are_not_utf8_so_patch_applies_them(host: Path, tmp_path: Path, eol: bytes) -> None:
    original = b'# Conf\xe9 par l\'\xe9quipe\nGRUB_CMDLINE_LINUX_DEFAULT="qu\xe9iet"\n'.replace(b"\n", eol)
    write(host, "/etc/default/grub", original)
    proc = subprocess.run(
        [sys.executable, "-m", "mlxfix", "apply", "--dry-run", "--root", str(host)], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    diff = proc.stdout[proc.stdout.index(b"--- a/") : proc.stdout.index(b"\nKernel command line")] + b"\n"
    target = tmp_path / "grub"
    target.write_bytes(original)
    patched = subprocess.run(["patch", "--binary", str(target)], input=diff, capture_output=True, check=False)
    assert patched.returncode == 0, patched.stdout + patched.stderr
    assert target.read_bytes() == original.replace(b'qu\xe9iet"', b'qu\xe9iet pci=realloc=off"')


def test_a_fix_configured_but_not_running_still_requires_a_reboot() -> None:
    from tests.conftest import EXAMPLES

    doc = json_of(run("apply", "--dry-run", "--json", "--root", str(EXAMPLES / "pve-pending-reboot")).stdout)
    assert (doc["would_change"], doc["reboot_required"]) == (False, False)  # a dry run requires nothing
    proc = run("apply", "--yes", "--json", "--root", str(EXAMPLES / "pve-pending-reboot"))
    doc = json_of(proc.stdout)
    assert (doc["changed"], doc["reboot_required"]) == (False, True)
    assert "does not have it yet: reboot" in proc.stderr


def test_extended_attributes_of_the_grub_file_are_kept(host: Path) -> None:
    path = host / "etc/default/grub"
    os.setxattr(path, "user.mlxfix-test", b"kept")
    assert invoke("apply", "--yes", "--root", str(host))[0] == 0
    assert os.getxattr(path, "user.mlxfix-test") == b"kept"
    assert invoke("rollback", "--yes", "--root", str(host))[0] == 0
    assert os.getxattr(path, "user.mlxfix-test") == b"kept"


def test_ctrl_c_at_the_question_is_an_interruption_and_changes_nothing(host: Path) -> None:
    import pty
    import time

    before = snapshot(host)
    pid, fd = pty.fork()
    if pid == 0:  # the child: mlxfix on a terminal of its own
        os.execv(sys.executable, [sys.executable, "-m", "mlxfix", "apply", "--root", str(host)])
    seen = b""
    deadline = time.monotonic() + 30
    while b"[y/n]" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(fd, 4096)
        except OSError:
            break
    assert b"Apply these changes? [y/n]" in seen
    os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline: SIGINT
    while True:
        try:
            if not os.read(fd, 4096):
                break
        except OSError:
            break
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130
    assert snapshot(host) == before


@pytest.mark.parametrize("step", ["done"])
def test_ctrl_c_after_the_change_is_made_does_not_make_the_report_a_lie(host: Path, tmp_path: Path, step: str) -> None:
    """Once the change is made, Ctrl-C can no longer undo it: the run ends as it is (exit 0, the
    real document), not "interrupted" over a changed host."""
    import signal
    import time

    marker = tmp_path / "pause"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxfix", "apply", "--yes", "--json", "--root", str(host)],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"{step}:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_pause(marker, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    Path(f"{marker}.go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    doc = json_of(out)
    assert (doc["exit_code"], doc["changed"]) == (0, True)
    assert doc["backup"] is not None
    assert b"pci=realloc=off" in (host / "etc/default/grub").read_bytes()
    assert "interrupted" not in err


def test_a_damaged_newest_backup_is_not_silently_passed_over(host: Path) -> None:
    assert invoke("apply", "--yes", "--root", str(host))[0] == 0
    assert invoke("apply", "--yes", "--param", "iommu=pt", "--root", str(host))[0] == 0
    backups = sorted((host / "var/lib/mlxfix/backups").iterdir())
    (backups[-1] / "manifest.json").write_bytes(b"")
    before = snapshot(host)
    code, _, err = invoke("rollback", "--yes", "--root", str(host))
    assert code == 1
    assert f"the newest backup, {backups[-1].name}, is damaged" in err
    assert snapshot(host) == before
    code, _, _ = invoke("rollback", "--yes", "--backup", backups[0].name, "--force", "--root", str(host))
    assert code == 0  # the admin may still choose one


@pytest.mark.parametrize("how", ["world-writable", "foreign-owner"])
def test_the_state_directory_is_refused_below_a_directory_others_control(host: Path, how: str) -> None:
    parent = host / "var/lib"
    parent.mkdir(parents=True, exist_ok=True)
    if how == "world-writable":
        parent.chmod(0o777)
    else:
        os.chown(host / "var", 1234, 1234)
    before = snapshot(host)
    code, _, err = invoke("apply", "--yes", "--root", str(host))
    assert code == 1
    assert "refusing to write into /var/lib" in err
    assert snapshot(host) == before  # not even the state directory was made


@pytest.mark.parametrize("args", [["diagnose"], ["status", "--json"], ["backups"], ["apply", "--dry-run"]])
def test_a_stdout_that_cannot_be_written_is_one_line_and_exit_1(args: list[str]) -> None:
    """(issue 18, item 11) ``mlxfix diagnose > /dev/full``: ENOSPC on stdout, never a traceback."""
    example = Path(__file__).parents[1] / "examples" / "pve-missing-uar"
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "mlxfix", *args, "--root", str(example)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "mlxfix: the output could not be written (No space left on device)"


@pytest.mark.parametrize("linux", ['"console=ttyS0\nnet.ifnames=0"', '"console=ttyS0\n"'])
def test_a_newline_in_grub_cmdline_linux_is_refused(tmp_path: Path, linux: str) -> None:
    """(issue 13) GRUB_CMDLINE_LINUX comes first on grub.cfg's linux line: a newline in it (a trailing
    one too) leaves GRUB_CMDLINE_LINUX_DEFAULT, and the parameter, on a line the kernel never sees."""
    root = debian_host(tmp_path / "root", f'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX={linux}\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    before = snapshot(root)
    proc = run("apply", "--yes", "--root", str(root))
    assert proc.returncode == 1, proc.stderr
    assert "GRUB_CMDLINE_LINUX holds a newline" in proc.stderr
    assert "/etc/default/grub:2" in proc.stderr
    assert snapshot(root) == before


def test_reboot_under_root_is_said_in_the_human_output_too(tmp_path: Path) -> None:
    """(issue 18, item 13) --reboot under --root reboots nothing: the admin reads that, not only the JSON."""
    root = debian_host(tmp_path / "root")
    proc = run("apply", "--yes", "--reboot", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "warning: --reboot: not rebooting a tree (--root)" in proc.stdout + proc.stderr
    assert "Done" not in proc.stdout


@pytest.mark.parametrize("extra", [[], ["--no-update"]])
def test_a_dry_run_whose_commands_are_the_admins_does_not_promise_the_next_boot(tmp_path: Path, extra: list[str]) -> None:
    """(issue 18, item 13) Under --root, or with --no-update, the files alone reach no boot: the dry
    run says what it takes (the regeneration, then a reboot), not "takes effect after a reboot"."""
    root = debian_host(tmp_path / "root")
    proc = run("apply", "--dry-run", *extra, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.rstrip("\n").splitlines()[-1]
    assert last == (
        "Dry run: nothing was changed. Run without --dry-run to apply. The files alone would not reach the next"
        " boot: that takes update-grub, then a reboot."
    ), proc.stdout
    assert "was not regenerated" not in proc.stdout + proc.stderr  # a dry run regenerates nothing, and says would
    if extra:
        assert "warning: --no-update: the boot configuration would not be regenerated; run: update-grub" in proc.stdout


def test_a_command_line_that_cannot_be_known_is_said_and_why_the_edit_is_still_safe(tmp_path: Path) -> None:
    text = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="$(cat /etc/kernel/extra)"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    root = debian_host(tmp_path / "root", text)
    before = snapshot(root)
    code, out, _ = invoke("apply", "--dry-run", "--root", str(root))
    assert code == 0
    assert '+GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"' in out
    said = "the kernel command line cannot be known before grub-mkconfig runs"
    assert f"warning: {said}" in out
    assert "/etc/default/grub:2: GRUB_CMDLINE_LINUX is the output of a command ($(cat /etc/kernel/extra))" in out
    assert "comes after it on the linux line" in out  # why it is still safe
    assert "reads grub.cfg back" in out
    assert "Kernel command line" in out
    assert "cannot be known before grub-mkconfig runs" in out.split("Kernel command line")[1]
    code, doc_text, _ = invoke("apply", "--dry-run", "--json", "--root", str(root))
    doc = json_of(doc_text)
    assert doc["cmdline"] == {"before": None, "after": None}
    assert [w for w in doc["warnings"] if said in w and "/etc/default/grub:2" in w]  # type: ignore[union-attr]
    assert snapshot(root) == before


@pytest.mark.parametrize("param", ["pci=realloc", "pci=realloc=on", "pci=noaer,realloc", "pci=realloc=off,realloc=on"])
def test_a_param_that_turns_realloc_on_needs_force(host: Path, param: str) -> None:
    before = snapshot(host)
    for args in (["--dry-run"], ["--yes"]):
        proc = run("apply", *args, "--param", param, "--root", str(host))
        assert proc.returncode == 1, proc.stderr
        assert f"--param {param} turns PCI resource reallocation on" in proc.stderr
        assert "Missing UAR" in proc.stderr
        assert "--force" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert snapshot(host) == before


@pytest.mark.parametrize("param", ["pci=realloc", "pci=realloc=on", "pci=noaer,realloc"])
def test_force_writes_a_param_that_turns_realloc_on_and_says_so(host: Path, param: str) -> None:
    code, out, _ = invoke("apply", "--yes", "--force", "--json", "--param", param, "--root", str(host))
    assert code == 0
    doc = json_of(out)
    assert any(f"--force: {param} turns PCI resource reallocation on" in w for w in doc["warnings"])  # type: ignore[union-attr]
    assert f'GRUB_CMDLINE_LINUX_DEFAULT="quiet {param}"'.encode() in grub(host)


def test_force_is_not_needed_for_the_fix_itself(host: Path) -> None:
    code, out, _ = invoke("apply", "--dry-run", "--json", "--param", "pci=noaer,realloc=off", "--root", str(host))
    assert code == 0
    assert not [w for w in json_of(out)["warnings"] if "reallocation on" in w]  # type: ignore[union-attr]


def test_rolling_back_a_rollback_says_it_re_applies(host: Path) -> None:
    assert invoke("apply", "--yes", "--root", str(host))[0] == 0
    undo = json_of(invoke("rollback", "--yes", "--json", "--root", str(host))[1])
    assert undo["effect"] == "rolled back"
    assert grub(host) == PVE_GRUB
    rollback_backup = undo["backup"]
    assert isinstance(rollback_backup, str)
    code, out, _ = invoke("rollback", "--dry-run", "--backup", rollback_backup, "--root", str(host))
    assert code == 0
    assert f"backup {rollback_backup} was saved by a rollback" in out
    assert "Run without --dry-run to re-apply pci=realloc=off" in out
    assert "roll back." not in out
    code, out, _ = invoke("rollback", "--yes", "--backup", rollback_backup, "--root", str(host))
    assert code == 0
    assert grub(host) == EXPECTED
    assert "pci=realloc=off re-applied" in out
    assert "rolled back" not in out
    redo = json_of(invoke("rollback", "--yes", "--json", "--backup", undo["restores"], "--root", str(host))[1])  # type: ignore[arg-type]
    assert redo["effect"] == "rolled back"  # the apply's backup: the state before the apply
    assert grub(host) == PVE_GRUB
    doc = json_of(invoke("rollback", "--dry-run", "--json", "--backup", rollback_backup, "--root", str(host))[1])
    assert doc["effect"] == "re-applied"
    assert doc["reboot_required"] is False  # a dry run
    assert any("was saved by a rollback" in n for n in doc["notes"])  # type: ignore[union-attr]
    doc = json_of(invoke("apply", "--dry-run", "--json", "--root", str(host))[1])
    assert doc["effect"] == "applied"


@pytest.mark.parametrize(
    ("keys", "code"),
    [
        ([b"n\n"], 1),
        ([b"\x04"], 1),  # Ctrl-D: the end of input is a no
        ([b"\x03"], 130),  # Ctrl-C: an interruption
        ([b"maybe\n", b"\n", b"No\n"], 1),  # only y, yes, n and no are answers: asked again
    ],
)
def test_a_no_at_the_question_ends_the_line_and_says_what_next(host: Path, keys: list[bytes], code: int) -> None:
    before = snapshot(host)
    got, seen = on_a_terminal([sys.executable, "-m", "mlxfix", "apply", "--root", str(host)], keys)
    assert got == code, seen
    assert seen.count(b"Apply these changes? [y/n] ") == len(keys)
    assert seen.count(b"Please answer y (yes) or n (no).") == len(keys) - 1
    after = seen.rsplit(b"[y/n] ", 1)[1]
    assert after.startswith((b"\r\n", b"n\r\n", b"No\r\n", b"^C\r\n")), after  # the line is ended
    assert b"nothing was changed" in after
    assert b"run mlxfix apply again" in after
    assert snapshot(host) == before


def test_yes_in_any_case_applieson_a_terminal(host: Path) -> None:
    got, seen = on_a_terminal([sys.executable, "-m", "mlxfix", "apply", "--root", str(host)], [b"YES\n"])
    assert got == 0, seen
    assert grub(host) == EXPECTED


@pytest.mark.parametrize(("keys", "answer"), [([b"\x03"], "False"), ([b"\x04"], "False"), ([b"x\n", b"y\n"], "True")])
def test_the_reboot_question_takes_ctrl_c_and_ctrl_d_as_no(keys: list[bytes], answer: str) -> None:
    script = "from mlxfix.cli.actions import _ask; print('answer', _ask('Reboot now?', ctrl_c=False))"
    got, seen = on_a_terminal([sys.executable, "-c", script], keys)
    assert got == 0, seen
    assert seen.rsplit(b"[y/n] ", 1)[1].split(b"answer ")[0] in (b"\r\n", b"^C\r\n", b"y\r\n"), seen
    assert f"answer {answer}".encode() in seen


def test_apply_in_a_vm_warns_that_the_fix_belongs_on_the_hypervisor(host: Path, tmp_path: Path) -> None:
    """diagnose says it; apply in a guest said nothing. The warning comes with the plan (before the
    question), in the JSON, and in the report; bare metal gets none."""
    bare = run("apply", "--dry-run", "--json", "--root", str(host))
    assert not [w for w in json_of(bare.stdout)["warnings"] if "VM" in w]  # type: ignore[union-attr]
    write(host, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lm\n")
    dry = run("apply", "--dry-run", "--root", str(host))
    plan = dry.stdout.partition("Dry run:")[0]
    assert "warning: this host is a VM (vm; the CPU has the hypervisor flag (/proc/cpuinfo))" in plan
    assert "the fix belongs on the hypervisor host's kernel command line" in plan
    doc = json_of(run("apply", "--yes", "--json", "--root", str(host)).stdout)
    assert doc["changed"] is True
    assert any(w.startswith("this host is a VM") for w in doc["warnings"])  # type: ignore[union-attr]
    again = json_of(run("apply", "--yes", "--json", "--root", str(host)).stdout)
    assert not [w for w in again["warnings"] if "VM" in w]  # type: ignore[union-attr]  # nothing to do: nothing to warn of


@pytest.mark.parametrize("way_out", ["rollback", "apply"])
def test_a_second_ctrl_c_during_the_restore_says_both_ways_out(tmp_path: Path, way_out: str) -> None:
    """The first Ctrl-C starts putting the files back; a second one stops that half-way. The record
    of the run stays, and the admin (who wanted out) is told both ways on; each of them works."""
    import signal

    host = debian_host(tmp_path / "root")
    original = grub(host)
    first, second = tmp_path / "first", tmp_path / "second"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxfix", "apply", "--yes", "--root", str(host)],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-write:{first},restoring:{second}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_pause(first, proc)
    os.killpg(proc.pid, signal.SIGINT)
    wait_for_pause(second, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted again (Ctrl-C) while the original files were being put back" in err
    assert "run mlxfix apply to finish the change, or mlxfix rollback to undo it" in err
    assert (host / "var/lib/mlxfix/intent.json").exists()
    assert grub(host) == EXPECTED  # the restore had not begun
    code, _, err = invoke(way_out, "--yes", "--root", str(host))
    assert code == 0, err
    assert grub(host) == (original if way_out == "rollback" else EXPECTED)
    assert not (host / "var/lib/mlxfix/intent.json").exists()


def test_an_admins_umask_of_000_does_not_lock_mlxfix_out_of_its_state_directory(tmp_path: Path) -> None:
    """The parents of /var/lib/mlxfix that mlxfix makes are 0755 whatever the umask: a 0777 one would
    be refused (another user could control it) by every later run."""
    import shutil

    host = debian_host(tmp_path / "root")
    shutil.rmtree(host / "var", ignore_errors=True)

    def mlxfix(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlxfix", *args, "--root", str(host)],
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=lambda: os.umask(0),
        )

    first = mlxfix("apply", "--yes")
    assert first.returncode == 0, first.stderr
    assert [stat.S_IMODE((host / d).stat().st_mode) for d in ("var", "var/lib", "var/lib/mlxfix")] == [0o755, 0o755, 0o700]
    again = mlxfix("rollback", "--yes")
    assert again.returncode == 0, again.stderr


KALI_IF = (
    'if ! echo "$GRUB_CMDLINE_LINUX_DEFAULT" | grep -q splash; then\n'
    '    GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"\nfi\n'
)
UNKNOWABLE = (
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\nif [ -e /etc/x ]; then GRUB_CMDLINE_LINUX_DEFAULT=""; fi\n'
)


def test_an_unknowable_value_gets_mlxfix_own_drop_in_and_rollback_removes_it(tmp_path: Path) -> None:
    from tests.oracle import sh_values

    root = debian_host(tmp_path / "root", UNKNOWABLE, {"kali-themes.cfg": KALI_IF})
    dry = run("apply", "--dry-run", "--root", str(root), "--boot-setup", "grub-debian")
    assert dry.returncode == 0, dry.stderr
    assert "--- /dev/null\n+++ b/etc/default/grub.d/zz-mlxfix.cfg\n" in dry.stdout
    assert "no edit of an assignment is provably right" in dry.stdout
    proc = run("apply", "--yes", "--root", str(root), "--boot-setup", "grub-debian", "--no-reboot")
    assert proc.returncode == 0, proc.stderr
    ours = root / "etc/default/grub.d/zz-mlxfix.cfg"
    assert stat.S_IMODE(ours.stat().st_mode) == 0o644
    d = root / "etc/default"
    value = sh_values([d / "grub", d / "grub.d/kali-themes.cfg", ours], ["GRUB_CMDLINE_LINUX_DEFAULT"])
    assert value["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet splash pci=realloc=off"
    again = run("apply", "--dry-run", "--root", str(root), "--boot-setup", "grub-debian")
    assert "already in place" in again.stdout
    status = run("status", "--root", str(root), "--boot-setup", "grub-debian")
    assert status.returncode == 11, status.stdout + status.stderr  # configured: the drop-in ends the line
    back = run("rollback", "--yes", "--root", str(root), "--boot-setup", "grub-debian", "--no-reboot")
    assert back.returncode == 0, back.stderr
    assert not ours.exists()


def test_a_drop_in_that_would_not_sort_last_is_refused(tmp_path: Path) -> None:
    root = debian_host(tmp_path / "root", UNKNOWABLE, {"zzz-late.cfg": "GRUB_X=1\n"})
    proc = run("apply", "--dry-run", "--root", str(root), "--boot-setup", "grub-debian")
    assert proc.returncode == 1
    assert "zzz-late.cfg may sort after it" in proc.stderr


def test_setups_that_do_not_source_grub_d_keep_refusing(tmp_path: Path) -> None:
    root = debian_host(tmp_path / "root", UNKNOWABLE, {"a.cfg": "GRUB_X=1\n"})
    proc = run("apply", "--dry-run", "--root", str(root), "--boot-setup", "grub")
    assert proc.returncode == 1
    assert "does not source /etc/default/grub.d/*.cfg" in proc.stderr


def test_a_package_conffile_is_not_edited_a_drop_in_appends_instead(tmp_path: Path) -> None:
    kdump = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=384M-:128M pci=realloc"\n'
    root = debian_host(tmp_path / "root", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', {"kdump-tools.cfg": kdump})
    write(root, "/var/lib/dpkg/info/kdump-tools.conffiles", "/etc/default/kdump-tools\n/etc/default/grub.d/kdump-tools.cfg\n")
    proc = run("apply", "--dry-run", "--root", str(root), "--boot-setup", "grub-debian")
    assert proc.returncode == 0, proc.stderr
    assert "belongs to the package kdump-tools" in proc.stdout
    assert "+++ b/etc/default/grub.d/kdump-tools.cfg" not in proc.stdout
    assert "--- /dev/null\n+++ b/etc/default/grub.d/zz-mlxfix.cfg\n" in proc.stdout


def test_etc_default_grub_is_never_a_package_file(tmp_path: Path) -> None:
    root = debian_host(tmp_path / "root", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', {"a.cfg": "GRUB_X=1\n"})
    write(root, "/var/lib/dpkg/info/grub-pc.conffiles", "/etc/default/grub\n")  # (a forged list)
    proc = run("apply", "--dry-run", "--root", str(root), "--boot-setup", "grub-debian")
    assert proc.returncode == 0, proc.stderr
    assert "+++ b/etc/default/grub\n" in proc.stdout


GUARDED = (
    'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash mitigations=off"\nGRUB_CMDLINE_LINUX=""\n\n'
    "if test -f /etc/default/grub.local\nthen\n  . /etc/default/grub.local\nfi\n"
)  # the shape of ../shared/corpus/grub-more/080-hoskeri-dotfiles.grub (issue 18, item 4)


def test_a_guarded_dot_of_a_file_the_tree_lacks_is_edited(tmp_path: Path) -> None:
    """``if test -f /etc/default/grub.local; then . ...; fi``: the file is not in the tree, so the
    ``.`` never runs and sh cannot stop there; it used to be refused."""
    root = debian_host(tmp_path / "root", GUARDED)
    proc = run("apply", "--yes", "--root", str(root), "--boot-setup", "grub-debian", "--no-reboot")
    assert proc.returncode == 0, proc.stderr
    assert b'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash mitigations=off pci=realloc=off"' in grub(root)
    assert "after:  quiet splash mitigations=off pci=realloc=off" in proc.stdout


@pytest.mark.parametrize(
    ("local", "outcome", "value"),
    [
        ("GRUB_TIMEOUT=2\n", "edit", "quiet splash mitigations=off pci=realloc=off"),  # leaves the line alone
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT nomodeset"\n',
            "edit",
            "quiet splash mitigations=off pci=realloc=off nomodeset",
        ),  # appends
        ('GRUB_CMDLINE_LINUX_DEFAULT="nomodeset"\n', "drop-in", "nomodeset pci=realloc=off"),  # replaces
        ("exit 0\n", "refused", ""),  # grub-mkconfig would stop there
    ],
)
def test_a_guarded_dot_of_a_file_the_tree_has_is_read_and_judged(tmp_path: Path, local: str, outcome: str, value: str) -> None:
    """The file is there: what it does decides. The value is checked with /bin/sh sourcing the
    result, the guarded file included (at a path the oracle's sh, which runs as nobody, can read)."""
    import tempfile

    from tests.oracle import sh_values

    root = debian_host(tmp_path / "root", GUARDED, {"10-other.cfg": "GRUB_TIMEOUT=5\n"})
    write(root, "/etc/default/grub.local", local)
    before = snapshot(root)
    proc = run("apply", "--yes", "--root", str(root), "--boot-setup", "grub-debian", "--no-reboot")
    if outcome == "refused":
        assert proc.returncode == 1
        assert "exit" in proc.stderr
        assert "in /etc/default/grub.local, which this block sources" in proc.stderr
        assert snapshot(root) == before
        return
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/default/grub.local").read_text() == local  # never mlxfix's to write
    d = root / "etc/default"
    ours = d / "grub.d/zz-mlxfix.cfg"
    assert ours.exists() == (outcome == "drop-in")
    with tempfile.TemporaryDirectory(prefix="mlxfix-guarded-") as work:
        os.chmod(work, 0o755)
        shared = Path(work)
        (shared / "grub.local").write_text(local)
        (shared / "grub.local").chmod(0o644)
        main = shared / "grub"
        main.write_text((d / "grub").read_text().replace("/etc/default/grub.local", str(shared / "grub.local")))
        files = [main, d / "grub.d/10-other.cfg", *([ours] if ours.exists() else [])]
        assert sh_values(files, ["GRUB_CMDLINE_LINUX_DEFAULT"])["GRUB_CMDLINE_LINUX_DEFAULT"] == value
