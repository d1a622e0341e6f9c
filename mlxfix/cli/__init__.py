"""The command line: ``entry`` (the console script, which starts a --host connection first),
``typer_app`` (the commands and options as typer declares them: help, completion, usage errors),
``argv`` (a plain command line read without typer, by the spec generated from typer_app),
``actions`` (what each command does: the core call, the report, the exit code) and ``render``
(human output).

``from mlxfix.cli import app`` and ``main`` keep working; they are imported only when asked for,
so that ``entry`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mlxfix.cli import typer_app

        return getattr(typer_app, name)
    raise AttributeError(name)
