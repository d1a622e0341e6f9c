"""Verified backups under /var/lib/mlxfix/backups/<id>/, and the intent record of a running change.

A backup is built in a private temporary directory, read back and compared, then renamed into place:
it is complete or absent, never half. Its manifest carries the sha256 of every saved file, checked
again before anything is restored: a corrupted backup is refused, never restored.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from mlxfix import __version__
from mlxfix.digest import sha256
from mlxfix.errors import FileError, Refused, UsageError
from mlxfix.host.local import BACKUP_ID, STATE_DIR

if TYPE_CHECKING:
    from mlxfix.host.local import Host, Snapshot
    from mlxfix.plan import Plan
    from mlxfix.transaction import Create, Step

__all__ = [
    "Intent",
    "Listing",
    "Manifest",
    "ManifestFile",
    "Pruning",
    "backups_request",
    "ending_step",
    "gather_backups",
    "intent_for",
    "list_backups",
    "listing_from",
    "load",
    "parse_intent",
    "prepare",
    "pruning",
]

BACKUPS = f"{STATE_DIR}/backups"
INTENT = f"{STATE_DIR}/intent.json"
LOCK = f"{STATE_DIR}/lock"
_ID = re.compile(BACKUP_ID)


class ManifestFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    stored: str  # the copy's name inside the backup directory
    sha256: str
    size: int
    mode: int
    uid: int
    gid: int
    existed: bool = True
    written_sha256: str | None = None  # what mlxfix wrote there (None: a command changed it)


class Manifest(BaseModel):
    """What a backup holds and why it was taken."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    id: str
    created: str
    time: str = ""  # the same instant as created, under the name `mlxfix backups --json` uses
    mlxfix_version: str
    host: str
    action: str
    param: str
    reason: str
    boot_setup: str
    files: list[ManifestFile]
    commands: list[list[str]]
    finishes: str | None = None  # the backup of the interrupted apply this run finished


class Ending(BaseModel):
    """How the run that made a backup ended (``outcome.json`` beside its manifest, written last)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    outcome: Literal["done", "failed-restored", "failed-not-restored"]
    ended: str
    detail: str = ""


OUTCOME = "outcome.json"


class Intent(BaseModel):
    """Written before the first change and removed after the last: if it is there at start-up, an
    earlier apply or rollback was interrupted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    action: str
    backup: str  # this run's own backup: what undoes it
    started: str
    param: str
    files: list[str]
    restores: str | None = None  # a rollback: the backup it was putting back
    stopped: str | None = None  # what stopped the run (a hang-up, a kill), written before its restore


