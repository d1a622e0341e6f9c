"""A change's steps (mlxfix.transaction) as one shell script on an SSH target: one round trip.

Each step becomes a shell function that does what the SshHost method of the same name does on its
own (the same commands: temp file beside the target, fsync, rename, fsync of the directory), run in
a subshell of its own by ``run_step``, which prints ``D i`` when step i is done, or ``X i CODE
MESSAGE`` and stops the script when it fails. Nothing after a failed step runs, and a step whose
report cannot be written (the connection dropped) is the last one. ``replay`` turns the report into
the journal and the error the step would have raised on its own.
"""

from __future__ import annotations

import base64
import os
import posixpath
import shlex
from typing import TYPE_CHECKING

from mlxfix.errors import HostError, MlxfixError, Refused
from mlxfix.facts import CommandResult
from mlxfix.transaction import (
    Checkpoint,
    Computes,
    Create,
    Parses,
    PrivateDir,
    Record,
    Remember,
    Remove,
    Rename,
    Same,
    Tidy,
    Unchanged,
    Write,
    changed_file,
    computed_wrong,
    value_script,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mlxfix.transaction import Journal, Step

__all__ = ["compile_steps", "replay"]

q = shlex.quote

_RUNNER = r"""
run_step() {  # $1 the step's index, $2 its function: "D i" when done, else "X i code message" and the end
    pause "step-$1"
    { _m=$("$2" 2>&1 >&3 </dev/null); } 3>&1  # (a subshell: the step's exit and set -e end only it)
    _c=$?
    if [ "$_c" != 0 ]; then printf 'X %s %s %s\n' "$1" "$_c" "$(printf '%s|' "$_m" | base64 -w0)"; exit 0; fi
    printf 'D %s\n' "$1" || exit 1
}
sha() { sha256sum <"$1" 2>/dev/null | cut -d' ' -f1; }
"""


def _pauses() -> str:
    """The test hook of host.local.checkpoint (MLXFIX_TEST_PAUSE_AT), on the target: a step can be
    held there (by its checkpoint's name, or "step-N" before step N begins) while a test cuts the
    connection. Nothing unless the variable is set."""
    spec = os.environ.get("MLXFIX_TEST_PAUSE_AT", "")
    cases = [f"{q(name)}) f={q(marker)} ;;" for name, _, marker in (p.partition(":") for p in spec.split(",") if p)]
    if not cases:
        return "pause() { :; }"
    return (
        f'pause() {{ case "$1" in {" ".join(cases)} *) return 0 ;; esac\n'
        '  : >"$f.reached"; n=0; while [ ! -e "$f.go" ] && [ "$n" -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done; }'
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _at(path: str) -> str:
    """sh that sets $f to the file a host path names (links followed inside the root, see canon)."""
    return f'canon {q(path)}; f="$r$cv"'


def _write_body(path: str, data: bytes, mode: int, uid: int, gid: int, expect: str | None) -> str:
    """SshHost.write_atomic's script, the target resolved on the target."""
    check = ""
    if expect is not None:
        check = (
            f'[ "$(sha "$t")" = {q(expect)} ] || {{\n'
            "  echo 'the file changed since mlxfix read it (another admin or a package?); nothing was written' >&2\n"
            "  exit 3; }\n"
        )
    return (
        f'set -e\ncanon {q(path)}; t="$r$cv"; d=${{t%/*}}; d=${{d:-/}}\n'
        'set -- $(stat -L -c "%u %a" "$d")\n'
        '[ "$1" = 0 ] || [ "$1" = "$me" ] || { echo "refusing to write into $d: it belongs to uid $1" >&2; exit 3; }\n'
        'case "$2" in *[2367]? | *[2367]) echo "refusing to write into $d: other users can write to it" >&2; exit 3 ;; esac\n'
        f'{check}tmp=$(mktemp "$d/.${{t##*/}}.mlxfix-XXXXXX")\n'
        "trap 'rm -f \"$tmp\"' EXIT\n"
        f'printf %s {q(_b64(data))} | base64 -d > "$tmp"\n'
        '[ ! -e "$t" ] || cp --attributes-only --preserve=mode,xattr "$t" "$tmp"\n'
        f'chown {uid}:{gid} "$tmp" 2>/dev/null || [ "$me" != 0 ]\n'
        f'chmod {mode & 0o7777:o} "$tmp"\n'
        'sync "$tmp"\npause write-before-rename\n'
        f'{check}mv -f "$tmp" "$t"\ntrap - EXIT\npause write-after-rename\nsync "$d"'
    )


def _create_body(real: str, data: bytes, mode: int) -> str:
    """SshHost.create_file's script."""
    f = q(real)
    d = q(posixpath.dirname(real) or "/")
    return f"set -eC; umask 077; printf %s {q(_b64(data))} | base64 -d > {f}; chmod {mode:o} {f}; sync {f}; sync {d}"


def _host_path(directory: str) -> str:
    """sh for the host's path of "$e", an entry of ``directory`` (as the journal names it)."""
    return f'{q(directory)}/"${{e##*/}}"'


def _removed(directory: str) -> str:
    """sh that reports "$e", an entry of ``directory``, as removed (an ``R`` line for replay)."""
    return f'printf "R %s\\n" "$(printf %s {_host_path(directory)} | base64 -w0)"'


def _body(step: Step, real: Callable[[str], str], private_dir: Callable[[str], str]) -> str:
    if isinstance(step, Unchanged):
        return f'{_at(step.path)}; [ -f "$f" ] && [ "$(sha "$f")" = {q(step.sha256)} ]'
    if isinstance(step, Remember):
        # (a file that cannot be read fails the step, as LocalHost.read does: never remembered as empty)
        return f'{_at(step.path)}; if [ -f "$f" ]; then _b=$(base64 -w0 <"$f") || exit 1; printf "M %s\\n" "$_b"; fi'
    if isinstance(step, Tidy):
        lines = [f'{_at(step.backups)}; for e in "$f"/.partial-*; do [ -e "$e" ] || continue']
        lines.append(f'  rm -rf "$e"; [ -e "$e" ] || {_removed(step.backups)}; done')  # only what went is reported
        for pattern in step.patterns:
            directory, _, base = pattern.rpartition("/")
            glob = "".join(c if c in "*?" else q(c) for c in base)
            lines.append(f'canon {q(directory)}; for e in "$r$cv"/{glob}; do [ -e "$e" ] || [ -L "$e" ] || continue')
            # as LocalHost.remove: a temp file that stays fails the step, named as the host has it
            lines.append(f'  _w=$(rm -f "$e" 2>&1) || {{ printf "%s\\t%s\\n" {_host_path(directory)} "$_w" >&2; exit 1; }}')
            lines.append(f'  sync "${{e%/*}}"; {_removed(directory)}; done')
        return "\n".join(lines)
    if isinstance(step, PrivateDir):
        return private_dir(step.path)
    if isinstance(step, Create):
        return _create_body(real(step.path), step.data, step.mode)
    if isinstance(step, Same):
        checks = [
            f'{_at(p)}; [ -f "$f" ] && [ "$(sha "$f")" = {q(d)} ] || {{ echo {i} >&2; exit 4; }}'
            for i, (p, d) in enumerate(step.files)
        ]
        return "\n".join(checks)
    if isinstance(step, Rename):
        s, d = q(real(step.src)), q(real(step.dst))
        return f"set -e; mv -T {s} {d}; sync {q(posixpath.dirname(real(step.dst)) or '/')}"
    if isinstance(step, Record):
        write = _write_body(step.path, step.data, 0o600, 0, 0, None)
        return f'{_at(step.path)}\nif [ -e "$f" ]; then\n{write}\nelse\n{_create_body(real(step.path), step.data, 0o600)}\nfi'
    if isinstance(step, Write):
        written = _write_body(step.path, step.data, step.mode, step.uid, step.gid, step.expect_sha256)
        from mlxfix.digest import sha256

        return f'{written}\n[ "$(sha "$t")" = {q(sha256(step.data))} ] || exit 5'
    if isinstance(step, Remove):
        f, d = q(real(step.path)), q(posixpath.dirname(real(step.path)) or "/")
        return f"set -e; rm -f {f}; sync {d}; if [ -e {f} ] || [ -L {f} ]; then exit 5; fi"
    if isinstance(step, Parses):
        return f'{_at(step.path)}; out=$(sh -n "$f" 2>&1) || {{ printf "%s" "$out" >&2; exit 6; }}'
    if isinstance(step, Computes):
        check = step.check
        files = " ".join(f'"$r$(canon {q(p)}; printf %s "$cv")"' for p in check.paths)
        test = (
            f'[ "$val" = {q(check.expected)} ]'
            if not check.suffix
            else f'case "$val" in *{q(check.expected)}) true ;; *) false ;; esac'
        )
        return (
            f"out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c {q(value_script(check.variable))} sh {files})"
            ' || { printf "%s" "$out" >&2; exit 7; }\n'
            'case "$out" in *"|") val=${out%|} ;; *) exit 8 ;; esac\n'
            f'{test} || {{ printf "%s|" "$val" >&2; exit 9; }}'
        )
    assert isinstance(step, Checkpoint)
    return f"pause {q(step.name)}"


def compile_steps(
    steps: Sequence[Step], root: str, canon: str, real: Callable[[str], str], private_dir: Callable[[str], str]
) -> str:
    """The script: the helpers, then one function per step, then the steps in order."""
    lines = [f"r={q(root)}; me=$(id -u)", canon, _RUNNER, _pauses()]
    for index, step in enumerate(steps):
        lines.append(f"s{index}() {{\n:\n{_body(step, real, private_dir)}\n}}")  # (":": a body is never empty)
    lines.extend(f"run_step {index} s{index}" for index in range(len(steps)))
    return "\n".join(lines)


def _decode(field: str) -> str:
    return base64.b64decode(field).decode("utf-8", "surrogateescape") if field else ""


def replay(
    steps: Sequence[Step], out: str, journal: Journal, label: str, plain: Callable[[str], str], first: Callable[[str], str]
) -> MlxfixError | None:
    """Put the script's report into the journal, step by step as it ran; return the error of the
    step that failed (None when all were done)."""
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "R":
            journal.removed.append(_decode(rest))
        elif kind == "M":
            index = journal.done
            step = steps[index]
            assert isinstance(step, Remember)
            journal.remembered[step.path] = base64.b64decode(rest)
        elif kind == "D":
            index = int(rest)
            journal.begin(index)
            journal.finish(index, steps[index])
        elif kind == "X":
            number, code, message = rest.split(" ")
            index = int(number)
            journal.begin(index)
            text = _decode(message).removesuffix("|")
            return _failure(steps[index], int(code), text, label, plain, first)
    if journal.done < len(steps):  # no word from the step after the last one done: it may have begun
        journal.begin(journal.done)
        return HostError(f"{label}: the change stopped on the target after {journal.done} of {len(steps)} steps, without a word")
    return None


def _failure(
    step: Step, code: int, text: str, label: str, plain: Callable[[str], str], first: Callable[[str], str]
) -> MlxfixError:
    """The error the step would have raised as a host call of its own."""
    if isinstance(step, Unchanged):
        return changed_file(step.path)
    if isinstance(step, Same):
        which = int(text) if text.isdigit() and int(text) < len(step.files) else 0
        return Refused(step.why, path=step.files[which][0])
    if isinstance(step, Write | Record) and code == 5:
        return HostError("the file did not read back as written", path=step.path)
    if isinstance(step, Write | Record):
        return HostError(plain(text) or f"cannot write the file (exit {code})", path=step.path)
    if isinstance(step, Remove) and code == 5:
        return HostError("the file is still there after removing it", path=step.path)
    if isinstance(step, Parses):
        return Refused(f"sh rejects the written file: {CommandResult(('sh',), 1, text).tail(3)}", path=step.path)
    if isinstance(step, Computes):
        if code == 9:
            return computed_wrong(step.check, text.removesuffix("|"))
        return computed_wrong(step.check, None if code == 8 else f"sh failed: {CommandResult(('sh',), 1, text).tail(3)}")
    if isinstance(step, PrivateDir):
        return HostError(f"refusing to use it: {first(text)}", path=step.path)
    if isinstance(step, Tidy) and "\t" in text:  # "PATH<tab>rm: cannot remove 'REAL': REASON"
        path, _, why = text.partition("\n")[0].partition("\t")
        return HostError(f"cannot remove the file: {why.rpartition(': ')[2]}", path=path)
    what = {Create: "create", Rename: "rename into", Remove: "remove", Tidy: "remove", Remember: "read"}
    target = step.dst if isinstance(step, Rename) else getattr(step, "path", getattr(step, "backups", ""))
    verb = next((v for k, v in what.items() if isinstance(step, k)), "change")
    return HostError(f"{label}: cannot {verb} {target}: {plain(text) or f'exit code {code}'}")
