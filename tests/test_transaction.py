"""mlxfix.transaction and its script on an SSH target (mlxfix.host.ssh_script): the same steps, run
one host call at a time on a LocalHost and as one script over a real sshd, do the same thing, stop
at the same step, and fail with the same words."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlxfix.digest import sha256
from mlxfix.errors import MlxfixError
from mlxfix.host.local import LocalHost
from mlxfix.host.ssh import SshHost
from mlxfix.steps import ShellCheck
from mlxfix.transaction import (
    Checkpoint,
    Computes,
    Create,
    Journal,
    Parses,
    PrivateDir,
    Record,
    Remember,
    Remove,
    Rename,
    Same,
    Step,
    Tidy,
    Unchanged,
    Write,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.sshd import Sshd

pytestmark = pytest.mark.root

GRUB = b'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
EDITED = b'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n'


def _tree(root: Path) -> Path:
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / "etc/default/grub").write_bytes(GRUB)
    (root / "etc/default/.grub.mlxfix-left").write_bytes(b"a temp file a killed run left")
    (root / "var/lib/mlxfix/backups/.partial-x").mkdir(parents=True, mode=0o700)
    (root / "var/lib/mlxfix").chmod(0o700)
    (root / "var/lib/mlxfix/backups").chmod(0o700)
    (root / "var/lib/mlxfix/intent.json").write_bytes(b'{"an": "earlier record"}\n')
    return root


def _files(root: Path) -> dict[str, bytes | None]:
    """Every file and directory under root: its bytes (None: a directory) and mode."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, names in os.walk(root):
        for d in dirs:
            out[f"{os.path.relpath(Path(dirpath, d), root)}/ {oct(Path(dirpath, d).stat().st_mode)}"] = None
        for n in names:
            p = Path(dirpath, n)
            out[f"{os.path.relpath(p, root)} {oct(p.stat().st_mode)}"] = p.read_bytes()
    return out


def _both(
    sshd: Sshd, tmp_path: Path, steps: Callable[[], list[Step]]
) -> list[tuple[Journal, str | None, dict[str, bytes | None]]]:
    """Run the steps on a LocalHost and on an SshHost (each on a tree of its own): (journal, error, files)."""
    results = []
    for kind in ("local", "ssh"):
        root = _tree(tmp_path / kind)
        options = [o for o in sshd.options() if o != "--ssh-option"]
        host: LocalHost | SshHost = LocalHost(str(root)) if kind == "local" else SshHost(sshd.target, str(root), options)
        journal = Journal()
        error = None
        try:
            host.transact(steps(), journal)
        except MlxfixError as exc:
            error = str(exc).replace(str(root), "ROOT")
        finally:
            host.close()
        results.append((journal, error, _files(root)))
    return results


def _same(
    results: list[tuple[Journal, str | None, dict[str, bytes | None]]], *, words: str | None = None
) -> tuple[Journal, str | None]:
    """The same journal, error and files; ``words``: an error the OS words (mkdir's, mv's), which
    each host says in its own way: both must contain these."""
    (j1, e1, f1), (j2, e2, f2) = results
    assert (j1.begun, j1.done, j1.removed, j1.remembered) == (j2.begun, j2.done, j2.removed, j2.remembered)
    if words is None:
        assert e1 == e2
    else:
        assert e1 is not None
        assert e2 is not None
        assert words in e1
        assert words in e2
    assert f1 == f2
    return j1, e1


def _change() -> list[Step]:
    backups = "/var/lib/mlxfix/backups"
    return [
        Unchanged("/etc/default/grub", sha256(GRUB)),
        Remember("/var/lib/mlxfix/intent.json"),
        Tidy(backups, ("/etc/default/.*.mlxfix-*",)),
        PrivateDir(f"{backups}/.partial-1"),
        Create(f"{backups}/.partial-1/0.orig", GRUB),
        Same(((f"{backups}/.partial-1/0.orig", sha256(GRUB)),), "the backup did not read back identical"),
        Rename(f"{backups}/.partial-1", f"{backups}/1"),
        Record("/var/lib/mlxfix/intent.json", b'{"the": "new record"}\n'),
        Checkpoint("after-intent"),
        Write("/etc/default/grub", EDITED, 0o644, 0, 0, sha256(GRUB)),
        Write("/etc/default/grub.d/new.cfg", b"X=1\n", 0o600, 0, 0, None),
        Parses("/etc/default/grub"),
        Computes(ShellCheck(("/etc/default/grub",), "GRUB_CMDLINE_LINUX_DEFAULT", "quiet pci=realloc=off")),
        Remove("/var/lib/mlxfix/intent.json"),
    ]


def test_a_whole_change_does_the_same_locally_and_as_one_script(sshd: Sshd, tmp_path: Path) -> None:
    journal, error = _same(_both(sshd, tmp_path, _change))
    assert error is None
    assert journal.done == len(_change())
    assert journal.removed == ["/var/lib/mlxfix/backups/.partial-x", "/etc/default/.grub.mlxfix-left"]
    assert journal.remembered == {"/var/lib/mlxfix/intent.json": b'{"an": "earlier record"}\n'}
    assert (tmp_path / "ssh/etc/default/grub").read_bytes() == EDITED
    assert (tmp_path / "ssh/var/lib/mlxfix/backups/1/0.orig").read_bytes() == GRUB


