"""Boot Loader Specification entries (Fedora, RHEL 8/9): their kernel arguments and grubby.

With ``GRUB_ENABLE_BLSCFG=true`` GRUB reads ``/boot/loader/entries/*.conf`` directly; their
``options`` line (or, on RHEL 8, ``$kernelopts`` from ``/boot/grub2/grubenv``) is what the kernel gets.
Red Hat's tool for them is grubby. Its ``--args`` drops the first existing argument with the same
name for every argument it adds (so ``--args=pci=realloc=off`` alone would drop a ``pci=noaer``);
the commands planned here re-add what must stay. The entry files are backed up and restored byte for
byte on rollback. Pure code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.cmdline import Param
    from mlxfix.host import Snapshot

__all__ = ["GrubbyPlan", "entries", "plan_grubby", "simulate_grubby"]

ENTRIES = "/boot/loader/entries/*.conf"
GRUBENV = "/boot/grub2/grubenv"


class Entry(NamedTuple):
    path: str
    kernel: str  # the "linux" line: what grubby --update-kernel takes
    args: str  # the effective options


@dataclass
class GrubbyCommand:
    argv: list[str]
    why: str


@dataclass
class GrubbyPlan:
    commands: list[GrubbyCommand] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # what grubby will change: back them up
    record: dict[str, str] = field(default_factory=dict)
    before: str | None = None
    after: str | None = None


def _grubenv(snap: Snapshot) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (snap.text(GRUBENV) or "").splitlines():
        if line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if eq:
            out[key] = value
    return out


def entries(snap: Snapshot) -> list[Entry]:
    """The BLS entries with their effective kernel options."""
    env = _grubenv(snap)
    found = []
    for path in snap.globs.get(ENTRIES, []):
        text = snap.text(path) or ""
        kernel, options = "", ""
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "linux":
                kernel = value.strip()
            elif key == "options":
                options = value.strip()
        args = " ".join(env.get(w[1:], w) if w.startswith("$") else w for w in options.split())
        found.append(Entry(path, kernel, args))
    return found


def simulate_grubby(args: str, remove: list[str], add: list[str]) -> str:
    """What grubby's ``update_args`` makes of ``args``: each removed argument goes (its first
    occurrence; a bare name also takes ``name=...``), then for each added argument the first one
    with the same name goes, and the added ones are appended."""
    words = args.split()
    for r in remove:
        for i, w in enumerate(words):
            if w == r or ("=" not in r and w.split("=", 1)[0] == r):
                del words[i]
                break
    for a in add:
        key = a.split("=", 1)[0]
        for i, w in enumerate(words):
            if w.split("=", 1)[0] == key:
                del words[i]
                break
    return " ".join(words + add)


def _grubby_args(args: str, param: Param) -> tuple[list[str], list[str]] | None:
    """(remove, add) for one entry, or None when it already holds the parameter."""
    if not cmdline.ensure(args, param):
        return None
    target = cmdline.apply(args, cmdline.ensure(args, param))
    old = args.split()
    new = target.split()
    remove = [w for w in old if w not in new]
    add_keys = {w.split("=", 1)[0] for w in new if w not in old}
    # Every kept argument that shares a name with an added one must be added again (grubby drops it).
    kept_same_key = [w for w in new if w in old and w.split("=", 1)[0] in add_keys]
    add = kept_same_key + [w for w in new if w not in old]
    return remove, add


def plan_grubby(snap: Snapshot, param: Param) -> GrubbyPlan:
    plan = GrubbyPlan()
    found = entries(snap)
    if not found:
        raise Refused("GRUB_ENABLE_BLSCFG=true but there are no BLS entries in /boot/loader/entries", path="/boot/loader/entries")
    plan.files = [e.path for e in found]
    if any("$kernelopts" in (snap.text(e.path) or "") for e in found) and snap.data(GRUBENV) is not None:
        plan.files.append(GRUBENV)
        plan.notes.append(f"the entries take $kernelopts from {GRUBENV} (RHEL 8): grubby updates it there")
    plan.before = found[0].args
    todo = [(e, _grubby_args(e.args, param)) for e in found]
    changes = [(e, c) for e, c in todo if c is not None]
    if not changes:
        plan.notes.append(f"every BLS entry already has {param.text}")
        plan.after = plan.before
        return plan
    same = len({e.args for e in found}) == 1
    groups = [("ALL", changes[0][1], "all kernels")] if same else [(e.kernel, c, e.kernel) for e, c in changes]
    for e, (remove, add) in changes:
        if cmdline.ensure(simulate_grubby(e.args, remove, add), param):
            raise Refused(f"mlxfix cannot express this change with grubby for {e.kernel}; edit the entry by hand", path=e.path)
    for kernel, (remove, add), what in groups:
        argv = ["grubby", f"--update-kernel={kernel}"]
        if remove:
            argv.append(f"--remove-args={' '.join(remove)}")
        argv.append(f"--args={' '.join(add)}")
        plan.commands.append(GrubbyCommand(argv, f"set {param.text} in the boot entries of {what}"))
    first = changes[0]
    plan.after = simulate_grubby(first[0].args, *first[1])
    plan.record = {"bls_entries": " ".join(e.path for e in found)}
    return plan