def new_id(now: datetime | None = None) -> str:
    """Sortable (UTC, milliseconds) and unique (a random suffix): 20261125T021500.123Z-a1b2c3."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def check_id(backup_id: str) -> str:
    """A backup id as the user typed it; anything that is not one (``../../etc``) is refused."""
    if not _ID.fullmatch(backup_id):
        raise UsageError(f"{backup_id!r} is not a backup id (they look like 20261125T021500.123Z-a1b2c3; see: mlxfix backups)")
    return backup_id


def prepare(plan: Plan, hostname: str) -> tuple[Manifest, str, list[Step]]:
    """This run's backup: its manifest, the ``.partial-ID`` directory it is built in, and the steps
    that save it there (the exact bytes, mode and owner of every file the plan changes), read it
    back and rename it into place, so that it is complete or absent, never half. Pure: the host
    runs the steps (see mlxfix.transaction)."""
    from mlxfix.transaction import Checkpoint, Create, PrivateDir, Rename, Same

    backup_id = new_id()
    partial = f"{BACKUPS}/.partial-{backup_id}"
    files: list[ManifestFile] = []
    steps: list[Step] = [PrivateDir(BACKUPS), PrivateDir(partial)]  # (STATE_DIR: made private by execute.exclusive)
    sources: list[tuple[str, bytes, int, int, int, bool, str | None]] = [
        (w.path, w.before, w.mode, w.uid, w.gid, w.existed, None if w.removes else w.after_sha256) for w in plan.writes
    ]
    for info in plan.backup_only:
        assert info.data is not None
        sources.append((info.path, info.data, info.mode, info.uid, info.gid, True, None))
    for index, (path, data, mode, uid, gid, existed, written) in enumerate(sources):
        stored = f"{index}.orig"
        steps.append(Create(f"{partial}/{stored}", data))
        files.append(
            ManifestFile(
                path=path,
                stored=stored,
                sha256=sha256(data),
                size=len(data),
                mode=mode,
                uid=uid,
                gid=gid,
                existed=existed,
                written_sha256=written,
            )
        )
    created = datetime.now(UTC).isoformat(timespec="microseconds")
    manifest = Manifest(
        id=backup_id,
        created=created,
        time=created,
        mlxfix_version=__version__,
        host=hostname,
        action=plan.action,
        param=plan.param,
        reason=plan.reason,
        boot_setup=plan.setup.name,
        files=files,
        commands=[list(c.argv) for c in plan.commands],
        finishes=plan.finishing_backup,
    )
    body = _json_bytes(manifest, indent=2)
    steps.append(Create(f"{partial}/manifest.json", body))
    steps.append(Checkpoint("backup-written"))
    # Everything read back, in one batch, before it is trusted.
    copies = tuple((f"{partial}/{f.stored}", f.sha256) for f in files)
    steps.append(Same(copies, "the backup did not read back identical"))
    steps.append(Same(((f"{partial}/manifest.json", sha256(body)),), "the backup manifest did not read back identical"))
    steps.append(Rename(partial, f"{BACKUPS}/{backup_id}"))
    steps.append(Checkpoint("after-backup"))
    return manifest, partial, steps


def _parse_manifest(data: bytes | None, backup_id: str) -> Manifest:
    path = f"{BACKUPS}/{backup_id}/manifest.json"
    if data is None:
        raise FileError("the backup has no readable manifest", path=path)
    if len(data) > _MANIFEST_LIMIT:
        raise FileError(f"the manifest is larger than {_MANIFEST_LIMIT} bytes: not one mlxfix wrote", path=path)
    try:
        manifest = Manifest.model_validate(json.loads(data))
    except RecursionError:  # [[[[... nested deeper than Python's parser goes
        raise FileError("the manifest is not valid JSON (nested too deeply)", path=path) from None
    except ValueError as exc:  # not JSON, or not a manifest
        if not isinstance(exc, ValidationError):
            raise FileError(f"the manifest is not valid JSON ({exc})", path=path) from None
        first = exc.errors()[0]
        raise FileError(f"the manifest is not valid ({'.'.join(map(str, first['loc']))}: {first['msg']})", path=path) from None
    if manifest.id != backup_id:
        raise FileError(f"the manifest names backup {manifest.id}, not {backup_id}", path=path)
    for entry in manifest.files:
        if "/" in entry.stored or entry.stored.startswith(".") or not entry.stored:
            raise FileError(f"the manifest points outside the backup ({entry.stored!r}); refusing it", path=path)
        if not _safe_path(entry.path):
            raise FileError(f"the manifest names a path mlxfix never writes ({entry.path!r}); refusing it", path=path)
        if entry.mode & 0o7000 or entry.mode >> 12 not in (0, 0o10):  # set-id/sticky bits, or not a regular file
            raise FileError(f"the manifest asks for mode {entry.mode:o} on {entry.path} (set-id bits?); refusing it", path=path)
    return manifest


_MANIFEST_LIMIT = 1 << 20


def _safe_path(path: str) -> bool:
    """A path a manifest may name: absolute, normalised, no ``..``: what mlxfix itself records."""
    parts = path.split("/")
    return path.startswith("/") and len(path) > 1 and all(p not in ("", ".", "..") for p in parts[1:]) and "\0" not in path


class Listing(NamedTuple):
    manifests: list[Manifest]  # newest first
    problems: list[str]  # one line for each backup that cannot be used, and each leftover
    damaged: dict[str, str]  # backup id -> why it cannot be restored (its manifest, or a copy's sha256)
    endings: dict[str, tuple[str, str]] = {}  # backup id -> (outcome, detail): see ending()  # noqa: RUF012


def ending(snap: Snapshot, manifest: Manifest, manifests: list[Manifest], intent: Intent | None) -> tuple[str, str]:
    """How the run that made a backup ended: its outcome.json; else, while the intent record names
    it, interrupted (or still running); else finished by a later run that says so; else unknown.
    (outcome.json is written before the intent record is removed: a run cut off between the two
    did what its outcome says, and the next run only regenerates once more.)"""
    data = snap.data(f"{BACKUPS}/{manifest.id}/{OUTCOME}")
    if data is not None:
        try:
            end = Ending.model_validate(json.loads(data))
        except (ValueError, RecursionError):
            return "unknown", f"{OUTCOME} is not one mlxfix wrote"
        return end.outcome, end.detail
    if intent is not None and manifest.id == intent.backup:
        return "interrupted", "the record of the run is still there: mlxfix apply finishes it, mlxfix rollback undoes it"
    later = next((m for m in manifests if m.finishes == manifest.id), None)
    if later is not None:
        return "finished", f"interrupted, and finished by backup {later.id}"
    return "unknown", "no record of how the run ended (an earlier mlxfix, or the run was cut off at its very end)"


def ending_step(manifest: Manifest, outcome: str, detail: str = "") -> Create:
    """How the run ended, beside its backup: written after the change is over (or put back), before
    the intent record goes."""
    from mlxfix.transaction import Create

    end = Ending.model_validate({"outcome": outcome, "ended": datetime.now(UTC).isoformat(timespec="seconds"), "detail": detail})
    return Create(f"{BACKUPS}/{manifest.id}/{OUTCOME}", _json_bytes(end))


def record_ending(host: Host, manifest: Manifest, outcome: str, detail: str = "") -> None:
    step = ending_step(manifest, outcome, detail)
    host.create_file(step.path, step.data, step.mode)


def backups_request(backup_id: str = "*") -> tuple[list[str], list[str], list[str]]:
    """What a batched read needs to hold the backups (all of them, or one): files, listings, globs."""
    listing = BACKUPS if backup_id == "*" else f"{BACKUPS}/{backup_id}"
    patterns = [f"{BACKUPS}/{backup_id}/manifest.json", f"{BACKUPS}/{backup_id}/*.orig", f"{BACKUPS}/{backup_id}/{OUTCOME}"]
    return [INTENT], [listing], patterns


def gather_backups(host: Host, backup_id: str = "*") -> Snapshot:
    """Backups (all of them, or one) in one round trip: the directory, the manifests, the copies."""
    return host.gather(*backups_request(backup_id))


def _has_backups(snap: Snapshot | None) -> bool:
    """Whether a batched read made with backups_request() holds every backup."""
    return snap is not None and all(p in snap.globs for p in backups_request()[2])


def _copies(snap: Snapshot, manifest: Manifest) -> tuple[dict[str, bytes], str | None]:
    """A backup's saved files by the path they came from, every one checked against its sha256, and
    why the backup cannot be restored (None when it can)."""
    stored: dict[str, bytes] = {}
    for entry in manifest.files:
        path = f"{BACKUPS}/{manifest.id}/{entry.stored}"
        info = snap.files.get(path)
        if info is None or info.data is None or info.is_symlink:
            return stored, f"the saved copy of {entry.path} is missing or unreadable ({path})"
        if sha256(info.data) != entry.sha256:
            return stored, f"the saved copy of {entry.path} is corrupted (its sha256 does not match the manifest) ({path})"
        stored[entry.path] = info.data
    return stored, None


def listing_from(host: Host, snap: Snapshot) -> Listing:
    names = snap.listings.get(BACKUPS)
    problems: list[str] = []
    if names is None:
        info = host.read(BACKUPS)
        if info.error:
            problems.append(f"{BACKUPS}: cannot be read ({info.error.lower()}): run mlxfix as root")
        elif info.exists and not info.is_dir:
            problems.append(f"{BACKUPS}: not a directory")
        return Listing([], problems, {})
    manifests: list[Manifest] = []
    damaged: dict[str, str] = {}
    for name in (n for n in names if _ID.fullmatch(n)):
        try:
            manifest = _parse_manifest(snap.data(f"{BACKUPS}/{name}/manifest.json"), name)
        except FileError as exc:
            problems.append(str(exc))
            damaged[name] = str(exc)
            continue
        manifests.append(manifest)
        why = _copies(snap, manifest)[1]
        if why is not None:
            damaged[name] = why
            problems.append(f"{BACKUPS}/{name}: {why}; it will not be restored")
    manifests.sort(key=lambda m: (m.created, m.id), reverse=True)
    intent = parse_intent(snap.data(INTENT))
    endings = {m.id: ending(snap, m, manifests, intent) for m in manifests}
    for m in manifests:
        outcome, detail = endings[m.id]
        if outcome == "failed-not-restored":
            problems.append(f"{BACKUPS}/{m.id}: the {m.action} failed and was not put back ({detail}); see mlxfix status")
    for name in names:
        if name.startswith(".partial-"):
            problems.append(f"{BACKUPS}/{name}: an incomplete backup left by an interrupted run (it is ignored)")
        elif name.startswith(PRUNED):
            problems.append(f"{BACKUPS}/{name}: a backup an interrupted prune was removing (mlxfix backups --prune finishes it)")
    return Listing(manifests, problems, damaged, endings)


def list_backups(host: Host) -> Listing:
    """The backups, newest first, each one checked (manifest and copies, read in one batch), and a
    problem line for each one that cannot be used."""
    return listing_from(host, gather_backups(host))


def load(host: Host, backup_id: str | None, snap: Snapshot | None = None) -> tuple[Manifest, dict[str, bytes]]:
    """A backup and its files, every file checked against its sha256 (``None``: the newest backup of
    an apply that saved files). A backup made by a run that finished an interrupted apply comes with
    the one it finished: together they hold what the files were before either run."""
    manifest, stored = _load_one(host, backup_id, snap)
    seen = {manifest.id}
    earlier_id = manifest.finishes
    while earlier_id is not None and earlier_id not in seen and len(seen) < 16:
        seen.add(earlier_id)
        earlier, earlier_stored = _load_one(host, earlier_id, snap)
        older = {f.path: f for f in earlier.files}
        files = [older.pop(f.path, f) for f in manifest.files] + list(older.values())
        manifest = manifest.model_copy(update={"files": files, "reason": f"{manifest.reason}; with backup {earlier.id}"})
        stored = {**stored, **earlier_stored}  # the earlier run saw the files first
        earlier_id = earlier.finishes
    return manifest, stored


def _load_one(host: Host, backup_id: str | None, seen: Snapshot | None) -> tuple[Manifest, dict[str, bytes]]:
    """One backup, from ``seen`` when that read holds every backup (else read now)."""
    if backup_id is None:
        snap = seen if seen is not None and _has_backups(seen) else gather_backups(host)
        listing = listing_from(host, snap)
        applied = [m for m in listing.manifests if m.action == "apply" and m.files]
        if not applied:
            detail = f" ({listing.problems[0]})" if listing.problems else ""
            raise Refused(f"there is no backup of an apply to restore under {BACKUPS}{detail}")
        manifest = applied[0]
        known = {m.id for m in listing.manifests}
        newer = sorted((n for n in listing.damaged if n not in known and n > manifest.id), reverse=True)
        if newer:  # its manifest is unreadable: it may be the apply to undo, so no older one is guessed
            raise Refused(
                f"the newest backup, {newer[0]}, is damaged ({listing.damaged[newer[0]]}); refusing to fall back"
                f" to the older {manifest.id}",
                hint="see mlxfix backups, and choose one with --backup ID",
            )
    else:
        check_id(backup_id)
        if seen is not None and _has_backups(seen):
            snap, there = seen, backup_id in (seen.listings.get(BACKUPS) or [])
        else:
            snap = gather_backups(host, backup_id)
            there = snap.listings.get(f"{BACKUPS}/{backup_id}") is not None
        if not there:
            raise UsageError(f"there is no backup {backup_id} (see: mlxfix backups)")
        manifest = _parse_manifest(snap.data(f"{BACKUPS}/{backup_id}/manifest.json"), backup_id)
    stored, why = _copies(snap, manifest)
    if why is not None:
        raise FileError(f"{why}; refusing to restore from it", path=f"{BACKUPS}/{manifest.id}")
    return manifest, stored


PRUNED = ".pruned-"  # a backup being removed: renamed first, so that no listing sees half of one


class Pruning(NamedTuple):
    """What ``backups --prune`` removes and keeps, and why each kept backup is kept."""

    remove: list[Manifest]  # newest first
    kept: list[tuple[str, str]]  # (backup id, why it is kept), newest first
    leftovers: list[str]  # names of incomplete backups (.partial-*) and half-removed ones (.pruned-*)


def pruning(listing: Listing, names: list[str], keep: int, intent: Intent | None) -> Pruning:
    """Which backups may go, keeping every one a rollback could need: the ``keep`` newest, the one
    ``mlxfix rollback`` restores (the newest apply that saved files), the ones an interrupted run's
    intent record names (its undo), damaged ones (removing one could make rollback fall back to an
    older backup without a word: the admin decides), and every backup a kept one finishes (they are
    restored together)."""
    why: dict[str, str] = {}
    for backup_id in (intent.backup, intent.restores) if intent is not None else ():
        if backup_id:
            why.setdefault(backup_id, "named by the record of an interrupted run: it finishes or undoes that run")
    for m in listing.manifests[:keep]:
        why.setdefault(m.id, f"one of the {keep} newest (--keep)" if keep > 1 else "the newest (--keep)")
    applied = next((m for m in listing.manifests if m.action == "apply" and m.files and m.id not in listing.damaged), None)
    if applied is not None:
        why.setdefault(applied.id, "what mlxfix rollback restores (the newest apply that saved files)")
    for backup_id in listing.damaged:
        why.setdefault(backup_id, "damaged: left for you to look at (see the warning)")
    by_id = {m.id: m for m in listing.manifests}
    grown = True
    while grown:  # chains: at most one round per backup
        grown = False
        for m in listing.manifests:
            if m.id in why and m.finishes and m.finishes not in why:
                why[m.finishes] = f"finished by backup {m.id}, which is kept: they are restored together"
                grown = True
    order = [m.id for m in listing.manifests] + sorted(set(listing.damaged) - set(by_id), reverse=True)
    kept = [(backup_id, why[backup_id]) for backup_id in order if backup_id in why]
    remove = [m for m in listing.manifests if m.id not in why]
    leftovers = sorted(n for n in names if n.startswith((".partial-", PRUNED)))
    return Pruning(remove, kept, leftovers)


def _json_bytes(model: BaseModel, indent: int | None = None) -> bytes:
    """A record as ASCII JSON. A file name that is not UTF-8 (lone surrogates in Python) is written
    as \\udcXX escapes, which json.loads turns back into the very same name: rollback must find it."""
    return json.dumps(model.model_dump(mode="json"), indent=indent).encode() + b"\n"


def parse_intent(data: bytes | None) -> Intent | None:
    """The intent record an interrupted run left (None: there is none)."""
    if data is None:
        return None
    try:
        return Intent.model_validate(json.loads(data))
    except (ValueError, RecursionError):  # not JSON, or not an intent record: still an interrupted run
        return Intent(action="unknown", backup="", started="", param="", files=[])


def intent_for(plan: Plan, manifest: Manifest) -> tuple[Intent, list[Step]]:
    """The record of a change in progress, and the steps that write it (one an interrupted run
    left is replaced atomically, so that one is there at every instant)."""
    from mlxfix.transaction import Checkpoint, Record

    intent = Intent(
        action=plan.action,
        backup=manifest.id,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        param=plan.param,
        files=[w.path for w in plan.writes],
        restores=plan.backup_id,
    )
    return intent, [Record(INTENT, _json_bytes(intent)), Checkpoint("after-intent")]


def mark_stopped(host: Host, intent: Intent, why: str) -> None:
    """Say in the record what stopped the run (a hang-up, a kill) before its restore begins: should
    that be cut off too, the next run says why the change was left half-way."""
    stopped = intent.model_copy(update={"stopped": why})
    host.write_atomic(INTENT, _json_bytes(stopped), mode=0o600, uid=0, gid=0, expect_sha256=None)


def clear_intent(host: Host) -> None:
    host.remove(INTENT)


def describe(manifest: Manifest) -> dict[str, object]:
    """A backup as ``mlxfix backups --json`` shows it."""
    return manifest.model_dump(mode="json")
