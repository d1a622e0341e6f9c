"""What every GRUB setup shares: the grub defaults files as sh sees them, the token edit of one of
their variables, and the generated grub.cfg read as GRUB runs it at boot.

The setups differ only in the command that regenerates grub.cfg, where that grub.cfg is, and (for
grub2-bls) where the entries' options live: ``grub_debian``, ``grub_mkconfig``, ``grub2`` and
``grub2_bls`` subclass ``GrubSetup``. Pure code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from mlxfix import cmdline
from mlxfix.boot import rpmdb
from mlxfix.boot.setup import BootSetup, ConfigEdit, Restore, Trial, TrialState, trial_words
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mlxfix.backup import Manifest
    from mlxfix.boot import grubcfg
    from mlxfix.boot.nextboot import Configured, NextBoot
    from mlxfix.cmdline import Param
    from mlxfix.defaults.evaluate import Evaluation, Unknown
    from mlxfix.defaults.grubfile import GrubFile
    from mlxfix.facts import Snapshot
    from mlxfix.steps import Command, FileWrite

__all__ = ["GRUB", "GRUB_CFG", "GRUB_D", "GrubSetup", "command_line_of", "grub_command_line", "grub_evaluation", "grub_sources"]

GRUB = "/etc/default/grub"
GRUB_D = "/etc/default/grub.d"
GRUB_CFG = "/boot/grub/grub.cfg"
EFI = "/sys/firmware/efi"


def grub_sources(snap: Snapshot) -> list[GrubFile]:
    """/etc/default/grub, then grub.d/*.cfg in the order grub-mkconfig sources them; parsed once per
    snapshot (detection, the plan and the configured command line all ask)."""
    from mlxfix.defaults import grubfile

    inputs = [(path, d) for path in (GRUB, *snap.globs.get(f"{GRUB_D}/*.cfg", [])) if (d := snap.data(path)) is not None]
    memo = snap.derived.get("grub_sources")
    if memo is not None and len(memo[0]) == len(inputs) and all(a[1] is b[1] for a, b in zip(memo[0], inputs, strict=True)):
        return list(memo[1])
    sources = [grubfile.parse(d, path) for path, d in inputs]
    snap.derived["grub_sources"] = (inputs, sources)
    snap.derived.pop("grub_evaluation", None)
    return list(sources)


def grub_evaluation(snap: Snapshot) -> Evaluation | None:
    """What sh computes from the grub files (None without files, or when one does not parse); once."""
    from mlxfix.defaults.evaluate import evaluate

    sources = grub_sources(snap)
    if not sources or any(s.error for s in sources):
        return None
    if "grub_evaluation" not in snap.derived:
        # The two variables an edit may change: checkpoints before them let the check of an edit
        # re-evaluate only what follows it.
        watch = {"GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LINUX"}
        snap.derived["grub_evaluation"] = evaluate(sources, watch=watch, sourced=grub_sourced(snap, sources))
    ev: Evaluation = snap.derived["grub_evaluation"]
    return ev


def grub_sourced(snap: Snapshot, sources: list[GrubFile]) -> dict[str, GrubFile | None]:
    """The files the grub files' guarded ``.`` blocks read (``if test -f P; then . P; fi``), as the
    snapshot has them: parsed, or None where the host has no such file (the guard fails). A path the
    snapshot did not read, or could not, stays out: the block is then unknown code, as any ``.``."""
    from mlxfix.defaults import grubfile
    from mlxfix.defaults.evaluate import guarded_sources

    out: dict[str, GrubFile | None] = {}
    for path in guarded_sources(sources):
        info = snap.files.get(path)
        if info is not None and not info.exists:
            out[path] = None
        elif info is not None and info.data is not None:
            out[path] = grubfile.parse(info.data, path)
    return out


def guarded_reads(snap: Snapshot) -> list[str]:
    """What a second read must fetch for the guarded ``.`` blocks (usually nothing: no read at all)."""
    if not any(
        b". /" in d or b"source /" in d
        for f in snap.files.values()
        if (d := f.data) is not None and f.path.startswith("/etc/default/grub")
    ):
        return []
    from mlxfix.defaults.evaluate import guarded_sources

    return [p for p in guarded_sources(grub_sources(snap)) if p not in snap.files]


def locate(snap: Snapshot, value: Unknown) -> tuple[str, int | None]:
    """The file and line an unknowable value comes from (the main file when it has no place)."""
    sources = grub_sources(snap)
    if 0 <= value.file < len(sources):
        f = sources[value.file]
        return f.path, f.position(value.pos)[0] if value.pos >= 0 else None
    return GRUB, None


def defaults_file(path: str) -> bool:
    """/etc/default/grub or one of the drop-ins grub-mkconfig sources (grub.d/*.cfg)."""
    drop_in = path.startswith(f"{GRUB_D}/") and path.endswith(".cfg") and "/" not in path[len(GRUB_D) + 1 :]
    return path == GRUB or drop_in


def grub_command_line(snap: Snapshot) -> str | None:
    """The kernel options grub-mkconfig puts on normal entries, as these files configure them."""
    ev = grub_evaluation(snap)
    return None if ev is None else command_line_of(ev)


def command_line_of(ev: Evaluation) -> str | None:
    """GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT as grub-mkconfig joins them (None if unknown)."""
    from mlxfix.defaults.evaluate import Unknown

    parts = [ev.value("GRUB_CMDLINE_LINUX"), ev.value("GRUB_CMDLINE_LINUX_DEFAULT")]
    if any(isinstance(p, Unknown) for p in parts):
        return None
    return " ".join(p for p in parts if isinstance(p, str) and p.strip()).strip()


def known_tail(value: Unknown) -> str:
    """The words that end a value only sh can compute all the same: top-level appends of literal text
    over it (mlxfix's own drop-in), up to the first layer that may not run."""
    from mlxfix.defaults.evaluate import Unknown

    tail = ""
    u: object = value
    while isinstance(u, Unknown) and u.tail and u.keeps is not None:
        tail = u.tail + tail
        u = u.keeps.value
    return tail.strip()


class GrubSetup(BootSetup):
    """A GRUB whose menu grub-mkconfig generates from /etc/default/grub and its drop-ins."""

    location: ClassVar[str] = "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub"
    variable: ClassVar[str | None] = "GRUB_CMDLINE_LINUX_DEFAULT"
    editenv: ClassVar[str] = "grub-editenv"  # the tool that sets grubenv's variables (never rewritten by hand)
    # Whether this setup's grub-mkconfig sources /etc/default/grub.d/*.cfg after the main file (Debian's
    # does; upstream's and Fedora's grub2-mkconfig do not): only then can mlxfix append in a drop-in of its own.
    sources_grub_d: ClassVar[bool] = False
    grub_cfg: str = GRUB_CFG  # the grub.cfg the boot loader reads, and the regeneration writes

    def __init__(self, evidence: tuple[str, ...] = (), grub_cfg: str | None = None) -> None:
        super().__init__(evidence)
        if grub_cfg is not None:
            self.grub_cfg = grub_cfg

    @classmethod
    def require(cls, snap: Snapshot) -> None:
        if not snap.exists(GRUB):
            raise Refused(f"--boot-setup {cls.name}: {GRUB} does not exist", path=GRUB)

    @property
    def edited(self) -> str:
        assert self.variable is not None
        return self.variable

    @property
    def anchor(self) -> str:
        """The other grub variable: where a variable that does not exist yet is added, next to it."""
        return "GRUB_CMDLINE_LINUX" if self.edited == "GRUB_CMDLINE_LINUX_DEFAULT" else "GRUB_CMDLINE_LINUX_DEFAULT"

    @classmethod
    def reads(cls) -> tuple[list[str], list[str], list[str]]:
        from mlxfix.boot.grub_dropin import DPKG_CONFFILES

        # dpkg's conffile lists: whether the file an edit would touch is a package's.
        return [GRUB_CFG, "/boot/grub/grubenv", "/boot/grub/custom.cfg", "/proc/mounts"], [EFI], [DPKG_CONFFILES]

    def read_request(self) -> tuple[list[str], list[str], list[str]]:
        files, listings, globs = self.reads()
        directory = self.grub_cfg.rsplit("/", 1)[0]
        return [self.grub_cfg, f"{directory}/grubenv", f"{directory}/custom.cfg", *files], listings, globs

    def owns(self, path: str) -> bool:
        return defaults_file(path) or path == self.custom_cfg  # custom.cfg: where a trial entry goes

    def config_files(self, snap: Snapshot) -> list[str]:
        return ["/etc/default", GRUB_D, *(s.path for s in grub_sources(snap))]

    def configured_line(self, snap: Snapshot) -> str | None:
        return grub_command_line(snap) if snap.exists(GRUB) else None

    def configured(self, snap: Snapshot) -> Configured:
        """GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT, as grub-mkconfig joins them for normal
        entries (grub2-bls: GRUB_CMDLINE_LINUX, what new kernels' entries get)."""
        from mlxfix.boot.nextboot import Configured, Token
        from mlxfix.defaults.evaluate import Unknown

        sources = grub_sources(snap)
        ev = grub_evaluation(snap)
        where = GRUB + (" and grub.d" if len(sources) > 1 else "")
        if ev is None:
            return Configured(None, f"{where}: cannot be parsed")
        names = (
            ["GRUB_CMDLINE_LINUX"]
            if self.edited == "GRUB_CMDLINE_LINUX"
            else ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"]
        )
        tokens: list[Token] = []
        texts: list[str] = []
        for name in names:
            b = ev.binding(name)
            if b is None:
                continue
            if isinstance(b.value, Unknown):
                path, line = locate(snap, b.value)
                said = f"{path}:{line}: {name}: {b.value.reason}" if line else f"{path}: {name}: {b.value.reason}"
                tail = known_tail(b.value) if name == names[-1] else ""
                if tail:  # (the last variable on the linux line: its known end is the line's)
                    said += f"; whatever sh computes before it, the line ends with {tail!r}"
                return Configured(None, said, tail=tail or None)
            runs = b.value
            text = "".join(r.text for r in runs)
            texts.append(text)
            fallback = f"{sources[b.file].path}:{sources[b.file].position(b.assign.start)[0]}" if b.assign is not None else where
            starts = []
            pos = 0
            for r in runs:
                starts.append(pos)
                pos += len(r.text)
            k = 0
            for t in cmdline.split(text):
                while k + 1 < len(runs) and starts[k + 1] <= t.start:
                    k += 1
                run = runs[k] if runs else None
                if run is not None and run.literal is not None and 0 <= run.file < len(sources):
                    origin = f"{sources[run.file].path}:{sources[run.file].position(run.literal.start)[0]}"
                else:
                    origin = fallback
                tokens.append(Token(t.text, f"{origin} ({name})"))
        joined = " ".join(t for t in texts if t.strip()).strip()
        return Configured(joined, where, tuple(tokens))

    def plan_edit(self, snap: Snapshot, param: Param) -> ConfigEdit:
        """The token edit of the setup's grub variable, proved by re-running sh on the result."""
        from mlxfix.boot.grub_dropin import package_of
        from mlxfix.defaults.grubedit import Unknowable, plan_grub_edit
        from mlxfix.steps import ShellCheck, file_write, readable

        main = readable(snap, GRUB)
        sources = grub_sources(snap)
        try:
            edit = plan_grub_edit(sources, param, self.edited, self.anchor, grub_evaluation(snap))
        except Unknowable as exc:
            return self._plan_drop_in(snap, param, exc, None)
        owned = [(fe.path, pkg) for fe in edit.files if (pkg := package_of(snap, fe.path)) is not None]
        if owned:
            path, pkg = owned[0]
            upgrade = (
                f"an edit there would make dpkg ask at the package's next upgrade, and taking the maintainer's version"
                f" would drop {param.text} silently"
            )
            return self._plan_drop_in(
                snap, param, None, (path, f"{path} belongs to the package {pkg} (a dpkg conffile)", upgrade)
            )
        rpm_notes: list[str] = []
        rpm_warnings: list[str] = []
        for fe in edit.files:
            rpm = rpmdb.owner(snap, fe.path)
            if rpm is None:
                continue
            if not rpm.survives_upgrade and self.can_drop_in(snap):
                return self._plan_drop_in(snap, param, None, (fe.path, rpm.describe(), rpm.upgrade()))
            (rpm_notes if rpm.survives_upgrade else rpm_warnings).append(f"{rpm.describe()}: {rpm.upgrade()}")
        if rpm_warnings:
            rpm_warnings.append(
                f"after an upgrade of that package, run mlxfix status: it says whether {param.text} is still there"
            )
        if (why := rpmdb.unknown(snap)) is not None:
            rpm_warnings.append(f"this host has an RPM database, but rpm could not say who owns the files mlxfix edits ({why})")
        target = f"{edit.path}:{edit.line}" if edit.line else edit.path
        target = ", ".join([target, *(fe.path for fe in edit.files if fe.path != edit.path)])
        why = f"{edit.variable} {'gets' if edit.action != 'present' else 'has'} {param.text}"
        writes = tuple(file_write(snap.files[fe.path] if fe.path != GRUB else main, fe.after, why) for fe in edit.files)
        before = grub_command_line(snap)
        after = command_line_of(edit.checked) if edit.checked is not None else before
        check = ShellCheck(tuple(s.path for s in sources), edit.variable, edit.after) if edit.changed else None
        planned = ConfigEdit(
            target=target,
            reason=f"apply: {param.text} in {self.edited} of {target or GRUB}",
            before=before,
            after=after,
            changed=edit.changed,
            writes=writes,
            check=check,
            notes=(*edit.notes, *rpm_notes),
            warnings=(*edit.warnings, *rpm_warnings),
        )
        planned = self.with_entries(snap, param, planned)
        if planned.before is None or planned.after is None:
            unknown = self._unknowable_command_line(sources, grub_evaluation(snap), param)
            planned = planned._replace(warnings=(*planned.warnings, unknown), unknown=unknown)
        return planned

    def can_drop_in(self, snap: Snapshot) -> bool:
        """Whether mlxfix's own drop-in can carry the parameter here (see _plan_drop_in)."""
        return self.sources_grub_d and self.edited == "GRUB_CMDLINE_LINUX_DEFAULT" and snap.listings.get(GRUB_D) is not None

    @property
    def drop_in(self) -> str:
        from mlxfix.boot.grub_dropin import NAME

        return f"{GRUB_D}/{NAME}"

    def _plan_drop_in(
        self, snap: Snapshot, param: Param, unknowable: Refused | None, owned: tuple[str, str, str] | None
    ) -> ConfigEdit:
        """Append the parameter in mlxfix's own drop-in, read after every file that sets the variable:
        where the value is one only sh can compute (``unknowable``), or the edit would touch a package's
        file that its next upgrade would lose or fight over (``owned``: its path, whose it is, and what
        the upgrade would do)."""
        from mlxfix.boot import grub_dropin
        from mlxfix.defaults import grubfile
        from mlxfix.defaults.evaluate import Unknown, evaluate
        from mlxfix.steps import FileWrite, ShellCheck

        variable, path = self.edited, self.drop_in
        if unknowable is not None:
            why = unknowable.message
        else:
            assert owned is not None
            why = owned[1]
        if not self.sources_grub_d or variable != "GRUB_CMDLINE_LINUX_DEFAULT":
            tool = self.regenerate()[0][0]
            raise Refused(
                f"{why}; {tool} on this setup does not source {GRUB_D}/*.cfg, so mlxfix cannot append to {variable}"
                " in a drop-in of its own",
                path=unknowable.path if unknowable is not None else owned[0] if owned else None,
                line=unknowable.line if unknowable is not None else None,
                column=unknowable.column if unknowable is not None else None,
                hint=(unknowable.hint if unknowable is not None else None) or f"add {param.text} by hand",
            )
        if snap.listings.get(GRUB_D) is None:
            raise Refused(
                f"{why}, and {GRUB_D}, where mlxfix would append to {variable} in a drop-in of its own, does not exist",
                path=unknowable.path if unknowable is not None else GRUB_D,
                line=unknowable.line if unknowable is not None else None,
                column=unknowable.column if unknowable is not None else None,
                hint=f"create {GRUB_D} (mode 0755, root) and run mlxfix again, or add {param.text} by hand",
            )
        existing = snap.globs.get(f"{GRUB_D}/*.cfg", [])
        grub_dropin.refuse_unless_last(existing, GRUB_D)
        wanted = grub_dropin.content(variable, param)
        current = snap.files.get(path)
        if current is not None and current.exists:
            if current.data != wanted:
                raise Refused(
                    f"{why}; mlxfix would append to {variable} in {path}, which exists and holds something else",
                    path=path,
                    hint=f"mlxfix rollback removes the drop-in it wrote; or add {param.text} there by hand",
                )
            present = f"{path} appends {param.text} to {variable} after every other file ({why})"
            return ConfigEdit(
                target=path,
                reason=f"apply: {param.text} in {variable} of {path}",
                before=grub_command_line(snap),
                after=grub_command_line(snap),
                changed=False,
                notes=(present,),
            )
        # What sh computes with the drop-in read last, as grub-mkconfig reads it.
        sources = [*grub_sources(snap), grubfile.parse(wanted, path)]
        ev = evaluate(sources, sourced=grub_sourced(snap, sources))
        value = ev.value(variable)
        before_value = grub_evaluation(snap)
        old = before_value.value(variable) if before_value is not None else None
        if isinstance(old, str) or old is None:
            expected = f"{old or ''} {param.text}"
            if value != expected:
                raise Refused(f"with mlxfix's drop-in, sh would compute {variable} as {value!r}, not {expected!r}", path=path)
            check = ShellCheck((*(s.path for s in sources),), variable, expected)
        else:
            b = ev.binding(variable)
            tail = b.value.tail if b is not None and isinstance(b.value, Unknown) else ""
            if not tail.endswith(f" {param.text}") or ev.stops is not None:
                raise Refused(f"with mlxfix's drop-in, sh would not end {variable} with {param.text}", path=path)
            check = ShellCheck((*(s.path for s in sources),), variable, f" {param.text}", suffix=True)
        last = "the kernel takes the last pci=realloc setting" if param.is_pci else "the kernel takes the last value"
        if unknowable is not None:
            note = (
                f"{why}: no edit of an assignment is provably right, so mlxfix appends {param.text} to {variable} in its"
                f" own drop-in {path}, which grub-mkconfig sources after /etc/default/grub and every other drop-in"
                f" (it sorts last in every locale): whatever the value is by then, {param.text} ends it, and {last}"
            )
        else:
            assert owned is not None
            note = (
                f"{why}: {owned[2]}; so mlxfix appends {param.text} to {variable} in its own drop-in"
                f" {path}, which grub-mkconfig sources after {owned[0]} (it sorts last in every locale), and {last}"
            )
        write = FileWrite(path, b"", wanted, 0o644, 0, 0, f"{variable} gets {param.text}", existed=False)
        planned = ConfigEdit(
            target=path,
            reason=f"apply: {param.text} in {variable} of {path}",
            before=grub_command_line(snap),
            after=command_line_of(ev),
            changed=True,
            writes=(write,),
            check=check,
            notes=(note,),
        )
        planned = self.with_entries(snap, param, planned)
        if planned.before is None or planned.after is None:
            unknown = self._unknowable_command_line(sources, grub_evaluation(snap), param)
            planned = planned._replace(warnings=(*planned.warnings, unknown), unknown=unknown)
        return planned

    def with_entries(self, snap: Snapshot, param: Param, edit: ConfigEdit) -> ConfigEdit:
        """What the setup's own tool changes besides the files (grub2-bls: the BLS entries)."""
        del snap, param
        return edit

    def _unknowable_command_line(self, sources: Sequence[GrubFile], ev: Evaluation | None, param: Param) -> str:
        """Say which grub variable makes the kernel command line unknowable before grub-mkconfig runs it
        (a ``$(...)``, an assignment inside ``if``), and why the edit is still safe, or what is left to check.
        The edited variable itself is known (the edit would have been refused otherwise): the other one is not."""
        from mlxfix.defaults.evaluate import Unknown

        variable, anchor = self.edited, self.anchor
        said = "the kernel command line cannot be known before grub-mkconfig runs"
        value = ev.value(anchor) if ev is not None else None
        if not isinstance(value, Unknown):
            return f"{said}; apply reads grub.cfg back after the regeneration"
        where = ""
        if 0 <= value.file < len(sources) and value.pos >= 0:
            where = f"{sources[value.file].path}:{sources[value.file].position(value.pos)[0]}: "
        reason = value.reason if value.reason.startswith(anchor) else f"{anchor} is {value.reason}"
        check = (
            f"apply reads grub.cfg back after the regeneration and puts the files back if a generated entry lacks {param.text}"
            " (or says it could not read them; with --no-update, or under --root, run mlxfix status once the command has run)"
        )
        if anchor == "GRUB_CMDLINE_LINUX":  # it comes first on the linux line, the edited variable after it
            last = "the kernel takes the last pci=realloc setting" if param.is_pci else "the kernel takes the last value"
            why = (
                f"it is still safe: {variable}, which gets {param.text}, comes after it on the linux line, so a value it"
                f" gives comes first and cannot override {param.text} ({last}); only a newline or a '--' in it could keep"
                f" {param.text} from the kernel, and"
            )
        else:
            why = f"{anchor} comes after {variable} on the linux line and could hold a setting that overrides {param.text};"
        return f"{said}: {where}{reason}, which only sh can compute; {why} {check}"

    @property
    def grubenv(self) -> str:
        return f"{self.grub_cfg.rsplit('/', 1)[0]}/grubenv"

    @property
    def custom_cfg(self) -> str:
        """The custom.cfg 41_custom sources at boot: ${config_directory}, where grub.cfg is."""
        return f"{self.grub_cfg.rsplit('/', 1)[0]}/custom.cfg"

    def run_grub_cfg(
        self, snap: Snapshot, *, custom: bytes | None = None, env: dict[str, str] | None = None
    ) -> grubcfg.NextBootResult | str:
        """grub.cfg run as GRUB runs it at the next boot (with ``custom`` or ``env`` instead of the
        files', to see what they would change); a string says why it could not be read."""
        from mlxfix.boot import grubcfg

        path = self.grub_cfg
        data = snap.data(path)
        if data is None:
            info = snap.files.get(path)
            return f"{path}: {info.problem() if info is not None else 'not read'}"
        if env is None:
            env_data = snap.data(self.grubenv)
            env = grubcfg.parse_grubenv(env_data) if env_data is not None else None
        custom = snap.data(self.custom_cfg) if custom is None else custom
        platform = "efi" if snap.exists(EFI) else "pc"
        return grubcfg.next_boot(data, path, env=env, custom=custom, custom_path=self.custom_cfg, platform=platform)

    def next_boot(self, snap: Snapshot) -> NextBoot:
        """The generated grub.cfg, the entry its ``default`` (after grubenv's next_entry and
        saved_entry) picks, and that entry's ``linux`` line as the kernel gets it."""
        from mlxfix.boot.nextboot import Entry, NextBoot

        result = self.run_grub_cfg(snap)
        if isinstance(result, str):
            return NextBoot(False, why=result)
        entries = tuple(Entry(e.name, e.source, e.cmdline, e.recovery, e.generated) for e in result.entries if e.boots_linux)
        chosen = result.entry
        entry = (
            Entry(chosen.name, chosen.source, chosen.cmdline, chosen.recovery, chosen.generated) if chosen is not None else None
        )
        return NextBoot(True, entry, result.why, entries, tuple(result.problems))

    def regenerated_from(self, path: str) -> bool:
        return path != self.custom_cfg  # GRUB reads custom.cfg itself, at boot

    def plan_trial(self, snap: Snapshot, param: Param) -> Trial | None:
        """A copy of the next boot's entry in custom.cfg, with the parameter (and panic=10, so that a
        panic reboots into the old default), armed with grub-editenv's next_entry."""
        from mlxfix.boot import grub_trial, grubcfg
        from mlxfix.steps import Command, FileWrite

        result = self.run_grub_cfg(snap)
        instead = "apply without --trial (the default boot changes; mlxfix rollback undoes it), with console access at hand"
        if isinstance(result, str):
            raise Refused(f"cannot arm a one-time boot: {result}", hint=instead)
        text = snap.text(self.grub_cfg) or ""
        if "save_env next_entry" not in text:
            raise Refused(
                f"{self.grub_cfg} never clears next_entry (no 'save_env next_entry' of 00_header): a one-time boot would"
                " boot every time",
                path=self.grub_cfg,
                hint=instead,
            )
        if not re.search(r"^\s*source\s+\S*custom\.cfg\s*$", text, re.MULTILINE):
            raise Refused(
                f"{self.grub_cfg} does not source custom.cfg (no 41_custom hook): GRUB would not see a trial entry",
                path=self.grub_cfg,
                hint=instead,
            )
        why = grub_trial.unwritable(snap, self.grub_cfg.rsplit("/", 1)[0])
        if why:
            raise Refused(
                f"{why}: GRUB could not clear next_entry at boot (save_env), so a one-time boot would boot every time",
                hint=instead,
            )
        env_data = snap.data(self.grubenv)
        env = grubcfg.parse_grubenv(env_data) if env_data is not None else {}
        custom = snap.data(self.custom_cfg)
        if env.get("next_entry") == grub_trial.TRIAL_ID and grub_trial.present(custom):
            return None  # armed already
        entry = result.entry
        if entry is None or entry.cmdline is None:
            raise Refused(
                f"cannot arm a one-time boot: which entry the next boot takes is not known ({result.why})", hint=instead
            )
        if cmdline.in_effect(entry.cmdline, param):
            return None
        if entry.path == self.custom_cfg and grub_trial.present(custom):
            raise Refused(
                f"the next boot takes {entry.name!r} from {self.custom_cfg}, beside an old trial entry: run mlxfix rollback first"
            )
        add = trial_words(param, entry.cmdline)
        block = grub_trial.copy_entry(snap.text(entry.path) or "", entry, add)
        after = grub_trial.with_block(custom, block)
        tried = self.run_grub_cfg(snap, custom=after, env={**env, "next_entry": grub_trial.TRIAL_ID})
        normal = self.run_grub_cfg(snap, custom=after, env={k: v for k, v in env.items() if k != "next_entry"})
        # Proved on the same model of GRUB before anything is written: armed, the trial entry boots
        # with the parameter; disarmed (after the one boot), the default is the entry it was.
        if isinstance(tried, str) or tried.entry is None or tried.entry.id != grub_trial.TRIAL_ID:
            raise Refused(f"the trial entry written to {self.custom_cfg} would not be the one-time boot: not armed")
        if tried.entry.cmdline is None or not cmdline.in_effect(tried.entry.cmdline, param):
            raise Refused(f"the trial entry would not give the kernel {param.text} ({tried.entry.cmdline}): not armed")
        if (
            isinstance(normal, str)
            or normal.entry is None
            or (normal.entry.name, normal.entry.cmdline) != (entry.name, entry.cmdline)
        ):
            raise Refused("with the trial entry, a normal boot would not take the entry it takes now: not armed")
        info = snap.files.get(self.custom_cfg)
        existed = custom is not None
        write = FileWrite(
            self.custom_cfg,
            custom or b"",
            after,
            info.mode if info is not None and existed else 0o644,
            info.uid if info is not None and existed else 0,
            info.gid if info is not None and existed else 0,
            f"a one-time boot entry: {entry.name!r} with {' '.join(add)}",
            existed=existed,
        )
        tool = self.editenv
        arm = Command(
            (tool, self.grubenv, "set", f"next_entry={grub_trial.TRIAL_ID}"),
            "arm the one-time boot: GRUB boots it once, and clears next_entry before the kernel starts",
            regenerates=False,
            undo=(tool, self.grubenv, "unset", "next_entry"),
        )
        return Trial(
            entry=tried.entry.name,
            fallback=entry.name,
            cmdline=tried.entry.cmdline,
            writes=(write,),
            commands=(arm,),
            notes=(f"the trial copies {entry.name!r} ({entry.source}); a normal boot still takes it",),
        )

    def trial_state(self, snap: Snapshot) -> TrialState | None:
        from mlxfix.boot import grub_trial, grubcfg

        if not grub_trial.present(snap.data(self.custom_cfg)):
            return None
        env_data = snap.data(self.grubenv)
        armed = env_data is not None and grubcfg.parse_grubenv(env_data).get("next_entry") == grub_trial.TRIAL_ID
        result = self.run_grub_cfg(snap)
        found = [] if isinstance(result, str) else [e for e in result.entries if e.id == grub_trial.TRIAL_ID]
        if not found:
            return TrialState("mlxfix trial", armed, None, self.custom_cfg)
        return TrialState(found[0].name, armed, found[0].cmdline, found[0].source)

    def without_trial(self, snap: Snapshot) -> Snapshot:
        from mlxfix.boot import grub_trial

        new: dict[str, bytes] = {}
        custom, env = snap.data(self.custom_cfg), snap.data(self.grubenv)
        if custom is not None and grub_trial.present(custom):
            new[self.custom_cfg] = grub_trial.strip(custom)
        if env is not None:
            new[self.grubenv] = grub_trial.disarmed(env)
        return snap.with_files(new) if new else snap

    def trial_cleanup(self, snap: Snapshot) -> tuple[tuple[FileWrite, ...], tuple[Command, ...]]:
        from mlxfix.boot import grub_trial, grubcfg
        from mlxfix.steps import Command, FileWrite

        info = snap.files.get(self.custom_cfg)
        data = snap.data(self.custom_cfg)
        writes: tuple[FileWrite, ...] = ()
        if info is not None and data is not None and grub_trial.present(data):
            rest = grub_trial.strip(data)
            gone = not rest.strip()  # it held the trial entry only: mlxfix made it
            why = "remove the trial entry" + (" (the file held nothing else)" if gone else "")
            writes = (FileWrite(self.custom_cfg, data, b"" if gone else rest, info.mode, info.uid, info.gid, why, removes=gone),)
        env_data = snap.data(self.grubenv)
        commands: tuple[Command, ...] = ()
        if env_data is not None and grubcfg.parse_grubenv(env_data).get("next_entry") == grub_trial.TRIAL_ID:
            commands = (Command((self.editenv, self.grubenv, "unset", "next_entry"), "disarm the trial boot", regenerates=False),)
        return writes, commands

    def plan_restore(self, snap: Snapshot, manifest: Manifest, stored: dict[str, bytes], param: Param, *, force: bool) -> Restore:
        """As for any setup, but a rollback never brings a trial entry back (a backup taken after a
        trial holds it) and disarms one that is armed."""
        from mlxfix.boot import grub_trial

        out = super().plan_restore(snap, manifest, stored, param, force=force)
        kept = []
        for w in out.writes:
            if w.path == self.custom_cfg and not w.removes and grub_trial.present(w.after):
                rest = grub_trial.strip(w.after)
                if rest == w.before or (not w.existed and not rest.strip()):
                    out.notes.append(
                        f"{w.path}: as it was before backup {manifest.id}, but for its trial entry (not brought back)"
                    )
                    continue
                w = w._replace(after=rest, why=f"{w.why}, without its trial entry")  # noqa: PLW2901
            kept.append(w)
        out.writes = kept
        cleanup_writes, disarm = self.trial_cleanup(snap)
        if not any(w.path == self.custom_cfg for w in out.writes) and grub_trial.present(snap.data(self.custom_cfg)):
            out.writes += list(cleanup_writes)  # a trial armed after this backup was taken
        out.commands += list(disarm)
        return out

    def check_reach(self, nb: NextBoot, param: Param) -> None:
        """The next boot takes a custom entry (40_custom, custom.cfg) with a linux line of its own: an
        edit of the grub variables is right there and useless."""
        entry = nb.entry
        if entry is None or entry.generated or entry.cmdline is None or cmdline.in_effect(entry.cmdline, param):
            return
        raise Refused(
            f"the next boot takes {entry.name!r} ({entry.source}; {nb.why}), an entry with a linux line of its own that does"
            f" not use {self.edited}: adding {param.text} there would not reach the kernel",
            path=entry.source.rsplit(":", 1)[0],
            hint=f"point GRUB_DEFAULT at a generated entry, or add {param.text} to that entry's linux line by hand"
            " (/etc/grub.d/40_custom or custom.cfg), then run update-grub",
        )

    def judged_cmdline(self, snap: Snapshot) -> tuple[str | None, str]:
        nb = self.next_boot(snap)  # what the next boot really gets, when grub.cfg can be read
        if nb.read and nb.entry is not None and nb.entry.cmdline is not None:
            return nb.entry.cmdline, f"{nb.entry.source} (the entry the next boot takes: {nb.entry.name})"
        line = grub_command_line(snap)
        where = GRUB + (" and grub.d" if snap.globs.get(f"{GRUB_D}/*.cfg") else "")
        if line is None:
            them = "them" if " and " in where else "it"
            return None, f"{where}: not known without running {them} ({_why_unknown(snap)})"
        return line, where


def _why_unknown(snap: Snapshot) -> str:
    """Why sh's view of the grub files cannot be computed statically, in one phrase with file and line."""
    from mlxfix.defaults.evaluate import Unknown

    for f in grub_sources(snap):
        pos = f.binary_at()
        if pos >= 0:
            return f"{f.path}:{f.position(pos)[0]} is binary"
        if f.error is not None:
            return f"{f.path}:{f.position(f.error.pos)[0]}: {f.error.message}"
    ev = grub_evaluation(snap)
    for name in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
        value = ev.value(name) if ev is not None else None
        if isinstance(value, Unknown):
            path, line = locate(snap, value)
            return f"{path}:{line}: {name}: {value.reason}" if line else f"{path}: {name}: {value.reason}"
    return "the grub files cannot be read"
