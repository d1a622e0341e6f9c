"""A lossless parser for the POSIX shell that grub defaults files are written in.

grub-mkconfig *sources* ``/etc/default/grub`` with ``/bin/sh``, so the file is a shell program, not a
list of ``KEY=value`` lines. This module reads the part of the shell language such files use (words
with every kind of quoting and expansion, simple commands, pipelines, ``&&``/``||``, ``if``, ``case``,
loops, groups, functions, here-documents) the way dash does, and records the character span of every
node so that a caller can splice new text into exactly one place.

The text is a ``str`` decoded as latin-1: one character per byte, so any byte sequence round-trips and
offsets are byte offsets. Pure code: no I/O.
"""

from __future__ import annotations

import re
from typing import Literal as Lit
from typing import NamedTuple

__all__ = [
    "AndOr",
    "Assign",
    "Command",
    "Compound",
    "DoubleQuoted",
    "Expansion",
    "FunctionDef",
    "Literal",
    "Part",
    "Pipeline",
    "Redirect",
    "ShellSyntaxError",
    "Simple",
    "Unit",
    "Word",
    "decode_literal",
    "literal_atoms",
    "parse_units",
]


class ShellSyntaxError(Exception):
    """The text is not valid shell; ``pos`` is the offset where the problem starts."""

    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


# ---------------------------------------------------------------------------------------------- words

QuoteKind = Lit["", "'", '"']


class Literal(NamedTuple):
    """Literal characters: an unquoted run (``quote=''``, escapes included), a whole single-quoted
    string (``quote="'"``, span includes the quotes), or a run inside double quotes (``quote='"'``)."""

    start: int
    end: int
    quote: QuoteKind
    text: str  # the characters the shell sees, after quote and escape removal


class Expansion(NamedTuple):
    """``$NAME``, ``${NAME...}``, ``$(...)``, backticks or ``$((...))``.

    ``kind`` is ``param``, ``command`` or ``arith``. For parameters, ``name`` is the variable (or a
    special parameter such as ``1`` or ``@``), ``op`` the operator (``""`` for a plain reference,
    ``":-"``, ``"+"``, ``"#"`` ..., ``"len"`` for ``${#X}``, ``"?"`` for forms this model does not
    evaluate) and ``arg`` the word after the operator. ``body`` holds the commands of ``$(...)``.
    """

    start: int
    end: int
    kind: Lit["param", "command", "arith"]
    name: str = ""
    op: str = ""
    arg: Word | None = None
    body: tuple[Command, ...] = ()


class DoubleQuoted(NamedTuple):
    """A ``"..."`` string; span includes the quotes."""

    start: int
    end: int
    parts: tuple[Literal | Expansion, ...]


Part = Literal | Expansion | DoubleQuoted


class Word(NamedTuple):
    """One shell word: the concatenation of its parts (``a"b c"$D`` is three parts)."""

    start: int
    end: int
    parts: tuple[Part, ...]

    def plain(self) -> str | None:
        """The text of a word that is one unquoted, escape-free literal (``if``, ``export``), else None."""
        if len(self.parts) == 1:
            p = self.parts[0]
            if isinstance(p, Literal) and p.quote == "" and p.end - p.start == len(p.text):
                return p.text
        return None


class Assign(NamedTuple):
    """``NAME=value``: ``start`` is the first character of NAME, ``value`` the word after ``=``."""

    start: int
    end: int
    name: str
    value: Word


# ------------------------------------------------------------------------------------------ commands


class Redirect(NamedTuple):
    start: int
    end: int
    op: str
    target: Word


class Simple(NamedTuple):
    """A simple command: prefix assignments, then words (``export A=b`` keeps ``A=b`` as an Assign)."""

    start: int
    end: int
    assigns: tuple[Assign, ...]
    words: tuple[Word | Assign, ...]
    redirects: tuple[Redirect, ...]


class Compound(NamedTuple):
    """``if``, ``while``, ``until``, ``for``, ``case``, ``{ }`` (``brace``) or ``( )`` (``subshell``).

    ``lists`` holds every command list inside, in order (conditions and bodies alike); ``var`` is the
    loop variable of ``for``; ``words`` the words of ``for ... in`` or the subject of ``case``.
    """

    start: int
    end: int
    kind: str
    lists: tuple[tuple[Command, ...], ...]
    var: str = ""
    words: tuple[Word, ...] = ()
    redirects: tuple[Redirect, ...] = ()


class FunctionDef(NamedTuple):
    start: int
    end: int
    name: str
    body: Compound


class Pipeline(NamedTuple):
    start: int
    end: int
    commands: tuple[Simple | Compound | FunctionDef, ...]
    negated: bool


class AndOr(NamedTuple):
    """Pipelines joined by ``&&`` / ``||`` (a single pipeline is the common case)."""

    start: int
    end: int
    pipelines: tuple[Pipeline, ...]


Command = AndOr


