"""``/etc/kernel/cmdline``: one line of kernel parameters (systemd-boot, proxmox-boot-tool).

The edit works token by token on that line and keeps everything else: spacing, the final newline,
``root=``. A file with more than one line of parameters is refused (the tools join or ignore extra
lines differently). Pure code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NamedTuple

from mlxfix import cmdline
from mlxfix.boot import rpmdb
from mlxfix.boot.setup import BootSetup, ConfigEdit
from mlxfix.defaults.grubfile import TEMPLATE_MARKER
from mlxfix.errors import Refused

if TYPE_CHECKING:
    from mlxfix.boot.nextboot import Configured
    from mlxfix.cmdline import Param
    from mlxfix.facts import Snapshot

__all__ = ["CmdlineFileEdit", "KernelCmdlineSetup", "plan_cmdline_file_edit"]

PATH = "/etc/kernel/cmdline"


class CmdlineFileEdit(NamedTuple):
    path: str
    before: str  # the parameters before and after
    after: str
    data: bytes  # the new file content (== the old one when nothing changes)

    @property
    def changed(self) -> bool:
        return self.before != self.after


def plan_cmdline_file_edit(data: bytes, param: Param, path: str = PATH, *, first_line_only: bool = False) -> CmdlineFileEdit:
    """Make ``param`` hold exactly once in the file's command line; keep every other byte.
    ``first_line_only``: the tool reads line 1 and nothing else (proxmox-boot-tool's get_first_line),
    so a command line below a comment or a blank line would never reach the kernel."""
    if b"\x00" in data:
        raise Refused("the file holds NUL bytes: it is not a command line", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(f"the file is not UTF-8 text (byte {exc.start})", path=path) from None
    lines = text.splitlines(keepends=True)
    content = [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
    if len(content) > 1:
        raise Refused(
            f"the command line must be one line; lines {content[0] + 1} and {content[1] + 1} both hold parameters",
            path=path,
            line=content[1] + 1,
        )
    if first_line_only and content and content[0] != 0:
        what = "blank" if not lines[0].strip() else "a comment"
        raise Refused(
            f"line 1 is {what}, and proxmox-boot-tool reads only the first line: the command line on line"
            f" {content[0] + 1} does not reach the kernel",
            path=path,
            line=1,
        )
    index = content[0] if content else len(lines)
    line = lines[index] if content else ""
    marker = TEMPLATE_MARKER.search(line)
    if marker is not None:  # the tool would hand the kernel the template's text as parameters
        raise Refused(
            f"{marker.group(0)!r} is a template marker: this file is a template to be rendered, not a live command line",
            path=path,
            line=index + 1,
            hint="change the template's variables (or its source) and render it, or fix the rendered file",
        )
    body = line.rstrip("\r\n")
    ending = line[len(body) :]
    changes = cmdline.ensure(body, param)
    new_body = cmdline.apply(body, changes)
    if not content:
        new_line = new_body + "\n"
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(new_line)
    else:
        lines[index] = new_body + ending
    return CmdlineFileEdit(path, body, new_body, "".join(lines).encode("utf-8"))


class KernelCmdlineSetup(BootSetup):
    """A setup whose tool copies /etc/kernel/cmdline into the boot entries (kernel-install,
    proxmox-boot-tool)."""

    location: ClassVar[str] = PATH
    # proxmox-boot-tool reads line 1 only; kernel-install the whole file.
    first_line_only: ClassVar[bool] = False

    @classmethod
    def require(cls, snap: Snapshot) -> None:
        if not snap.exists(PATH):
            raise Refused(f"--boot-setup {cls.name}: {PATH} does not exist", path=PATH)

    def owns(self, path: str) -> bool:
        return path == PATH

    def config_files(self, snap: Snapshot) -> list[str]:
        del snap
        return ["/etc/kernel", PATH]

    def configured(self, snap: Snapshot) -> Configured:
        from mlxfix.boot.nextboot import Configured, Token

        text = snap.text(PATH)
        if text is None:
            return Configured(None, f"{PATH} does not exist")
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                origin = f"{PATH}:{n}"
                return Configured(line.strip(), PATH, tuple(Token(t.text, origin) for t in cmdline.split(line)))
        return Configured("", PATH)

    def configured_line(self, snap: Snapshot) -> str | None:
        text = snap.text(PATH)
        return text.strip() if text is not None else None

    def judged_cmdline(self, snap: Snapshot) -> tuple[str | None, str]:
        return self.configured_line(snap), PATH

    def plan_edit(self, snap: Snapshot, param: Param) -> ConfigEdit:
        from mlxfix.steps import file_write, readable

        info = readable(snap, PATH)
        assert info.data is not None
        fedit = plan_cmdline_file_edit(info.data, param, first_line_only=self.first_line_only)
        warnings = []
        if not any(t.key == "root" for t in cmdline.split(fedit.before)):
            self.missing_root()
            warnings.append(f"{PATH} has no root= parameter; check that this host's boot does not need one")
        notes: list[str] = []
        rpm = rpmdb.owner(snap, PATH) if fedit.changed else None
        if rpm is not None:  # no other place carries the line: say what the package's upgrade does to it
            (notes if rpm.survives_upgrade else warnings).append(f"{rpm.describe()}: {rpm.upgrade()}")
        if fedit.changed and (why := rpmdb.unknown(snap)) is not None:
            warnings.append(f"this host has an RPM database, but rpm could not say whether {PATH} is a package's ({why})")
        return ConfigEdit(
            target=PATH,
            reason=f"apply: {param.text} in {PATH}",
            before=fedit.before,
            after=fedit.after,
            changed=fedit.changed,
            writes=(file_write(info, fedit.data, f"the kernel command line gets {param.text}"),) if fedit.changed else (),
            warnings=tuple(warnings),
            notes=tuple(notes),
        )

    def missing_root(self) -> None:
        """A command line without root=: a warning, unless the setup cannot boot without it (Refused)."""
