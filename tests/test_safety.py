"""Nothing lost, nobody in: every crash point, every storage fault, a file changed under us, two
runs at once, hostile input, injection, symlinks and permissions, honest backups.

Real processes on real files in temporary trees; faults come from the OS-facing layer's test hooks
(MLXFIX_TEST_CRASH_AT, MLXFIX_TEST_FAULTS, MLXFIX_TEST_PAUSE_AT), never from mocking the code under
test. The counts are the figures of the README's "Safety" section, which a test keeps in step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import CORPUS, EXAMPLES, ROOT
from tests.trees import PVE_GRUB, invoke, json_of, run, snapshot, wait_for_pause, write

NEW = PVE_GRUB.replace(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', b'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"')
FIGURES: dict[str, int] = {}
README = (ROOT / "README.md").read_text()


def figure(name: str, count: int, *, at_least: bool = False) -> None:
    """Record a figure and check the README quotes it (for fuzzers, a count the run reached)."""
    FIGURES[name] = count
    if os.environ.get("MLXFIX_PRINT_FIGURES"):
        print(f"FIGURE | {name} | {count} |")
        return
    m = re.search(rf"\| {re.escape(name)} \| (\d+) \|", README)
    assert m is not None, f"the README's Safety table has no row '{name}'"
    quoted = int(m.group(1))
    assert quoted <= count if at_least else quoted == count, f"README says {quoted} for '{name}', the test counted {count}"


def fresh(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(EXAMPLES / "pve-missing-uar", root, symlinks=True)
    return root


def grub(root: Path) -> bytes:
    return (root / "etc/default/grub").read_bytes()


def mlxfix(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(*args, "--yes", "--root", str(root), env=env, timeout=60)


def ops(root: Path, *args: str) -> list[tuple[str, str]]:
    """The OS calls that change something, in order, for one run on a copy of ``root``."""
    log = root.parent / f"{root.name}.ops"
    proc = mlxfix(root, *args, env={"MLXFIX_TEST_OPS_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    calls = [tuple(line.split(" ", 2)[1:]) for line in log.read_text().splitlines()]
    log.unlink()
    return calls  # type: ignore[return-value]


def backups_whole(root: Path) -> None:
    """Every backup is complete: its manifest reads and every saved file matches its sha256."""
    import hashlib

    directory = root / "var/lib/mlxfix/backups"
    for b in directory.iterdir() if directory.exists() else []:
        if b.name.startswith(".partial-"):
            continue  # not a backup: ignored by mlxfix and removed by its next run
        manifest = json.loads((b / "manifest.json").read_text())
        for f in manifest["files"]:
            assert hashlib.sha256((b / f["stored"]).read_bytes()).hexdigest() == f["sha256"]


def clean(root: Path) -> None:
    """No leftovers: no temp file, no partial backup, no intent record."""
    assert not [p for p in (root / "etc/default").iterdir() if ".mlxfix-" in p.name]
    backups = root / "var/lib/mlxfix/backups"
    assert not [p for p in backups.iterdir() if p.name.startswith(".partial-")] if backups.exists() else True
    assert not (root / "var/lib/mlxfix/intent.json").exists()


STEPS = ["backup-written", "after-backup", "after-intent", "write-before-rename", "write-after-rename", "after-write", "done"]


# -- 1. crash at any point -------------------------------------------------------------------------------


def test_every_crash_point_of_apply(tmp_path: Path) -> None:
    calls = ops(fresh(tmp_path, "count"), "apply")
    points = [f"op:{i}" for i in range(1, len(calls) + 1)] + STEPS
    for point in points:
        crashed = fresh(tmp_path, f"crash-{point}")
        proc = mlxfix(crashed, "apply", env={"MLXFIX_TEST_CRASH_AT": point})
        assert proc.returncode == -9, (point, proc.stderr)
        assert grub(crashed) in (PVE_GRUB, NEW), point  # old or new, never a mix or nothing
        backups_whole(crashed)
        undo = tmp_path / f"undo-{point}"
        shutil.copytree(crashed, undo, symlinks=True)
        # A re-run finishes the apply...
        again = mlxfix(crashed, "apply")
        assert again.returncode == 0, (point, again.stderr)
        assert grub(crashed) == NEW
        clean(crashed)
        # ...after which a rollback still puts the original back (not a no-op backup of the re-run)...
        undone = mlxfix(crashed, "rollback")
        assert undone.returncode == 0, (point, undone.stderr)
        assert grub(crashed) == PVE_GRUB, point
        clean(crashed)
        # ...and a rollback puts the original back (before the first backup there is none to take:
        # nothing was changed then).
        back = mlxfix(undo, "rollback")
        assert back.returncode in (0, 1), (point, back.stderr)
        if back.returncode == 1:
            assert "no backup" in back.stderr
        assert grub(undo) == PVE_GRUB, point
        if back.returncode == 0:
            clean(undo)
        shutil.rmtree(crashed)
        shutil.rmtree(undo)
    figure("crash points explored in apply", len(points))


def test_every_crash_point_of_rollback(tmp_path: Path) -> None:
    applied = fresh(tmp_path, "applied")
    assert mlxfix(applied, "apply").returncode == 0
    probe = tmp_path / "probe"
    shutil.copytree(applied, probe, symlinks=True)
    calls = ops(probe, "rollback")
    points = [f"op:{i}" for i in range(1, len(calls) + 1)] + STEPS
    for point in points:
        crashed = tmp_path / f"crash-{point}"
        shutil.copytree(applied, crashed, symlinks=True)
        proc = mlxfix(crashed, "rollback", env={"MLXFIX_TEST_CRASH_AT": point})
        assert proc.returncode == -9, (point, proc.stderr)
        assert grub(crashed) in (PVE_GRUB, NEW), point
        backups_whole(crashed)
        again = tmp_path / f"again-{point}"
        shutil.copytree(crashed, again, symlinks=True)
        # Rolling back again finishes the rollback...
        back = mlxfix(crashed, "rollback")
        assert back.returncode == 0, (point, back.stderr)
        assert grub(crashed) == PVE_GRUB
        clean(crashed)
        # ...and applying again is consistent too.
        forward = mlxfix(again, "apply")
        assert forward.returncode == 0, (point, forward.stderr)
        assert grub(again) == NEW
        clean(again)
        shutil.rmtree(crashed)
        shutil.rmtree(again)
    figure("crash points explored in rollback", len(points))


def _two_file_host(tmp_path: Path, name: str) -> Path:
    """A plan that writes two files: the conflict goes from the main file, the parameter into a drop-in."""
    root = fresh(tmp_path, name)
    grub_path = root / "etc/default/grub"
    grub_path.write_bytes(PVE_GRUB.replace(b'="quiet"', b'="quiet pci=realloc=on"'))
    write(root, "/etc/default/grub.d/60-x.cfg", 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"\n')
    return root


def test_every_crash_point_of_an_apply_that_writes_two_files(tmp_path: Path) -> None:
    template = _two_file_host(tmp_path, "template")
    files = [template / "etc/default/grub", template / "etc/default/grub.d/60-x.cfg"]
    old = [f.read_bytes() for f in files]
    done = tmp_path / "done"
    shutil.copytree(template, done, symlinks=True)
    assert mlxfix(done, "apply").returncode == 0
    new = [(done / f.relative_to(template)).read_bytes() for f in files]
    assert all(a != b for a, b in zip(old, new, strict=True))  # both files change
    probe = tmp_path / "probe"
    shutil.copytree(template, probe, symlinks=True)
    calls = ops(probe, "apply")
    points = [f"op:{i}" for i in range(1, len(calls) + 1)] + STEPS
    for point in points:
        crashed = tmp_path / f"crash-{point}"
        shutil.copytree(template, crashed, symlinks=True)
        assert mlxfix(crashed, "apply", env={"MLXFIX_TEST_CRASH_AT": point}).returncode == -9, point
        for f, before, after in zip(files, old, new, strict=True):
            assert (crashed / f.relative_to(template)).read_bytes() in (before, after), (point, f.name)
        backups_whole(crashed)
        undo = tmp_path / f"undo-{point}"
        shutil.copytree(crashed, undo, symlinks=True)
        assert mlxfix(crashed, "apply").returncode == 0, point  # finishes: both new
        assert [(crashed / f.relative_to(template)).read_bytes() for f in files] == new, point
        back = mlxfix(undo, "rollback")  # or puts both back (nothing to do before the first backup)
        assert back.returncode in (0, 1), (point, back.stderr)
        assert [(undo / f.relative_to(template)).read_bytes() for f in files] == old, point
        shutil.rmtree(crashed)
        shutil.rmtree(undo)
    figure("crash points explored in a two-file apply", len(points))


def test_the_next_run_notices_an_interrupted_apply(tmp_path: Path) -> None:
    crashed = fresh(tmp_path, "crashed")
    assert mlxfix(crashed, "apply", env={"MLXFIX_TEST_CRASH_AT": "after-write"}).returncode == -9
    dry = run("apply", "--dry-run", "--root", str(crashed))
    assert "finishing the apply interrupted earlier" in dry.stdout
    assert "update-grub" in dry.stdout  # the regeneration runs again although the file is already new


# -- 2. failing storage ------------------------------------------------------------------------------------

ERRNOS = {
    "ENOSPC": "the file system is full",
    "EROFS": "the file system is read-only",
    "EACCES": "permission denied",
    "EIO": "I/O error",
    "EXDEV": "another file system",
}


@pytest.mark.parametrize("action", ["apply", "rollback"])
def test_every_storage_fault(tmp_path: Path, action: str) -> None:
    template = fresh(tmp_path, "template")
    if action == "rollback":
        assert mlxfix(template, "apply").returncode == 0
    probe = tmp_path / "probe"
    shutil.copytree(template, probe, symlinks=True)
    calls = ops(probe, action)
    before, after = (PVE_GRUB, NEW) if action == "apply" else (NEW, PVE_GRUB)
    kinds: dict[str, int] = {}
    for kind, _ in calls:
        kinds[kind] = kinds.get(kind, 0) + 1
    injected = 0
    for name, words in ERRNOS.items():
        for kind, count in kinds.items():
            for nth in range(1, count + 1):
                root = tmp_path / f"{name}-{kind}-{nth}"
                shutil.copytree(template, root, symlinks=True)
                proc = mlxfix(root, action, env={"MLXFIX_TEST_FAULTS": f"{kind}:{nth}={name}"})
                injected += 1
                where = (name, kind, nth, proc.stderr)
                assert "Traceback" not in proc.stderr, where
                if proc.returncode == 0:  # only the last steps (recording the outcome, removing the intent) may fail so
                    assert grub(root) == after, where
                    said = proc.stdout + proc.stderr
                    assert "could not remove the intent record" in said or "could not record how this run ended" in said, where
                else:
                    assert proc.returncode == 1, where
                    assert grub(root) == before, where  # untouched, or put back
                    assert words in proc.stderr, where
                    clean(root)
                backups_whole(root)
                assert not [p for p in (root / "etc/default").iterdir() if ".mlxfix-" in p.name], where
                shutil.rmtree(root)
    figure(f"storage faults injected in {action}", injected)


# -- 3. the file changed under us ------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["after-backup", "after-intent", "write-before-rename"])
def test_a_file_changed_under_us_is_not_overwritten(tmp_path: Path, step: str) -> None:
    root = fresh(tmp_path, "root")
    marker = tmp_path / "pause"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxfix", "apply", "--yes", "--root", str(root)],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"{step}:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_pause(marker, proc)
    theirs = PVE_GRUB + b"GRUB_TIMEOUT=1\n"  # another admin, or dpkg
    (root / "etc/default/grub").write_bytes(theirs)
    Path(f"{marker}.go").touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "changed since mlxfix read it" in err
    assert grub(root) == theirs


# -- 4. two runs at once --------------------------------------------------------------------------------


def test_two_mlxfix_at_once_one_proceeds_the_other_fails_at_once(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    marker = tmp_path / "pause"
    first = subprocess.Popen(
        [sys.executable, "-m", "mlxfix", "apply", "--yes", "--root", str(root)],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-intent:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_pause(marker, first)
    started = time.monotonic()
    second = mlxfix(root, "apply")
    assert time.monotonic() - started < 5  # at once, no waiting on the lock
    assert second.returncode == 75
    assert "another mlxfix is running" in second.stderr
    first.kill()  # the lock dies with its holder
    first.communicate()
    third = mlxfix(root, "apply")
    assert third.returncode == 0, third.stderr
    assert grub(root) == NEW
    clean(root)


@pytest.mark.parametrize("second", ["rollback", "apply"])
def test_a_run_with_nothing_to_do_still_fails_at_once_while_another_is_at_work(tmp_path: Path, second: str) -> None:
    """The first run has saved its backup and not yet written: the file still looks applied (or
    rolled back) to a second run, whose "nothing to do" would be true for a moment only."""
    root = fresh(tmp_path, "root")
    if second == "apply":  # the first run is a rollback of an apply, and the second would re-apply
        assert mlxfix(root, "apply").returncode == 0
        first_argv = ["rollback", "--yes"]
    else:
        first_argv = ["apply", "--yes"]
    marker = tmp_path / "pause"
    first = subprocess.Popen(
        [sys.executable, "-m", "mlxfix", *first_argv, "--root", str(root)],
        env={**os.environ, "MLXFIX_TEST_PAUSE_AT": f"after-backup:{marker}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_pause(marker, first)
    other = mlxfix(root, second)
    assert other.returncode == 75, other.stderr
    assert "another mlxfix is running" in other.stderr
    Path(f"{marker}.go").touch()
    assert first.wait(timeout=60) == 0, first.communicate()
    first.communicate()


def test_two_mlxfix_started_together_never_both_change_the_host(tmp_path: Path) -> None:
    """Started at the same instant, many times: one applies, the other fails with 75 (busy) or finds
    the work done (0, changed false); never two applies, never a wrong message."""
    for trial in range(8):
        root = fresh(tmp_path, f"race-{trial}")
        argv = [sys.executable, "-m", "mlxfix", "apply", "--yes", "--json", "--root", str(root)]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
        docs = [json.loads(out) for _, out, _ in results]
        changed = [d["changed"] for d in docs]
        assert changed.count(True) == 1, results
        for (code, _, err), doc in zip(results, docs, strict=True):
            if not doc["changed"]:
                assert code in (0, 75), (code, err)
                assert code == 0 or "another mlxfix is running" in err
        assert grub(root) == NEW
        listing = json_of(run("backups", "--json", "--root", str(root)).stdout)["backups"]
        assert len([b for b in listing if b["files"]]) == 1  # type: ignore[union-attr]
        clean(root)


# -- 5. hostile and broken input ------------------------------------------------------------------------

_CORPUS = sorted(p.read_bytes() for p in CORPUS.iterdir() if p.suffix in (".grub", ".cfg"))
_HOSTILE: dict[str, int] = {"inputs": 0, "facts": 0}


@st.composite
def mutated_grub(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[pos:pos] = draw(
                st.sampled_from([b'"', b"'", b"`", b"$(", b"${", b"\\", b"\n", b"\x00", b"\xff", b"if ", b"fi\n", b";", b")"])
            )
        elif kind == 1 and data:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif kind == 2:
            data[pos:pos] = draw(st.binary(max_size=8))
        else:
            data[pos:pos] = b"GRUB_CMDLINE_LINUX_DEFAULT=" + draw(
                st.sampled_from([b'"quiet"', b"$X", b"'a'\"b\"", b'"pci=realloc"'])
            )
    return bytes(data)


@given(mutated_grub())
@example(data=b'GRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX="\nconsole=tty0 net.ifnames=0"\nGRUB_DISABLE_RECOVERY="true"\n')
@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_hostile_grub_files_never_crash_hang_or_write(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    root = tmp_path_factory.mktemp("hostile")
    write(root, "/etc/default/grub", data)
    write(root, "/usr/sbin/update-grub", "#!/bin/sh\n", 0o755)
    started = time.monotonic()
    code, _, err = invoke("apply", "--dry-run", "--root", str(root))
    assert time.monotonic() - started < 5
    assert code in (0, 1), err
    assert (root / "etc/default/grub").read_bytes() == data
    if code == 1:
        assert err.startswith("mlxfix: ")
        assert "Traceback" not in err
    else:  # what the dry run promised, for real: written whole and right, or not at all; and undone
        code, _, err = invoke("apply", "--yes", "--no-update", "--root", str(root))
        assert code == 0, err
        after = (root / "etc/default/grub").read_bytes()
        if after != data:
            from mlxfix import cmdline
            from tests.oracle import sh_values

            value = sh_values([root / "etc/default/grub"], ["GRUB_CMDLINE_LINUX_DEFAULT"])["GRUB_CMDLINE_LINUX_DEFAULT"]
            assert value is not None
            assert cmdline.contains(value, cmdline.Param.parse("pci=realloc=off")), value
            assert invoke("apply", "--dry-run", "--root", str(root))[1].count("Nothing to do") == 1
            assert invoke("rollback", "--yes", "--no-update", "--root", str(root))[0] == 0
            assert (root / "etc/default/grub").read_bytes() == data
        assert not [p for p in (root / "etc/default").iterdir() if ".mlxfix-" in p.name]
    _HOSTILE["inputs"] += 1


_FACTS = (
    "var/log/dmesg",
    "proc/modules",
    "proc/cmdline",
    *(f"sys/bus/pci/devices/0000:01:00.0/{n}" for n in ("resource", "vendor", "device", "class", "sriov_numvfs")),
)


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(out)))
        if draw(st.booleans()) and out:
            del out[pos : pos + draw(st.integers(1, 40))]
        else:
            out[pos:pos] = draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\n", b"0x", b" ", b"[", b"]", b":", b"Missing UAR"]))
    return bytes(out)


@given(st.data())
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_hostile_sysfs_files_and_kernel_logs_never_crash_or_hang(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """The real story host's facts, mutated: diagnose and verify still answer, with a valid verdict."""
    root = tmp_path_factory.mktemp("facts")
    shutil.copytree(EXAMPLES / "pve-missing-uar", root, symlinks=True, dirs_exist_ok=True)
    for name in data.draw(st.lists(st.sampled_from(_FACTS), min_size=1, max_size=3, unique=True)):
        target = root / name
        target.write_bytes(_mutate(data.draw, target.read_bytes()))
    before = snapshot(root)
    for command, codes in (("diagnose", (0, 10, 11, 12)), ("verify", (0, 10, 11, 12, 13))):
        started = time.monotonic()
        code, out, err = invoke(command, "--json", "--root", str(root))
        assert time.monotonic() - started < 5
        assert code in codes, (command, err)
        assert json.loads(out)["status"], command
        assert "Traceback" not in err
    assert snapshot(root) == before
    _HOSTILE["facts"] += 1


