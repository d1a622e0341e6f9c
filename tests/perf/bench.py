"""mlxfix's benchmark: start-up, SSH, and scale, each against a baseline timed in the same run.

    .venv/bin/python tests/perf/bench.py                   # every case; exit 1 if a budget is exceeded
    .venv/bin/python tests/perf/bench.py --only startup    # or ssh, latency, scale, shapes; --runs N for more samples

Not a timed test (CI machines are noisy): run it on the machine you care about. Each case runs after a
warm-up; its median is compared with a baseline timed in the same run (``python3 -c pass``, ``ssh HOST
true``, the smallest size), so the ratios travel between machines when the milliseconds do not. Every
run's output is checked, so no budget can be met by a run that failed or skipped its work. The SSH
cases start a private sshd on 127.0.0.1 (root and Debian's openssh-server needed, as for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.sshd import Sshd

    Check = Callable[[subprocess.CompletedProcess[bytes]], str | None]  # None: the run is as it should be

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's mlxfix and tests, installed or not
EXAMPLE = ROOT / "examples" / "pve-missing-uar"
STARTUP_BUDGET = 9.0  # x python3 -c pass: --help, which typer answers
COMMAND_BUDGET = 6.0  # x python3 -c pass: a plain command line, which never imports typer
SSH_BUDGET = 2.0  # x ssh HOST true
SCALE_SECONDS = 0.5  # the 16x size, end to end
GROWTH_BUDGET = 6.0  # x time for 4x the input: linear is 4, quadratic 16
EDITED = b'+GRUB_CMDLINE_LINUX_DEFAULT="quiet pci=realloc=off"'


@dataclass
class Row:
    case: str
    median: float
    baseline: str
    base: float
    budget: str
    ok: bool
    note: str = ""
    info: bool = False  # measured and shown, not budgeted

    @property
    def ratio(self) -> str:
        return f"{self.median / self.base:.1f}x" if self.base else ""


def mlxfix_argv() -> list[str]:
    """The console script an admin runs, when it is installed beside this Python; else ``-m``."""
    script = Path(sys.executable).with_name("mlxfix")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlxfix"]


def child_env() -> dict[str, str]:
    """The environment of an ordinary run: byte-code caches written and used, as after ``pip install``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONDONTWRITEBYTECODE", "PYTHONPROFILE", "MLXFIX_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _one_run(argv: list[str], check: Check) -> float:
    """The wall time of one run of ``argv``, its result checked (a failed run ends the benchmark)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=child_env(), cwd=ROOT, check=False)
    elapsed = time.perf_counter() - started
    problem = check(proc)
    if problem:
        sys.exit(f"bench: {' '.join(argv[:4])}...: {problem}\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def timed(argv: list[str], check: Check, runs: int) -> float:
    """Median wall time of ``argv`` over ``runs`` runs, after two warm-ups; every run's result checked."""
    times = [_one_run(argv, check) for _ in range(runs + 2)]
    return statistics.median(times[2:])


def timed_beside(
    base_argv: list[str], argv: list[str] | Callable[[int], list[str]], check: Check, runs: int
) -> tuple[float, float]:
    """Medians of the baseline and of ``argv``, their runs alternated: a shared machine whose speed
    drifts from one minute to the next slows both alike, and the ratio stays honest. ``argv`` may be
    a function of the run's number (a run that changes what it runs on gets a fresh copy each time)."""
    nth = argv if callable(argv) else (lambda _: argv)
    pairs = [(_one_run(base_argv, expect(0)), _one_run(nth(i), check)) for i in range(runs + 2)]
    return statistics.median(b for b, _ in pairs[2:]), statistics.median(c for _, c in pairs[2:])


def in_process(func: Callable[[], object], runs: int) -> float:
    """Median time of the pure core on its own, with the cycle collector off as mlxfix runs it."""
    import gc

    times = []
    try:
        for i in range(runs + 1):
            gc.enable()
            gc.collect()  # each run starts from a clean heap, as a fresh mlxfix process does (not timed)
            gc.disable()
            started = time.perf_counter()
            func()
            if i:
                times.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return statistics.median(times)


