"""Kernel command lines: split as the kernel splits, realloc as the kernel reads it, ensure/remove."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxfix import cmdline
from mlxfix.cmdline import Param, ParamError
from tests.strategies import command_lines

REALLOC_OFF = Param.parse("pci=realloc=off")


def texts(line: str) -> list[str]:
    return [t.text for t in cmdline.split(line)]


def test_split_like_the_kernel() -> None:
    assert texts('quiet  acpi_osi="!Windows 2012"\tsplash\r\n') == ["quiet", 'acpi_osi="!Windows 2012"', "splash"]
    assert texts('"a b" c') == ['"a b"', "c"]
    assert texts("") == []
    t = cmdline.split('acpi_osi="!Windows 2012"')[0]
    assert (t.key, t.value) == ("acpi_osi", "!Windows 2012")
    assert cmdline.split("vfio-pci.ids=1")[0].key == "vfio_pci.ids"  # '-' and '_' are the same to the kernel


@pytest.mark.parametrize(
    ("line", "state", "ignored"),
    [
        ("quiet", None, []),
        ("pci=realloc", "on", []),
        ("pci=realloc=on", "on", []),
        ("pci=realloc=off", "off", []),
        ("pci=realloc=offset", "off", []),  # strncmp(str, "off", 3)
        ("pci=noaer,realloc=on pci=realloc=off", "off", []),  # last setting wins
        ("pci=realloc=off pci=realloc", "on", []),
        ("pci=realloc=off pci=realloc=0", "off", ["realloc=0"]),  # ignored by the kernel
        ('pci="noaer,realloc=off"', "off", []),  # the kernel strips the quotes
        ("pci=realloc=off -- pci=realloc=on", "off", []),  # after "--" it is init's
    ],
)
def test_realloc_setting(line: str, state: str | None, ignored: list[str]) -> None:
    assert cmdline.realloc_setting(line) == (state, ignored)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("quiet", "quiet pci=realloc=off"),
        ("", "pci=realloc=off"),
        ("quiet pci=realloc=off", "quiet pci=realloc=off"),
        ("quiet pci=noaer,realloc=off", "quiet pci=noaer,realloc=off"),  # already holds, inside a list
        ("quiet pci=realloc splash", "quiet splash pci=realloc=off"),
        ("pci=realloc=on", "pci=realloc=off"),
        ("quiet pci=noaer,realloc=on", "quiet pci=noaer pci=realloc=off"),  # noaer is kept
        ("pci=realloc,noaer,realloc=on iommu=pt", "pci=noaer iommu=pt pci=realloc=off"),
        ("pci=realloc=off pci=realloc=off", "pci=realloc=off"),  # exactly once
        ("pci=realloc=on pci=realloc=off", "pci=realloc=off"),
        ("quiet -- single", "quiet pci=realloc=off -- single"),  # before init's arguments
        ("-- single", "pci=realloc=off -- single"),
        ("  quiet  ", "  quiet pci=realloc=off  "),  # spacing kept
        ("pci=realloc=0", "pci=realloc=0 pci=realloc=off"),
    ],
)
def test_ensure_realloc_off(before: str, after: str) -> None:
    changes = cmdline.ensure(before, REALLOC_OFF)
    assert cmdline.apply(before, changes) == after
    assert cmdline.contains(after, REALLOC_OFF)
    assert cmdline.realloc_setting(after)[0] == "off"


def test_generic_params() -> None:
    p = Param.parse("iommu=pt")
    assert cmdline.apply("iommu=on quiet", cmdline.ensure("iommu=on quiet", p)) == "quiet iommu=pt"
    console = Param.parse("console=ttyS0")
    assert cmdline.apply("console=tty0", cmdline.ensure("console=tty0", console)) == "console=tty0 console=ttyS0"
    quoted = Param.parse('acpi_osi="!Windows 2012"')
    assert cmdline.apply("quiet", cmdline.ensure("quiet", quoted)) == 'quiet acpi_osi="!Windows 2012"'


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a b",
        "pci=realloc=off\n",
        "x=$(reboot)",
        "x=`id`",
        "a;b",
        "x='a'",
        'x="a"b"',
        "x=a\\b",
        "--",
        "-x",
        "pci=realloc=off,\x00",
        "é=1",
        "x=${y}",
        "x=a|b",
        "x=a&b",
        "x=" + "a" * 300,
    ],
)
def test_param_validation_refuses(bad: str) -> None:
    with pytest.raises(ParamError):
        Param.parse(bad)


@given(command_lines)
def test_ensure_is_idempotent(line: str) -> None:
    once = cmdline.apply(line, cmdline.ensure(line, REALLOC_OFF))
    assert cmdline.ensure(once, REALLOC_OFF) == ()
    assert cmdline.realloc_setting(once)[0] == "off"
    assert [t.text for t in cmdline.split(once)].count("pci=realloc=off") <= 1 or "--" in once


@given(command_lines)
def test_ensure_keeps_every_unrelated_token(line: str) -> None:
    after = cmdline.apply(line, cmdline.ensure(line, REALLOC_OFF))

    def unrelated(s: str) -> list[str]:
        out = []
        for t in cmdline.split(s):
            if t.key == "pci":
                out += [o.text for o in t.options() if not o.text.startswith("realloc")]
            else:
                out.append(t.text)
        return out

    assert unrelated(after) == unrelated(line)


@given(command_lines.filter(lambda s: "realloc" not in s))
def test_remove_after_add_restores_the_tokens(line: str) -> None:
    added = cmdline.apply(line, cmdline.ensure(line, REALLOC_OFF))
    removed = cmdline.apply(added, cmdline.remove(added, REALLOC_OFF))
    assert texts(removed) == texts(line)


@given(command_lines, st.sampled_from(["iommu=pt", "quiet", "console=ttyS1", "pci=noaer", 'x="a b"']))
def test_any_param_holds_once_after_ensure(line: str, text: str) -> None:
    p = Param.parse(text)
    after = cmdline.apply(line, cmdline.ensure(line, p))
    assert cmdline.contains(after, p)
    assert cmdline.ensure(after, p) == ()


def _next_arg_split(line: str) -> list[tuple[int, int, str]]:
    """The kernel's next_arg loop, character by character: the reference for the regex in split()."""
    tokens, i, n = [], 0, len(line)
    while i < n:
        while i < n and line[i] in cmdline.WHITESPACE:
            i += 1
        if i >= n:
            break
        start, in_quote = i, False
        while i < n and (in_quote or line[i] not in cmdline.WHITESPACE):
            if line[i] == '"':
                in_quote = not in_quote
            i += 1
        tokens.append((start, i, line[start:i]))
    return tokens


