"""The edit, checked by the oracle: after it, /bin/sh sees the parameter exactly once in
GRUB_CMDLINE_LINUX_DEFAULT, every other variable as before, and every other byte is unchanged."""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from mlxfix import cmdline
from mlxfix.cmdline import Param
from mlxfix.defaults import grubfile
from mlxfix.defaults.grubedit import GrubEdit, Unknowable, plan_grub_edit
from mlxfix.errors import Refused
from tests.conftest import CORPUS, corpus_files, corpus_hosts
from tests.oracle import names_in, sh_values
from tests.strategies import grub_files

P = Param.parse("pci=realloc=off")
CLD = "GRUB_CMDLINE_LINUX_DEFAULT"

# Corpus files mlxfix must refuse, and the reason it gives.
REFUSED = {
    "008-holoiso-postcopy.grub": "source on line 1 (it runs shell code that is not in this file",
    "012-kaisenlinux-grub2.grub": "package template",
    "025-parrotsec-grub2.grub": "package template",
    "033-4ndr0666-dotfiles.grub": "source on line 69 (it runs shell code that is not in this file",
    "035-4ndr0666-dotfiles.cfg": "assigned inside function add_kernel_param",
    "056-correabuscar-etc.grub": "source on line 8 (it runs shell code that is not in this file",
}


def edit_paths(paths: list[Path], param: Param = P) -> GrubEdit:
    return plan_grub_edit([grubfile.parse(p.read_bytes(), str(p)) for p in paths], param)


def check_with_sh(paths: list[Path], edit: GrubEdit, param: Param = P) -> None:
    """Write the edited files beside the originals and compare what sh computes."""
    with tempfile.TemporaryDirectory() as tmp:
        new_paths = []
        for i, p in enumerate(paths):
            changed = next((fe for fe in edit.files if fe.source == i), None)
            target = Path(tmp) / f"{i}-{p.name}"
            target.write_bytes(changed.after if changed else p.read_bytes())
            new_paths.append(target)
        datas = [p.read_bytes() for p in paths + new_paths]
        names = names_in(datas)
        before, after = sh_values(paths, names), sh_values(new_paths, names)
    for name in names:
        if name != CLD:
            assert before[name] == after[name], f"{name} changed"
    value = after[CLD]
    assert value is not None
    assert value == edit.after
    # When GRUB_CMDLINE_LINUX already gives the normal entries the parameter, nothing is added: the
    # line grub-mkconfig writes (GRUB_CMDLINE_LINUX, then GRUB_CMDLINE_LINUX_DEFAULT) is what must hold it.
    held = any(n.startswith("GRUB_CMDLINE_LINUX already has") for n in edit.notes)
    line, line_before = (
        (f"{after['GRUB_CMDLINE_LINUX']} {value}", f"{before['GRUB_CMDLINE_LINUX']} {before[CLD] or ''}")
        if held
        else (value, before[CLD])
    )
    assert cmdline.contains(line, param)
    assert cmdline.ensure(line, param) == ()  # holds once, no conflict, as the kernel reads it
    words = [t.text for t in cmdline.kernel_params(cmdline.split(line))]
    assert words.count(param.text) <= 1
    assert line_before is None or cmdline.ensure(line_before, param) == () or edit.changed


def changed_lines(before: bytes, after: bytes) -> list[str]:
    diff = difflib.unified_diff(before.decode("latin-1").splitlines(True), after.decode("latin-1").splitlines(True), n=0)
    return [ln for ln in diff if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]


def test_corpus_file_is_edited_right_or_refused(corpus_file: Path) -> None:
    if corpus_file.name in REFUSED:
        with pytest.raises(Refused) as exc:
            edit_paths([corpus_file])
        err = exc.value
        assert REFUSED[corpus_file.name] in str(err)
        assert err.path == str(corpus_file)
        assert err.line is not None
        assert "\n" not in str(err)
        return
    edit = edit_paths([corpus_file])
    assert edit.changed
    check_with_sh([corpus_file], edit)
    # One line changes (or one is added): nothing else in the file moves.
    lines = changed_lines(corpus_file.read_bytes(), edit.files[0].after)
    minus = [ln for ln in lines if ln.startswith("-")]
    plus = [ln for ln in lines if ln.startswith("+")]
    assert len(plus) == 1 or (edit.action == "edited" and len(plus) == len(minus))
    assert P.text in plus[-1]
    # Applying again changes nothing.
    again = plan_grub_edit([grubfile.parse(edit.files[0].after, str(corpus_file))], P)
    assert not again.changed


