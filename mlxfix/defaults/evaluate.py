"""What ``/bin/sh`` will compute for each variable, worked out statically, with provenance.

grub-mkconfig sources ``/etc/default/grub`` and then ``/etc/default/grub.d/*.cfg`` in one shell. This
module plays those files in the same order over an environment of variables. A value is either *known*
(a sequence of runs of text, each remembering the literal in the source it came from, so an edit can find
the bytes that produced any character) or *unknown* with the reason (a command substitution, an
assignment inside ``if`` or a function, ``source``/``eval``, a variable no file sets). Unknown is never
guessed: callers refuse to edit what they cannot know.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from mlxfix.defaults import shell
from mlxfix.defaults.shell import Assign, DoubleQuoted, Expansion, Literal, Word

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from collections.abc import Set as AbstractSet

    from mlxfix.defaults.grubfile import GrubFile

__all__ = ["Binding", "Evaluation", "Leaf", "Run", "Unknown", "evaluate", "guarded_sources", "text_of"]


class Run(NamedTuple):
    """Text of a value. ``literal`` (with ``file``) is the source literal it came from, ``offset`` the
    position of ``text[0]`` inside ``literal.text``; ``literal`` is None for text no edit may touch."""

    text: str
    file: int = -1
    literal: Literal | None = None
    offset: int = 0


class Unknown(NamedTuple):
    """A value the shell computes at run time; ``file``/``pos`` locate the cause.

    ``keeps``: for a conditional self-append (``if ...; then X="$X splash"; fi``, a ``case`` branch, an
    ``&&`` list), the binding the value had before: whichever way the test goes, the value is that one
    with some of ``added`` appended (or prepended) as whole words, and nothing else. The value is still
    unknown; what the earlier value holds is not. A top-level self-append over an unknown value is a
    layer too (``added`` is then what it always adds; ``tail`` says it goes at the end)."""

    reason: str
    file: int = -1
    pos: int = -1
    keeps: Binding | None = None
    added: tuple[str, ...] = ()  # the literal texts the branches may add (each starts or ends with a blank)
    # A top-level ``X="$X text"`` over an unknown X: the text always ends the value (what grub-mkconfig
    # puts last on the linux line is known, though what comes before it is not).
    tail: str = ""


Value = tuple[Run, ...]


class Leaf(NamedTuple):
    """A part of an assigned word and the characters ``[lo, hi)`` of the value it produced.
    ``container`` is the double-quoted string it sits in (None at the top level); an empty ``""``
    is a leaf of its own."""

    part: Literal | Expansion | DoubleQuoted
    container: DoubleQuoted | None
    lo: int
    hi: int


def text_of(value: Value) -> str:
    return "".join(r.text for r in value)


class Deps:
    """The assignments (ids of their Assign nodes) a value was computed from, as a DAG of shared parts.

    Values pass their dependencies on to the values computed from them, and ``eval`` or ``source``
    makes every variable depend on every other: as flat sets these copies grow with the file and a long
    file costs quadratic time. Parts are shared instead, so each merge costs the number of parts.
    """

    __slots__ = ("ids", "parts")
    ids: frozenset[int]
    parts: tuple[Deps, ...]

    def __init__(self, ids: Iterable[int] = (), parts: Iterable[Deps] = ()) -> None:
        self.ids = frozenset(ids)
        self.parts = tuple({id(p): p for p in parts if p.ids or p.parts}.values()) if parts else ()

    def meets(self, ids: AbstractSet[int], memo: dict[int, bool] | None = None) -> bool:
        """Whether any of ``ids`` is among these dependencies (``memo``: shared across calls)."""
        memo = {} if memo is None else memo  # id(node) -> True (meets) or False (nothing beneath does)
        visited: list[int] = []
        stack: list[Deps] = [self]
        while stack:
            node = stack.pop()
            known = memo.get(id(node))
            if known is None:
                visited.append(id(node))
                memo[id(node)] = False  # parts are built before the node holding them: no cycles
                if node.ids.isdisjoint(ids):
                    stack.extend(node.parts)
                    continue
                known = True
            if known:
                for key in visited:  # only a search that found nothing has explored all it saw
                    del memo[key]
                memo[id(self)] = True
                return True
        return False

    def all_ids(self) -> frozenset[int]:
        """Every id, flattened (for tests and debugging: O(size))."""
        out: set[int] = set()
        seen: set[int] = set()
        stack: list[Deps] = [self]
        while stack:
            node = stack.pop()
            if id(node) not in seen:
                seen.add(id(node))
                out |= node.ids
                stack.extend(node.parts)
        return frozenset(out)


_NO_DEPS = Deps()


class _DepsBuilder:
    """``Deps`` being collected for one word or statement: ids of its own, parts from what it reads."""

    __slots__ = ("ids", "parts")
    ids: set[int]
    parts: dict[int, Deps]

    def __init__(self, ids: Iterable[int] = (), parts: Iterable[Deps] = ()) -> None:
        self.ids = set(ids)
        self.parts = {id(p): p for p in parts}

    def add(self, deps: Deps) -> None:
        if deps.ids or deps.parts:
            self.parts[id(deps)] = deps

    def freeze(self) -> Deps:
        if not self.ids and len(self.parts) == 1:
            return next(iter(self.parts.values()))  # nothing new: share the one part
        if not self.parts:
            return Deps(self.ids)
        return Deps(self.ids, self.parts.values())

    def copy(self) -> _DepsBuilder:
        return _DepsBuilder(self.ids, self.parts.values())


class Binding(NamedTuple):
    """A variable's value after some statement. ``assign`` is the top-level assignment that set it
    (None when a nested or dynamic statement did)."""

    name: str
    value: Value | Unknown
    file: int
    statement: int
    assign: Assign | None = None
    leaves: tuple[Leaf, ...] = ()  # which part of ``assign.value`` produced which characters
    via: Deps = _NO_DEPS  # the Assign nodes this value was computed from

    @property
    def known(self) -> bool:
        return not isinstance(self.value, Unknown)


# Builtins whose operands name variables they may set.
_SETTERS = frozenset({"unset", "read", "readonly", "local", "typeset", "declare", "getopts", "mapfile", "readarray", "let"})
_SOURCERS = frozenset({".", "source", "eval"})
_TERMINATORS = frozenset({"exit", "return"})


class _Effects:
    """What one statement may do to the shell's state (see ``_Evaluator.effects``)."""

    __slots__ = ("appends", "assigned", "defines", "everything", "opaque", "terminates")

    def __init__(self) -> None:
        self.assigned: dict[str, tuple[int, str]] = {}  # name -> (pos, context)
        self.everything: tuple[int, str] | None = None  # (pos, why) when any variable may change
        self.terminates: tuple[int, str] | None = None  # (pos, "exit"/"return") when the rest may not run
        self.defines: dict[str, shell.Compound] = {}
        # Conditional self-appends: name -> the literal texts added (``X="$X word"`` inside if/case/&&),
        # and the names assigned any other way in the same statement (a value then not a plain append).
        self.appends: dict[str, list[str]] = {}
        self.opaque: set[str] = set()