def test_one_round_trip_for_the_whole_change(sshd: Sshd, tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    host = SshHost(sshd.target, str(root), [o for o in sshd.options() if o != "--ssh-option"])
    try:
        host.gather([])  # the login and one read
        before = host.round_trips
        host.transact(_change(), Journal())
        assert host.round_trips == before + 1
    finally:
        host.close()


def _replace(steps: list[Step], index: int, step: Step) -> list[Step]:
    return [*steps[:index], step, *steps[index + 1 :]]


@pytest.mark.parametrize(
    ("index", "step", "words"),
    [
        (0, Unchanged("/etc/default/grub", sha256(b"other")), "the file changed since mlxfix read it"),
        (5, Same((("/var/lib/mlxfix/backups/.partial-1/0.orig", sha256(b"other")),), "no match"), "no match"),
        (9, Write("/etc/default/grub", EDITED, 0o644, 0, 0, sha256(b"other")), "the file changed since mlxfix read it"),
        (11, Parses("/etc/default/grub.d/new.cfg"), None),  # (it parses: the failing one follows)
        (12, Computes(ShellCheck(("/etc/default/grub",), "GRUB_CMDLINE_LINUX_DEFAULT", "other")), "not the planned 'other'"),
        (
            12,
            Computes(ShellCheck(("/etc/default/grub",), "GRUB_CMDLINE_LINUX_DEFAULT", "x", suffix=True)),
            "a value ending in 'x'",
        ),
        (3, PrivateDir("/etc/default/grub/x"), "OS: /etc/default/grub/x: "),
        (6, Rename("/var/lib/mlxfix/backups/nothing", "/var/lib/mlxfix/backups/2"), "OS: /var/lib/mlxfix/backups/2"),
    ],
)
def test_a_failing_step_stops_the_rest_with_the_same_words(
    sshd: Sshd, tmp_path: Path, index: int, step: Step, words: str | None
) -> None:
    os_words = words[4:] if words is not None and words.startswith("OS: ") else None
    journal, error = _same(_both(sshd, tmp_path, lambda: _replace(_change(), index, step)), words=os_words)
    if words is None:
        assert error is None
        return
    assert error is not None
    assert os_words is not None or words in error
    assert (journal.begun, journal.done) == (index, index)  # that step began, nothing after it
    if index < 9:
        assert (tmp_path / "ssh/etc/default/grub").read_bytes() == GRUB


def test_a_file_sh_rejects_is_refused_with_the_same_words(sshd: Sshd, tmp_path: Path) -> None:
    broken = b'GRUB_CMDLINE_LINUX_DEFAULT="quiet\nif then\n'
    steps = [Write("/etc/default/grub", broken, 0o644, 0, 0, None), Parses("/etc/default/grub"), Remove("/etc/default/grub")]
    journal, error = _same(_both(sshd, tmp_path, lambda: steps))
    assert error is not None
    assert "sh rejects the written file" in error
    assert journal.done == 1
    assert (tmp_path / "ssh/etc/default/grub").read_bytes() == broken  # the undo is the caller's, not the steps'


def test_a_leftover_that_cannot_be_removed_fails_tidy_the_same_way(sshd: Sshd, tmp_path: Path) -> None:
    """A "temp file" that is a directory (rm -f and unlink refuse it): the step fails on both hosts,
    and the journal names only what went (the partial backup before it)."""

    def steps() -> list[Step]:
        for kind in ("local", "ssh"):
            odd = tmp_path / kind / "etc/default/.grub.mlxfix-zz"
            if (tmp_path / kind).exists() and not odd.exists():
                (odd / "inside").mkdir(parents=True)
        return _change()[:4]

    journal, error = _same(_both(sshd, tmp_path, steps))
    assert error == "/etc/default/.grub.mlxfix-zz: cannot remove the file: Is a directory"
    assert (journal.begun, journal.done) == (2, 2)
    assert journal.removed == ["/var/lib/mlxfix/backups/.partial-x", "/etc/default/.grub.mlxfix-left"]


def test_a_record_that_cannot_be_read_fails_remember_instead_of_counting_as_absent() -> None:
    """An intent record that is there but unreadable (here: root's 0600 file, read by nobody) must
    stop the change: taken for absent, the earlier run's record would be cleared."""
    import shutil
    import subprocess
    import tempfile

    from tests.trees import NOBODY, nobody_python

    python, env = nobody_python()
    tree = Path(tempfile.mkdtemp(prefix="mlxfix-remember-"))
    try:
        record = tree / "var/lib/mlxfix/intent.json"
        record.parent.mkdir(parents=True)
        for p in (tree, tree / "var", tree / "var/lib", record.parent):
            p.chmod(0o755)
        record.write_bytes(b'{"an": "earlier record"}\n')
        record.chmod(0o600)
        script = (
            "import sys\nfrom mlxfix.errors import MlxfixError\nfrom mlxfix.host.local import LocalHost\n"
            "from mlxfix.transaction import Journal, Remember\njournal = Journal()\n"
            "try:\n    LocalHost(sys.argv[1]).transact([Remember('/var/lib/mlxfix/intent.json')], journal)\n"
            "except MlxfixError as exc:\n    print('failed:', exc)\nelse:\n    print('remembered:', journal.remembered)\n"
        )
        run = subprocess.run([*NOBODY, python, "-c", script, str(tree)], capture_output=True, text=True, env=env, check=False)
        assert run.stdout.startswith("failed: "), run.stdout + run.stderr
        assert "intent.json" in run.stdout
        assert "Permission denied" in run.stdout
    finally:
        shutil.rmtree(tree)
