"""GRUB 2 with Boot Loader Spec entries (Fedora, RHEL 8/9 and rebuilds): the kernel arguments live
in the BLS entries, changed with grubby; GRUB_CMDLINE_LINUX is what kernels installed later get.

grub.cfg is not regenerated: GRUB reads the entries at boot (blscfg). A rollback copies an entry
back byte for byte only when it is as the apply's grubby left it; otherwise grubby takes out only the
apply's part, and grubenv (where saved_entry changes on its own) is never copied back. Pure code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mlxfix import cmdline
from mlxfix.boot import bls
from mlxfix.boot.grub_base import GrubSetup, defaults_file
from mlxfix.boot.setup import BootSetup, Restore, refuse_what_mlxfix_never_wrote, trial_words
from mlxfix.digest import sha256
from mlxfix.errors import Refused
from mlxfix.steps import Command

if TYPE_CHECKING:
    from mlxfix.backup import Manifest
    from mlxfix.boot.nextboot import NextBoot
    from mlxfix.boot.setup import ConfigEdit, Trial, TrialState
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot
    from mlxfix.steps import FileWrite


class Grub2Bls(GrubSetup):
    name: ClassVar[str] = "grub2-bls"
    title: ClassVar[str] = "GRUB 2 with Boot Loader Spec entries (Fedora, RHEL 8/9 and rebuilds)"
    location: ClassVar[str] = "the BLS entries (grubby), and GRUB_CMDLINE_LINUX in /etc/default/grub for new kernels"
    variable: ClassVar[str | None] = "GRUB_CMDLINE_LINUX"

    def regenerate(self) -> list[list[str]]:
        return []  # GRUB reads the entries themselves; grubby's commands are part of the edit

    @classmethod
    def reads(cls) -> tuple[list[str], list[str], list[str]]:
        return [bls.GRUBENV], [], [bls.ENTRIES]

    def owns(self, path: str) -> bool:
        import fnmatch

        # (the trial entry is a BLS entry too: /boot/loader/entries/mlxfix-trial.conf)
        return defaults_file(path) or path == bls.GRUBENV or fnmatch.fnmatchcase(path, bls.ENTRIES)

    def with_entries(self, snap: Snapshot, param: Param, edit: ConfigEdit) -> ConfigEdit:
        """GRUB_CMDLINE_LINUX is for kernels installed later; grubby changes the entries there are."""
        grubby = bls.plan_grubby(snap, param)
        return edit._replace(
            reason=f"{edit.reason}, and the BLS entries",
            before=grubby.before or edit.before,
            after=grubby.after or edit.after,
            commands=tuple(Command(tuple(c.argv), c.why, regenerates=False) for c in grubby.commands),
            backup_only=tuple(snap.files[p] for p in grubby.files) if grubby.commands else (),
            expected_entries=tuple(sorted(grubby.expected.items())),
            notes=(*edit.notes, *grubby.notes),
        )

    def predict(self, entry_cmdline: str | None, edit: ConfigEdit) -> str | None:
        return edit.after if edit.changed or edit.commands else entry_cmdline

    def next_boot(self, snap: Snapshot) -> NextBoot:
        """The BLS entries (``$kernelopts`` from grubenv), saved_entry, else the newest non-rescue
        entry, as blscfg sorts them."""
        from mlxfix.boot.nextboot import Entry, NextBoot

        found = bls.entries(snap)
        if not found:
            return NextBoot(False, why=f"no BLS entries in {bls.ENTRIES.rsplit('/', 1)[0]}")
        entries = tuple(Entry(_entry_id(e.path), e.path, e.args, recovery="rescue" in _entry_id(e.path)) for e in found)
        once = bls.grubenv(snap).get("next_entry", "").strip()
        if once:  # 00_header boots next_entry once (and clears it) whatever saved_entry says
            for e in bls.entries(snap, with_trial=True):
                if _entry_id(e.path) == once:
                    entry = Entry(once, e.path, e.args, generated=e.path != bls.TRIAL)
                    return NextBoot(True, entry, f"next_entry={once} in {bls.GRUBENV} (this one boot)", entries)
        chosen = bls.default_entry(snap)
        saved = bls.grubenv(snap).get("saved_entry", "").strip()
        if chosen is None:
            return NextBoot(True, None, "no entry to boot", entries)
        why = (
            f"saved_entry={saved} in {bls.GRUBENV}"
            if saved and _entry_id(chosen.path) == saved
            else "the newest kernel's entry (no saved_entry names another)"
        )
        entry = next(e for e in entries if e.source == chosen.path)
        return NextBoot(True, entry, why, entries)

    def check_reach(self, nb: NextBoot, param: Param) -> None:
        """Every BLS entry is edited by grubby: nothing is out of the edit's reach."""

    def regenerated_from(self, path: str) -> bool:
        return BootSetup.regenerated_from(self, path)

    def plan_trial(self, snap: Snapshot, param: Param) -> Trial | None:
        """A copy of the next boot's BLS entry with the parameter (and panic=10), armed with
        ``grub2-reboot mlxfix-trial`` (next_entry in grubenv), which 00_header clears before the kernel
        starts. The default stays pinned by saved_entry; without it blscfg's sort order picks the
        default, and a copy of the newest kernel's entry could come first: refused."""
        from mlxfix.boot import grub_trial
        from mlxfix.boot.setup import Trial
        from mlxfix.steps import FileWrite

        instead = "apply without --trial (the default boot changes; mlxfix rollback undoes it), with console access at hand"
        cfg = "/boot/grub2/grub.cfg"
        text = snap.text(cfg)
        if text is None:
            raise Refused(
                f"cannot arm a one-time boot: {cfg} cannot be read, so whether GRUB clears next_entry is not known", hint=instead
            )
        if "save_env next_entry" not in text:
            raise Refused(
                f"{cfg} never clears next_entry (no 'save_env next_entry' of 00_header): a one-time boot would boot every time",
                path=cfg,
                hint=instead,
            )
        if snap.data(bls.GRUBENV) is None:
            raise Refused(f"cannot arm a one-time boot: there is no {bls.GRUBENV} for next_entry", hint=instead)
        why = grub_trial.unwritable(snap, "/boot/grub2")
        if why:
            raise Refused(
                f"cannot arm a one-time boot: {why}, so GRUB could not clear next_entry and the trial would boot every time",
                hint=instead,
            )
        if not snap.tools.get("grub2-reboot"):
            raise Refused("cannot arm a one-time boot: grub2-reboot (which sets next_entry) is not installed", hint=instead)
        env = bls.grubenv(snap)
        if snap.exists(bls.TRIAL):
            if env.get("next_entry", "").strip() == bls.TRIAL_ID:
                return None  # armed already
            raise Refused(f"an earlier trial entry ({bls.TRIAL}) is still there: run mlxfix rollback (or mlxfix apply) first")
        saved = env.get("saved_entry", "").strip()
        entry = bls.default_entry(snap)
        if entry is None:
            raise Refused("cannot arm a one-time boot: there is no BLS entry to copy", hint=instead)
        if not saved or _entry_id(entry.path) != saved:
            raise Refused(
                f"the default boot entry is not pinned by saved_entry in {bls.GRUBENV} (blscfg's sort order picks it):"
                " a trial entry could become the default",
                hint=f"pin the default first (grub2-set-default {_entry_id(entry.path)}), then run mlxfix apply --trial again",
            )
        if cmdline.in_effect(entry.args, param):
            return None
        add = trial_words(param, entry.args)
        data = bls.trial_copy(snap.text(entry.path) or "", entry.path, add)
        info = snap.files.get(entry.path)
        write = FileWrite(
            bls.TRIAL,
            b"",
            data,
            info.mode if info else 0o644,
            0,
            0,
            f"a one-time boot entry: {_entry_id(entry.path)} with {' '.join(add)}",
            existed=False,
        )
        arm = Command(
            ("grub2-reboot", bls.TRIAL_ID),
            "arm the one-time boot: GRUB boots it once, and clears next_entry before the kernel starts",
            regenerates=False,
            undo=("grub2-editenv", bls.GRUBENV, "unset", "next_entry"),
        )
        return Trial(
            entry=bls.title_of(data.decode("utf-8", "replace")) or bls.TRIAL_ID,
            fallback=_entry_id(entry.path),
            cmdline=f"{entry.args} {' '.join(add)}",
            writes=(write,),
            commands=(arm,),
            notes=(f"the trial copies {_entry_id(entry.path)} ({entry.path}); a normal boot still takes it (saved_entry)",),
        )

    def trial_state(self, snap: Snapshot) -> TrialState | None:
        from mlxfix.boot.setup import TrialState

        if not snap.exists(bls.TRIAL):
            return None
        armed = bls.grubenv(snap).get("next_entry", "").strip() == bls.TRIAL_ID
        entry = next((e for e in bls.entries(snap, with_trial=True) if e.path == bls.TRIAL), None)
        title = bls.title_of(snap.text(bls.TRIAL) or "") or bls.TRIAL_ID
        return TrialState(title, armed, entry.args if entry is not None else None, bls.TRIAL)

    def trial_cleanup(self, snap: Snapshot) -> tuple[tuple[FileWrite, ...], tuple[Command, ...]]:
        from mlxfix.steps import FileWrite

        info = snap.files.get(bls.TRIAL)
        writes: tuple[FileWrite, ...] = ()
        if info is not None and info.exists and info.data is not None:
            writes = (
                FileWrite(bls.TRIAL, info.data, b"", info.mode, info.uid, info.gid, "remove the trial entry", removes=True),
            )
        commands: tuple[Command, ...] = ()
        if bls.grubenv(snap).get("next_entry", "").strip() == bls.TRIAL_ID:
            commands = (
                Command(("grub2-editenv", bls.GRUBENV, "unset", "next_entry"), "disarm the trial boot", regenerates=False),
            )
        return writes, commands

    def without_trial(self, snap: Snapshot) -> Snapshot:
        import copy

        if not snap.exists(bls.TRIAL):
            return snap
        out = copy.copy(snap)
        out.globs = {g: [p for p in paths if p != bls.TRIAL] for g, paths in snap.globs.items()}
        out.files = {p: f for p, f in snap.files.items() if p != bls.TRIAL}
        env = snap.data(bls.GRUBENV)
        if env is not None and bls.grubenv(snap).get("next_entry", "").strip() == bls.TRIAL_ID:
            from mlxfix.boot import grub_trial

            out = out.with_files({bls.GRUBENV: grub_trial.disarmed(env)})
            out.globs = {g: [p for p in paths if p != bls.TRIAL] for g, paths in snap.globs.items()}
        out.derived = {}
        return out

    def judged_cmdline(self, snap: Snapshot) -> tuple[str | None, str]:
        entry = bls.default_entry(snap)
        return (entry.args, f"BLS entry {entry.path}, the next boot's") if entry is not None else (None, "no BLS entries")

    def plan_restore(self, snap: Snapshot, manifest: Manifest, stored: dict[str, bytes], param: Param, *, force: bool) -> Restore:
        out = Restore()
        bls_saved = {e.path: e for e in bls.entries(snap.with_files(stored))}  # what the entries held then, and now
        bls_now = {e.path: e for e in bls.entries(snap)}
        for entry in manifest.files:
            info = snap.files.get(entry.path)
            refuse_what_mlxfix_never_wrote(manifest, self, entry, info)
            if entry.path == bls.GRUBENV:
                # Never copied back: saved_entry and boot_success change on their own. grubby puts the
                # kernel options back, and only them.
                reverse = _reverse_kernelopts(snap, stored, param, bls_now)
                if reverse is not None:
                    command, wanted, drifted = reverse
                    out.commands.append(command)
                    out.expected.update(wanted)
                    out.drift += [entry.path] if drifted else []
                continue
            current = info.data if info is not None and info.exists else None
            written_by_grubby = entry.written_sha256 is None
            if written_by_grubby and not (current is not None and sha256(current) == entry.sha256):
                if current is None and not (info is not None and info.exists):
                    out.notes.append(f"{entry.path} is gone (its kernel was removed since): not recreated")
                    continue
                if (
                    current is not None
                    and not force
                    and not _as_grubby_left_it(entry.path, stored[entry.path], current, param, bls_saved, bls_now)
                ):
                    # Changed since by someone else too: grubby takes out only what the apply put in
                    # (and puts back what it replaced), the rest of their change stays.
                    undo = _reverse_entry(entry.path, param, bls_saved, bls_now)
                    if undo is not None:
                        out.commands.append(undo[0])
                        out.expected.update(undo[1])
                        out.changed_by_commands.append(entry.path)
                    continue
            self.restore_bytes(out, entry, info, stored[entry.path], manifest.id)
        saved = {e.path for e in manifest.files}
        for bls_entry in bls.entries(snap):
            if bls_entry.path not in saved and not cmdline.ensure(bls_entry.args, param):
                grubby = ("grubby", f"--update-kernel={bls_entry.kernel}", f"--remove-args={manifest.param}")
                out.commands.append(Command(grubby, f"{bls_entry.kernel} was installed after the backup", regenerates=False))
                out.changed_by_commands.append(bls_entry.path)
                out.expected[bls_entry.path] = bls.simulate_grubby(bls_entry.args, [manifest.param], [])
        if any(c.argv[0] == "grubby" and "--update-kernel=ALL" in c.argv for c in out.commands):
            out.changed_by_commands.append(bls.GRUBENV)
        # A rollback never brings a trial entry back, and removes (and disarms) one that is there.
        out.writes = [w for w in out.writes if w.removes or w.path != bls.TRIAL]
        cleanup, disarm = self.trial_cleanup(snap)
        out.writes += [w for w in cleanup if w.path not in {x.path for x in out.writes}]
        out.commands += list(disarm)
        return out