@pytest.mark.parametrize(("main", "dropins"), corpus_hosts(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_corpus_hosts_with_dropins(main: Path, dropins: list[Path]) -> None:
    paths = [main, *dropins]
    names = {p.name for p in paths}
    if names & set(REFUSED):
        with pytest.raises(Refused):
            edit_paths(paths)
        return
    edit = edit_paths(paths)
    check_with_sh(paths, edit)


def test_cloud_image_dropin_is_the_file_edited() -> None:
    main = CORPUS / "017-matsuu-isucon12q.grub"
    dropins = [CORPUS / "018-matsuu-isucon12q.cfg", CORPUS / "019-matsuu-isucon12q.cfg"]
    edit = edit_paths([main, *dropins])
    assert [fe.path for fe in edit.files] == [str(dropins[1])]
    assert edit.path == str(dropins[1])
    assert any("overrides" in n for n in edit.notes)
    check_with_sh([main, *dropins], edit)


def plan(text: str, param: Param = P) -> GrubEdit:
    return plan_grub_edit([grubfile.parse(text.encode("latin-1"))], param)


def after(text: str, param: Param = P) -> str:
    edit = plan(text, param)
    return edit.files[0].after.decode("latin-1") if edit.changed else text


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n'),
        ("GRUB_CMDLINE_LINUX_DEFAULT='quiet'\n", "GRUB_CMDLINE_LINUX_DEFAULT='quiet pci=realloc=off'\n"),
        ("GRUB_CMDLINE_LINUX_DEFAULT=quiet\n", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n'),
        ("GRUB_CMDLINE_LINUX_DEFAULT=\n", "GRUB_CMDLINE_LINUX_DEFAULT=pci=realloc=off\n"),
        ('GRUB_CMDLINE_LINUX_DEFAULT=""\n', 'GRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\n'),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\r\n', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\r\n'),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"'),
        (
            '\texport GRUB_CMDLINE_LINUX_DEFAULT="quiet"  # keep me\n',
            '\texport GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"  # keep me\n',
        ),
        ('GRUB_CMDLINE_LINUX_DEFAULT=" quiet  splash "\n', 'GRUB_CMDLINE_LINUX_DEFAULT=" quiet  splash pci=realloc=off "\n'),
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=noaer,realloc=on splash"\n',
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=noaer splash pci=realloc=off"\n',
        ),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc"\n', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n'),
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet \\\n  splash"\n',
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet \\\n  splash pci=realloc=off"\n',
        ),
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT nomodeset"\n',
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT nomodeset pci=realloc=off"\n',
        ),
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc"\nGRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} nomodeset"\n',
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} nomodeset pci=realloc=off"\n',
        ),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet -- single"\n', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off -- single"\n'),
        ('A=1; GRUB_CMDLINE_LINUX_DEFAULT="quiet"; B=2\n', 'A=1; GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"; B=2\n'),
        ('X="a b"\nGRUB_CMDLINE_LINUX_DEFAULT=$X\n', 'X="a b"\nGRUB_CMDLINE_LINUX_DEFAULT="$X pci=realloc=off"\n'),
        ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"''\n", "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet pci=realloc=off\"''\n"),
        # A conflict in the first assignment of a self-append: the space after $VAR stays.
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=on"\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT quiet"\n',
            'GRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT quiet pci=realloc=off"\n',
        ),
        # CRLF: the "\r" sh sees at the end of the value stays last, the line keeps its ending.
        ("GRUB_CMDLINE_LINUX_DEFAULT=quiet\r\n", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\r\n'),
        ("GRUB_CMDLINE_LINUX_DEFAULT=\r\n", "GRUB_CMDLINE_LINUX_DEFAULT=pci=realloc=off\r\n"),
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\r\nGRUB_TIMEOUT=5\r\n',
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\r\nGRUB_TIMEOUT=5\r\n',
        ),
        # A whole pci token in quotes keeps its closing quote; an unquoted list keeps working.
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet \\"pci=noaer,realloc=on\\""\n',
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet \\"pci=noaer\\" pci=realloc=off"\n',
        ),
        ("GRUB_CMDLINE_LINUX_DEFAULT=pci=,realloc\n", "GRUB_CMDLINE_LINUX_DEFAULT=pci=realloc=off\n"),
        ("GRUB_CMDLINE_LINUX_DEFAULT=pci=noaer,realloc\n", 'GRUB_CMDLINE_LINUX_DEFAULT="pci=noaer pci=realloc=off"\n'),
        # An unclosed kernel quote would swallow what follows it: the parameter goes before it.
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet foo=\\"bar"\n', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off foo=\\"bar"\n'),
    ],
)
def test_edit_keeps_style(before: str, expected: str, tmp_path: Path) -> None:
    assert after(before) == expected
    _check_text_with_sh(before, tmp_path)


