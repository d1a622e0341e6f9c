"""The command line as typer declares it: every command, option and help text, the eager options
(--version, completion), usage errors. What a command does is in ``mlxfix.cli.actions``; a plain
command line reaches it without this module (``mlxfix.cli.argv``, from a spec generated from this one).
"""

from __future__ import annotations

import enum
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from mlxfix.cli import actions
from mlxfix.errors import ExitCode

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlxfix.host.ssh import SshHost

HELP = """\
Fix the Mellanox ConnectX-3 "Missing UAR, aborting" failure safely.

mlx4_core aborts when the PCI BAR that holds the NIC's UAR was never assigned; booting with
pci=realloc=off stops the kernel from reshuffling it away. mlxfix finds out whether this host is hit,
adds the parameter where this host's kernel command line really comes from, with a diff to review
first, a verified backup, atomic writes and a one-command rollback.

\b
Typical session (as root, on the host or with --host):
  mlxfix diagnose              is this host hit?
  mlxfix apply --dry-run       the exact diff and commands
  mlxfix apply                 backup, edit, validate, update-grub, reboot prompt
  mlxfix verify                after the reboot: did it work?
  mlxfix rollback              the original files back

Exit codes: 0 ok, 1 refused or failed (nothing changed or all restored), 2 usage error,
3 failed and not restored (manual steps printed), 10/11/12 diagnose verdicts, 13 verify failed,
14/15/16 status drift/absent/trial, 75 busy (another mlxfix, dpkg or apt), 130 interrupted
(Ctrl-C), 129/141/143 stopped by a hang-up, a broken pipe or SIGTERM (put back as for Ctrl-C).
`man mlxfix` has every command and file; the README, the whole story.
"""

app = typer.Typer(
    name="mlxfix",
    help=HELP,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,  # mlxfix's own --install-completion SHELL: the shell asked for, not a guess
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _complete_setups(incomplete: str) -> list[str]:
    from mlxfix.cli.complete import boot_setups

    return boot_setups(incomplete)


def _complete_backups(ctx: Any, incomplete: str) -> list[str]:
    from mlxfix.cli.complete import backup_ids

    return backup_ids(ctx, incomplete)


RootOpt = Annotated[
    str,
    typer.Option("--root", metavar="DIR", help="Act on the tree at DIR instead of / (every file read or written is under DIR)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout; human text goes to stderr.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", "-n", help="Show the diff and the commands; change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required without a terminal).")]
NoUpdateOpt = Annotated[
    bool,
    typer.Option("--no-update", help="Write the files but do not regenerate the boot configuration; print the command to run."),
]
RebootOpt = Annotated[
    bool | None,
    typer.Option(
        "--reboot/--no-reboot",
        help="After a change: reboot a few seconds later without asking, or never. Default: ask on a terminal, else do not.",
        show_default=False,
    ),
]
HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host",
        metavar="[USER@]HOST[:PORT]",
        help="Act on this host over SSH (ssh's config, keys, agent and known_hosts apply; root or passwordless sudo).",
    ),
]
SshOpt = Annotated[
    list[str] | None,
    typer.Option("--ssh-option", metavar="OPTION", help="An ssh -o option, repeatable: --ssh-option ConnectTimeout=5."),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait", help="With --host: after the reboot, wait for the host to come back and run verify (exit 13 if it fails)."
    ),
]
WaitTimeoutOpt = Annotated[float, typer.Option("--wait-timeout", metavar="SECONDS", help="How long --wait waits.")]
ParamOpt = Annotated[str, typer.Option("--param", metavar="PARAM", help="The kernel parameter (default pci=realloc=off).")]
SetupOpt = Annotated[
    str | None,
    typer.Option(
        "--boot-setup",
        metavar="NAME",
        help="Skip detection: grub-debian, grub, grub2, grub2-bls, proxmox-systemd-boot or systemd-boot.",
        autocompletion=_complete_setups,
    ),
]


def _version(value: bool) -> None:
    if value:
        from mlxfix import __version__

        typer.echo(f"mlxfix {__version__}")
        raise typer.Exit


