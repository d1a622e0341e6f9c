"""The shell parser's fast paths for plain lines and plain simple commands build exactly the nodes of
the full recursive descent: on every corpus file, on generated grub files, and on lines made to sit on the
edge of what the fast path accepts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxfix.defaults import shell
from tests.strategies import grub_files

if TYPE_CHECKING:
    from pathlib import Path


class _DescentOnly(shell._Parser):
    fast = False


def both(text: str) -> tuple[list[shell.Unit], list[shell.Unit]]:
    return shell.parse_units(text), _DescentOnly(text).units()


def _same(fast: list[shell.Unit], slow: list[shell.Unit]) -> None:
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert (a.start, a.end, a.command, a.separator) == (b.start, b.end, b.command, b.separator)
        assert (a.error is None) == (b.error is None)
        if a.error is not None and b.error is not None:
            assert (a.error.pos, a.error.message) == (b.error.pos, b.error.message)


def test_corpus_files_parse_the_same_either_way(corpus_file: Path) -> None:
    text = corpus_file.read_bytes().decode("latin-1")
    _same(*both(text))


def test_the_fast_path_carries_most_assignments_of_real_files() -> None:
    from tests.conftest import corpus_files

    fast = total = 0
    for path in corpus_files():
        text = path.read_bytes().decode("latin-1")
        for u in shell.parse_units(text):
            if u.command is not None:
                total += 1
                fast += shell._FAST_ASSIGN.match(text, u.start) is not None
    assert fast > total / 2, (fast, total)


@given(grub_files())
def test_generated_files_parse_the_same_either_way(data: bytes) -> None:
    _same(*both(data.decode("latin-1")))


EDGES = [
    "A=1\n", "A=\n", "A=", "A= # c\n", "A=#c\n", "A=b#c\n", 'A="x"#c\n', "A='x'  \n", "  A=1\t# c\n",
    'A=""\n', "A=''\n", 'A="a\nb"\n', "A='a\nb'\n", 'A=a"b"\'c\'d\n', "A=1;\n", "A=1 B=2\n", "A=1 cmd\n",
    "A=$B\n", 'A="$B"\n', "A=a\\ b\n", "\\\nA=1\n", "A=1 \\\n# c\n", "A=1 &\n", "A=1|x\n", "A=1>f\n", "A=(x)\n",
    "A=\r\n", "A=1\rB=2\n", "if=1\n", "A=1   ", "A=1 #", "A=`x`\n", "1A=2\n", "A=1 <<E\nE\n", 'A="x\n',
]  # fmt: skip


@pytest.mark.parametrize("text", EDGES)
def test_edges_of_the_fast_path(text: str) -> None:
    _same(*both(text))
    _same(*both("B=0\n" + text + "\nC=2\n"))


@given(st.lists(st.sampled_from(["A", "=", "1", " ", "\t", "#", "'", '"', "\n", "$", "\\", ";", "x", "\r"]), max_size=30))
def test_random_token_soup_parses_the_same_either_way(tokens: list[str]) -> None:
    _same(*both("".join(tokens)))


@pytest.mark.parametrize(
    "text",
    [
        "A=" + "a" * 20_000 + "$",  # a long value the fast path finally rejects: no backtracking
        "A=" + "a'b'" * 5_000 + "`",
        "A=" + '"x"' * 5_000 + " b\n",
        "A=1 " * 5_000 + "\n",
        "#" * 100_000 + "\n" + "A=1\n" * 10_000,
    ],
)
def test_hostile_lines_parse_in_linear_time(text: str) -> None:
    import time

    started = time.perf_counter()
    fast, slow = both(text)
    assert time.perf_counter() - started < 2
    _same(fast, slow)
