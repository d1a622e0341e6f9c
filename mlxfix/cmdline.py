"""Kernel command lines as tokens, split and understood the way the kernel does.

The kernel splits its command line on whitespace, with double quotes protecting spaces
(``acpi_osi="!Windows 2012"`` is one parameter; lib/cmdline.c ``next_arg``). Parameters after ``--``
go to init. ``pci=`` takes a comma-separated option list and may appear several times; for
``realloc`` the last setting wins, a value counts only when it starts with ``on`` or ``off``
(``realloc=0`` is ignored) and a bare ``realloc`` means on (drivers/pci/pci.c ``pci_setup``).

Edits are expressed as ``Change`` objects (replace ``line[start:end]`` by ``text``) so that a caller
can map them back onto the bytes that produced the line. Pure code.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, NamedTuple

from mlxfix.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Change",
    "Param",
    "ParamError",
    "Token",
    "apply",
    "conflicts",
    "contains",
    "ensure",
    "in_effect",
    "kernel_params",
    "realloc_setting",
    "remove",
    "split",
]

WHITESPACE = " \t\n\v\f\r"
# Parameters that legitimately appear several times with different values, each one counting (the
# kernel's acpi_osi= adds to a set, video= names one connector, hugepagesz=/hugepages= come in
# pairs, crashkernel= has ,high and ,low parts; dracut's rd.* and systemd's lists accumulate):
# adding one keeps the others. For every other key, the last value is the one in effect.
REPEATABLE = frozenset(
    {
        "console", "ip", "nameserver", "memmap", "acpi_osi", "video", "hugepagesz", "hugepages", "crashkernel",
        "modprobe.blacklist", "systemd.mask", "systemd.wants", "systemd.setenv", "efi_fake_mem",
    }
)  # fmt: skip


def repeatable(key: str) -> bool:
    return key in REPEATABLE or key.startswith("rd.")


_SAFE = re.compile(r"[A-Za-z0-9_.,:=+/@%^!~-]+")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SAFE_QUOTED = re.compile(r"[A-Za-z0-9_.,:=+/@%^!~ -]*")


class ParamError(UsageError, ValueError):
    """A kernel parameter the user typed that mlxfix will not write."""


class Change(NamedTuple):
    """Replace ``line[start:end]`` with ``text`` (an insertion when start == end)."""

    start: int
    end: int
    text: str


class Token(NamedTuple):
    """One kernel parameter as written: ``start``/``end`` are offsets in the command line."""

    start: int
    end: int
    text: str
    key: str  # the parameter name as the kernel compares it (quotes dropped, ``-`` same as ``_``)

    @property
    def value(self) -> str | None:
        """The value after the first ``=``, without the quotes the kernel strips; None for a flag."""
        text = self.text.removeprefix('"')
        if "=" not in text:
            return None
        value = text.split("=", 1)[1]
        value = value.removeprefix('"')
        return value.removesuffix('"')

    def options(self) -> list[Token]:
        """The comma-separated options of a ``pci=`` value, with offsets in the command line."""
        eq = self.text.find("=")
        if eq < 0:
            return []
        lo, hi = self.start + eq + 1, self.end
        if self.text[eq + 1 : eq + 2] == '"':  # pci="noaer,realloc"
            lo += 1
            if self.text.endswith('"') and hi - 1 >= lo:
                hi -= 1
        elif self.text.startswith('"') and self.text.endswith('"') and len(self.text) >= 2:  # "pci=noaer,realloc"
            hi -= 1
        out: list[Token] = []
        body = self.text[lo - self.start : hi - self.start]
        pos = lo
        for piece in body.split(","):
            out.append(Token(pos, pos + len(piece), piece, _key(piece)))
            pos += len(piece) + 1
        return out


# A token as the kernel's next_arg reads one: up to whitespace outside double quotes (an unclosed quote
# runs to the end). Possessive, so a megabyte-long line is one linear scan.
_TOKEN = re.compile(r'(?:[^ \t\n\v\f\r"]++|"[^"]*+(?:"|\Z))++')


def _key(text: str) -> str:
    name = text[1 if text.startswith('"') else 0 : text.find("=") if "=" in text else len(text)]
    name = name.rstrip('"') if name.endswith('"') else name
    return name.replace("-", "_") if "-" in name else name


@functools.lru_cache(maxsize=16)  # a plan splits the same few lines several times; tokens are immutable
def split(line: str) -> tuple[Token, ...]:
    """Split a command line into tokens as the kernel's ``next_arg`` does."""
    return tuple(Token(m.start(), m.end(), text, _key(text)) for m in _TOKEN.finditer(line) if (text := m.group()))


