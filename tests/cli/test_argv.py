"""mlxfix.cli.argv against typer itself: a plain command line must give the very keyword arguments
typer gives, and anything else must go to typer.

mlxfix/cli/argspec.py is generated here from the typer app; after changing an option, regenerate it:
``MLXFIX_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_argv.py -k spec``.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st
from typer import _click as click
from typer._types import TyperChoice

from mlxfix.cli import actions, argspec, argv, typer_app

SPEC_FILE = Path(argspec.__file__)
HEADER = '''"""Generated from mlxfix.cli.typer_app by tests/cli/test_argv.py; do not edit. To regenerate:
``MLXFIX_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_argv.py -k spec``.

What mlxfix.cli.argv needs to read a plain command line without typer: for each command, each
option's spelling -> (parameter, kind), and the value typer passes for an option not given. Kinds:
true/false (a flag, and which value it sets), str, list (repeatable str), float, int[:minimum],
choice:a|b|c.
"""

from __future__ import annotations

from typing import Any
'''


def _kind(option: typer.core.TyperOption) -> str:
    """The spec's kind for one of click's options; anything argv cannot read exactly fails here."""
    kind = option.type
    assert option.envvar is None, option
    assert option.prompt is None, option
    assert option.callback is None, option
    assert option.nargs == 1, option
    if option.is_flag:
        assert isinstance(kind, click.types.BoolParamType), option
        assert option.is_bool_flag, option
        assert not option.count, option
        return "true"
    if option.multiple:
        assert isinstance(kind, click.types.StringParamType), option
        return "list"
    if isinstance(kind, TyperChoice):
        assert kind.case_sensitive, option
        return "choice:" + "|".join(kind.normalize_choice(c, None) for c in kind.choices)
    if isinstance(kind, click.types.IntRange):
        assert kind.max is None, option
        assert not kind.min_open, option
        assert not kind.clamp, option
        return f"int:{kind.min}" if kind.min is not None else "int"
    for cls, name in (
        (click.types.FloatParamType, "float"),
        (click.types.IntParamType, "int"),
        (click.types.StringParamType, "str"),
    ):
        if type(kind) is cls:
            return name
    raise AssertionError(f"argv cannot read {option.opts} ({kind!r}): teach mlxfix.cli.argv first")


def _spellings(option: typer.core.TyperOption) -> dict[str, tuple[str, str]]:
    kind = _kind(option)
    assert option.name is not None
    words = dict.fromkeys(option.opts, (option.name, kind))
    words.update(dict.fromkeys(option.secondary_opts, (option.name, "false")))
    return words


def typer_call(args: list[str]) -> tuple[str, str, dict[str, Any]] | None:
    """What typer hands the command for ``args``: (--color, command, keyword arguments); None when
    typer refuses the line (a usage error) or answers it itself (--help, --version)."""
    seen: dict[str, Any] = {"color": "auto"}
    saved = {name: getattr(actions, name) for name in [*actions.COMMANDS, "set_color"]}

    def recorder(name: str) -> Any:
        def record(**kwargs: Any) -> int:
            seen.update(command=name, options=kwargs)
            return 0

        return record

    try:
        for name in actions.COMMANDS:
            setattr(actions, name, recorder(name))
        actions.set_color = lambda color: seen.update(color=color)  # type: ignore[assignment]
        try:
            typer_app.app(args, standalone_mode=False, prog_name="mlxfix")
        except click.exceptions.ClickException:
            return None
    finally:
        for name, value in saved.items():
            setattr(actions, name, value)
    return (seen["color"], seen["command"], seen["options"]) if "command" in seen else None


def _py(value: object) -> str:
    """A literal as ruff formats it (double quotes), so that the generated file passes its check."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ")"
    return repr(value)