def expect(code: int, *needles: bytes) -> Callable[[subprocess.CompletedProcess[bytes]], str | None]:
    def check(proc: subprocess.CompletedProcess[bytes]) -> str | None:
        if proc.returncode != code:
            return f"exit {proc.returncode}, expected {code}"
        missing = [n for n in needles if n not in proc.stdout]
        return f"output lacks {missing[0]!r}" if missing else None

    return check


def recording_ssh(check: Check, figures: dict[str, int]) -> Check:
    """``check``, keeping the ``ssh`` figures (connections, round trips) of a run it passes in ``figures``."""

    def recorded(proc: subprocess.CompletedProcess[bytes]) -> str | None:
        problem = check(proc)
        if problem is None:
            figures.update(json.loads(proc.stdout)["ssh"])
        return problem

    return recorded


# -- start-up --------------------------------------------------------------------------------------------


def startup(runs: int) -> list[Row]:
    cases = [
        ("mlxfix --help", ["--help"], expect(0, b"apply", b"rollback"), STARTUP_BUDGET),
        (
            "mlxfix apply --dry-run --root (Proxmox tree)",
            ["apply", "--dry-run", "--root", str(EXAMPLE)],
            expect(0, EDITED),
            COMMAND_BUDGET,
        ),
        (
            "mlxfix diagnose --root (Proxmox tree)",
            ["diagnose", "--root", str(EXAMPLE)],
            expect(10, b"Missing UAR, aborting"),
            COMMAND_BUDGET,
        ),
        (
            "mlxfix status --root (Proxmox tree)",
            ["status", "--root", str(EXAMPLE)],
            expect(15, b"absent: pci=realloc=off"),
            COMMAND_BUDGET,
        ),
    ]
    rows = []
    for name, args, check, budget in cases:
        base, t = timed_beside([sys.executable, "-c", "pass"], [*mlxfix_argv(), *args], check, runs)
        rows.append(Row(name, t, "`python3 -c pass`", base, f"{budget:g}x", t <= budget * base))
    return rows


# -- over SSH --------------------------------------------------------------------------------------------


def over_ssh(runs: int) -> list[Row]:
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        print("bench: the SSH cases need root and openssh-server; skipped", file=sys.stderr)
        return []
    from tests.sshd import Sshd

    sshd = Sshd()
    try:
        remote = ["--host", sshd.target, *sshd.options(), "--root", str(EXAMPLE)]
        rows = []
        for name, args, code, needle in (
            ("mlxfix apply --dry-run --host (loopback sshd)", ["apply", "--dry-run", "--json"], 0, b'"would_change": true'),
            ("mlxfix diagnose --host (loopback sshd)", ["diagnose", "--json"], 10, b'"status": "affected"'),
        ):
            figures: dict[str, int] = {}
            check = recording_ssh(expect(code, needle), figures)
            base, t = timed_beside([*sshd.ssh_argv(), "true"], [*mlxfix_argv(), *args, *remote], check, runs)
            note = f"{figures['connections']} connection, {figures['round_trips']} round trips"
            ok = t <= SSH_BUDGET * base and figures["connections"] == 1
            rows.append(Row(name, t, "`ssh HOST true`", base, f"{SSH_BUDGET:g}x", ok, note))
        return rows
    finally:
        sshd.stop()


# -- over a slow link ------------------------------------------------------------------------------------

LATENCY = 0.05  # seconds each way: a 100 ms round trip, another building or another continent
LATENCY_BUDGETS = {"apply": 2.0, "read": 1.5}  # x ssh HOST true over the same link (issue 17)


