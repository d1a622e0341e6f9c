"""The SSH host's read script, through a real sshd: whatever the names and bytes, a batched read over
SSH sees exactly what the local host sees (the script takes shortcuts: plain names travel as text,
one plain line without base64, one stat for all files; each shortcut must be exact or not taken)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxfix.host.local import LocalHost
from mlxfix.host.ssh import SshHost

if TYPE_CHECKING:
    from tests.sshd import Sshd

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Names: plain ones (the no-fork path), and ones with spaces, colons, newlines, a leading dash,
# non-ASCII and non-UTF-8 bytes (the base64 path).
names = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:+@%=~-]{1,12}", fullmatch=True),
    st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
).filter(lambda n: (n.encode() if isinstance(n, str) else n) not in (b".", b".."))
contents = st.one_of(
    st.from_regex(r"[A-Za-z0-9()._:-]{0,20}\n", fullmatch=True),  # one plain line: the shortcut
    st.from_regex(r"[A-Za-z0-9 ]{0,20}(\n|\r\n)?", fullmatch=True),
    st.binary(max_size=64),  # NULs, lone CRs, no final newline...
)


def _bytes(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name


def _remote(sshd: Sshd, root: Path) -> SshHost:
    options = sshd.options()
    return SshHost(sshd.target, str(root), [o for o in options if o != "--ssh-option"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(names, contents, min_size=1, max_size=6))
def test_a_batched_read_over_ssh_is_the_local_read(sshd: Sshd, files: dict[str | bytes, bytes | str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="mlxfix-sshread-"))
    try:
        d = root / "etc/default/grub.d"
        d.mkdir(parents=True)
        paths = []
        for name, data in files.items():
            target = os.path.join(os.fsencode(d), _bytes(name))
            Path(os.fsdecode(target)).write_bytes(_bytes(data))
            paths.append("/etc/default/grub.d/" + os.fsdecode(_bytes(name)))
        (root / "etc/default/link").symlink_to("grub.d")
        (root / "etc/default/dangling").symlink_to("nowhere")
        wanted = [*paths, "/etc/default/missing", "/etc/default/dangling", "/etc/default/link", "/etc/nope/deeper/file"]
        request = (wanted, ["/etc/default/grub.d", "/etc/default", "/etc/absent"], ["/etc/default/grub.d/*"])
        local = LocalHost(str(root)).gather(*request)
        remote = _remote(sshd, root)
        try:
            over = remote.gather(*request)
        finally:
            remote.close()
        assert over.listings == local.listings
        assert over.globs == local.globs
        for path in {*wanted, *local.globs["/etc/default/grub.d/*"]}:
            a, b = local.files[path], over.files[path]
            assert (b.exists, b.data, b.is_symlink, b.link_target, b.is_dir) == (
                a.exists,
                a.data,
                a.is_symlink,
                a.link_target,
                a.is_dir,
            ), path
            if a.exists:
                assert (b.mode, b.uid, b.gid) == (a.mode, a.uid, a.gid), path
            assert (b.error is None) == (a.error is None), (path, a.error, b.error)
    finally:
        shutil.rmtree(root)


def test_a_pseudo_file_line_is_read_whole(sshd: Sshd) -> None:
    """Real /proc and /sys files report a size that is not theirs (0 or 4096): their one line is taken
    on the path's word, and a multi-line one still arrives byte for byte."""
    remote = SshHost(sshd.target, "/", [o for o in sshd.options() if o != "--ssh-option"])
    try:
        snap = remote.gather(["/proc/sys/kernel/ostype", "/proc/filesystems", "/proc/version"])
    finally:
        remote.close()
    for path in ("/proc/sys/kernel/ostype", "/proc/filesystems", "/proc/version"):
        assert snap.files[path].data == Path(path).read_bytes(), path


def _host(sshd: Sshd, root: str = "/") -> SshHost:
    return SshHost(sshd.target, root, [o for o in sshd.options() if o != "--ssh-option"])