def _entry_id(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".conf")


def _as_grubby_left_it(
    path: str, saved: bytes, current: bytes | None, param: Param, bls_saved: dict[str, bls.Entry], bls_now: dict[str, bls.Entry]
) -> bool:
    """Whether a BLS entry is just as the apply's grubby left it: the same file but for the options,
    and the options the saved ones with the parameter added (so copying the saved bytes back loses
    nothing of anyone else's)."""
    before, now = bls_saved.get(path), bls_now.get(path)
    if current is None or before is None or now is None or not bls.same_apart_from_options(saved, current):
        return False
    change = bls.change_for(before.args, param)
    return change is not None and bls.same_words(now.args, change[2])


def _reverse_entry(
    path: str, param: Param, bls_saved: dict[str, bls.Entry], bls_now: dict[str, bls.Entry]
) -> tuple[Command, dict[str, str]] | None:
    """The grubby command that undoes the apply in one BLS entry someone changed since, and the
    arguments the entry must hold then (None: the apply changed nothing there)."""
    before, now = bls_saved.get(path), bls_now.get(path)
    if before is None or now is None:
        return None
    change = bls.change_for(before.args, param)
    if change is None:
        return None
    remove, add, _ = change
    present = [a for a in add if a in now.args.split()]
    if not present and all(r in now.args.split() for r in remove):
        return None  # already undone
    argv = bls.command(now.kernel, present, remove, f"take {param.text} out of {now.kernel} again").argv
    why = f"{path} was changed since the apply: grubby undoes only the apply's part"
    return Command(tuple(argv), why, regenerates=False), {path: bls.simulate_grubby(now.args, present, remove)}