def test_oversized_and_binary_grub_files_are_refused(tmp_path: Path) -> None:
    for name, data, words in (
        ("big", b"# " + b"x" * (1 << 20) + b"\nGRUB_CMDLINE_LINUX_DEFAULT=quiet\n", "over the 1 MiB"),
        ("binary", b"GRUB_TIMEOUT=5\n\x7fELF\x00\x00\x01\n", "binary"),
    ):
        root = fresh(tmp_path, name)
        (root / "etc/default/grub").write_bytes(data)
        before = snapshot(root)
        proc = mlxfix(root, "apply")
        assert proc.returncode == 1
        assert words in proc.stderr
        assert "/etc/default/grub" in proc.stderr
        assert snapshot(root) == before


def test_hostile_input_figure() -> None:
    """After the fuzzers above (tests run in file order): the mutated files that went through them."""
    figure("hostile grub files tried", _HOSTILE["inputs"], at_least=True)
    figure("hostile sysfs files and kernel logs tried", _HOSTILE["facts"], at_least=True)


# -- 6. injection and traversal --------------------------------------------------------------------------

HOSTILE_PARAMS = [
    "pci=realloc=off quiet",
    'x="a"b"',
    "x=$(reboot)",
    "x=`reboot`",
    "x=${IFS}",
    "pci=realloc=off\nGRUB_X=1",
    "x=1;reboot",
    "x=1&&reboot",
    "x=1|tee",
    "x='a'",
    "x=a\\b",
    "x=\x1b[31m",
    "--",
    "x=<a>",
]