def test_a_command_streams_its_own_lines_and_nothing_of_the_trailer(sshd: Sshd) -> None:
    """(issue 18, item 10) The exit status travels after a marker, never as a line of the output:
    no stray "0" after every command, blank lines and a last line without newline kept."""
    remote = _host(sshd)
    try:
        lines: list[str] = []
        result = remote.run(["sh", "-c", "printf 'one\\n\\nthree'"], on_output=lines.append)
        assert lines == ["one", "", "three"]
        assert (result.exit_code, result.output, result.signal) == (0, "one\n\nthree", None)
        lines.clear()
        assert remote.run(["sh", "-c", "echo last; exit 3"], on_output=lines.append).exit_code == 3
        assert lines == ["last"]
    finally:
        remote.close()


def test_an_exit_129_is_not_a_sighup(sshd: Sshd) -> None:
    """(issue 18, item 3) sh's "$?" is 129 for both; the wrapper on the target asks the wait status,
    with perl, with python3, and with neither says it cannot tell (a status above 128 is then taken
    for a signal: the cautious reading)."""
    from mlxfix.host.ssh import _status, _status_wrapper

    remote = _host(sshd)
    try:
        assert remote.run(["sh", "-c", "exit 129"])[1:] == (129, "", None)
        assert remote.run(["sh", "-c", "kill -HUP $$"])[1:] == (129, "", 1)
        assert remote.run(["sh", "-c", "exit 127"]).signal is None
        session = remote._connect()
        for helpers, signal_of_129 in ((("perl",), None), (("python3",), None), ((), 1)):
            code, _, _, status = session.run(_status_wrapper(["sh", "-c", "exit 129"], helpers))
            assert _status(code, status) == (129, signal_of_129), helpers
            code, _, _, status = session.run(_status_wrapper(["sh", "-c", "kill -TERM $$"], helpers))
            assert _status(code, status) == (143, 15), helpers
            code, out, _, status = session.run(_status_wrapper(["-no-such-command"], helpers))
            assert _status(code, status) == (127, None), (helpers, out)
    finally:
        remote.close()


def test_multi_megabyte_answers_on_both_streams_do_not_stall_the_session(sshd: Sshd) -> None:
    """(issue 18, item 23) Both streams are read together: 3 MiB on stdout and 3 MiB on stderr of one
    script, and 3 MiB of a command's output, arrive whole (reading one stream while the other filled
    up used to block the target forever)."""
    import time

    remote = _host(sshd)
    try:
        start = time.monotonic()
        code, out, err = remote._sh("head -c 3145728 /dev/zero | tr '\\0' a; head -c 3145728 /dev/zero | tr '\\0' b >&2")
        assert (code, len(out), len(err)) == (0, 3 << 20, 3 << 20)
        assert set(out) == {"a"}
        assert set(err) == {"b"}
        lines: list[str] = []
        result = remote.run(["sh", "-c", "yes 0123456789abcdef | head -n 200000"], on_output=lines.append)
        assert result.ok
        assert len(lines) == 200000
        assert time.monotonic() - start < 60
    finally:
        remote.close()


def test_a_script_that_never_ends_is_given_up_in_time(sshd: Sshd) -> None:
    """(issue 18, item 23) Every remote call has a deadline: the connection is closed and the error
    says so, instead of waiting forever."""
    from mlxfix.errors import HostError

    remote = _host(sshd)
    try:
        with pytest.raises(HostError, match="gave up trying to wait"):
            remote._sh("sleep 30", what="wait", timeout=1)
        assert remote.run(["true"]).ok  # a new connection: nothing held the lock
    finally:
        remote.close()


def test_files_read_as_one_bundle_are_cut_by_their_sizes_or_read_again() -> None:
    """(issue 17) A batched read sends the plain files' bytes as one cat | base64: their stat sizes cut
    it apart. Sizes that no longer add up (a file changed meanwhile) name the files to read again."""
    import base64

    from mlxfix.host.ssh import _parse_snapshot

    def line(name: str, size: int) -> str:
        return f"F :{name} 1 81a4 0 0 0 - 0 - @{size} 1"

    bundle = base64.b64encode(b"one\ntwo\nthree\n").decode()
    snap, again = _parse_snapshot("\n".join([line("/a", 8), line("/b", 6), f"B {bundle}"]), 1)
    assert again == []
    assert (snap.files["/a"].data, snap.files["/b"].data) == (b"one\ntwo\n", b"three\n")
    _, again = _parse_snapshot("\n".join([line("/a", 8), line("/b", 7), f"B {bundle}"]), 1)
    assert again == ["/a", "/b"]