def over_latency(runs: int) -> list[Row]:
    """The SSH cases again through tests/perf/relay.py, ssh's ProxyCommand, which holds each chunk
    LATENCY seconds each way: what a remote admin waits for is round trips, and this counts them in
    seconds. ``apply --host`` changes a running target (an sshd in a mount namespace whose /etc/default,
    /boot and /var/lib/mlxfix are a sandbox's) whose update-grub is a no-op: every step of a real
    apply is taken and timed, the regeneration's own time left out."""
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        print("bench: the SSH cases need root and openssh-server; skipped", file=sys.stderr)
        return []
    from tests.sshd import Sshd

    work = Path(tempfile.mkdtemp(prefix="mlxfix-bench-"))
    sshd = Sshd()
    target, sandbox = _noop_target(work)
    try:
        rows = []
        cases: list[tuple[str, Sshd, list[str], int, bytes, str]] = [
            ("apply --dry-run --host", sshd, ["apply", "--dry-run", "--json", "--root", str(EXAMPLE)], 0, b'"would_change": true', "read"),
            ("status --host", sshd, ["status", "--json", "--root", str(EXAMPLE)], 15, b'"state": "absent"', "read"),
            ("diagnose --host", sshd, ["diagnose", "--json", "--root", str(EXAMPLE)], 10, b'"status": "affected"', "read"),
            ("apply --yes --host (update-grub a no-op there)", target, ["apply", "--yes", "--json"], 0, b'"changed": true', "apply"),
        ]  # fmt: skip
        original = (sandbox / "default/grub").read_bytes()
        for name, server, args, code, needle, kind in cases:
            proxy = f"ProxyCommand={sys.executable} {ROOT / 'tests/perf/relay.py'} 127.0.0.1 {server.port} {LATENCY:g}"
            base = [*server.ssh_argv()[:-1], "-o", proxy, server.ssh_argv()[-1], "true"]
            figures: dict[str, int] = {}
            check = recording_ssh(expect(code, needle), figures)
            if kind == "apply":
                check = _then_reset(check, sandbox, original)
            argv = [*mlxfix_argv(), *args, "--host", server.target, *server.options(), "--ssh-option", proxy]
            b, t = timed_beside(base, argv, check, runs)
            budget = LATENCY_BUDGETS[kind]
            note = f"{figures['round_trips']} round trips, {LATENCY * 2000:.0f} ms each"
            rows.append(
                Row(
                    f"mlxfix {name}, {LATENCY * 1000:.0f} ms each way",
                    t,
                    "`ssh HOST true`, same link",
                    b,
                    f"{budget:g}x",
                    t <= budget * b,
                    note,
                )
            )
        return rows
    finally:
        sshd.stop()
        target.stop()
        shutil.rmtree(work, ignore_errors=True)


def _noop_target(work: Path) -> tuple[Sshd, Path]:
    """An sshd whose sessions see a sandboxed Debian host (tests/boot/test_update_grub.py's) and a
    no-op update-grub."""
    from tests.boot.test_update_grub import make_sandbox, noop_update_grub_sshd

    sandbox = make_sandbox(work / "sandbox")
    return noop_update_grub_sshd(sandbox), sandbox


def _then_reset(check: Check, sandbox: Path, original: bytes) -> Check:
    """``check``, then the sandbox as it was before the apply (not timed): every run applies afresh."""

    def reset(proc: subprocess.CompletedProcess[bytes]) -> str | None:
        problem = check(proc)
        (sandbox / "default/grub").write_bytes(original)
        shutil.rmtree(sandbox / "state/backups", ignore_errors=True)
        return problem

    return reset


# -- scale -----------------------------------------------------------------------------------------------


