"""examples/ansible/site.yml, run for real with ansible-playbook: one target over a local connection,
one through the private sshd on 127.0.0.1, each with its own copy of examples/pve-missing-uar as
mlxfix_root. Reboots are skipped (mlxfix_skip_reboot), so verify is skipped too.

ansible-core 2.19 has no ``json`` stdout callback (it lives in ansible.posix), so the per-host counts
are read from the default callback's PLAY RECAP, as a user reads them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.trees import json_of, run, snapshot

if TYPE_CHECKING:
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

RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)
# The diff task's output per host: ok: [host] => (item=/etc/default/grub) => { "msg": [lines] }
DIFF_RESULT = re.compile(r"^ok: \[(\S+)\] => \(item=(\S+)\) => (\{$.*?^\})$", re.MULTILINE | re.DOTALL)


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

    def diffs(self) -> dict[tuple[str, str], list[str]]:
        """(host, file) -> the diff lines the play showed for it."""
        return {(host, path): json.loads(body)["msg"] for host, path, body in DIFF_RESULT.findall(self.output)}


@dataclass
class Fleet:
    """The targets of one test, their trees, and ansible-playbook with private state directories."""

    tmp: Path
    sshd: Sshd
    hosts: dict[str, dict[str, object]] = field(default_factory=dict)
    trees: dict[str, Path] = field(default_factory=dict)

    def add(self, name: str, connection: str, example: str = "pve-missing-uar") -> Path:
        tree = self.tmp / "trees" / name
        shutil.copytree(EXAMPLES / example, tree, symlinks=True)
        if connection == "local":
            how: dict[str, object] = {"ansible_connection": "local"}
        else:
            d = self.sshd.dir
            how = {
                "ansible_connection": "ssh",
                "ansible_host": "127.0.0.1",
                "ansible_port": self.sshd.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(d / "client_key"),
                # Host key checking stays on: the server's key is known from its own known_hosts file.
                "ansible_ssh_common_args": f"-F /dev/null -o UserKnownHostsFile={d / 'known_hosts'} "
                "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes",
                # The private sshd has no sftp subsystem (nor scp, which uses it): send modules over ssh's pipe.
                "ansible_ssh_transfer_method": "piped",
            }
        self.hosts[name] = {**how, "ansible_python_interpreter": sys.executable, "mlxfix_root": str(tree)}
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
        dirs["ANSIBLE_SSH_CONTROL_PATH_DIR"] = state / "cp"
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
        return Play(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd) -> Fleet:
    return Fleet(tmp_path, sshd)


def grub(tree: Path) -> bytes:
    return (tree / GRUB).read_bytes()


def backups(tree: Path) -> list[dict[str, object]]:
    proc = run("backups", "--json", "--root", str(tree))
    assert proc.returncode == 0, proc.stderr
    listed = json_of(proc.stdout)["backups"]
    assert isinstance(listed, list)
    return listed


def test_check_mode_shows_the_diff_and_changes_nothing(fleet: Fleet) -> None:
    fleet.add("localhost", "local")
    fleet.add("pve-ssh", "ssh")
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
    assert set(diffs) == {("localhost", "/etc/default/grub"), ("pve-ssh", "/etc/default/grub")}, play.output
    for lines in diffs.values():
        assert f"-{BEFORE_LINE}" in lines
        assert f"+{AFTER_LINE}" in lines
        assert [line[0] for line in lines if line[:1] in "+-" and line[:3] not in ("---", "+++")] == ["-", "+"]


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
        # mlxfix_skip_reboot: the apply task is all that ran (no reboot, so no verify either)
        assert recap[name]["ok"] == 1, (name, play.output)
        assert AFTER_LINE.encode() in grub(tree)
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
    after = {name: snapshot(tree) for name, tree in fleet.trees.items()}

    again = fleet.play()

    assert again.returncode == 0, again.output
    recap = again.recap
    assert set(recap) == {"localhost", "pve-ssh"}, again.output
    for name, tree in fleet.trees.items():
        assert recap[name]["changed"] == 0, (name, again.output)
        assert recap[name]["ok"] > 0, (name, again.output)
        assert recap[name]["failed"] == recap[name]["unreachable"] == 0, (name, again.output)
        assert grub(tree) == FIXED
        assert len(backups(tree)) == 1
        assert snapshot(tree) == after[name]


def test_a_refusing_host_stops_the_rollout(fleet: Fleet) -> None:
    """serial: 1 and max_fail_percentage: 0: hosts before the failure keep their change, the failing
    host is untouched, and the hosts after it are not run at all."""
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
    assert "/etc/default/grub:2" in play.output  # mlxfix's reason, with file and line, reaches the user
    assert "pve-later" not in recap, play.output
    assert snapshot(later) == later_before
    assert grub(later) == ORIGINAL


@pytest.fixture
def rebooting_sshd(tmp_path: Path):  # an sshd whose sessions see a boot id the test can change
    from tests.namespace import require_root
    from tests.sshd import Sshd

    require_root()
    bootid = tmp_path / "bootid"
    bootid.write_text(f"{uuid.uuid4()}\n")
    script = f'set -e; mount --make-rprivate /; mount --bind {bootid} /proc/sys/kernel/random/boot_id; exec "$@"'
    server = Sshd(wrapper=["unshare", "-m", "sh", "-c", script, "sh"])
    yield server, bootid
    server.stop()


def test_changed_hosts_reboot_one_at_a_time_and_a_bad_one_fails_the_play(tmp_path: Path, rebooting_sshd) -> None:
    """The reboot is Ansible's own reboot module; only the command it runs is replaced (it gives the
    "host" a new boot id, as a reboot does). Then verify: the first host's tree is one where the fix
    works after the reboot, the second one's is the story host, still broken: the play fails there."""
    server, bootid = rebooting_sshd
    fleet = Fleet(tmp_path, server)
    good = fleet.add("good", "ssh", example="pve-fixed")
    grub = good / GRUB
    grub.write_bytes(grub.read_bytes().replace(b" pci=realloc=off", b""))  # to change, then verified fixed
    fleet.add("bad", "ssh")
    reboot = f"sh -c 'echo rebooted >> {tmp_path}/reboots; cat /proc/sys/kernel/random/uuid > {bootid}'"
    play = fleet.play(extra_vars={"mlxfix_skip_reboot": False, "mlxfix_reboot_command": reboot, "mlxfix_reboot_timeout": 120})
    assert play.returncode != 0, play.output
    recap = play.recap
    assert recap["good"]["failed"] == 0, play.output
    assert recap["good"]["changed"] == 2, play.output  # the apply, and the reboot
    assert recap["bad"]["failed"] == 1, play.output
    assert "mlxfix verify failed on bad" in play.output
    assert (tmp_path / "reboots").read_text() == "rebooted\nrebooted\n"  # each host once, one after the other
    assert b"pci=realloc=off" in grub.read_bytes()