class Evaluation:
    """The result of sourcing a sequence of files: final bindings and every binding in order.

    Classes by hand, not dataclasses, here and above: every command evaluates at start-up, and the
    dataclasses module and its generated methods cost more than the evaluation (mlxfix.boot.grubcfg)."""

    __slots__ = ("checkpoints", "files", "final", "fresh", "history", "poisoned", "sourced", "stops")

    def __init__(self, files: Sequence[GrubFile], sourced: Mapping[str, GrubFile | None] | None = None) -> None:
        self.files = files
        self.final: dict[str, Binding] = {}
        self.history: dict[str, list[Binding]] = {}
        self.poisoned: Unknown | None = None  # set once a statement may have changed any variable at all
        # The files a guarded ``.`` reads (``if test -f P; then . P; fi``), as the host has them: the
        # parsed file, or None where there is none (the guard fails, the ``.`` never runs). Absent: not
        # known.
        self.sourced: Mapping[str, GrubFile | None] = sourced if sourced is not None else {}
        # The first statement that may end the shell itself (exit, exec, an error sh stops at), not just
        # the file (return): grub-mkconfig, which sources these files, would end there. (Edits never add
        # or move one: an evaluation resumed from a checkpoint does not repeat it.)
        self.stops: Unknown | None = None
        # The state before each statement that assigns a watched name, and at the end of each file:
        # where the evaluation of an edited copy of these files can resume (see ``evaluate``).
        self.checkpoints: list[Checkpoint] = []
        self.fresh: list[Binding] = []  # the bindings this run made itself

    def __repr__(self) -> str:
        return f"Evaluation(final={self.final!r}, poisoned={self.poisoned!r}, stops={self.stops!r})"

    def binding(self, name: str) -> Binding | None:
        """The final binding of ``name``; None when no file sets it. After ``eval``/``source`` an
        unset name is unknown too."""
        b = self.final.get(name)
        if b is None and self.poisoned is not None:
            return Binding(name, self.poisoned, self.poisoned.file, -1)
        return b

    def value(self, name: str) -> str | Unknown | None:
        """The text sh computes for ``name``, Unknown, or None when no file sets it."""
        b = self.binding(name)
        if b is None:
            return None
        return b.value if isinstance(b.value, Unknown) else text_of(b.value)

    def names(self) -> list[str]:
        return sorted(self.final)


class Checkpoint(NamedTuple):
    """Everything the evaluator knows just before statement ``statement`` of file ``file``."""

    file: int
    statement: int
    env: dict[str, Binding]
    history: dict[str, int]  # name -> how many bindings it had: the lists themselves keep growing
    functions: dict[str, shell.Compound]
    function_text: dict[str, str]
    foreign_functions: Unknown | None
    skippable: Unknown | None
    exits: bool
    poisoned: Unknown | None


_MAX_CHECKPOINTS = 32  # a file that assigns a watched name more often gets no resumable evaluation


