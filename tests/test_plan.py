"""The plan's diff: GNU patch, applied to the old bytes, must give the new ones; a one-line edit of
a big file stays cheap; the hunks look as difflib would draw them where there is one way to draw them."""

from __future__ import annotations

import difflib
import subprocess
import time
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from mlxfix.plan import unified_diff

if TYPE_CHECKING:
    from pathlib import Path

LINES = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "GRUB_TIMEOUT=5\n", "\n", "# x\n"]), max_size=40)


def _patched(tmp: Path, before: bytes, diff: str) -> bytes:
    target = tmp / "grub"
    target.write_bytes(before)
    if diff:
        subprocess.run(["patch", "-s", "-p1", "-d", str(tmp)], input=diff.encode(), check=True, timeout=30)
    return target.read_bytes()


@given(LINES, st.data(), st.booleans(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_gnu_patch_turns_the_old_bytes_into_the_new(
    tmp_path_factory: object, a: list[str], data: st.DataObject, cut_a: bool, cut_b: bool
) -> None:
    b = list(a)
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(b)))
        kind = data.draw(st.integers(0, 2))
        if kind == 0:
            b.insert(pos, data.draw(st.sampled_from(["pci=realloc=off\n", "a\n", "z\n"])))
        elif b:
            b[min(pos, len(b) - 1) : min(pos, len(b) - 1) + (1 if kind == 1 else 0)] = [] if kind == 1 else ["y\n"]
    before, after = "".join(a).encode(), "".join(b).encode()
    before = before.rstrip(b"\n") if cut_a else before
    after = after.rstrip(b"\n") if cut_b else after
    tmp = tmp_path_factory.mktemp("patch")  # type: ignore[attr-defined]
    assert _patched(tmp, before, unified_diff("/grub", before, after)) == after


def test_one_edit_shows_as_difflib_would_show_it() -> None:
    before = b"".join(b"# line %d\n" % i for i in range(50)) + b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n' + b"GRUB_TIMEOUT=5\n" * 3
    after = before.replace(b'"quiet"', b'"quiet pci=realloc=off"')
    a, b = before.decode().splitlines(True), after.decode().splitlines(True)
    assert unified_diff("/etc/default/grub", before, after) == "".join(
        difflib.unified_diff(a, b, "a/etc/default/grub", "b/etc/default/grub")
    )
    assert unified_diff("/etc/default/grub", before, before) == ""


def test_a_one_line_edit_of_a_big_file_is_cheap(tmp_path: Path) -> None:
    before = b"".join(b"GRUB_X_%d=%d\n" % (i, i % 7) for i in range(60_000))  # ~1 MiB of similar lines
    after = before.replace(b"GRUB_X_30000=5\n", b'GRUB_X_30000=5\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\n')
    started = time.perf_counter()
    diff = unified_diff("/grub", before, after)
    assert time.perf_counter() - started < 0.5  # difflib over the whole file: seconds
    added = [ln for ln in diff.splitlines()[2:] if ln.startswith(("+", "-"))]
    assert added == ['+GRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"']
    assert _patched(tmp_path, before, diff) == after