class Unit(NamedTuple):
    """A top-level piece of the file: one command with its separator, the rest of its line (blanks, a
    comment, the newline) and any here-document bodies; or a blank/comment-only line (``command`` None);
    or, after a syntax error, the rest of the file (``error`` set). Units tile the text exactly."""

    start: int
    end: int
    command: AndOr | None
    separator: str = ""
    error: ShellSyntaxError | None = None


# ------------------------------------------------------------------------------------------- parser

_BLANKS = re.compile(r"(?:[ \t]|\\\n)*")
_BARE_RUN = re.compile(r"[^ \t\n'\"\\$`;&|()<>]+")
_DQ_RUN = re.compile(r"[^\"\\$`]+")
_BRACE_ARG_RUN = re.compile(r"[^\"'\\$`}]+")
_BRACE_DQ_ARG_RUN = re.compile(r"[^\"\\$`}]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_REDIRECT = re.compile(r"[0-9]*(<<-|<<|<&|>&|<>|>>|>\||<|>)")
_COMMENT = re.compile(r"#[^\n]*")
_BARE_ESCAPE = re.compile(r"\\(\n|.)", re.DOTALL)
_DQ_ESCAPE = re.compile(r"\\([$`\"\\\n])")
_WORD_END = frozenset(" \t\n;&|()<>")
_SPECIAL_PARAMS = frozenset("@*#?$!-0123456789")
_RESERVED = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for", "{", "}", "!", "in"}
)
_RESERVED_FIRST = frozenset(w[0] for w in _RESERVED)
_REDIRECT_FIRST = frozenset("0123456789<>")
_STARTERS = frozenset({"if", "while", "until", "for", "case", "{"})
# The commonest line of a grub file, ``NAME=value`` with plain quoting and perhaps a comment, matched
# whole so that the recursive descent below is skipped for it; it builds the very nodes the descent
# would (a test holds the two to each other on every corpus file and on generated text).
_FAST_ASSIGN = re.compile(  # possessive (*+, ++): no backtracking, so no input can make it slow
    r"""[ \t]*+([A-Za-z_][A-Za-z0-9_]*+)=((?!\#)(?:[^ \t\n'"\\$`;&|()<>]++|"[^"\\$`]*+"|'[^']*+')*+)"""
    r"""([ \t]++(?:\#[^\n]*+)?)?(?:\n|\Z)"""
)
# Plain words up to where a simple command must end; the blanks after them belong to the command.
_FAST_WORD = re.compile(r"""(?:[^ \t\n'"\\$`;&|()<>]++|"[^"\\$`]*+"|'[^']*+')++""")
_FAST_SIMPLE = re.compile(
    r"""((?!\#)(?:[^ \t\n'"\\$`;&|()<>]++|"[^"\\$`]*+"|'[^']*+')++"""
    r"""(?:[ \t]++(?!\#)(?:[^ \t\n'"\\$`;&|()<>]++|"[^"\\$`]*+"|'[^']*+')++)*+)[ \t]*+(?=[\n;&|)\#]|\Z)"""
)
_TRIVIA_LINE = re.compile(r"[ \t]*(?:#[^\n]*)?\n")
_FAST_PIECE = re.compile(r"""[^ \t\n'"\\$`;&|()<>]+|"[^"\\$`]*"|'[^']*'""")
MAX_DEPTH = 64
_PARAM_OPS = (":-", ":=", ":?", ":+", "%%", "##", "-", "=", "?", "+", "%", "#")


def decode_literal(quote: QuoteKind, raw: str) -> str:
    """The characters the shell sees for a literal's raw text (quote and escape removal)."""
    if quote == "'":
        return raw[1:-1]
    if quote == '"':
        return _DQ_ESCAPE.sub(lambda m: "" if m.group(1) == "\n" else m.group(1), raw) if "\\" in raw else raw
    return _BARE_ESCAPE.sub(lambda m: "" if m.group(1) == "\n" else m.group(1), raw) if "\\" in raw else raw


def literal_atoms(quote: QuoteKind, raw: str) -> list[tuple[int, int, str]]:
    """Split a literal's raw text into atoms ``(raw_start, raw_end, text)``, offsets relative to raw.

    An atom is one source character or one escape; a line continuation is an atom with empty text.
    Editing at atom boundaries keeps every escape intact.
    """
    atoms: list[tuple[int, int, str]] = []
    if quote == "'":
        atoms.append((0, 1, ""))
        atoms.extend((i, i + 1, raw[i]) for i in range(1, len(raw) - 1))
        atoms.append((len(raw) - 1, len(raw), ""))
        return atoms
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "\\" and i + 1 < n:
            nxt = raw[i + 1]
            if nxt == "\n":
                atoms.append((i, i + 2, ""))
            elif quote == "" or nxt in '$`"\\':
                atoms.append((i, i + 2, nxt))
            else:
                atoms.append((i, i + 1, "\\"))
                atoms.append((i + 1, i + 2, nxt))
            i += 2
        else:
            atoms.append((i, i + 1, c))
            i += 1
    return atoms


