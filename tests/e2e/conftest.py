"""Fixtures of the boot suite: the images, mlxfix's wheel, and guests with mlxfix installed offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.guest import Guest
from tests.e2e.images import RECIPES, Image, image

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
SETUPS = list(RECIPES)
NEEDED = ("mmdebstrap", "qemu-system-x86_64", "qemu-img", "sfdisk", "mkfs.ext4", "ssh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:  # the README's e2e command installs them: missing means the suite was started some other way
        raise pytest.UsageError(f"the boot suite needs {', '.join(missing)} (see the README's e2e command)")
    # The power cuts are the longest test by far: first, so that with -n 2 --dist load one worker takes
    # them at once while the other works through the rest, and the stage ends when both are done.
    items.sort(key=lambda item: "test_powercut" not in item.nodeid)


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e2e")
    print(f"\nboot suite: overlays and serial consoles in {path}", file=sys.stderr)
    return path


@pytest.fixture(scope="session")
def wheels(e2e_dir: Path) -> list[Path]:
    """mlxfix's wheel built from this checkout, and the wheels of its dependencies (from PyPI, once)."""
    where = e2e_dir / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(where), str(ROOT)], check=True, timeout=600)
    return sorted(where.glob("*.whl"))


def images(wheels: list[Path], e2e_dir: Path, name: str) -> Image:
    return image(name, [w for w in wheels if not w.name.startswith("mlxfix-")], e2e_dir / "build.log")


@pytest.fixture
def new_guest(e2e_dir: Path, wheels: list[Path], request: pytest.FixtureRequest) -> Iterator[Callable[..., Guest]]:
    """A factory: new_guest(setup) gives a powered-off guest of that setup; new_guest(setup, mlxfix=True)
    one that installs mlxfix's wheel, built from this checkout, at its first boot (offline, --no-deps:
    the image has the dependencies)."""
    made: list[Guest] = []
    wheel = next(w for w in wheels if w.name.startswith("mlxfix-"))

    def make(name: str, *, mlxfix: bool = True) -> Guest:
        img = images(wheels, e2e_dir, name)
        test = request.node.name.replace("/", "_").replace("[", "-").rstrip("]")
        guest = Guest(img, e2e_dir / test, f"{name}-{len(made)}", install=wheel if mlxfix else None)
        made.append(guest)
        return guest

    yield make
    for guest in made:
        guest.stop()
