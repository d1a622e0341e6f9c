"""mlxfix backups: each backup says how its run ended, and the exit code says whether anything is wrong."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from mlxfix.models import BackupsResult
from tests.trees import debian_host, invoke, run

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return debian_host(tmp_path / "root")


def listed(host: Path) -> tuple[int, BackupsResult, str]:
    code, out, _ = invoke("backups", "--json", "--root", str(host))
    human = run("backups", "--root", str(host))
    assert human.returncode == code
    return code, BackupsResult.model_validate_json(out), human.stdout


def test_a_change_that_worked_is_done_and_exits_0(host: Path) -> None:
    assert invoke("apply", "--yes", "--no-reboot", "--root", str(host))[0] == 0
    assert invoke("rollback", "--yes", "--no-reboot", "--root", str(host))[0] == 0
    code, doc, human = listed(host)
    assert code == 0
    assert doc.exit_code == 0
    assert [(b.action, b.outcome) for b in doc.backups] == [("rollback", "done"), ("apply", "done")]
    assert human.count(": done\n") == 2


def test_a_failed_apply_that_was_put_back_says_so_with_the_error(host: Path) -> None:
    # The 9th fsync is the directory's, after the new grub file was renamed into place: a real change to put back.
    failed = run("apply", "--yes", "--no-reboot", "--root", str(host), env={"MLXFIX_TEST_FAULTS": "fsync:9=EIO"})
    assert failed.returncode == 1, failed.stderr
    assert "restored from backup" in failed.stderr
    code, doc, human = listed(host)
    [backup] = doc.backups
    assert backup.outcome == "failed-restored"
    assert "I/O error" in backup.outcome_detail
    assert "failed, put back" in human
    assert code == 0  # put back: nothing is wrong now


def test_an_interrupted_run_and_the_run_that_finished_it(host: Path) -> None:
    crashed = run("apply", "--yes", "--no-reboot", "--root", str(host), env={"MLXFIX_TEST_CRASH_AT": "after-intent"})
    assert crashed.returncode == -9
    code, doc, human = listed(host)
    assert [b.outcome for b in doc.backups] == ["interrupted"]
    assert code == 1  # an interrupted run is something wrong
    assert "interrupted (or still running)" in human
    assert invoke("apply", "--yes", "--no-reboot", "--root", str(host))[0] == 0
    code, doc, _ = listed(host)
    assert code == 0
    finisher, finished = doc.backups
    assert (finisher.outcome, finished.outcome) == ("done", "finished")
    assert finished.outcome_detail == f"interrupted, and finished by backup {finisher.id}"


def test_a_backup_without_a_record_of_its_end_is_unknown_and_a_damaged_one_exits_1(host: Path) -> None:
    assert invoke("apply", "--yes", "--no-reboot", "--root", str(host))[0] == 0
    [backup] = list((host / "var/lib/mlxfix/backups").iterdir())
    (backup / "outcome.json").unlink()  # as an earlier mlxfix left them
    code, doc, _ = listed(host)
    assert (code, doc.backups[0].outcome) == (0, "unknown")
    (backup / "outcome.json").write_text(json.dumps({"format": 1, "outcome": "bogus", "ended": ""}))
    assert listed(host)[1].backups[0].outcome == "unknown"
    copy = backup / "0.orig"
    copy.write_bytes(copy.read_bytes() + b"X")
    code, doc, human = listed(host)
    assert code == 1
    assert doc.exit_code == 1
    assert "DAMAGED" in human
