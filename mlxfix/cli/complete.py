"""Shell completion of option values: the boot setups for ``--boot-setup`` and the backup ids for
``--backup``. Called by the shell at every Tab, so each is cheap (no pydantic, no manifest read: the
names in the state directory) and never fails: anything that goes wrong offers nothing."""

from __future__ import annotations

from typing import Any

__all__ = ["backup_ids", "boot_setups"]


def boot_setups(incomplete: str) -> list[str]:
    """The names ``--boot-setup`` takes, from the list the detection itself uses."""
    try:
        from mlxfix.boot.detect import SETUPS

        return [name for name in SETUPS if name.startswith(incomplete)]
    except Exception:
        return []


def backup_ids(ctx: Any, incomplete: str) -> list[str]:
    """The backups under the state directory of ``--root`` (if it is already on the command line),
    newest first, as ``mlxfix backups`` lists them. With ``--host``, nothing: completion does not log
    in to a host."""
    try:
        params = getattr(ctx, "params", None) or {}
        if params.get("target"):
            return []
        import re

        from mlxfix.host.local import BACKUP_ID, STATE_DIR, LocalHost

        names = LocalHost(str(params.get("root") or "/")).listdir(f"{STATE_DIR}/backups") or []
        pattern = re.compile(BACKUP_ID)
        return sorted((n for n in names if pattern.fullmatch(n) and n.startswith(incomplete)), reverse=True)
    except Exception:
        return []