class Shell(enum.StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"
    pwsh = "pwsh"


def _install_completion(value: Shell | None) -> None:
    if value is None:
        return
    from typer._completion_shared import install

    shell, path = install(shell=value.value, prog_name="mlxfix", complete_var="_MLXFIX_COMPLETE")
    sourced = {"bash": " (sourced from ~/.bashrc)", "zsh": " (~/.zshrc loads ~/.zfunc)"}.get(shell, "")
    typer.echo(f"{shell} completion installed in {path}{sourced}; it takes effect in a new shell")
    raise typer.Exit


def _show_completion(value: Shell | None) -> None:
    if value is None:
        return
    from typer._completion_shared import get_completion_script

    typer.echo(get_completion_script(prog_name="mlxfix", complete_var="_MLXFIX_COMPLETE", shell=value.value))
    raise typer.Exit


class Color(enum.StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    color: Annotated[
        Color,
        typer.Option(
            "--color",
            help="Colour the human output: always, never, or auto (the default: NO_COLOR, then FORCE_COLOR, then"
            " whether the output is a terminal). Before the command: mlxfix --color=never apply.",
        ),
    ] = Color.auto,
    install_completion: Annotated[
        Shell | None,
        typer.Option(
            "--install-completion",
            metavar="SHELL",
            callback=_install_completion,
            is_eager=True,
            help="Install tab completion for SHELL (bash, zsh, fish, powershell, pwsh) for this user, and exit.",
        ),
    ] = None,
    show_completion: Annotated[
        Shell | None,
        typer.Option(
            "--show-completion",
            metavar="SHELL",
            callback=_show_completion,
            is_eager=True,
            help="Print SHELL's completion script (to install it by hand), and exit.",
        ),
    ] = None,
) -> None:
    del version, install_completion, show_completion
    actions.set_color(color.value)


# -- the commands: options and help; what they do is in mlxfix.cli.actions ----------


def _run(command: Callable[..., int], options: dict[str, Any]) -> NoReturn:
    """Run the command with its options and end with its exit code, in typer's standalone mode too
    (where a return value is dropped). An output that fails is said as on the plain path: typer
    would end a broken pipe with a silent exit 1 of its own."""
    try:
        code = command(**options)
    except OSError as exc:
        actions.output_failed(exc)
    raise typer.Exit(code)


@app.command()
def apply(
    dry_run: DryRunOpt = False,
    param: ParamOpt = "pci=realloc=off",
    yes: YesOpt = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write a --param that turns PCI realloc on (pci=realloc, pci=realloc=on), which brings the Missing UAR"
            " failure back; refused without it.",
        ),
    ] = False,
    no_update: NoUpdateOpt = False,
    trial: Annotated[
        bool,
        typer.Option(
            "--trial",
            help="Boot the parameter once: arm a one-time boot of the entry the next boot takes, with the parameter"
            " (and panic=10), changing nothing the default boot reads. A hang or panic falls back to the old default"
            " at the next (power) cycle. Afterwards: mlxfix verify; mlxfix apply keeps it, mlxfix rollback removes it.",
        ),
    ] = False,
    reboot: RebootOpt = None,
    wait: WaitOpt = False,
    wait_timeout: WaitTimeoutOpt = 900,
    root: RootOpt = "/",
    as_json: JsonOpt = False,
    boot_setup: SetupOpt = None,
    target: HostOpt = None,
    ssh_option: SshOpt = None,
) -> None:
    """Add the kernel parameter (default pci=realloc=off) where this host's command line comes from.

    Backs up every file it changes, writes atomically, validates with sh, regenerates the boot
    configuration (update-grub, grub2-mkconfig, grubby, proxmox-boot-tool...) and offers a reboot.
    Already applied: nothing changes and the exit code is 0. With --trial, the next boot only tries it.
    """
    _run(actions.apply, locals())


@app.command()
def rollback(
    dry_run: DryRunOpt = False,
    backup: Annotated[
        str | None,
        typer.Option(
            "--backup", metavar="ID", help="The backup to restore (default: the newest).", autocompletion=_complete_backups
        ),
    ] = None,
    yes: YesOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Restore even over changes made after mlxfix wrote the file.")] = False,
    no_update: NoUpdateOpt = False,
    reboot: RebootOpt = None,
    wait: WaitOpt = False,
    wait_timeout: WaitTimeoutOpt = 900,
    root: RootOpt = "/",
    as_json: JsonOpt = False,
    boot_setup: SetupOpt = None,
    target: HostOpt = None,
    ssh_option: SshOpt = None,
) -> None:
    """Put back the byte-for-byte original files of a backup and regenerate the boot configuration.

    A file changed after mlxfix wrote it is shown as a diff and needs --force.
    """
    _run(actions.rollback, locals())