def _check_text_with_sh(text: str, tmp_path: Path) -> None:
    source = tmp_path / "grub"
    source.write_bytes(text.encode("latin-1"))
    check_with_sh([source], edit_paths([source]))


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (
            'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="root=x"\nGRUB_X=1\n',
            'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="root=x"\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\nGRUB_X=1\n',
        ),
        ("GRUB_TIMEOUT=5", 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\n'),
        (
            '#GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
            '#GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\n',
        ),
        ("GRUB_TIMEOUT=5\r\n", 'GRUB_TIMEOUT=5\r\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\r\n'),
        ("", 'GRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\n'),
        # No final newline in a CRLF file: mended with "\n", or the last value would gain a "\r".
        (
            "GRUB_TIMEOUT=5\r\nGRUB_DEFAULT=0",
            'GRUB_TIMEOUT=5\r\nGRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\r\n',
        ),
        # Read later by another variable: after the anchor would change it, the end of the file does not.
        (
            'GRUB_CMDLINE_LINUX=""\nGRUB_X="$GRUB_CMDLINE_LINUX_DEFAULT"\n',
            'GRUB_CMDLINE_LINUX=""\nGRUB_X="$GRUB_CMDLINE_LINUX_DEFAULT"\nGRUB_CMDLINE_LINUX_DEFAULT="pci=realloc=off"\n',
        ),
    ],
)
def test_missing_variable_is_added(before: str, expected: str, tmp_path: Path) -> None:
    edit = plan(before)
    assert edit.action == "added"
    assert after(before) == expected
    _check_text_with_sh(before, tmp_path)