def _reverse_kernelopts(
    snap: Snapshot, stored: dict[str, bytes], param: Param, bls_now: dict[str, bls.Entry]
) -> tuple[Command, dict[str, str], bool] | None:
    """RHEL 8: the grubby command that takes the parameter out of grubenv's kernelopts again (and puts
    back what it replaced), the arguments each $kernelopts entry must hold then, and whether someone
    else changed kernelopts since (a drift, which needs --force). None when there is nothing to undo."""
    saved = bls.grubenv(snap.with_files({bls.GRUBENV: stored[bls.GRUBENV]})).get("kernelopts")
    now = bls.grubenv(snap).get("kernelopts")
    if saved is None or now is None or bls.same_words(saved, now):
        return None
    change = bls.change_for(saved, param)
    if change is None:  # the apply did not change kernelopts: someone else did, and it is theirs
        return None
    remove, add, target = change
    drifted = not bls.same_words(now, target)
    users = [p for p, e in bls_now.items() if "$kernelopts" in (snap.text(p) or "")]
    wanted = {p: bls.simulate_grubby(bls_now[p].args, add, remove) for p in users}
    argv = bls.command("ALL", add, remove, f"take {param.text} out of kernelopts again").argv
    return Command(tuple(argv), "put the saved kernel options back in grubenv", regenerates=False), wanted, drifted