class _Evaluator:
    def __init__(
        self, files: Sequence[GrubFile], watch: AbstractSet[str] = frozenset(), sourced: Mapping[str, GrubFile | None] = {}
    ) -> None:
        self.files = files
        self.watch = watch
        self.result = Evaluation(files, sourced=sourced)
        self.sourced = sourced
        self.env = self.result.final
        self.functions: dict[str, shell.Compound] = {}
        self.function_text: dict[str, str] = {}
        self.foreign_functions: Unknown | None = None  # after source/eval, any command may be a function
        self.skippable: Unknown | None = None  # a possible exit/return earlier (return: in this file)
        self.exits = False
        self.checked = 0  # > 0: inside a condition or a non-final part of && / ||, where set -e does not stop
        self.current = 0
        self.via = _DepsBuilder()  # assignments read by the word or statement being evaluated

    # -- bookkeeping ---------------------------------------------------------------------------------

    def where(self, file: int, pos: int) -> str:
        """``line N`` in the file being read, ``path:N`` elsewhere."""
        f = self.files[file]
        line, _ = f.position(pos)
        return f"line {line}" if file == self.current else f"{f.path}:{line}"

    def bind(
        self,
        name: str,
        value: Value | Unknown,
        file: int,
        statement: int,
        assign: Assign | None,
        leaves: tuple[Leaf, ...] = (),
        via: Deps | None = None,
    ) -> None:
        b = Binding(name, value, file, statement, assign, leaves, self.via.freeze() if via is None else via)
        self.env[name] = b
        history = self.result.history.get(name)
        if history is None:
            self.result.history[name] = [b]
        else:
            history.append(b)
        self.result.fresh.append(b)

    def note_reads(self, text: str) -> None:
        """Record, for dependency tracking, the assignments behind every variable ``text`` reads."""
        if "$" in text:
            for m in _READ.finditer(text):
                b = self.env.get(m.group(1))
                if b is not None:
                    self.via.add(b.via)

    def lookup(self, name: str) -> Value | Unknown | None:
        b = self.env.get(name)
        if b is not None:
            return b.value
        if self.result.poisoned is not None:
            return self.result.poisoned
        return None

    # -- values --------------------------------------------------------------------------------------

    def word(self, word: Word, file: int, editable: bool = True, leaves: list[Leaf] | None = None) -> Value | Unknown:
        """The value of a word in assignment context. Every part is evaluated even after an unknown
        one, so that ``self.via`` learns every variable the word reads."""
        if len(word.parts) == 1:  # the common value, one literal or one "..." with one: no bookkeeping
            only = word.parts[0]
            container = only if isinstance(only, DoubleQuoted) else None
            q = (only.parts[0] if len(only.parts) == 1 else None) if isinstance(only, DoubleQuoted) else only
            if isinstance(q, Literal) and (q.quote != "" or "~" not in q.text):
                if leaves is not None:
                    leaves.append(Leaf(q, container, 0, len(q.text)))
                return (Run(q.text, file, q if editable else None),)
        runs: list[Run] = []
        size = 0
        unknown: Unknown | None = None

        def add(part: Literal | Expansion | DoubleQuoted, container: DoubleQuoted | None, value: Value) -> None:
            nonlocal size
            runs.extend(value)
            width = sum(len(r.text) for r in value)
            if leaves is not None:
                leaves.append(Leaf(part, container, size, size + width))
            size += width

        for i, p in enumerate(word.parts):
            if isinstance(p, Literal):
                if p.quote == "" and self._tilde(p, first=(i == 0)):
                    unknown = unknown or Unknown("a ~ that the shell expands to a home directory", file, p.start)
                add(p, None, (Run(p.text, file, p if editable else None),))
            elif isinstance(p, DoubleQuoted):
                if not p.parts:
                    add(p, None, ())
                for q in p.parts:
                    if isinstance(q, Literal):
                        add(q, p, (Run(q.text, file, q if editable else None),))
                    else:
                        v = self.expansion(q, file)
                        if isinstance(v, Unknown):
                            unknown = unknown or v
                        else:
                            add(q, p, v)
            else:
                v = self.expansion(p, file)
                if isinstance(v, Unknown):
                    unknown = unknown or v
                else:
                    add(p, None, v)
        return unknown if unknown is not None else tuple(runs)

    @staticmethod
    def _tilde(p: Literal, first: bool) -> bool:
        raw = p.text
        return (first and raw.startswith("~")) or ":~" in raw

    def expansion(self, e: Expansion, file: int) -> Value | Unknown:
        text = self.files[file].text[e.start : e.end]
        self.note_reads(text)
        if e.kind == "command":
            return Unknown(f"the output of a command ({_short(text)})", file, e.start)
        if e.kind == "arith":
            for m in _NAME.finditer(text):
                b = self.env.get(m.group(0))
                if b is not None:
                    self.via.add(b.via)
            return Unknown(f"arithmetic ({_short(text)})", file, e.start)
        if not (e.name[0].isalpha() or e.name[0] == "_"):
            return Unknown(f"the special parameter ${e.name}", file, e.start)
        current = self.lookup(e.name)
        if isinstance(current, Unknown):
            return current
        if e.op == "":
            if current is None:
                return Unknown(f"${e.name}, which none of these files sets", file, e.start)
            return current
        if e.op in (":?", "?") and (current is None or isinstance(current, Unknown)):
            return self.stop(
                Unknown(f"sh stops at {_short(text)} on {self.where(file, e.start)} when {e.name} is unset", file, e.start)
            )
        if e.op in ("%", "%%", "#", "##"):
            return Unknown(f"the expansion {_short(text)}", file, e.start)
        if current is None:
            return Unknown(f"{_short(text)}: {e.name} is not set by these files", file, e.start)
        value = "".join(r.text for r in current)
        if e.op == "len":
            return (Run(str(len(value))),)
        is_set = value != "" if e.op.startswith(":") else True
        assert e.arg is not None
        if e.op in (":-", "-"):
            return current if is_set else self.word(e.arg, file, editable=False)
        if e.op in (":+", "+"):
            return self.word(e.arg, file, editable=False) if is_set else ()
        if e.op in (":?", "?"):
            return current if is_set else self.stop(Unknown(f"{_short(text)} stops the shell", file, e.start))
        return Unknown(f"the assigning expansion {_short(text)}", file, e.start)  # := and =

    def stop(self, where: Unknown) -> Unknown:
        """sh ends here (an error it exits on): grub-mkconfig, which sources these files, would too."""
        if self.result.stops is None:
            self.result.stops = where
        return where

    # -- statements ----------------------------------------------------------------------------------

    def checkpoint(self, file: int, statement: int) -> None:
        points = self.result.checkpoints
        if len(points) > _MAX_CHECKPOINTS:
            return
        if len(points) == _MAX_CHECKPOINTS:
            points.clear()
            points.append(Checkpoint(-1, -1, {}, {}, {}, {}, None, None, False, None))  # a marker: no more
            return
        history = {name: len(bs) for name, bs in self.result.history.items()}
        env, functions, texts = dict(self.env), dict(self.functions), dict(self.function_text)
        state = (self.foreign_functions, self.skippable, self.exits, self.result.poisoned)
        points.append(Checkpoint(file, statement, env, history, functions, texts, *state))

    def resume(self, cp: Checkpoint, before: Evaluation) -> Evaluation:
        """Evaluate from ``cp`` (made by an evaluation ``before`` of files whose statements up to there
        these files share): what a run from the start would give, without redoing the shared part."""
        self.env = self.result.final = dict(cp.env)
        self.result.history = {name: before.history[name][:n] for name, n in cp.history.items()}
        self.result.poisoned = cp.poisoned
        self.functions, self.function_text = dict(cp.functions), dict(cp.function_text)
        self.foreign_functions, self.skippable, self.exits = cp.foreign_functions, cp.skippable, cp.exits
        return self.run(cp.file, cp.statement)

    def run(self, first_file: int = 0, first_statement: int = 0) -> Evaluation:
        for index in range(first_file, len(self.files)):
            f = self.files[index]
            self.current = index
            start = first_statement if index == first_file else 0
            if not self.exits and start == 0:
                self.skippable = None
            statements, watch = f.statements, self.watch
            for s_index in range(start, len(statements)):
                st = statements[s_index]
                kind = st.kind
                if kind == "assignment":
                    assigns = st.assignments
                    if watch and any(a.name in watch for a in assigns):
                        self.checkpoint(index, s_index)
                    self.assignment(assigns, index, s_index)
                    continue
                if kind == "blank" or kind == "comment":
                    continue
                if kind == "invalid":
                    err = st.unit.error
                    assert err is not None
                    self.poison(
                        Unknown(f"sh stops at a syntax error on {self.where(index, err.pos)}: {err.message}", index, err.pos)
                    )
                    return self.result
                # Any other statement: what it may do to the variables.
                assert st.unit.command is not None
                self.via = _DepsBuilder()
                self.note_reads(f.text[st.start : st.end])
                effects = _Effects()
                if st.unit.separator != "&":  # a background job runs in a subshell
                    self.effects_of_andor(st.unit.command, "top", effects, depth=0)
                self.apply(effects, index, s_index)
            if self.watch:
                self.checkpoint(index, len(statements))  # where a line appended to this file starts
        return self.result

    def assignment(self, items: Iterable[Assign], file: int, statement: int) -> None:
        text = self.files[file].text
        for a in items:
            leaves: list[Leaf] = []
            start, end = a.value.start, a.value.end
            if self.skippable is None and text.find("$", start, end) < 0 and text.find("`", start, end) < 0:
                # The common case: a value that reads nothing depends on this assignment alone.
                plain = self.word(a.value, file, leaves=leaves)
                self.bind(a.name, plain, file, statement, a, tuple(leaves), Deps((id(a),)))
                continue
            self.via = _DepsBuilder((id(a),))
            if self.skippable is not None:
                value: Value | Unknown = self.skippable
            else:
                value = self.word(a.value, file, leaves=leaves)
                has_expansion = text.find("$", start, end) >= 0
                for name, pos in _assigned_in_word(a.value, text) if has_expansion else ():
                    why = Unknown(f"{name} is assigned by an expansion on {self.where(file, pos)}", file, pos)
                    self.bind(name, why, file, statement, None)
            if isinstance(value, Unknown) and self.skippable is None:
                value = self._layer(a, value)
            self.bind(a.name, value, file, statement, a if self.skippable is None else None, tuple(leaves))

    def _layer(self, a: Assign, value: Unknown) -> Unknown:
        """An unknown value assigned at the top level: a self-append over an unknown value is one more
        layer over the binding before it; any other keeps nothing (an expansion of a layered value
        inside another word is not that value)."""
        prior = self.env.get(a.name)
        added = _self_append(a)
        if added is not None and prior is not None and isinstance(prior.value, Unknown):
            text, at_end = added
            return Unknown(value.reason, value.file, value.pos, prior, (text,), text if at_end else "")
        return value._replace(keeps=None, added=(), tail="") if value.keeps is not None else value

    def poison(self, why: Unknown) -> None:
        for b in self.env.values():  # eval/source may read any variable
            self.via.add(b.via)
        self.result.poisoned = why
        shared = self.via.freeze()
        for name in list(self.env):
            self.bind(name, why, why.file, -1, None, via=shared)

    def apply(self, fx: _Effects, file: int, statement: int) -> None:
        self.functions.update(fx.defines)
        for name, body in fx.defines.items():
            self.function_text[name] = self.files[file].text[body.start : body.end]
        reads = self.via
        for name, (pos, context) in fx.assigned.items():
            prior = self.env.get(name)  # the assignment may not run: the old value may survive
            self.via = reads.copy()
            if prior is not None:
                self.via.add(prior.via)
            where = self.where(file, pos)
            why = f"{name} is changed by the command on {where}" if context == "top" else f"{name} is assigned inside {context}"
            added = fx.appends.get(name) if name not in fx.opaque and fx.everything is None and fx.terminates is None else None
            if added:  # only ever appended to: the value before, with some of these words added
                self.bind(name, Unknown(why, file, pos, prior, tuple(added)), file, statement, None)
                continue
            self.bind(name, Unknown(why, file, pos), file, statement, None)
        if fx.everything is not None:
            pos, why = fx.everything
            self.poison(Unknown(why, file, pos))
            if self.foreign_functions is None:
                self.foreign_functions = Unknown(f"the code run on {self.where(file, pos)}", file, pos)
        if fx.terminates is not None:
            pos, kind = fx.terminates
            self.exits = self.exits or kind != "return"
            what = f"the '{kind}'" if " " not in kind else kind.split(" (", 1)[0]
            why = f" ({kind.split(' (', 1)[1]}" if " (" in kind else ""
            if kind != "return" and self.result.stops is None:
                self.result.stops = Unknown(f"sh may stop at {what} on {self.where(file, pos)}{why}", file, pos)
            self.skippable = Unknown(f"the shell may stop at {what} on {self.where(file, pos)} before this{why}", file, pos)

    # -- effects of opaque shell ---------------------------------------------------------------------

    def effects_of_andor(self, cmd: shell.AndOr, ctx: str, fx: _Effects, depth: int) -> None:
        if len(cmd.pipelines) > 1 and ctx == "top":
            ctx = "an && / || list"
        for k, pipeline in enumerate(cmd.pipelines):
            if len(pipeline.commands) > 1:
                continue  # every part of a pipeline runs in a subshell
            checked = pipeline.negated or k < len(cmd.pipelines) - 1  # set -e ignores these failures
            self.checked += checked
            try:
                self.effects_of_command(pipeline.commands[0], ctx, fx, depth)
            finally:
                self.checked -= checked

    def effects_of_list(self, commands: Iterable[shell.AndOr], ctx: str, fx: _Effects, depth: int) -> None:
        for c in commands:
            self.effects_of_andor(c, ctx, fx, depth)

    def effects_of_command(
        self, c: shell.Simple | shell.Compound | shell.FunctionDef, ctx: str, fx: _Effects, depth: int
    ) -> None:
        if isinstance(c, shell.FunctionDef):
            fx.defines[c.name] = c.body
            return
        if isinstance(c, shell.Compound):
            if c.kind == "subshell":
                return
            inner = ctx if ctx.startswith("function") else _CONTEXT_NAMES.get(c.kind, c.kind)
            guarded = _guarded_source(c) if self.sourced and depth < 8 else None
            if guarded is not None and guarded[0] in self.sourced:
                path, dot = guarded
                sub = self.sourced[path]
                if sub is None:
                    return  # test -f P fails: the . never runs, and sh cannot stop at it
                if dot == "." and self.effects_of_sourced(sub, c.start, inner, fx, depth):
                    return
            if c.kind == "for":
                fx.assigned.setdefault(c.var, (c.start, inner))
                fx.opaque.add(c.var)
            for w in c.words:
                self.effects_of_word(w, inner, fx)
            for k, lst in enumerate(c.lists):
                # if: (condition, body) pairs, then an else body when the count is odd; loops: (condition, body)
                else_body = c.kind == "if" and len(c.lists) % 2 == 1 and k == len(c.lists) - 1
                condition = (c.kind == "if" and k % 2 == 0 and not else_body) or (c.kind in ("while", "until") and k == 0)
                self.checked += condition
                try:
                    self.effects_of_list(lst, inner, fx, depth)
                finally:
                    self.checked -= condition
            return
        for a in c.assigns:
            fx.assigned.setdefault(a.name, (a.start, ctx))
            added = _self_append(a) if not c.words and ctx in _BRANCHES else None
            if added is None:
                fx.opaque.add(a.name)
            else:
                fx.appends.setdefault(a.name, []).append(added[0])
            self.effects_of_word(a.value, ctx, fx)
        words = list(c.words)
        for item in words:
            self.effects_of_word(item.value if isinstance(item, Assign) else item, ctx, fx)
        while words and isinstance(words[0], Word) and words[0].plain() in ("command", "builtin"):
            words = words[1:]
        if not words:
            return
        head = words[0]
        if isinstance(head, Assign):
            return
        name = head.plain()
        if name is None:
            raw = self.files[self.current].text[head.start : head.end]
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            why = f"the command {shown} (its name is quoted or computed at run time; not an assignment) may change any variable"
            fx.everything = fx.everything or (head.start, why)
            return
        if name in _SOURCERS:
            fx.everything = fx.everything or (
                head.start,
                f"'{name}' runs shell code that is not in this file and may change any variable",
            )
            stops = _may_stop(name, [], c.redirects)
            if stops:
                fx.terminates = fx.terminates or (head.start, stops)
            return
        if name in _TERMINATORS or (name == "exec" and len(words) > 1):
            fx.terminates = fx.terminates or (head.start, name)
            return
        failing = "" if self.checked else _fails(name, words[1:])
        if failing:  # grub-mkconfig sources the file under set -e: a failing command stops it
            fx.terminates = fx.terminates or (head.start, failing)
            return
        stops = _may_stop(name, [w.plain() if isinstance(w, Word) else "" for w in words[1:]], c.redirects)
        if stops:
            fx.terminates = fx.terminates or (head.start, stops)
            if name != "readonly":
                return
        if name == "alias":
            fx.everything = fx.everything or (head.start, "'alias' may make the lines after it mean something else")
            return
        if name == "local" and not ctx.startswith("function"):
            fx.terminates = fx.terminates or (head.start, "local (outside a function sh stops with an error)")
            return
        if name in _SETTERS or name == "export":
            self.effects_of_setter(name, words[1:], ctx, fx)
            return
        if name == "printf" and len(words) > 2 and isinstance(words[1], Word) and words[1].plain() == "-v":
            target = words[2].plain() if isinstance(words[2], Word) else None
            if target:
                fx.assigned.setdefault(target, (words[2].start, ctx))
                fx.opaque.add(target)
            return
        body = fx.defines.get(name) or self.functions.get(name)
        if body is not None:
            self.note_reads(
                self.files[self.current].text[body.start : body.end] if name in fx.defines else self.function_text[name]
            )
            if depth > 20:
                fx.everything = fx.everything or (head.start, f"function {name} calls itself too deeply to follow")
                return
            inner = ctx if ctx.startswith("function") else f"function {name}, called on {self.where(self.current, head.start)}"
            self.effects_of_command(body, inner, fx, depth + 1)
            return
        if self.foreign_functions is not None:
            fx.everything = fx.everything or (
                head.start,
                f"'{name}' may be a function from {self.foreign_functions.reason} and change any variable",
            )

    def effects_of_sourced(self, sub: GrubFile, at: int, ctx: str, fx: _Effects, depth: int) -> bool:
        """What ``. FILE`` in a block whose guard holds does, from FILE's own statements, as if they
        stood in that block (each at ``at``, the block's place in this file); False when FILE is
        beyond that (a syntax error, a function defined): the caller treats it as unknown code."""
        if sub.error is not None:
            return False
        inner = _Effects()
        saved = self.files, self.current
        self.files, self.current = [*saved[0], sub], len(saved[0])
        try:
            self.note_reads(sub.text)
            for st in sub.statements:
                if st.unit.command is not None and st.unit.separator != "&":
                    self.effects_of_andor(st.unit.command, ctx, inner, depth + 1)
        finally:
            self.files, self.current = saved
        if inner.defines:
            return False
        for name, (_, context) in inner.assigned.items():
            fx.assigned.setdefault(name, (at, context))
        for name, added in inner.appends.items():
            fx.appends.setdefault(name, []).extend(added)
        fx.opaque |= inner.opaque
        if inner.everything is not None:
            fx.everything = fx.everything or (at, f"{inner.everything[1]} (in {sub.path}, which this block sources)")
        if inner.terminates is not None:
            fx.terminates = fx.terminates or (at, f"{inner.terminates[1]} (in {sub.path}, which this block sources)")
        return True

    def effects_of_setter(self, name: str, args: list[Word | Assign], ctx: str, fx: _Effects) -> None:
        """export, readonly, local, read, unset...: what their operands may set. A quoted
        ``export "NAME=value"`` assigns as much as a plain one; an operand sh computes at run time
        (``export $V=x``) may name any variable; an option sh rejects (``export -n``) stops the file."""
        for arg in args:
            if isinstance(arg, Assign):
                fx.assigned.setdefault(arg.name, (arg.start, ctx))
                fx.opaque.add(arg.name)
                continue
            plain = arg.plain()
            if plain is None:
                why = f"'{name}' with a quoted or computed operand may set any variable"
                fx.everything = fx.everything or (arg.start, why)
                return
            if plain.startswith("-") and name in ("export", "readonly"):
                if plain != "-p":
                    fx.terminates = fx.terminates or (arg.start, f"{name} {plain} (sh rejects the option and stops)")
                    return
                continue
            target = plain.split("=", 1)[0]
            if "=" in plain or name != "export":
                if target.isidentifier():
                    fx.assigned.setdefault(target, (arg.start, ctx))
                    fx.opaque.add(target)
                elif "=" in plain:
                    fx.terminates = fx.terminates or (arg.start, f"{name} {plain.split('=', 1)[0]}= (not a name: sh stops)")
                    return

    def effects_of_word(self, word: Word, ctx: str, fx: _Effects) -> None:
        for name, pos in _assigned_in_word(word, self.files[self.current].text):
            fx.assigned.setdefault(name, (pos, ctx))
            fx.opaque.add(name)
        for name, pos in _checked_in_word(word):  # ${X?...}: a check sh exits on
            fx.terminates = fx.terminates or (pos, f"${{{name}?...}} (sh stops when {name} is unset)")


