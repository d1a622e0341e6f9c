"""Ansible action plugin ``mlxfix``: runs mlxfix with ``--json`` and returns what Ansible understands.

Where mlxfix runs (``mode``):

* ``controller`` (the default): on the Ansible controller, as a local process, with ``--host`` for the
  inventory host (built from ``ansible_host``, ``ansible_user``, ``ansible_port``,
  ``ansible_ssh_private_key_file`` and the ``-o`` options of ``ansible_ssh_common_args`` /
  ``ansible_ssh_extra_args``). Nothing of mlxfix is needed on the host: mlxfix reaches it through one
  ssh connection and needs only sh, coreutils and its boot tools there. A host with
  ``ansible_connection=local`` is the controller itself: mlxfix runs without ``--host``.
* ``target``: on the host, through the task's connection (``become`` applies), where mlxfix is installed.

Options: ``command`` (apply, verify or status), ``mode``, ``mlxfix`` (how mlxfix is run, a string split
like a shell line or a list; default ``mlxfix``), ``param``, ``root``, ``host`` (controller mode: the
``[USER@]HOST[:PORT]`` to use instead of the one built from the inventory), ``ssh_options`` (more ssh
``-o`` options for controller mode), ``trial`` (apply: ``--trial``, a one-time boot; verify: the boot
checked was meant to be that trial, so a failure says the host fell back to its old default). The
task's ``environment`` keyword applies to mlxfix in both modes.

Results:

* apply: ``changed`` (in check mode: would change; mlxfix runs with ``--dry-run``), ``diff`` (each
  file's unified diff from mlxfix, shown by ``--diff``), ``reboot_required`` (also for a host applied
  earlier but not rebooted since), ``backup``, ``files``; ``failed`` from mlxfix's exit code, with
  ``msg`` = mlxfix's reason (a refusal names the file and line).
  With ``trial``: ``trial`` ({entry, armed, fallback}) when a one-time boot was armed (would be).
* verify: ``failed`` unless every check holds; ``msg`` names the failed checks; ``failed_checks``;
  ``trial``: whether the boot checked was a trial boot.
* status: ``state`` (in-effect, pending-reboot, drift, absent), ``reboot_required``.

Every result has ``rc`` (mlxfix's exit code), ``cmd`` (its argv) and mlxfix's warnings as Ansible
warnings.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any, ClassVar

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# Ansible's names for the connection settings mlxfix's --host needs, each with its older alias.
_HOST_VARS = ("ansible_host", "ansible_ssh_host")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
_ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
# status: these exit codes are states, not failures (README: Exit codes).
_STATUS_STATES = (0, 11, 14, 15)


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    ARGUMENT_SPEC: ClassVar[dict[str, dict[str, Any]]] = {
        "command": {"type": "str", "required": True, "choices": ["apply", "verify", "status"]},
        "mode": {"type": "str", "default": "controller", "choices": ["controller", "target"]},
        "mlxfix": {"type": "raw", "default": "mlxfix"},
        "param": {"type": "str"},
        "root": {"type": "str", "default": "/"},
        "host": {"type": "str"},
        "ssh_options": {"type": "list", "elements": "str", "default": []},
        "trial": {"type": "bool", "default": False},
    }

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        self._task_vars = task_vars
        _, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        self._args = args
        self._name = str(task_vars.get("inventory_hostname", "?"))
        command = args["command"]
        self._warnings: list[str] = []
        self._where = self._target_options(task_vars) if args["mode"] == "controller" else []

        check = bool(self._task.check_mode)
        argv = [command, "--json", "--root", args["root"]]
        if args["param"]:
            argv += ["--param", args["param"]]
        if command == "apply":
            argv += ["--yes", "--no-reboot"] + (["--dry-run"] if check else []) + (["--trial"] if args["trial"] else [])

        rc, report, stderr, cmd = self._mlxfix(argv)
        result.update(rc=rc, cmd=cmd, changed=False)
        if report is None:
            result.update(failed=True, msg=_no_report(rc, stderr), stderr=stderr)
            return result
        self._warnings += [str(w) for w in report.get("warnings") or []]
        if command == "apply":
            self._apply(result, report, check)
        elif command == "verify":
            self._verify(result, report)
        else:
            self._status(result, report)
        if rc != 0 and not (command == "status" and rc in _STATUS_STATES):
            result["failed"] = True
            result.setdefault("msg", _reason(command, rc, report, stderr))
        if self._warnings:
            result["warnings"] = self._warnings
        return result

    # --- the three commands ------------------------------------------------------------------

    def _apply(self, result: dict[str, Any], report: dict[str, Any], check: bool) -> None:
        files = [f for f in report.get("files") or [] if f.get("diff")]
        changed = bool(report.get("would_change") if check else report.get("changed"))
        reboot = bool(report.get("reboot_required"))
        if check and report.get("exit_code") == 0:
            # A dry run changes nothing, so mlxfix says no reboot is required by it; what the real run
            # would need is a reboot after its change, or one a host applied earlier is still owed.
            reboot = changed or self._pending_reboot()
        trial = report.get("trial") if changed else None  # armed (or, in check mode, would be)
        result.update(
            changed=changed,
            reboot_required=reboot,
            backup=report.get("backup"),
            files=[f["path"] for f in files],
            trial=trial,
        )
        if changed and self._task.diff:
            result["diff"] = [{"prepared": f["diff"]} for f in files]
        if report.get("exit_code") == 0:
            result["msg"] = _apply_summary(report, check, changed, reboot, [f["path"] for f in files])
            if trial:
                verb = "would arm" if check else "armed"
                result["msg"] = (
                    f"{verb} a one-time boot of {trial.get('entry')!r} with {report.get('param')}; a normal boot still"
                    f" takes {trial.get('fallback')!r} (nothing the default boot reads was changed)"
                )

    def _verify(self, result: dict[str, Any], report: dict[str, Any]) -> None:
        failed = [c for c in report.get("checks") or [] if not c.get("ok")]
        booted_trial = bool(report.get("trial"))
        result.update(failed_checks=[c["name"] for c in failed], status=report.get("status"), trial=booted_trial)
        if report.get("exit_code") == 0:
            result["msg"] = f"mlxfix verify: every check holds on {self._name}" + (" (a trial boot)" if booted_trial else "")
        elif failed:
            checks = "; ".join(f"{c['name']}: {c.get('detail', '')}" for c in failed)
            if self._args["trial"] and not booted_trial:
                # The trial was one boot: a hang or a panic (panic=10) rebooted into the old default.
                result["msg"] = (
                    f"the trial boot of {self._args['param'] or 'the parameter'} did not hold on {self._name}: it runs its"
                    f" old default again ({checks}); nothing the default boot reads was changed. Look at the host's"
                    " console or journal of the trial boot; mlxfix rollback there removes the spent trial entry."
                )
            else:
                result["msg"] = (
                    f"mlxfix verify failed on {self._name}: {checks}. "
                    "Run mlxfix diagnose there; mlxfix rollback puts the old boot configuration back."
                )

    def _status(self, result: dict[str, Any], report: dict[str, Any]) -> None:
        state = report.get("state")
        result.update(state=state, reboot_required=state == "pending-reboot")
        if report.get("exit_code") in _STATUS_STATES:
            result["msg"] = f"mlxfix status on {self._name}: {state}"

    def _pending_reboot(self) -> bool:
        """Is the host applied but not rebooted since (mlxfix status: pending-reboot)?"""
        argv = ["status", "--json", "--root", self._args["root"]]
        if self._args["param"]:
            argv += ["--param", self._args["param"]]
        rc, report, stderr, _ = self._mlxfix(argv)
        if report is None:
            self._warnings.append(f"mlxfix status could not tell whether a reboot is pending: {_no_report(rc, stderr)}")
            return False
        return report.get("state") == "pending-reboot"

    # --- running mlxfix --------------------------------------------------------------------------

    def _mlxfix(self, argv: list[str]) -> tuple[int, dict[str, Any] | None, str, list[str]]:
        """Run mlxfix where the mode says; (exit code, its JSON report or None, stderr, the argv)."""
        base = self._args["mlxfix"]
        base = shlex.split(base) if isinstance(base, str) else [str(a) for a in base]
        if self._args["mode"] == "controller" and base:
            base[0] = os.path.expanduser(base[0])  # mlxfix_command=~/mlxfix/bin/mlxfix
        cmd = [*base, *argv, *self._where]
        display.vvv(f"mlxfix ({self._args['mode']}): {shlex.join(cmd)}", host=self._name)
        if self._args["mode"] == "controller":
            environment: dict[str, Any] = {}
            self._compute_environment_string(environment)  # the task's environment keyword, templated
            env = {**os.environ, **{k: str(v) for k, v in environment.items()}}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, stdin=subprocess.DEVNULL)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        else:
            # The command module on the host (become and the environment keyword apply, stdout and
            # stderr stay apart). In check mode too: --dry-run is mlxfix's check mode, and the module
            # would skip the command.
            check, self._task.check_mode = self._task.check_mode, False
            try:
                res = self._execute_module("ansible.legacy.command", module_args={"argv": cmd}, task_vars=self._task_vars)
            finally:
                self._task.check_mode = check
                self._remove_tmp_path(self._connection._shell.tmpdir)  # noqa: SLF001 (as ansible.builtin.command does)
            if "rc" not in res:  # the module itself failed (no Python there...)
                return -1, None, str(res.get("msg", res.get("module_stderr", ""))), cmd
            rc, stdout, stderr = res["rc"], res.get("stdout", ""), res.get("stderr", "")
        try:
            report = json.loads(stdout)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            report = None
        return rc, report, stderr, cmd

    def _target_options(self, task_vars: dict[str, Any]) -> list[str]:
        """mlxfix's --host and --ssh-option for the inventory host, from its connection variables.

        A delegated task's own variables hold the delegate's connection (localhost): the inventory
        host's are read from hostvars."""
        hostvars = task_vars.get("hostvars", {}).get(self._name, task_vars) if self._task.delegate_to else task_vars

        def var(names: tuple[str, ...]) -> Any:
            for name in names:
                if name in hostvars and hostvars[name] is not None:
                    return self._templar.template(hostvars[name])
            return None

        if var(("ansible_connection",)) == "local" and not self._args["host"]:
            return []  # the controller itself
        options: list[str] = []
        key = var(_KEY_VARS)
        if key:
            options.append(f"IdentityFile={os.path.expanduser(str(key))}")
        for name in _ARGS_VARS:
            options += self._ssh_args(name, var((name,)))
        options += self._args["ssh_options"]
        target = self._args["host"]
        if not target:
            host = str(var(_HOST_VARS) or self._name)
            user, port = var(_USER_VARS), var(_PORT_VARS)
            target = f"[{host}]" if ":" in host else host
            target = f"{user}@{target}" if user else target
            target = f"{target}:{int(port)}" if port else target
        return ["--host", target] + [a for o in options for a in ("--ssh-option", o)]

    def _ssh_args(self, name: str, value: Any) -> list[str]:
        """The ``-o`` options (and ``-J``) of an ssh argument string; anything else is said, not used."""
        words = shlex.split(str(value)) if value else []
        options, ignored = [], []
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("-o", "-J") and i + 1 < len(words):
                options.append(words[i + 1] if word == "-o" else f"ProxyJump={words[i + 1]}")
                i += 2
                continue
            if word.startswith("-o") and len(word) > 2:
                options.append(word[2:])
            else:
                ignored.append(word)
            i += 1
        if ignored:
            self._warnings.append(
                f"{name}: mlxfix's ssh takes -o options only; not used by mlxfix: {shlex.join(ignored)} "
                "(mlxfix_ssh_options takes more -o options)"
            )
        return options


def _no_report(rc: int, stderr: str) -> str:
    tail = stderr.strip().splitlines()[-3:]
    return f"mlxfix gave no JSON report (exit {rc})" + (": " + " ".join(tail) if tail else "")


def _reason(command: str, rc: int, report: dict[str, Any], stderr: str) -> str:
    errors = [str(e) for e in report.get("errors") or []]
    if errors:
        return "; ".join(errors)
    tail = stderr.strip().splitlines()[-1:]
    return f"mlxfix {command} failed (exit {rc})" + (f": {tail[0]}" if tail else "")


def _apply_summary(report: dict[str, Any], check: bool, changed: bool, reboot: bool, paths: list[str]) -> str:
    param = report.get("param", "the parameter")
    where = ", ".join(paths) or "the boot configuration"
    if changed:
        done = f"would add {param} to {where}" if check else f"added {param} to {where} (backup {report.get('backup')})"
        return done + ("; a reboot is required" if reboot else "")
    if reboot:
        return f"{param} is configured; the running kernel does not have it yet: a reboot is required"
    return f"{param} is already in place"
