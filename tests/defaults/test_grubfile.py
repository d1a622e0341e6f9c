"""The lossless model: every byte survives parse and render; the model describes every assignment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxfix.defaults import grubfile
from tests.conftest import CORPUS
from tests.strategies import grub_files

if TYPE_CHECKING:
    from pathlib import Path


def assert_tiles(f: grubfile.GrubFile) -> None:
    pos = 0
    for s in f.statements:
        assert s.start == pos
        assert s.end > s.start
        pos = s.end
    assert pos == len(f.data)


def test_corpus_file_round_trips(corpus_file: Path) -> None:
    data = corpus_file.read_bytes()
    f = grubfile.parse(data, str(corpus_file))
    assert f.render() == data
    assert_tiles(f)
    assert f.error is None  # every corpus file is valid sh (sh -n accepts them all)


def test_crlf_and_unquoted_variants_round_trip(corpus_file: Path) -> None:
    data = corpus_file.read_bytes()
    crlf = data.replace(b"\n", b"\r\n")
    unquoted = data.replace(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', b"GRUB_CMDLINE_LINUX_DEFAULT=quiet")
    for variant in (crlf, unquoted, data.rstrip(b"\n"), data + b"   \t", b"\t" + data):
        f = grubfile.parse(variant)
        assert f.render() == variant
        assert_tiles(f)


@given(st.binary(max_size=300))
@settings(deadline=None)
def test_any_bytes_round_trip(data: bytes) -> None:
    f = grubfile.parse(data)
    assert f.render() == data
    if data:
        assert_tiles(f)


@given(grub_files(), st.data())
def test_generated_and_truncated_files_round_trip(data: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(data)))
    for variant in (data, data[:cut], data.replace(b"\n", b"\r\n")):
        f = grubfile.parse(variant)
        assert f.render() == variant


def _same_parse(a: grubfile.GrubFile, b: grubfile.GrubFile) -> None:
    assert a.data == b.data
    assert [(s.start, s.end, s.kind, s.unit.command, s.unit.separator) for s in a.statements] == [
        (s.start, s.end, s.kind, s.unit.command, s.unit.separator) for s in b.statements
    ]
    assert (a.error.pos, a.error.message) == (b.error.pos, b.error.message) if a.error and b.error else a.error is b.error is None


_CORPUS_DATA = sorted(p.read_bytes() for p in CORPUS.iterdir() if p.suffix in (".grub", ".cfg"))
_SNIPPETS = [
    b'"',
    b"'",
    b"\\",
    b"\n",
    b" pci=realloc=off",
    b"if x; then\n",
    b"fi\n",
    b"<<E\n",
    b"E\n",
    b"#",
    b"$(",
    b")",
    b"&&\n",
]


@given(st.sampled_from(_CORPUS_DATA), st.data())
@settings(deadline=None, max_examples=300)
def test_reparse_equals_a_full_parse(data: bytes, draw: st.DataObject) -> None:
    """Edits of every kind at every place: the incremental parse is the full parse."""
    new = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 3))):
        pos = draw.draw(st.integers(0, len(new)))
        if draw.draw(st.booleans()):
            new[pos:pos] = draw.draw(st.sampled_from(_SNIPPETS) | st.binary(max_size=4))
        else:
            del new[pos : pos + draw.draw(st.integers(1, 30))]
    _same_parse(grubfile.reparse(grubfile.parse(data), bytes(new)), grubfile.parse(bytes(new)))


@given(grub_files(), grub_files())
@settings(deadline=None)
def test_reparse_of_any_two_files(a: bytes, b: bytes) -> None:
    _same_parse(grubfile.reparse(grubfile.parse(a), b), grubfile.parse(b))
    _same_parse(grubfile.reparse(grubfile.parse(a), a + b), grubfile.parse(a + b))


def test_non_utf8_bytes_survive() -> None:
    data = b'# caf\xe9 \xff\xfe\nGRUB_CMDLINE_LINUX_DEFAULT="quiet \xe9t\xe9"\n'
    f = grubfile.parse(data)
    assert f.render() == data
    [info] = f.assignments("GRUB_CMDLINE_LINUX_DEFAULT")
    assert info.parts[0].text == "quiet \xe9t\xe9"  # latin-1: one character per byte


def test_assignment_facts() -> None:
    data = (
        b"# header\n"
        b'GRUB_CMDLINE_LINUX_DEFAULT="quiet $EXTRA"   # trailing\n'
        b"export GRUB_CMDLINE_LINUX='a b'\n"
        b"if [ -e /x ]; then\n  GRUB_CMDLINE_LINUX_DEFAULT=nested\nfi\n"
        b'f() { GRUB_CMDLINE_LINUX_DEFAULT="in function"; }\n'
        b"A=1; B=2\n"
    )
    f = grubfile.parse(data)
    infos = f.assignments()
    assert [(i.name, i.line, i.context) for i in infos] == [
        ("GRUB_CMDLINE_LINUX_DEFAULT", 2, "top"),
        ("GRUB_CMDLINE_LINUX", 3, "top"),
        ("GRUB_CMDLINE_LINUX_DEFAULT", 5, "if"),
        ("GRUB_CMDLINE_LINUX_DEFAULT", 7, "function f"),
        ("A", 8, "top"),
        ("B", 8, "top"),
    ]
    first = infos[0]
    assert [(p.kind, p.text) for p in first.parts] == [("literal", "quiet "), ("expansion", "$EXTRA")]
    assert infos[1].exported
    assert infos[1].parts[0].quote == "'"
    assert [s.kind for s in f.statements] == [
        "comment",
        "assignment",
        "assignment",
        "shell",
        "shell",
        "assignment",
        "assignment",
    ]


def test_comment_ending_in_backslash_does_not_continue() -> None:
    data = (CORPUS / "045-bachoseven-sysdots.grub").read_bytes()
    f = grubfile.parse(data)
    names = {i.name for i in f.assignments()}
    assert "GRUB_CMDLINE_LINUX_DEFAULT" in names  # the assignment after the "\" comment line is seen


def test_syntax_error_is_located_and_kept() -> None:
    data = b'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet\nGRUB_X=1\n'
    f = grubfile.parse(data)
    assert f.render() == data
    assert f.error is not None
    assert f.position(f.error.pos) == (2, 28)
    assert "unterminated double quote" in f.error.message
    assert f.statements[-1].kind == "invalid"


def test_newline_style() -> None:
    assert grubfile.parse(b"A=1\r\nB=2\r\n").newline == "\r\n"
    assert grubfile.parse(b"A=1\nB=2\n").newline == "\n"


@pytest.mark.parametrize(
    "text",
    [
        # after a syntax error, a comment line of a megabyte of markers (each searched back to the start: minutes)
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet\n(\n# ' + "{{" * 400_000 + "\n",
        # a parsed assignment with many words and a trailing comment of markers (every word per marker)
        "X=1; echo" + " w" * 20_000 + " # " + "{{" * 200_000 + "\n",
    ],
    ids=["after-syntax-error", "parsed"],
)
def test_the_template_scan_is_linear_on_hostile_lines(text: str) -> None:
    import time

    f = grubfile.parse(text.encode(), "/etc/default/grub")
    started = time.perf_counter()
    assert f.template_marker() is None  # markers only in comments: sh never reads them
    assert time.perf_counter() - started < 2.0