@given(st.text(alphabet=' \t\n\v\f\r"=,ab-_!', max_size=40))
def test_split_is_the_kernels_loop(line: str) -> None:
    assert [(t.start, t.end, t.text) for t in cmdline.split(line)] == _next_arg_split(line)


def test_a_megabyte_command_line_splits_in_linear_time() -> None:
    import time

    line = " ".join(f'opt{i}="a b,{i}"' for i in range(60_000))
    t = time.perf_counter()
    tokens = cmdline.split(line)
    assert len(tokens) == 60_000
    assert cmdline.realloc_setting(line) == (None, [])
    assert time.perf_counter() - t < 0.5  # the character loop it replaced took 1.3 s for 1 MiB


@pytest.mark.parametrize(
    ("line", "param"),
    [
        ("quiet acpi_osi=Linux", 'acpi_osi="!Windows 2012"'),  # acpi_osi= adds to a set
        ("video=HDMI-A-1:1280x720", "video=DP-1:1920x1080"),  # one per connector
        ("modprobe.blacklist=radeon", "modprobe.blacklist=nouveau"),
        ("hugepagesz=1G hugepages=4", "hugepages=512"),
        ("crashkernel=256M,high", "crashkernel=128M,low"),
        ("rd.lvm.lv=fedora/root", "rd.lvm.lv=fedora/swap"),  # dracut's rd.* accumulate
    ],
)
def test_adding_a_repeatable_parameter_keeps_its_other_values(line: str, param: str) -> None:
    p = Param.parse(param)
    assert cmdline.apply(line, cmdline.ensure(line, p)) == f"{line} {param}"


def test_a_parameter_the_kernel_reads_once_is_replaced() -> None:
    p = Param.parse("iommu=pt")
    assert cmdline.apply("iommu=soft quiet", cmdline.ensure("iommu=soft quiet", p)) == "quiet iommu=pt"
