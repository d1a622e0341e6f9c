"""Make a kernel parameter hold in a grub variable across ``/etc/default/grub`` and its drop-ins.

The edit works on what ``/bin/sh`` computes, not on lines: the evaluator gives the variable's final
value with the source literal behind every character; ``cmdline.ensure`` says which characters to
remove and what to insert; the changes are mapped back onto the bytes of those literals, in each
literal's own quoting. The result is parsed and evaluated again and must show exactly the intended
value, every other variable unchanged and no new syntax error; anything else is refused, never guessed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from mlxfix import cmdline
from mlxfix.cmdline import Change, Param
from mlxfix.defaults import grubfile
from mlxfix.defaults.evaluate import Binding, Evaluation, Run, Unknown, evaluate, reevaluate, text_of
from mlxfix.defaults.shell import DoubleQuoted, Expansion, Literal, literal_atoms
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mlxfix.defaults.grubfile import GrubFile

__all__ = ["FileEdit", "GrubEdit", "Unknowable", "plan_grub_edit"]

_PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")
_ENGINES = {"{{": "Jinja, Go or Mustache", "{%": "Jinja", "{#": "Jinja", "<%": "ERB or Puppet EPP"}
_BARE_SAFE = re.compile(r"[A-Za-z0-9_.,:=+/@%^!~-]*")
MAX_BYTES = 1 << 20


class FileEdit(NamedTuple):
    """New bytes for one file of the set (``source``: its index in the sources)."""

    source: int
    path: str
    before: bytes
    after: bytes
    regions: tuple[tuple[int, int], ...] = ()  # the changed spans, as offsets in ``after``


class GrubEdit(NamedTuple):
    """The outcome of planning: the value before and after, the files that change and why."""

    variable: str
    param: Param
    before: str | None  # None: no file set the variable
    after: str
    files: tuple[FileEdit, ...]
    path: str  # the file whose assignment is effective (edited or added)
    line: int
    action: str  # "present", "edited" or "added"
    notes: tuple[str, ...] = ()
    checked: Evaluation | None = None  # what sh computes from the edited files: the check's own evaluation
    warnings: tuple[str, ...] = ()  # what the admin should fix, though the edit is right

    @property
    def changed(self) -> bool:
        return bool(self.files)


class Unknowable(Refused):
    """The variable's value cannot be known without running the files (an ``if``, a ``$(...)``...):
    no edit of an assignment is provably right. ``variable``: the one that is unknowable. A setup whose
    grub-mkconfig sources grub.d can still append to it in a drop-in that is read last."""

    def __init__(self, message: str, *, variable: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.variable = variable


class _Splice(NamedTuple):
    file: int
    start: int
    end: int
    text: str


def _refuse(files: Sequence[GrubFile], file: int, pos: int, message: str, hint: str | None = None) -> Refused:
    if 0 <= file < len(files) and pos >= 0:
        line, col = files[file].position(pos)
        return Refused(message, path=files[file].path, line=line, column=col, hint=hint)
    return Refused(message, path=files[file].path if 0 <= file < len(files) else None, hint=hint)


def check_editable(f: GrubFile) -> None:
    """Refuse files mlxfix must not touch: oversized, binary, invalid shell, package templates."""
    if len(f.data) > MAX_BYTES:
        raise Refused(f"the file is {len(f.data)} bytes, over the 1 MiB mlxfix accepts", path=f.path)
    if f.data.startswith(b"\xef\xbb\xbf"):
        raise Refused(
            "the file starts with a UTF-8 byte order mark: sh reads its first word as a command name, not as an assignment",
            path=f.path,
            line=1,
            hint="remove the three bytes EF BB BF at the start of the file",
        )
    pos = f.binary_at()
    if pos >= 0:
        line, col = f.position(pos)
        what = "NUL bytes" if f.text[pos] == "\x00" else f"the control byte {ord(f.text[pos]):#04x}"
        raise Refused(f"the file holds {what}: it is binary, not a shell file", path=f.path, line=line, column=col)
    _refuse_template(f)
    err = f.error
    if err is not None:
        line, col = f.position(err.pos)
        raise Refused(
            f"sh cannot parse this file ({err.message}); grub-mkconfig would fail on it", path=f.path, line=line, column=col
        )
    found = f.placeholders()
    if found:
        line, name, ph = found[0]
        raise Refused(
            f"{name} holds the placeholder {ph}: this is a package template, not a live configuration", path=f.path, line=line
        )


def _refuse_template(f: GrubFile, after_edit: bool = False) -> None:
    """A template (Ansible's Jinja, Chef's ERB...) is not what grub-mkconfig should source: its
    rendering is what the host will have, so an edit of the template itself is refused (before a
    syntax error, which a template usually is to sh, so that the reason given is the real one)."""
    found = f.template_marker()
    if found is None:
        return
    pos, marker = found
    line, col = f.position(pos)
    engine = _ENGINES.get(marker[:2], "a template placeholder")
    what = "; the edit would create it" if after_edit else ""
    raise Refused(
        f"{marker!r} is a template marker ({engine}{what}): this file is a template to be rendered, not a live configuration",
        path=f.path,
        line=line,
        column=col,
        hint="change the template's variables (or its source) and render it, or fix the rendered file",
    )


def plan_grub_edit(
    sources: Sequence[GrubFile],
    param: Param,
    variable: str = "GRUB_CMDLINE_LINUX_DEFAULT",
    anchor: str = "GRUB_CMDLINE_LINUX",
    evaluation: Evaluation | None = None,
) -> GrubEdit:
    """Plan the edit that makes ``param`` hold exactly once in ``variable`` as sh computes it after
    sourcing ``sources`` in order (``/etc/default/grub`` first, then ``grub.d/*.cfg`` sorted).

    Raises ``Refused`` with file, line and reason when the result cannot be known statically.
    ``evaluation``: ``evaluate(sources)``, when the caller already has it.
    """
    for f in sources:
        check_editable(f)
    ev = evaluation if evaluation is not None else evaluate(sources, watch={variable, anchor})
    if ev.stops is not None:  # grub-mkconfig sources these files: it would end there, without a grub.cfg
        u = ev.stops
        raise _refuse(
            sources,
            u.file,
            u.pos,
            f"{u.reason}: grub-mkconfig, which sources this file, would stop there too and never write grub.cfg",
        )
    b = ev.binding(variable)
    if b is None:
        held = _held_by_the_other(ev, variable, anchor, param, "")
        if held:
            return GrubEdit(variable, param, None, "", (), sources[0].path, 0, "present", (held,))
        _refuse_split_anchor(sources, ev, variable, anchor)
        return _add_assignment(sources, ev, param, variable, anchor)
    layers: list[tuple[Binding, Unknown]] = []  # conditional appends between the effective value and the edit
    if isinstance(b.value, Unknown):
        final = b.value
        inner, layers = _through_appends(b)
        if inner is None or not all(_keeps_param(u, param) for _, u in layers):
            raise _unknowable(sources, final, variable, param)
        b = inner
    value = b.value
    assert not isinstance(value, Unknown)
    text = text_of(value)
    notes = _notes(sources, ev, b, variable, anchor, param)
    if layers:
        notes = (*notes, _layers_note(sources, b, layers, variable, param))
    _refuse_split_anchor(sources, ev, variable, anchor)
    # grub-mkconfig copies the value into grub.cfg's linux line as it is, and GRUB ends that line at a
    # newline: only what comes before the first one reaches the kernel, so that is where the edit goes.
    head = text.split("\n", 1)[0]
    warnings = (_split_note(sources, value, variable, head),) if head != text else ()
    changes = tuple(_tidy(value, c) for c in cmdline.ensure(head, param))
    line = sources[b.file].position(b.assign.start)[0] if b.assign is not None else 0
    held = _held_by_the_other(ev, variable, anchor, param, text) if changes else ""
    if held:
        return GrubEdit(variable, param, text, text, (), sources[b.file].path, line, "present", (*notes, held), warnings=warnings)
    if _comes_first(variable) and isinstance(other := ev.value(anchor), str):
        clash = [c for c in cmdline.conflicts(other, param) if c != param.text]
        if clash:
            at = ev.binding(anchor)
            known = at is not None and at.assign is not None
            raise Refused(
                f"{anchor} has {' '.join(clash)}, which comes after {variable} on the kernel command line and would win",
                path=sources[at.file].path if at is not None and known else None,
                line=sources[at.file].position(at.assign.start)[0] if at is not None and at.assign is not None else None,
                hint=f"take {' '.join(clash)} out of {anchor} first, then run mlxfix again",
            )
    if not changes:
        return GrubEdit(variable, param, text, text, (), sources[b.file].path, line, "present", notes, warnings=warnings)
    splices: list[_Splice] = []
    for change in changes:
        splices.extend(_map_change(sources, b, value, change, variable))
    expected = cmdline.apply(text, changes)
    where = (b.file, b.assign.start if b.assign is not None else -1)
    files = _splice_files(sources, splices, where)
    checked = _verify(sources, ev, files, variable, expected, param, where, layers)
    return GrubEdit(variable, param, text, expected, files, sources[b.file].path, line, "edited", notes, checked, warnings)


def _unknowable(sources: Sequence[GrubFile], u: Unknown, variable: str, param: Param) -> Unknowable:
    line, col = sources[u.file].position(u.pos) if 0 <= u.file < len(sources) and u.pos >= 0 else (None, None)
    return Unknowable(
        f"cannot know the value of {variable} without running the file: {u.reason}",
        variable=variable,
        path=sources[u.file].path if 0 <= u.file < len(sources) else None,
        line=line,
        column=col,
        hint=f"set {variable} in a plain top-level assignment, or add {param.text} by hand",
    )


def _through_appends(b: Binding) -> tuple[Binding | None, list[tuple[Binding, Unknown]]]:
    """The binding below a chain of conditional self-appends (``if ...; then X="$X splash"; fi``), and
    the chain, outermost first; None when there is no known value below it."""
    layers: list[tuple[Binding, Unknown]] = []
    cur: Binding | None = b
    while cur is not None and isinstance(cur.value, Unknown):
        if cur.value.keeps is None or not cur.value.added:
            return None, layers
        layers.append((cur, cur.value))
        cur = cur.value.keeps
    return cur, layers


def _keeps_param(u: Unknown, param: Param) -> bool:
    """Whether whatever a conditional append adds leaves ``param``, once it is in the earlier value,
    in effect and alone: words that are not the parameter, conflict with nothing it is, and cannot
    take it from the kernel (no ``--``, after which the kernel passes words to init; no quote, which
    could join it to another word; no newline, where GRUB ends the linux line)."""
    for text in u.added:
        words = cmdline.split(text)
        if any(w.text == "--" for w in words) or '"' in text or "\n" in text:
            return False
        if cmdline.contains(text, param) or cmdline.conflicts(text, param):
            return False
    return True


def _layers_note(
    sources: Sequence[GrubFile], b: Binding, layers: Sequence[tuple[Binding, Unknown]], variable: str, param: Param
) -> str:
    """Why editing the earlier assignment is right although the final value is only known to sh."""
    assert b.assign is not None
    f = sources[b.file]
    there = f"{f.path}:{f.position(b.assign.start)[0]}"
    said = []
    for _, u in layers:
        here = f"{sources[u.file].path}:{sources[u.file].position(u.pos)[0]}" if 0 <= u.file < len(sources) else "a drop-in"
        words = " ".join(repr(w.text) for w in cmdline.split(" ".join(u.added)))
        said.append(f"{here} ({u.reason.removeprefix(variable + ' is ')}) only adds {words} to it")
    return (
        f"{'; '.join(said)}: whichever way sh's test goes, {variable} keeps the value set in {there} and gains only words"
        f" that are not {param.text} and do not override it, so {param.text} is in the final value either way;"
        f" the edit goes to {there}"
    )


def _split_note(sources: Sequence[GrubFile], value: tuple[Run, ...], variable: str, head: str) -> str:
    """Say where the value's newline is, and what GRUB makes of what follows it."""
    where = ""
    for r in value:
        if "\n" in r.text and r.literal is not None and 0 <= r.file < len(sources):
            where = f"{sources[r.file].path}:{sources[r.file].position(r.literal.start)[0]}: "
            break
    rest = text_of(value)[len(head) + 1 :].strip().replace("\n", " ")
    return (
        f"{where}{variable} holds a newline: grub-mkconfig copies it into grub.cfg as it is, and GRUB ends the linux line"
        f" there, so the parameter goes before it; what follows ({rest or 'nothing'!r}) is a line GRUB runs as a command"
        " and never reaches the kernel: put the whole value on one line"
    )


def _refuse_split_anchor(sources: Sequence[GrubFile], ev: Evaluation, variable: str, anchor: str) -> None:
    """GRUB_CMDLINE_LINUX comes first on the linux line: a newline in it leaves everything of
    GRUB_CMDLINE_LINUX_DEFAULT on a line of its own, which never reaches the kernel."""
    if _comes_first(variable):
        return
    other = ev.value(anchor)
    b = ev.binding(anchor)
    if not isinstance(other, str) or "\n" not in other or b is None:
        return
    line = sources[b.file].position(b.assign.start)[0] if b.assign is not None else None
    raise Refused(
        f"{anchor} holds a newline: grub-mkconfig copies it into grub.cfg's linux line as it is, GRUB ends the line there,"
        f" and {variable}, which follows it, would never reach the kernel",
        path=sources[b.file].path,
        line=line,
        hint=f"put the value of {anchor} on one line, then run mlxfix again",
    )


def _comes_first(variable: str) -> bool:
    """grub-mkconfig writes ``${GRUB_CMDLINE_LINUX} ${GRUB_CMDLINE_LINUX_DEFAULT}`` on normal entries."""
    return variable == "GRUB_CMDLINE_LINUX"


def _held_by_the_other(ev: Evaluation, variable: str, anchor: str, param: Param, text: str) -> str:
    """A note when the normal entries already get ``param`` through the other variable (and this one
    says nothing against it): then there is nothing to add, only a duplicate."""
    other = ev.value(anchor)
    if not isinstance(other, str) or not cmdline.contains(other, param):
        return ""
    line = f"{text} {other}" if _comes_first(variable) else f"{other} {text}"
    against = [c for c in cmdline.conflicts(text, param) if c != param.text]
    if against or not cmdline.in_effect(line, param):
        return ""
    return f"{anchor} already has {param.text}: the normal boot entries get it from there"


# -- mapping changes of the value onto source bytes --------------------------------------------------


def _map_change(sources: Sequence[GrubFile], b: Binding, value: tuple[Run, ...], change: Change, variable: str) -> list[_Splice]:
    out: list[_Splice] = []
    if change.end > change.start:
        out.extend(_map_deletion(sources, b, value, change.start, change.end, variable))
    if change.text:
        out.extend(_map_insertion(sources, b, value, change.start, change.text))
    return out


def _tidy(value: tuple[Run, ...], change: Change) -> Change:
    """Remove a token with the whitespace on its own side: when the space after it comes from
    another literal (``"a X"`` then ``"$V b"``), take the space before it instead."""
    start, end = change.start, change.end
    if end == start:
        return change
    origins = _char_origins(value)
    if len({id(origins[i][0].literal) for i in range(start, end)}) == 1:
        return change
    text = text_of(value)
    token_end = start + len(text[start:end].rstrip(cmdline.WHITESPACE))
    lead = len(text[:start].rstrip(cmdline.WHITESPACE))
    if lead < start and token_end < end and len({id(origins[i][0].literal) for i in range(lead, token_end)}) == 1:
        return Change(lead, token_end, change.text)
    if start < token_end < end and len({id(origins[i][0].literal) for i in range(start, token_end)}) == 1:
        # The space after the token belongs to a literal that follows an expansion (the second
        # assignment of "$VAR quiet"): deleting it could join $VAR to the next word. Keep it.
        return Change(start, token_end, change.text)
    return change


def _char_origins(value: tuple[Run, ...]) -> list[tuple[Run, int]]:
    """For each character of the value: the run it is in and its offset inside the run's literal."""
    origins: list[tuple[Run, int]] = []
    for r in value:
        origins.extend((r, r.offset + k) for k in range(len(r.text)))
    return origins


def _map_deletion(
    sources: Sequence[GrubFile], b: Binding, value: tuple[Run, ...], start: int, end: int, variable: str
) -> list[_Splice]:
    origins = _char_origins(value)
    groups: list[tuple[Run, int, int]] = []  # (run, lo, hi) offsets inside run.literal.text
    for i in range(start, end):
        run, k = origins[i]
        if run.literal is None:
            raise _refuse(
                sources,
                b.file,
                b.assign.start if b.assign is not None else -1,
                f"part of {variable} that must change comes from an expansion mlxfix does not edit",
            )
        if groups and groups[-1][0].literal is run.literal and groups[-1][2] == k:
            groups[-1] = (groups[-1][0], groups[-1][1], k + 1)
        else:
            groups.append((run, k, k + 1))
    splices: list[_Splice] = []
    for run, lo, hi in groups:
        lit = run.literal
        assert lit is not None
        raw = sources[run.file].text[lit.start : lit.end]
        pos = 0
        cut: list[int] | None = None  # [start, end) of deleted atoms, raw offsets in the literal
        for a_start, a_end, a_text in literal_atoms(lit.quote, raw):
            if a_text and lo <= pos < hi:  # every character in range goes; continuations stay
                if cut is not None and cut[1] == a_start:
                    cut[1] = a_end
                else:
                    if cut is not None:
                        splices.append(_Splice(run.file, lit.start + cut[0], lit.start + cut[1], ""))
                    cut = [a_start, a_end]
            pos += len(a_text)
        if cut is not None:
            splices.append(_Splice(run.file, lit.start + cut[0], lit.start + cut[1], ""))
    return splices


def _raw_offset(lit: Literal, raw: str, k: int) -> int:
    """The raw offset (inside the literal) just after its first ``k`` characters."""
    if k == 0:
        return 1 if lit.quote == "'" else 0
    if lit.quote == "'":  # no escapes inside single quotes: the characters sit after the opening quote
        return min(k + 1, len(raw) - 1)
    if "\\" not in raw:  # no escape, no continuation: one character per raw character
        return min(k, len(raw))
    pos = 0
    for _a_start, a_end, a_text in literal_atoms(lit.quote, raw):
        pos += len(a_text)
        if a_text and pos == k:
            return a_end
    return len(raw)


def _encode(text: str, quote: str) -> str:
    """Text as it must be written inside a literal of the given quoting to mean ``text``."""
    if quote == '"':
        return re.sub(r'([\\"$`])', r"\\\1", text)
    if quote == "'":
        return text.replace("'", "'\\''")
    return re.sub(r"([^A-Za-z0-9_.,:=+/@%^!~-])", r"\\\1", text)


def _wrappable(sources: Sequence[GrubFile], b: Binding) -> bool:
    """Whether the whole assigned word can be put in double quotes without changing its meaning."""
    assert b.assign is not None
    raw = sources[b.file].text[b.assign.value.start : b.assign.value.end]
    if not raw:
        return False
    for p in b.assign.value.parts:
        if isinstance(p, Literal) and p.quote == "":
            if "\\" in raw[p.start - b.assign.value.start : p.end - b.assign.value.start]:
                return False
        elif not (isinstance(p, Expansion) and p.kind == "param"):
            return False
    return True


def _map_insertion(sources: Sequence[GrubFile], b: Binding, value: tuple[Run, ...], p: int, text: str) -> list[_Splice]:
    """Where to write ``text`` so that it lands at position ``p`` of the value: inside the effective
    assignment, in the quoting of the part that produced the character before ``p``."""
    assign = b.assign
    assert assign is not None
    f = b.file
    src = sources[f].text
    word = assign.value
    if not word.parts:  # NAME=   (empty, unquoted)
        enc = text if _BARE_SAFE.fullmatch(text) else '"' + _encode(text, '"') + '"'
        return [_Splice(f, word.start, word.start, enc)]
    leaf = None
    if p == 0:
        leaf = b.leaves[0]
    else:
        leaf = next(lf for lf in b.leaves if lf.lo < p <= lf.hi)
    part = leaf.part
    if isinstance(part, DoubleQuoted):  # an empty "" : write between the quotes
        return [_Splice(f, part.start + 1, part.start + 1, _encode(text, '"'))]
    if isinstance(part, Literal):
        raw = src[part.start : part.end]
        at = part.start + _raw_offset(part, raw, p - leaf.lo)
        if part.quote == "" and not _BARE_SAFE.fullmatch(text) and _wrappable(sources, b):
            return _wrap(f, src, word.start, word.end, at, text)
        return [_Splice(f, at, at, _encode(text, part.quote))]
    # An expansion produced the character before p (or, at p == 0, the first one).
    assert isinstance(part, Expansion)
    if p not in (leaf.lo, leaf.hi):
        # p falls inside the expansion's value: write into the literal that produced that character.
        run, k = _char_origins(value)[p - 1]
        if run.literal is None:
            raise _refuse(
                sources,
                f,
                part.start,
                f"the new parameter would have to go inside {src[part.start : part.end]}, which mlxfix does not edit",
            )
        lit_raw = sources[run.file].text[run.literal.start : run.literal.end]
        at = run.literal.start + _raw_offset(run.literal, lit_raw, k + 1)
        return [_Splice(run.file, at, at, _encode(text, run.literal.quote))]
    at = part.end if p == leaf.hi and p > 0 else part.start
    if leaf.container is not None:
        return [_Splice(f, at, at, _encode(text, '"'))]
    if _BARE_SAFE.fullmatch(text):
        return [_Splice(f, at, at, text)]
    if _wrappable(sources, b):
        return _wrap(f, src, word.start, word.end, at, text)
    return [_Splice(f, at, at, '"' + _encode(text, '"') + '"')]


def _wrap(f: int, src: str, start: int, end: int, at: int, text: str) -> list[_Splice]:
    """Put an unquoted word in double quotes while inserting ``text`` at ``at``: three insertions, so
    that deletions inside the word still apply. A CRLF file's trailing "\r" (part of the word for
    sh) stays outside the quotes, so the line keeps its ending."""
    while end > at and src[end - 1] == "\r":
        end -= 1
    return [_Splice(f, start, start, '"'), _Splice(f, at, at, _encode(text, '"')), _Splice(f, end, end, '"')]


def _splice_files(sources: Sequence[GrubFile], splices: Sequence[_Splice], where: tuple[int, int]) -> tuple[FileEdit, ...]:
    by_file: dict[int, list[_Splice]] = {}
    for s in splices:
        by_file.setdefault(s.file, []).append(s)
    edits = []
    for index, items in sorted(by_file.items()):
        src = sources[index].text
        items.sort(key=lambda s: (s.start, s.end))
        out, pos, delta = [], 0, 0
        regions = []
        for s in items:
            if s.start < pos:
                raise _refuse(sources, *where, "mlxfix cannot map this edit onto the file's quoting (overlapping changes)")
            out.append(src[pos : s.start])
            out.append(s.text)
            regions.append((s.start + delta, s.start + delta + len(s.text)))
            delta += len(s.text) - (s.end - s.start)
            pos = s.end
        out.append(src[pos:])
        after = "".join(out).encode("latin-1")
        edits.append(FileEdit(index, sources[index].path, sources[index].data, after, tuple(regions)))
    return tuple(edits)


# -- a missing variable ---------------------------------------------------------------------------------


def _add_assignment(sources: Sequence[GrubFile], ev: Evaluation, param: Param, variable: str, anchor: str) -> GrubEdit:
    """Add ``VARIABLE="param"`` after the anchor's effective top-level assignment, else at the end of
    the main file; a missing final newline is mended. Where a line there would change another
    variable (one that reads ``$VARIABLE`` later), the end of the main file, then of the last file
    read, are tried: the first place ``sh`` proves right is taken."""
    places: list[tuple[int, int, str]] = []  # (file, offset, where)
    a = ev.binding(anchor)
    if a is not None and a.assign is not None and a.known:
        f = sources[a.file]
        at = f.statements[a.statement].end
        k = a.statement
        while f.text[at - 1] != "\n" and k + 1 < len(f.statements):
            k += 1
            at = f.statements[k].end
        places.append((a.file, at, f"after {anchor}"))
    places.append((0, len(sources[0].text), "at the end of the file"))
    if len(sources) > 1:
        places.append((len(sources) - 1, len(sources[-1].text), f"at the end of {sources[-1].path}, the last file read"))
    first: Refused | None = None
    for index, at, where in dict.fromkeys(places):
        try:
            return _add_at(sources, ev, param, variable, index, at, where)
        except Refused as exc:
            first = first or exc
    assert first is not None
    raise first


def _add_at(
    sources: Sequence[GrubFile], ev: Evaluation, param: Param, variable: str, index: int, at: int, where: str
) -> GrubEdit:
    f = sources[index]
    if at == len(f.text) and f.text.endswith("\\") and (len(f.text) - len(f.text.rstrip("\\"))) % 2:
        raise Refused(
            "the file ends in a backslash (a line continuation with nothing after it): a line added after it would be"
            " joined to it",
            path=f.path,
            line=f.position(len(f.text) - 1)[0],
            hint=f'end the file with a newline, or add {variable}="{param.text}" by hand',
        )
    nl = f.newline
    # Mending a missing final newline with a plain "\n": in a CRLF file, "\r\n" would give the last value a "\r".
    prefix = "" if at == 0 or f.text[at - 1] == "\n" else "\n"
    line = f'{prefix}{variable}="{_encode(param.text, chr(34))}"{nl}'
    after = (f.text[:at] + line + f.text[at:]).encode("latin-1")
    files = (FileEdit(index, f.path, f.data, after, ((at, at + len(line)),)),)
    expected = param.text + ("\r" if nl == "\r\n" else "")
    checked = _verify(sources, ev, files, variable, expected, param, (index, max(at - 1, 0)))
    new_line = grubfile.parse(after, f.path).position(at + len(prefix))[0]
    note = f"{variable} was not set anywhere; added it {where}"
    return GrubEdit(variable, param, None, expected, files, f.path, new_line, "added", (note,), checked)


# -- checking the result --------------------------------------------------------------------------------


def _verify(
    sources: Sequence[GrubFile],
    ev: Evaluation,
    files: Sequence[FileEdit],
    variable: str,
    expected: str,
    param: Param,
    where: tuple[int, int],
    layers: Sequence[tuple[Binding, Unknown]] = (),
) -> Evaluation:
    """Parse and evaluate the edited set; refuse unless exactly the intended change happened.
    ``where``: (file, offset) of the assignment edited, which a refusal names. ``layers``: the
    conditional appends over the edited value (then that value is checked, and the same appends)."""
    new_sources = list(sources)
    for fe in files:
        if len(fe.after) > MAX_BYTES:
            raise _refuse(sources, *where, f"the edited file would be {len(fe.after)} bytes, over the 1 MiB mlxfix accepts")
        new_sources[fe.source] = grubfile.reparse(sources[fe.source], fe.after)
        _refuse_template(new_sources[fe.source], after_edit=True)  # a second run would refuse it
        err = new_sources[fe.source].error
        if err is not None:
            why = f"mlxfix cannot edit this assignment safely: the result would not parse ({err.message})"
            raise _refuse(sources, *where, why)
    ev2 = reevaluate(ev, new_sources)  # from the last checkpoint before the edit: the rest is shared
    got = ev2.value(variable)
    if layers:
        top = ev2.binding(variable)
        inner, again = _through_appends(top) if top is not None else (None, [])
        same = [u.added for _, u in again] == [u.added for _, u in layers]
        got = text_of(inner.value) if inner is not None and same and not isinstance(inner.value, Unknown) else got
    if got != expected or not cmdline.contains(got, param):
        shown = repr(got) if isinstance(got, str) else "a value it cannot know"
        raise _refuse(
            sources,
            *where,
            f"mlxfix cannot edit this assignment safely: sh would compute {variable} as {shown}, not {expected!r}",
            hint=f"add {param.text} to {variable} by hand",
        )
    # Assignments the edit touched, as nodes of the new model; a variable mlxfix cannot compute that
    # was computed from one of them may have changed without anyone seeing it.
    # (Bindings carried over from a checkpoint come from statements before the first change.)
    touched: set[int] = set()
    for fe in files:
        for h in ev2.fresh:
            if (
                h.assign is not None
                and h.file == fe.source
                and any(lo <= h.assign.end and h.assign.start <= hi for lo, hi in fe.regions)
            ):
                touched.add(id(h.assign))
    memo: dict[int, bool] = {}
    for name in sorted(set(ev.final) | set(ev2.final)):  # sorted: the same refusal on every run
        if name == variable or (name in ev.final and ev.final[name] is ev2.final.get(name)):
            continue  # the target, or a binding carried over unchanged from before the edit
        old, new = ev.value(name), ev2.value(name)
        b2 = ev2.binding(name)
        if isinstance(old, Unknown) and isinstance(new, Unknown):
            if b2 is not None and b2.via.meets(touched, memo):
                u = new
                line = new_sources[u.file].position(u.pos)[0] if u.file >= 0 and u.pos >= 0 else None
                path = new_sources[u.file].path if u.file >= 0 else files[0].path
                why = f"{name} is computed from {variable} in a way mlxfix cannot follow, so the edit could change it too"
                raise Refused(why, path=path, line=line)
            continue
        if old != new:
            other = ev2.binding(name)
            if other is not None and other.assign is not None:
                line, col = new_sources[other.file].position(other.assign.start)
                path = new_sources[other.file].path
            else:
                path, col = sources[where[0]].path, None
                line = sources[where[0]].position(where[1])[0] if where[1] >= 0 else None
            raise Refused(
                f"the edit would also change {name}, which shares text with {variable} (through $-expansion)",
                path=path,
                line=line,
                column=col,
                hint=f"add {param.text} to {variable} by hand",
            )
    return ev2


def _notes(sources: Sequence[GrubFile], ev: Evaluation, b: Binding, variable: str, anchor: str, param: Param) -> tuple[str, ...]:
    notes: list[str] = []
    f = sources[b.file]
    if b.file > 0 and b.assign is not None:
        here = f"{f.path}:{f.position(b.assign.start)[0]}"
        earlier = [h for h in ev.history.get(variable, []) if h.assign is not None and h.assign is not b.assign]
        raw = f.text[b.assign.value.start : b.assign.value.end]
        appends = re.search(rf"\$(?:{variable}\b|\{{{variable}[}}:+=?-])", raw) is not None
        prev = earlier[-1].assign if earlier else None
        there = f"{sources[earlier[-1].file].path}:{sources[earlier[-1].file].position(prev.start)[0]}" if prev else ""
        if there and appends:
            notes.append(f"{here} appends to {variable} as set in {there}: each part is edited where it is written")
        elif there:
            notes.append(f"{here} overrides {variable} set in {there}; the drop-in is the one that counts")
        else:
            notes.append(f"{here} is where {variable} is set (grub-mkconfig reads /etc/default/grub, then grub.d/*.cfg in order)")
    other = ev.value(anchor)
    if isinstance(other, str) and not _comes_first(variable):
        clash = [c for c in cmdline.conflicts(other, param) if c != param.text]
        if clash:
            notes.append(
                f"{anchor} also has {' '.join(clash)}: normal entries get {param.text} (it comes later), recovery entries do not"
            )
    value = text_of(b.value) if not isinstance(b.value, Unknown) else ""
    _, ignored = cmdline.realloc_setting(value)
    if ignored:
        notes.append(f"the kernel ignores {', '.join('pci=' + i for i in ignored)} (only values starting with on/off count)")
    return tuple(notes)