_CONTEXT_NAMES = {
    "if": "an if block",
    "case": "a case block",
    "while": "a while loop",
    "until": "an until loop",
    "for": "a for loop",
    "brace": "a { } group",
}


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_READ = re.compile(r"\$\{?#?([A-Za-z_][A-Za-z0-9_]*)")
_ARITH_ASSIGN = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\+\+|--|(?:[-+*/%&|^]|<<|>>)?=(?!=))|(?:\+\+|--)\s*([A-Za-z_][A-Za-z0-9_]*)"
)


_SPECIAL_BUILTINS = frozenset(
    {
        ":",
        ".",
        "break",
        "continue",
        "eval",
        "exec",
        "exit",
        "export",
        "readonly",
        "return",
        "set",
        "shift",
        "times",
        "trap",
        "unset",
    }
)


def _fails(name: str, args: list[Word | Assign]) -> str:
    """A command that fails wherever it runs (grub-mkconfig sources the defaults under ``set -e``, so
    sh stops there), in words ("" for any other)."""
    if name == "false":
        return "false (it fails, and grub-mkconfig sources the file under set -e: sh stops there)"
    first = args[0].plain() if args and isinstance(args[0], Word) else None
    if name.isidentifier() and first is not None and first.startswith("="):
        return (
            f"{name} {first[:20]} (spaces around '=': sh runs {name} as a command, which is not found, and grub-mkconfig"
            " sources the file under set -e: sh stops there)"
        )
    if re.fullmatch(r"GRUB_[A-Z0-9_]*", name):
        return f"{name} used as a command (not found: grub-mkconfig sources the file under set -e, and sh stops there)"
    return ""


