"""The model against the oracle: what the model says a file assigns is what /bin/sh computes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxfix.defaults import grubfile
from mlxfix.defaults.evaluate import Evaluation, Unknown, evaluate, reevaluate
from tests.conftest import corpus_hosts
from tests.oracle import names_in, sh_accepts, sh_values
from tests.strategies import grub_files

if TYPE_CHECKING:
    from collections.abc import Iterator


def check_against_sh(paths: list[Path]) -> dict[str, str | Unknown | None]:
    datas = [p.read_bytes() for p in paths]
    model = evaluate([grubfile.parse(d, str(p)) for d, p in zip(datas, paths, strict=True)])
    names = names_in(datas)
    sh = sh_values(paths, names)
    seen: dict[str, str | Unknown | None] = {}
    for name in names:
        mine = model.value(name)
        seen[name] = mine
        if isinstance(mine, Unknown):
            continue  # the model makes no claim; the edit will refuse
        assert mine == sh[name], f"{name}: model {mine!r}, sh {sh[name]!r}"
    return seen


def test_corpus_file_values_match_sh(corpus_file: Path) -> None:
    check_against_sh([corpus_file])


def test_corpus_hosts_with_dropins_match_sh() -> None:
    hosts = corpus_hosts()
    assert len(hosts) >= 5
    for main, dropins in hosts:
        check_against_sh([main, *dropins])


def test_dropin_override_is_seen() -> None:
    hosts = {m.name: d for m, d in corpus_hosts()}
    values = check_against_sh(
        [Path(p) for p in ["tests/corpus/grub/017-matsuu-isucon12q.grub", *map(str, hosts["017-matsuu-isucon12q.grub"])]]
    )
    assert values["GRUB_CMDLINE_LINUX_DEFAULT"] == "console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295"


def test_known_values_are_most_of_the_corpus(corpus_file: Path) -> None:
    """The model is not vacuous: plain assignments are known."""
    f = grubfile.parse(corpus_file.read_bytes())
    ev = evaluate([f])
    known = [n for n in ev.names() if not isinstance(ev.value(n), Unknown)]
    plain = {i.name for i in f.assignments() if i.top_level and all(p.kind == "literal" for p in i.parts)}
    if ev.poisoned is None:
        assert plain <= set(known)


@given(grub_files())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_files_match_sh(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".grub") as t:
        t.write(data)
        t.flush()
        path = Path(t.name)
        f = grubfile.parse(data)
        assert f.error is None, f.error
        assert sh_accepts(path)
        check_against_sh([path])


@given(grub_files())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_files_parse_iff_sh_parses(data: bytes) -> None:
    """Cut a valid file anywhere: the model reports a syntax error exactly when sh -n does."""
    for cut in {len(data) // 3, len(data) // 2, (2 * len(data)) // 3}:
        piece = data[:cut]
        with tempfile.NamedTemporaryFile(suffix=".grub") as t:
            t.write(piece)
            t.flush()
            model_ok = grubfile.parse(piece).error is None
            assert model_ok == sh_accepts(t.name), piece


def _facts(ev: Evaluation) -> tuple[object, ...]:
    """What an evaluation says, as plain data: every variable's final value and value history."""
    values = {name: ev.value(name) for name in ev.final}
    history = {name: [(b.file, b.statement, str(b.value)) for b in bs] for name, bs in ev.history.items()}
    return values, history, str(ev.poisoned)


WATCH = {"GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LINUX"}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(grub_files(), min_size=1, max_size=3),
    st.data(),
)
def test_resuming_at_a_checkpoint_is_evaluating_from_the_start(datas: list[bytes], data: st.DataObject) -> None:
    """An edited copy re-evaluated from the last checkpoint before its first change gives what a
    full evaluation gives: the shortcut that keeps checking an edit of a 1 MiB file linear."""
    files = [grubfile.parse(d, f"/f{i}") for i, d in enumerate(datas)]
    before = evaluate(files, watch=WATCH)
    which = data.draw(st.integers(0, len(files) - 1))
    old = datas[which]
    at = data.draw(st.integers(0, len(old)))
    cut = data.draw(st.integers(0, min(8, len(old) - at)))
    insert = data.draw(st.sampled_from([b"", b" pci=realloc=off", b"\nGRUB_CMDLINE_LINUX_DEFAULT=x", b"$X", b'"', b"\n"]))
    new_data = old[:at] + insert + old[at + cut :]
    edited = list(files)
    edited[which] = grubfile.reparse(files[which], new_data)
    assert _facts(reevaluate(before, edited)) == _facts(evaluate(edited))