@app.command()
def backups(
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove old backups, keeping the --keep newest and every one a rollback could need (the one mlxfix"
            " rollback restores, an interrupted run's, damaged ones, and those a kept one finishes); says why each stays.",
        ),
    ] = False,
    keep: Annotated[
        int, typer.Option("--keep", metavar="N", min=0, help="With --prune: how many of the newest backups to keep.")
    ] = 5,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    root: RootOpt = "/",
    as_json: JsonOpt = False,
    target: HostOpt = None,
    ssh_option: SshOpt = None,
) -> None:
    """List the backups mlxfix keeps under /var/lib/mlxfix/backups, newest first; --prune removes old ones."""
    _run(actions.backups, locals())


@app.command()
def diagnose(
    root: RootOpt = "/",
    as_json: JsonOpt = False,
    boot_setup: SetupOpt = None,
    target: HostOpt = None,
    ssh_option: SshOpt = None,
) -> None:
    """Is this host hit by the Missing UAR failure? Devices, BARs, driver, modules, kernel log,
    command line (running and configured), context; a verdict and advice.

    Exit code: 0 healthy or no device, 10 affected, 11 pending reboot, 12 another failure, 1 error.
    """
    _run(actions.diagnose, locals())


@app.command()
def verify(
    param: ParamOpt = "pci=realloc=off",
    root: RootOpt = "/",
    as_json: JsonOpt = False,
    target: HostOpt = None,
    ssh_option: SshOpt = None,
) -> None:
    """After the reboot: is the parameter in /proc/cmdline, are the devices bound with BAR 2 assigned,
    mlx4_en or mlx4_ib loaded, the interfaces there, no Missing UAR in this boot's log?

    Exit code 0 only when every check holds; 13 names the failing checks.
    """
    _run(actions.verify, locals())


@app.command()
def status(
    param: ParamOpt = "pci=realloc=off",
    root: RootOpt = "/",
    as_json: JsonOpt = False,
    boot_setup: SetupOpt = None,
    target: HostOpt = None,
    ssh_option: SshOpt = None,
) -> None:
    """What the next boot will get, before the reboot: the parameter in the configured command line
    (each token with its file and line), in the boot entry the next boot takes, and in /proc/cmdline.

    One line without a terminal (for cron and monitoring), --json for tools. Under --root the
    generated files in the tree are read as they are.

    Exit code: 0 in-effect, 11 pending-reboot, 14 drift (configured or running, but the next boot
    will not have it), 15 absent, 1 error, 2 usage.
    """
    _run(actions.status, locals())


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command being run: typer builds the options of every command it holds at
    each start (4 ms of a 100 ms budget), and one run needs one. Its help, errors and exit codes are the
    same; anything else (no command, --help first, shell completion) gets the whole app."""
    import copy

    name = args[0] if args else ""
    chosen = [c for c in app.registered_commands if c.callback is not None and (c.name or c.callback.__name__) == name]
    if len(chosen) != 1 or any(k.startswith("_MLXFIX_COMPLETE") for k in os.environ):
        return app
    one = copy.copy(app)
    one.registered_commands = chosen
    return one


def main(early: SshHost | None = None) -> NoReturn:
    """Entry point: typer parses the command line (and answers --help, shell completion and usage
    errors); ``early``: an SshHost already connecting (see mlxfix.cli.entry)."""
    actions.execute(_invoke, early)


def _invoke() -> object:
    if "_MLXFIX_COMPLETE" in os.environ:  # the shell asks for completions (typer's protocol, as its scripts speak it)
        from typer._completion_classes import completion_init

        completion_init()
    try:
        return _app_for(sys.argv[1:])(standalone_mode=False, prog_name="mlxfix")
    except typer.Abort:
        raise KeyboardInterrupt from None
    except Exception as exc:
        show = getattr(exc, "show", None)
        if not (callable(show) and hasattr(exc, "exit_code")):
            raise
        show()  # click's usage errors
        if "--json" in sys.argv[1:]:
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            actions.early_document(sys.argv[1:], message)
        return ExitCode.USAGE
