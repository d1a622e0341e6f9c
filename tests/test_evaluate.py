"""The model against the oracle: what the model says a file assigns is what /bin/sh computes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from mlxfix import grubfile
from mlxfix.evaluate import Unknown, evaluate
from tests.conftest import corpus_hosts
from tests.oracle import names_in, sh_accepts, sh_values
from tests.strategies import grub_files


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