def test_a_big_file_edited_at_its_end_is_rechecked_from_a_checkpoint() -> None:
    lines = b"".join(b'OPT_%d="v%d"\n' % (i, i) for i in range(3000)) + b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    f = grubfile.parse(lines, "/etc/default/grub")
    before = evaluate([f], watch=WATCH)
    edited = grubfile.reparse(f, lines.replace(b'"quiet"', b'"quiet pci=realloc=off"'))
    after = reevaluate(before, [edited])
    assert len(after.fresh) == 1  # only the edited statement was evaluated again
    assert after.value("GRUB_CMDLINE_LINUX_DEFAULT") == "quiet pci=realloc=off"
    assert _facts(after) == _facts(evaluate([edited]))


# grub-mkconfig sources the defaults under `set -e` (issue 18, item 2): a command that fails stops it,
# and then update-grub fails although the dry run planned an edit. /bin/sh -e is the oracle.
SET_E = [
    ('GRUB_CMDLINE_LINUX_DEFAULT = "quiet"', True),  # spaces around '=': "command not found"
    ("false", True),
    ("GRUB_TIMEOUT_STYLE", True),
    ("true && false", True),
    ("if true; then false; fi", True),
    ("f() { false; }; f", True),
    ("if false; then :; fi", False),
    ("false || true", False),
    ("! false", False),
    ("while false; do :; done", False),
    ("f() { false; }; f || :", False),
    ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', False),
]


def _sh_e_stops(text: str) -> bool:
    import subprocess

    with tempfile.NamedTemporaryFile("w", suffix=".grub") as f:
        f.write(text)
        f.flush()
        proc = subprocess.run(
            ["sh", "-e", "-c", '. "$1"; echo reached', "sh", f.name], capture_output=True, text=True, check=False
        )
    return "reached" not in proc.stdout


def test_a_command_that_stops_sh_under_set_e_is_found() -> None:
    for line, stops in SET_E:
        text = f'GRUB_DEFAULT=0\n{line}\nGRUB_CMDLINE_LINUX=""\n'
        assert _sh_e_stops(text) is stops, line  # the oracle agrees with the table
        ev = evaluate([grubfile.parse(text.encode(), "/etc/default/grub")])
        if stops:
            assert ev.stops is not None, line
            assert "set -e" in ev.stops.reason or "stop" in ev.stops.reason, line
        else:
            assert ev.stops is None, (line, ev.stops)