def _may_stop(name: str, args: list[str | None], redirects: tuple[shell.Redirect, ...]) -> str:
    """Why sh may exit at this command (what mlxfix cannot rule out without running it), or ""."""
    if name in (".", "source"):
        return (
            f"{name} (it runs shell code that is not in this file: sh stops if that file cannot be read,"
            " and the code may stop it or change any variable)"
        )
    if name == "readonly":
        return "readonly (sh stops at a later assignment of a read-only name)"
    if name == "shift":
        return "shift (sh stops when there are fewer positional parameters)"
    if name == "set":
        for i, arg in enumerate(args):
            if arg is None or arg == "--" or not arg.startswith("-"):
                break
            if arg == "-o" and i + 1 < len(args) and args[i + 1] in ("errexit", "nounset"):
                return f"set -o {args[i + 1]} (sh then stops at the first failing command)"
            if not arg.startswith("--") and ("e" in arg or "u" in arg):
                return f"set {arg} (sh then stops at the first failing command or unset variable)"
    if name in _SPECIAL_BUILTINS:
        for r in redirects:
            target = r.target.plain()
            if "&" not in r.op and target != "/dev/null":
                return f"a redirection of the special builtin '{name}' (sh stops when it fails)"
    return ""


_BRANCHES = frozenset({"an if block", "a case block", "an && / || list"})  # code that runs once or not at all
_FILE_TESTS = frozenset({"-f", "-e", "-r", "-s"})  # true only of a file that exists


