"""Shared fixtures: the real-world corpus and helpers to build file trees under a temporary --root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CORPUS = TESTS / "corpus" / "grub"
EXAMPLES = ROOT / "examples"


def corpus_files() -> list[Path]:
    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".grub", ".cfg"))
    assert len(files) == 79, "the corpus must hold all 79 files"
    return files


def corpus_hosts() -> list[tuple[Path, list[Path]]]:
    """(main file, its drop-ins) for every repository with both, as grub-mkconfig would read them.

    A repository with several main files (templates, .bak copies) pairs each with the drop-ins."""
    by_repo: dict[str, list[Path]] = {}
    for p in corpus_files():
        repo = re.sub(r"^\d+-", "", p.stem)
        by_repo.setdefault(repo, []).append(p)
    hosts = []
    for files in by_repo.values():
        mains = [p for p in files if p.suffix == ".grub"]
        dropins = sorted((p for p in files if p.suffix == ".cfg"), key=lambda p: p.name)
        if dropins:
            hosts.extend((m, dropins) for m in mains)
    return hosts


@pytest.fixture(params=corpus_files(), ids=lambda p: p.name)
def corpus_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


# Hypothesis: the default profile keeps CI quick and repeatable (derandomized: a run on a clean clone
# tries the same inputs as the last one, so a red CI is a regression, not a new find);
# HYPOTHESIS_PROFILE=thorough hunts harder, with new inputs every run.
from hypothesis import settings  # noqa: E402

settings.register_profile("default", derandomize=True)
settings.register_profile("thorough", max_examples=3000, deadline=None)
settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def sshd():
    """A private sshd on 127.0.0.1, for the whole test session."""
    from tests.sshd import Sshd

    server = Sshd()
    yield server
    server.stop()


# The boot suite (tests/e2e) boots QEMU guests for half an hour: it runs on its own, by the README's
# e2e command (MLXFIX_E2E=1), never as part of the unit run.
collect_ignore = [] if __import__("os").environ.get("MLXFIX_E2E") == "1" else ["e2e"]