def test_a_conditional_self_append_keeps_the_earlier_binding() -> None:
    main = grubfile.parse(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', "/etc/default/grub")
    dropin = grubfile.parse(
        b'if ! echo "$GRUB_CMDLINE_LINUX_DEFAULT" | grep -q splash; then\n'
        b'    GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"\nfi\n'
        b'[ -e /x ] && GRUB_CMDLINE_LINUX_DEFAULT="nomodeset ${GRUB_CMDLINE_LINUX_DEFAULT}"\n',
        "/etc/default/grub.d/kali-themes.cfg",
    )
    v = evaluate([main, dropin]).value("GRUB_CMDLINE_LINUX_DEFAULT")
    assert isinstance(v, Unknown)  # still only sh knows it
    assert v.added == ("nomodeset ",)
    assert v.keeps is not None
    inner = v.keeps.value
    assert isinstance(inner, Unknown)
    assert inner.added == (" splash",)
    assert inner.keeps is not None
    assert inner.keeps.assign is not None
    assert inner.keeps.file == 0


def test_any_other_conditional_assignment_keeps_nothing() -> None:
    for body in (b'X="$X $Y"', b"X=quiet", b'X="$X"', b'X="$X a" true', b'X="${X:-a} b"'):
        f = grubfile.parse(b'X="quiet"\nif [ -e /x ]; then ' + body + b"; fi\n", "/etc/default/grub")
        v = evaluate([f]).value("X")
        assert isinstance(v, Unknown), body
        assert v.keeps is None, body


# -- a guarded `.` (issue 18, item 4): `if test -f P; then . P; fi` ----------------------------------

_GUARDED_MAIN = (
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n\nif test -f {p}\nthen\n  . {p}\nfi\n'  # 080-hoskeri
)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory the oracle's sh (which runs as nobody) can read: pytest's own is root's alone."""
    with tempfile.TemporaryDirectory(prefix="mlxfix-guarded-") as work:
        os.chmod(work, 0o755)
        yield Path(work)


def _guarded(tmp_path: Path, local: str | None, main: str = _GUARDED_MAIN) -> tuple[Evaluation, dict[str, str | None]]:
    """The model, told what the host holds at P, and /bin/sh running the same files for real."""
    p = tmp_path / "grub.local"
    grub = tmp_path / "grub"
    grub.write_text(main.format(p=p))
    if local is not None:
        p.write_text(local)
    f = grubfile.parse(grub.read_bytes(), str(grub))
    sourced = {str(p): grubfile.parse(p.read_bytes(), str(p)) if local is not None else None}
    names = ["GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LINUX"]
    return evaluate([f], sourced=sourced), sh_values([grub], names)


def test_a_guarded_dot_of_a_file_the_host_lacks_never_runs(tmp_path: Path) -> None:
    model, sh = _guarded(tmp_path, None)
    assert model.stops is None
    assert model.value("GRUB_CMDLINE_LINUX_DEFAULT") == sh["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet splash"


def test_a_guarded_dot_of_a_file_that_leaves_the_command_line_alone_keeps_it_known(tmp_path: Path) -> None:
    model, sh = _guarded(tmp_path, 'GRUB_TIMEOUT=3\nGRUB_GFXMODE="1024x768"\n')
    assert model.stops is None
    assert model.value("GRUB_CMDLINE_LINUX_DEFAULT") == sh["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet splash"
    assert isinstance(model.value("GRUB_TIMEOUT"), Unknown)  # set in the sourced file: never guessed


def test_a_guarded_dot_of_a_file_that_appends_is_an_append_over_the_known_value(tmp_path: Path) -> None:
    model, sh = _guarded(tmp_path, 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT nomodeset"\n')
    assert sh["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet splash nomodeset"
    value = model.value("GRUB_CMDLINE_LINUX_DEFAULT")
    assert isinstance(value, Unknown)
    b = model.binding("GRUB_CMDLINE_LINUX_DEFAULT")
    assert b is not None
    assert isinstance(b.value, Unknown)
    assert b.value.added == ("nomodeset",) or "nomodeset" in " ".join(b.value.added)


@pytest.mark.parametrize(
    ("local", "why"),
    [
        ("exit 0\n", "exit"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="x"; false\n', "false"),
        (". /etc/other.cfg\n", ". "),
    ],
)
def test_a_guarded_dot_of_a_file_that_may_stop_sh_still_stops_it_and_names_the_file(tmp_path: Path, local: str, why: str) -> None:
    model, _ = _guarded(tmp_path, local)
    assert model.stops is not None
    assert why in model.stops.reason
    assert f"in {tmp_path / 'grub.local'}, which this block sources" in model.stops.reason


def test_a_dot_the_model_was_not_told_about_is_unknown_code_as_before(tmp_path: Path) -> None:
    p = tmp_path / "grub.local"
    f = grubfile.parse(_GUARDED_MAIN.format(p=p).encode(), str(tmp_path / "grub"))
    model = evaluate([f])
    assert model.stops is not None
    assert "sh may stop at . on" in model.stops.reason


@pytest.mark.parametrize(
    "main",
    [
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nif test -f {p}; then . {p}; else GRUB_TIMEOUT=1; fi\n',  # an else
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nif test -f /other; then . {p}; fi\n',  # another file tested
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nif test -d {p}; then . {p}; fi\n',  # not a file test
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nif ! test -f {p}; then . {p}; fi\n',  # negated
    ],
)
def test_only_the_exact_guard_counts(tmp_path: Path, main: str) -> None:
    model, _ = _guarded(tmp_path, None, main)
    assert model.stops is not None  # the . may run: unknown code, as any other
