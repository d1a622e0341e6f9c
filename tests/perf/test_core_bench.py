"""pytest-benchmark suite for the pure core, beside tests/perf/bench.py (which times whole runs).

In the normal suite each case runs once, as a check that it still works (``--benchmark-disable`` in
pyproject.toml); to time them: ``.venv/bin/python -m pytest tests/perf --benchmark-enable --benchmark-disable-gc``
(the CLI runs with the cycle collector off, see mlxfix.cli.actions.execute; with it on, 1 MiB costs twice as much).
Every case asserts its result, so a case cannot get fast by doing nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mlxfix import cmdline, diagnose
from mlxfix.cmdline import Param
from mlxfix.defaults import grubfile
from mlxfix.defaults.evaluate import evaluate
from mlxfix.defaults.grubedit import plan_grub_edit
from mlxfix.plan import unified_diff
from tests.perf.bench import big_grub, big_log

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

P = Param.parse("pci=realloc=off")
SIZES = [64 << 10, 256 << 10, 1 << 20]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n >> 10}KiB")
def grub(request: pytest.FixtureRequest) -> bytes:
    return big_grub(int(request.param))


def test_parse(benchmark: BenchmarkFixture, grub: bytes) -> None:
    f = benchmark(grubfile.parse, grub, "/etc/default/grub")
    assert f.error is None
    assert f.render() == grub


def test_evaluate(benchmark: BenchmarkFixture, grub: bytes) -> None:
    f = grubfile.parse(grub, "/etc/default/grub")
    ev = benchmark(evaluate, [f])
    assert ev is not None


def test_plan_the_edit(benchmark: BenchmarkFixture, grub: bytes) -> None:
    f = grubfile.parse(grub, "/etc/default/grub")
    edit = benchmark(plan_grub_edit, [f], P)
    assert edit.changed
    assert edit.after.endswith("quiet pci=realloc=off")


def test_diff(benchmark: BenchmarkFixture, grub: bytes) -> None:
    after = plan_grub_edit([grubfile.parse(grub, "/etc/default/grub")], P).files[0].after
    diff = benchmark(unified_diff, "/etc/default/grub", grub, after)
    assert diff.count("\n+GRUB_CMDLINE_LINUX_DEFAULT") == 1


@pytest.mark.parametrize("lines", [12_500, 50_000, 200_000])
def test_scan_the_kernel_log(benchmark: BenchmarkFixture, lines: int) -> None:
    text = big_log(lines).decode()
    found, _ = benchmark(diagnose.scan_log, text)
    assert any("Missing UAR" in ln.text for ln in found)


def test_split_and_ensure_a_long_command_line(benchmark: BenchmarkFixture) -> None:
    line = " ".join(f"opt{i}=v{i}" for i in range(2000)) + ' acpi_osi="!Windows 2012" pci=noaer,realloc=on'

    def work() -> str:
        return cmdline.apply(line, cmdline.ensure(line, P))

    out = benchmark(work)
    assert cmdline.realloc_setting(out)[0] == "off"
    assert cmdline.ensure(out, P) == ()