def _only_simple(lst: tuple[shell.AndOr, ...]) -> shell.Simple | None:
    if len(lst) != 1 or len(lst[0].pipelines) != 1:
        return None
    pipeline = lst[0].pipelines[0]
    c = pipeline.commands[0] if len(pipeline.commands) == 1 and not pipeline.negated else None
    return c if isinstance(c, shell.Simple) and not c.assigns and not c.redirects else None


def _guarded_source(c: shell.Compound) -> tuple[str, str] | None:
    """``if test -f P; then . P; fi`` (``[ -f P ]``, ``-e``, ``-r``, ``-s``; ``source``): (P, the
    sourcing word). P is a plain absolute path, the same in both; no elif or else."""
    if c.kind != "if" or len(c.lists) != 2:
        return None
    test, dot = _only_simple(c.lists[0]), _only_simple(c.lists[1])
    if test is None or dot is None:
        return None
    words = [w.plain() if isinstance(w, Word) else None for w in test.words]
    if words[:1] == ["["] and words[-1:] == ["]"]:
        words = ["test", *words[1:-1]]
    sourcing = [w.plain() if isinstance(w, Word) else None for w in dot.words]
    if len(words) != 3 or words[0] != "test" or words[1] not in _FILE_TESTS or len(sourcing) != 2:
        return None
    path = words[2]
    if path is None or not path.startswith("/") or sourcing[1] != path or sourcing[0] not in (".", "source"):
        return None
    return path, sourcing[0]


