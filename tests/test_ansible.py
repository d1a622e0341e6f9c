"""examples/ansible/site.yml and its action plugin, run for real with ansible-playbook against the
private sshd on 127.0.0.1 (and a local-connection host), each target with its own copy of an example
tree as mlxfix_root.

The main case is agentless (mlxfix_mode=controller, the default): mlxfix runs on the controller with
--host. Its target is an sshd whose sessions cannot run mlxfix at all (the package is hidden from them
in their mount namespace) and see a boot id the test changes, as a reboot does; the reboot is Ansible's
own reboot module with only its command replaced. mlxfix_mode=target (mlxfix installed on the host)
runs against the ordinary test sshd.

ansible-core 2.19 has no ``json`` stdout callback (it lives in ansible.posix), so what the tests assert
is read from the default callback's output, as a user reads it: the PLAY RECAP counts, the diff above a
task's result, a failed task's msg."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.trees import json_of, run, snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.sshd import Sshd

pytestmark = [pytest.mark.root, pytest.mark.slow]

PLAYBOOK = ROOT / "examples" / "ansible" / "site.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
TIMEOUT = 300
GRUB = "etc/default/grub"
BEFORE_LINE = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"'
AFTER_LINE = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"'
ORIGINAL = (EXAMPLES / "pve-missing-uar" / GRUB).read_bytes()
FIXED = ORIGINAL.replace(f"{BEFORE_LINE}\n".encode(), f"{AFTER_LINE}\n".encode())
REFUSED = f"if true; then\n{BEFORE_LINE}\nfi\n".encode()
REFUSAL = "/etc/default/grub:2:1: cannot know the value of GRUB_CMDLINE_LINUX_DEFAULT without running the file"

RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)
# fatal: [host -> localhost]: FAILED! => {...the result as JSON, on one line...}
FATAL = re.compile(r"^fatal: \[(\S+?)(?: -> \S+)?\]: FAILED! => (\{.*\})$", re.MULTILINE)
# Under the apply task's banner: the diff, then the host's result line.
SHOWN_DIFF = re.compile(r"^(--- .*?)^changed: \[(\S+?)( -> \S+)?\]$", re.MULTILINE | re.DOTALL)


@dataclass
class Play:
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
        assert "PLAY RECAP" in self.output, self.output
        text = self.output.split("PLAY RECAP", 1)[1]
        return {
            host: {k: int(v) for k, v in (pair.split("=") for pair in counts.split())}
            for host, counts in RECAP_LINE.findall(text)
        }

    def task(self, name: str) -> list[str]:
        """The output under each banner of the task called ``name`` (one per host with serial: 1)."""
        return [block.split("\n", 1)[1] for block in self.output.split("\nTASK [")[1:] if block.startswith(f"{name}]")]

    def diffs(self) -> dict[str, tuple[str, str]]:
        """host -> (the diff shown above its apply result, the delegation in its label: "" or " -> localhost")."""
        shown = {}
        for body in self.task("Apply with mlxfix (--dry-run in check mode)"):
            for diff, host, delegated in SHOWN_DIFF.findall(body):
                shown[host] = (diff, delegated)
        return shown

    def failures(self) -> dict[str, dict[str, object]]:
        """host -> the result of its failed task, as the default callback prints it."""
        return {host: json.loads(body) for host, body in FATAL.findall(self.output)}


@dataclass
class Fleet:
    """The targets of one test, their trees, and ansible-playbook with private state directories."""

    tmp: Path
    sshd: Sshd
    hosts: dict[str, dict[str, object]] = field(default_factory=dict)
    trees: dict[str, Path] = field(default_factory=dict)

    def add(self, name: str, connection: str, example: str = "pve-missing-uar", **hostvars: object) -> Path:
        tree = self.tmp / "trees" / name
        shutil.copytree(EXAMPLES / example, tree, symlinks=True)
        if connection == "local":
            how: dict[str, object] = {"ansible_connection": "local"}
        else:
            d = self.sshd.dir
            # The inventory of a user's ssh host: mlxfix's --host and --ssh-option are built from it.
            how = {
                "ansible_connection": "ssh",
                "ansible_host": "127.0.0.1",
                "ansible_port": self.sshd.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(d / "client_key"),
                # Host key checking stays on: the server's key is known from its own known_hosts file.
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={d / 'known_hosts'} "
                "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes",
                # The private sshd has no sftp subsystem (nor scp, which uses it): send modules over ssh's pipe.
                "ansible_ssh_transfer_method": "piped",
            }
        self.hosts[name] = {**how, "ansible_python_interpreter": sys.executable, "mlxfix_root": str(tree), **hostvars}
        self.trees[name] = tree
        return tree

    def play(self, *args: str, extra_vars: dict[str, object] | None = None) -> Play:
        if not ANSIBLE_PLAYBOOK.exists():
            pytest.fail(f"{ANSIBLE_PLAYBOOK} is missing: install the test extras (pip install -e '.[test]')")
        inventory = self.tmp / "inventory.json"  # YAML inventory, written as JSON: no INI quoting
        inventory.write_text(
            json.dumps(
                {
                    "mlx_hosts": {
                        "hosts": self.hosts,
                        "vars": {
                            "mlxfix_command": f"{sys.executable} -m mlxfix",
                            "mlxfix_environment": {"PYTHONPATH": str(ROOT)},
                            "mlxfix_skip_reboot": True,
                            **(extra_vars or {}),
                        },
                    }
                }
            )
        )
        state = self.tmp / "ansible"
        dirs = {k: state / k.lower() for k in ("ANSIBLE_HOME", "ANSIBLE_REMOTE_TEMP", "ANSIBLE_LOCAL_TEMP")}
        # A socket path has at most 107 bytes: tmp_path under pytest -n is too deep for ssh's control sockets.
        dirs["ANSIBLE_SSH_CONTROL_PATH_DIR"] = Path(tempfile.mkdtemp(prefix="mlx-cp-", dir="/tmp"))
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (state / "ansible.cfg").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update({k: str(v) for k, v in dirs.items()})
        env.update(
            ANSIBLE_CONFIG=str(state / "ansible.cfg"),  # no ansible.cfg from the machine or the user
            ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
            ANSIBLE_NOCOLOR="1",
        )
        try:
            proc = subprocess.run(
                [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=TIMEOUT,
                check=False,
                cwd=self.tmp,
            )
        finally:
            # ansible's ssh masters persist for 60 s: end them now, through their control sockets.
            for sock in dirs["ANSIBLE_SSH_CONTROL_PATH_DIR"].iterdir():
                subprocess.run(
                    ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "127.0.0.1"], capture_output=True, timeout=30, check=False
                )
            shutil.rmtree(dirs["ANSIBLE_SSH_CONTROL_PATH_DIR"], ignore_errors=True)
        return Play(proc.returncode, proc.stdout + proc.stderr)


@dataclass
class Target:
    """The agentless target: an sshd whose sessions cannot run mlxfix, with a boot id a reboot changes."""

    sshd: Sshd
    tmp: Path
    bootid: Path

    @property
    def reboots(self) -> str:
        log = self.tmp / "reboots"
        return log.read_text() if log.exists() else ""

    def reboot_command(self, then: str = "") -> str:
        """mlxfix_reboot_command: log the reboot, give the host a new boot id (and run ``then``)."""
        script = f"echo rebooted >> {self.tmp / 'reboots'}; cat /proc/sys/kernel/random/uuid > {self.bootid}; {then}"
        return f"sh -c {shlex.quote(script)}"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    from tests.namespace import require_root
    from tests.sshd import Sshd

    require_root()
    bootid = tmp_path / "bootid"
    bootid.write_text(f"{uuid.uuid4()}\n")
    # In the sessions' mount namespace the mlxfix package is an empty directory, and the boot id is a file.
    spec = importlib.util.find_spec("mlxfix")
    assert spec is not None, "mlxfix is not importable on the controller"
    assert spec.origin is not None, spec
    package = Path(spec.origin).parent  # wherever the package lives
    script = (
        f"set -e; mount --make-rprivate /; mount -t tmpfs tmpfs {shlex.quote(str(package))}; "
        f'mount --bind {shlex.quote(str(bootid))} /proc/sys/kernel/random/boot_id; exec "$@"'
    )
    server = Sshd(wrapper=["unshare", "-m", "sh", "-c", script, "sh"])
    try:
        there = subprocess.run(
            [*server.ssh_argv(), f"{sys.executable} -m mlxfix --help; mlxfix --help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert there.returncode != 0, "mlxfix must not run on the agentless target"
        assert "No module named mlxfix" in there.stderr, there.stderr
        yield Target(server, tmp_path, bootid)
    finally:
        server.stop()


@pytest.fixture
def fleet(tmp_path: Path, target: Target) -> Fleet:
    return Fleet(tmp_path, target.sshd)


def grub(tree: Path) -> bytes:
    return (tree / GRUB).read_bytes()


def backups(tree: Path) -> list[dict[str, object]]:
    proc = run("backups", "--json", "--root", str(tree))
    assert proc.returncode == 0, proc.stderr
    listed = json_of(proc.stdout)["backups"]
    assert isinstance(listed, list)
    return listed


def assert_grub_diff(diff: str) -> None:
    lines = diff.splitlines()
    assert lines[:2] == ["--- a/etc/default/grub", "+++ b/etc/default/grub"], diff
    assert f"-{BEFORE_LINE}" in lines, diff
    assert f"+{AFTER_LINE}" in lines, diff
    assert [line[0] for line in lines[2:] if line[:1] in "+-"] == ["-", "+"], diff


def test_check_mode_shows_the_diff_and_changes_nothing(fleet: Fleet) -> None:
    fleet.add("localhost", "local")
    fleet.add("pve-ssh", "ssh")
    # An ssh flag with no -o form: Ansible's ssh takes it, mlxfix's cannot, and says so.
    common = fleet.hosts["pve-ssh"]["ansible_ssh_common_args"]
    fleet.hosts["pve-ssh"]["ansible_ssh_common_args"] = f"-F /dev/null {common}"
    before = {name: snapshot(tree) for name, tree in fleet.trees.items()}

    play = fleet.play("--check", "--diff")

    assert play.returncode == 0, play.output
    recap = play.recap
    assert set(recap) == {"localhost", "pve-ssh"}, play.output
    for name, tree in fleet.trees.items():
        assert recap[name]["changed"] == 1, (name, play.output)  # would change
        assert recap[name]["failed"] == recap[name]["unreachable"] == 0, (name, play.output)
        assert grub(tree) == ORIGINAL
        assert snapshot(tree) == before[name]  # not even a backup or a lock file
    diffs = play.diffs()
    assert set(diffs) == {"localhost", "pve-ssh"}, play.output
    assert diffs["pve-ssh"][1] == " -> localhost"  # mlxfix ran on the controller
    for diff, _ in diffs.values():
        assert_grub_diff(diff)
    warning = "[WARNING]: ansible_ssh_common_args: mlxfix's ssh takes -o options only; not used by mlxfix: -F /dev/null"
    assert play.output.count(warning) == 1, play.output  # pve-ssh's, not localhost's


def test_apply_on_every_host_then_idempotent(fleet: Fleet) -> None:
    fleet.add("localhost", "local")
    fleet.add("pve-ssh", "ssh")

    play = fleet.play()

    assert play.returncode == 0, play.output
    recap = play.recap
    assert set(recap) == {"localhost", "pve-ssh"}, play.output
    for name, tree in fleet.trees.items():
        assert recap[name]["changed"] == 1, (name, play.output)
        assert recap[name]["failed"] == recap[name]["unreachable"] == 0, (name, play.output)
        # mlxfix_skip_reboot: the apply task is all that ran (no reboot, so no verify, nothing to keep)
        assert recap[name]["ok"] == 1, (name, play.output)
        assert recap[name]["skipped"] == 3, (name, play.output)
        assert grub(tree) == FIXED
        saved = backups(tree)
        assert len(saved) == 1
        assert saved[0]["files"] == [
            {
                "path": "/etc/default/grub",
                "sha256": hashlib.sha256(ORIGINAL).hexdigest(),
                "size": len(ORIGINAL),
                "mode": "0644",
                "existed": True,
            }
        ]
        assert (tree / "var/lib/mlxfix/backups" / str(saved[0]["id"])).is_dir()
    assert play.diffs() == {}  # no --diff, no diff
    after = {name: snapshot(tree) for name, tree in fleet.trees.items()}

    again = fleet.play("--diff")

    assert again.returncode == 0, again.output
    recap = again.recap
    assert set(recap) == {"localhost", "pve-ssh"}, again.output
    for name, tree in fleet.trees.items():
        assert recap[name]["changed"] == 0, (name, again.output)
        assert recap[name]["ok"] == 1, (name, again.output)
        assert recap[name]["failed"] == recap[name]["unreachable"] == 0, (name, again.output)
        assert grub(tree) == FIXED
        assert len(backups(tree)) == 1
        assert snapshot(tree) == after[name]
    assert again.diffs() == {}  # nothing changed: nothing to show


def test_a_refusing_host_stops_the_rollout_with_mlxfix_reason(fleet: Fleet) -> None:
    """serial: 1 and max_fail_percentage: 0: hosts before the failure keep their change, the failing
    host is untouched and its task's msg is mlxfix's reason, the hosts after it are not run at all."""
    fleet.add("localhost", "local")
    refusing = fleet.add("pve-ssh", "ssh")
    later = fleet.add("pve-later", "local")
    (refusing / GRUB).write_bytes(REFUSED)
    refusing_before, later_before = snapshot(refusing), snapshot(later)

    play = fleet.play()

    assert play.returncode != 0, play.output
    recap = play.recap
    assert recap["localhost"]["changed"] == 1, play.output
    assert recap["localhost"]["failed"] == 0, play.output
    assert grub(fleet.trees["localhost"]) == FIXED
    assert recap["pve-ssh"]["failed"] == 1, play.output
    assert recap["pve-ssh"]["changed"] == 0, play.output
    assert grub(refusing) == REFUSED
    assert snapshot(refusing) == refusing_before
    failures = play.failures()
    assert set(failures) == {"pve-ssh"}, play.output
    msg = failures["pve-ssh"]["msg"]
    assert isinstance(msg, str)
    assert msg.startswith(REFUSAL), msg  # mlxfix's reason, with file and line, is the task's msg
    assert f"[ERROR]: Task failed: Action failed: {REFUSAL}" in play.output  # and Ansible says it first
    assert failures["pve-ssh"]["rc"] == 1
    assert "pve-later" not in recap, play.output
    assert snapshot(later) == later_before
    assert grub(later) == ORIGINAL


def test_changed_hosts_reboot_one_at_a_time_and_a_bad_one_fails_the_play(fleet: Fleet, target: Target) -> None:
    """The first host's tree is one where the fix works after the reboot, the second one's is the
    story host, still broken after it: verify fails the play there, with the failed checks."""
    good = fleet.add("good", "ssh", example="pve-fixed")
    (good / GRUB).write_bytes(grub(good).replace(b" pci=realloc=off", b""))  # to change, then verified fixed
    cmdline = good / "proc/cmdline"
    (good / "cmdline.next").write_text(cmdline.read_text())  # what its kernel gets after the reboot
    cmdline.write_text(cmdline.read_text().replace(" pci=realloc=off", ""))  # what it runs with now
    fleet.add("bad", "ssh")

    reboot = target.reboot_command(then=f"cp {good / 'cmdline.next'} {cmdline}")
    play = fleet.play(extra_vars={"mlxfix_skip_reboot": False, "mlxfix_reboot_command": reboot, "mlxfix_reboot_timeout": 120})

    assert play.returncode != 0, play.output
    recap = play.recap
    assert recap["good"]["failed"] == 0, play.output
    assert recap["good"]["changed"] == 2, play.output  # the apply, and the reboot
    assert recap["good"]["ok"] == 3, play.output  # and verify
    assert recap["bad"]["failed"] == 1, play.output
    assert recap["bad"]["changed"] == 2, play.output
    msg = play.failures()["bad"]["msg"]
    assert isinstance(msg, str)
    assert msg.startswith("mlxfix verify failed on bad: cmdline: /proc/cmdline lacks pci=realloc=off;"), msg
    assert "0000:01:00.0 BAR 2: not assigned" in msg, msg
    assert target.reboots == "rebooted\nrebooted\n"  # each host once, one after the other
    assert b"pci=realloc=off" in grub(good)


def test_a_host_applied_but_not_rebooted_is_rebooted_and_verified(fleet: Fleet, target: Target) -> None:
    """An earlier run applied the fix and was interrupted before the reboot: the configuration is
    there (apply: ok, not changed), the running kernel does not have it (pending-reboot). The play
    still reboots the host, then verifies it."""
    tree = fleet.add("pending", "ssh", example="pve-fixed")
    cmdline = tree / "proc/cmdline"
    booted = cmdline.read_text()  # what the kernel gets after the reboot
    cmdline.write_text(booted.replace(" pci=realloc=off", ""))  # what it runs with now
    (tree / "cmdline.next").write_text(booted)
    before = snapshot(tree)
    reboot = {
        "mlxfix_skip_reboot": False,
        "mlxfix_reboot_command": target.reboot_command(then=f"cp {tree / 'cmdline.next'} {cmdline}"),
        "mlxfix_reboot_timeout": 120,
    }

    check = fleet.play("--check", "--diff", extra_vars=reboot)

    assert check.returncode == 0, check.output
    assert check.recap["pending"] == {**check.recap["pending"], "ok": 2, "changed": 1, "failed": 0, "skipped": 2}, check.output
    assert "changed: [pending]" in check.task("Reboot into the new kernel command line")[0]  # would reboot
    assert check.diffs() == {}  # nothing to write
    assert target.reboots == ""
    assert snapshot(tree) == before

    play = fleet.play(extra_vars=reboot)

    assert play.returncode == 0, play.output
    assert play.recap["pending"] == {**play.recap["pending"], "ok": 3, "changed": 1, "failed": 0}, play.output
    assert "ok: [pending -> localhost]" in play.task("Apply with mlxfix (--dry-run in check mode)")[0]
    assert "ok: [pending -> localhost]" in play.task("Verify with mlxfix after the reboot")[0]
    assert target.reboots == "rebooted\n"

    again = fleet.play(extra_vars=reboot)  # in effect now: nothing to do, no reboot

    assert again.returncode == 0, again.output
    assert again.recap["pending"] == {**again.recap["pending"], "ok": 1, "changed": 0, "skipped": 3}, again.output
    assert target.reboots == "rebooted\n"


def test_target_mode_runs_mlxfix_installed_on_the_hosts(tmp_path: Path, sshd: Sshd) -> None:
    """mlxfix_mode=target: mlxfix runs on each host through Ansible's connection, as before the
    controller mode; check mode shows the diff, a real run applies it."""
    fleet = Fleet(tmp_path, sshd)
    fleet.add("localhost", "local")
    fleet.add("pve-ssh", "ssh")

    check = fleet.play("--check", "--diff", extra_vars={"mlxfix_mode": "target"})

    assert check.returncode == 0, check.output
    for name, tree in fleet.trees.items():
        assert check.recap[name]["changed"] == 1, (name, check.output)
        assert check.recap[name]["failed"] == 0, (name, check.output)
        assert grub(tree) == ORIGINAL
    diffs = check.diffs()
    assert set(diffs) == {"localhost", "pve-ssh"}, check.output
    for diff, delegated in diffs.values():
        assert delegated == ""  # mlxfix ran on the host itself
        assert_grub_diff(diff)

    play = fleet.play(extra_vars={"mlxfix_mode": "target"})

    assert play.returncode == 0, play.output
    for name, tree in fleet.trees.items():
        assert play.recap[name]["changed"] == 1, (name, play.output)
        assert play.recap[name]["failed"] == 0, (name, play.output)
        assert grub(tree) == FIXED
        assert len(backups(tree)) == 1


def trial_host(fleet: Fleet, name: str) -> Path:
    """A Proxmox VE host whose ConnectX-3 works once the kernel has the parameter (pve-fixed's devices
    and log), not configured yet, with the grub.cfg update-grub wrote for it: a trial can copy its entry."""
    tree = fleet.add(name, "ssh", example="pve-fixed")
    (tree / GRUB).write_bytes(grub(tree).replace(b" pci=realloc=off", b""))
    cmdline = tree / "proc/cmdline"
    cmdline.write_text(cmdline.read_text().replace(" pci=realloc=off", ""))
    cfg = (EXAMPLES / "debian-grub/boot/grub/grub.cfg").read_text()
    cfg = cfg.replace("vmlinuz-6.1.0-28-amd64", "vmlinuz-6.8.12-4-pve").replace(
        "initrd.img-6.1.0-28-amd64", "initrd.img-6.8.12-4-pve"
    )
    cfg = cfg.replace("root=UUID=2f1e0c4a-3d47-4a8b-9f0e-6b1a2c3d4e5f", "root=/dev/mapper/pve-root")
    (tree / "boot/grub").mkdir(parents=True)
    (tree / "boot/grub/grub.cfg").write_text(cfg)
    return tree


def trial_boot(tree: Path) -> str:
    """The reboot's part the boot loader plays, as a shell line for the reboot command: the one-time
    entry boots, and its kernel line (GRUB gives the kernel BOOT_IMAGE= and the arguments, one space
    apart) becomes /proc/cmdline."""
    custom, cmdline = shlex.quote(str(tree / "boot/grub/custom.cfg")), shlex.quote(str(tree / "proc/cmdline"))
    return (
        f"sed -n 's/^[[:space:]]*linux[[:space:]]*//p' {custom} | "
        f'{{ read -r image args; set -f; echo "BOOT_IMAGE=$image" $args; }} > {cmdline}'
    )


def test_a_trial_that_verifies_is_kept_without_a_second_reboot(fleet: Fleet, target: Target) -> None:
    """mlxfix_trial: arm the one-time boot (the default boot's files untouched), reboot into it,
    verify that boot, then apply for good: one reboot in all, the trial entry gone, the change kept."""
    tree = trial_host(fleet, "trial")
    before = grub(tree)
    check = fleet.play("--check", "--diff", extra_vars={"mlxfix_trial": True})

    assert check.returncode == 0, check.output
    applied = check.task("Apply with mlxfix (--dry-run in check mode)")[0]
    assert "+++ b/boot/grub/custom.cfg" in applied, check.output
    assert not (tree / "boot/grub/custom.cfg").exists()

    reboot = target.reboot_command(then=trial_boot(tree))
    play = fleet.play(
        "-v",
        extra_vars={
            "mlxfix_trial": True,
            "mlxfix_skip_reboot": False,
            "mlxfix_reboot_command": reboot,
            "mlxfix_reboot_timeout": 120,
        },
    )

    assert play.returncode == 0, play.output
    assert play.recap["trial"] == {**play.recap["trial"], "ok": 4, "changed": 3, "failed": 0}, play.output
    assert "armed a one-time boot of 'mlxfix trial: Debian GNU/Linux' with pci=realloc=off" in play.output
    assert "pci=realloc=off panic=10" in (tree / "proc/cmdline").read_text()  # the trial boot's kernel line
    assert "(a trial boot)" in play.task("Verify with mlxfix after the reboot")[0]
    assert "changed: [trial -> localhost]" in play.task("Keep the trial (mlxfix apply, no second reboot)")[0]
    assert target.reboots == "rebooted\n"  # one reboot: the trial's
    assert grub(tree) == before.replace(
        b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', b'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"'
    )
    assert not (tree / "boot/grub/custom.cfg").exists()  # mlxfix made it for the trial entry: gone with it


def test_a_trial_that_falls_back_fails_the_play_and_changes_nothing_for_good(fleet: Fleet, target: Target) -> None:
    """The trial boot hangs or panics: the host comes back on its old default (here: the reboot
    leaves /proc/cmdline as it was). verify fails with a message that says so, and nothing is kept."""
    tree = trial_host(fleet, "fallback")
    before = grub(tree)
    play = fleet.play(
        extra_vars={
            "mlxfix_trial": True,
            "mlxfix_skip_reboot": False,
            "mlxfix_reboot_command": target.reboot_command(),
            "mlxfix_reboot_timeout": 120,
        }
    )
    assert play.returncode != 0, play.output
    assert play.recap["fallback"]["failed"] == 1, play.output
    msg = play.failures()["fallback"]["msg"]
    assert isinstance(msg, str)
    assert msg.startswith("the trial boot of pci=realloc=off did not hold on fallback: it runs its old default again"), msg
    assert not play.task("Keep the trial (mlxfix apply, no second reboot)")
    assert grub(tree) == before
    assert target.reboots == "rebooted\n"
