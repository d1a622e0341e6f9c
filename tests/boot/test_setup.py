"""The boot setup interface: every setup is one module behind it, and nothing asks a setup its name."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from mlxfix.boot.detect import SETUPS
from mlxfix.boot.setup import BootSetup

PACKAGE = Path(__file__).parents[2] / "mlxfix"
INTERFACE = ("owns", "config_files", "configured", "plan_edit", "regenerate", "next_boot")


@pytest.mark.parametrize("name", list(SETUPS))
def test_each_setup_is_a_module_of_its_own_and_implements_the_interface(name: str) -> None:
    cls = SETUPS[name]
    assert cls.name == name
    module = inspect.getfile(cls)
    assert Path(module).parent == PACKAGE / "boot"
    assert Path(module).stem == name.replace("-", "_") or Path(module).stem == {"grub": "grub_mkconfig"}[name]
    for method in INTERFACE:
        assert getattr(cls, method) is not getattr(BootSetup, method), f"{name} does not implement {method}"
    assert cls.title
    assert cls.location


def test_nothing_outside_a_setup_asks_its_name() -> None:
    """No module compares a setup's name or spells one: it asks the setup (its methods) instead. The
    names are data only in their own modules (and in the JSON and backups, which carry setup.name)."""
    names = set(SETUPS)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.parent == PACKAGE / "boot" and path.stem in {n.replace("-", "_") for n in names} | {"grub_mkconfig"}
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and not own:
                # proxmox-boot-tool's own words ("configured with: grub") are compared in detect, not a setup name
                line = path.read_text().splitlines()[node.lineno - 1]
                if "grub_mode" not in line:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "name" and "setup" in ast.unparse(side)
                for side in (node.left, *node.comparators)
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