def guarded_sources(files: Iterable[GrubFile]) -> list[str]:
    """The paths the guarded ``.`` blocks of ``files`` read (at the top level): what the host must be
    asked for, so that the evaluation knows whether each guard holds and what the file does."""
    out: list[str] = []
    for f in files:
        for st in f.statements:
            cmd = st.unit.command
            if st.kind == "assignment" or cmd is None or len(cmd.pipelines) != 1 or len(cmd.pipelines[0].commands) != 1:
                continue
            c = cmd.pipelines[0].commands[0]
            found = _guarded_source(c) if isinstance(c, shell.Compound) else None
            if found is not None:
                out.append(found[0])
    return list(dict.fromkeys(out))


def _self_append(a: Assign) -> tuple[str, bool] | None:
    """The text ``NAME="$NAME text"`` (or ``"text $NAME"``, ``${NAME}``) adds to NAME's own value, as
    whole words (the text starts, or ends, with a blank, so no word of the old value changes), and
    whether it goes at the end; None for any other assignment."""
    parts: list[shell.Part] = []
    for p in a.value.parts:
        parts.extend(p.parts if isinstance(p, DoubleQuoted) else (p,))
    own = [k for k, p in enumerate(parts) if isinstance(p, Expansion)]
    if len(parts) < 2 or len(own) != 1 or own[0] not in (0, len(parts) - 1):
        return None
    e = parts[own[0]]
    assert isinstance(e, Expansion)
    if e.kind != "param" or e.name != a.name or e.op or e.arg is not None:
        return None
    lits = [p for p in parts if isinstance(p, Literal)]
    if len(lits) != len(parts) - 1 or any(p.quote == "" and "~" in p.text for p in lits):
        return None
    text = "".join(p.text for p in lits)
    blank = text[:1] if own[0] == 0 else text[-1:]
    return (text, own[0] == 0) if blank in (" ", "\t") and "\n" not in text else None