class _Parser:
    """Recursive descent over the text; raises ShellSyntaxError with the offending offset."""

    fast = True  # take the fast paths for plain lines (the tests turn them off to compare)

    def __init__(self, text: str, depth: int = 0) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.depth = depth  # nesting of lists, words and quotes: bounded, so hostile input cannot recurse away
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, body expands)

    # -- small helpers -------------------------------------------------------------------------------

    def error(self, message: str, pos: int | None = None) -> ShellSyntaxError:
        return ShellSyntaxError(self.pos if pos is None else pos, message)

    def blank(self) -> None:
        pos = self.pos
        if pos < self.n and self.text[pos] in " \t\\":  # most calls find none: skip the regex then
            m = _BLANKS.match(self.text, pos)
            if m is not None:
                self.pos = m.end()

    def at(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def at_word_start(self) -> bool:
        return self.pos < self.n and self.text[self.pos] not in _WORD_END and self.text[self.pos] != "#"

    def describe_here(self) -> str:
        if self.pos >= self.n:
            return "end of file"
        c = self.text[self.pos]
        if c == "\n":
            return "end of line"
        m = _BARE_RUN.match(self.text, self.pos)
        token = m.group(0) if m else c
        if c in ";&|" and self.text[self.pos : self.pos + 2] in (";;", "&&", "||"):
            token = self.text[self.pos : self.pos + 2]
        return f"'{token}'"

    def newline(self) -> None:
        """Consume one newline and the bodies of the here-documents that were opened on its line."""
        self.pos += 1
        pending, self.heredocs = self.heredocs, []
        for delim, strip_tabs, expands in pending:
            start = self.pos
            while True:
                if self.pos >= self.n:
                    raise self.error(f"here-document ends at end of file, before its delimiter '{delim}'", start)
                eol = self.text.find("\n", self.pos)
                line_end = self.n if eol < 0 else eol
                line = self.text[self.pos : line_end]
                line_start, self.pos = self.pos, self.n if eol < 0 else eol + 1
                if (line.lstrip("\t") if strip_tabs else line) == delim:
                    if expands:
                        self.heredoc_expansions(start, line_start)
                    break

    def heredoc_expansions(self, start: int, end: int) -> None:
        """Parse the $(...), ${...} and `...` of a here-document body whose delimiter is unquoted:
        dash parses them with the rest of the script."""
        saved = self.pos
        self.pos = start
        while self.pos < end:
            c = self.text[self.pos]
            if c == "\\":
                self.pos += 2
            elif c == "$":
                if self.dollar() is None:
                    self.pos += 1
            elif c == "`":
                self.backtick()
            else:
                self.pos += 1
        self.pos = saved

    def linebreak(self) -> None:
        """Skip blanks, comments and newlines (where the grammar allows a line break)."""
        while True:
            self.blank()
            if self.pos >= self.n:
                return
            c = self.text[self.pos]
            if c == "\n":
                self.newline()
            elif c == "#":
                m = _COMMENT.match(self.text, self.pos)
                assert m is not None
                self.pos = m.end()
            else:
                return

    def peek_reserved(self) -> str | None:
        """The reserved word at the current position, if the next word is exactly one."""
        if self.pos >= self.n or self.text[self.pos] not in _RESERVED_FIRST:
            return None
        m = _BARE_RUN.match(self.text, self.pos)
        if m is None:
            return None
        word = m.group(0)
        if word in _RESERVED and (m.end() >= self.n or self.text[m.end()] in _WORD_END):
            return word
        return None

    def line_of(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def expect_reserved(self, word: str, opener: str, opener_pos: int) -> None:
        self.linebreak()
        if self.peek_reserved() != word:
            found = self.describe_here()
            raise self.error(f"expected '{word}' to close the '{opener}' of line {self.line_of(opener_pos)}, found {found}")
        self.pos += len(word)

    # -- words ---------------------------------------------------------------------------------------

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep; mlxfix does not follow it")

    def word(self) -> Word:
        """Parse a word at the current position (which must be a word start)."""
        self.nest()
        try:
            return self._word()
        finally:
            self.depth -= 1

    def _word(self) -> Word:
        start = self.pos
        parts: list[Part] = []
        bare_start = -1
        text, n = self.text, self.n

        def flush(end: int) -> None:
            nonlocal bare_start
            if bare_start >= 0:
                raw = text[bare_start:end]
                parts.append(Literal(bare_start, end, "", decode_literal("", raw)))
                bare_start = -1

        while self.pos < n:
            c = text[self.pos]
            if c in _WORD_END:
                break
            if c == "'":
                flush(self.pos)
                close = text.find("'", self.pos + 1)
                if close < 0:
                    raise self.error("unterminated single quote")
                parts.append(Literal(self.pos, close + 1, "'", text[self.pos + 1 : close]))
                self.pos = close + 1
            elif c == '"':
                flush(self.pos)
                parts.append(self.double_quoted())
            elif c == "\\":
                if bare_start < 0:
                    bare_start = self.pos
                self.pos = min(self.pos + 2, n)
            elif c == "$" or c == "`":
                exp = self.dollar() if c == "$" else self.backtick()
                if exp is None:  # a lone '$' is an ordinary character
                    if bare_start < 0:
                        bare_start = self.pos
                    self.pos += 1
                else:
                    # dollar() has already advanced; the literal run ended where the expansion began
                    flush(exp.start)
                    parts.append(exp)
            else:
                m = _BARE_RUN.match(text, self.pos)
                assert m is not None
                if bare_start < 0:
                    bare_start = self.pos
                self.pos = m.end()
        flush(self.pos)
        return Word(start, self.pos, tuple(parts))

    def double_quoted(self) -> DoubleQuoted:
        saved = self._inside_double_quotes
        self._inside_double_quotes = True
        self.nest()
        try:
            return self._double_quoted()
        finally:
            self._inside_double_quotes = saved
            self.depth -= 1

    def _double_quoted(self) -> DoubleQuoted:
        start = self.pos
        self.pos += 1
        parts: list[Literal | Expansion] = []
        run_start = self.pos
        text, n = self.text, self.n

        def flush(end: int) -> None:
            if end > run_start:
                raw = text[run_start:end]
                parts.append(Literal(run_start, end, '"', decode_literal('"', raw)))

        while True:
            if self.pos >= n:
                raise self.error("unterminated double quote", start)
            c = text[self.pos]
            if c == '"':
                flush(self.pos)
                self.pos += 1
                return DoubleQuoted(start, self.pos, tuple(parts))
            if c == "\\":
                self.pos = min(self.pos + 2, n)
            elif c == "$" or c == "`":
                here = self.pos
                exp = self.dollar() if c == "$" else self.backtick()
                if exp is None:
                    self.pos += 1
                else:
                    flush(here)
                    parts.append(exp)
                    run_start = self.pos
            else:
                m = _DQ_RUN.match(text, self.pos)
                assert m is not None
                self.pos = m.end()

    def backtick(self) -> Expansion:
        """A `...` substitution. Like dash, parse its text (after its own escapes are removed) as
        commands, so that an unterminated quote inside it is a syntax error here too."""
        start = self.pos
        i = self.pos + 1
        while True:
            if i >= self.n:
                raise self.error("unterminated backquote", start)
            c = self.text[i]
            if c == "\\":
                i += 2
            elif c == "`":
                self.pos = i + 1
                break
            else:
                i += 1
        inner = self.text[start + 1 : self.pos - 1]
        escapable = '\\`$"' if self._inside_double_quotes else "\\`$"
        inner = re.sub(r"\\([" + re.escape(escapable) + "])", r"\1", inner) if "\\" in inner else inner
        sub = _Parser(inner, self.depth + 1)
        try:
            sub.command_list(frozenset(), lenient=True)  # dash ignores what follows the commands
        except ShellSyntaxError as exc:
            raise self.error(f"in a `...` substitution: {exc.message}", start) from None
        return Expansion(start, self.pos, "command")

    def dollar(self) -> Expansion | None:
        """Parse the expansion at a '$', or return None (and stay put) when the '$' is literal."""
        text, start = self.text, self.pos
        nxt = text[start + 1] if start + 1 < self.n else ""
        if nxt == "(":
            if text.startswith("((", start + 1):
                return self.arithmetic()
            self.pos = start + 2
            saved = self._inside_double_quotes
            self._inside_double_quotes = False
            try:
                body = self.command_list(stop_words=frozenset(), stop_paren=True)
            finally:
                self._inside_double_quotes = saved
            self.linebreak()
            if not self.at(")"):
                raise self.error("unterminated command substitution $(", start)
            self.pos += 1
            return Expansion(start, self.pos, "command", body=tuple(body))
        if nxt == "{":
            return self.braced_param()
        m = _NAME.match(text, start + 1)
        if m is not None:
            self.pos = m.end()
            return Expansion(start, self.pos, "param", name=m.group(0))
        if nxt and nxt in _SPECIAL_PARAMS:
            self.pos = start + 2
            return Expansion(start, self.pos, "param", name=nxt)
        return None

    def arithmetic(self) -> Expansion:
        start = self.pos
        i, depth = self.pos + 3, 0
        while i < self.n:
            c = self.text[i]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    if self.text.startswith(")", i + 1):
                        self.pos = i + 2
                        return Expansion(start, self.pos, "arith")
                    break
                depth -= 1
            i += 1
        raise self.error("unterminated arithmetic expansion $((", start)

    def braced_param(self) -> Expansion:
        start = self.pos
        text = self.text
        i = start + 2
        length = False
        if text.startswith("#", i) and i + 1 < self.n and text[i + 1] != "}":
            length, i = True, i + 1
        m = _NAME.match(text, i)
        if m is not None:
            name, i = m.group(0), m.end()
        elif i < self.n and text[i] in _SPECIAL_PARAMS:
            name = text[i]
            i += 1
            if name.isdigit():
                while i < self.n and text[i].isdigit():
                    name += text[i]
                    i += 1
        else:
            raise self.error("bad substitution: ${ without a parameter name", start)
        if length:
            if not text.startswith("}", i):
                raise self.error("bad substitution in ${#...}", start)
            self.pos = i + 1
            return Expansion(start, self.pos, "param", name=name, op="len")
        if text.startswith("}", i):
            self.pos = i + 1
            return Expansion(start, self.pos, "param", name=name)
        op = next((o for o in _PARAM_OPS if text.startswith(o, i)), None)
        # The pattern of # ## % %% is read as if unquoted, even inside double quotes (POSIX, dash).
        in_dq = self._inside_double_quotes and op not in ("#", "##", "%", "%%")
        self.pos = i + (len(op) if op else 0)
        arg = self.brace_word(in_dq)
        if not self.at("}"):
            raise self.error("unterminated ${", start)
        self.pos += 1
        return Expansion(start, self.pos, "param", name=name, op=op or "?", arg=arg)

    # Whether the ${...} being parsed sits inside double quotes: decides how quotes in its word read.
    _inside_double_quotes = False

    def brace_word(self, in_dq: bool) -> Word:
        """The word after a ${NAME op ...} operator, up to the closing brace (blanks are literal)."""
        self.nest()
        try:
            return self._brace_word(in_dq)
        finally:
            self.depth -= 1

    def _brace_word(self, in_dq: bool) -> Word:
        start = self.pos
        parts: list[Part] = []
        text = self.text
        run = _BRACE_DQ_ARG_RUN if in_dq else _BRACE_ARG_RUN
        quote: QuoteKind = '"' if in_dq else ""
        run_start = -1

        def flush(end: int) -> None:
            nonlocal run_start
            if run_start >= 0 and end > run_start:
                raw = text[run_start:end]
                parts.append(Literal(run_start, end, quote, decode_literal(quote, raw)))
            run_start = -1

        while True:
            if self.pos >= self.n:
                raise self.error("unterminated ${", start - 2)
            c = text[self.pos]
            if c == "}":
                flush(self.pos)
                return Word(start, self.pos, tuple(parts))
            if c == "'" and not in_dq:
                flush(self.pos)
                close = text.find("'", self.pos + 1)
                if close < 0:
                    raise self.error("unterminated single quote")
                parts.append(Literal(self.pos, close + 1, "'", text[self.pos + 1 : close]))
                self.pos = close + 1
            elif c == '"':
                flush(self.pos)
                parts.append(self.double_quoted())
            elif c == "\\":
                if run_start < 0:
                    run_start = self.pos
                self.pos = min(self.pos + 2, self.n)
            elif c == "$" or c == "`":
                here = self.pos
                exp = self.dollar() if c == "$" else self.backtick()
                if exp is None:
                    if run_start < 0:
                        run_start = self.pos
                    self.pos += 1
                else:
                    flush(here)
                    parts.append(exp)
            else:
                m = run.match(text, self.pos)
                if run_start < 0:
                    run_start = self.pos
                self.pos = m.end() if m and m.end() > self.pos else self.pos + 1

    # -- commands ------------------------------------------------------------------------------------

    def command_list(
        self, stop_words: frozenset[str], stop_paren: bool = False, stop_dsemi: bool = False, lenient: bool = False
    ) -> list[AndOr]:
        """Commands separated by ';', '&' or newlines, up to a stop word, ')' or ';;' (not consumed).
        ``lenient`` stops quietly at anything unexpected, as dash does inside `...`."""
        self.nest()
        try:
            return self._command_list(stop_words, stop_paren, stop_dsemi, lenient)
        finally:
            self.depth -= 1

    def _command_list(self, stop_words: frozenset[str], stop_paren: bool, stop_dsemi: bool, lenient: bool) -> list[AndOr]:
        commands: list[AndOr] = []
        while True:
            self.linebreak()
            if self.pos >= self.n:
                return commands
            if stop_paren and self.at(")"):
                return commands
            if stop_dsemi and self.at(";;"):
                return commands
            word = self.peek_reserved()
            if word is not None and (word in stop_words or (lenient and word not in _STARTERS and word != "!")):
                return commands
            if lenient and (self.at(")") or self.at(";;")):
                return commands
            commands.append(self.and_or())
            self.blank()
            if self.at(";;"):
                if lenient:
                    return commands
                if stop_dsemi:
                    continue
                raise self.error("unexpected ';;' outside a case")
            if self.at(";") or (self.at("&") and not self.at("&&")):
                self.pos += 1
                continue
            if self.pos >= self.n or self.text[self.pos] in "\n#":
                continue
            if lenient and self.at("("):  # "word (" is a function definition to dash, in `...` too
                raise self.error("unexpected '('")
            if (stop_paren and self.at(")")) or lenient:
                return commands
            raise self.error(f"unexpected {self.describe_here()}")

    def and_or(self) -> AndOr:
        start = self.pos
        pipelines = [self.pipeline()]
        while True:
            self.blank()
            if self.at("&&") or self.at("||"):
                self.pos += 2
                self.linebreak()
                pipelines.append(self.pipeline())
            else:
                return AndOr(start, pipelines[-1].end, tuple(pipelines))

    def pipeline(self) -> Pipeline:
        start = self.pos
        negated = False
        if self.peek_reserved() == "!":
            negated = True
            self.pos += 1
            self.blank()
        commands = [self.command()]
        while True:
            self.blank()
            if self.at("|") and not self.at("||"):
                self.pos += 1
                self.linebreak()
                commands.append(self.command())
            else:
                return Pipeline(start, commands[-1].end, tuple(commands), negated)

    def command(self) -> Simple | Compound | FunctionDef:
        self.blank()
        start = self.pos
        if self.pos >= self.n:
            raise self.error("expected a command, found end of file")
        word = self.peek_reserved()
        if word is not None:
            if word not in _STARTERS:
                raise self.error(f"unexpected '{word}'")
            compound = self.compound(word)
            return self.with_redirects(compound)
        if self.at("("):
            self.pos += 1
            body = self.command_list(frozenset(), stop_paren=True)
            if not body:
                raise self.error("empty subshell ( )", start)
            if not self.at(")"):
                raise self.error("unterminated subshell (", start)
            self.pos += 1
            return self.with_redirects(Compound(start, self.pos, "subshell", (tuple(body),)))
        m = _NAME.match(self.text, self.pos)
        if m is not None:
            after = _BLANKS.match(self.text, m.end())
            j = after.end() if after else m.end()
            if self.text.startswith("(", j) and m.group(0) not in _RESERVED:
                k_match = _BLANKS.match(self.text, j + 1)
                k = k_match.end() if k_match else j + 1
                if not self.text.startswith(")", k):
                    raise self.error(f"expected ')' after '{m.group(0)} (' (a function definition)", k)
                self.pos = k + 1
                self.linebreak()
                if self.peek_reserved() not in _STARTERS and not self.at("("):
                    raise self.error(f"function {m.group(0)}() needs a compound command body")
                function_body = self.command()
                assert isinstance(function_body, Compound)
                return FunctionDef(start, self.pos, m.group(0), function_body)
        return self.simple()

    def with_redirects(self, compound: Compound) -> Compound:
        redirects = []
        while True:
            self.blank()
            if _REDIRECT.match(self.text, self.pos):
                redirects.append(self.redirect())
            else:
                break
        if not redirects:
            return compound
        return Compound(compound.start, self.pos, compound.kind, compound.lists, compound.var, compound.words, tuple(redirects))

    def redirect(self) -> Redirect:
        start = self.pos
        m = _REDIRECT.match(self.text, self.pos)
        assert m is not None
        op = m.group(1)
        self.pos = m.end()
        self.blank()
        if not self.at_word_start() or _REDIRECT.match(self.text, self.pos):
            raise self.error(f"redirection {op} needs a target, found {self.describe_here()}")
        target = self.word()
        if op in ("<<", "<<-"):
            quoted = any(
                not (isinstance(p, Literal) and p.quote == "" and "\\" not in self.text[p.start : p.end]) for p in target.parts
            )
            self.heredocs.append((_unquoted(self.text, target), op == "<<-", not quoted))
        return Redirect(start, self.pos, op, target)

    def simple(self) -> Simple:
        fast = self.fast_simple()
        if fast is not None:
            return fast
        start = self.pos
        assigns: list[Assign] = []
        words: list[Word | Assign] = []
        redirects: list[Redirect] = []
        declaration = False
        while True:
            self.blank()
            if self.pos >= self.n:
                break
            if self.text[self.pos] in _REDIRECT_FIRST and _REDIRECT.match(self.text, self.pos):
                redirects.append(self.redirect())
                continue
            if not self.at_word_start():
                break
            m = _ASSIGN.match(self.text, self.pos)
            if m is not None and (not words or declaration):
                name_start = self.pos
                self.pos = m.end()
                value = self.word() if self.at_word_start() else Word(self.pos, self.pos, ())
                assign = Assign(name_start, self.pos, m.group(1), value)
                (words or assigns).append(assign)
                continue
            w = self.word()
            if not words:
                declaration = w.plain() in ("export", "readonly", "local")
            words.append(w)
        if not (assigns or words or redirects):
            raise self.error(f"expected a command, found {self.describe_here()}")
        return Simple(start, self.pos, tuple(assigns), tuple(words), tuple(redirects))

    def compound(self, word: str) -> Compound:
        start = self.pos
        self.pos += len(word)
        if word == "{":
            body = self.command_list(frozenset({"}"}))
            if not body:
                raise self.error("empty { } group", start)
            self.expect_reserved("}", "{", start)
            return Compound(start, self.pos, "brace", (tuple(body),))
        if word == "if":
            lists: list[tuple[AndOr, ...]] = []
            keyword = "if"
            while True:
                cond = self.command_list(frozenset({"then"}))
                if not cond:
                    raise self.error(f"'{keyword}' without a condition", start)
                self.expect_reserved("then", keyword, start)
                body = self.command_list(frozenset({"elif", "else", "fi"}))
                if not body:
                    raise self.error("empty 'then' branch", start)
                lists += [tuple(cond), tuple(body)]
                nxt = self.peek_reserved()
                if nxt == "elif":
                    keyword = "elif"
                    self.pos += 4
                    continue
                if nxt == "else":
                    self.pos += 4
                    other = self.command_list(frozenset({"fi"}))
                    if not other:
                        raise self.error("empty 'else' branch", start)
                    lists.append(tuple(other))
                self.expect_reserved("fi", "if", start)
                return Compound(start, self.pos, "if", tuple(lists))
        if word in ("while", "until"):
            cond = self.command_list(frozenset({"do"}))
            if not cond:
                raise self.error(f"'{word}' without a condition", start)
            self.expect_reserved("do", word, start)
            body = self.command_list(frozenset({"done"}))
            if not body:
                raise self.error("empty loop body", start)
            self.expect_reserved("done", word, start)
            return Compound(start, self.pos, word, (tuple(cond), tuple(body)))
        if word == "for":
            self.blank()
            m = _NAME.match(self.text, self.pos)
            if m is None:
                raise self.error("'for' needs a variable name")
            var = m.group(0)
            self.pos = m.end()
            items: list[Word] = []
            self.linebreak()
            if self.peek_reserved() == "in":
                self.pos += 2
                while True:
                    self.blank()
                    if self.at_word_start():
                        items.append(self.word())
                    else:
                        break
                if self.at(";"):
                    self.pos += 1
                elif not (self.pos >= self.n or self.text[self.pos] in "\n#"):
                    raise self.error(f"unexpected {self.describe_here()} in 'for'")
            elif self.at(";"):
                self.pos += 1
            self.expect_reserved("do", "for", start)
            body = self.command_list(frozenset({"done"}))
            if not body:
                raise self.error("empty loop body", start)
            self.expect_reserved("done", "for", start)
            return Compound(start, self.pos, "for", (tuple(body),), var=var, words=tuple(items))
        # case
        self.blank()
        if not self.at_word_start():
            raise self.error("'case' needs a word")
        subject = self.word()
        self.linebreak()
        if not (self.text.startswith("in", self.pos) and (self.pos + 2 >= self.n or self.text[self.pos + 2] in _WORD_END)):
            raise self.error(f"expected 'in' after 'case', found {self.describe_here()}")
        self.pos += 2
        bodies: list[tuple[AndOr, ...]] = []
        patterns: list[Word] = [subject]
        while True:
            self.linebreak()
            if self.peek_reserved() == "esac":
                self.pos += 4
                return Compound(start, self.pos, "case", tuple(bodies), words=tuple(patterns))
            if self.pos >= self.n:
                raise self.error("'case' has no matching 'esac'", start)
            if self.at("("):
                self.pos += 1
                self.blank()
            while True:
                self.blank()
                if not self.at_word_start():
                    raise self.error(f"expected a case pattern, found {self.describe_here()}")
                patterns.append(self.word())
                self.blank()
                if self.at("|") and not self.at("||"):
                    self.pos += 1
                    continue
                break
            if not self.at(")"):
                raise self.error(f"expected ')' after a case pattern, found {self.describe_here()}")
            self.pos += 1
            bodies.append(tuple(self.command_list(frozenset({"esac"}), stop_dsemi=True)))
            self.linebreak()
            if self.at(";;"):
                self.pos += 2
            elif self.peek_reserved() != "esac":
                raise self.error(f"expected ';;' or 'esac', found {self.describe_here()}")

    # -- top level -----------------------------------------------------------------------------------

    def plain_word(self, start: int, end: int) -> Word:
        """The word ``text[start:end]``, made of the pieces _FAST_PIECE knows (no escape, no expansion)."""
        text = self.text
        parts: list[Part] = []
        first = text[start] if end > start else ""
        if first == '"' and text.find('"', start + 1, end) == end - 1:  # one "..." string
            inner = (Literal(start + 1, end - 1, '"', text[start + 1 : end - 1]),)
            parts.append(DoubleQuoted(start, end, inner if end - start > 2 else ()))
        elif first and first not in "'\"" and not ({'"', "'"} & set(text[start:end])):
            parts.append(Literal(start, end, "", text[start:end]))  # one unquoted run
        for piece in _FAST_PIECE.finditer(text, start, end) if not parts and first else ():
            a, b = piece.span()
            q = text[a]
            if q == "'":
                parts.append(Literal(a, b, "'", text[a + 1 : b - 1]))
            elif q == '"':
                parts.append(DoubleQuoted(a, b, (Literal(a + 1, b - 1, '"', text[a + 1 : b - 1]),) if b - a > 2 else ()))
            else:  # an unquoted run without escapes: the characters are the text
                parts.append(Literal(a, b, "", text[a:b]))
        return Word(start, end, tuple(parts))

    def fast_assignment(self) -> Unit | None:
        """The unit of a plain ``NAME=value`` line, as the descent would parse it; else None."""
        m = _FAST_ASSIGN.match(self.text, self.pos) if self.fast else None
        if m is None:
            return None
        start, name_start, value_end = self.pos, m.start(1), m.end(2)
        assign = Assign(name_start, value_end, m.group(1), self.plain_word(m.start(2), value_end))
        blanks = m.group(3) or ""
        end = value_end + len(blanks) - len(blanks.lstrip(" \t"))
        simple = Simple(name_start, end, (assign,), (), ())
        command = AndOr(name_start, end, (Pipeline(name_start, end, (simple,), False),))
        self.pos = m.end()
        return Unit(start, self.pos, command)

    def fast_simple(self) -> Simple | None:
        """A simple command of plain words (``[ -e /x ]``, ``export A B=c``), as simple() would parse it;
        None when anything else is there (expansions, escapes, redirections, a function definition)."""
        m = _FAST_SIMPLE.match(self.text, self.pos) if self.fast else None
        if m is None:
            return None
        text, start = self.text, self.pos
        assigns: list[Assign] = []
        words: list[Word | Assign] = []
        declaration = False
        for w in _FAST_WORD.finditer(text, start, m.end(1)):
            a, b = w.span()
            name = _ASSIGN.match(text, a, b)
            if name is not None and (not words or declaration):
                if text.startswith("#", name.end(), b):
                    return None  # A=#x: the value is empty and a comment begins; the descent knows
                item = Assign(a, b, name.group(1), self.plain_word(name.end(), b))
                (words or assigns).append(item)
                continue
            word = self.plain_word(a, b)
            if not words:
                declaration = word.plain() in ("export", "readonly", "local")
            words.append(word)
        self.pos = m.end()
        return Simple(start, self.pos, tuple(assigns), tuple(words), ())

    def units(self) -> list[Unit]:
        units: list[Unit] = []
        text, n = self.text, self.n
        while self.pos < n:
            start = self.pos
            m = _TRIVIA_LINE.match(text, start)  # a blank or comment line, as the descent would take it
            if m is not None:
                self.pos = m.end()
                units.append(Unit(start, self.pos, None))
                continue
            fast = self.fast_assignment()
            if fast is not None:
                units.append(fast)
                continue
            try:
                self.blank()
                if self.pos >= n:
                    units.append(Unit(start, n, None))
                    break
                c = text[self.pos]
                if c == "\n" or c == "#":
                    if c == "#":
                        m = _COMMENT.match(text, self.pos)
                        assert m is not None
                        self.pos = m.end()
                    if self.pos < n:
                        self.newline()
                    units.append(Unit(start, self.pos, None))
                    continue
                command = self.and_or()
                self.blank()
                separator = ""
                if self.at(";;"):
                    raise self.error("unexpected ';;' outside a case")
                if self.at(";") or (self.at("&") and not self.at("&&")):
                    separator = text[self.pos]
                    self.pos += 1
                after_separator = self.pos
                self.blank()
                if self.at("#"):
                    m = _COMMENT.match(text, self.pos)
                    assert m is not None
                    self.pos = m.end()
                if self.pos < n and text[self.pos] == "\n":
                    self.newline()
                elif self.pos < n:
                    if not separator:
                        raise self.error(f"unexpected {self.describe_here()}")
                    self.pos = after_separator  # another command follows on the same line
                if self.heredocs and self.pos >= n:
                    raise self.error("here-document without a body at end of file")
                units.append(Unit(start, self.pos, command, separator))
            except ShellSyntaxError as exc:
                units.append(Unit(start, n, None, error=exc))
                break
        return units


def _unquoted(text: str, word: Word) -> str:
    """A word's text with quotes removed and expansions left as written (here-document delimiters)."""
    out = []
    for p in word.parts:
        if isinstance(p, Literal):
            out.append(p.text)
        elif isinstance(p, DoubleQuoted):
            out.extend(q.text if isinstance(q, Literal) else text[q.start : q.end] for q in p.parts)
        else:
            out.append(text[p.start : p.end])
    return "".join(out)


def parse_units(text: str, start: int = 0) -> list[Unit]:
    """Split shell text into top-level units that tile it exactly (from ``start``, which must be
    where a unit begins); never raises.

    A syntax error ends the parse: the rest of the text becomes one unit carrying the error, so the
    text still round-trips and callers can refuse to edit it.
    """
    parser = _Parser(text)
    parser.pos = start
    return parser.units()