def kernel_params(tokens: Sequence[Token]) -> Sequence[Token]:
    """The tokens before ``--`` (the rest is for init)."""
    for i, t in enumerate(tokens):
        if t.text == "--":
            return tokens[:i]
    return tokens


def _realloc_state(option: str) -> str | None:
    """``on``/``off`` for a pci realloc option, ``ignored`` when the kernel ignores it, else None."""
    if option.startswith("realloc="):
        value = option[8:]
        return "off" if value.startswith("off") else "on" if value.startswith("on") else "ignored"
    if option.startswith("realloc"):
        return "on"
    return None


def realloc_setting(line: str) -> tuple[str | None, list[str]]:
    """The effective ``pci=realloc`` setting of a command line (``on``, ``off`` or None when unset)
    and the realloc options the kernel ignores (``realloc=0``)."""
    state: str | None = None
    ignored: list[str] = []
    for t in kernel_params(split(line)):
        if t.key == "pci":
            for o in t.options():
                s = _realloc_state(o.text)
                if s == "ignored":
                    ignored.append(o.text)
                elif s is not None:
                    state = s
    return state, ignored


class Param(NamedTuple):
    """A kernel parameter mlxfix was asked to add, validated so it is exactly one safe token."""

    text: str

    @classmethod
    def parse(cls, text: str) -> Param:
        """Validate ``text``: one token, printable ASCII, quotes only around a whole value, and none
        of the characters GRUB's script or the shell would interpret (``$ ; & | < > ` \\ ' ( ) { }``)."""
        if not text:
            raise ParamError("the kernel parameter is empty")
        if len(text) > 255:
            raise ParamError("the kernel parameter is longer than 255 characters")
        bad = next((c for c in text if not (" " <= c <= "~")), None)
        if bad is not None:
            raise ParamError(f"the kernel parameter contains the control or non-ASCII character {bad!r}")
        if text == "--" or text.startswith("-"):
            raise ParamError(f"{text!r} is not a kernel parameter ('--' ends the kernel's parameters)")
        key, eq, value = text.partition("=")
        if not _NAME.fullmatch(key):
            raise ParamError(
                f"{text!r}: the parameter name must be letters, digits and . _ - (no spaces, quotes or shell characters)"
            )
        if eq and value.startswith('"'):
            inner = value[1:-1] if len(value) >= 2 and value.endswith('"') else None
            if inner is None or '"' in inner:
                raise ParamError(f'{text!r}: a quoted value must be one "..." with no other quotes')
            if not _SAFE_QUOTED.fullmatch(inner):
                raise ParamError(f"{text!r}: the quoted value contains a character GRUB or the shell would interpret")
        elif eq and value and not _SAFE.fullmatch(value):
            c = next(c for c in value if not _SAFE.fullmatch(c))
            what = "whitespace" if c == " " else repr(c)
            hint = 'quote a value with spaces as key="a b"; $ ; & | < > ` \\ \' ( ) { } are refused'
            raise ParamError(f"{text!r}: {what} in the value ({hint})")
        return cls(text)

    @property
    def token(self) -> Token:
        return Token(0, len(self.text), self.text, _key(self.text))

    @property
    def key(self) -> str:
        return self.token.key

    @property
    def is_pci(self) -> bool:
        return self.key == "pci" and self.token.value is not None