def _expansions(word: Word) -> Iterator[Expansion]:
    """The expansions of a word that sh performs in the shell itself: in double quotes and in the
    arguments of ``${X...}`` too (not the bodies of ``$( )``, which run in a subshell)."""
    stack: list[shell.Part] = list(word.parts)
    while stack:
        p = stack.pop()
        if isinstance(p, DoubleQuoted):
            stack.extend(p.parts)
        elif isinstance(p, Expansion):
            yield p
            if p.kind == "param" and p.arg is not None:
                stack.extend(p.arg.parts)


def _checked_in_word(word: Word) -> list[tuple[str, int]]:
    """Variables a word requires to be set: ``${X?...}``, ``${X:?...}`` (sh exits when they are not)."""
    return [(p.name, p.start) for p in _expansions(word) if p.kind == "param" and p.op in ("?", ":?")]


def _assigned_in_word(word: Word, text: str) -> list[tuple[str, int]]:
    """Variables a word assigns while it is expanded: ``${X=...}``, ``${X:=...}``, ``$((X+=1))``."""
    found: list[tuple[str, int]] = []
    for p in _expansions(word):
        if p.kind == "param" and p.op in ("=", ":="):
            found.append((p.name, p.start))
        elif p.kind == "arith":
            found += [(m.group(1) or m.group(2), p.start) for m in _ARITH_ASSIGN.finditer(text, p.start, p.end)]
    return found


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def evaluate(
    files: Sequence[GrubFile], watch: AbstractSet[str] = frozenset(), sourced: Mapping[str, GrubFile | None] = {}
) -> Evaluation:
    """Source ``files`` in order (as grub-mkconfig does) and return what each variable holds.

    ``watch``: names an edit may change; the result keeps checkpoints before their assignments, so that
    ``reevaluate`` can check an edited copy without evaluating the unchanged start again. ``sourced``:
    what the host holds at the paths guarded ``.`` blocks read (see ``guarded_sources``)."""
    return _Evaluator(files, watch, sourced).run()


def reevaluate(before: Evaluation, files: Sequence[GrubFile]) -> Evaluation:
    """``evaluate(files)``, for ``files`` that are ``before.files`` with some statements changed (as
    ``grubfile.reparse`` makes them: the statements before the first change are the very same objects).
    Resumes at the last checkpoint of ``before`` that lies wholly in that shared start."""
    for cp in reversed(before.checkpoints):
        if cp.file < 0 or cp.file >= len(files) or len(files) != len(before.files):
            break
        if any(files[i] is not before.files[i] for i in range(cp.file)):
            continue
        new, old = files[cp.file], before.files[cp.file]
        if new is old or (
            cp.statement <= len(new.statements)
            and cp.statement <= len(old.statements)
            and (cp.statement == 0 or new.statements[cp.statement - 1] is old.statements[cp.statement - 1])
        ):
            return _Evaluator(files, sourced=before.sourced).resume(cp, before)
    return _Evaluator(files, sourced=before.sourced).run()
