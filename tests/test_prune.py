"""backups --prune: old backups go, never one a rollback could need; real backups made by real applies."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from mlxfix.models import BackupsResult
from tests.trees import debian_host, invoke, run, snapshot

if TYPE_CHECKING:
    from pathlib import Path

BACKUPS = "var/lib/mlxfix/backups"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return debian_host(tmp_path / "root")


def history(host: Path, pairs: int) -> None:
    """apply, rollback, apply, rollback...: one backup each, newest last."""
    for _ in range(pairs):
        assert invoke("apply", "--yes", "--no-reboot", "--root", str(host))[0] == 0
        assert invoke("rollback", "--yes", "--no-reboot", "--root", str(host))[0] == 0


def listed(host: Path, exit_code: int = 0) -> BackupsResult:
    code, out, err = invoke("backups", "--json", "--root", str(host))
    assert code == exit_code, err
    doc = BackupsResult.model_validate_json(out)
    assert doc.exit_code == exit_code
    return doc


def rollback_would_restore(host: Path) -> str:
    """The backup a plain `mlxfix rollback` restores, as its dry run says."""
    code, out, err = invoke("rollback", "--dry-run", "--json", "--root", str(host))
    assert code == 0, err
    doc = json.loads(out)
    return str(doc["restores"])


def prune(host: Path, *args: str) -> tuple[int, BackupsResult | None, str]:
    code, out, err = invoke("backups", "--prune", "--json", "--root", str(host), *args)
    return code, BackupsResult.model_validate_json(out) if code == 0 else None, err


def test_keep_n_removes_the_oldest_and_rollback_still_restores_the_same_backup(host: Path) -> None:
    history(host, 4)
    before = [b.id for b in listed(host).backups]
    assert len(before) == 8
    assert invoke("apply", "--yes", "--no-reboot", "--root", str(host))[0] == 0
    target = rollback_would_restore(host)
    code, doc, err = prune(host, "--keep", "3", "--yes")
    assert code == 0, err
    assert doc is not None
    assert doc.prune is not None
    assert not doc.prune.dry_run
    assert doc.prune.removed == before[2:]  # the 3 newest: the last apply, and the two before it
    assert [k.id for k in doc.prune.kept] == [target, *before[:2]]
    assert [b.id for b in doc.backups] == [target, *before[:2]]
    assert sorted(p.name for p in (host / BACKUPS).iterdir()) == sorted([target, *before[:2]])
    assert rollback_would_restore(host) == target
    assert invoke("rollback", "--yes", "--no-reboot", "--root", str(host))[0] == 0


def test_keep_0_still_keeps_what_rollback_restores_and_says_why(host: Path) -> None:
    history(host, 2)  # newest: a rollback, then the apply it undid
    applied = next(b.id for b in listed(host).backups if b.action == "apply")
    code, doc, err = prune(host, "--keep", "0", "--yes")
    assert code == 0, err
    assert doc is not None
    assert doc.prune is not None
    assert [(k.id, k.why) for k in doc.prune.kept] == [
        (applied, "what mlxfix rollback restores (the newest apply that saved files)")
    ]
    assert len(doc.prune.removed) == 3
    assert rollback_would_restore(host) == applied


def test_the_dry_run_removes_nothing_and_names_what_would_go(host: Path) -> None:
    history(host, 3)
    before = snapshot(host)
    code, doc, err = prune(host, "--keep", "2", "--dry-run")
    assert code == 0, err
    assert doc is not None
    assert doc.prune is not None
    assert doc.prune.dry_run
    assert len(doc.prune.removed) == 4
    assert len(doc.backups) == 6  # listed as they are
    assert snapshot(host) == before
    human = run("backups", "--prune", "--keep", "2", "-n", "--root", str(host))
    assert human.returncode == 0, human.stderr
    assert "Would remove 4 backups:" in human.stdout
    assert "one of the 2 newest (--keep)" in human.stdout
    assert snapshot(host) == before


def test_without_a_terminal_it_needs_yes_and_flags_need_prune(host: Path) -> None:
    history(host, 3)
    before = snapshot(host)
    proc = run("backups", "--prune", "--keep", "1", "--root", str(host))
    assert proc.returncode == 1
    assert "pass --yes to prune" in proc.stderr
    assert snapshot(host) == before
    proc = run("backups", "--keep", "1", "--root", str(host))
    assert proc.returncode == 2
    assert "--keep goes with --prune" in proc.stderr
    assert run("backups", "--prune", "--keep", "-1", "--root", str(host)).returncode == 2
    assert snapshot(host) == before


def test_an_interrupted_run_keeps_its_backup_and_the_chain_it_finishes(host: Path) -> None:
    history(host, 2)
    original = (host / "etc/default/grub").read_bytes()
    crashed = run(
        "apply", "--yes", "--no-reboot", "--param", "iommu=pt", "--root", str(host), env={"MLXFIX_TEST_CRASH_AT": "after-intent"}
    )
    assert crashed.returncode == -9
    intent = json.loads((host / "var/lib/mlxfix/intent.json").read_text())
    code, doc, err = prune(host, "--keep", "0", "--yes")
    assert code == 0, err
    assert doc is not None
    assert doc.prune is not None
    assert doc.prune.kept[0].id == intent["backup"]
    assert doc.prune.kept[0].why.startswith("named by the record of an interrupted run")
    assert any("interrupted" in p for p in doc.problems)
    # Finish it: the finishing run's backup and the interrupted one's are restored together, so both stay.
    finished = run("apply", "--yes", "--no-reboot", "--param", "iommu=pt", "--root", str(host))
    assert finished.returncode == 0, finished.stderr
    code, doc, err = prune(host, "--keep", "0", "--yes")
    assert code == 0, err
    assert doc is not None
    assert doc.prune is not None
    kept = {k.id: k.why for k in doc.prune.kept}
    newest = doc.backups[0].id
    assert kept[newest].startswith("what mlxfix rollback restores")
    assert kept[intent["backup"]] == f"finished by backup {newest}, which is kept: they are restored together"
    assert len(kept) == 2
    assert invoke("rollback", "--yes", "--no-reboot", "--root", str(host))[0] == 0
    assert (host / "etc/default/grub").read_bytes() == original


def test_an_unreadable_intent_record_stops_the_prune(host: Path) -> None:
    history(host, 3)
    (host / "var/lib/mlxfix/intent.json").write_text("{not json")
    before = snapshot(host)
    code, _out, err = invoke("backups", "--prune", "--keep", "0", "--yes", "--root", str(host))
    assert code == 1
    assert "cannot be read" in err
    assert "nothing was removed" in err
    assert snapshot(host) == before


def test_a_damaged_backup_is_kept_for_the_admin(host: Path) -> None:
    history(host, 3)
    oldest = listed(host).backups[-1].id
    copy = host / BACKUPS / oldest / "0.orig"
    copy.write_bytes(copy.read_bytes() + b"X")
    code, doc, err = prune(host, "--keep", "0", "--yes")
    assert code == 0, err
    assert doc is not None
    assert doc.prune is not None
    assert "damaged" in {k.id: k.why for k in doc.prune.kept}[oldest]
    assert (host / BACKUPS / oldest).is_dir()


def test_a_prune_killed_midway_leaves_whole_backups_and_the_next_one_finishes(host: Path) -> None:
    history(host, 3)
    before = listed(host).backups
    (host / BACKUPS / ".partial-20260101T000000.000Z-abcdef").mkdir()
    proc = run("backups", "--prune", "--keep", "1", "--yes", "--root", str(host), env={"MLXFIX_TEST_CRASH_AT": "prune-renamed"})
    assert proc.returncode == -9
    names = sorted(p.name for p in (host / BACKUPS).iterdir())
    assert sum(n.startswith(".pruned-") for n in names) == 4
    doc = listed(host, 1)  # leftovers are something wrong: exit 1
    assert [b.id for b in doc.backups] == [before[0].id, before[1].id]  # the kept ones, whole
    assert all(b.intact for b in doc.backups)
    assert sum("an interrupted prune" in p for p in doc.problems) == 4
    code, again, err = prune(host, "--keep", "1", "--yes")
    assert code == 0, err
    assert again is not None
    assert again.prune is not None
    assert len(again.prune.leftovers) == 5
    assert sorted(p.name for p in (host / BACKUPS).iterdir()) == sorted([before[0].id, before[1].id])
    assert again.problems == []


def test_nothing_to_prune_says_so(host: Path) -> None:
    history(host, 1)
    proc = run("backups", "--prune", "--root", str(host))  # no terminal, but nothing to ask about
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to prune" in proc.stdout
