"""Progress while a command runs, as a real process running a real (stand-in) update-grub inside a
private mount namespace: on a terminal, rich's spinner on stderr and every line whole; without one,
plain lines and not one control character."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

import pytest

from tests import namespace
from tests.trees import PVE_GRUB, on_a_terminal

if TYPE_CHECKING:
    from pathlib import Path

# A stand-in update-grub: two lines of output, a pause long enough for the spinner to turn, a grub.cfg.
UPDATE_GRUB = """\
echo "Generating grub configuration file ..."
sleep 1.5
echo "done"
mkdir -p /boot/grub
printf 'menuentry "Debian" {\\n\\tlinux /vmlinuz root=/dev/sda1 ro quiet pci=realloc=off\\n}\\n' > /boot/grub/grub.cfg
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[dict[str, Path], str]:
    namespace.require_root()
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "grub").write_bytes(PVE_GRUB)
    (tmp_path / "boot").mkdir()
    namespace.tool(tmp_path / "bin", "update-grub", UPDATE_GRUB)
    binds = {"/etc/default": tmp_path / "default", "/boot": tmp_path / "boot", namespace.STATE: namespace.state_dir(tmp_path)}
    return binds, str(tmp_path / "bin")


@pytest.mark.root
def test_no_terminal_no_spinner_no_control_characters(sandbox: tuple[dict[str, Path], str]) -> None:
    binds, bin_dir = sandbox
    proc = namespace.run(binds, "apply", "--yes", "--no-reboot", path_prefix=bin_dir, env={"FORCE_COLOR": "", "NO_COLOR": ""})
    assert proc.returncode == 0, proc.stderr
    assert "  running update-grub ...\n    | Generating grub configuration file ...\n    | done\n" in proc.stdout
    for text in (proc.stdout, proc.stderr):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), repr(text)
    assert re.search(r"^Backup: \S+ ", proc.stdout, re.MULTILINE)


@pytest.mark.root
def test_on_a_terminal_the_spinner_turns_and_every_line_ends(sandbox: tuple[dict[str, Path], str]) -> None:
    binds, bin_dir = sandbox
    pairs: list[str] = []
    for target, source in binds.items():
        pairs += [str(source), target]
    argv = ["/usr/bin/unshare", "-m", "sh", "-c", namespace.SCRIPT, "sh", *pairs, "--"]
    argv += [sys.executable, "-m", "mlxfix", "apply", "--yes", "--no-reboot"]
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(namespace.Path(__file__).parents[2]),
        "TERM": "xterm",
        "NO_COLOR": "1",
    }
    code, seen = on_a_terminal(argv, [], env=env)
    text = seen.decode(errors="replace")
    assert code == 0, text
    assert "update-grub (1 s)" in text  # the spinner's elapsed time, while update-grub sleeps
    assert "\x1b[?25l" in text  # rich hid the cursor while it spun ...
    assert text.count("\x1b[?25h") >= text.count("\x1b[?25l")  # ... and showed it again every time
    # What the terminal shows at the end: the spinner erased itself each time, and every line is
    # whole (not the old "| update-grub (6 s)Backup: ..." of issue 16).
    screen = terminal_screen(text)
    assert not any("update-grub (" in ln for ln in screen), screen
    start = screen.index("  running update-grub ...")
    assert screen[start : start + 3] == [
        "  running update-grub ...",
        "    | Generating grub configuration file ...",
        "    | done",
    ]
    assert [ln for ln in screen if ln.startswith("Backup: ")], screen
    assert all(ln.startswith("Backup: ") for ln in screen if "Backup: " in ln), screen


def terminal_screen(text: str) -> list[str]:
    """The lines a terminal holds after ``text``: enough of one for what rich and mlxfix send (\r,
    \n, cursor up, erase line; other sequences change no character)."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|.", text, re.DOTALL):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            if row == len(lines):
                lines.append([])
        elif token.startswith("\x1b["):
            arg, final = token[2:-1], token[-1]
            if final == "A":
                row = max(row - int(arg or 1), 0)
            elif final == "K" and arg in ("", "0"):
                del lines[row][col:]
            elif final == "K" and arg == "2":
                lines[row] = [" "] * col
        else:
            line = lines[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = token
            col += 1
    return ["".join(ln).rstrip() for ln in lines]