def render_spec() -> str:
    group = typer.main.get_command(typer_app.app)
    assert isinstance(group, typer.core.TyperGroup)
    lines = [HEADER, "GLOBAL: dict[str, tuple[str, str]] = {"]
    for option in group.params:
        if isinstance(option, typer.core.TyperOption) and not option.is_eager:
            lines += [f"    {_py(word)}: {_py(spelt)}," for word, spelt in _spellings(option).items()]
    lines += ["}", "", "COMMANDS: dict[str, tuple[dict[str, tuple[str, str]], dict[str, Any]]] = {"]
    for name, command in group.commands.items():
        spellings: dict[str, tuple[str, str]] = {}
        for option in command.params:
            assert isinstance(option, typer.core.TyperOption), f"{name}: argv reads options only"
            spellings.update(_spellings(option))
        call = typer_call([name])
        assert call is not None, name
        lines += [f"    {_py(name)}: (", "        {"]
        lines += [f"            {_py(word)}: {_py(spelt)}," for word, spelt in spellings.items()]
        lines += ["        },", "        {"]
        lines += [f"            {_py(param)}: {_py(value)}," for param, value in call[2].items()]
        lines += ["        },", "    ),"]
    return "\n".join([*lines, "}", ""])


def test_spec_is_generated_from_the_typer_app() -> None:
    text = render_spec()
    if os.environ.get("MLXFIX_REGEN_GOLDEN"):
        SPEC_FILE.write_text(text)
    assert SPEC_FILE.read_text() == text, "mlxfix/cli/argspec.py is stale: regenerate it (see this file's docstring)"


def test_each_command_takes_what_typer_passes() -> None:
    """typer_app's commands call actions' with **locals(): the same names, none missing."""
    for name, func in actions.COMMANDS.items():
        declared = list(inspect.signature(getattr(typer_app, name)).parameters)
        assert list(inspect.signature(inspect.unwrap(func)).parameters) == declared, name
        assert sorted(argspec.COMMANDS[name][1]) == sorted(declared), name


def _samples(kind: str) -> list[str]:
    name, _, arg = kind.partition(":")
    return {
        "str": ["/srv/tree", "a b", "pci=realloc=off"],
        "list": ["ConnectTimeout=5", "Port=2222"],
        "float": ["2.5", "900", "1e3"],
        "int": ["0", "7", "+3"],
        "choice": arg.split("|"),
    }[name]


def plain_lines() -> list[list[str]]:
    """Every option of every command, each way it can be spelt; then all of a command's at once."""
    lines: list[list[str]] = []
    for command, (spec, _) in argspec.COMMANDS.items():
        everything: list[str] = [command]
        for word, (_, kind) in spec.items():
            if kind in ("true", "false"):
                lines.append([command, word])
                everything.append(word)
                continue
            for sample in _samples(kind):
                lines.append([command, word, sample])
                if word.startswith("--"):
                    lines.append([command, f"{word}={sample}"])
            everything += [word, _samples(kind)[-1]]
        lines += [everything, [*everything, "--json", "--no-reboot" if "--no-reboot" in spec else "--json"]]
        for word, (_, kind) in argspec.GLOBAL.items():
            lines += [[word, choice, command] for choice in _samples(kind)] + [[f"{word}=never", command, "--json"]]
    return lines


@pytest.mark.parametrize("args", plain_lines(), ids=" ".join)
def test_a_plain_line_is_read_as_typer_reads_it(args: list[str]) -> None:
    expected = typer_call(args)
    assert expected is not None, f"typer refuses {args}"
    got = argv.parse(args)
    assert got == expected
    assert [type(v) for v in got[2].values()] == [type(v) for v in expected[2].values()]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["apply", "--help"],
        ["apply", "-h"],
        ["--version"],
        ["--show-completion", "bash"],
        ["nonsense"],
        ["apply", "extra"],
        ["apply", "--", "--dry-run"],
        ["apply", "-ny"],  # click's bundled short flags: typer reads them
        ["apply", "--root"],
        ["apply", "--root", "--json"],  # click's root named --json
        ["apply", "--root="],
        ["apply", "--dry-run=1"],
        ["apply", "-n=1"],
        ["apply", "--wait-timeout", "soon"],
        ["backups", "--keep", "-1"],
        ["backups", "--keep", "1.5"],
        ["apply", "--colour", "never"],
        ["apply", "--color", "never"],  # --color goes before the command
        ["--color", "bogus", "apply"],
        ["--color", "NEVER", "apply"],
        ["--color"],
        ["diagnose", "--param", "x"],  # an option of another command
        ["apply", "--dry"],  # no abbreviations in click, none here
    ],
    ids=" ".join,
)
def test_anything_else_goes_to_typer(args: list[str]) -> None:
    assert argv.parse(args) is None