def big_grub(size: int) -> bytes:
    """A grub file of ``size`` bytes less 64 (so that the edited file is within the limit), written the ways people write them: the real files of tests/corpus
    (those mlxfix edits), one after another, repeated, then the stock Proxmox VE file, whose
    GRUB_CMDLINE_LINUX_DEFAULT is the one that counts."""
    from mlxfix.cmdline import Param
    from mlxfix.defaults import grubfile
    from mlxfix.defaults.grubedit import plan_grub_edit
    from mlxfix.errors import Refused

    stock = (EXAMPLE / "etc/default/grub").read_bytes()
    real = []
    for path in sorted((ROOT / "tests/corpus/grub").iterdir()):
        data = path.read_bytes().rstrip(b"\n") + b"\n"
        if b"BLSCFG" in data:
            continue  # Fedora's: with it the host would be a grub2-bls one (grubby), not a Proxmox VE one
        try:
            plan_grub_edit([grubfile.parse(data + stock)], Param.parse("pci=realloc=off"))
        except Refused:
            continue  # a package template, say: mlxfix refuses it, so it would not measure the edit
        real.append(data)
    body = b"".join(real)
    room = size - len(stock) - 64  # headroom for the edit: what mlxfix writes must stay within its 1 MiB limit
    data = (body * (room // len(body) + 1))[:room]
    data = data[: data.rfind(b"\n") + 1]
    return data + b"#" * (room - len(data) - 1) + b"\n" + stock


_NOISE = (  # about 75 bytes a line with the stamp, as dmesg lines are
    b'audit: type=1400 audit(1732500000.%d:%d): apparmor="DENIED" operation="open"',
    b"vmbr0: port 2(tap%di0) entered forwarding state",
    b"e1000e 0000:00:19.0 eno1: NIC Link is Up 1000 Mbps Full Duplex",
    b"usb 3-4: new high-speed USB device number %d using xhci_hcd",
    b"EXT4-fs (dm-1): mounted filesystem with ordered data mode.",
    b"fwbr%di0: port 1(fwln100i0) entered blocking state",
    b"kvm: SMP vm created on host with unstable TSC; guest TSC will not be reliable",
    b"tap%di0: entered promiscuous mode",
)


def big_log(lines: int) -> bytes:
    """A kernel log of ``lines`` lines as a long-running Proxmox VE host has it: the story host's boot
    (BAR failures, auto realloc), then the chatter of weeks (audit, bridges, USB), then Missing UAR."""
    boot = [ln for ln in (EXAMPLE / "var/log/dmesg").read_bytes().splitlines() if b"Missing UAR" not in ln]
    out = list(boot)
    for i in range(len(boot), lines - 1):
        message = _NOISE[i % len(_NOISE)]
        message = message % ((i, i) if message.count(b"%d") == 2 else (i,)) if b"%d" in message else message
        out.append(b"[%6d.%06d] " % (10 + i // 1000, i % 1000 * 997) + message)
    out.append(b"[999999.000000] mlx4_core 0000:01:00.0: Missing UAR, aborting")
    return b"\n".join(out) + b"\n"


def scale(runs: int) -> list[Row]:
    from mlxfix import diagnose
    from mlxfix.cmdline import Param
    from mlxfix.defaults import grubfile
    from mlxfix.defaults.grubedit import plan_grub_edit

    rows: list[Row] = []
    param = Param.parse("pci=realloc=off")
    with tempfile.TemporaryDirectory(prefix="mlxfix-bench-") as tmp:
        for what, sizes in (("grub file", [64 << 10, 256 << 10, 1 << 20]), ("kernel log", [12_500, 50_000, 200_000])):
            cores: list[float] = []
            for factor, size in zip((1, 4, 16), sizes, strict=True):
                tree = Path(tmp) / f"{what}-{size}"
                shutil.copytree(EXAMPLE, tree, symlinks=True)
                if what == "grub file":
                    data = big_grub(size)
                    (tree / "etc/default/grub").write_bytes(data)
                    args, check = ["apply", "--dry-run", "--root", str(tree)], expect(0, EDITED)
                    label = f"{size >> 10} KiB"

                    def core(data: bytes = data) -> object:
                        return plan_grub_edit([grubfile.parse(data, "/etc/default/grub")], param)
                else:
                    log = big_log(size)
                    (tree / "var/log/dmesg").write_bytes(log)
                    args, check = (
                        ["diagnose", "--root", str(tree)],
                        expect(10, b"[999999.000000]: mlx4_core 0000:01:00.0: Missing UAR"),
                    )
                    label = f"{size:,} lines ({len(log) / 2**20:.1f} MiB)"

                    def core(log: bytes = log) -> object:
                        return diagnose.scan_log(log.decode("utf-8", "replace"))

                t = timed([*mlxfix_argv(), *args], check, runs)
                cores.append(in_process(core, runs))
                growth = cores[-1] / cores[-2] if len(cores) > 1 else 0.0
                ok = (factor < 16 or t <= SCALE_SECONDS) and growth <= GROWTH_BUDGET
                note = f"core {cores[-1] * 1000:.1f} ms" + (f", {growth:.1f}x the {factor // 4}x core" if growth else "")
                budget = f"< {SCALE_SECONDS:g} s" if factor == 16 else ""
                rows.append(Row(f"`{args[0]}`, {what} {factor}x: {label}", t, "", 0, budget, ok, note))
    return rows


# Shapes no real grub file has: not budgeted, shown so that the budgeted rows mislead nobody. Each
# builder makes a file of the given size whose GRUB_CMDLINE_LINUX_DEFAULT (the stock Proxmox file's, at
# the end, or one huge value) is the one edited.
def _lines(unit: Callable[[int], bytes]) -> Callable[[int], bytes]:
    def build(size: int) -> bytes:
        stock = (EXAMPLE / "etc/default/grub").read_bytes()
        out, total, i = [], len(stock), 0
        while total + len(line := unit(i)) <= size:
            out.append(line)
            total += len(line)
            i += 1
        return b"".join(out) + stock

    return build


def _one_long_line(size: int) -> bytes:
    stock = (EXAMPLE / "etc/default/grub").read_bytes()
    head, tail = stock.split(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet')
    room = size - len(head) - len(tail) - len(b'GRUB_CMDLINE_LINUX_DEFAULT="quiet')
    words = b"".join(b" opt%d=1" % i for i in range(room // 6 + 1))[:room]
    return head + b'GRUB_CMDLINE_LINUX_DEFAULT="quiet' + words.rstrip(b" =") + tail


SHAPES: dict[str, Callable[[int], bytes]] = {
    "comment lines": _lines(lambda i: b"# padding line %d\n" % i),
    "one command line": _one_long_line,
    "distinct assignments": _lines(lambda i: b'GRUB_OPT_%d="value %d"\n' % (i, i)),
    "one variable appended to": _lines(lambda i: b'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX x%d"\n' % (i % 10)),
    "if blocks": _lines(lambda i: b"if [ -e /x%d ]; then\n  GRUB_GFXMODE=auto\nfi\n" % (i % 10)),
    "commands": _lines(lambda i: b"echo hello%d > /dev/null\n" % (i % 10)),
}


def shapes(runs: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mlxfix-bench-") as tmp:
        for name, build in SHAPES.items():
            times = []
            for size in (256 << 10, 1 << 20):
                tree = Path(tmp) / f"{name.replace(' ', '-')}-{size}"
                shutil.copytree(EXAMPLE, tree, symlinks=True)
                data = build(size - 64)  # headroom: the edited file must stay within mlxfix's 1 MiB
                assert len(data) <= size - 64, (name, len(data))
                (tree / "etc/default/grub").write_bytes(data)
                times.append(
                    timed([*mlxfix_argv(), "apply", "--dry-run", "--root", str(tree)], expect(0, b' pci=realloc=off"\n'), runs)
                )
            growth = f"{times[1] / times[0]:.1f}x the 256 KiB time ({times[0] * 1000:.0f} ms); not budgeted"
            lines = data.count(b"\n")
            rows.append(Row(f"`apply`, 1 MiB of {name} ({lines:,} lines)", times[1], "", 0, "", True, growth, info=True))
    return rows


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="timed runs per case (after two warm-ups); median reported")
    parser.add_argument(
        "--only", default="startup,ssh,latency,scale,shapes", help="comma-separated: startup, ssh, latency, scale, shapes"
    )
    opts = parser.parse_args()
    groups = {"startup": startup, "ssh": over_ssh, "latency": over_latency, "scale": scale, "shapes": shapes}
    rows: list[Row] = []
    for name in opts.only.split(","):
        rows += groups[name.strip()](opts.runs)
    print(f"mlxfix benchmark: {opts.runs} runs per case, medians; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| case | median | baseline | ratio | budget | result |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = f"{r.baseline} {fmt(r.base)}" if r.base else ""
        result = ("info" if r.info else "ok" if r.ok else "OVER BUDGET") + (f" ({r.note})" if r.note else "")
        print(f"| {r.case} | {fmt(r.median)} | {base} | {r.ratio} | {r.budget} | {result} |")
    over = [r.case for r in rows if not r.ok]
    if over:
        print(f"\nover budget: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
