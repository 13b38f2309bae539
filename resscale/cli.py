"""Command-line interface (Typer): ``resscale --help``.

The sub-commands live in :mod:`resscale.commands` (one module each). Every
command is wrapped so that an invalid input (ValueError and its subclasses,
including :class:`resscale.inputs.MemoryLimitError`), an overflow of our own,
an unwritable output path or a missing optional dependency ends with a one-line
``Error: ...`` on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import functools
import importlib
from typing import Optional

import typer

from .commands import COMMANDS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Signal propagation in ResNets with a scaled residual branch.")

_CLEAN_ERRORS = (ValueError, OverflowError, FloatingPointError, MemoryError, OSError,
                 NotImplementedError, ImportError)


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 400 else msg[:397] + "..."


def _clean_errors(callback):
    """Wrap a command callback: known errors -> 'Error: <one line>' on stderr, exit code 2."""
    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except _CLEAN_ERRORS as exc:
            typer.echo(f"Error: {_one_line(exc)}", err=True)
            raise typer.Exit(code=2)
    return wrapper


def _version(value: bool):
    if value:
        from . import __version__

        typer.echo(f"resscale {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")):
    """Signal propagation in ResNets with a scaled residual branch."""


for _name in COMMANDS:
    try:
        _mod = importlib.import_module(f"resscale.commands.{_name}")
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != f"resscale.commands.{_name}":
            raise
        continue
    _mod.register(app)

for _cmd in app.registered_commands:
    _cmd.callback = _clean_errors(_cmd.callback)


def main():  # pragma: no cover
    app()
