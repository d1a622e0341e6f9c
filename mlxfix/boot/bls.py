"""Boot Loader Specification entries (Fedora, RHEL 8/9): their kernel arguments and grubby.

With ``GRUB_ENABLE_BLSCFG=true`` GRUB reads ``/boot/loader/entries/*.conf`` directly; their
``options`` line (or, on RHEL 8, ``$kernelopts`` from ``/boot/grub2/grubenv``) is what the kernel gets.
Red Hat's tool for them is grubby, whose ``update_args`` edits with sed and differs between versions.
So mlxfix asks grubby for the plain change (``--update-kernel=ALL --args=pci=realloc=off``, plus
``--remove-args`` for conflicts), then reads the entries back and requires exactly the planned
arguments; anything else puts the saved entry files back. Pure code.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot

__all__ = [
    "GrubbyPlan",
    "change_for",
    "command",
    "default_entry",
    "entries",
    "grubenv",
    "mismatched",
    "plan_grubby",
    "same_apart_from_options",
    "same_words",
    "simulate_grubby",
]

ENTRIES = "/boot/loader/entries/*.conf"
GRUBENV = "/boot/grub2/grubenv"
# apply --trial's one-time entry: blscfg names an entry by its file name, so grub2-reboot takes this id.
TRIAL_ID = "mlxfix-trial"
TRIAL = f"/boot/loader/entries/{TRIAL_ID}.conf"


class Entry(NamedTuple):
    path: str
    kernel: str  # /boot/vmlinuz-VERSION: what grubby --update-kernel takes
    args: str  # the effective options


class GrubbyCommand(NamedTuple):
    argv: list[str]
    why: str


class GrubbyPlan(NamedTuple):
    commands: list[GrubbyCommand]
    notes: list[str]
    files: list[str]  # what grubby will change: saved in the backup, restored on rollback
    expected: dict[str, str]  # entry path -> the arguments it must hold afterwards
    before: str | None
    after: str | None


def grubenv(snap: Snapshot) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (snap.text(GRUBENV) or "").splitlines():
        if line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if eq:
            out[key] = value
    return out


def entries(snap: Snapshot, *, with_trial: bool = False) -> list[Entry]:
    """The BLS entries with their effective kernel options (``$kernelopts`` resolved from grubenv);
    not mlxfix's trial entry unless ``with_trial`` (grubby's edits and rollbacks leave it alone: it
    is removed whole)."""
    env = grubenv(snap)
    found = []
    for path in snap.globs.get(ENTRIES, []):
        if path == TRIAL and not with_trial:
            continue
        text = snap.text(path) or ""
        kernel, options = "", ""
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "linux":
                kernel = "/boot/" + value.strip().rsplit("/", 1)[-1]  # entries name it relative to /boot
            elif key == "options":
                options = value.strip()
        args = " ".join(" ".join(env.get(w[1:], w) if w.startswith("$") else w for w in options.split()).split())
        found.append(Entry(path, kernel, args))
    return found


def trial_copy(text: str, source: str, add: list[str], *, drop: frozenset[str] = frozenset()) -> bytes:
    """A Boot Loader Spec (Type #1) entry copied for a trial: "mlxfix trial: " before its title, ``add``
    at the end of its options (the last options line: the spec joins them all), the keys in ``drop``
    left out, and a first line that says whose copy it is."""
    lines = []
    for raw in text.splitlines():
        key = raw.strip().split(" ", 1)[0]
        if key in drop:
            continue
        lines.append(f"title mlxfix trial: {raw.strip()[5:].strip()}" if key == "title" else raw)
    options = [i for i, ln in enumerate(lines) if ln.strip().split(" ", 1)[0] == "options"]
    if options:  # ($kernelopts, if there, is expanded by the boot loader)
        lines[options[-1]] = lines[options[-1]].rstrip() + " " + " ".join(add)
    else:
        lines.append("options " + " ".join(add))
    return ("\n".join([f"# mlxfix trial: a copy of {source}, with {' '.join(add)}", *lines]) + "\n").encode()


def title_of(text: str) -> str | None:
    """An entry's title line, as the menu shows it."""
    return next((ln.strip()[5:].strip() for ln in text.splitlines() if ln.strip().split(" ", 1)[0] == "title"), None)


def default_entry(snap: Snapshot) -> Entry | None:
    """The entry the next boot takes: grubenv's saved_entry (GRUB_DEFAULT=saved, Fedora's default),
    else the newest kernel's, as blscfg sorts them; never the rescue entry unless it is all there is."""
    found = entries(snap)
    saved = grubenv(snap).get("saved_entry", "").strip()
    for e in found:
        if saved and e.path.rsplit("/", 1)[-1].removesuffix(".conf") == saved:
            return e
    normal = [e for e in found if "rescue" not in e.path.rsplit("/", 1)[-1]] or found
    return max(normal, key=lambda e: _version_key(e.kernel)) if normal else None


def _version_key(kernel: str) -> list[tuple[int, int | str]]:
    """vmlinuz-6.11.10-300.fc41 after vmlinuz-6.11.9-300.fc41: numbers compared as numbers."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", kernel) if p]


def simulate_grubby(args: str, remove: list[str], add: list[str]) -> str:
    """What grubby-bls's ``update_args`` makes of ``args`` (rhboot/grubby): each removed argument's
    first occurrence (as a prefix: ``s,ARG[^ ]*,,``) goes; an added ``key=value`` (key: up to the
    *last* ``=``) replaces the first ``key=...`` or is appended; a flag is appended when absent.
    (grubby's sed uses "," as its delimiter: arguments with commas are refused before this.)"""
    text = " ".join(args.split())
    for r in remove:
        text = re.sub(re.escape(r) + r"[^ ]*", "", text, count=1)
    for a in add:
        if "=" in a:
            key, value = a.rsplit("=", 1)
            if f"{key}=" in text:
                text = re.sub(re.escape(key) + r"=[^ ]*", f"{key}={value}", text, count=1)
            else:
                text = f"{text} {a}"
        elif a not in text:
            text = f"{text} {a}"
    return " ".join(text.split())


def mismatched(snap: Snapshot, expected: dict[str, str]) -> list[str]:
    """The entries whose arguments are not the planned ones (compared as multisets of words: grubby
    appends where mlxfix would have edited in place)."""
    now = {e.path: e.args for e in entries(snap)}
    return [path for path, args in expected.items() if Counter(now.get(path, "").split()) != Counter(args.split())]


def same_apart_from_options(a: bytes, b: bytes) -> bool:
    """Whether two versions of an entry differ at most in their options line (what grubby changes)."""

    def rest(data: bytes) -> list[bytes]:
        return [ln for ln in data.splitlines() if not ln.strip().startswith(b"options")]

    return rest(a) == rest(b)


def same_words(a: str, b: str) -> bool:
    return Counter(a.split()) == Counter(b.split())


def change_for(args: str, param: Param) -> tuple[list[str], list[str], str] | None:
    """(remove, add, target) for one entry, or None when it already holds the parameter."""
    changes = cmdline.ensure(args, param)
    if not changes:
        return None
    target = cmdline.apply(args, changes)
    old, new = Counter(args.split()), Counter(target.split())
    remove = list((old - new).elements())
    add = list((new - old).elements())
    return remove, add, target


def plan_grubby(snap: Snapshot, param: Param) -> GrubbyPlan:
    found = entries(snap)
    if not found:
        raise Refused(
            "GRUB with BLS (grub2-bls) keeps the kernel arguments in BLS entries, and /boot/loader/entries has none",
            path="/boot/loader/entries",
        )
    files = [e.path for e in found]
    notes: list[str] = []
    if any("$kernelopts" in (snap.text(e.path) or "") for e in found) and snap.data(GRUBENV) is not None:
        files.append(GRUBENV)
        notes.append(f"the entries take $kernelopts from {GRUBENV} (RHEL 8): grubby updates it there")
    default = default_entry(snap)
    before = default.args if default is not None else found[0].args
    changes = [(e, c) for e in found if (c := change_for(e.args, param)) is not None]
    if not changes:
        notes.append(f"every BLS entry already has {param.text}")
        return GrubbyPlan([], notes, [], {}, before, before)
    commands: list[GrubbyCommand] = []
    expected = {e.path: c[2] for e, c in changes}
    remove, add, _ = changes[0][1]
    changed = {e.path for e, _ in changes}
    if all((c[0], c[1]) == (remove, add) for _, c in changes) and all(
        same_words(simulate_grubby(e.args, remove, add), e.args) for e in found if e.path not in changed
    ):  # one change for every entry that needs one, and none for the others: as Red Hat documents it
        commands.append(command("ALL", remove, add, f"set {param.text} in the boot entries of all kernels"))
    else:
        for e, (remove, add, _) in changes:
            commands.append(command(e.kernel, remove, add, f"set {param.text} in the boot entry of {e.kernel}"))
    for e, (remove, add, target) in changes:
        commas = [arg for arg in remove + add if "," in arg]
        if commas:
            raise Refused(
                f"grubby edits arguments with sed expressions that break on a comma ({' '.join(commas)}); "
                "edit the options line of the BLS entries by hand",
                path=e.path,
            )
        result = simulate_grubby(e.args, remove, add)
        if Counter(result.split()) != Counter(target.split()):
            raise Refused(f"grubby would turn the arguments into {result!r}, not {target!r}; edit the entry by hand", path=e.path)
    after = next((c[2] for e, c in changes if default is not None and e.path == default.path), changes[0][1][2])
    return GrubbyPlan(commands, notes, files, expected, before, after)


def command(kernel: str, remove: list[str], add: list[str], why: str) -> GrubbyCommand:
    argv = ["grubby", f"--update-kernel={kernel}"]
    if remove:
        argv.append(f"--remove-args={' '.join(remove)}")
    if add:
        argv.append(f"--args={' '.join(add)}")
    return GrubbyCommand(argv, why)
