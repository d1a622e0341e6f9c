"""Hypothesis strategies: grub defaults files written the many ways people write shell, and kernel
command lines. Generated files are valid sh by construction (the oracle tests check that too)."""

from __future__ import annotations

from hypothesis import strategies as st

NAMES = ["GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LINUX", "GRUB_TIMEOUT", "GRUB_DISTRIBUTOR", "EXTRA"]
TARGET = "GRUB_CMDLINE_LINUX_DEFAULT"

kernel_words = st.sampled_from(
    [
        "quiet",
        "splash",
        "intel_iommu=on",
        "iommu=pt",
        "pci=noaer",
        "pci=realloc",
        "pci=realloc=on",
        "pci=realloc=off",
        "pci=noaer,realloc=on",
        "pci=realloc=0",
        "console=ttyS0,115200",
        "console=tty0",
        "nomodeset",
        "vfio-pci.ids=10de:13c2,10de:0fbb",
        'acpi_osi="!Windows 2012"',
        "loglevel=3",
        "--",
        "single",
    ]
)

command_lines = st.lists(kernel_words, max_size=6).flatmap(
    lambda words: st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=len(words) + 1, max_size=len(words) + 1).map(
        lambda seps: (
            seps[0].lstrip() + "".join(w + s for w, s in zip(words, seps[1:], strict=True)).rstrip(" \t") if words else ""
        )
    )
)


def _dq_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


_EXPANSIONS = st.sampled_from(
    [
        "$EXTRA",
        "${EXTRA}",
        "${EXTRA:-dflt}",
        "${EXTRA-d f}",
        "${EXTRA:+[$EXTRA]}",
        "${EXTRA+set}",
        "${#EXTRA}",
        "${UNSET_X:-fallback}",
        "${UNSET_X:+no}",
        "$GRUB_CMDLINE_LINUX_DEFAULT",
        "${GRUB_CMDLINE_LINUX}",
        "$1",
        "$(echo sub)",
    ]
)
# Characters that are literal inside double quotes, and the escapes double quotes know.
_DQ_PLAIN = st.sampled_from([*list("abz AZ09=,.'#*!~:@%{}[]()|;&<>?^-_/\t"), "\n", "é"])
_DQ_PIECE = st.one_of(
    st.lists(_DQ_PLAIN, min_size=1, max_size=6).map("".join),
    st.sampled_from(["\\\\", '\\"', "\\$", "\\`", "\\q", "\\ ", "\\\n", "$ "]),
    _EXPANSIONS,
    kernel_words.map(_dq_escape),
)
_BARE_PLAIN = st.sampled_from([*list("abz09=,.:@%{}*?[]!^-_/+#"), "\\ ", "\\'", '\\"', "\\\\", "\\$", "\\\n", "\\x", "\\#"])
_SQ_PLAIN = st.sampled_from([*list('abz "$`\\#*{}=,.;&|<>()'), "\n", "\t"])


@st.composite
def dq_word(draw: st.DrawFn) -> str:
    """A double-quoted value: any characters, every escape, continuations, expansions."""
    pieces = draw(st.lists(_DQ_PIECE, max_size=6))
    body = "".join(pieces)
    if body.endswith("$"):  # "$" right before the closing quote is literal: keep it
        body += " "
    return '"' + body + '"'


@st.composite
def sq_word(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        words = draw(st.lists(kernel_words.filter(lambda w: "'" not in w), max_size=4))
        return "'" + " ".join(words) + "'"
    return "'" + "".join(draw(st.lists(_SQ_PLAIN, max_size=8))) + "'"


@st.composite
def bare_word(draw: st.DrawFn) -> str:
    first = draw(st.sampled_from(["", "", "~", "a~", "~/x", "x:~/y"]))
    pieces = draw(st.lists(st.one_of(_BARE_PLAIN, _EXPANSIONS), max_size=5))
    word = first + "".join(pieces)
    if word.startswith("#"):
        word = "x" + word
    return word


@st.composite
def mixed_word(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(dq_word(), sq_word(), bare_word()), min_size=2, max_size=3))
    return "".join(parts)


values = st.one_of(dq_word(), sq_word(), bare_word(), mixed_word())


@st.composite
def assignment_line(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    indent = draw(st.sampled_from(["", "", "  ", "\t"]))
    export = draw(st.sampled_from(["", "", "export "]))
    value = draw(values)
    comment = draw(st.sampled_from(["", "", " # a comment", '  # "stray quote', " #x\\"]))
    return f"{indent}{export}{name}={value}{comment}"


@st.composite
def other_line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    name = draw(st.sampled_from(NAMES))
    value = draw(values)
    if kind == 0:
        return draw(st.sampled_from(["", "   ", "#", "# comment with 'quote", '#GRUB_CMDLINE_LINUX_DEFAULT="quiet"']))
    if kind == 1:
        return f"if [ -e /nonexistent ]; then\n  {name}={value}\nfi"
    if kind == 2:
        return f"f() {{\n  {name}={value}\n}}"
    if kind == 3:
        return f"GRUB_DISTRIBUTOR=`echo Debian`; {name}={value}"
    if kind == 4:
        return 'GRUB_DISTRIBUTOR="$(echo "a b" | cat)"'
    if kind == 5:
        return "export GRUB_TIMEOUT"
    if kind == 6:
        return f"A=1 {name}={value}"
    if kind == 7:
        return f'[ -n "$EXTRA" ] && {name}={value}'
    if kind == 8:
        return f"case x in x) {name}={value} ;; esac"
    return ": ${EXTRA:=fallback}"


@st.composite
def grub_files(draw: st.DrawFn) -> bytes:
    """A whole file: lines of assignments and other shell, LF or CRLF-free, with or without a final
    newline."""
    lines = draw(st.lists(st.one_of(assignment_line(), assignment_line(), other_line()), max_size=8))
    text = "\n".join(lines)
    if lines and draw(st.booleans()):
        text += "\n"
    return text.encode()
