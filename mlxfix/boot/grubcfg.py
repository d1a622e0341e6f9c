"""What GRUB will boot: its own script language read as GRUB reads grub.cfg, and the default resolved.

grub.cfg is a program. The entries it offers, and which one the next boot takes, are decided when
GRUB runs it: 00_header's ``load_env`` and ``next_entry``/``saved_entry`` logic, ``if`` blocks on
``$grub_platform``, ``source`` of custom.cfg, the ``default`` variable resolved as grub-core's
menu.c does (a number, a title or an id, ``>`` paths into submenus, ``>>`` for a literal ``>``,
anything else the first entry). This module runs just enough of that program, without side
effects, to say which ``linux`` line the next boot executes and the command line the kernel gets
from it (``BOOT_IMAGE=`` and the arguments joined as grub_create_loader_cmdline joins them).
Pure code: bytes come in.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["GrubEntry", "Menu", "NextBootResult", "next_boot", "parse", "parse_grubenv"]

# Commands that load a Linux kernel, and the commands GRUB offers that a generated entry uses: any
# other word that starts a line of a menu entry is a line GRUB cannot run (a split ``linux`` line).
LINUX = frozenset({"linux", "linuxefi", "linux16"})
KNOWN = frozenset(
    [
        "[",
        "test",
        "echo",
        "set",
        "unset",
        "export",
        "insmod",
        "load_video",
        "set_gfxpayload",
        "search",
        "search.fs_uuid",
        "search.file",
        "search.fs_label",
        "initrd",
        "initrdefi",
        "initrd16",
        "boot",
        "chainloader",
        "multiboot",
        "multiboot2",
        "module",
        "module2",
        "gfxmode",
        "terminal_output",
        "terminal_input",
        "terminal",
        "serial",
        "font",
        "loadfont",
        "background_image",
        "savedefault",
        "save_env",
        "load_env",
        "recordfail",
        "fwsetup",
        "true",
        "false",
        "return",
        "break",
        "continue",
        "shift",
        "setparams",
        "configfile",
        "source",
        "normal",
        "reboot",
        "halt",
        "halt_grub",
        "cutmem",
        "badram",
        "gettext",
        "play",
        "keystatus",
        "sleep",
        "drivemap",
        "parttool",
        "probe",
        "ls",
        "cat",
        "cpuid",
        "videoinfo",
        "xen_hypervisor",
        "xen_module",
        "devicetree",
        "acpi",
        "smbios",
        "tpm2_key_protector",
        "linux",
        "linuxefi",
        "linux16",
        "blscfg",
        "bli",
        "legacy_configfile",
        "lsefi",
        "fdtload",
        "fdt",
        "rmmod",
    ]
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[?#*@]")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_SECTION = re.compile(r"^### (BEGIN|END) (\S+) ###$", re.MULTILINE)


# -- the lexer ---------------------------------------------------------------------------------------


class Part(NamedTuple):
    """One piece of a word: literal text, or a variable (``var``), quoted or not (an unquoted
    variable's value is split into fields, as GRUB splits it)."""

    text: str
    var: bool = False
    quoted: bool = False


class Word(NamedTuple):
    parts: tuple[Part, ...]
    line: int

    @property
    def literal(self) -> str | None:
        """The word's text when it has no variable in it."""
        return None if any(p.var for p in self.parts) else "".join(p.text for p in self.parts)


class Sep(NamedTuple):
    """A command separator: a newline or ``;``."""

    line: int


class Brace(NamedTuple):
    text: str  # "{" or "}"
    line: int


Token = Word | Sep | Brace


class GrubSyntaxError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def lex(text: str) -> list[Token]:
    """GRUB's script tokens: words with their quoting kept, separators, braces that stand alone."""
    out: list[Token] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
            continue
        if c == "\n" or c == ";":
            out.append(Sep(line))
            line += c == "\n"
            i += 1
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "{}" and (i + 1 == n or text[i + 1] in " \t\r\n;"):
            out.append(Brace(c, line))
            i += 1
            continue
        start_line = line
        parts: list[Part] = []
        lit: list[str] = []

        while i < n and text[i] not in " \t\r\n;":
            c = text[i]
            if c == "\\":
                if i + 1 < n and text[i + 1] == "\n":
                    line += 1
                elif i + 1 < n:
                    lit.append(text[i + 1])
                i += 2
            elif c == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise GrubSyntaxError("a single quote is never closed", line)
                _flush(lit, parts)
                parts.append(Part(text[i + 1 : end], False, True))
                line += text.count("\n", i, end)
                i = end + 1
            elif c == '"':
                _flush(lit, parts)
                i += 1
                while True:
                    if i >= n:
                        raise GrubSyntaxError("a double quote is never closed", start_line)
                    c = text[i]
                    if c == '"':
                        i += 1
                        break
                    if c == "\\" and i + 1 < n and text[i + 1] in '\\"$\n':
                        if text[i + 1] != "\n":
                            lit.append(text[i + 1])
                        line += text[i + 1] == "\n"
                        i += 2
                    elif c == "$" and (var := _variable(text, i)) is not None:
                        _flush(lit, parts, True)
                        parts.append(Part(var[0], True, True))
                        i = var[1]
                    else:
                        lit.append(c)
                        line += c == "\n"
                        i += 1
                _flush(lit, parts, True)
                if not parts or parts[-1].var:
                    parts.append(Part("", False, True))  # "" is an argument, even empty
            elif c == "$" and (var := _variable(text, i)) is not None:
                _flush(lit, parts)
                parts.append(Part(var[0], True, False))
                i = var[1]
            else:
                lit.append(c)
                i += 1
        _flush(lit, parts)
        out.append(Word(tuple(parts), start_line))
    return out


def _flush(lit: list[str], parts: list[Part], quoted: bool = False) -> None:
    """Move the literal text gathered so far into ``parts``."""
    if lit:
        parts.append(Part("".join(lit), False, quoted))
        lit.clear()


def _variable(text: str, i: int) -> tuple[str, int] | None:
    """The variable named at ``text[i] == "$"``, and where it ends."""
    if text.startswith("${", i):
        end = text.find("}", i + 2)
        return (text[i + 2 : end], end + 1) if end > 0 else None
    m = _NAME.match(text, i + 1)
    return (m.group(), m.end()) if m else None


# -- the tree ----------------------------------------------------------------------------------------


# Named tuples, not dataclasses: this module is on every command's start-up path, and a dataclass costs
# its module's import (inspect, ast, dis) and half a millisecond of generated code per class.


class Command(NamedTuple):
    words: tuple[Word, ...]
    line: int


class If(NamedTuple):
    branches: tuple[tuple[tuple[Node, ...], tuple[Node, ...]], ...]  # (condition, body) of if/elif
    otherwise: tuple[Node, ...]
    line: int


class Block(NamedTuple):
    """``menuentry``/``submenu`` (its words up to ``{``), ``function NAME``, or a loop (never run)."""

    kind: str
    words: tuple[Word, ...]
    body: tuple[Node, ...]
    line: int
    end: int = 0  # the line of its closing brace


Node = Command | If | Block


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def line(self) -> int:
        t = self.peek()
        return t.line if t is not None else (self.tokens[-1].line if self.tokens else 1)

    def statements(self, until: frozenset[str]) -> tuple[Node, ...]:
        out: list[Node] = []
        while True:
            t = self.peek()
            if t is None:
                if until:
                    raise GrubSyntaxError(f"ends before {' or '.join(sorted(until))}", self.line())
                return tuple(out)
            if isinstance(t, Sep):
                self.i += 1
                continue
            if isinstance(t, Brace):
                if "}" in until and t.text == "}":
                    return tuple(out)
                raise GrubSyntaxError(f"unexpected {t.text!r}", t.line)
            word = t.literal
            if word in until:
                return tuple(out)
            out.append(self.statement())

    def statement(self) -> Node:
        t = self.peek()
        assert isinstance(t, Word)
        word = t.literal
        if word == "if":
            return self.if_()
        if word in ("for", "while", "until"):
            self.i += 1
            self.statements(frozenset({"do"}))
            self.i += 1
            body = self.statements(frozenset({"done"}))
            self.i += 1
            return Block(word, (), body, t.line)
        words: list[Word] = []
        while (u := self.peek()) is not None and isinstance(u, Word):
            words.append(u)
            self.i += 1
        if word in ("menuentry", "submenu", "function") and isinstance(self.peek(), Brace):
            brace = self.peek()
            assert isinstance(brace, Brace)
            if brace.text != "{":
                raise GrubSyntaxError("unexpected '}'", brace.line)
            self.i += 1
            body = self.statements(frozenset({"}"}))
            end = self.line()
            self.i += 1
            return Block(word, tuple(words[1:]), body, t.line, end)
        return Command(tuple(words), t.line)

    def if_(self) -> If:
        start = self.line()
        branches: list[tuple[tuple[Node, ...], tuple[Node, ...]]] = []
        otherwise: tuple[Node, ...] = ()
        self.i += 1  # if
        while True:
            cond = self.statements(frozenset({"then"}))
            self.i += 1
            body = self.statements(frozenset({"elif", "else", "fi"}))
            branches.append((cond, body))
            t = self.peek()
            assert isinstance(t, Word)
            self.i += 1
            if t.literal == "elif":
                continue
            if t.literal == "else":
                otherwise = self.statements(frozenset({"fi"}))
                self.i += 1
            return If(tuple(branches), otherwise, start)


def parse(text: str) -> tuple[Node, ...]:
    """grub.cfg's statements (raises GrubSyntaxError with the line of what GRUB cannot parse)."""
    return _Parser(lex(text)).statements(frozenset())


# -- running it --------------------------------------------------------------------------------------


class GrubEntry(NamedTuple):
    """A menu entry as GRUB offers it, and the command line its ``linux`` line gives the kernel."""

    name: str  # the title path, "Advanced options for Debian>Debian, with Linux 6.1.0-9-amd64"
    id: str
    source: str  # file:line of its linux line (of the menuentry when it has none)
    cmdline: str | None
    recovery: bool
    generated: bool  # written by a grub.d script that uses GRUB_CMDLINE_LINUX* (10_linux and its kind)
    boots_linux: bool
    path: str = ""  # the file that defines it, and the lines of its menuentry block there
    span: tuple[int, int] = (0, 0)
    linux_line: int = 0  # the line of its (last) linux command, 0 without one


class Menu(NamedTuple):
    """One level of the menu: entries and submenus in the order GRUB numbers them."""

    items: list[MenuItem]


class MenuItem(NamedTuple):
    title: str
    id: str
    block: Block
    path: str  # the file it is defined in
    generated: bool
    submenu: bool


class NextBootResult(NamedTuple):
    entries: list[GrubEntry]  # every menu entry, submenus flattened
    entry: GrubEntry | None  # the one the next boot takes (None: the menu is empty)
    why: str
    problems: list[str]


class _Run:
    """The state of one run of grub.cfg: variables, functions, the files it may read, its problems."""

    __slots__ = ("depth", "env", "files", "functions", "grubenv", "grubenv_path", "problems")

    def __init__(
        self, env: dict[str, str], files: dict[str, str], grubenv: dict[str, str] | None, grubenv_path: str, problems: list[str]
    ) -> None:
        self.env = env
        self.files = files  # path -> text, of the files ``source`` and ``[ -f ]`` may reach
        self.grubenv = grubenv
        self.grubenv_path = grubenv_path
        self.problems = problems
        self.functions: dict[str, Block] = {}
        self.depth = 0

    # -- words -----------------------------------------------------------------------------------

    def expand(self, words: tuple[Word, ...]) -> list[str]:
        """The arguments the words make: unquoted variables split into fields, quoted ones kept."""
        args: list[str] = []
        for w in words:
            fields: list[str] = []
            cur: str | None = None
            for p in w.parts:
                if not p.var:
                    cur = (cur or "") + p.text
                    continue
                value = self.env.get(p.text, "")
                if p.quoted:
                    cur = (cur or "") + value
                    continue
                pieces = value.split()
                if not pieces:
                    continue
                if value[0].isspace() and cur is not None:
                    fields.append(cur)
                    cur = None
                cur = (cur or "") + pieces[0]
                for piece in pieces[1:]:
                    fields.append(cur)
                    cur = piece
                if value[-1].isspace():
                    fields.append(cur)
                    cur = None
            if cur is not None:
                fields.append(cur)
            args.extend(fields)
        return args

    # -- statements --------------------------------------------------------------------------------

    def run(self, nodes: tuple[Node, ...], menu: Menu | None, path: str, generated: dict[int, bool]) -> int:
        """Run statements; menuentry/submenu blocks are added to ``menu``. The status of the last."""
        status = 0
        for node in nodes:
            if isinstance(node, If):
                for cond, body in node.branches:
                    if self.run(cond, None, path, generated) == 0:
                        status = self.run(body, menu, path, generated)
                        break
                else:
                    status = self.run(node.otherwise, menu, path, generated)
            elif isinstance(node, Block):
                status = self.block(node, menu, path, generated)
            else:
                status = self.command(node, menu, path, generated)
        return status

    def block(self, node: Block, menu: Menu | None, path: str, generated: dict[int, bool]) -> int:
        if node.kind == "function":
            name = node.words[0].literal if node.words else None
            if name:
                self.functions[name] = node
            return 0
        if node.kind not in ("menuentry", "submenu") or menu is None:
            return 0  # a loop: never run (generated grub.cfg files have none)
        args = self.expand(node.words)
        title, entry_id, i = None, None, 0
        while i < len(args):
            a = args[i]
            if a in ("--id", "--class", "--users", "--hotkey", "--source") and i + 1 < len(args):
                if a == "--id":
                    entry_id = args[i + 1]
                i += 2
                continue
            if a.startswith("--id="):
                entry_id = a[5:]
            elif not a.startswith("--") and title is None:
                title = a
            i += 1
        title = title or ""
        menu.items.append(MenuItem(title, entry_id or title, node, path, generated.get(node.line, False), node.kind == "submenu"))
        return 0

    def command(self, node: Command, menu: Menu | None, path: str, generated: dict[int, bool]) -> int:
        args = self.expand(node.words)
        if not args:
            return 0
        name, rest = args[0], args[1:]
        if (m := _ASSIGN.fullmatch(name)) and len(node.words[0].parts) >= 1:
            self.env[m.group(1)] = m.group(2)
            return 0
        if name == "!":
            return 0 if self.command(Command(node.words[1:], node.line), menu, path, generated) else 1
        if name == "set":
            for a in rest:
                key, eq, value = a.partition("=")
                if eq:
                    self.env[key] = value
            return 0
        if name == "unset":
            for a in rest:
                self.env.pop(a, None)
            return 0
        if name in ("[", "test"):
            if name == "[":
                if not rest or rest[-1] != "]":
                    return 1
                rest = rest[:-1]
            return 0 if _test(rest, self) else 1
        if name == "load_env":
            self.load_env(rest)
            return 0
        if name in ("source", "."):
            return self.source(rest[0] if rest else "", menu)
        if name == "true":
            return 0
        if name == "false":
            return 1
        if name in self.functions and self.depth < 16:
            self.depth += 1
            try:
                return self.run(self.functions[name].body, menu, path, generated)
            finally:
                self.depth -= 1
        return 0  # insmod, search, terminal_output...: no effect on what boots

    def load_env(self, args: list[str]) -> None:
        names: list[str] = []
        i, other = 0, False
        while i < len(args):
            if args[i] in ("-f", "--file") and i + 1 < len(args):
                other = self.path(args[i + 1]) != self.grubenv_path
                i += 2
                continue
            if not args[i].startswith("-"):
                names.append(args[i])
            i += 1
        if other or self.grubenv is None:
            return
        for key, value in self.grubenv.items():
            if not names or key in names:
                self.env[key] = value

    def source(self, target: str, menu: Menu | None) -> int:
        path = self.path(target)
        text = self.files.get(path)
        if text is None or self.depth >= 16:
            return 1
        try:
            nodes = parse(text)
        except GrubSyntaxError as exc:
            self.problems.append(f"{path}:{exc.line}: GRUB cannot parse it ({exc}); it stops reading it there")
            return 1
        self.depth += 1
        try:
            return self.run(nodes, menu, path, {})
        finally:
            self.depth -= 1

    def path(self, grub_path: str) -> str:
        """A GRUB path (``(hd0,gpt2)/boot/grub/x``, ``$prefix/x``) as a path on the host."""
        return re.sub(r"^\([^)]*\)", "", grub_path) or "/"

    def exists(self, grub_path: str, nonempty: bool = False) -> bool:
        path = self.path(grub_path)
        if path == self.grubenv_path:
            return self.grubenv is not None  # grubenv is a 1024-byte block: never empty
        text = self.files.get(path)
        return text is not None and (not nonempty or bool(text))


def _test(args: list[str], run: _Run) -> bool:
    """GRUB's ``test``: -a, -o, !, ( ), string, number and file tests."""
    pos = 0

    def primary() -> bool:
        nonlocal pos
        if pos >= len(args):
            return False
        a = args[pos]
        if a == "!":
            pos += 1
            return not primary()
        if a == "(":
            pos += 1
            value = expr()
            pos += 1  # ")"
            return value
        if pos + 2 < len(args) + 0 and args[pos + 1] in ("=", "==", "!=", "-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
            left, op, right = a, args[pos + 1], args[pos + 2]
            pos += 3
            if op in ("=", "=="):
                return left == right
            if op == "!=":
                return left != right
            try:
                x, y = int(left), int(right)
            except ValueError:
                return False
            return {"-eq": x == y, "-ne": x != y, "-lt": x < y, "-le": x <= y, "-gt": x > y, "-ge": x >= y}[op]
        if a in ("-z", "-n", "-f", "-e", "-d", "-s") and pos + 1 < len(args):
            operand = args[pos + 1]
            pos += 2
            if a == "-z":
                return operand == ""
            if a == "-n":
                return operand != ""
            if a == "-d":
                return False
            return run.exists(operand, nonempty=a == "-s")
        pos += 1
        return a != ""

    def conj() -> bool:
        nonlocal pos
        value = primary()
        while pos < len(args) and args[pos] == "-a":
            pos += 1
            value = primary() and value
        return value

    def expr() -> bool:
        nonlocal pos
        value = conj()
        while pos < len(args) and args[pos] == "-o":
            pos += 1
            value = conj() or value
        return value

    return expr() if args else False


# -- grubenv -----------------------------------------------------------------------------------------


def parse_grubenv(data: bytes) -> dict[str, str]:
    """grubenv's variables (a 1024-byte block: ``name=value`` lines, ``\\`` escaping, ``#`` padding)."""
    text = data.decode("utf-8", "replace")
    out: dict[str, str] = {}
    for raw in _env_lines(text):
        if not raw or raw.startswith("#"):
            continue
        key, eq, value = raw.partition("=")
        if eq:
            out[key] = value
    return out


def _env_lines(text: str) -> list[str]:
    lines, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if c == "\n":
            lines.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    lines.append("".join(cur))
    return lines


# -- the default -------------------------------------------------------------------------------------


def _strtoul(text: str) -> int | None:
    """grub_strtoul(val, 0, 0): leading blanks, 0x hex, 0 octal, the digits that follow; None when
    there are none (GRUB_ERR_BAD_NUMBER)."""
    s = text.lstrip(" \t\n\r")
    m = re.match(r"0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*)", s)
    if not m:
        return None
    if m.group(1):
        return int(m.group(1), 16)
    if m.group(2):
        return int(m.group(2), 8)
    return int(m.group(3))


def _eq(name: str, spec: str) -> bool:
    """menu.c's menuentry_eq: ``name`` matches ``spec`` up to its first ``>`` (``>>`` is a ``>``)."""
    i = j = 0
    while True:
        if spec[j : j + 1] == ">" and spec[j + 1 : j + 2] != ">":
            return i == len(name)
        if spec[j : j + 1] == ">":
            j += 1
        a, b = name[i : i + 1], spec[j : j + 1]
        if a != b:
            return False
        if a == "":
            return True
        i += 1
        j += 1


def _rest(spec: str) -> str | None:
    """What ``default`` holds inside a chosen submenu: after its first single ``>``."""
    j = 0
    while j < len(spec):
        if spec[j] == ">" and spec[j + 1 : j + 2] == ">":
            j += 2
            continue
        if spec[j] == ">":
            return spec[j + 1 :] or None
        j += 1
    return None


def _choose(menu: Menu, default: str | None) -> tuple[int, str]:
    """The index GRUB's run_menu takes, and in words why."""
    if default is None:
        return 0, "no default is set: the first entry"
    n = _strtoul(default)
    if n is None:
        for k, item in enumerate(menu.items):
            if _eq(item.title, default) or _eq(item.id, default):
                return k, f"the entry titled or with id {default.split('>')[0]!r}"
        return 0, f"no entry is titled or has the id {default!r}: GRUB takes the first"
    if n >= len(menu.items):
        return 0, f"entry {n} does not exist: GRUB takes the first"
    return n, f"entry number {n}"


# -- the whole -----------------------------------------------------------------------------------------


def _generated_lines(text: str) -> dict[int, bool]:
    """The lines of grub.cfg inside a section of a grub.d script that writes GRUB_CMDLINE_LINUX
    entries (10_linux, 10_linux_zfs, 20_linux_xen...), by grub-mkconfig's BEGIN/END markers."""
    out: dict[int, bool] = {}
    current = False
    for n, line in enumerate(text.splitlines(), 1):
        m = _SECTION.match(line)
        if m:
            current = m.group(1) == "BEGIN" and "_linux" in m.group(2).rsplit("/", 1)[-1]
        out[n] = current
    return out


def next_boot(
    data: bytes,
    path: str,
    *,
    env: dict[str, str] | None = None,
    custom: bytes | None = None,
    custom_path: str = "",
    platform: str = "pc",
) -> NextBootResult:
    """Run grub.cfg as GRUB would at the next boot and say which entry it takes."""
    text = data.decode("utf-8", "replace")
    problems: list[str] = []
    try:
        nodes = parse(text)
    except GrubSyntaxError as exc:
        return NextBootResult([], None, f"{path}:{exc.line}: GRUB cannot parse it ({exc})", [f"{path}:{exc.line}: {exc}"])
    directory = path.rsplit("/", 1)[0] or "/"
    files = {path: text}
    if custom is not None and custom_path:
        files[custom_path] = custom.decode("utf-8", "replace")
    start = {
        "prefix": directory,
        "config_directory": directory,
        "config_file": path,
        "cmdpath": directory,
        "root": "",
        "grub_platform": platform,
        "grub_cpu": "x86_64" if platform == "efi" else "i386",
        **{f"feature_{f}": "y" for f in ("menuentry_id", "default_font_path", "all_video_module", "timeout_style",
                                          "nativedisk_cmd", "platform_search_hint", "200_final", "chainloader_bpb", "ntldr")},
    }  # fmt: skip
    run = _Run(dict(start), files, env, f"{directory}/grubenv", problems)
    top = Menu([])
    run.run(nodes, top, path, _generated_lines(text))
    entries: list[GrubEntry] = []
    chosen: GrubEntry | None = None
    default = run.env.get("default")
    why = _why_default(default, env)

    def visit(menu: Menu, prefix: str, spec: str | None, on_path: bool) -> None:
        nonlocal chosen, why
        pick, how = _choose(menu, spec) if on_path else (-1, "")
        if on_path and menu.items:
            why = f"{why}; {how}" if prefix else f"{why}: {how}"
        for k, item in enumerate(menu.items):
            name = f"{prefix}>{item.title}" if prefix else item.title
            if item.submenu:
                sub = Menu([])
                saved = dict(run.env)
                run.run(item.block.body, sub, item.path, _generated_lines(files.get(item.path, "")) if item.generated else {})
                visit(sub, name, _rest(spec) if (on_path and k == pick and spec) else None, on_path and k == pick)
                run.env = saved
                continue
            entry = _entry(run, item, name)
            entries.append(entry)
            if on_path and k == pick:
                chosen = entry

    visit(top, "", default, True)
    if not top.items:
        why = f"{path} has no menu entry (GRUB would stop at its prompt)"
    return NextBootResult(entries, chosen, why, problems)


def _why_default(default: str | None, grubenv: dict[str, str] | None) -> str:
    if grubenv is not None and grubenv.get("next_entry") and default == grubenv["next_entry"]:
        return f"next_entry={default!r} in grubenv (a one-time boot, grub-reboot)"
    if grubenv is not None and grubenv.get("saved_entry") and default == grubenv["saved_entry"]:
        return f"default=saved: saved_entry={default!r} in grubenv"
    if default is None:
        return "default is not set"
    return f"default={default!r}"


def _entry(run: _Run, item: MenuItem, name: str) -> GrubEntry:
    """Run the entry's body (a copy of the environment, as its own scope) up to its linux line."""
    saved = dict(run.env)
    found: list[tuple[list[str], int]] = []

    def walk(nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            if isinstance(node, If):
                for cond, body in node.branches:
                    if run.run(cond, None, item.path, {}) == 0:
                        walk(body)
                        break
                else:
                    walk(node.otherwise)
            elif isinstance(node, Command):
                args = run.expand(node.words)
                if args and args[0] in LINUX:
                    found.append((args[1:], node.line))
                elif args and args[0] not in KNOWN and args[0] not in run.functions and not _ASSIGN.fullmatch(args[0]):
                    run.problems.append(
                        f"{item.path}:{node.line}: {' '.join(args)!r} stands on a line of its own in {name!r}:"
                        " GRUB runs it as a command it does not have, and the kernel never sees it"
                    )
                else:
                    run.command(node, None, item.path, {})

    walk(item.block.body)
    run.env = saved
    title_l = item.title.lower()
    if not found:
        return GrubEntry(
            name,
            item.id,
            f"{item.path}:{item.block.line}",
            None,
            "recovery" in title_l or "rescue" in title_l,
            item.generated,
            False,
            item.path,
            (item.block.line, item.block.end),
        )
    argv, line = found[-1]
    cmdline = "BOOT_IMAGE=" + _loader_cmdline(argv) if argv else ""
    image = argv[0] if argv else ""
    recovery = "(recovery mode)" in title_l or "rescue" in title_l or "rescue" in image or "single" in argv[1:]
    span = (item.block.line, item.block.end)
    return GrubEntry(name, item.id, f"{item.path}:{line}", cmdline, recovery, item.generated, True, item.path, span, line)


def _loader_cmdline(argv: list[str]) -> str:
    """grub_create_loader_cmdline (grub-core/lib/cmdline.c, GRUB 2.06): each argument with ``\\``,
    ``'`` and ``"`` escaped (``\\xHH`` kept), quoted when it holds a space, joined by spaces."""
    out: list[str] = []
    for a in argv:
        buf: list[str] = []
        i = 0
        while i < len(a):
            if a[i] == "\\" and re.match(r"\\x[0-9a-fA-F]{2}", a[i : i + 4]):
                buf.append(a[i : i + 4])
                i += 4
                continue
            if a[i] in "\\'\"":
                buf.append("\\")
            buf.append(a[i])
            i += 1
        s = "".join(buf)
        out.append(f'"{s}"' if " " in a else s)
    return " ".join(out)