def test_hostile_params_are_refused_and_change_nothing(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    before = snapshot(root)
    for param in HOSTILE_PARAMS:
        code, _, err = invoke("apply", "--yes", "--param", param, "--root", str(root))
        assert code == 2, param
        assert "Traceback" not in err
        assert snapshot(root) == before
    figure("hostile --param values refused", len(HOSTILE_PARAMS))


def test_a_quoted_value_with_spaces_is_one_kernel_parameter(tmp_path: Path) -> None:
    from mlxfix import cmdline
    from tests.oracle import sh_values

    root = fresh(tmp_path, "root")
    assert mlxfix(root, "apply", "--param", 'acpi_osi="!Windows 2012"').returncode == 0
    value = sh_values([root / "etc/default/grub"], ["GRUB_CMDLINE_LINUX_DEFAULT"])["GRUB_CMDLINE_LINUX_DEFAULT"]
    assert value is not None
    assert [t.text for t in cmdline.split(value)] == ["quiet", 'acpi_osi="!Windows 2012"']


@pytest.mark.parametrize("backup_id", ["../../etc/shadow", "/etc/shadow", "..", "20261125T021500.123Z-a1b2c3/../../x", "$(id)"])
def test_backup_ids_cannot_traverse(tmp_path: Path, backup_id: str) -> None:
    root = fresh(tmp_path, "root")
    proc = mlxfix(root, "rollback", "--backup", backup_id)
    assert proc.returncode == 2
    assert "is not a backup id" in proc.stderr


def test_a_manifest_pointing_outside_its_backup_is_refused(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    assert mlxfix(root, "apply").returncode == 0
    [backup] = (root / "var/lib/mlxfix/backups").iterdir()
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["files"][0]["stored"] = "../../../../etc/default/grub"
    (backup / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(root)
    proc = mlxfix(root, "rollback")
    assert proc.returncode == 1
    assert "points outside the backup" in proc.stderr
    assert snapshot(root) == before


def test_a_root_with_shell_characters_is_never_interpreted(tmp_path: Path) -> None:
    root = tmp_path / "a b;touch PWNED;$(touch PWNED2)`touch PWNED3`"
    shutil.copytree(EXAMPLES / "pve-missing-uar", root, symlinks=True)
    proc = run("apply", "--yes", "--root", str(root), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert grub(root) == NEW
    assert not list(Path.cwd().glob("PWNED*"))
    assert not list(tmp_path.glob("PWNED*"))


# -- 7. symlinks and permissions -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["symlink", "other-owner", "group-writable", "world-writable"])
def test_the_state_directory_must_be_private(tmp_path: Path, case: str) -> None:
    root = fresh(tmp_path, "root")
    state = root / "var/lib/mlxfix"
    state.parent.mkdir(parents=True, exist_ok=True)
    if case == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        state.symlink_to(elsewhere)
    else:
        state.mkdir(mode=0o700)
        if case == "other-owner":
            os.chown(state, 65534, 65534)
        elif case == "group-writable":
            state.chmod(0o770)
        else:
            state.chmod(0o777)
    before = grub(root)
    proc = mlxfix(root, "apply")
    assert proc.returncode == 1
    assert "refusing to use it" in proc.stderr
    assert grub(root) == before


def test_backups_are_not_readable_by_other_users(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    assert mlxfix(root, "apply").returncode == 0
    for path in (root / "var/lib/mlxfix").rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, (path, oct(mode))


def test_no_write_into_a_directory_other_users_can_write(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    (root / "etc/default").chmod(0o777)
    proc = mlxfix(root, "apply")
    assert proc.returncode == 1
    assert "other users can write to /etc/default" in proc.stderr
    assert "nothing was changed" in proc.stderr
    assert grub(root) == PVE_GRUB
    assert not (root / "var/lib/mlxfix/backups").exists() or not list((root / "var/lib/mlxfix/backups").iterdir())
    above = fresh(tmp_path, "above")  # a directory further up that others can write: they could swap etc/default
    (above / "etc").chmod(0o777)
    proc = mlxfix(above, "apply")
    assert proc.returncode == 1
    assert "other users can write to /etc (mode 0777)" in proc.stderr
    assert grub(above) == PVE_GRUB
    planted = fresh(tmp_path, "planted")  # /etc/default/grub a symlink into a directory another user owns
    victim = planted / "var/tmp/victim"
    victim.mkdir(parents=True)
    (victim / "grub").write_bytes(PVE_GRUB)
    os.chown(victim, 65534, 65534)
    (planted / "etc/default/grub").unlink()
    (planted / "etc/default/grub").symlink_to("/var/tmp/victim/grub")  # resolved inside --root
    proc = mlxfix(planted, "apply")
    assert proc.returncode == 1
    assert "belongs to uid 65534" in proc.stderr
    assert (victim / "grub").read_bytes() == PVE_GRUB


def test_a_world_writable_grub_file_is_reported(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    (root / "etc/default/grub").chmod(0o666)
    for command in (["apply", "--dry-run"], ["diagnose"]):
        doc = json_of(run(*command, "--json", "--root", str(root)).stdout)
        assert any("/etc/default/grub is writable by every user" in w for w in doc["warnings"]), command  # type: ignore[union-attr]


# -- 8. honest backups ----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "empty-manifest", "delete-copy"])
def test_a_damaged_backup_is_refused_never_restored(tmp_path: Path, damage: str) -> None:
    root = fresh(tmp_path, "root")
    assert mlxfix(root, "apply").returncode == 0
    [backup] = (root / "var/lib/mlxfix/backups").iterdir()
    copy = backup / "0.orig"
    if damage == "flip-a-byte":
        data = bytearray(copy.read_bytes())
        data[10] ^= 0x01
        copy.write_bytes(bytes(data))
    elif damage == "truncate":
        copy.write_bytes(copy.read_bytes()[:100])
    elif damage == "empty-manifest":
        (backup / "manifest.json").write_text("")
    else:
        copy.unlink()
    before = snapshot(root)
    proc = mlxfix(root, "rollback")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(root) == before


def test_root_is_a_chroot_for_directory_links_too(tmp_path: Path) -> None:
    """etc/default -> /elsewhere inside the tree means <root>/elsewhere, never the machine's /elsewhere."""
    root = fresh(tmp_path, "root")
    outside = tmp_path / "outside"  # what the link would name on this machine
    outside.mkdir()
    (outside / "grub").write_bytes(b'GRUB_CMDLINE_LINUX_DEFAULT="outside"\n')
    inside = root / str(outside).lstrip("/")  # the same path, inside the tree
    inside.mkdir(parents=True)
    shutil.move(str(root / "etc/default/grub"), inside / "grub")
    shutil.rmtree(root / "etc/default")
    (root / "etc/default").symlink_to(outside)
    proc = mlxfix(root, "apply")
    assert proc.returncode == 0, proc.stderr
    assert (inside / "grub").read_bytes() == NEW
    assert (outside / "grub").read_bytes() == b'GRUB_CMDLINE_LINUX_DEFAULT="outside"\n'
    assert mlxfix(root, "rollback").returncode == 0
    assert (inside / "grub").read_bytes() == PVE_GRUB


def test_a_manifest_naming_a_path_outside_or_a_set_id_mode_is_refused(tmp_path: Path) -> None:
    for key, value, words in (("path", "/../../../tmp/pwned", "a path mlxfix never writes"), ("mode", 0o104777, "set-id")):
        root = fresh(tmp_path, key)
        assert mlxfix(root, "apply").returncode == 0
        [backup] = (root / "var/lib/mlxfix/backups").iterdir()
        manifest = json.loads((backup / "manifest.json").read_text())
        manifest["files"][0][key] = value
        (backup / "manifest.json").write_text(json.dumps(manifest))
        before = snapshot(root)
        proc = mlxfix(root, "rollback")
        assert proc.returncode == 1, proc.stderr
        assert words in proc.stderr
        assert snapshot(root) == before


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"path": "/etc/shadow"}, "/etc/shadow, which is no file of the grub-debian boot setup"),
        ({"path": "/etc/default/grub.d/../../shadow"}, "a path mlxfix never writes"),
        ({"path": "/etc/default/grub.d/sub/x.cfg"}, "which is no file of the grub-debian boot setup"),
        ({"mode": 0o100666}, "with mode 0666, wider than the file's own and 0644"),
        ({"uid": 1000}, "owned by uid 1000: mlxfix gives a file only to root or its present owner"),
        ({"gid": 1000}, "owned by gid 1000"),
        ({"path": "/etc/shadow", "mode": 0o100666, "uid": 1000}, "no file of the grub-debian boot setup"),
    ],
    ids=["shadow", "dotdot", "nested", "mode", "uid", "gid", "all"],
)
def test_a_forged_manifest_cannot_loosen_another_file(tmp_path: Path, changes: dict[str, object], words: str) -> None:
    """A manifest in the state directory is data, not orders: a rollback writes only the files the
    backup's boot setup owns, adds no mode bits beyond the file's and 0644, gives nothing to another user."""
    root = fresh(tmp_path, "root")
    shadow = root / "etc/shadow"
    shadow.write_text("root:*:19000:0:99999:7:::\n")
    shadow.chmod(0o640)
    assert mlxfix(root, "apply").returncode == 0
    [backup] = (root / "var/lib/mlxfix/backups").iterdir()
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["files"][0].update(changes)
    (backup / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(root)
    proc = mlxfix(root, "rollback")
    assert proc.returncode == 1, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(root) == before
    assert stat.S_IMODE(shadow.stat().st_mode) == 0o640


@pytest.mark.parametrize("lock", ["flock", "fcntl"])
def test_a_package_manager_lock_of_either_kind_is_waited_for(tmp_path: Path, lock: str) -> None:
    root = fresh(tmp_path, "root")
    target = root / "var/lib/dpkg/lock-frontend"
    target.parent.mkdir(parents=True)
    target.touch()
    if lock == "flock":
        holder = subprocess.Popen(["flock", str(target), "sleep", "30"])
    else:
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import fcntl,time; f=open({str(target)!r},'w'); fcntl.lockf(f, fcntl.LOCK_EX); time.sleep(30)",
            ]
        )
    try:
        time.sleep(0.5)
        started = time.monotonic()
        proc = mlxfix(root, "apply")
        assert proc.returncode == 75, proc.stderr
        assert "package manager" in proc.stderr
        assert time.monotonic() - started >= 5  # it waited a little first
        assert grub(root) == PVE_GRUB
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("case", ["fifo", "full"])
def test_a_broken_lock_file_or_a_full_disk_at_the_lock_is_one_line(tmp_path: Path, case: str) -> None:
    root = fresh(tmp_path, "root")
    state = root / "var/lib/mlxfix"
    state.mkdir(parents=True, mode=0o700)
    env = None
    if case == "fifo":
        os.mkfifo(state / "lock")
    else:
        env = {"MLXFIX_TEST_FAULTS": "create:1=ENOSPC"}  # the lock is the first file mlxfix creates
    proc = mlxfix(root, "apply", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "lock" in proc.stderr
    assert grub(root) == PVE_GRUB


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("grub-is-a-directory", "/etc/default/grub: it is a directory"),
        ("grub-dangling-link", "/etc/default/grub: it is a symlink to /etc/default/gone, which does not exist"),
        ("grub-link-loop", "which does not exist (or the links loop)"),
        ("dropin-is-a-fifo", "/etc/default/grub.d/50-x.cfg: cannot read it: not a regular file: update-grub would fail"),
        ("dropin-is-a-directory", "/etc/default/grub.d/50-x.cfg: it is a directory, not a file: update-grub would fail"),
    ],
)
def test_a_grub_file_that_is_no_file_is_named_and_nothing_hangs(tmp_path: Path, case: str, words: str) -> None:
    root = fresh(tmp_path, "root")
    grub_path, dropin = root / "etc/default/grub", root / "etc/default/grub.d/50-x.cfg"
    if case.startswith("grub-"):
        grub_path.unlink()
    if case == "grub-is-a-directory":
        grub_path.mkdir()
    elif case == "grub-dangling-link":
        grub_path.symlink_to("/etc/default/gone")
    elif case == "grub-link-loop":
        grub_path.symlink_to("grub")
    else:
        dropin.parent.mkdir(exist_ok=True)
        if case == "dropin-is-a-fifo":
            os.mkfifo(dropin)
        else:
            dropin.mkdir()
    before = snapshot(root)
    for args in (["apply", "--dry-run"], ["apply"]):
        proc = run(*args, "--yes", "--root", str(root), timeout=20)
        assert proc.returncode == 1, (args, proc.stderr)
        assert words in proc.stderr
        assert "Traceback" not in proc.stderr
    assert snapshot(root) == before


def test_a_rollback_after_an_interrupted_finish_puts_the_original_back(tmp_path: Path) -> None:
    """Interrupted, then its finishing run interrupted too: the finishing run's backup saved nothing
    (the file was new already), and comes with the one it finished, which holds the original."""
    root = fresh(tmp_path, "root")
    assert mlxfix(root, "apply", env={"MLXFIX_TEST_CRASH_AT": "after-write"}).returncode == -9
    assert mlxfix(root, "apply", env={"MLXFIX_TEST_CRASH_AT": "after-intent"}).returncode == -9
    back = mlxfix(root, "rollback")
    assert back.returncode == 0, back.stderr
    assert grub(root) == PVE_GRUB
    clean(root)


def test_a_no_op_run_clears_a_temp_file_a_killed_write_left(tmp_path: Path) -> None:
    root = fresh(tmp_path, "root")
    assert mlxfix(root, "apply", env={"MLXFIX_TEST_CRASH_AT": "write-before-rename"}).returncode == -9
    assert [p for p in (root / "etc/default").iterdir() if ".mlxfix-" in p.name]
    assert mlxfix(root, "rollback").returncode == 0  # nothing to restore: the file is still the old one
    clean(root)


def test_a_bls_rollback_after_a_finishing_run_restores_both_runs_files(tmp_path: Path) -> None:
    root = tmp_path / "bls"
    shutil.copytree(EXAMPLES / "fedora-bls", root, symlinks=True)
    original = (root / "etc/default/grub").read_bytes()
    assert mlxfix(root, "apply", env={"MLXFIX_TEST_CRASH_AT": "write-after-rename"}).returncode == -9
    finish = mlxfix(root, "apply")
    assert finish.returncode == 0, finish.stderr  # saves the entries grubby is about to change
    back = mlxfix(root, "rollback")
    assert back.returncode == 0, back.stderr
    assert (root / "etc/default/grub").read_bytes() == original  # from the interrupted run's backup


# -- 1b. crash at any point of a trial (apply --trial) and of its rollback ----------------------------------


def _trial_host(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(EXAMPLES / "debian-grub", root, symlinks=True)
    return root


def _custom(root: Path) -> bytes | None:
    custom = root / "boot/grub/custom.cfg"
    return custom.read_bytes() if custom.exists() else None


def test_every_crash_point_of_a_trial_and_of_its_rollback(tmp_path: Path) -> None:
    """custom.cfg is absent or whole (never a half-written trial entry), the grub files never change,
    and the next run finishes or rolls back to one of those states."""
    done = _trial_host(tmp_path, "done")
    assert mlxfix(done, "apply", "--trial").returncode == 0
    armed = _custom(done)
    assert armed is not None
    grub_before = grub(done)
    points = [f"op:{i}" for i in range(1, len(ops(_trial_host(tmp_path, "count"), "apply", "--trial")) + 1)] + STEPS
    for point in points:
        crashed = _trial_host(tmp_path, f"crash-{point}")
        assert mlxfix(crashed, "apply", "--trial", env={"MLXFIX_TEST_CRASH_AT": point}).returncode == -9, point
        assert _custom(crashed) in (None, armed), point
        assert grub(crashed) == grub_before, point
        backups_whole(crashed)
        back = mlxfix(crashed, "rollback")  # before the first backup there is none: nothing was changed then
        assert back.returncode in (0, 1), (point, back.stderr)
        assert _custom(crashed) is None, point
        assert grub(crashed) == grub_before, point
        shutil.rmtree(crashed)
    removes = [s for s in STEPS if not s.startswith("write-")]  # the rollback removes custom.cfg: no write
    rollback_points = [f"op:{i}" for i in range(1, len(ops(done, "rollback")) + 1)] + removes
    for point in rollback_points:
        crashed = _trial_host(tmp_path, f"rb-{point}")
        assert mlxfix(crashed, "apply", "--trial").returncode == 0
        assert mlxfix(crashed, "rollback", env={"MLXFIX_TEST_CRASH_AT": point}).returncode == -9, point
        assert _custom(crashed) in (None, armed), point
        again = mlxfix(crashed, "rollback")
        assert again.returncode == 0, (point, again.stderr)
        assert _custom(crashed) is None, point
        assert grub(crashed) == grub_before, point
        clean(crashed)
        shutil.rmtree(crashed)
    figure("crash points explored in a trial and its rollback", len(points) + len(rollback_points))