def test_already_present_changes_nothing() -> None:
    for text in ('GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"\n', 'GRUB_CMDLINE_LINUX_DEFAULT="pci=noaer,realloc=off"\n'):
        edit = plan(text)
        assert not edit.changed
        assert edit.action == "present"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('if true; then\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nfi\n', 2, "inside an if block"),
        ("f() { GRUB_CMDLINE_LINUX_DEFAULT=x; }\nf\n", 1, "inside function f"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet $UNDEFINED"\n', 1, "$UNDEFINED, which none of these files sets"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$(cat /etc/cmdline)"\n', 1, "the output of a command"),
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n. /etc/default/extra\n',
            2,
            ". on line 2 (it runs shell code that is not in this file",
        ),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\neval "$X"\n', 2, "'eval' runs shell code"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet\nGRUB_X=1\n', 1, "sh cannot parse this file (unterminated double quote)"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="@DEFAULT_CMDLINE@"\n', 1, "package template"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n[ -e /x ] && GRUB_CMDLINE_LINUX_DEFAULT=""\n', 2, "inside an && / || list"),
        ("GRUB_CMDLINE_LINUX_DEFAULT=~/x\n", 1, "home directory"),
        ("GRUB_X=1\x00\n", 1, "binary"),
        ('return 0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "may stop at the 'return'"),
        ("unset GRUB_CMDLINE_LINUX_DEFAULT\n", 1, "changed by the command on line 1"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n\x89PNG\x1a\n\x02\x03\xff\xfe\n', 2, "binary"),
        ("GRUB_DEFAULT=0\nX=a\\", 2, "ends in a backslash"),
        ('X="pci=realloc=on"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet $X"\n', 1, "would also change X"),
        ('Y=\nGRUB_CMDLINE_LINUX_DEFAULT="${Y:-pci=realloc}"\n', 2, "comes from an expansion"),
        # Assignments that are not plain ones, and lines sh stops at (grub-mkconfig would never write grub.cfg):
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nexport "GRUB_CMDLINE_LINUX_DEFAULT=splash"\n', 2, "quoted or computed operand"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nV=X; export $V=splash\n', 2, "quoted or computed operand"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\ncommand export GRUB_CMDLINE_LINUX_DEFAULT=splash\n', 2, "changed by the command"),
        ("alias e=export\ne GRUB_CMDLINE_LINUX_DEFAULT=splash\n", 2, "from the code run on line 1"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nexport -n GRUB_CMDLINE_LINUX_DEFAULT\n', 2, "sh rejects the option"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nlocal x\n', 2, "outside a function"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nexec true\n', 2, "would stop there too and never write grub.cfg"),
        (
            'readonly GRUB_CMDLINE_LINUX_DEFAULT\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
            1,
            "a later assignment of a read-only name",
        ),
        ('X=${A:?unset}\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "when A is unset"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n: "${A?oops}"\n', 2, "sh stops when A is unset"),
        ('set -eu\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "set -eu on line 1"),
        ('set -o nounset\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "set -o nounset"),
        ('shift 5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "fewer positional parameters"),
        (': > /nonexistent/x\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "special builtin ':'"),
        ('. /etc/default/other\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "sh stops if that file cannot be read"),
        ('\xef\xbb\xbfGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "byte order mark"),
        # Templates to be rendered (Ansible, Salt, Chef, Puppet...), not what grub-mkconfig should source:
        ('{{ ansible_managed | comment }}\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 1, "'{{' is a template marker"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet{% if iommu %} intel_iommu=on{% endif %}"\n', 1, "'{%' is a template marker"),
        ('GRUB_TIMEOUT=5\n{# managed #}\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 2, "'{#' is a template marker"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="<%= @cmdline %>"\n', 1, "'<%' is a template marker"),
        ("GRUB_CMDLINE_LINUX_DEFAULT='quiet @@extra@@'\n", 1, "'@@extra@@' is a template marker"),
        ('GRUB_DEFAULT=0\nGRUB_TIMEOUT={{ t | ternary("a", "b") }}\n', 2, "'{{' is a template marker"),
    ],
)
def test_refusals_name_file_line_and_reason(text: str, line: int, reason: str) -> None:
    f = grubfile.parse(text.encode("latin-1"), "/etc/default/grub")
    with pytest.raises(Refused) as exc:
        plan_grub_edit([f], P)
    err = exc.value
    assert err.path == "/etc/default/grub"
    assert err.line == line
    assert reason in err.message
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "text",
    [
        'set -- a b\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',  # positional parameters only
        'set +e\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
        'A=1\nX=${A:?unset}\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',  # A is set: no stop
        'export GRUB_X=1 2>/dev/null\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
    ],
)
def test_what_sh_cannot_stop_at_is_still_edited(text: str, tmp_path: Path) -> None:
    path = tmp_path / "grub"
    path.write_bytes(after(text).encode("latin-1"))
    assert sh_values([path], ["GRUB_CMDLINE_LINUX_DEFAULT"]) == {"GRUB_CMDLINE_LINUX_DEFAULT": "quiet pci=realloc=off"}


def test_edit_never_changes_another_variable_that_reuses_the_value() -> None:
    text = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc"\nOTHER="$GRUB_CMDLINE_LINUX_DEFAULT"\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT x"\n'
    with pytest.raises(Refused, match="would also change OTHER"):
        plan(text)


def test_notes_warn_about_grub_cmdline_linux_conflicts() -> None:
    edit = plan('GRUB_CMDLINE_LINUX="pci=realloc"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    assert any("recovery entries" in n for n in edit.notes)


@given(grub_files())
@example(data=b"GRUB_CMDLINE_LINUX=\"\"\nGRUB_CMDLINE_LINUX='\n'")
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@example(data=b'GRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="pci=realloc=off"')
def test_generated_files_edit_right_or_refuse(data: bytes) -> None:
    f = grubfile.parse(data, "/etc/default/grub")
    try:
        edit = plan_grub_edit([f], P)
    except Refused as err:
        assert err.path == "/etc/default/grub"
        assert "\n" not in str(err)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grub"
        path.write_bytes(data)
        check_with_sh([path], edit)
    if edit.changed:
        again = plan_grub_edit([grubfile.parse(edit.files[0].after)], P)
        assert not again.changed  # editing twice is editing once


GOLDEN = Path(__file__).parents[1] / "golden" / "grubedit"


def golden_text(path: Path) -> str:
    """What a reviewer reads for one corpus file: the diff mlxfix would show, or its refusal."""
    try:
        edit = plan_grub_edit([grubfile.parse(path.read_bytes(), "/etc/default/grub")], P)
    except Refused as exc:
        return f"refused: {exc}\n"
    from mlxfix.plan import unified_diff

    return "".join(unified_diff("/etc/default/grub", f.before, f.after) for f in edit.files)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_golden_diffs(path: Path) -> None:
    """Every corpus edit, reviewed once by a person, pinned byte for byte. After a deliberate change:
    MLXFIX_REGEN_GOLDEN=1 python -m pytest tests/defaults/test_grubedit.py -k golden, then read git diff tests/golden."""
    golden = GOLDEN / f"{path.name}.diff"
    text = golden_text(path)
    if os.environ.get("MLXFIX_REGEN_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden diff for {path.name}: run with MLXFIX_REGEN_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8")


def test_a_template_drop_in_is_refused_by_name() -> None:
    main = grubfile.parse(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', "/etc/default/grub")
    dropin = grubfile.parse(b'GRUB_CMDLINE_LINUX="{{ cmdline }}"\n', "/etc/default/grub.d/50-x.cfg")
    with pytest.raises(Refused, match="template marker") as exc:
        plan_grub_edit([main, dropin], P)
    assert (exc.value.path, exc.value.line) == ("/etc/default/grub.d/50-x.cfg", 1)


@pytest.mark.parametrize(
    "text",
    [
        '# {{ ansible_managed }}: a comment is not what sh runs\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet" # rendered from {% raw %}\n',
        'X=abc\nGRUB_CMDLINE_LINUX_DEFAULT="quiet ${#X}"\n',  # ${#X} is sh, not a Jinja comment
    ],
)
def test_template_markers_only_in_comments_or_in_sh_syntax_are_not_refused(text: str) -> None:
    assert plan(text).changed


# Kali's stock /etc/default/grub.d/kali-themes.cfg (kali-themes; ../shared/corpus/grub-more/
# 114-opamlee-etckeeper.d-kali-themes.cfg): every stock Kali host has it.
KALI_THEMES = (
    b'# Try to force a 16x9 mode first, then 16x10, then default\nGRUB_GFXMODE="1280x720,1280x800,auto"\n'
    b'GRUB_THEME="/boot/grub/themes/kali/theme.txt"\n# Add splash option to enable plymouth\n'
    b'if ! echo "$GRUB_CMDLINE_LINUX_DEFAULT" | grep -q splash; then\n'
    b'    GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"\nfi\n'
)
REAL_KALI = Path(__file__).resolve().parents[1] / "corpus/grub-more/114-opamlee-etckeeper.d-kali-themes.cfg"


def test_the_kali_drop_in_is_the_real_one() -> None:
    """The constant is the real file, byte for byte (copied into tests/corpus, so no clone skips this)."""
    assert REAL_KALI.read_bytes() == KALI_THEMES


def edit_with_dropin(tmp_path: Path, main: str, dropin: bytes) -> tuple[GrubEdit, list[Path]]:
    (tmp_path / "grub").write_text(main)
    (tmp_path / "d.cfg").write_bytes(dropin)
    paths = [tmp_path / "grub", tmp_path / "d.cfg"]
    return edit_paths(paths), paths


@pytest.mark.parametrize(
    ("main", "final"),
    [
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', "quiet pci=realloc=off splash"),  # the test adds splash
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n', "quiet splash pci=realloc=off"),  # it does not
    ],
)
def test_a_conditional_append_of_other_words_edits_the_earlier_assignment(tmp_path: Path, main: str, final: str) -> None:
    edit, paths = edit_with_dropin(tmp_path, main, KALI_THEMES)
    assert [fe.path for fe in edit.files] == [str(paths[0])]
    assert edit.action == "edited"
    assert any("only adds 'splash'" in n and "in the final value either way" in n for n in edit.notes)
    (tmp_path / "grub").write_bytes(edit.files[0].after)
    assert sh_values(paths, [CLD]) == {CLD: final}  # both branches, as sh takes them
    assert not edit_paths(paths).changed  # a second run: already in place


@pytest.mark.parametrize(
    "body",
    [
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"',
        'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} nomodeset"\nelse\n  GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT x"',
        'GRUB_CMDLINE_LINUX_DEFAULT="splash $GRUB_CMDLINE_LINUX_DEFAULT"',
    ],
)
def test_appends_in_every_branch_are_edited_below(tmp_path: Path, body: str) -> None:
    dropin = f"if [ -e /nonexistent ]; then\n  {body}\nfi\n".encode()
    edit, paths = edit_with_dropin(tmp_path, 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', dropin)
    assert edit.files[0].path == str(paths[0])
    (tmp_path / "grub").write_bytes(edit.files[0].after)
    value = sh_values(paths, [CLD])[CLD]
    assert value is not None
    assert cmdline.in_effect(value, P)
    assert cmdline.ensure(value, P) == ()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT pci=realloc=on"', "overrides it"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT pci=realloc=off"', "the parameter itself: twice"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT pci=noaer,realloc"', "a pci list with realloc"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="-- $GRUB_CMDLINE_LINUX_DEFAULT"', "everything after -- goes to init"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT}splash"', "joins a word of the old value"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', "not an append"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT $X"', "an expansion"),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"; unset GRUB_CMDLINE_LINUX_DEFAULT', "unset"),
    ],
)
def test_a_conditional_change_that_could_lose_the_parameter_is_unknowable(tmp_path: Path, body: str, why: str) -> None:
    del why
    dropin = f"if [ -e /x ]; then\n  {body}\nfi\n".encode()
    with pytest.raises(Unknowable, match="cannot know the value of GRUB_CMDLINE_LINUX_DEFAULT"):
        edit_with_dropin(tmp_path, 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', dropin)


def test_a_conditional_append_to_an_unset_variable_is_unknowable(tmp_path: Path) -> None:
    with pytest.raises(Unknowable):
        edit_with_dropin(tmp_path, "GRUB_TIMEOUT=5\n", KALI_THEMES)


def test_a_top_level_append_after_a_conditional_one_is_a_layer_too(tmp_path: Path) -> None:
    kdump = b'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=384M-:128M"\n'
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (tmp_path / "a.cfg").write_bytes(KALI_THEMES)
    (tmp_path / "b.cfg").write_bytes(kdump)
    paths = [tmp_path / "grub", tmp_path / "a.cfg", tmp_path / "b.cfg"]
    edit = edit_paths(paths)
    assert [fe.path for fe in edit.files] == [str(paths[0])]
    (tmp_path / "grub").write_bytes(edit.files[0].after)
    assert sh_values(paths, [CLD]) == {CLD: "quiet pci=realloc=off splash crashkernel=384M-:128M"}
    (tmp_path / "b.cfg").write_bytes(kdump.replace(b"crashkernel=384M-:128M", b"pci=realloc"))
    with pytest.raises(Unknowable):  # it would win over the edit: never looked through
        edit_paths(paths)
    (tmp_path / "b.cfg").write_bytes(b'X="$GRUB_CMDLINE_LINUX_DEFAULT pci=realloc"\nGRUB_CMDLINE_LINUX_DEFAULT="$X"\n')
    with pytest.raises(Unknowable):  # an expansion inside another word is not the layered value
        edit_paths(paths)