def _relation(option: str, wanted: str) -> str | None:
    """How a pci option relates to a wanted one: ``same``, ``conflict`` or None (unrelated)."""
    a, b = _realloc_state(option), _realloc_state(wanted)
    if b is not None and b != "ignored":
        if a is None or a == "ignored":
            return None
        return "same" if a == b else "conflict"
    if option.split("=", 1)[0] == wanted.split("=", 1)[0]:
        return "same" if option == wanted else "conflict"
    return None


class _Removal(NamedTuple):
    token: int
    option: int | None  # None: the whole token


def _plan(line: str, param: Param) -> tuple[list[_Removal], list[str]]:
    """Which tokens/options to remove and which pieces are missing, to make ``param`` hold once."""
    tokens = kernel_params(split(line))
    removals: list[_Removal] = []
    missing: list[str] = []
    if param.is_pci:
        for wanted in param.token.options():
            seen = False
            for ti, t in enumerate(tokens):
                if t.key != "pci":
                    continue
                for oi, o in enumerate(t.options()):
                    rel = _relation(o.text, wanted.text)
                    if rel == "same" and not seen:
                        seen = True
                    elif rel is not None:
                        removals.append(_Removal(ti, oi))
            if not seen:
                missing.append(wanted.text)
        return removals, missing
    want = param.token
    seen = False
    for ti, t in enumerate(tokens):
        if t.key != want.key:
            continue
        if t.value == want.value and not seen:
            seen = True
        elif t.value == want.value or not repeatable(want.key):
            removals.append(_Removal(ti, None))
    if not seen:
        missing.append(want.text)
    return removals, missing


def conflicts(line: str, param: Param) -> list[str]:
    """The tokens or pci options that contradict or repeat ``param`` (what ``ensure`` removes)."""
    tokens = kernel_params(split(line))
    removals, _ = _plan(line, param)
    return [tokens[r.token].text if r.option is None else "pci=" + tokens[r.token].options()[r.option].text for r in removals]


def contains(line: str, param: Param) -> bool:
    """Whether ``param`` holds exactly once with nothing contradicting it."""
    return not ensure(line, param)


def in_effect(line: str, param: Param) -> bool:
    """Whether the kernel booted with this line acts on ``param``, as the kernel reads it: for a pci
    option, the last setting wins (``pci=realloc=on pci=realloc=off`` is off); for any other
    parameter, its last occurrence (any occurrence, for repeatable ones such as ``console=``)."""
    tokens = kernel_params(split(line))
    if param.is_pci:
        for wanted in param.token.options():
            if _realloc_state(wanted.text) in ("on", "off"):
                if realloc_setting(line)[0] != _realloc_state(wanted.text):
                    return False
            elif not any(o.text == wanted.text for t in tokens if t.key == "pci" for o in t.options()):
                return False
        return True
    same = [t for t in tokens if t.key == param.key]
    if repeatable(param.key):
        return any(t.value == param.token.value for t in same)
    return bool(same) and same[-1].value == param.token.value


def ensure(line: str, param: Param) -> tuple[Change, ...]:
    """The changes that make ``param`` hold exactly once: conflicts and repeats removed (other pci
    options kept), the parameter appended after the last kernel parameter when missing."""
    removals, missing = _plan(line, param)
    addition = ""
    if missing:
        addition = "pci=" + ",".join(missing) if param.is_pci else missing[0]
    return _changes(line, removals, addition)


def remove(line: str, param: Param) -> tuple[Change, ...]:
    """The changes that take every occurrence of ``param`` out (other pci options kept)."""
    tokens = kernel_params(split(line))
    removals: list[_Removal] = []
    for ti, t in enumerate(tokens):
        if param.is_pci and t.key == "pci":
            wanted = {o.text for o in param.token.options()}
            removals.extend(_Removal(ti, oi) for oi, o in enumerate(t.options()) if o.text in wanted)
        elif not param.is_pci and t.key == param.key and t.value == param.token.value:
            removals.append(_Removal(ti, None))
    return _changes(line, removals, "")