_WORDS = sorted(
    {w for spec, _ in argspec.COMMANDS.values() for w in spec}
    | set(argspec.COMMANDS)
    | set(argspec.GLOBAL)
    | {"--help", "-ny", "--", "x", "", "-1", "2.5", "never", "--root=", "--dry-run=yes", "--json=1", "--keep=-2", "bash"}
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=7))
def test_whatever_argv_reads_typer_reads_the_same(args: list[str]) -> None:
    got = argv.parse(args)
    if got is not None:
        assert typer_call(args) == got


def test_the_console_script_takes_the_plain_path_without_importing_typer() -> None:
    """What the benchmark times: a plain command line of each read-only command runs without typer
    and click, and without the dataclasses module (and inspect, which it imports); a line typer must
    read (a usage error) still gets typer's message."""
    probe = (
        "import runpy, sys; sys.argv = ['mlxfix', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('mlxfix', run_name='__main__')\n"
        "finally:\n    print(sorted(m for m in ('typer', 'dataclasses', 'inspect') if m in sys.modules), file=sys.stderr)\n"
    )
    root = str(Path(__file__).parents[2] / "examples" / "pve-missing-uar")
    for args, code, needle in (
        (["apply", "--dry-run", "--root", root], 0, "pci=realloc=off"),
        (["diagnose", "--root", root], 10, "Missing UAR"),
        (["status", "--root", root], 15, "absent"),
        (["verify", "--root", root], 13, "pci=realloc=off"),
    ):
        plain = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=False)
        assert plain.returncode == code, plain.stderr
        assert needle in plain.stdout + plain.stderr
        assert plain.stderr.splitlines()[-1] == "[]", args
    odd = subprocess.run([sys.executable, "-c", probe, "apply", "--dry"], capture_output=True, text=True, check=False)
    assert odd.returncode == 2
    assert "No such option: --dry" in odd.stderr
    assert "'typer'" in odd.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["diagnose", "--root", "EXAMPLE"],  # plain
        ["diagnose", "--root", "EXAMPLE", "--"],  # typer's
        ["apply", "--dry-run", "--root", "EXAMPLE"],
        ["apply", "-n", "--root", "EXAMPLE", "--"],
    ],
    ids=" ".join,
)
def test_an_output_that_went_away_is_said_the_same_on_both_paths(args: list[str]) -> None:
    """stdout a pipe whose reader is gone (EPIPE at the first write): one line and exit 1 whichever
    path read the command line (typer would otherwise end it with a silent exit 1 of its own), and
    a dry run does not claim to have changed anything."""
    example = str(Path(__file__).parents[2] / "examples" / "pve-missing-uar")
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mlxfix", *(example if a == "EXAMPLE" else a for a in args)],
            stdout=write, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert run.returncode == 1
    assert run.stderr == "mlxfix: the output could not be written (Broken pipe)\n"


def test_a_completion_request_goes_to_typer_whatever_the_arguments() -> None:
    """The shell's completion protocol is typer's, and the variable decides, not the command line."""
    example = str(Path(__file__).parents[2] / "examples" / "pve-missing-uar")
    env = {**os.environ, "_MLXFIX_COMPLETE": "complete_bash", "COMP_WORDS": "mlxfix stat", "COMP_CWORD": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mlxfix", "status", "--root", example], capture_output=True, text=True, env=env, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["status"]
