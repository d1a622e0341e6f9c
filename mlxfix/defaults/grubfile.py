"""The lossless model of a grub defaults file (``/etc/default/grub``, ``/etc/default/grub.d/*.cfg``).

``parse(data)`` never fails and ``parse(data).render() == data`` for every byte string: the file is
split into top-level statements that tile it exactly (blank lines, comments, assignments, other shell,
and, after a syntax error, the unparsed rest). Models are immutable; an edit produces new bytes that are
parsed again, so the old model stays available for the diff and the backup hash.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING, Final, NamedTuple
from typing import Literal as Lit

from mlxfix.defaults import shell
from mlxfix.defaults.shell import Assign, DoubleQuoted, Expansion, Literal, Word

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["TEMPLATE_MARKER", "AssignmentInfo", "GrubFile", "Statement", "ValuePart", "parse", "reparse"]

StatementKind = Lit["blank", "comment", "assignment", "shell", "invalid"]
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")
# What template engines leave in a file they have not rendered: Jinja (Ansible, Salt), Go templates,
# Mustache and Helm ``{{ }}``, ``{% %}``, ``{# #}``; ERB and Puppet's EPP ``<% %>``; ``@@NAME@@``
# placeholders. ``${#X}`` is sh's own (the length of X), not a Jinja comment.
TEMPLATE_MARKER = re.compile(r"\{\{|\{%|(?<!\$)\{#|<%|@@[A-Za-z_][A-Za-z0-9_]*@@")


class Statement(NamedTuple):
    """One top-level unit of the file with the kind a reader cares about."""

    start: int
    end: int
    kind: StatementKind
    unit: shell.Unit

    @property
    def assignments(self) -> tuple[Assign, ...]:
        """The ``NAME=value`` items of an assignment statement (``A=1 B=2``, ``export A=1``)."""
        if self.kind != "assignment" or self.unit.command is None:
            return ()
        cmd = self.unit.command.pipelines[0].commands[0]
        assert isinstance(cmd, shell.Simple)
        return cmd.assigns + tuple(w for w in cmd.words if isinstance(w, Assign))


class ValuePart(NamedTuple):
    """A piece of an assigned value: literal text, or an expansion the shell computes at run time."""

    kind: Lit["literal", "expansion"]
    text: str  # the literal's characters, or the expansion as written (``${X}``, ``$(cmd)``)
    quote: str  # '' unquoted, "'" or '"'


class AssignmentInfo(NamedTuple):
    """Where a variable is assigned, and in which context (``top`` runs unconditionally)."""

    name: str
    line: int
    column: int
    context: str  # "top", "if", "case", "while", "until", "for", "brace", "subshell", "pipeline",
    #               "and-or", "background", "function NAME", "command substitution"
    exported: bool
    statement: int  # index of the top-level statement that holds it
    node: Assign
    parts: tuple[ValuePart, ...]

    @property
    def top_level(self) -> bool:
        return self.context == "top"


class GrubFile:
    """A parsed grub defaults file. ``text`` is ``data`` decoded as latin-1 (one char per byte).

    Immutable (``Final``, which mypy holds every writer to) and compared by value, as a frozen
    dataclass would be; a class by hand because every command parses one at start-up, and the
    dataclasses module and its generated methods cost more than the parse."""

    __slots__ = ("_starts", "data", "path", "statements", "text")

    def __init__(self, data: bytes, statements: tuple[Statement, ...], path: str = "/etc/default/grub", text: str = "") -> None:
        self.data: Final = data
        self.statements: Final = statements
        self.path: Final = path
        self.text: Final = text
        self._starts: list[int] | None = None  # where each line starts, once asked

    def _key(self) -> tuple[bytes, tuple[Statement, ...], str, str]:
        return self.data, self.statements, self.path, self.text

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, GrubFile) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"GrubFile(data={self.data!r}, statements={self.statements!r}, path={self.path!r})"

    def render(self) -> bytes:
        """The file's bytes, rebuilt from its statements."""
        return "".join(self.text[s.start : s.end] for s in self.statements).encode("latin-1")

    # -- positions -----------------------------------------------------------------------------------

    @property
    def _line_starts(self) -> list[int]:
        if self._starts is not None:
            return self._starts
        starts = [0]
        find = self.text.find
        i = find("\n")
        while i >= 0:
            starts.append(i + 1)
            i = find("\n", i + 1)
        self._starts = starts
        return starts

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def line_text(self, line: int) -> str:
        """One physical line without its newline, decoded for display."""
        starts = self._line_starts
        start = starts[line - 1]
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        return self.text[start:end].rstrip("\r").encode("latin-1").decode("utf-8", "replace")

    @property
    def newline(self) -> str:
        """The line ending this file uses (CRLF when most of its lines end so)."""
        lf = self.text.count("\n")
        return "\r\n" if lf and self.text.count("\r\n") * 2 > lf else "\n"

    # -- facts ---------------------------------------------------------------------------------------

    @property
    def error(self) -> shell.ShellSyntaxError | None:
        """The syntax error that ended the parse, if any."""
        last = self.statements[-1] if self.statements else None
        return last.unit.error if last is not None else None

    @property
    def is_binary(self) -> bool:
        """NUL, or a control character no text file holds (tab, newlines, form feed and ESC are text)."""
        return self.binary_at() >= 0

    def binary_at(self) -> int:
        """The offset of the first byte that makes the file binary, or -1."""
        m = _BINARY.search(self.text)
        return m.start() if m is not None else -1

    def placeholders(self) -> list[tuple[int, str, str]]:
        """``@NAME@`` template placeholders in assigned values: (line, variable, placeholder)."""
        found: list[tuple[int, str, str]] = []
        if _PLACEHOLDER.search(self.text) is None:  # the common case, without walking every assignment
            return found
        for info in self.assignments():
            for part in info.parts:
                if part.kind == "literal":
                    for m in _PLACEHOLDER.finditer(part.text):
                        found.append((info.line, info.name, m.group(0)))
        return found

    def template_marker(self) -> tuple[int, str] | None:
        """The first template marker (``{{``, ``{%``, ``{#``, ``<%``, ``@@NAME@@``) in what sh reads as
        code, as (offset, marker), or None. A marker in a comment is not code: sh never sees it. In
        the text after a syntax error (which has no parse), a line whose first character is ``#``
        counts as a comment."""
        if TEMPLATE_MARKER.search(self.text) is None:  # the common case, without walking any statement
            return None
        for st in self.statements:
            if st.kind in ("blank", "comment"):
                continue
            if st.unit.command is None:  # after a syntax error: the rest of the file, line by line
                found = self._marker_outside_comment_lines(st.start, st.end)
                if found is not None:
                    return found
                continue
            starts, ends = _merged(sorted(_word_spans(st.unit.command)))
            for m in TEMPLATE_MARKER.finditer(self.text, st.start, st.end):
                # in a word, or an operator just before one (``<%``: a redirection, then ``%``): the
                # last word span starting before the marker's end is the only one that can overlap it
                i = bisect.bisect_left(starts, m.end()) - 1
                if i >= 0 and ends[i] > m.start():
                    return m.start(), m.group(0)
        return None

    def _marker_outside_comment_lines(self, start: int, end: int) -> tuple[int, str] | None:
        """The first marker on a line that does not start with ``#``; linear in the text (a megabyte
        comment line of markers is looked at once, not once per marker)."""
        pos = start
        while pos < end:
            newline = self.text.find("\n", pos, end)
            stop = end if newline < 0 else newline
            if not self.text[pos:stop].lstrip(" \t").startswith("#"):
                m = TEMPLATE_MARKER.search(self.text, pos, stop)
                if m is not None:
                    return m.start(), m.group(0)
            pos = stop + 1
        return None

    def assignments(self, name: str | None = None) -> list[AssignmentInfo]:
        """Every assignment in the file, top level or nested, in source order (optionally one name)."""
        found: list[AssignmentInfo] = []
        for index, st in enumerate(self.statements):
            if st.unit.command is None or (name is not None and name not in self.text[st.start : st.end]):
                continue
            ctx = "background" if st.unit.separator == "&" else "top"
            for node, context, exported in _walk_assignments(st.unit.command, ctx):
                if name is None or node.name == name:
                    line, col = self.position(node.start)
                    found.append(
                        AssignmentInfo(node.name, line, col, context, exported, index, node, _value_parts(self.text, node.value))
                    )
        return found