def _changes(line: str, removals: Sequence[_Removal], addition: str) -> tuple[Change, ...]:
    all_tokens = split(line)
    tokens = kernel_params(all_tokens)
    whole: set[int] = set()
    by_token: dict[int, set[int]] = {}
    for r in removals:
        if r.option is None:
            whole.add(r.token)
        else:
            by_token.setdefault(r.token, set()).add(r.option)
    changes: list[Change] = []
    for ti, drop in by_token.items():
        if ti in whole:
            continue
        options = tokens[ti].options()
        if all(oi in drop or not o.text for oi, o in enumerate(options)):  # nothing but empty options would stay
            whole.add(ti)
            continue
        # Remove each run of adjacent dropped options with one comma: the one before the run, or
        # the one after it when the run starts the list.
        oi = 0
        while oi < len(options):
            if oi not in drop:
                oi += 1
                continue
            first = oi
            while oi + 1 < len(options) and (oi + 1) in drop:
                oi += 1
            if first > 0:
                changes.append(Change(options[first - 1].end, options[oi].end, ""))
            else:
                changes.append(Change(options[first].start, options[oi + 1].start, ""))
            oi += 1
    # Whole tokens: remove runs of adjacent removed tokens together with the whitespace that
    # separates them from their kept neighbour (after them, or before them at the end).
    ti = 0
    while ti < len(tokens):
        if ti not in whole:
            ti += 1
            continue
        first = ti
        while ti + 1 < len(tokens) and (ti + 1) in whole:
            ti += 1
        last = ti
        after = last + 1 if last + 1 < len(all_tokens) else None
        if after is not None and after < len(tokens):
            changes.append(Change(tokens[first].start, tokens[after].start, ""))
        elif first > 0:
            changes.append(Change(tokens[first - 1].end, tokens[last].end, ""))
        else:
            changes.append(Change(tokens[first].start, tokens[last].end, ""))
        ti += 1
    if addition:
        kept = [t for i, t in enumerate(tokens) if i not in whole]
        if kept and kept[-1].text.count('"') % 2:  # an unclosed quote runs to the end: go before it
            at = kept[-1].start
            text = addition + " "
        elif kept:
            at = kept[-1].end
            text = " " + addition
        elif tokens:
            at = tokens[0].start
            text = addition
        elif len(tokens) < len(all_tokens):  # only "--" and what follows it
            at = all_tokens[len(tokens)].start
            text = addition + " "
        else:  # no parameter at all: before any trailing whitespace (a CRLF file's "\r" stays last)
            at = len(line.rstrip(WHITESPACE))
            text = (" " if at and line[at - 1] not in WHITESPACE else "") + addition
        changes.append(Change(at, at, text))
    return tuple(_merge(changes))


def _merge(changes: list[Change]) -> list[Change]:
    """Sort and merge changes so that they never overlap (an insertion at the start of a deletion
    goes before it)."""
    changes.sort(key=lambda c: (c.start, c.end - c.start > 0, c.end))
    merged: list[Change] = []
    for c in changes:
        if merged and c.start < merged[-1].end:
            prev = merged.pop()
            merged.append(Change(prev.start, max(prev.end, c.end), prev.text + c.text))
        else:
            merged.append(c)
    return merged


def apply(line: str, changes: Sequence[Change]) -> str:
    """Apply non-overlapping changes to a command line."""
    out, pos = [], 0
    for c in sorted(changes, key=lambda c: (c.start, c.end - c.start > 0, c.end)):
        out.append(line[pos : c.start])
        out.append(c.text)
        pos = c.end
    out.append(line[pos:])
    return "".join(out)