def _merged(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sorted spans (nested words included) as disjoint ones: their starts and their ends."""
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in spans:
        if ends and lo <= ends[-1]:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def _word_spans(node: object) -> Iterator[tuple[int, int]]:
    """The (start, end) of every word in a command tree: where sh reads text, never a comment."""
    if isinstance(node, Word):
        yield node.start, node.end
    elif isinstance(node, tuple):  # the nodes are named tuples: their fields, and tuples of nodes
        for child in node:
            yield from _word_spans(child)


def _value_parts(text: str, word: Word) -> tuple[ValuePart, ...]:
    parts: list[ValuePart] = []
    for p in word.parts:
        if isinstance(p, Literal):
            parts.append(ValuePart("literal", p.text, p.quote))
        elif isinstance(p, DoubleQuoted):
            for q in p.parts:
                if isinstance(q, Literal):
                    parts.append(ValuePart("literal", q.text, '"'))
                else:
                    parts.append(ValuePart("expansion", text[q.start : q.end], '"'))
        else:
            parts.append(ValuePart("expansion", text[p.start : p.end], ""))
    return tuple(parts)


def _walk_assignments(cmd: shell.AndOr, ctx: str) -> Iterator[tuple[Assign, str, bool]]:
    """Yield (assign, context, exported) for every assignment inside a command, depth first."""
    if len(cmd.pipelines) > 1 and ctx == "top":
        ctx = "and-or"
    for pipeline in cmd.pipelines:
        pctx = "pipeline" if len(pipeline.commands) > 1 and ctx == "top" else ctx
        for c in pipeline.commands:
            yield from _walk_command(c, pctx)


def _walk_command(c: shell.Simple | shell.Compound | shell.FunctionDef, ctx: str) -> Iterator[tuple[Assign, str, bool]]:
    if isinstance(c, shell.Simple):
        exported = bool(c.words) and isinstance(c.words[0], Word) and c.words[0].plain() == "export"
        for a in c.assigns:
            yield a, ctx, False
        for w in c.words:
            if isinstance(w, Assign):
                yield w, ctx, exported
        for w in c.words:
            yield from _walk_word(w.value if isinstance(w, Assign) else w)
        for a in c.assigns:
            yield from _walk_word(a.value)
    elif isinstance(c, shell.FunctionDef):
        yield from _walk_command(c.body, f"function {c.name}")
    else:
        inner = ctx if ctx.startswith("function") else c.kind
        for lst in c.lists:
            for cmd in lst:
                yield from _walk_assignments(cmd, inner)


def _walk_word(word: Word) -> Iterator[tuple[Assign, str, bool]]:
    """Assignments inside command substitutions of a word (they run in a subshell)."""
    for p in word.parts:
        exps = [q for q in p.parts if isinstance(q, Expansion)] if isinstance(p, DoubleQuoted) else [p]
        for e in exps:
            if isinstance(e, Expansion) and e.kind == "command":
                for cmd in e.body:
                    yield from _walk_assignments(cmd, "command substitution")


def _classify(text: str, unit: shell.Unit) -> StatementKind:
    if unit.error is not None:
        return "invalid"
    cmd = unit.command
    if cmd is None:
        return "comment" if text.find("#", unit.start, unit.end) >= 0 else "blank"
    if unit.separator == "&" or len(cmd.pipelines) != 1:
        return "shell"
    pipeline = cmd.pipelines[0]
    if pipeline.negated or len(pipeline.commands) != 1:
        return "shell"
    simple = pipeline.commands[0]
    if not isinstance(simple, shell.Simple) or simple.redirects:
        return "shell"
    if not simple.words:
        return "assignment"
    head = simple.words[0]
    if (
        not simple.assigns
        and isinstance(head, Word)
        and head.plain() == "export"
        and any(isinstance(w, Assign) for w in simple.words[1:])
        and all(isinstance(w, Assign) or w.plain() is not None for w in simple.words[1:])
    ):
        return "assignment"
    return "shell"


def parse(data: bytes, path: str = "/etc/default/grub") -> GrubFile:
    """Parse a grub defaults file from its bytes. Never raises: see ``GrubFile.error``."""
    text = data.decode("latin-1")
    units = shell.parse_units(text)
    statements = tuple(Statement(u.start, u.end, _classify(text, u), u) for u in units)
    return GrubFile(data, statements, path, text)


def reparse(old: GrubFile, data: bytes) -> GrubFile:
    """``parse(data)`` for a new version of ``old``, without parsing again what did not change.

    The statements that end before the first changed byte are ``old``'s own: a statement's parse
    depends on its own text only (the parser never looks past the newline that ends it, and a
    statement begins in the same state as the file). The statement holding the byte before the change
    and everything after it are parsed again. A test holds the result equal to ``parse(data)``.
    """
    text = data.decode("latin-1")
    same = _common_prefix(old.text, text)
    if same == len(old.text) == len(text):
        return GrubFile(data, old.statements, old.path, text)
    starts = [st.start for st in old.statements]
    keep = max(bisect.bisect_right(starts, max(same - 1, 0)) - 1, 0)
    restart = old.statements[keep].start if old.statements else 0
    units = shell.parse_units(text, restart)
    statements = old.statements[:keep] + tuple(Statement(u.start, u.end, _classify(text, u), u) for u in units)
    return GrubFile(data, statements, old.path, text)


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix: a binary search of slice comparisons, done in C."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
